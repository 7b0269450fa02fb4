//! The interface every source connector implements, and the registry that lists them.
//!
//! A source produces Arrow record batches. Unbounded sources (Kafka topics, generators) are
//! read as *snapshots* for batch queries: [`Source::snapshot`] fixes, at query start, a set of
//! [`Split`]s (for Kafka: one per partition, from the start offset to the high-water mark) and
//! [`Source::read`] reads one split. The continuous-query runtime reads the same splits as they
//! grow.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::stream::BoxStream;

/// Errors of source and sink connectors. Each variant names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("unknown connector '{name}' (known: {known})")]
    UnknownConnector { name: String, known: String },
    #[error("unknown option '{option}' for connector '{connector}' (valid options: {valid})")]
    UnknownOption {
        option: String,
        connector: String,
        valid: String,
    },
    #[error("connector '{connector}' needs the option '{option}'")]
    MissingOption { option: String, connector: String },
    #[error("invalid value '{value}' for option '{option}': {reason}")]
    InvalidOption {
        option: String,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Schema(String),
    #[error("topic '{topic}' does not exist on {brokers}")]
    TopicNotFound { topic: String, brokers: String },
    #[error("could not reach Kafka broker(s) {brokers}: {message}")]
    BrokerUnreachable { brokers: String, message: String },
    #[error("Kafka error on topic '{topic}': {message}")]
    Kafka { topic: String, message: String },
    #[error("malformed message in source '{source_name}' (partition {partition}, offset {offset}): {message}")]
    Malformed {
        source_name: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    /// The schema registry could not be reached or gave an unusable answer.
    #[error("schema registry {url}: {message}")]
    SchemaRegistry { url: String, message: String },
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A source could not read or write its own files under the data directory.
    #[error("source '{source_name}': storage at {path}: {message}")]
    Storage {
        source_name: String,
        path: String,
        message: String,
    },
    /// A sink could not write to or commit in its destination (broker, topic, directory).
    #[error("sink '{sink}' ({destination}): {message}")]
    Sink {
        sink: String,
        destination: String,
        message: String,
    },
}

/// A piece of a snapshot that one task reads: for Kafka a partition and an offset range
/// `[start, end)`, for generators a range of event numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// Counters a source keeps for SHOW SOURCES. Shared by every read of the source.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub messages_read: AtomicU64,
    pub malformed_skipped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl SourceCounters {
    /// Records a skipped malformed message.
    pub fn malformed(&self, error: &str) {
        self.malformed_skipped.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }

    /// The last error seen, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What CREATE SOURCE declared: the columns and the WITH options.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The source's name, for messages.
    pub name: String,
    /// Declared columns; `None` when the statement gave none (generators know their own).
    pub schema: Option<SchemaRef>,
    /// WITH options, keys lower-case, `connector` removed.
    pub options: BTreeMap<String, String>,
    /// State resolved when the source was first created (start offsets, start time …) and
    /// stored with it, so a restart reads the same data.
    pub state: BTreeMap<String, String>,
    /// A directory the source may keep its own files in (`<data-dir>/sources/<name>/`),
    /// created by the source if it needs one; the engine deletes it when the source is
    /// dropped. The http connector keeps its event log there.
    pub storage_dir: Option<std::path::PathBuf>,
}

/// A source that can be read.
#[async_trait]
pub trait Source: Debug + Send + Sync {
    /// The columns the source produces (declared ones, metadata columns included).
    fn schema(&self) -> SchemaRef;

    /// A one-line description for SHOW SOURCES (topic and brokers, generator settings …).
    fn describe(&self) -> String;

    /// State to store with the source so it reads the same data after a restart.
    fn state(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// The splits of a bounded snapshot: everything available now, from the start position.
    async fn snapshot(&self) -> Result<Vec<Split>, ConnectorError>;

    /// For continuous reading: one split per partition, from the position reading starts at
    /// to what is available now. Partition numbers must be stable over time (a continuous job
    /// keeps its read position per partition), which Kafka's snapshot already is; generators
    /// cut their snapshots differently and override this.
    async fn positions(&self) -> Result<Vec<Split>, ConnectorError> {
        self.snapshot().await
    }

    /// Reads one split, producing only the columns in `projection` (indices into
    /// [`Source::schema`]; `None` for all), in batches of at most `batch_rows` rows.
    fn read(
        &self,
        split: Split,
        projection: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> BoxStream<'static, Result<RecordBatch, ConnectorError>>;

    /// The source's counters.
    fn counters(&self) -> Arc<SourceCounters>;

    /// Sources that take events pushed to them (the `http` connector) return themselves
    /// here; every other source is read-only and keeps the default, `None`.
    fn ingest(&self) -> Option<&dyn crate::http::Ingest> {
        None
    }
}

/// Creates sources of one kind.
#[async_trait]
pub trait SourceConnector: Send + Sync {
    /// The `connector = '…'` name.
    fn name(&self) -> &'static str;

    /// Builds a source. `validate` is true at CREATE SOURCE (check the topic exists, resolve
    /// start positions) and false when restoring at start-up (the broker may be down then;
    /// the stored state is used).
    async fn create(
        &self,
        config: SourceConfig,
        validate: bool,
    ) -> Result<Arc<dyn Source>, ConnectorError>;
}

/// Every source connector. Adding one is its folder plus one line here.
pub fn registry() -> Vec<Arc<dyn SourceConnector>> {
    vec![
        Arc::new(crate::kafka::KafkaConnector),
        Arc::new(crate::generators::DatagenConnector),
        Arc::new(crate::generators::NexmarkConnector),
        Arc::new(crate::http::HttpConnector),
    ]
}

/// The connector called `name`.
pub fn connector(name: &str) -> Result<Arc<dyn SourceConnector>, ConnectorError> {
    let all = registry();
    let known = all.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    all.into_iter()
        .find(|c| c.name().eq_ignore_ascii_case(name))
        .ok_or(ConnectorError::UnknownConnector {
            name: name.to_string(),
            known,
        })
}

/// Reads options one by one and reports the ones nobody asked for.
pub struct Options<'a> {
    connector: &'static str,
    values: &'a BTreeMap<String, String>,
    known: Vec<&'static str>,
}

impl<'a> Options<'a> {
    pub fn new(connector: &'static str, values: &'a BTreeMap<String, String>) -> Self {
        Self {
            connector,
            values,
            known: Vec::new(),
        }
    }

    /// The value of `key`, if given.
    pub fn get(&mut self, key: &'static str) -> Option<&'a str> {
        self.known.push(key);
        self.values.get(key).map(String::as_str)
    }

    /// The value of `key`, which must be given.
    pub fn required(&mut self, key: &'static str) -> Result<&'a str, ConnectorError> {
        self.get(key).ok_or(ConnectorError::MissingOption {
            option: key.to_string(),
            connector: self.connector.to_string(),
        })
    }

    /// The value of `key` parsed, or `default`.
    pub fn parsed<T: std::str::FromStr>(
        &mut self,
        key: &'static str,
        default: T,
    ) -> Result<T, ConnectorError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|e: T::Err| ConnectorError::InvalidOption {
                    option: key.to_string(),
                    value: text.to_string(),
                    reason: e.to_string(),
                }),
        }
    }

    /// Options whose key starts with `prefix` (e.g. `kafka.`), marked as known.
    pub fn with_prefix(&mut self, prefix: &str) -> Vec<(&'a str, &'a str)> {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Fails on the first option that was neither read nor matched by `prefixes`.
    pub fn finish(self, prefixes: &[&str]) -> Result<(), ConnectorError> {
        for key in self.values.keys() {
            let known =
                self.known.contains(&key.as_str()) || prefixes.iter().any(|p| key.starts_with(p));
            if !known {
                let mut valid: Vec<String> = self.known.iter().map(|k| k.to_string()).collect();
                valid.extend(prefixes.iter().map(|p| format!("{p}<name>")));
                return Err(ConnectorError::UnknownOption {
                    option: key.clone(),
                    connector: self.connector.to_string(),
                    valid: valid.join(", "),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unread_option_is_reported_with_the_valid_ones() {
        let values: BTreeMap<String, String> = [("topic", "t"), ("tpoic", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut options = Options::new("kafka", &values);
        assert_eq!(options.required("topic").unwrap(), "t");
        let err = options.finish(&["kafka."]).unwrap_err().to_string();
        assert!(
            err.contains("'tpoic'") && err.contains("topic") && err.contains("kafka.<name>"),
            "{err}"
        );
    }

    #[test]
    fn unknown_connector_lists_the_known_ones() {
        let Err(err) = connector("kafak") else {
            panic!("kafak is not a connector");
        };
        let err = err.to_string();
        assert!(
            err.contains("kafak") && err.contains("kafka") && err.contains("nexmark"),
            "{err}"
        );
    }
}
