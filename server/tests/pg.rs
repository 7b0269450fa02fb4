//! The pgwire frontend with tokio-postgres: extended protocol, types, errors, cancel,
//! authentication, file access rules and restarts.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::common::{copy_fixtures, error_message, sqlstate, Options, TestServer};

fn start() -> (tempfile::TempDir, TestServer) {
    let work = tempfile::tempdir().unwrap();
    copy_fixtures(work.path());
    let server = TestServer::start(work.path(), &Options::default());
    (work, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binds_parameters_and_returns_binary_values() {
    let (_work, server) = start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 'data/users.csv';
             CREATE TABLE typed AS SELECT
               CAST(1 AS INT) AS i4, CAST(2 AS BIGINT) AS i8, CAST(1.5 AS DOUBLE) AS f8,
               CAST('text' AS VARCHAR) AS t, true AS b, DATE '2026-11-22' AS d,
               TIMESTAMP '2026-11-22 10:30:00' AS ts",
        )
        .await
        .unwrap();

    // A prepared statement with parameters, executed twice with different values.
    let statement = client
        .prepare("SELECT name FROM users WHERE user_id > $1 AND country = $2 ORDER BY user_id")
        .await
        .unwrap();
    assert_eq!(statement.params(), &[Type::INT8, Type::TEXT]);
    let rows = client.query(&statement, &[&1i64, &"DE"]).await.unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, vec!["dave"]);
    let rows = client.query(&statement, &[&0i64, &"FR"]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "bob");

    // tokio-postgres reads results in binary format: every type must decode.
    let row = client.query_one("SELECT * FROM typed", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>("i4"), 1);
    assert_eq!(row.get::<_, i64>("i8"), 2);
    assert_eq!(row.get::<_, f64>("f8"), 1.5);
    assert_eq!(row.get::<_, String>("t"), "text");
    assert!(row.get::<_, bool>("b"));
    let columns: Vec<Type> = row.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        columns,
        vec![
            Type::INT4,
            Type::INT8,
            Type::FLOAT8,
            Type::TEXT,
            Type::BOOL,
            Type::DATE,
            Type::TIMESTAMP
        ]
    );

    // execute() reports affected rows from the command tag.
    client
        .batch_execute("CREATE TABLE ins (a INT, b VARCHAR)")
        .await
        .unwrap();
    let inserted = client
        .execute(
            "INSERT INTO ins VALUES ($1, $2), ($1 + 1, $2)",
            &[&7i32, &"x"],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 2);
    let row = client
        .query_one("SELECT sum(a) FROM ins WHERE b = $1", &[&"x"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 15);
    // A NULL into a NOT NULL column is refused with its SQLSTATE.
    let err = client
        .execute("INSERT INTO typed (i4) VALUES ($1)", &[&7i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23502", "{}", error_message(&err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstate_and_leave_the_connection_usable() {
    let (_work, server) = start();
    let client = server.client().await;
    let cases = [
        ("SELECT * FROM nowhere", SqlState::UNDEFINED_TABLE),
        (
            "SELECT nope FROM (SELECT 1 AS a)",
            SqlState::UNDEFINED_COLUMN,
        ),
        ("SELEC 1", SqlState::SYNTAX_ERROR),
        ("SELECT 1/0", SqlState::DIVISION_BY_ZERO),
        ("SET no_such_setting = 1", SqlState::UNDEFINED_OBJECT),
        (
            "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
            SqlState::INSUFFICIENT_PRIVILEGE,
        ),
    ];
    for (sql, expected) in cases {
        // Both protocols: simple (batch_execute) and extended (query).
        let simple = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            sqlstate(&simple),
            expected.code(),
            "simple protocol: {sql}: {simple}"
        );
        let extended = client.query(sql, &[]).await.unwrap_err();
        assert_eq!(
            sqlstate(&extended),
            expected.code(),
            "extended protocol: {sql}: {extended}"
        );
        let row = client.query_one("SELECT 1 AS ok", &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), 1, "connection unusable after {sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_out_of_the_allowed_roots_are_refused() {
    let (work, server) = start();
    std::os::unix::fs::symlink("/etc/passwd", work.path().join("innocent.csv")).unwrap();
    std::os::unix::fs::symlink("/etc", work.path().join("etc-dir")).unwrap();
    let client = server.client().await;
    for location in ["innocent.csv", "etc-dir/passwd", "etc-dir/"] {
        let err = client
            .batch_execute(&format!(
                "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{location}'"
            ))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{location}: {err}");
    }
    // A directory under a root containing a symlink to the outside: the link is not read.
    let dir = work.path().join("mixed");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(work.path().join("data/users.csv"), dir.join("users.csv")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("zz-passwd.csv")).unwrap();
    client
        .batch_execute("CREATE EXTERNAL TABLE mixed STORED AS CSV LOCATION 'mixed/'")
        .await
        .unwrap();
    let row = client
        .query_one("SELECT count(*) FROM mixed", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        4,
        "only the real file's rows are read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_query_can_be_cancelled_and_timed_out() {
    let (_work, server) = start();
    let client = server.client().await;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let long = "SELECT count(*) FROM generate_series(1, 100000000000) a";
    let err = client.query(long, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    canceller.await.unwrap().unwrap();
    assert_eq!(
        client
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        2
    );

    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let err = client.batch_execute(long).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert!(error_message(&err).contains("statement timeout"), "{err}");
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    assert_eq!(
        client
            .query_one("SELECT 3", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_authentication_accepts_the_right_password_only() {
    let work = tempfile::tempdir().unwrap();
    let options = Options {
        config: Some("[[auth.users]]\nname = \"alice\"\npassword = \"s3cret\"\n".to_string()),
        ..Options::default()
    };
    let server = TestServer::start(work.path(), &options);
    let client = server
        .connect_as("alice", Some("s3cret"))
        .await
        .expect("right password");
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    let row = client
        .query_one("SHOW session_authorization", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "alice");

    for (user, password) in [
        ("alice", "wrong"),
        ("mallory", "s3cret"),
        ("alice", "S3CRET"),
    ] {
        let err = server
            .connect_as(user, Some(password))
            .await
            .expect_err("must be refused");
        assert_eq!(
            err.code(),
            Some(&SqlState::INVALID_PASSWORD),
            "{user}/{password}: {}",
            error_message(&err)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_survive_restart_and_a_vanished_file_is_reported_on_query() {
    let work = tempfile::tempdir().unwrap();
    copy_fixtures(work.path());
    std::fs::copy(
        work.path().join("data/users.csv"),
        work.path().join("gone.csv"),
    )
    .unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 'data/users.csv';
             CREATE EXTERNAL TABLE gone STORED AS CSV LOCATION 'gone.csv';
             CREATE TABLE kept AS SELECT * FROM users WHERE country = 'DE';",
        )
        .await
        .unwrap();
    drop(client);
    server.stop();

    std::fs::remove_file(work.path().join("gone.csv")).unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    let row = client
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    let row = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);

    let err = client.query("SELECT * FROM gone", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "58P01", "{err}");
    assert!(
        error_message(&err).contains("gone"),
        "{}",
        error_message(&err)
    );
    // It still describes its columns, and SHOW TABLES says what is wrong.
    let columns = client
        .query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'gone'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(columns.len(), 3);
    let rows = client.simple_query("SHOW TABLES").await.unwrap();
    let status: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(1) == Some("gone") => {
                r.get(4).map(str::to_string)
            }
            _ => None,
        })
        .collect();
    assert_eq!(status.len(), 1);
    assert!(status[0].starts_with("unavailable"), "{status:?}");

    // Once the file is back, replacing the table heals it.
    std::fs::copy(
        work.path().join("data/users.csv"),
        work.path().join("gone.csv"),
    )
    .unwrap();
    client
        .batch_execute("CREATE OR REPLACE EXTERNAL TABLE gone STORED AS CSV LOCATION 'gone.csv'")
        .await
        .unwrap();
    let row = client
        .query_one("SELECT count(*) FROM gone", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_sql_runs_at_start_and_http_reports_health_and_metrics() {
    let work = tempfile::tempdir().unwrap();
    copy_fixtures(work.path());
    std::fs::write(
        work.path().join("init.sql"),
        "CREATE EXTERNAL TABLE IF NOT EXISTS users STORED AS CSV LOCATION 'data/users.csv';\n-- comment\nCREATE TABLE IF NOT EXISTS boot AS SELECT 1 AS one;\n",
    )
    .unwrap();
    let options = Options {
        extra_args: vec!["--init-sql".to_string(), "init.sql".to_string()],
        ..Options::default()
    };
    let server = TestServer::start(work.path(), &options);
    let client = server.client().await;
    let row = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);

    let health = http_get(server.http_addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let metrics = http_get(server.http_addr, "/metrics").await;
    let active = metrics
        .lines()
        .find(|l| l.starts_with("freshet_pg_connections_active "))
        .expect("active connections metric");
    assert_eq!(active, "freshet_pg_connections_active 1", "{metrics}");
    let statements: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("freshet_statements_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(statements >= 1, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_answers_does_not_stall_other_ddl() {
    let (_work, server) = start();
    // An S3 endpoint that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let slow = server.client().await;
    let create = format!(
        "CREATE EXTERNAL TABLE far STORED AS PARQUET LOCATION 's3://lake/far/' OPTIONS \
         ('aws.endpoint' '{endpoint}', 'aws.access_key_id' 'k', 'aws.secret_access_key' 's', \
         'aws.region' 'us-east-1')"
    );
    let waiting = tokio::spawn(async move { slow.simple_query(&create).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the store was expected to keep the statement waiting"
    );

    // Other DDL and the catalog go on while that statement waits on its store.
    let client = server.client().await;
    let quick = tokio::time::timeout(
        Duration::from_secs(10),
        client.batch_execute(
            "CREATE TABLE near (a INT); INSERT INTO near VALUES (1); DROP TABLE near",
        ),
    )
    .await;
    assert!(
        matches!(quick, Ok(Ok(()))),
        "DDL waited for the slow store: {quick:?}"
    );
    waiting.abort();
    held.abort();
}

async fn plans_made(server: &TestServer) -> u64 {
    let metrics = http_get(server.http_addr, "/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("freshet_statement_plans_total "))
        .unwrap_or_else(|| panic!("no plan counter in {metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_is_planned_once_and_again_only_after_a_change() {
    let (_work, server) = start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id INT, name TEXT); INSERT INTO items VALUES (1, 'a'), (2, 'b')",
        )
        .await
        .unwrap();
    let statement = client
        .prepare("SELECT name FROM items WHERE id >= $1 ORDER BY id")
        .await
        .unwrap();
    let before = plans_made(&server).await;
    for _ in 0..3 {
        let rows = client.query(&statement, &[&1i32]).await.unwrap();
        assert_eq!(rows.len(), 2);
    }
    assert_eq!(
        plans_made(&server).await,
        before,
        "executions planned again"
    );

    // The table changes: the next execution plans again and sees the new rows.
    client
        .batch_execute("INSERT INTO items VALUES (3, 'c')")
        .await
        .unwrap();
    let after_insert = plans_made(&server).await;
    let names: Vec<String> = client
        .query(&statement, &[&1i32])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert_eq!(plans_made(&server).await, after_insert + 1);

    // Replaced by a table of another shape under the same name: planned again, not stale.
    client
        .batch_execute("DROP TABLE items; CREATE TABLE items (id INT, name TEXT); INSERT INTO items VALUES (7, 'z')")
        .await
        .unwrap();
    let rows = client.query(&statement, &[&1i32]).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>(),
        vec!["z"]
    );

    // A session setting the plan depends on changes it too.
    client
        .batch_execute("SET datafusion.execution.batch_size = 1024")
        .await
        .unwrap();
    let after_set = plans_made(&server).await;
    client.query(&statement, &[&1i32]).await.unwrap();
    assert_eq!(plans_made(&server).await, after_set + 1);
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_its_generated_tables() {
    let work = tempfile::tempdir().unwrap();
    let options = Options {
        subcommand: Some("demo"),
        ..Options::default()
    };
    let server = TestServer::start(work.path(), &options);
    let client = server.client().await;
    let rows = client
        .query(
            "SELECT i.category, count(*) AS clicks FROM clicks c JOIN items i USING (item_id) GROUP BY i.category ORDER BY i.category",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    let total: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    assert_eq!(total, 100_000);
    let users = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap();
    assert_eq!(users.get::<_, i64>(0), 500);

    // The live part: a windowed view over the embedded broker's clickstream, and a sink.
    let start = std::time::Instant::now();
    let windows = loop {
        let rows = client
            .query(
                "SELECT category, clicks, revenue FROM live_category_clicks",
                &[],
            )
            .await
            .unwrap();
        if !rows.is_empty() || start.elapsed() > std::time::Duration::from_secs(90) {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert!(!windows.is_empty(), "no window closed in the live view");
    for row in &windows {
        let category: String = row.get(0);
        assert!(
            ["books", "music", "games", "garden", "kitchen"].contains(&category.as_str()),
            "{category}"
        );
        assert!(row.get::<_, i64>(1) > 0);
        assert!(row.get::<_, f64>(2) > 0.0);
    }
    // The demo's recommender.
    let recs = client
        .query(
            "SELECT r.item_id, i.category, r.score FROM recommend('demo_recs', 42, 5) r JOIN items i USING (item_id)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(recs.len(), 5);
    let sinks = client.simple_query("SHOW SINKS").await.unwrap();
    assert!(sinks.iter().any(|m| matches!(m,
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get("name") == Some("public.live_clicks_archive"))));
}
