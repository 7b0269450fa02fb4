//! Kafka topics as sources (librdkafka through `rdkafka`).
//!
//! A snapshot is every partition from its start offset to the high-water mark seen when the
//! snapshot is taken. Each partition is read by a blocking consumer thread that decodes
//! messages in batches (vectorised JSON/CSV) and hands them over a bounded channel.
//!
//! Options: `bootstrap_servers`, `topic`, `format` (json | csv | avro), `start_offset`
//! (earliest | latest | group), `group_id`, `on_error` (skip | fail), `timeout_ms`, and any
//! librdkafka property as `kafka.<name>`. Avro: `schema_registry_url` (with
//! `schema_registry.username`, `schema_registry.password`, `schema_registry.subject`) for
//! schema-registry framed messages, or `avro.schema` (the writer schema's JSON) for bare ones. Declared columns named `_partition`, `_offset`,
//! `_timestamp` and `_key` are filled from the message metadata instead of the payload.

pub mod embedded;
mod reader;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::formats::avro::{AvroConfig, AvroDecoder, Framing};
use crate::formats::registry::SchemaRegistry;
use crate::formats::{Format, PayloadDecoder};
use crate::source::{
    ConnectorError, Options, Source, SourceConfig, SourceConnector, SourceCounters, Split,
};

/// Metadata columns a Kafka source can declare.
pub const METADATA_COLUMNS: [&str; 4] = ["_partition", "_offset", "_timestamp", "_key"];

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartOffset {
    Earliest,
    /// The high-water marks when the source was created.
    Latest,
    /// The committed offsets of `group_id` (earliest where none).
    Group,
}

/// The `connector = 'kafka'` factory.
pub struct KafkaConnector;

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub name: String,
    pub topic: String,
    pub brokers: String,
    pub client: BTreeMap<String, String>,
    pub timeout: Duration,
    pub fail_on_error: bool,
}

impl Settings {
    pub(crate) fn consumer(&self) -> Result<BaseConsumer, ConnectorError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("group.id", format!("freshet-{}", self.name))
            .set("socket.timeout.ms", self.timeout.as_millis().to_string())
            .set("log_level", "3");
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config.create().map_err(|e| ConnectorError::InvalidOption {
            option: "kafka.*".to_string(),
            value: String::new(),
            reason: e.to_string(),
        })
    }

    fn unreachable(&self, err: &KafkaError) -> ConnectorError {
        ConnectorError::BrokerUnreachable {
            brokers: self.brokers.clone(),
            message: err.to_string(),
        }
    }

    /// The topic's partitions; errors name the topic or the brokers.
    pub(crate) fn partitions(&self, consumer: &BaseConsumer) -> Result<Vec<i32>, ConnectorError> {
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), self.timeout)
            .map_err(|e| self.unreachable(&e))?;
        let topic = metadata.topics().iter().find(|t| t.name() == self.topic);
        match topic {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().iter().map(|p| p.id()).collect())
            }
            _ => Err(ConnectorError::TopicNotFound {
                topic: self.topic.clone(),
                brokers: self.brokers.clone(),
            }),
        }
    }

    pub(crate) fn watermarks(
        &self,
        consumer: &BaseConsumer,
        partition: i32,
    ) -> Result<(i64, i64), ConnectorError> {
        consumer
            .fetch_watermarks(&self.topic, partition, self.timeout)
            .map_err(|e| ConnectorError::Kafka {
                topic: self.topic.clone(),
                message: format!("could not read the offsets of partition {partition}: {e}"),
            })
    }
}

fn parse_start(value: &str) -> Result<StartOffset, ConnectorError> {
    match value.to_ascii_lowercase().as_str() {
        "earliest" => Ok(StartOffset::Earliest),
        "latest" => Ok(StartOffset::Latest),
        "group" => Ok(StartOffset::Group),
        _ => Err(ConnectorError::InvalidOption {
            option: "start_offset".to_string(),
            value: value.to_string(),
            reason: "use 'earliest', 'latest' or 'group'".to_string(),
        }),
    }
}

fn encode_offsets(offsets: &BTreeMap<i32, i64>) -> String {
    offsets
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_offsets(text: &str) -> BTreeMap<i32, i64> {
    text.split(',')
        .filter_map(|pair| {
            let (p, o) = pair.split_once(':')?;
            Some((p.trim().parse().ok()?, o.trim().parse().ok()?))
        })
        .collect()
}

#[async_trait]
impl SourceConnector for KafkaConnector {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn create(
        &self,
        config: SourceConfig,
        validate: bool,
    ) -> Result<Arc<dyn Source>, ConnectorError> {
        let mut options = Options::new("kafka", &config.options);
        let brokers = options.required("bootstrap_servers")?.to_string();
        let topic = options.required("topic")?.to_string();
        let format = Format::parse(options.get("format").unwrap_or("json"))?;
        let avro = if format == Format::Avro {
            Some(avro_options(&mut options, &topic, &config.state, validate).await?)
        } else {
            None
        };
        let start = parse_start(options.get("start_offset").unwrap_or("earliest"))?;
        let group_id = options.get("group_id").map(str::to_string);
        let fail_on_error = match options
            .get("on_error")
            .unwrap_or("skip")
            .to_ascii_lowercase()
            .as_str()
        {
            "skip" => false,
            "fail" => true,
            other => {
                return Err(ConnectorError::InvalidOption {
                    option: "on_error".to_string(),
                    value: other.to_string(),
                    reason: "use 'skip' (count and drop malformed messages) or 'fail'".to_string(),
                })
            }
        };
        let timeout_ms: u64 = options.parsed("timeout_ms", 10_000)?;
        let mut client: BTreeMap<String, String> = options
            .with_prefix("kafka.")
            .into_iter()
            .map(|(k, v)| (k["kafka.".len()..].to_string(), v.to_string()))
            .collect();
        options.finish(&["kafka."])?;
        if start == StartOffset::Group {
            let group = group_id.clone().ok_or(ConnectorError::MissingOption {
                option: "group_id".to_string(),
                connector: "kafka (start_offset = 'group')".to_string(),
            })?;
            client.insert("group.id".to_string(), group);
        } else if let Some(group) = &group_id {
            client.insert("group.id".to_string(), group.clone());
        }
        let (schema, decoder, avro_reference) = match avro {
            None => {
                let schema = config.schema.clone().ok_or_else(|| {
                    ConnectorError::Schema(
                        "a Kafka source needs its columns: CREATE SOURCE name (column TYPE, …) WITH (…)"
                            .to_string(),
                    )
                })?;
                let decoder = PayloadDecoder::new(format, payload_schema(&schema)?)?;
                (schema, decoder, None)
            }
            Some(avro) => {
                let reference = avro.reference.clone();
                let declared = config.schema.as_ref().map(payload_schema).transpose()?;
                let decoder = AvroDecoder::new(avro, declared)?;
                // Without declared columns, the columns are the Avro record's fields.
                let schema = config.schema.clone().unwrap_or_else(|| decoder.schema());
                (schema, PayloadDecoder::avro(decoder), Some(reference))
            }
        };
        let settings = Settings {
            name: config.name.clone(),
            topic,
            brokers,
            client,
            timeout: Duration::from_millis(timeout_ms),
            fail_on_error,
        };
        let start_offsets = match config.state.get("start_offsets") {
            Some(text) if !validate => decode_offsets(text),
            _ => {
                let settings = settings.clone();
                tokio::task::spawn_blocking(move || resolve_start(&settings, start))
                    .await
                    .map_err(|e| {
                        ConnectorError::Schema(format!("offset resolution failed: {e}"))
                    })??
            }
        };
        Ok(Arc::new(KafkaSource {
            settings,
            schema,
            decoder,
            avro_reference,
            start_offsets,
            counters: Arc::new(SourceCounters::default()),
            pool: ConsumerPool::default(),
        }))
    }
}

/// The Avro options: where the writer schemas and the reference (reader) schema come from.
/// The reference is kept in the source's state, so a restart reads the topic with the same
/// reader schema even if the subject evolved meanwhile or the registry is down.
async fn avro_options(
    options: &mut Options<'_>,
    topic: &str,
    state: &BTreeMap<String, String>,
    validate: bool,
) -> Result<AvroConfig, ConnectorError> {
    let url = options.get("schema_registry_url");
    let username = options.get("schema_registry.username").map(str::to_string);
    let password = options.get("schema_registry.password").map(str::to_string);
    let subject = options.get("schema_registry.subject");
    let inline = options.get("avro.schema");
    let Some(url) = url else {
        for (given, option) in [
            (username.is_some(), "schema_registry.username"),
            (password.is_some(), "schema_registry.password"),
            (subject.is_some(), "schema_registry.subject"),
        ] {
            if given {
                return Err(ConnectorError::MissingOption {
                    option: "schema_registry_url".to_string(),
                    connector: format!("kafka ({option} is set)"),
                });
            }
        }
        let reference = inline.ok_or_else(|| ConnectorError::MissingOption {
            option: "schema_registry_url' or 'avro.schema".to_string(),
            connector: "kafka (format = 'avro')".to_string(),
        })?;
        return Ok(AvroConfig {
            framing: Framing::Raw,
            registry: None,
            reference: reference.to_string(),
            known_writers: Vec::new(),
        });
    };
    let registry = SchemaRegistry::new(url, username, password)?;
    let reference = match (inline, state.get("avro_reader_schema")) {
        // An inline schema with a registry is the reader schema the writers resolve to.
        (Some(inline), _) => inline.to_string(),
        (None, Some(kept)) if !validate => kept.clone(),
        (None, _) => {
            let subject = subject
                .map(str::to_string)
                .unwrap_or_else(|| format!("{topic}-value"));
            registry
                .latest(&subject)
                .await?
                .ok_or_else(|| ConnectorError::SchemaRegistry {
                    url: registry.url().to_string(),
                    message: format!(
                        "subject '{subject}' has no schema; register one, name another subject with schema_registry.subject, or give the reader schema as avro.schema"
                    ),
                })?
                .schema
        }
    };
    Ok(AvroConfig {
        framing: Framing::Confluent,
        registry: Some(registry),
        reference,
        known_writers: Vec::new(),
    })
}

/// The payload columns: the declared ones that are not metadata columns.
fn payload_schema(schema: &SchemaRef) -> Result<SchemaRef, ConnectorError> {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| !METADATA_COLUMNS.contains(&f.name().as_str()))
        .cloned()
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Checks the topic exists and fixes the start offset of each partition.
fn resolve_start(
    settings: &Settings,
    start: StartOffset,
) -> Result<BTreeMap<i32, i64>, ConnectorError> {
    let consumer = settings.consumer()?;
    let partitions = settings.partitions(&consumer)?;
    let mut offsets = BTreeMap::new();
    let committed = if start == StartOffset::Group {
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            list.add_partition(&settings.topic, *p);
        }
        Some(
            consumer
                .committed_offsets(list, settings.timeout)
                .map_err(|e| ConnectorError::Kafka {
                    topic: settings.topic.clone(),
                    message: format!("could not read the committed offsets of the group: {e}"),
                })?,
        )
    } else {
        None
    };
    for partition in partitions {
        let (low, high) = settings.watermarks(&consumer, partition)?;
        let offset = match start {
            StartOffset::Earliest => low,
            StartOffset::Latest => high,
            StartOffset::Group => committed
                .as_ref()
                .and_then(|list| list.find_partition(&settings.topic, partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(low),
        };
        offsets.insert(partition, offset);
    }
    Ok(offsets)
}

/// A Kafka topic read as a source.
#[derive(Debug)]
pub struct KafkaSource {
    settings: Settings,
    schema: SchemaRef,
    decoder: PayloadDecoder,
    /// The Avro reference schema, kept in the state.
    avro_reference: Option<String>,
    start_offsets: BTreeMap<i32, i64>,
    counters: Arc<SourceCounters>,
    pool: ConsumerPool,
}

/// Consumers kept between reads: a continuous query reads every partition many times a
/// second, and creating a librdkafka consumer (threads, connections) each time costs more
/// than the reading.
#[derive(Clone, Default)]
pub(crate) struct ConsumerPool(Arc<Mutex<Vec<BaseConsumer>>>);

/// Consumers kept idle at most.
const POOL_SIZE: usize = 16;

impl std::fmt::Debug for ConsumerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsumerPool")
    }
}

impl ConsumerPool {
    /// An idle consumer, or a new one.
    pub(crate) fn take(&self, settings: &Settings) -> Result<BaseConsumer, ConnectorError> {
        let pooled = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(consumer) => Ok(consumer),
            None => settings.consumer(),
        }
    }

    /// Returns a consumer that finished its work without error.
    pub(crate) fn give(&self, consumer: BaseConsumer) {
        let _ = consumer.unassign();
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_SIZE {
            idle.push(consumer);
        }
    }
}

impl KafkaSource {
    /// Every partition with its start offset and high-water mark; `keep_empty` keeps
    /// partitions with nothing to read (a continuous query tracks them for its watermark).
    async fn splits(&self, keep_empty: bool) -> Result<Vec<Split>, ConnectorError> {
        let settings = self.settings.clone();
        let starts = self.start_offsets.clone();
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let consumer = pool.take(&settings)?;
            let mut splits = Vec::new();
            for partition in settings.partitions(&consumer)? {
                let (low, high) = settings.watermarks(&consumer, partition)?;
                // A partition added after the source was created starts at its beginning.
                let start = starts.get(&partition).copied().unwrap_or(low).max(low);
                if start < high || keep_empty {
                    splits.push(Split {
                        partition,
                        start,
                        end: high.max(start),
                    });
                }
            }
            pool.give(consumer);
            Ok(splits)
        })
        .await
        .map_err(|e| ConnectorError::Kafka {
            topic: self.settings.topic.clone(),
            message: format!("snapshot task failed: {e}"),
        })?
    }

    /// A decoder for the projected payload columns only, so unread columns cost nothing. With
    /// no payload column projected (`count(*)`, metadata only) every column is decoded, so a
    /// malformed message is skipped whatever the query reads.
    fn decoder_for(&self, projection: Option<&[usize]>) -> Result<PayloadDecoder, ConnectorError> {
        let Some(projection) = projection else {
            return Ok(self.decoder.clone());
        };
        let fields: Vec<_> = projection
            .iter()
            .map(|i| self.schema.field(*i))
            .filter(|f| !METADATA_COLUMNS.contains(&f.name().as_str()))
            .cloned()
            .collect();
        if fields.is_empty() {
            Ok(self.decoder.clone())
        } else {
            self.decoder.project(Arc::new(Schema::new(fields)))
        }
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self) -> String {
        format!(
            "kafka topic '{}' at {}",
            self.settings.topic, self.settings.brokers
        )
    }

    fn state(&self) -> BTreeMap<String, String> {
        let mut state = BTreeMap::from([(
            "start_offsets".to_string(),
            encode_offsets(&self.start_offsets),
        )]);
        if let Some(reference) = &self.avro_reference {
            state.insert("avro_reader_schema".to_string(), reference.clone());
        }
        state
    }

    async fn snapshot(&self) -> Result<Vec<Split>, ConnectorError> {
        self.splits(false).await
    }

    async fn positions(&self) -> Result<Vec<Split>, ConnectorError> {
        self.splits(true).await
    }

    fn read(
        &self,
        split: Split,
        projection: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> BoxStream<'static, Result<arrow::array::RecordBatch, ConnectorError>> {
        let decoder = match self.decoder_for(projection.as_deref()) {
            Ok(decoder) => decoder,
            Err(err) => return futures::stream::once(async move { Err(err) }).boxed(),
        };
        reader::read_split(reader::ReadRequest {
            settings: self.settings.clone(),
            schema: self.schema.clone(),
            decoder,
            counters: self.counters.clone(),
            pool: self.pool.clone(),
            split,
            projection,
            batch_rows,
        })
    }

    fn counters(&self) -> Arc<SourceCounters> {
        self.counters.clone()
    }
}

#[cfg(test)]
mod avro_tests;
#[cfg(test)]
mod tests;
