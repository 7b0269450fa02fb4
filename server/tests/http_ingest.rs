//! Event collection over HTTP: `POST /v1/sources/{name}/events` to an `http` source, read by
//! queries and materialized views over pgwire, every refusal, CORS, and exact recovery after
//! SIGKILL. Real sockets: the real server, reqwest for HTTP, tokio-postgres for SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Options, TestServer};

const CONFIG: &str =
    "[http]\nmax_body_bytes = 65536\ncors_allowed_origins = [\"https://shop.example\"]\n";

fn options() -> Options {
    Options {
        config: Some(CONFIG.to_string()),
        ..Options::default()
    }
}

fn events_url(http: SocketAddr, source: &str) -> String {
    format!("http://{http}/v1/sources/{source}/events")
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

async fn post(
    client: &reqwest::Client,
    http: SocketAddr,
    source: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Result<Answer, reqwest::Error> {
    let mut request = client.post(events_url(http, source)).body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {status} {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Ok(Answer {
        status,
        headers,
        json,
    })
}

fn click(id: i64, page: &str) -> String {
    format!(r#"{{"id": {id}, "page": "{page}", "ts": "2026-11-01T10:00:00Z"}}"#)
}

const PAGES: [&str; 3] = ["/", "/cart", "/item/7"];

async fn page_counts(client: &tokio_postgres::Client, sql: &str) -> BTreeMap<String, i64> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect()
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn eventually_equal(
    client: &tokio_postgres::Client,
    sql: &str,
    expected: &BTreeMap<String, i64>,
) {
    let start = Instant::now();
    let mut last = BTreeMap::new();
    while start.elapsed() < Duration::from_secs(60) {
        last = page_counts(client, sql).await;
        if &last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sql} gave {last:?}, expected {expected:?}");
}

const CREATE_CLICKS: &str = "CREATE SOURCE clicks (id BIGINT, page TEXT, ts TIMESTAMP, \
     _offset BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1 second') WITH (connector = 'http')";
const CREATE_VIEW: &str =
    "CREATE MATERIALIZED VIEW page_counts AS SELECT page, count(*) AS n FROM clicks GROUP BY page";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_feed_queries_and_views_in_every_body_form() {
    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &options());
    let sql = server.client().await;
    sql.batch_execute(CREATE_CLICKS).await.unwrap();
    sql.batch_execute(CREATE_VIEW).await.unwrap();
    let http = reqwest::Client::new();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut next_id = 0;
    let mut take = |n: usize, expected: &mut BTreeMap<String, i64>| -> Vec<String> {
        (0..n)
            .map(|_| {
                let page = PAGES[(next_id % 3) as usize];
                *expected.entry(page.to_string()).or_insert(0) += 1;
                next_id += 1;
                click(next_id - 1, page)
            })
            .collect()
    };

    // One object, an array, NDJSON, and a beacon's text/plain string.
    let one = take(1, &mut expected).remove(0);
    let answer = post(
        &http,
        server.http_addr,
        "clicks",
        Some("application/json"),
        one,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    assert_eq!(answer.json["accepted"], 1);
    assert_eq!(answer.json["first_offset"], 0);
    let array = format!("[{}]", take(100, &mut expected).join(","));
    let answer = post(
        &http,
        server.http_addr,
        "clicks",
        Some("application/json"),
        array,
    )
    .await
    .unwrap();
    assert_eq!(
        (answer.status, answer.json["accepted"].clone()),
        (StatusCode::OK, 100.into())
    );
    assert_eq!(answer.json["first_offset"], 1);
    assert_eq!(answer.json["next_offset"], 101);
    let lines = take(50, &mut expected).join("\n") + "\n";
    let answer = post(
        &http,
        server.http_addr,
        "clicks",
        Some("application/x-ndjson"),
        lines,
    )
    .await
    .unwrap();
    assert_eq!(answer.json["accepted"], 50, "{}", answer.json);
    let beacon = take(1, &mut expected).remove(0);
    let answer = post(
        &http,
        server.http_addr,
        "clicks",
        Some("text/plain;charset=UTF-8"),
        beacon,
    )
    .await
    .unwrap();
    assert_eq!(answer.json["accepted"], 1, "{}", answer.json);
    let total: i64 = expected.values().sum();
    assert_eq!(total, 152);

    // A plain query reads the log; the view counts exactly the acknowledged events.
    assert_eq!(count(&sql, "SELECT count(*) FROM clicks").await, total);
    assert_eq!(
        count(&sql, "SELECT max(_offset) FROM clicks").await,
        total - 1
    );
    assert_eq!(
        count(&sql, "SELECT count(DISTINCT id) FROM clicks").await,
        total
    );
    eventually_equal(&sql, "SELECT page, n FROM page_counts", &expected).await;

    refusals(&server, &sql, &http, total).await;
    cors(&server, &http).await;
    full_log(&server, &sql, &http).await;

    // DROP SOURCE deletes the log; a new source of the same name starts empty.
    sql.batch_execute("DROP MATERIALIZED VIEW page_counts; DROP SOURCE clicks")
        .await
        .unwrap();
    assert!(!work.path().join("data-dir/sources/public.clicks").exists());
    sql.batch_execute(CREATE_CLICKS).await.unwrap();
    assert_eq!(count(&sql, "SELECT count(*) FROM clicks").await, 0);
}

/// Each bad request is refused with its status and a JSON error, and stores nothing.
async fn refusals(
    server: &TestServer,
    sql: &tokio_postgres::Client,
    http: &reqwest::Client,
    total: i64,
) {
    let at = server.http_addr;
    let body = format!(
        "[{}, {}, {{\"id\": \"seven\", \"page\": \"/\"}}, {}]",
        click(1000, "/"),
        click(1001, "/"),
        click(1003, "/")
    );
    let answer = post(http, at, "clicks", Some("application/json"), body)
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.json);
    assert_eq!(answer.json["code"], "invalid_event");
    assert_eq!(answer.json["index"], 2);
    assert_eq!(answer.json["field"], "id");
    let message = answer.json["error"].as_str().unwrap();
    assert!(
        message.contains("event 2") && message.contains("\"id\"") && message.contains("BIGINT"),
        "{message}"
    );

    let lines = format!(
        "{}\n{{\"id\": 5, \"ts\": \"not a time\"}}\n",
        click(1004, "/")
    );
    let answer = post(http, at, "clicks", Some("application/x-ndjson"), lines)
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (answer.json["index"].clone(), answer.json["field"].clone()),
        (1.into(), "ts".into())
    );

    let answer = post(
        http,
        at,
        "clicks",
        Some("application/json"),
        format!("[{}, 17]", click(1005, "/")),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json["index"], 1);
    let answer = post(http, at, "clicks", None, "{\"id\": 1,").await.unwrap();
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.json);

    // Over max_body_bytes (64 KiB), with a Content-Length and chunked. The server answers
    // before reading the rest and closes the connection, so these use unpooled connections.
    let unpooled = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let big = format!(
        "[{}]",
        (0..2000)
            .map(|i| click(2000 + i, "/"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(big.len() > 65536);
    let answer = post(
        &unpooled,
        at,
        "clicks",
        Some("application/json"),
        big.clone(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json["code"], "body_too_large");
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(8192)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let answer = post(&unpooled, at, "clicks", Some("application/json"), streamed)
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);

    let answer = post(http, at, "nosuch", None, click(1, "/")).await.unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.json["error"].as_str().unwrap().contains("nosuch"));

    sql.batch_execute(
        "CREATE SOURCE generated (id BIGINT) WITH (connector = 'datagen', rate = '1')",
    )
    .await
    .unwrap();
    let answer = post(http, at, "generated", None, click(1, "/"))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::CONFLICT);
    let message = answer.json["error"].as_str().unwrap();
    assert!(
        message.contains("datagen") && message.contains("'http'"),
        "{message}"
    );

    let answer = post(http, at, "clicks", Some("application/xml"), "<click/>")
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // All or nothing: none of the refused requests stored an event.
    assert_eq!(count(sql, "SELECT count(*) FROM clicks").await, total);
}

async fn cors(server: &TestServer, http: &reqwest::Client) {
    let url = events_url(server.http_addr, "clicks");
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
    let response = http
        .post(&url)
        .header("Origin", "https://shop.example")
        .body(click(9000, "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
}

/// A log at its max_log_bytes refuses with 429 and Retry-After, storing nothing more.
async fn full_log(server: &TestServer, sql: &tokio_postgres::Client, http: &reqwest::Client) {
    sql.batch_execute(
        "CREATE SOURCE tiny (id BIGINT, page TEXT) WITH (connector = 'http', \
         max_log_bytes = '16 KiB', segment_bytes = '4 KiB')",
    )
    .await
    .unwrap();
    let mut accepted = 0;
    let refusal = loop {
        let answer = post(http, server.http_addr, "tiny", None, click(accepted, "/"))
            .await
            .unwrap();
        if answer.status != StatusCode::OK {
            break answer;
        }
        accepted += 1;
        assert!(accepted < 10_000, "the log never filled");
    };
    assert_eq!(
        refusal.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refusal.json
    );
    assert_eq!(refusal.json["code"], "log_full");
    let retry: u64 = refusal.headers[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert!(accepted > 5);
    assert_eq!(count(sql, "SELECT count(*) FROM tiny").await, accepted);
}

/// Posts batches of 1–40 events with unique ids until `stop`; records what was acknowledged
/// and what was in flight when the connection failed (outcome unknown).
async fn sender(
    http: reqwest::Client,
    address: Arc<Mutex<Option<SocketAddr>>>,
    first_id: i64,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut id = first_id;
    let mut size = 1 + (first_id / 1_000_000) as usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(at) = *address.lock().unwrap() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        size = size * 7 % 40 + 1;
        let ids: Vec<i64> = (id..id + size as i64).collect();
        id += size as i64;
        let body = ids
            .iter()
            .map(|i| click(*i, PAGES[(*i % 3) as usize]))
            .collect::<Vec<_>>()
            .join("\n");
        match post(&http, at, "clicks", Some("application/x-ndjson"), body).await {
            Ok(answer) if answer.status == StatusCode::OK => {
                assert_eq!(answer.json["accepted"], ids.len(), "{}", answer.json);
                ledger.lock().unwrap().acknowledged.extend(ids);
            }
            Ok(answer) => panic!("refused: {} {}", answer.status, answer.json),
            Err(_) => {
                ledger.lock().unwrap().unknown.extend(ids);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[derive(Default)]
struct Ledger {
    acknowledged: BTreeSet<i64>,
    unknown: BTreeSet<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_exactly_once_in_views() {
    let work = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis() as u64;
    eprintln!("http ingest crash test seed {seed}");
    let mut server = TestServer::start(work.path(), &Options::default());
    {
        let sql = server.client().await;
        sql.batch_execute(CREATE_CLICKS).await.unwrap();
        sql.batch_execute(CREATE_VIEW).await.unwrap();
    }
    let address = Arc::new(Mutex::new(Some(server.http_addr)));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // Four concurrent senders, so kills land while requests share group commits.
    let senders: Vec<_> = (0..4)
        .map(|n| {
            tokio::spawn(sender(
                http.clone(),
                address.clone(),
                n * 1_000_000,
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect();
    for kill in 0..3u64 {
        tokio::time::sleep(Duration::from_millis(700 + (seed * (kill + 3)) % 900)).await;
        *address.lock().unwrap() = None;
        server.kill();
        server = TestServer::start(work.path(), &Options::default());
        *address.lock().unwrap() = Some(server.http_addr);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    // One more crash after the last acknowledgement, before the view may have caught up.
    server.kill();
    let server = TestServer::start(work.path(), &Options::default());
    let sql = server.client().await;

    let ledger = {
        let ledger = ledger.lock().unwrap();
        Ledger {
            acknowledged: ledger.acknowledged.clone(),
            unknown: ledger.unknown.clone(),
        }
    };
    let logged: Vec<i64> = sql
        .query("SELECT id FROM clicks", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let logged_set: BTreeSet<i64> = logged.iter().copied().collect();
    assert_eq!(logged.len(), logged_set.len(), "an event was stored twice");
    let lost: Vec<_> = ledger.acknowledged.difference(&logged_set).collect();
    assert!(
        lost.is_empty(),
        "acknowledged events lost: {} (seed {seed})",
        lost.len()
    );
    let extra: Vec<_> = logged_set
        .difference(&ledger.acknowledged)
        .filter(|id| !ledger.unknown.contains(id))
        .collect();
    assert!(
        extra.is_empty(),
        "events stored that were never sent: {extra:?}"
    );
    assert!(
        ledger.acknowledged.len() > 100,
        "too few events to mean anything"
    );

    // The view counts every stored event once: the acknowledged ones, plus those whose
    // answer the crash cut off but which were already durable.
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for id in &logged_set {
        *expected
            .entry(PAGES[(*id % 3) as usize].to_string())
            .or_insert(0) += 1;
    }
    eventually_equal(&sql, "SELECT page, n FROM page_counts", &expected).await;
    eprintln!(
        "{} acknowledged, {} with unknown outcome ({} of them stored)",
        ledger.acknowledged.len(),
        ledger.unknown.len(),
        logged_set.len() - ledger.acknowledged.len()
    );
}
