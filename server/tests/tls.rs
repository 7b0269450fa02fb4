//! TLS on the three frontends, with real clients: psql (`sslmode=verify-full` against the CA
//! `freshet gen-cert` made), tokio-postgres in clear text, reqwest over https with the CA, and
//! arrow-flight's client in clear text. The Python suite (tests/python/test_tls.py) adds
//! psycopg, asyncpg, pgJDBC, pyarrow.flight and ADBC.

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_flight::sql::client::FlightSqlServiceClient;
use tonic::transport::Endpoint;

use crate::common::{error_message, freshet_binary, sqlstate, Options, TestServer};

/// Runs `freshet gen-cert` into `dir`; returns the CA certificate's path.
fn gen_cert(dir: &Path) -> PathBuf {
    let output = Command::new(freshet_binary())
        .args(["gen-cert", "--dir"])
        .arg(dir)
        .output()
        .expect("run freshet gen-cert");
    assert!(
        output.status.success(),
        "gen-cert failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.join("ca.crt")
}

/// A server with TLS from freshly generated files in `work/certs`; returns it and the CA.
fn start_tls(work: &Path, require: bool, extra: &[&str]) -> (TestServer, PathBuf) {
    let certs = work.join("certs");
    let ca = gen_cert(&certs);
    let config = format!(
        "[tls]\ncert_file = \"certs/server.crt\"\nkey_file = \"certs/server.key\"\nrequire = {require}\n"
    );
    let server = TestServer::start(
        work,
        &Options {
            config: Some(config),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        },
    );
    (server, ca)
}

/// psql with a libpq connection string; returns (success, stdout, stderr).
fn psql(conninfo: &str, sql: &str) -> (bool, String, String) {
    let output = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", sql])
        .arg(conninfo)
        .output()
        .expect("psql must be installed (apt-get install postgresql-client)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

fn conninfo(server: &TestServer, host: &str, ssl: &str) -> String {
    format!(
        "host={host} port={} user=tls_user dbname=freshet {ssl}",
        server.pg_addr.port()
    )
}

/// An https client that trusts only `ca`.
fn https_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verifies_the_server_and_clear_text_still_works_when_tls_is_optional() {
    let work = tempfile::tempdir().unwrap();
    let (server, ca) = start_tls(work.path(), false, &[]);
    let ca = ca.display().to_string();

    // verify-full checks the chain against the CA and the host name (IP and DNS SANs).
    for host in ["127.0.0.1", "localhost"] {
        let (ok, out, err) = psql(
            &conninfo(
                &server,
                host,
                &format!("sslmode=verify-full sslrootcert={ca}"),
            ),
            "SELECT 40 + 2",
        );
        assert!(ok, "psql verify-full to {host} failed: {err}");
        assert_eq!(out, "42");
    }
    // \conninfo reports the encryption psql negotiated.
    let (ok, out, err) = psql(
        &conninfo(&server, "127.0.0.1", "sslmode=require"),
        "\\conninfo",
    );
    assert!(ok, "{err}");
    assert!(out.contains("SSL connection (protocol: TLSv1."), "{out}");

    // A CA that did not sign the server's certificate is refused by the client.
    let other = work.path().join("other-ca");
    let other_ca = gen_cert(&other);
    let (ok, _, err) = psql(
        &conninfo(
            &server,
            "127.0.0.1",
            &format!("sslmode=verify-full sslrootcert={}", other_ca.display()),
        ),
        "SELECT 1",
    );
    assert!(!ok);
    assert!(err.contains("certificate verify failed"), "{err}");

    // Optional TLS: clear text is served (psql sslmode=disable and tokio-postgres, which
    // sends no SSLRequest).
    let (ok, out, err) = psql(
        &conninfo(&server, "127.0.0.1", "sslmode=disable"),
        "SELECT 7",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "7");
    let client = server.client().await;
    let row = client.query_one("SELECT 8::bigint", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 8);

    // HTTP: https with the CA, and clear text on the same port.
    let https = https_client(Path::new(&ca));
    let port = server.http_addr.port();
    for host in ["127.0.0.1", "localhost"] {
        let response = https
            .get(format!("https://{host}:{port}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("\"status\":\"ok\""));
    }
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    // A client that does not trust the CA fails the handshake.
    let untrusting = https_client(&other_ca);
    let err = untrusting
        .get(format!("https://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // Flight: clear text still served.
    let channel = Endpoint::new(format!("http://{}", server.flight_addr))
        .unwrap()
        .connect()
        .await
        .expect("connect to flight");
    let mut flight = FlightSqlServiceClient::new(channel);
    flight.execute("SELECT 1".into(), None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_text_is_refused_on_every_frontend_when_tls_is_required() {
    let work = tempfile::tempdir().unwrap();
    let (server, ca) = start_tls(work.path(), true, &[]);
    assert!(
        server.logs().contains("(TLS required)"),
        "{}",
        server.logs()
    );

    // pgwire: FATAL 28000 before any password is asked, as PostgreSQL's pg_hba refusal.
    let err = server.connect_as("tls_user", None).await.unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    let message = error_message(&err);
    assert!(
        message.contains("requires TLS") && message.contains("user \"tls_user\""),
        "{message}"
    );
    let (ok, _, stderr) = psql(
        &conninfo(&server, "127.0.0.1", "sslmode=disable"),
        "SELECT 1",
    );
    assert!(!ok);
    assert!(
        stderr.contains("FATAL:  connection without TLS refused"),
        "{stderr}"
    );
    // libpq's sslmode=allow tries clear text first, then retries with TLS after the refusal.
    let (ok, out, err) = psql(&conninfo(&server, "127.0.0.1", "sslmode=allow"), "SELECT 3");
    assert!(ok, "{err}");
    assert_eq!(out, "3");
    let (ok, out, err) = psql(
        &conninfo(
            &server,
            "localhost",
            &format!("sslmode=verify-full sslrootcert={}", ca.display()),
        ),
        "SELECT 4",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "4");

    // HTTP: a clear-text request gets 400 with the API's JSON error; https works.
    let port = server.http_addr.port();
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let body: serde_json::Value = serde_json::from_str(&plain.text().await.unwrap()).unwrap();
    assert_eq!(body["code"], "tls_required");
    let https = https_client(&ca);
    let metrics = https
        .get(format!("https://localhost:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("freshet_pg_connections_active"));

    // Flight: a clear-text gRPC call fails (the connection is closed).
    let channel = Endpoint::new(format!("http://{}", server.flight_addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = channel {
        let mut flight = FlightSqlServiceClient::new(channel);
        let err = flight.execute("SELECT 1".into(), None).await.unwrap_err();
        assert!(err.to_string().contains("transport"), "{err}");
    }
    assert!(
        server.logs().contains("frontend=\"flight\""),
        "{}",
        server.logs()
    );
}

#[test]
fn too_many_clients_is_said_over_tls_too() {
    let work = tempfile::tempdir().unwrap();
    let (server, ca) = start_tls(work.path(), true, &["--max-connections", "1"]);
    let full = format!("sslmode=verify-full sslrootcert={}", ca.display());
    // A silent connection holds the one place (until authentication_timeout); psql, requiring
    // TLS, is then refused in words, over TLS.
    let _holder = std::net::TcpStream::connect(server.pg_addr).unwrap();
    let (ok, _, err) = psql(&conninfo(&server, "127.0.0.1", &full), "SELECT 1");
    assert!(!ok);
    assert!(err.contains("sorry, too many clients already"), "{err}");
}

#[test]
fn bad_certificate_files_stop_start_up_with_their_name() {
    let work = tempfile::tempdir().unwrap();
    let run = |config: &str| {
        std::fs::write(work.path().join("freshet.toml"), config).unwrap();
        let output = Command::new(freshet_binary())
            .args(["serve", "--config", "freshet.toml", "--data-dir", "data"])
            .args(["--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--flight-addr", "127.0.0.1:0"])
            .current_dir(work.path())
            .env_remove("FRESHET_CONFIG")
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let err = run("[tls]\ncert_file = \"missing.crt\"\nkey_file = \"missing.key\"\n");
    assert!(
        err.contains("could not read TLS certificate file") && err.contains("missing.crt"),
        "{err}"
    );
    gen_cert(&work.path().join("certs"));
    std::fs::write(
        work.path().join("certs/broken.key"),
        "-----BEGIN PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = run("[tls]\ncert_file = \"certs/server.crt\"\nkey_file = \"certs/broken.key\"\n");
    assert!(err.contains("broken.key"), "{err}");
    let err = run("[tls]\ncert_file = \"certs/ca.key\"\nkey_file = \"certs/server.key\"\n");
    assert!(err.contains("holds no certificate"), "{err}");
    let err = run("[tls]\nrequire = true\n");
    assert!(err.contains("needs a certificate"), "{err}");
}
