//! Kafka sources end to end: a real Kafka-protocol broker (librdkafka's mock cluster, in this
//! test process), the real server, windowed SQL over pgwire.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::common::{Options, TestServer};

/// 2026-11-01T10:00:00Z in milliseconds.
const BASE_MS: i64 = 1_793_527_200_000;

struct Event {
    partition: i32,
    ts_ms: i64,
    payload: String,
}

/// 600 events over 3 partitions, ~17 minutes of event time, out of order within each
/// partition, timestamps alternately RFC 3339 strings and epoch milliseconds.
fn events() -> Vec<Event> {
    (0..600i64)
        .map(|i| {
            // A deterministic shuffle: jitter of up to ±20 s around 1.7 s steps.
            let ts_ms = BASE_MS + i * 1_700 + ((i * 7919) % 41 - 20) * 1_000;
            let ts = if i % 2 == 0 {
                let secs = ts_ms / 1000;
                let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
                format!("\"2026-11-01T{h:02}:{m:02}:{s:02}.{:03}Z\"", ts_ms % 1000)
            } else {
                ts_ms.to_string()
            };
            Event {
                partition: (i % 3) as i32,
                ts_ms,
                payload: format!(
                    r#"{{"user_id": {}, "item_id": {}, "action": "{}", "ts": {ts}}}"#,
                    i % 7,
                    i % 5,
                    if i % 4 == 0 { "buy" } else { "view" }
                ),
            }
        })
        .collect()
}

fn produce(brokers: &str, topic: &str, messages: &[(i32, String)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (partition, payload) in messages {
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .partition(*partition)
                    .payload(payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Counts per window start, computed here independently of the server.
fn tumble_counts(events: &[Event], size_ms: i64) -> BTreeMap<i64, i64> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts
            .entry(e.ts_ms.div_euclid(size_ms) * size_ms)
            .or_insert(0) += 1;
    }
    counts
}

fn hop_counts(events: &[Event], slide_ms: i64, size_ms: i64) -> BTreeMap<i64, i64> {
    let mut counts = BTreeMap::new();
    for e in events {
        let last = e.ts_ms.div_euclid(slide_ms) * slide_ms;
        let mut start = last;
        while start > e.ts_ms - size_ms {
            *counts.entry(start).or_insert(0) += 1;
            start -= slide_ms;
        }
    }
    counts
}

async fn window_counts(client: &tokio_postgres::Client, from: &str) -> BTreeMap<i64, i64> {
    let sql = format!(
        "SELECT CAST(date_part('epoch', window_start) * 1000 AS BIGINT) AS start_ms, count(*) AS n \
         FROM {from} GROUP BY window_start ORDER BY window_start"
    );
    client
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_queries_over_a_topic_match_independent_counts() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("clicks", 3, 1).unwrap();
    let events = events();
    let mut messages: Vec<(i32, String)> = events
        .iter()
        .map(|e| (e.partition, e.payload.clone()))
        .collect();
    messages.insert(100, (1, "{\"user_id\": oops".to_string()));
    messages.insert(400, (2, "not json at all".to_string()));
    produce(&brokers, "clicks", &messages);

    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE clicks (
               user_id BIGINT, item_id BIGINT, action VARCHAR, ts TIMESTAMP, _partition INT,
               WATERMARK FOR ts AS ts - INTERVAL '2 seconds'
             ) WITH (connector = 'kafka', bootstrap_servers = '{brokers}', topic = 'clicks', format = 'json')"
        ))
        .await
        .unwrap();

    let total: i64 = client
        .query_one("SELECT count(*) FROM clicks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 600, "every good message, none of the malformed ones");

    let tumble = window_counts(&client, "TUMBLE(clicks, ts, INTERVAL '1 minute')").await;
    assert_eq!(tumble, tumble_counts(&events, 60_000));
    let hop = window_counts(
        &client,
        "HOP(clicks, ts, INTERVAL '30 seconds', INTERVAL '2 minutes')",
    )
    .await;
    assert_eq!(hop, hop_counts(&events, 30_000, 120_000));

    // Metadata columns and projection.
    let per_partition = client
        .query(
            "SELECT _partition, count(*) FROM clicks GROUP BY _partition ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let per_partition: Vec<(i32, i64)> =
        per_partition.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(per_partition, vec![(0, 200), (1, 200), (2, 200)]);

    let rows = client.simple_query("SHOW SOURCES").await.unwrap();
    let skipped: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                r.get("malformed_skipped").map(str::to_string)
            }
            _ => None,
        })
        .collect();
    // Every query above read the two bad messages again; each read counts them.
    let skipped: u64 = skipped[0].parse().unwrap();
    assert!(skipped >= 2 && skipped.is_multiple_of(2), "{skipped}");

    // The source survives a restart and reads the same data.
    drop(client);
    server.stop();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    let again = window_counts(&client, "TUMBLE(clicks, ts, INTERVAL '1 minute')").await;
    assert_eq!(again, tumble_counts(&events, 60_000));
    client.batch_execute("DROP SOURCE clicks").await.unwrap();
    let err = client.query("SELECT * FROM clicks", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_source_errors_name_the_problem() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("present", 1, 1).unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    let cases = [
        (format!("CREATE SOURCE s (a INT) WITH (connector = 'kafka', bootstrap_servers = '{brokers}', topic = 'present', fromat = 'json')"), "'fromat'"),
        ("CREATE SOURCE s (a INT) WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:1', topic = 'x', timeout_ms = 1500)".to_string(), "127.0.0.1:1"),
        (format!("CREATE SOURCE s (a INT) WITH (connector = 'kafka', bootstrap_servers = '{brokers}', topic = 'absent', timeout_ms = 3000)"), "absent"),
        ("CREATE SOURCE s (a INT) WITH (connector = 'kafka', topic = 'present')".to_string(), "bootstrap_servers"),
        ("CREATE SOURCE s (a INT, WATERMARK FOR b AS b) WITH (connector = 'datagen')".to_string(), "WATERMARK FOR b"),
        ("CREATE SOURCE s (a INT) WITH (connector = 'nosuch')".to_string(), "nosuch"),
    ];
    for (sql, expected) in cases {
        let err = client.batch_execute(&sql).await.unwrap_err();
        let message = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(message.contains(expected), "{sql}\n=> {message}");
        assert_eq!(
            client
                .query_one("SELECT 1", &[])
                .await
                .unwrap()
                .get::<_, i64>(0),
            1
        );
    }
}
