//! Hostile input must never take the server down: statements that ask too much of the
//! planner, malformed and truncated wire messages, too many clients, clients that stall in
//! start-up. After each case the server answers a normal query, logs no panic, and its memory
//! stayed bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{error_message, sqlstate, Options, TestServer};

fn start_with(args: &[&str]) -> (tempfile::TempDir, TestServer) {
    let work = tempfile::tempdir().unwrap();
    let options = Options {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    };
    let server = TestServer::start(work.path(), &options);
    (work, server)
}

/// The server is alive, answers a query on a new connection, and logged no panic.
async fn assert_healthy(server: &mut TestServer) {
    assert!(server.is_running(), "server died; log:\n{}", server.logs());
    let client = server.client().await;
    let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    let logs = server.logs();
    assert!(
        !logs.to_lowercase().contains("panic"),
        "the server logged a panic:\n{logs}"
    );
}

const GIB: u64 = 1024 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_that_ask_too_much_are_refused_with_clear_errors() {
    let (_work, mut server) = start_with(&[]);
    let client = server.client().await;

    // A placeholder number used to size a vector: once this aborted the process.
    for sql in ["SELECT $2000000000", "SELECT $65536", "SELECT $0"] {
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42P02", "{sql}: {err}");
    }
    let err = client.prepare("SELECT $1 + $70000").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P02", "{err}");
    // The largest PostgreSQL allows is still fine.
    let statement = client.prepare("SELECT $65535::int8").await.unwrap();
    assert_eq!(statement.params().len(), 65_535);

    // 2 million terms (8 MB): over the statement length limit, refused before it is read.
    let huge = format!("SELECT 1{}", " + 1".repeat(2_000_000));
    let err = client.simple_query(&huge).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54000", "{err}");
    // 100 000 terms fit the length limit but chain too many operators.
    let deep = format!("SELECT 1{}", " + 1".repeat(100_000));
    let err = client.simple_query(&deep).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54001", "{err}");
    let err = client.prepare(&deep).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54001", "{err}");
    let ors = format!("SELECT 1 WHERE {}", vec!["true"; 20_000].join(" OR "));
    let err = client.simple_query(&ors).await.unwrap_err();
    assert_eq!(sqlstate(&err), "54001", "{err}");

    // The same connection goes on, and a long list is not mistaken for a deep expression.
    let list = format!("SELECT 7 IN ({})", vec!["7"; 5_000].join(", "));
    let row = client.query_one(list.as_str(), &[]).await.unwrap();
    assert!(row.get::<_, bool>(0));
    assert_healthy(&mut server).await;
    let peak = server.peak_rss_bytes();
    assert!(peak < GIB, "peak memory {peak} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_and_cancel_stop_a_statement_while_it_is_planned() {
    // With the depth limit raised, a 2 000-term expression takes the planner seconds (minutes
    // in a debug build): the timeout and the cancel must answer without waiting for it, and
    // the abandoned plan must not hold up other connections.
    let (_work, mut server) = start_with(&["--max-expression-depth", "5000"]);
    let deep = format!("SELECT 1{}", " + 1".repeat(2_000));

    let client = server.client().await;
    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let err = client.simple_query(&deep).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert_eq!(
        error_message(&err),
        "canceling statement due to statement timeout"
    );
    // The same connection keeps working.
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);

    let other = server.client().await;
    let cancel = other.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let err = other.prepare(&deep).await.unwrap_err();
    canceller.await.unwrap();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert_eq!(
        error_message(&err),
        "canceling statement due to user request"
    );
    assert_healthy(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_max_connections_get_too_many_clients() {
    let (_work, mut server) = start_with(&["--max-connections", "2"]);
    let first = server.client().await;
    let second = server.client().await;

    // tokio-postgres (no TLS request) and psql (asks for TLS first, sslmode=prefer).
    let err = server.connect_as("test", None).await.unwrap_err();
    assert_eq!(sqlstate(&err), "53300", "{err}");
    assert_eq!(error_message(&err), "sorry, too many clients already");
    let psql = std::process::Command::new("psql")
        .arg(server.conn_string("test", None))
        .args(["-X", "-c", "SELECT 1"])
        .output()
        .expect("run psql (Debian: postgresql-client)");
    let stderr = String::from_utf8_lossy(&psql.stderr);
    assert!(!psql.status.success());
    assert!(
        stderr.contains("sorry, too many clients already"),
        "psql said: {stderr}"
    );

    // The two admitted connections were not disturbed; once one leaves, a new client gets in.
    assert_eq!(
        first
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    drop(first);
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(client) = server.connect_as("test", None).await {
            admitted = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let third = admitted.expect("a slot freed when a client left");
    assert_eq!(
        third
            .query_one("SELECT 3", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        3
    );
    drop(second);
    drop(third);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_healthy(&mut server).await;
}

/// Reads until the server closes the connection, or gives up after `limit`.
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let read_all = async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_stall_in_start_up_are_closed_after_the_authentication_timeout() {
    let work = tempfile::tempdir().unwrap();
    let options = Options {
        config: Some("[[auth.users]]\nname = \"alice\"\npassword = \"secret\"\n".to_string()),
        extra_args: vec![
            "--authentication-timeout".to_string(),
            "1s".to_string(),
            "--max-connections".to_string(),
            "2".to_string(),
        ],
        ..Options::default()
    };
    let mut server = TestServer::start(work.path(), &options);

    // Two stalled clients hold both slots: one sends nothing, one stops after its start-up
    // packet (the server has asked for its SCRAM exchange).
    let mut silent = TcpStream::connect(server.pg_addr).await.unwrap();
    let mut stalled = TcpStream::connect(server.pg_addr).await.unwrap();
    stalled.write_all(&startup_packet("alice")).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(30)).await);
    assert!(closed_within(&mut stalled, Duration::from_secs(30)).await);

    // Their slots are free again.
    let client = server.connect_as("alice", Some("secret")).await.unwrap();
    assert_eq!(
        client
            .query_one("SELECT 5", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        5
    );
    drop(client);
    let logs = server.logs();
    assert!(!logs.to_lowercase().contains("panic"), "{logs}");
    assert!(server.is_running());
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for (key, value) in [("user", user), ("database", "freshet")] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

/// A typed frontend message with a correct length field.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![tag];
    bytes.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// A typed frontend message whose length field says `length`, whatever follows.
fn with_length(tag: u8, length: i32, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![tag];
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// Connects, starts up (trust) and reads until the first ReadyForQuery.
async fn started(server: &TestServer) -> TcpStream {
    let mut socket = TcpStream::connect(server.pg_addr).await.unwrap();
    socket.write_all(&startup_packet("test")).await.unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !ready_for_query_in(&seen) {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buffer))
            .await
            .expect("start-up answered")
            .unwrap();
        assert!(n > 0, "closed during start-up");
        seen.extend_from_slice(&buffer[..n]);
    }
    socket
}

fn ready_for_query_in(bytes: &[u8]) -> bool {
    backend_messages(bytes).iter().any(|(tag, _)| *tag == b'Z')
}

/// Splits backend bytes into (type, body) messages, ignoring a trailing partial one.
fn backend_messages(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut messages = Vec::new();
    let mut at = 0;
    while at + 5 <= bytes.len() {
        let length =
            i32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        let end = at + 1 + length.max(4) as usize;
        if end > bytes.len() {
            break;
        }
        messages.push((bytes[at], bytes[at + 5..end].to_vec()));
        at = end;
    }
    messages
}

/// The SQLSTATE of an ErrorResponse body.
fn error_code(body: &[u8]) -> Option<String> {
    let mut fields = body.split(|b| *b == 0);
    fields.find_map(|field| {
        field
            .strip_prefix(b"C")
            .map(|code| String::from_utf8_lossy(code).into_owned())
    })
}

/// Sends `bytes` after start-up; returns what the server answered until it closed the
/// connection or went quiet.
async fn answer_to(server: &TestServer, bytes: &[u8]) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut socket = started(server).await;
    socket.write_all(bytes).await.unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut closed = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => break,
        }
    }
    (backend_messages(&seen), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_truncated_messages_get_protocol_errors_not_panics() {
    let (_work, mut server) = start_with(&["--max-message-bytes", "1048576"]);
    // (what, bytes): each message is short of the fields it declares, or its framing is bad.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Parse, empty body", message(b'P', b"")),
        (
            "Parse, half a parameter count",
            message(b'P', b"s\0SELECT 1\0\x00"),
        ),
        (
            "Parse, 5 types declared, 1 sent",
            message(b'P', b"s\0SELECT $1\0\x00\x05\x00\x00\x00\x17"),
        ),
        (
            "Parse, 65535 types declared",
            message(b'P', b"\0SELECT 1\0\xff\xff"),
        ),
        ("Bind, empty body", message(b'B', b"")),
        (
            "Bind, 3 formats declared, 1 sent",
            message(b'B', b"\0\0\x00\x03\x00\x01"),
        ),
        (
            "Bind, value longer than the body",
            message(b'B', b"\0\0\x00\x00\x00\x01\x00\x00\x03\xe8ab"),
        ),
        (
            "Bind, 65535 values declared",
            message(b'B', b"\0\0\x00\x00\xff\xff"),
        ),
        (
            "Bind, no result formats",
            message(b'B', b"\0\0\x00\x00\x00\x00"),
        ),
        ("Describe, empty body", message(b'D', b"")),
        ("Execute, no row limit", message(b'E', b"\0")),
        ("Execute, empty body", message(b'E', b"")),
        ("Close, empty body", message(b'C', b"")),
        ("CopyFail outside COPY", message(b'f', b"")),
        ("CopyData outside COPY", message(b'd', b"\x01\x02")),
        ("password message in trust mode", message(b'p', b"")),
        ("unknown message type", message(b'Y', b"abc")),
        ("length 0", with_length(b'Q', 0, b"SELECT 1\0")),
        ("length 3", with_length(b'Q', 3, b"SELECT 1\0")),
        ("negative length", with_length(b'Q', -1, b"SELECT 1\0")),
        (
            "length over the limit",
            with_length(b'Q', 2_000_000, b"SELECT 1\0"),
        ),
        ("Query without its terminator", message(b'Q', b"SELECT 1")),
        ("Sync with a body", message(b'S', b"junk")),
        ("Flush with a body", message(b'H', b"junk")),
    ];
    for (what, bytes) in &cases {
        let (answer, closed) = answer_to(&server, bytes).await;
        let errors: Vec<String> = answer
            .iter()
            .filter(|(tag, _)| *tag == b'E')
            .filter_map(|(_, body)| error_code(body))
            .collect();
        // Either a clear error (a protocol violation closes the connection, as in
        // PostgreSQL), or the message was harmless and the connection still answers.
        if closed {
            assert!(
                !errors.is_empty(),
                "{what}: connection closed without an ErrorResponse ({answer:?})"
            );
        }
        for code in &errors {
            assert!(
                ["08P01", "42601", "26000", "XX000", "0A000"].contains(&code.as_str()),
                "{what}: unexpected SQLSTATE {code}"
            );
        }
        assert!(server.is_running(), "{what} killed the server");
    }
    // The truncated bodies specifically are protocol violations.
    for (what, bytes) in cases.iter().take(12) {
        let (answer, _) = answer_to(&server, bytes).await;
        let codes: Vec<String> = answer
            .iter()
            .filter(|(tag, _)| *tag == b'E')
            .filter_map(|(_, body)| error_code(body))
            .collect();
        assert_eq!(codes, vec!["08P01".to_string()], "{what}");
    }
    // Truncated start-up packets, before any session exists.
    for bytes in [
        vec![0, 0, 0, 8, 0, 3, 0, 0],
        vec![0, 0, 0, 4],
        vec![0, 0, 0, 9, 0, 3, 0, 0, b'u'],
        vec![0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0],
    ] {
        let mut socket = TcpStream::connect(server.pg_addr).await.unwrap();
        socket.write_all(&bytes).await.unwrap();
        let _ = closed_within(&mut socket, Duration::from_secs(5)).await;
    }
    assert_healthy(&mut server).await;
}

/// Forwards one client's connections to the server, recording what the client sent.
async fn recording_proxy(
    server: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let sink = recorded.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let upstream = TcpStream::connect(server).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = upstream.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut sent = Vec::new();
                let mut buffer = [0u8; 8192];
                loop {
                    match client_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            sent.extend_from_slice(&buffer[..n]);
                            if server_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = server_write.shutdown().await;
                let _ = down.await;
                sink.lock().unwrap().push(sent);
            });
        }
    });
    (addr, recorded)
}

/// Real client traffic, recorded through the proxy: tokio-postgres (simple and extended
/// protocol, binary results, an error, a cancel-free prepared statement run twice) and psql.
async fn record_traffic(server: &TestServer) -> Vec<Vec<u8>> {
    let (proxy, recorded) = recording_proxy(server.pg_addr).await;
    let dsn = format!(
        "host={} port={} user=fuzz dbname=freshet",
        proxy.ip(),
        proxy.port()
    );
    {
        let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        client
            .batch_execute(
                "CREATE TABLE fuzz_t AS SELECT 1 AS a, 'x' AS b; SET application_name = 'fuzz'",
            )
            .await
            .unwrap();
        let statement = client
            .prepare("SELECT a, b, $1::text AS p FROM fuzz_t WHERE a = $2")
            .await
            .unwrap();
        for value in [1i64, 2] {
            client.query(&statement, &[&"param", &value]).await.unwrap();
        }
        let _ = client.simple_query("SELECT nope FROM nowhere").await;
        client
            .query("SELECT now(), 1.5::float8, ARRAY[1, 2]", &[])
            .await
            .unwrap();
        drop(client);
        let _ = driver.await;
    }
    let psql = std::process::Command::new("psql")
        .arg(&dsn)
        .args(["-X", "-c", "SELECT count(*) FROM fuzz_t", "-c", "\\dt"])
        .output()
        .expect("run psql");
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    // The proxy records a connection when it ends.
    for _ in 0..100 {
        if recorded.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let traffic = recorded.lock().unwrap().clone();
    assert!(traffic.len() >= 2, "recorded {} connections", traffic.len());
    traffic
}

/// One mutation of a recorded connection's bytes.
fn mutate(rng: &mut StdRng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let rounds = rng.random_range(1..=3);
    for _ in 0..rounds {
        if bytes.is_empty() {
            break;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..6) {
            // Truncate: the connection ends mid-message.
            0 => bytes.truncate(at),
            // Flip a byte anywhere (types, lengths, counts, text).
            1 => bytes[at] ^= 1 << rng.random_range(0..8),
            // Overwrite four bytes with a hostile integer (a length or count).
            2 => {
                let hostile: [i32; 6] = [0, 3, -1, i32::MAX, 65_535, rng.random()];
                let value = hostile[rng.random_range(0..hostile.len())].to_be_bytes();
                for (i, b) in value.iter().enumerate() {
                    if at + i < bytes.len() {
                        bytes[at + i] = *b;
                    }
                }
            }
            // Cut a piece out of the middle.
            3 => {
                let end = (at + rng.random_range(1..16)).min(bytes.len());
                bytes.drain(at..end);
            }
            // Insert random bytes.
            4 => {
                let junk: Vec<u8> = (0..rng.random_range(1..32)).map(|_| rng.random()).collect();
                bytes.splice(at..at, junk);
            }
            // Repeat a stretch (a message sent twice, or half of one).
            _ => {
                let end = (at + rng.random_range(1..64)).min(bytes.len());
                let stretch = bytes[at..end].to_vec();
                bytes.splice(end..end, stretch);
            }
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_client_traffic_never_panics_the_server() {
    let (_work, mut server) = start_with(&["--max-message-bytes", "1048576"]);
    let traffic = record_traffic(&server).await;
    // FRESHET_FUZZ_CASES raises the count when run by hand; the seed is printed so a failure
    // can be replayed.
    let cases: usize = std::env::var("FRESHET_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let seed: u64 = std::env::var("FRESHET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_204);
    println!("fuzzing pgwire with {cases} cases, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let inputs: Vec<Vec<u8>> = (0..cases)
        .map(|_| {
            let original = &traffic[rng.random_range(0..traffic.len())];
            mutate(&mut rng, original)
        })
        .collect();
    let addr = server.pg_addr;
    let inputs = Arc::new(Mutex::new(inputs));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let inputs = inputs.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let Some(bytes) = inputs.lock().unwrap().pop() else {
                    return;
                };
                let Ok(mut socket) = TcpStream::connect(addr).await else {
                    continue;
                };
                let _ = socket.write_all(&bytes).await;
                let _ = socket.shutdown().await;
                let _ = closed_within(&mut socket, Duration::from_millis(500)).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert_healthy(&mut server).await;
    let peak = server.peak_rss_bytes();
    assert!(peak < GIB, "peak memory {peak} bytes");
}
