//! An embedded Kafka broker for demos: librdkafka's mock cluster, started in-process, that any
//! Kafka client can reach at its bootstrap address, plus a clickstream feeder.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::generators::random;
use crate::source::ConnectorError;

/// A running embedded broker with a feeder producing click events to one topic.
pub struct EmbeddedKafka {
    bootstrap_servers: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the feeder produces.
#[derive(Debug, Clone)]
pub struct Clickstream {
    pub topic: String,
    pub partitions: i32,
    pub events_per_second: u32,
    pub users: u64,
    pub items: u64,
}

impl EmbeddedKafka {
    /// Starts the broker and the feeder; returns once the topic exists.
    pub fn start(clicks: Clickstream) -> Result<Self, ConnectorError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, started) = mpsc::channel();
        let flag = stop.clone();
        // The mock cluster is not Send: it lives and dies on this thread.
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".to_string())
            .spawn(move || run(clicks, flag, ready))
            .map_err(|e| broker_error(e.to_string()))?;
        let bootstrap_servers = started
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| broker_error(e.to_string()))??;
        Ok(Self {
            bootstrap_servers,
            stop,
            thread: Some(thread),
        })
    }

    /// Where Kafka clients connect.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn broker_error(message: String) -> ConnectorError {
    ConnectorError::BrokerUnreachable {
        brokers: "embedded".to_string(),
        message,
    }
}

fn run(
    clicks: Clickstream,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<String, ConnectorError>>,
) {
    let started = (|| {
        let cluster = MockCluster::new(1).map_err(|e| broker_error(e.to_string()))?;
        cluster
            .create_topic(&clicks.topic, clicks.partitions, 1)
            .map_err(|e| broker_error(e.to_string()))?;
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .map_err(|e| broker_error(e.to_string()))?;
        Ok::<_, ConnectorError>((cluster, producer))
    })();
    let (cluster, producer) = match started {
        Ok(pair) => pair,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let _ = ready.send(Ok(cluster.bootstrap_servers()));
    let pause = Duration::from_secs_f64(1.0 / clicks.events_per_second.max(1) as f64);
    let mut index: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let payload = click(&clicks, index);
        let partition = (random(7, 0, index) % clicks.partitions.max(1) as u64) as i32;
        let record = BaseRecord::<(), str>::to(&clicks.topic)
            .partition(partition)
            .payload(&payload);
        if let Err((err, _)) = producer.send(record) {
            tracing::warn!(error = %err, "demo feeder could not produce");
        }
        index += 1;
        std::thread::sleep(pause);
    }
    let _ = producer.flush(Duration::from_secs(5));
    drop(producer);
    drop(cluster);
}

/// One click event as JSON; timestamps alternate between RFC 3339 and epoch milliseconds, as
/// real topics written by several producers do.
fn click(clicks: &Clickstream, index: u64) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let user = 1 + random(1, 1, index) % clicks.users;
    let item = 1 + random(1, 2, index) % clicks.items;
    let action = match random(1, 3, index) % 10 {
        0 => "buy",
        1 | 2 => "cart",
        _ => "view",
    };
    let ts = if index.is_multiple_of(2) {
        match arrow::temporal_conversions::timestamp_ms_to_datetime(now_ms) {
            Some(time) => format!("\"{}\"", time.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => now_ms.to_string(),
        }
    } else {
        now_ms.to_string()
    };
    format!(r#"{{"user_id": {user}, "item_id": {item}, "action": "{action}", "ts": {ts}}}"#)
}
