//! Kafka topics as sinks (librdkafka through `rdkafka`).
//!
//! Every row becomes one JSON message. Two delivery modes:
//!
//! * At-least-once (default): rows are produced as they are written; a commit waits until
//!   every message is acknowledged, then records `(epoch, metadata)` as the committed offset
//!   (offset = epoch, offset metadata = metadata) of the consumer group
//!   `freshet-sink-<name>` for partition 0 of the topic. A crash between the two replays the
//!   epoch, so rows may be duplicated, never lost.
//! * Exactly-once (`exactly_once = 'true'`): one Kafka transaction per epoch, with
//!   `transactional.id = freshet-sink-<name>`. The `(epoch, metadata)` record is written into
//!   the same transaction with `send_offsets_to_transaction`, so rows and record become
//!   visible together. Creating the sink again fences the previous producer and aborts its
//!   open transaction. Readers must use `isolation.level = read_committed`.
//!
//! Options: `bootstrap_servers`, `topic`, `format` (json), `key`, `exactly_once`,
//! `timeout_ms`, and any librdkafka property as `kafka.<name>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::json::writer::LineDelimited;
use arrow::json::WriterBuilder;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

use crate::sink::{
    accept_runtime_options, conform_batch, EpochOrder, Sink, SinkConfig, SinkConnector, SinkEnv,
};
use crate::source::{ConnectorError, Options};

/// How timestamps without a time zone are written: RFC 3339 in UTC, fractional seconds only
/// when there are some.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.fZ";
/// How timestamps with a time zone are written: RFC 3339 with the zone's offset.
const TIMESTAMP_TZ_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.f%:z";
/// How long `write` waits before retrying when librdkafka's send queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);
/// The partition whose committed offset carries the `(epoch, metadata)` record.
const RECORD_PARTITION: i32 = 0;

/// The `connector = 'kafka'` sink factory.
pub struct KafkaSinkConnector;

#[async_trait]
impl SinkConnector for KafkaSinkConnector {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn create(
        &self,
        config: SinkConfig,
        _env: &SinkEnv,
        validate: bool,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(KafkaSink::open(config, validate).await?))
    }
}

/// The parsed options of one Kafka sink.
#[derive(Debug, Clone)]
struct Settings {
    name: String,
    topic: String,
    brokers: String,
    /// Index of the column whose value becomes the message key.
    key: Option<usize>,
    exactly_once: bool,
    timeout: Duration,
    /// librdkafka properties given as `kafka.<name>`.
    client: BTreeMap<String, String>,
}

impl Settings {
    fn parse(config: &SinkConfig) -> Result<Self, ConnectorError> {
        let mut options = Options::new("kafka", &config.options);
        let brokers = options.required("bootstrap_servers")?.to_string();
        let topic = options.required("topic")?.to_string();
        let format = options.get("format").unwrap_or("json");
        if !format.eq_ignore_ascii_case("json") {
            return Err(ConnectorError::InvalidOption {
                option: "format".to_string(),
                value: format.to_string(),
                reason: "the Kafka sink writes 'json' only (one JSON object per row)".to_string(),
            });
        }
        let key = match options.get("key") {
            None => None,
            Some(column) => Some(key_column(&config.schema, column)?),
        };
        let exactly_once = options.parsed("exactly_once", false)?;
        let timeout_ms: u64 = options.parsed("timeout_ms", 30_000)?;
        accept_runtime_options(&mut options);
        let client = options
            .with_prefix("kafka.")
            .into_iter()
            .map(|(k, v)| (k["kafka.".len()..].to_string(), v.to_string()))
            .collect();
        options.finish(&["kafka."])?;
        Ok(Self {
            name: config.name.clone(),
            topic,
            brokers,
            key,
            exactly_once,
            timeout: Duration::from_millis(timeout_ms),
            client,
        })
    }

    /// The consumer group whose committed offset records the last epoch; also the
    /// transactional id in exactly-once mode.
    fn group_id(&self) -> String {
        format!("freshet-sink-{}", self.name)
    }

    fn destination(&self) -> String {
        format!("kafka topic '{}' at {}", self.topic, self.brokers)
    }

    fn error(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError::Sink {
            sink: self.name.clone(),
            destination: self.destination(),
            message: message.into(),
        }
    }

    fn producer(&self) -> Result<ThreadedProducer<DeliveryTracker>, ConnectorError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        if self.exactly_once {
            config.set("transactional.id", self.group_id());
        }
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| client_option_error(&e))
    }

    /// A consumer that only reads and commits the group's offsets; it never subscribes.
    fn group_consumer(&self) -> Result<BaseConsumer, ConnectorError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", self.group_id())
            .set("enable.auto.commit", "false")
            .set("log_level", "3");
        // Producer-only properties would make the consumer refuse to start, so only the
        // connection-level ones (security, client id) are passed on.
        for (key, value) in &self.client {
            if is_connection_property(key) {
                config.set(key, value);
            }
        }
        config.create().map_err(|e| client_option_error(&e))
    }

    /// The single-entry list naming where the `(epoch, metadata)` record lives.
    fn record_list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, RECORD_PARTITION);
        list
    }
}

/// Properties about reaching and authenticating to the cluster, shared by producer and
/// consumer.
fn is_connection_property(key: &str) -> bool {
    ["security.", "sasl.", "ssl.", "socket.", "client."]
        .iter()
        .any(|prefix| key.starts_with(prefix))
        || matches!(key, "client.id" | "broker.address.family")
}

fn client_option_error(err: &KafkaError) -> ConnectorError {
    ConnectorError::InvalidOption {
        option: "kafka.*".to_string(),
        value: String::new(),
        reason: err.to_string(),
    }
}

fn key_column(schema: &SchemaRef, column: &str) -> Result<usize, ConnectorError> {
    schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(column))
        .ok_or_else(|| ConnectorError::InvalidOption {
            option: "key".to_string(),
            value: column.to_string(),
            reason: format!(
                "no such column; the sink's columns are {}",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Counts messages librdkafka reports as undeliverable, so a commit can refuse to record an
/// epoch that lost rows.
#[derive(Debug, Default)]
struct DeliveryTracker {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryTracker {
    /// The failures since the last reset: their count and the first error.
    fn take(&self) -> Option<(u64, String)> {
        let failed = self.failed.swap(0, Ordering::AcqRel);
        let first = self
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        (failed > 0).then(|| (failed, first.unwrap_or_default()))
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, _)) = result {
            self.failed.fetch_add(1, Ordering::AcqRel);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| err.to_string());
        }
    }
}

type SinkProducer = ThreadedProducer<DeliveryTracker>;

/// A Kafka topic written as a sink.
pub struct KafkaSink {
    settings: Settings,
    schema: SchemaRef,
    producer: Arc<SinkProducer>,
    consumer: Arc<BaseConsumer>,
    /// Whether a transaction is open (exactly-once only). Opened lazily, so a failed
    /// `begin_transaction` after a commit is retried by the next write.
    in_transaction: bool,
    order: EpochOrder,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("settings", &self.settings)
            .field("in_transaction", &self.in_transaction)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Parses the options, connects, and in exactly-once mode fences earlier producers of the
    /// same sink (aborting their open transaction).
    async fn open(config: SinkConfig, validate: bool) -> Result<Self, ConnectorError> {
        let settings = Settings::parse(&config)?;
        let producer = Arc::new(settings.producer()?);
        let consumer = Arc::new(settings.group_consumer()?);
        if validate {
            let (settings, consumer) = (settings.clone(), consumer.clone());
            blocking(&settings.clone(), move || check_topic(&settings, &consumer)).await?;
        }
        if settings.exactly_once {
            let (settings, producer) = (settings.clone(), producer.clone());
            blocking(&settings.clone(), move || {
                producer
                    .init_transactions(settings.timeout)
                    .map_err(|e| settings.error(format!("could not initialise transactions: {e}")))
            })
            .await?;
        }
        Ok(Self {
            settings,
            schema: config.schema,
            producer,
            consumer,
            in_transaction: false,
            order: EpochOrder::default(),
        })
    }

    /// Opens a transaction unless one is open (exactly-once only).
    fn ensure_transaction(&mut self) -> Result<(), ConnectorError> {
        if self.settings.exactly_once && !self.in_transaction {
            self.producer.begin_transaction().map_err(|e| {
                self.settings
                    .error(format!("could not begin a transaction: {e}"))
            })?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Enqueues one message, waiting while librdkafka's queue is full (never dropping it).
    async fn send(&self, payload: &[u8], key: Option<&str>) -> Result<(), ConnectorError> {
        let deadline = Instant::now() + self.settings.timeout;
        loop {
            let mut record = BaseRecord::to(&self.settings.topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    // The producer's thread drains the queue as the brokers acknowledge.
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((err, _)) => {
                    return Err(self
                        .settings
                        .error(format!("could not produce a message: {err}")))
                }
            }
        }
    }

    /// At-least-once commit: wait for every acknowledgement, then record the epoch.
    async fn commit_at_least_once(
        &mut self,
        list: TopicPartitionList,
    ) -> Result<(), ConnectorError> {
        let (settings, producer, consumer) = (
            self.settings.clone(),
            self.producer.clone(),
            self.consumer.clone(),
        );
        blocking(&self.settings, move || {
            producer
                .flush(settings.timeout)
                .map_err(|e| settings.error(format!("could not deliver every row: {e}")))?;
            if let Some((failed, first)) = producer.context().take() {
                return Err(settings.error(format!(
                    "{failed} row(s) could not be delivered (first error: {first})"
                )));
            }
            consumer
                .commit(&list, CommitMode::Sync)
                .map_err(|e| settings.error(format!("could not record the committed epoch: {e}")))
        })
        .await
    }

    /// Exactly-once commit: the record joins the transaction, which is then committed.
    async fn commit_transaction(&mut self, list: TopicPartitionList) -> Result<(), ConnectorError> {
        self.ensure_transaction()?;
        // The transaction ends here whatever happens: committed, or aborted below.
        self.in_transaction = false;
        let (settings, producer, consumer) = (
            self.settings.clone(),
            self.producer.clone(),
            self.consumer.clone(),
        );
        blocking(&self.settings, move || {
            let group = consumer
                .group_metadata()
                .ok_or_else(|| settings.error("no consumer group metadata for the record"))?;
            let committed = producer
                .send_offsets_to_transaction(&list, &group, settings.timeout)
                .and_then(|()| producer.commit_transaction(settings.timeout));
            let Err(err) = committed else {
                producer.context().take();
                return Ok(());
            };
            // Leave no half-open transaction behind; if aborting fails too, the next
            // `begin_transaction` reports the producer's state.
            let aborted = producer.abort_transaction(settings.timeout);
            producer.context().take();
            Err(settings.error(format!(
                "could not commit the transaction: {err}{}",
                match aborted {
                    Ok(()) => " (the transaction was aborted)".to_string(),
                    Err(abort) => format!(" (aborting it failed too: {abort})"),
                }
            )))
        })
        .await
    }
}

/// Checks that the topic exists; errors name the topic and the brokers. Asks through the
/// consumer: a producer's metadata request would let the broker auto-create the topic.
fn check_topic(settings: &Settings, consumer: &BaseConsumer) -> Result<(), ConnectorError> {
    let metadata = consumer
        .fetch_metadata(Some(&settings.topic), settings.timeout)
        .map_err(|e| ConnectorError::BrokerUnreachable {
            brokers: settings.brokers.clone(),
            message: e.to_string(),
        })?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == settings.topic);
    match topic {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
        _ => Err(ConnectorError::TopicNotFound {
            topic: settings.topic.clone(),
            brokers: settings.brokers.clone(),
        }),
    }
}

/// Runs a blocking librdkafka call off the async threads.
async fn blocking<T: Send + 'static>(
    settings: &Settings,
    call: impl FnOnce() -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| settings.error(format!("Kafka client task failed: {e}")))?
}

/// Each row of `batch` as one JSON object, in row order. Column names are the keys, NULL is
/// `null`, timestamps are RFC 3339 strings.
fn encode_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ConnectorError> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
        .with_timestamp_tz_format(TIMESTAMP_TZ_FORMAT.to_string())
        .build::<_, LineDelimited>(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let text = writer.into_inner();
    // JSON escapes newlines inside strings, so every '\n' ends a row.
    let rows: Vec<Vec<u8>> = text
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(rows.len(), batch.num_rows(), "one JSON line per row");
    Ok(rows)
}

/// The key of each row: the key column as text, `None` where it is NULL.
fn encode_keys(batch: &RecordBatch, column: usize) -> Result<StringArray, ConnectorError> {
    let text = cast(batch.column(column), &DataType::Utf8)?;
    let keys = text
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("a cast to Utf8 gives a StringArray")
        .clone();
    Ok(keys)
}

#[async_trait]
impl Sink for KafkaSink {
    fn describe(&self) -> String {
        let mode = if self.settings.exactly_once {
            "exactly-once"
        } else {
            "at-least-once"
        };
        format!("{} ({mode}, json)", self.settings.destination())
    }

    async fn committed(&mut self) -> Result<Option<(u64, String)>, ConnectorError> {
        let (settings, consumer) = (self.settings.clone(), self.consumer.clone());
        blocking(&self.settings, move || {
            let list = consumer
                .committed_offsets(settings.record_list(), settings.timeout)
                .map_err(|e| settings.error(format!("could not read the committed epoch: {e}")))?;
            let Some(entry) = list.find_partition(&settings.topic, RECORD_PARTITION) else {
                return Ok(None);
            };
            match entry.offset() {
                Offset::Offset(epoch) if epoch >= 0 => {
                    Ok(Some((epoch as u64, entry.metadata().to_string())))
                }
                _ => Ok(None),
            }
        })
        .await
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = conform_batch(&self.settings.name, &self.schema, batch)?;
        self.ensure_transaction()?;
        let payloads = encode_rows(&batch)?;
        let keys = match self.settings.key {
            Some(column) => Some(encode_keys(&batch, column)?),
            None => None,
        };
        for (row, payload) in payloads.iter().enumerate() {
            let key = keys
                .as_ref()
                .filter(|keys| keys.is_valid(row))
                .map(|keys| keys.value(row));
            self.send(payload, key).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, epoch: u64, metadata: &str) -> Result<(), ConnectorError> {
        self.order
            .check(epoch)
            .map_err(|message| self.settings.error(message))?;
        let offset = i64::try_from(epoch).map_err(|_| {
            self.settings
                .error(format!("epoch {epoch} is too large for Kafka"))
        })?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(
            &self.settings.topic,
            RECORD_PARTITION,
            Offset::Offset(offset),
        )
        .map_err(|e| self.settings.error(e.to_string()))?;
        if let Some(mut entry) = list.find_partition(&self.settings.topic, RECORD_PARTITION) {
            entry.set_metadata(metadata);
        }
        if self.settings.exactly_once {
            self.commit_transaction(list).await?;
        } else {
            self.commit_at_least_once(list).await?;
        }
        self.order.record(epoch);
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        let (settings, producer) = (self.settings.clone(), self.producer.clone());
        if self.settings.exactly_once {
            if !self.in_transaction {
                return Ok(());
            }
            self.in_transaction = false;
            return blocking(&self.settings, move || {
                let aborted = producer.abort_transaction(settings.timeout);
                producer.context().take();
                aborted.map_err(|e| settings.error(format!("could not abort the transaction: {e}")))
            })
            .await;
        }
        blocking(&self.settings, move || {
            // Messages already sent cannot be taken back; those still queued are dropped, and
            // their (expected) delivery failures forgotten.
            producer.purge(PurgeConfig::default().queue());
            let flushed = producer.flush(settings.timeout);
            producer.context().take();
            flushed.map_err(|e| settings.error(format!("could not settle queued rows: {e}")))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
