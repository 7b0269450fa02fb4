//! Session-level protections with real clients: failed logins answered late, later per
//! failure from the same address (pgwire with tokio-postgres, Flight with arrow-flight's
//! client), and `idle_session_timeout`.

use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use tonic::transport::Endpoint;

use crate::common::{sqlstate, Options, TestServer};

const USERS: &str = "[[auth.users]]\nname = \"alice\"\npassword = \"s3cret\"\n";

/// The delays the server logged for failed logins, in order, in milliseconds.
fn logged_delays(server: &TestServer) -> Vec<u64> {
    server
        .logs()
        .lines()
        .filter(|line| line.contains("failed login: answer delayed"))
        .filter_map(|line| {
            let rest = &line[line.find("delay_ms=")? + "delay_ms=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_answered_later_and_later_per_address() {
    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        work.path(),
        &Options {
            config: Some(USERS.to_string()),
            extra_args: vec!["--auth-failure-delay".into(), "200ms".into()],
            ..Options::default()
        },
    );

    // Each wrong password waits longer before its 28P01 arrives: 200, 400, 800 ms.
    for expected in [200u64, 400, 800] {
        let started = Instant::now();
        let err = server
            .connect_as("alice", Some("wrong"))
            .await
            .expect_err("a wrong password is refused");
        let waited = started.elapsed();
        assert_eq!(sqlstate(&err), "28P01", "{err}");
        assert!(
            waited >= Duration::from_millis(expected),
            "answered after {waited:?}, before the {expected} ms delay"
        );
    }
    assert_eq!(logged_delays(&server), vec![200, 400, 800]);

    // The address's count is shared with Flight: a wrong password there waits 1600 ms.
    let channel = Endpoint::new(format!("http://{}", server.flight_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = FlightSqlServiceClient::new(channel);
    let started = Instant::now();
    let err = flight.handshake("alice", "wrong").await.unwrap_err();
    assert!(
        err.to_string().contains("invalid user name or password"),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1600));
    assert_eq!(logged_delays(&server), vec![200, 400, 800, 1600]);

    // A right password gets in, and clears the address's failures: back to 200 ms.
    let client = server.connect_as("alice", Some("s3cret")).await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    server
        .connect_as("mallory", Some("s3cret"))
        .await
        .expect_err("an unknown user is refused like a wrong password");
    assert_eq!(logged_delays(&server), vec![200, 400, 800, 1600, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_with_57p05_and_busy_ones_are_not() {
    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        work.path(),
        &Options {
            extra_args: vec!["--idle-session-timeout".into(), "1s".into()],
            ..Options::default()
        },
    );

    // A session that sends a query every 300 ms outlives the timeout several times over.
    let busy = server.client().await;
    for _ in 0..8 {
        busy.query_one("SELECT 1", &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // An idle one is told FATAL 57P05 and closed.
    let (idle, connection) =
        tokio_postgres::connect(&server.conn_string("idle", None), tokio_postgres::NoTls)
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    idle.query_one("SELECT 1", &[]).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), connection)
        .await
        .expect("the idle connection is closed by the server")
        .unwrap();
    let err = ended.expect_err("closed with an error");
    assert_eq!(sqlstate(&err), "57P05", "{err}");
    assert!(idle.is_closed());
}
