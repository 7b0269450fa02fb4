//! End-to-end with the real `psql` client.

use std::process::Command;

use crate::common::{copy_fixtures, Options, TestServer};

/// Runs psql with `args`, feeding `script` on standard input; returns (stdout, stderr).
fn psql(server: &TestServer, script: &str) -> (String, String) {
    use std::io::Write;
    let mut child = Command::new("psql")
        .args([
            "-X",
            "-h",
            &server.pg_addr.ip().to_string(),
            "-p",
            &server.pg_addr.port().to_string(),
        ])
        .args([
            "-U",
            "psql_user",
            "-d",
            "freshet",
            "-v",
            "ON_ERROR_STOP=0",
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql must be installed (apt-get install postgresql-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn psql_lists_describes_and_survives_errors() {
    let work = tempfile::tempdir().unwrap();
    copy_fixtures(work.path());
    let server = TestServer::start(work.path(), &Options::default());
    let setup = "CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 'data/users.csv';\n\
                 COPY (SELECT user_id, user_id * 1.5 AS weight FROM users) TO 'weights.parquet' STORED AS PARQUET;\n\
                 CREATE EXTERNAL TABLE weights STORED AS PARQUET LOCATION 'weights.parquet';\n";
    let (out, err) = psql(&server, setup);
    assert!(err.is_empty(), "setup failed: {err}\n{out}");

    let (out, err) = psql(&server, "SELECT 1 AS one;\n");
    assert!(err.is_empty(), "{err}");
    assert!(out.contains(" one \n-----\n   1\n(1 row)"), "{out}");

    let (out, err) = psql(&server, "\\dt\n");
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("List of relations"), "{out}");
    for table in ["users", "weights"] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!(" {table} ")) && l.contains("table")),
            "{table} missing:\n{out}"
        );
    }

    let (out, err) = psql(&server, "\\d users\n");
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("Table \"public.users\""), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("user_id") && l.contains("bigint")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("country") && l.contains("text")),
        "{out}"
    );

    let (out, err) = psql(&server, "\\l\n");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("freshet")),
        "{out}"
    );

    let (out, err) = psql(&server, "\\dn\n");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("public")),
        "{out}"
    );

    // A bad query, then a good one, on the same connection.
    let (out, err) = psql(
        &server,
        "SELECT * FROM missing_table;\nSELECT u.name, w.weight FROM users u JOIN weights w USING (user_id) WHERE u.user_id = 2;\n",
    );
    assert!(
        err.contains("ERROR:") && err.contains("missing_table"),
        "{err}"
    );
    // weight is a float8: PostgreSQL prints 3, not 3.0.
    assert!(
        out.lines()
            .any(|l| l.starts_with(" bob ") && l.split('|').nth(1).map(str::trim) == Some("3")),
        "{out}"
    );
}
