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

/// The rows psql prints for a listing: (schema, name, type, owner) of each relation line.
fn listed(out: &str) -> Vec<(String, String, String, String)> {
    out.lines()
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
        .filter(|cells| cells.len() >= 4 && cells[0] != "Schema")
        .map(|c| {
            (
                c[0].to_string(),
                c[1].to_string(),
                c[2].to_string(),
                c[3].to_string(),
            )
        })
        .collect()
}

#[test]
fn psql_meta_commands_list_tables_sources_and_materialized_views() {
    let work = tempfile::tempdir().unwrap();
    copy_fixtures(work.path());
    let server = TestServer::start(work.path(), &Options::default());
    let setup = "CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 'data/users.csv';\n\
                 CREATE TABLE items (item_id BIGINT, name VARCHAR, price DOUBLE);\n\
                 CREATE SOURCE clicks (user_id BIGINT, item_id BIGINT, ts TIMESTAMP) WITH (connector = 'datagen', events = 100, seed = 1);\n\
                 CREATE MATERIALIZED VIEW item_clicks AS SELECT item_id, count(*) AS clicks FROM clicks GROUP BY item_id;\n";
    let (out, err) = psql(&server, setup);
    assert!(err.is_empty(), "setup failed: {err}\n{out}");

    // \dt: tables, external tables and sources; the materialized view is not a table.
    let (out, err) = psql(&server, "\\dt\n");
    assert!(err.is_empty(), "{err}");
    let mut tables = listed(&out);
    tables.sort();
    let expected: Vec<(String, String, String, String)> = ["clicks", "items", "users"]
        .iter()
        .map(|n| {
            (
                "public".to_string(),
                n.to_string(),
                "table".to_string(),
                "freshet".to_string(),
            )
        })
        .collect();
    assert_eq!(tables, expected, "{out}");

    // \dv: the materialized view, as a view.
    let (out, err) = psql(&server, "\\dv\n");
    assert!(err.is_empty(), "{err}");
    assert_eq!(
        listed(&out),
        vec![(
            "public".to_string(),
            "item_clicks".to_string(),
            "view".to_string(),
            "freshet".to_string()
        )],
        "{out}"
    );

    // \d of the view: its columns with PostgreSQL types.
    let (out, err) = psql(&server, "\\d item_clicks\n");
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("View \"public.item_clicks\""), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("clicks") && l.contains("bigint")),
        "{out}"
    );
    let (out, err) = psql(&server, "\\d items\n");
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("Table \"public.items\""), "{out}");
    for (column, pg_type) in [
        ("item_id", "bigint"),
        ("name", "text"),
        ("price", "double precision"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(column) && l.contains(pg_type)),
            "{column} {pg_type}:\n{out}"
        );
    }

    let (out, err) = psql(&server, "\\l\n");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("freshet ") && l.contains("| freshet")),
        "{out}"
    );

    // \d+ reads the table's options through ARRAY(SELECT … FROM unnest(…)) and shows storage.
    let (out, err) = psql(&server, "\\d+ items\n");
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("Table \"public.items\""), "{out}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("price")
            && l.contains("double precision")
            && l.contains("plain")),
        "{out}"
    );
    // \du reads each role's memberships through ARRAY(subquery): the owner role, member of none.
    let (out, err) = psql(&server, "\\du\n");
    assert!(err.is_empty(), "{err}");
    let role = out
        .lines()
        .find(|l| l.trim_start().starts_with("freshet "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        role.contains("Superuser") && role.trim_end().ends_with("{}"),
        "{out}"
    );

    let (out, err) = psql(&server, "\\dn\n");
    assert!(err.is_empty(), "{err}");
    let schemas: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("| freshet"))
        .map(|l| l.split('|').next().unwrap().trim())
        .collect();
    assert_eq!(schemas, vec!["models", "public"], "{out}");

    // \df lists no functions (Freshet's are built in) and \di no indexes; neither errors.
    let (out, err) = psql(&server, "\\df\n");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.contains("List of functions") && out.contains("(0 rows)"),
        "{out}"
    );
    let (out, err) = psql(&server, "\\di\n");
    assert!(!err.contains("ERROR"), "{err}");
    assert!(err.contains("Did not find any relations."), "{err}\n{out}");

    // A dropped object disappears at once.
    let (_, err) = psql(&server, "DROP TABLE items;\n");
    assert!(err.is_empty(), "{err}");
    let (out, _) = psql(&server, "\\dt\n");
    assert!(!listed(&out).iter().any(|r| r.1 == "items"), "{out}");
    // DROP VIEW must not silently deregister a running materialized view.
    let (_, err) = psql(&server, "DROP VIEW item_clicks;\n");
    assert!(err.contains("use DROP MATERIALIZED VIEW"), "{err}");
}
