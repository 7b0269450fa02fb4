//! The interface every sink connector implements, and the registry that lists them.
//!
//! A sink receives the Arrow record batches of a continuous query and makes them durable in
//! *epochs*: everything written between two [`Sink::commit`] calls becomes visible in the
//! destination at once (Kafka transactions, Parquet files renamed into place), or at least
//! once (plain Kafka producing). Each commit also records, in the destination itself, the
//! epoch number and an opaque metadata string (the runtime's source offsets), which
//! [`Sink::committed`] reads back after a restart. That record is what lets the runtime
//! avoid writing an epoch twice even when its own checkpoint was lost.
//!
//! This module owns the traits and shared helpers; each sink lives in its folder under
//! `sinks/`. It does not schedule commits: the continuous-query runtime in the `sql` crate
//! decides when an epoch ends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::files::PathPolicy;
use crate::source::{ConnectorError, Options};

/// Options every sink accepts because the runtime reads them, not the sink: how often the
/// sink job checkpoints, which is also how often files roll over.
pub const RUNTIME_OPTIONS: [&str; 2] = ["checkpoint_interval", "rollover_interval"];

/// What CREATE SINK declared.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The sink's name, for messages, consumer group ids and transactional ids.
    pub name: String,
    /// The rows it will receive.
    pub schema: SchemaRef,
    /// WITH options, keys lower-case, `connector` removed.
    pub options: BTreeMap<String, String>,
}

/// A destination that receives rows in epochs.
///
/// # Epochs
///
/// The runtime calls [`Sink::write`] any number of times, then [`Sink::commit`] with an epoch
/// number larger than every epoch committed before through this sink. Rows written since the
/// previous commit (or since creation) belong to that epoch. [`Sink::abort`] drops them
/// instead. A sink is used by one task at a time; the methods take `&mut self`.
///
/// # Durability
///
/// When `commit` returns `Ok`, the epoch's rows and the `(epoch, metadata)` record are durable
/// in the destination, and [`Sink::committed`] (on this or a later instance of the same sink)
/// returns that epoch or a later one. When `commit` fails, the epoch may be partly visible
/// (at-least-once sinks) or not at all (exactly-once sinks), and `committed` tells which epoch
/// the destination last recorded. The runtime writes its own checkpoint only after `commit`
/// succeeded.
///
/// # Errors
///
/// Operating errors (broker unreachable, permission denied, disk full) are returned as
/// [`ConnectorError`]s naming the sink and its destination. A batch whose columns do not match
/// [`SinkConfig::schema`] is refused with [`ConnectorError::Schema`].
#[async_trait]
pub trait Sink: Send + std::fmt::Debug {
    /// One line for SHOW SINKS (topic and brokers, or path).
    fn describe(&self) -> String;

    /// The last epoch this sink durably committed, and the metadata string given with it, as
    /// recorded in the destination itself (so it survives the loss of Freshet's data
    /// directory). `None` when nothing was ever committed.
    async fn committed(&mut self) -> Result<Option<(u64, String)>, ConnectorError>;

    /// Adds rows to the current epoch. May buffer, and may already send them (at-least-once
    /// Kafka), but rows become part of the destination's committed state only at
    /// [`Sink::commit`].
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError>;

    /// Makes every row written since the previous commit durable as epoch `epoch`, together
    /// with `metadata` (opaque text, a few KB at most, such as JSON of source offsets),
    /// atomically where the destination allows.
    ///
    /// `epoch` must be larger than the last epoch committed through this instance; a smaller
    /// or equal one is refused with [`ConnectorError::Sink`]. An epoch without rows still
    /// records `(epoch, metadata)`.
    ///
    /// When `commit` fails, the epoch's rows are dropped, not kept for a retry: the runtime
    /// replays them from its last checkpoint. (At-least-once Kafka may have delivered some.)
    async fn commit(&mut self, epoch: u64, metadata: &str) -> Result<(), ConnectorError>;

    /// Forgets rows written since the last commit: exactly-once sinks abort their transaction
    /// or delete their unfinished files. At-least-once Kafka cannot take back messages already
    /// delivered; it drops what is still queued.
    async fn abort(&mut self) -> Result<(), ConnectorError>;
}

/// Creates sinks of one kind.
#[async_trait]
pub trait SinkConnector: Send + Sync {
    /// The `connector = '…'` name.
    fn name(&self) -> &'static str;

    /// Builds a sink. `validate` is true at CREATE SINK: options are checked and the
    /// destination is contacted (the topic must exist, the directory must be writable and
    /// not already hold another sink's output). It is false when restoring at start-up.
    async fn create(
        &self,
        config: SinkConfig,
        env: &SinkEnv,
        validate: bool,
    ) -> Result<Box<dyn Sink>, ConnectorError>;
}

/// What sinks need from the server.
#[derive(Debug, Clone)]
pub struct SinkEnv {
    /// The local directories file sinks may write to.
    pub policy: Arc<PathPolicy>,
    /// What relative local paths are relative to (the server's `base_dir`, as for COPY).
    pub base_dir: PathBuf,
}

impl SinkEnv {
    /// An environment whose relative paths are taken relative to `base_dir`.
    pub fn new(policy: Arc<PathPolicy>, base_dir: PathBuf) -> Self {
        Self { policy, base_dir }
    }
}

/// Every sink connector. Adding one is its folder plus one line here.
pub fn sink_registry() -> Vec<Arc<dyn SinkConnector>> {
    vec![
        Arc::new(crate::sinks::kafka::KafkaSinkConnector),
        Arc::new(crate::sinks::parquet::ParquetSinkConnector),
    ]
}

/// The sink connector called `name` (case-insensitive).
pub fn sink_connector(name: &str) -> Result<Arc<dyn SinkConnector>, ConnectorError> {
    let all = sink_registry();
    let known = all.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    all.into_iter()
        .find(|c| c.name().eq_ignore_ascii_case(name))
        .ok_or(ConnectorError::UnknownConnector {
            name: name.to_string(),
            known,
        })
}

/// Marks the options the runtime reads ([`RUNTIME_OPTIONS`]) as known.
pub(crate) fn accept_runtime_options(options: &mut Options<'_>) {
    for key in RUNTIME_OPTIONS {
        options.get(key);
    }
}

/// `batch` with the sink's declared schema (names, nullability, metadata), or a schema error
/// when the column count or a column type differs.
pub(crate) fn conform_batch(
    sink: &str,
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch, ConnectorError> {
    let fields = schema.fields();
    let columns = batch.columns();
    let mismatch = fields.len() != columns.len()
        || fields
            .iter()
            .zip(columns)
            .any(|(field, column)| field.data_type() != column.data_type());
    if mismatch {
        return Err(ConnectorError::Schema(format!(
            "sink '{sink}' expects rows ({}) but received ({})",
            describe_schema(schema),
            describe_schema(&batch.schema())
        )));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns.to_vec())?)
}

fn describe_schema(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Remembers the last epoch committed through one sink instance, to refuse going backwards.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EpochOrder {
    last: Option<u64>,
}

impl EpochOrder {
    /// Fails unless `epoch` is after the last one recorded.
    pub(crate) fn check(&self, epoch: u64) -> Result<(), String> {
        match self.last {
            Some(last) if epoch <= last => Err(format!(
                "epoch {epoch} is not after the last committed epoch {last}; epochs must increase"
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn record(&mut self, epoch: u64) {
        self.last = Some(epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn unknown_sink_connector_lists_the_known_ones() {
        let Err(err) = sink_connector("parquett") else {
            panic!("parquett is not a sink connector");
        };
        let err = err.to_string();
        assert!(
            err.contains("parquett") && err.contains("kafka") && err.contains("parquet"),
            "{err}"
        );
        assert_eq!(
            sink_connector("KAFKA").map(|c| c.name()).ok(),
            Some("kafka")
        );
    }

    #[test]
    fn a_batch_of_other_types_is_refused_and_names_are_taken_from_the_sink() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let renamed = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from(vec![1])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let conformed = conform_batch("s", &schema, &renamed).unwrap();
        assert_eq!(conformed.schema().field(0).name(), "id");
        let strings = RecordBatch::try_from_iter([(
            "id",
            Arc::new(StringArray::from(vec!["1"])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let err = conform_batch("s", &schema, &strings)
            .unwrap_err()
            .to_string();
        assert!(err.contains("id Int64") && err.contains("id Utf8"), "{err}");
    }

    #[test]
    fn epochs_must_increase() {
        let mut order = EpochOrder::default();
        assert!(order.check(0).is_ok());
        order.record(3);
        assert!(order.check(3).is_err());
        assert!(order.check(2).is_err());
        assert!(order.check(4).is_ok());
    }
}
