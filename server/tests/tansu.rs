//! End to end against a real, separate Kafka-protocol broker: `tansu` (installed by
//! scripts/test with `cargo install tansu --locked --features dynostore`).
//!
//! Without the `tansu` binary the test says so and passes, unless FRESHET_REQUIRE_TANSU is set
//! (scripts/test and CI set it), so a missing broker can never make CI green silently.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::common::{Options, TestServer};

fn tansu_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin")));
    candidates
        .map(|dir| dir.join("tansu"))
        .find(|p| p.is_file())
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_on_a_tansu_broker_is_queried_with_windows() {
    let Some(tansu) = tansu_binary() else {
        assert!(
            std::env::var_os("FRESHET_REQUIRE_TANSU").is_none(),
            "FRESHET_REQUIRE_TANSU is set but no tansu binary was found"
        );
        eprintln!(
            "SKIPPED: tansu is not installed (cargo install tansu --locked --features dynostore)"
        );
        return;
    };
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let _broker = Broker(
        Command::new(tansu)
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu"),
    );
    let brokers = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&brokers).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let topic = NewTopic::new("orders", 2, TopicReplication::Fixed(1));
    let created = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("create topic");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    // 120 orders, one every 2 s from 10:00:00: two per minute window… exactly 30 per minute.
    for i in 0..120i64 {
        let ts = 1_793_527_200_000i64 + i * 2_000;
        let payload = format!(r#"{{"order_id": {i}, "amount": {}, "ts": {ts}}}"#, i % 10);
        let record = FutureRecord::<(), str>::to("orders")
            .partition((i % 2) as i32)
            .payload(&payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE orders (order_id BIGINT, amount BIGINT, ts TIMESTAMP) \
             WITH (connector = 'kafka', bootstrap_servers = '{brokers}', topic = 'orders')"
        ))
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT count(*), sum(amount) FROM TUMBLE(orders, ts, INTERVAL '1 minute') GROUP BY window_start ORDER BY window_start",
            &[],
        )
        .await
        .unwrap();
    let windows: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // Each minute holds 30 orders whose amounts cycle 0..9 three times: 135.
    assert_eq!(windows, vec![(30, 135); 4]);
}
