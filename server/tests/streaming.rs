//! Continuous queries end to end: a Kafka-protocol broker (librdkafka's mock cluster in this
//! process), the real server, materialized views compared with counts computed here,
//! SUBSCRIBE over pgwire and Flight SQL, and crash recovery with SIGKILL.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use freshet_sql::datafusion::arrow::array::{Array, Int64Array};
use freshet_sql::datafusion::arrow::compute::cast;
use freshet_sql::datafusion::arrow::datatypes::{DataType, TimeUnit};
use futures::StreamExt;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use tokio_postgres::types::ToSql;
use tonic::transport::Endpoint;

use crate::common::{Lcg, Options, TestServer};

/// 2026-11-01T10:00:00Z in milliseconds.
const BASE_MS: i64 = 1_793_527_200_000;
const MINUTE: i64 = 60_000;

#[derive(Clone)]
struct Event {
    partition: i32,
    ts_ms: i64,
    user_id: i64,
    item_id: i64,
    action: &'static str,
}

impl Event {
    fn payload(&self) -> String {
        format!(
            r#"{{"user_id": {}, "item_id": {}, "action": "{}", "ts": {}}}"#,
            self.user_id, self.item_id, self.action, self.ts_ms
        )
    }
}

/// `n` events from event number `from`, over 3 partitions, 1.7 s apart, out of order by up to
/// ±20 s (less than the sources' 45 s watermark delay, so none is late).
fn events(from: i64, n: i64) -> Vec<Event> {
    (from..from + n)
        .map(|i| Event {
            partition: (i % 3) as i32,
            ts_ms: BASE_MS + i * 1_700 + ((i * 7919) % 41 - 20) * 1_000,
            user_id: i % 7,
            item_id: i % 5,
            action: if i % 4 == 0 { "buy" } else { "view" },
        })
        .collect()
}

fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

fn produce(brokers: &str, topic: &str, events: &[Event]) {
    let producer = producer(brokers);
    for e in events {
        let payload = e.payload();
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .partition(e.partition)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// One event per partition far ahead in event time: moves every partition's watermark past
/// all the real events.
fn far_future(partitions: i32, ts_ms: i64) -> Vec<Event> {
    (0..partitions)
        .map(|partition| Event {
            partition,
            ts_ms,
            user_id: -1,
            item_id: -1,
            action: "flush",
        })
        .collect()
}

/// The watermark after `events`: min over partitions of the largest time, minus `delay`.
fn watermark(events: &[Event], delay_ms: i64) -> i64 {
    let mut max: BTreeMap<i32, i64> = BTreeMap::new();
    for e in events {
        let m = max.entry(e.partition).or_insert(i64::MIN);
        *m = (*m).max(e.ts_ms);
    }
    max.values().min().unwrap() - delay_ms
}

/// (count, sum of item_id) per 1-minute window that the watermark closed, computed here.
fn tumble_expected(events: &[Event], closed_by: i64) -> BTreeMap<i64, (i64, i64)> {
    let mut out = BTreeMap::new();
    for e in events {
        let start = e.ts_ms.div_euclid(MINUTE) * MINUTE;
        if start + MINUTE <= closed_by {
            let entry = out.entry(start).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += e.item_id;
        }
    }
    out
}

/// Count per HOP window (slide 30 s, size 2 min) that the watermark closed.
fn hop_expected(events: &[Event], closed_by: i64) -> BTreeMap<i64, i64> {
    let (slide, size) = (30_000, 2 * MINUTE);
    let mut out = BTreeMap::new();
    for e in events {
        let mut start = e.ts_ms.div_euclid(slide) * slide;
        while start > e.ts_ms - size {
            if start + size <= closed_by {
                *out.entry(start).or_insert(0) += 1;
            }
            start -= slide;
        }
    }
    out
}

async fn query_map<K, V>(client: &tokio_postgres::Client, sql: &str) -> BTreeMap<K, V>
where
    K: Ord + for<'a> tokio_postgres::types::FromSql<'a>,
    V: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn tumble_view(client: &tokio_postgres::Client, view: &str) -> BTreeMap<i64, (i64, i64)> {
    let sql = format!(
        "SELECT CAST(date_part('epoch', window_start) * 1000 AS BIGINT), n, items FROM {view}"
    );
    let rows = client.query(&sql, &[]).await.unwrap();
    let mut out = BTreeMap::new();
    for r in rows {
        let previous = out.insert(r.get::<_, i64>(0), (r.get(1), r.get(2)));
        assert!(previous.is_none(), "window emitted twice in {view}");
    }
    out
}

/// Polls `check` until it returns true or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn show_jobs(client: &tokio_postgres::Client) -> BTreeMap<String, (String, i64, i64)> {
    let mut out = BTreeMap::new();
    for message in client.simple_query("SHOW JOBS").await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = message {
            out.insert(
                r.get("name").unwrap().to_string(),
                (
                    r.get("state").unwrap().to_string(),
                    r.get("late_rows_dropped").unwrap().parse().unwrap(),
                    r.get("events_in").unwrap().parse().unwrap(),
                ),
            );
        }
    }
    out
}

fn create_source(brokers: &str) -> String {
    format!(
        "CREATE SOURCE clicks (
           user_id BIGINT, item_id BIGINT, action VARCHAR, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '45 seconds'
         ) WITH (connector = 'kafka', bootstrap_servers = '{brokers}', topic = 'clicks', format = 'json')"
    )
}

const TUMBLE_VIEW: &str =
    "CREATE MATERIALIZED VIEW clicks_1m WITH (checkpoint_interval = '300ms') AS
    SELECT window_start, window_end, count(*) AS n, sum(item_id) AS items
    FROM TUMBLE(clicks, ts, INTERVAL '1 minute')
    WHERE action <> 'flush'
    GROUP BY window_start, window_end";

const ACTIONS_VIEW: &str =
    "CREATE MATERIALIZED VIEW per_action WITH (checkpoint_interval = '300ms') AS
    SELECT action, count(*) AS n FROM clicks GROUP BY action";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_match_independent_counts_and_subscribers_see_rows_live() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("clicks", 3, 1).unwrap();
    let first = events(0, 600);
    produce(&brokers, "clicks", &first);

    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(&create_source(&brokers))
        .await
        .unwrap();
    // A bounded dimension table in Parquet, written by Freshet itself.
    client
        .batch_execute(
            "COPY (SELECT column1 AS item_id, column2 AS category FROM (VALUES (0, 'books'), (1, 'games'), (2, 'books'), (3, 'music'))) \
               TO 'items.parquet' STORED AS PARQUET;
             CREATE EXTERNAL TABLE items STORED AS PARQUET LOCATION 'items.parquet'",
        )
        .await
        .unwrap();
    client.batch_execute(TUMBLE_VIEW).await.unwrap();
    client.batch_execute(ACTIONS_VIEW).await.unwrap();
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW clicks_hop AS
               SELECT window_start, count(*) AS n
               FROM HOP(clicks, ts, INTERVAL '30 seconds', INTERVAL '2 minutes')
               GROUP BY window_start;
             CREATE MATERIALIZED VIEW stats_1m AS
               SELECT window_start, count(DISTINCT user_id) AS users, avg(item_id) AS mean,
                      stddev(item_id) AS spread, approx_distinct(user_id) AS approx_users,
                      min(ts) AS first, max(action) AS last_action, bool_or(action = 'buy') AS any_buy
               FROM TUMBLE(clicks, ts, INTERVAL '1 minute')
               GROUP BY window_start;
             CREATE MATERIALIZED VIEW busy_minutes AS
               SELECT window_start, n FROM clicks_1m WHERE n >= 36;
             CREATE MATERIALIZED VIEW buys_by_category AS
               SELECT c.user_id, c.item_id, i.category
               FROM clicks c JOIN items i ON c.item_id = i.item_id
               WHERE c.action = 'buy'",
        )
        .await
        .unwrap();

    // Windowed views hold exactly the windows the watermark closed.
    let closed = watermark(&first, 45_000);
    let expected = tumble_expected(&first, closed);
    assert!(expected.len() > 10);
    eventually(Duration::from_secs(60), "the TUMBLE view", || async {
        tumble_view(&client, "clicks_1m").await == expected
    })
    .await;
    let hop = hop_expected(&first, closed);
    eventually(Duration::from_secs(30), "the HOP view", || async {
        query_map::<i64, i64>(
            &client,
            "SELECT CAST(date_part('epoch', window_start) * 1000 AS BIGINT), n FROM clicks_hop",
        )
        .await
            == hop
    })
    .await;
    // Other aggregates: the view equals the same query run as a batch query over the topic,
    // restricted to the closed windows.
    let stats = |from: &str| {
        format!(
            "SELECT CAST(window_start AS VARCHAR), users, round(mean, 9), round(spread, 9), approx_users, \
                    CAST(first AS VARCHAR), last_action, any_buy FROM {from} ORDER BY 1"
        )
    };
    let batch = format!(
        "(SELECT window_start, count(DISTINCT user_id) AS users, avg(item_id) AS mean, \
                stddev(item_id) AS spread, approx_distinct(user_id) AS approx_users, min(ts) AS first, \
                max(action) AS last_action, bool_or(action = 'buy') AS any_buy \
         FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY window_start \
         HAVING window_start + INTERVAL '1 minute' <= to_timestamp_millis({closed}))"
    );
    let as_text = |rows: Vec<tokio_postgres::SimpleQueryMessage>| -> Vec<Vec<Option<String>>> {
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    };
    let expected_stats = as_text(client.simple_query(&stats(&batch)).await.unwrap());
    assert_eq!(expected_stats.len(), expected.len());
    eventually(Duration::from_secs(30), "the statistics view", || async {
        as_text(client.simple_query(&stats("stats_1m")).await.unwrap()) == expected_stats
    })
    .await;
    // A view over a view reads its checkpointed rows.
    let busy: BTreeMap<i64, i64> = expected
        .iter()
        .filter(|(_, (n, _))| *n >= 36)
        .map(|(start, (n, _))| (*start, *n))
        .collect();
    assert!(!busy.is_empty());
    eventually(Duration::from_secs(30), "the view over a view", || async {
        query_map::<i64, i64>(
            &client,
            "SELECT CAST(date_part('epoch', window_start) * 1000 AS BIGINT), n FROM busy_minutes",
        )
        .await
            == busy
    })
    .await;

    // The non-windowed aggregate counts every event; the join keeps buys of known items.
    let mut per_action: BTreeMap<String, i64> = BTreeMap::new();
    for e in &first {
        *per_action.entry(e.action.to_string()).or_insert(0) += 1;
    }
    eventually(Duration::from_secs(30), "the per-action view", || async {
        query_map::<String, i64>(&client, "SELECT action, n FROM per_action").await == per_action
    })
    .await;
    let buys = first
        .iter()
        .filter(|e| e.action == "buy" && e.item_id < 4)
        .count() as i64;
    // Each view runs its own job: the join view may still be a micro-batch behind.
    eventually(Duration::from_secs(30), "the join view", || async {
        let joined: i64 = client
            .query_one("SELECT count(*) FROM buys_by_category", &[])
            .await
            .unwrap()
            .get(0);
        joined == buys
    })
    .await;
    let books: i64 = client
        .query_one(
            "SELECT count(*) FROM buys_by_category WHERE category = 'books'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        books,
        first
            .iter()
            .filter(|e| e.action == "buy" && (e.item_id == 0 || e.item_id == 2))
            .count() as i64
    );

    // Subscribers: pgwire (extended protocol, rows as they come) and Flight SQL.
    let subscriber = server.client().await;
    let params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let rows = subscriber
        .query_raw("SUBSCRIBE clicks_1m", params)
        .await
        .unwrap();
    let mut rows = Box::pin(rows);
    let mut seen = BTreeMap::new();
    while seen.len() < expected.len() {
        let row = tokio::time::timeout(Duration::from_secs(10), rows.next())
            .await
            .expect("current rows arrive")
            .unwrap()
            .unwrap();
        let start: std::time::SystemTime = row.get(0);
        seen.insert(start, row.get::<_, i64>(2));
    }
    let channel = Endpoint::new(format!("http://{}", server.flight_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = FlightSqlServiceClient::new(channel);
    let info = flight
        .execute("SUBSCRIBE clicks_1m".to_string(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut flight_rows = flight.do_get(ticket).await.unwrap();
    let mut flight_windows = 0;
    while flight_windows < expected.len() {
        let batch = tokio::time::timeout(Duration::from_secs(10), flight_rows.next())
            .await
            .expect("current rows arrive over Flight")
            .unwrap()
            .unwrap();
        flight_windows += batch.num_rows();
    }

    // More events close more windows: both subscribers receive them while connected.
    let second = events(600, 120);
    produce(&brokers, "clicks", &second);
    let all: Vec<Event> = first.iter().chain(&second).cloned().collect();
    let closed = watermark(&all, 45_000);
    let expected = tumble_expected(&all, closed);
    let newest = *expected.keys().last().unwrap();
    let newest_time = std::time::UNIX_EPOCH + Duration::from_millis(newest as u64);
    let live = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let row = rows.next().await.unwrap().unwrap();
            if row.get::<_, std::time::SystemTime>(0) == newest_time {
                return row.get::<_, i64>(2);
            }
        }
    })
    .await
    .expect("a new window reaches the pgwire subscriber");
    assert_eq!(live, expected[&newest].0);
    let live = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let batch = flight_rows.next().await.unwrap().unwrap();
            let starts = cast(
                batch.column(0),
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )
            .unwrap();
            let starts = cast(&starts, &DataType::Int64).unwrap();
            let starts = starts.as_any().downcast_ref::<Int64Array>().unwrap();
            if (0..starts.len()).any(|i| starts.value(i) == newest) {
                return;
            }
        }
    })
    .await;
    assert!(live.is_ok(), "a new window reaches the Flight subscriber");
    drop(rows);
    drop(flight_rows);
    // The stateless join saw the second wave in later micro-batches too (a hash join's build
    // side must not be kept from the first micro-batch).
    let buys_all = all
        .iter()
        .filter(|e| e.action == "buy" && e.item_id < 4)
        .count() as i64;
    eventually(
        Duration::from_secs(20),
        "the join view after more events",
        || async {
            let n: i64 = client
                .query_one("SELECT count(*) FROM buys_by_category", &[])
                .await
                .unwrap()
                .get(0);
            n == buys_all
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the view with the new windows",
        || async { tumble_view(&client, "clicks_1m").await == expected },
    )
    .await;

    // Late events: counted per view and dropped by windowed views, counted by the others.
    let late: Vec<Event> = (0..5)
        .map(|i| Event {
            partition: 0,
            ts_ms: BASE_MS + i * 1000,
            user_id: 1,
            item_id: 1,
            action: "view",
        })
        .collect();
    produce(&brokers, "clicks", &late);
    eventually(Duration::from_secs(20), "late events counted", || async {
        let jobs = show_jobs(&client).await;
        jobs["public.clicks_1m"].1 == 5 && jobs["public.clicks_hop"].1 == 20
    })
    .await;
    assert_eq!(tumble_view(&client, "clicks_1m").await, expected);
    eventually(
        Duration::from_secs(20),
        "the per-action view updated",
        || async {
            let n: i64 = client
                .query_one("SELECT sum(n) FROM per_action", &[])
                .await
                .unwrap()
                .get(0);
            n == (all.len() + late.len()) as i64
        },
    )
    .await;

    // Views are listed, a source read by views cannot be dropped, views can.
    let listed = client
        .simple_query("SHOW MATERIALIZED VIEWS")
        .await
        .unwrap()
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(listed, 6);
    let err = client
        .batch_execute("DROP MATERIALIZED VIEW clicks_1m")
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("busy_minutes"),
        "{err:?}"
    );
    let err = client
        .batch_execute("DROP SOURCE clicks")
        .await
        .unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("clicks_1m"),
        "{err:?}"
    );
    client
        .batch_execute("DROP MATERIALIZED VIEW clicks_hop")
        .await
        .unwrap();
    let err = client
        .query("SELECT * FROM clicks_hop", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_query_errors_are_clear() {
    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE SOURCE g (id BIGINT, ts TIMESTAMP) WITH (connector = 'datagen', rate = 10);
             CREATE SOURCE w (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1 second')
               WITH (connector = 'datagen', rate = 10)",
        )
        .await
        .unwrap();
    let cases = [
        ("CREATE MATERIALIZED VIEW v AS SELECT 1", "must read a source"),
        (
            "CREATE MATERIALIZED VIEW v WITH (checkpoint_intervl = '1s') AS SELECT * FROM w",
            "checkpoint_interval",
        ),
        (
            "CREATE MATERIALIZED VIEW v WITH (checkpoint_interval = 'soon') AS SELECT * FROM w",
            "soon",
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT a.id FROM w a JOIN w b ON a.id = b.id",
            "joins between streams",
        ),
        ("CREATE MATERIALIZED VIEW v AS SELECT * FROM w LIMIT 3", "LIMIT"),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT window_start, count(*) FROM TUMBLE(g, ts, INTERVAL '1 minute') GROUP BY window_start",
            "no watermark",
        ),
        ("CREATE MATERIALIZED VIEW v AS SELECT nosuch FROM w", "nosuch"),
        ("DROP MATERIALIZED VIEW nosuch", "nosuch"),
        ("SUBSCRIBE nosuch", "nosuch"),
    ];
    for (sql, expected) in cases {
        let err = client.batch_execute(sql).await.unwrap_err();
        let message = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(message.contains(expected), "{sql}\n=> {message}");
        let one: i64 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    }
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW v AS SELECT id FROM w;
             DROP MATERIALIZED VIEW v;
             DROP MATERIALIZED VIEW IF EXISTS v",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_survive_sigkill_with_exactly_the_uninterrupted_result() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("clicks", 3, 1).unwrap();
    let all = events(0, 6_000);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut random = Lcg(seed);

    // Events arrive in 40 waves while the server is killed and restarted.
    let waves: Vec<Vec<Event>> = all.chunks(150).map(|c| c.to_vec()).collect();
    let feeder_brokers = brokers.clone();
    let feeder = std::thread::spawn(move || {
        for wave in waves {
            produce(&feeder_brokers, "clicks", &wave);
            std::thread::sleep(Duration::from_millis(60));
        }
    });

    let work = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(work.path(), &Options::default());
    {
        let client = server.client().await;
        client
            .batch_execute(&create_source(&brokers))
            .await
            .unwrap();
        client.batch_execute(TUMBLE_VIEW).await.unwrap();
        client.batch_execute(ACTIONS_VIEW).await.unwrap();
    }
    let mut kills = 0;
    while !feeder.is_finished() || kills < 3 {
        tokio::time::sleep(Duration::from_millis(200 + random.next(900))).await;
        server.kill();
        kills += 1;
        server = TestServer::start(work.path(), &Options::default());
    }
    feeder.join().unwrap();
    produce(&brokers, "clicks", &far_future(3, BASE_MS + 24 * 3_600_000));
    tokio::time::sleep(Duration::from_millis(random.next(700))).await;
    server.kill();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;

    // Every window closed: the view equals the counts of an uninterrupted run, computed here.
    let expected = tumble_expected(&all, i64::MAX);
    let mut per_action: BTreeMap<String, i64> = BTreeMap::new();
    for e in &all {
        *per_action.entry(e.action.to_string()).or_insert(0) += 1;
    }
    per_action.insert("flush".to_string(), 3);
    let mut last = BTreeMap::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        last = tumble_view(&client, "clicks_1m").await;
        if last.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, expected, "after {kills} kills (seed {seed})");
    eventually(Duration::from_secs(30), "the per-action view", || async {
        query_map::<String, i64>(&client, "SELECT action, n FROM per_action").await == per_action
    })
    .await;
    let jobs = show_jobs(&client).await;
    assert_eq!(jobs["public.clicks_1m"].1, 0, "no event was late");
}

/// Every message of partition 0 of `topic`, waiting up to `limit` for at least `want`.
fn consume_all(brokers: &str, topic: &str, want: usize, limit: Duration) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "streaming-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    // After `want` arrive, keep reading a little to catch duplicates.
    let mut settle: Option<Instant> = None;
    while start.elapsed() < limit {
        if out.len() >= want
            && settle.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(2)
        {
            break;
        }
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            if let Some(payload) = message.payload() {
                out.push(String::from_utf8_lossy(payload).into_owned());
            }
        }
    }
    out
}

/// `2026-11-01THH:MM` of a window start in the test's day.
fn minute_text(ms: i64) -> String {
    let secs = ms / 1000;
    format!(
        "2026-11-01T{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_receive_exactly_the_rows() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("clicks", 3, 1).unwrap();
    cluster.create_topic("minutes", 1, 1).unwrap();
    cluster.create_topic("minutes_tx", 1, 1).unwrap();
    let all = events(0, 900);
    produce(&brokers, "clicks", &all);

    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(&create_source(&brokers))
        .await
        .unwrap();
    client.batch_execute(TUMBLE_VIEW).await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE SINK minutes_out FROM clicks_1m WITH (connector = 'kafka', bootstrap_servers = '{brokers}', topic = 'minutes', checkpoint_interval = '300ms');
             CREATE SINK minutes_tx FROM clicks_1m WITH (connector = 'kafka', bootstrap_servers = '{brokers}', topic = 'minutes_tx', exactly_once = true, checkpoint_interval = '300ms');
             CREATE SINK archive FROM clicks WITH (connector = 'parquet', path = 'archive', rollover_interval = '400ms')"
        ))
        .await
        .unwrap();
    let err = client
        .batch_execute("CREATE SINK bad FROM clicks WITH (connector = 'parquet', path = 'x', rollover_intervl = '1s')")
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("rollover_intervl"),
        "{err:?}"
    );
    let listed = client.simple_query("SHOW SINKS").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count(),
        3
    );

    // The Kafka sink: one JSON message per window row, the same rows as the view.
    let expected = tumble_expected(&all, watermark(&all, 45_000));
    let messages = consume_all(&brokers, "minutes", expected.len(), Duration::from_secs(60));
    assert_eq!(messages.len(), expected.len(), "{messages:?}");
    let mut received: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for message in &messages {
        let value: serde_json::Value = serde_json::from_str(message).unwrap();
        let start = value["window_start"].as_str().unwrap()[..16].to_string();
        let row = (
            value["n"].as_i64().unwrap(),
            value["items"].as_i64().unwrap(),
        );
        assert!(received.insert(start, row).is_none(), "duplicate {message}");
    }
    let expected_text: BTreeMap<String, (i64, i64)> = expected
        .iter()
        .map(|(start, row)| (minute_text(*start), *row))
        .collect();
    assert_eq!(received, expected_text);
    // The transactional sink delivers the same rows (what a read_committed reader sees after
    // a crash is a broker property the mock cluster does not implement; see docs/sinks.md).
    let transactional = consume_all(
        &brokers,
        "minutes_tx",
        expected.len(),
        Duration::from_secs(60),
    );
    let mut sorted_tx = transactional.clone();
    sorted_tx.sort();
    let mut sorted = messages.clone();
    sorted.sort();
    assert_eq!(sorted_tx, sorted);

    // The Parquet sink: every event archived once, readable as a table.
    client
        .batch_execute("CREATE EXTERNAL TABLE archived STORED AS PARQUET LOCATION 'archive/'")
        .await
        .ok();
    eventually(Duration::from_secs(30), "the Parquet archive", || async {
        let _ = client.batch_execute("DROP TABLE IF EXISTS archived; CREATE EXTERNAL TABLE archived STORED AS PARQUET LOCATION 'archive/'").await;
        match client.query_one("SELECT count(*) FROM archived", &[]).await {
            Ok(row) => row.get::<_, i64>(0) == all.len() as i64,
            Err(_) => false,
        }
    })
    .await;
    let distinct: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT DISTINCT user_id, item_id, action, ts FROM archived)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut unique = all
        .iter()
        .map(|e| (e.user_id, e.item_id, e.action, e.ts_ms))
        .collect::<Vec<_>>();
    unique.sort();
    unique.dedup();
    assert_eq!(distinct, unique.len() as i64);

    // A crash and more events: the archive still holds every event exactly once.
    let more = events(900, 300);
    produce(&brokers, "clicks", &more);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(client);
    server.kill();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    let total = (all.len() + more.len()) as i64;
    eventually(Duration::from_secs(30), "the archive after a crash", || async {
        let _ = client.batch_execute("DROP TABLE IF EXISTS archived; CREATE EXTERNAL TABLE archived STORED AS PARQUET LOCATION 'archive/'").await;
        match client.query_one("SELECT count(*) FROM archived", &[]).await {
            Ok(row) => row.get::<_, i64>(0) == total,
            Err(_) => false,
        }
    })
    .await;
    client
        .batch_execute("DROP SINK archive; DROP SINK IF EXISTS archive")
        .await
        .unwrap();
    let err = client.batch_execute("DROP SINK archive").await.unwrap_err();
    assert!(err.as_db_error().unwrap().message().contains("archive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_stops_holding_the_watermark_after_idle_timeout() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("clicks", 3, 1).unwrap();
    // Partition 2 never receives anything.
    let busy: Vec<Event> = events(0, 600)
        .into_iter()
        .filter(|e| e.partition != 2)
        .collect();
    produce(&brokers, "clicks", &busy);
    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(&create_source(&brokers))
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW held AS
               SELECT window_start, window_end, count(*) AS n, sum(item_id) AS items
               FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY window_start, window_end;
             CREATE MATERIALIZED VIEW released WITH (idle_timeout = '1s') AS
               SELECT window_start, window_end, count(*) AS n, sum(item_id) AS items
               FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY window_start, window_end",
        )
        .await
        .unwrap();
    let expected = tumble_expected(&busy, watermark(&busy, 45_000));
    assert!(expected.len() > 5);
    eventually(
        Duration::from_secs(30),
        "windows once partition 2 is idle",
        || async { tumble_view(&client, "released").await == expected },
    )
    .await;
    // With the default idle timeout (30 s) the empty partition still holds the watermark.
    assert!(tumble_view(&client, "held").await.is_empty());
}
