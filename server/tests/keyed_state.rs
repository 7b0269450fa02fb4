//! Keyed aggregate state and changelogs end to end, over a Kafka-protocol broker (librdkafka's
//! mock cluster in this process) and the real server: updating views over 10 and 100 000 keys
//! compared after each wave of events with the same query run as a batch query over the topic
//! (and with counts computed here), SUBSCRIBE's changes applied by the client and compared
//! the same way, and an updating view over 100 000 keys after SIGKILLs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use tokio_postgres::types::ToSql;

use crate::common::{Lcg, Options, TestServer};

const PARTITIONS: i32 = 2;

/// Event `i` of a run over `keys` keys: a key and a value in [0, 1000), scattered by a hash.
fn event(i: u64, keys: u64) -> (i64, i64) {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ 0xD6E8_FEB8_6659_FD93;
    let h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((h % keys) as i64, ((h >> 32) % 1000) as i64)
}

fn produce(brokers: &str, topic: &str, events: &[(i64, i64)], first: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    for (n, (k, v)) in events.iter().enumerate() {
        let payload = format!(r#"{{"k": {k}, "v": {v}}}"#);
        let partition = ((first + n as u64) % PARTITIONS as u64) as i32;
        loop {
            match producer.send(
                BaseRecord::<(), str>::to(topic)
                    .partition(partition)
                    .payload(&payload),
            ) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => std::thread::sleep(Duration::from_millis(5)),
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn create_source(brokers: &str, topic: &str) -> String {
    format!(
        "CREATE SOURCE {topic} (k BIGINT, v BIGINT) WITH (connector = 'kafka', \
         bootstrap_servers = '{brokers}', topic = '{topic}', format = 'json')"
    )
}

/// An updating aggregate that shows its key (changes are updates and inserts).
fn keyed_query(from: &str) -> String {
    format!(
        "SELECT k, count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi, \
                count(DISTINCT v % 7) AS kinds \
         FROM {from} GROUP BY k HAVING count(*) >= 2"
    )
}

/// An updating aggregate without its key, whose HAVING makes groups leave and come back as
/// their count grows (changes are retractions and inserts, and rows repeat).
fn keyless_query(from: &str) -> String {
    format!(
        "SELECT count(*) AS n, max(v) - min(v) AS spread FROM {from} GROUP BY k \
         HAVING count(*) % 3 <> 0"
    )
}

type Rows = BTreeMap<Vec<i64>, usize>;

/// The rows of `sql` (all BIGINT columns) as a multiset.
async fn rows(client: &tokio_postgres::Client, sql: &str) -> Rows {
    let mut out = Rows::new();
    for row in client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    {
        let values: Vec<i64> = (0..row.len()).map(|i| row.get(i)).collect();
        *out.entry(values).or_default() += 1;
    }
    out
}

async fn eventually_equal(client: &tokio_postgres::Client, sql: &str, expected: &Rows) {
    let start = Instant::now();
    let mut last = Rows::new();
    while start.elapsed() < Duration::from_secs(180) {
        last = rows(client, sql).await;
        if &last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let missing = expected
        .iter()
        .filter(|(r, n)| last.get(*r) != Some(n))
        .count();
    panic!(
        "{sql}: {} rows, expected {} ({missing} differ)",
        last.len(),
        expected.len()
    );
}

/// A SUBSCRIBE to an updating view, applied here: the rows it holds by the changes received.
struct Subscriber {
    /// Its own connection: queries on a connection wait behind an open SUBSCRIBE.
    _client: tokio_postgres::Client,
    rows: std::pin::Pin<Box<tokio_postgres::RowStream>>,
    state: Rows,
    /// Change rows of the current wave: (values, op).
    received: Vec<(Vec<i64>, String)>,
}

impl Subscriber {
    async fn start(server: &TestServer, sql: &str) -> Self {
        let client = server.client().await;
        let params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let rows = client.query_raw(sql, params).await.unwrap();
        Self {
            _client: client,
            rows: Box::pin(rows),
            state: Rows::new(),
            received: Vec::new(),
        }
    }

    fn apply(&mut self, values: Vec<i64>, op: &str) {
        match op {
            "insert" | "update_after" => *self.state.entry(values.clone()).or_default() += 1,
            "delete" | "update_before" => {
                let n = self.state.get_mut(&values).unwrap_or_else(|| {
                    panic!("{op} of a row the subscriber does not have: {values:?}")
                });
                *n -= 1;
                if *n == 0 {
                    self.state.remove(&values);
                }
            }
            other => panic!("unknown op {other}"),
        }
        self.received.push((values, op.to_string()));
    }

    /// Reads changes until the applied rows equal `expected`; returns the change rows read.
    async fn follow(&mut self, expected: &Rows) -> Vec<(Vec<i64>, String)> {
        let start = Instant::now();
        while &self.state != expected {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "the subscriber's rows ({}) never matched the batch query ({})",
                self.state.len(),
                expected.len()
            );
            // Read while rows come; compare when the stream goes quiet.
            while let Ok(next) =
                tokio::time::timeout(Duration::from_millis(500), self.rows.next()).await
            {
                let row = next.expect("the subscription ended").unwrap();
                let columns = row.len();
                assert_eq!(row.columns()[columns - 1].name(), "op");
                let values: Vec<i64> = (0..columns - 1).map(|i| row.get(i)).collect();
                let op: String = row.get(columns - 1);
                self.apply(values, &op);
            }
        }
        std::mem::take(&mut self.received)
    }
}

/// Checks the shape of one wave's changes to the keyed view: every row is of a key the wave
/// touched (changes, not a resent snapshot), each update_before is followed by the
/// update_after of the same key, and a group never leaves (its count only grows).
fn check_keyed_changes(changes: &[(Vec<i64>, String)], touched: &BTreeSet<i64>) {
    for (i, (values, op)) in changes.iter().enumerate() {
        assert!(
            touched.contains(&values[0]),
            "a change of key {} which the wave did not touch",
            values[0]
        );
        match op.as_str() {
            "update_before" => {
                let (next, next_op) = &changes[i + 1];
                assert_eq!(next_op, "update_after");
                assert_eq!(next[0], values[0]);
                assert_ne!(next, values, "an update that changes nothing");
            }
            "update_after" => assert_eq!(changes[i - 1].1, "update_before"),
            "insert" => {}
            other => panic!("unexpected {other} in a view whose groups only grow"),
        }
    }
}

async fn updating_views_follow_the_batch_query(keys: u64, waves: &[u64]) {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("ev", PARTITIONS, 1).unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(&create_source(&brokers, "ev"))
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW keyed WITH (checkpoint_interval = '1s') AS {};
             CREATE MATERIALIZED VIEW keyless WITH (checkpoint_interval = '1s') AS {}",
            keyed_query("ev"),
            keyless_query("ev")
        ))
        .await
        .unwrap();
    let mut subscribers: Option<(Subscriber, Subscriber)> = None;
    // Counts and sums computed here, to check the batch query itself.
    let mut here: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut produced = 0u64;
    for (wave, &n) in waves.iter().enumerate() {
        let events: Vec<(i64, i64)> = (produced..produced + n).map(|i| event(i, keys)).collect();
        produce(&brokers, "ev", &events, produced);
        produced += n;
        let touched: BTreeSet<i64> = events.iter().map(|(k, _)| *k).collect();
        for (k, v) in &events {
            let entry = here.entry(*k).or_default();
            entry.0 += 1;
            entry.1 += v;
        }

        let expected_keyed = rows(&client, &format!("{} ORDER BY k", keyed_query("ev"))).await;
        let expected_keyless = rows(&client, &keyless_query("ev")).await;
        let from_here: BTreeMap<i64, (i64, i64)> = here
            .iter()
            .filter(|(_, (n, _))| *n >= 2)
            .map(|(k, v)| (*k, *v))
            .collect();
        let from_batch: BTreeMap<i64, (i64, i64)> = expected_keyed
            .keys()
            .map(|r| (r[0], (r[1], r[2])))
            .collect();
        assert_eq!(
            from_batch, from_here,
            "the batch query counts what was produced"
        );
        assert!(!expected_keyless.is_empty());

        eventually_equal(&client, "SELECT * FROM keyed", &expected_keyed).await;
        eventually_equal(&client, "SELECT * FROM keyless", &expected_keyless).await;

        match &mut subscribers {
            None => {
                // Subscribing now: the current rows come first, all as inserts.
                let mut keyed = Subscriber::start(&server, "SUBSCRIBE keyed").await;
                let first = keyed.follow(&expected_keyed).await;
                assert_eq!(first.len(), expected_keyed.len());
                assert!(first.iter().all(|(_, op)| op == "insert"));
                let mut keyless = Subscriber::start(&server, "SUBSCRIBE keyless").await;
                keyless.follow(&expected_keyless).await;
                subscribers = Some((keyed, keyless));
            }
            Some((keyed, keyless)) => {
                let changes = keyed.follow(&expected_keyed).await;
                assert!(!changes.is_empty(), "wave {wave} changed the view");
                check_keyed_changes(&changes, &touched);
                let changes = keyless.follow(&expected_keyless).await;
                assert!(changes
                    .iter()
                    .all(|(_, op)| op == "insert" || op == "delete"));
            }
        }
    }
    // An ad-hoc SUBSCRIBE of an updating query reads the topic from the start and carries
    // the operation column too.
    let expected_keyless = rows(&client, &keyless_query("ev")).await;
    let mut adhoc =
        Subscriber::start(&server, &format!("SUBSCRIBE ({})", keyless_query("ev"))).await;
    adhoc.follow(&expected_keyless).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updating_view_over_10_keys_equals_the_batch_query_after_each_wave() {
    updating_views_follow_the_batch_query(10, &[40, 25, 300, 7, 1000]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updating_view_over_100_000_keys_equals_the_batch_query_after_each_wave() {
    updating_views_follow_the_batch_query(100_000, &[90_000, 60_000, 500, 120_000]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updating_view_over_100_000_keys_survives_sigkill_exactly() {
    let keys = 100_000;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("ev", PARTITIONS, 1).unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("keyed crash test seed {seed}");
    let mut random = Lcg(seed);
    let total = 240_000u64;
    let feeder_brokers = brokers.clone();
    let feeder = std::thread::spawn(move || {
        let mut at = 0;
        while at < total {
            let n = 20_000.min(total - at);
            let events: Vec<(i64, i64)> = (at..at + n).map(|i| event(i, keys)).collect();
            produce(&feeder_brokers, "ev", &events, at);
            at += n;
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    let work = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(work.path(), &Options::default());
    {
        let client = server.client().await;
        client
            .batch_execute(&create_source(&brokers, "ev"))
            .await
            .unwrap();
        client
            .batch_execute(&format!(
                "CREATE MATERIALIZED VIEW keyed WITH (checkpoint_interval = '300ms') AS {}",
                keyed_query("ev")
            ))
            .await
            .unwrap();
    }
    let mut kills = 0;
    while !feeder.is_finished() || kills < 3 {
        tokio::time::sleep(Duration::from_millis(400 + random.next(1500))).await;
        server.kill();
        kills += 1;
        server = TestServer::start(work.path(), &Options::default());
    }
    feeder.join().unwrap();
    let client = server.client().await;
    let expected = rows(&client, &keyed_query("ev")).await;
    assert!(expected.len() > 50_000);
    eventually_equal(&client, "SELECT * FROM keyed", &expected).await;
    eprintln!("keyed crash test: {kills} kills, {} rows", expected.len());
}

/// A bounded generator has all its events available at once, so micro-batches are as large
/// as a round allows (262 144 events) and most of their keys are new: the case where
/// DataFusion's partial aggregation would stop grouping and pass rows through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updating_view_over_a_million_keys_fed_full_micro_batches_equals_the_batch_query() {
    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE SOURCE g (k BIGINT, v BIGINT) WITH (connector = 'datagen', events = 600000, \
             seed = 3, \"fields.k.min\" = 0, \"fields.k.max\" = 999999, \"fields.v.max\" = 1000)",
        )
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW keyed AS {}",
            keyed_query("g")
        ))
        .await
        .unwrap();
    let expected = rows(&client, &keyed_query("g")).await;
    assert!(expected.len() > 100_000);
    eventually_equal(&client, "SELECT * FROM keyed", &expected).await;
    let total: i64 = client
        .query_one(
            "SELECT sum(n) FROM (SELECT k, count(*) AS n FROM g GROUP BY k)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 600_000);
}
