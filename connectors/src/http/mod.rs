//! `connector = 'http'`: a source whose events are posted to Freshet over HTTP.
//!
//! The server's HTTP frontend hands each request body to [`Ingest::ingest`]. The body holds
//! one JSON object, a JSON array of objects, or NDJSON (one object per line). Every event is
//! decoded against the declared columns before anything is stored; one bad event refuses the
//! whole request, naming the event's index and the field. An accepted request is appended to
//! the source's durable log ([`log`]) and synced before the answer, so a continuous query
//! over the source recovers exactly after a crash: offsets are positions in the log, read
//! like a Kafka partition (partition 0).
//!
//! Options: `max_log_bytes` (the log refuses appends beyond it until retention frees space;
//! default 1 GiB), `segment_bytes` (default 64 MiB), `retention` (how long closed segments
//! are kept, e.g. '7 days'; default 7 days). Declared columns named `_offset` (the event's
//! log position) and `_timestamp` (when the server accepted it) are filled by the source.

mod log;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, TimestampMillisecondArray,
};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::sync::mpsc;

use self::log::{EventLog, LogSettings};
use crate::formats::{Format, PayloadDecoder};
use crate::source::{
    ConnectorError, Options, Source, SourceConfig, SourceConnector, SourceCounters, Split,
};

/// Metadata columns an http source can declare.
pub const METADATA_COLUMNS: [&str; 2] = ["_offset", "_timestamp"];

/// The arrival time stored with every event.
const ARRIVAL_COLUMN: &str = "_timestamp";

/// Errors reported for one request, at most: enough to fix a client, bounded in size.
const EVENT_ERRORS_MAX: usize = 20;

/// Requests that may wait for the log's writer before new ones are refused as busy.
const QUEUE_REQUESTS: usize = 1024;

/// How a request body holds its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON object, or a JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// Why one event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    /// The event's position in the request, from 0.
    pub index: usize,
    /// The declared column whose value could not be read, when one can be named.
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "event {}, field \"{field}\": {}",
                self.index, self.message
            ),
            None => write!(f, "event {}: {}", self.index, self.message),
        }
    }
}

/// Why a request was not accepted. Nothing of a refused request is stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// Some events are malformed or have a value of the wrong type.
    #[error("{} (the request was refused whole; {} event(s) had errors)", errors[0], errors.len())]
    Invalid { errors: Vec<EventError> },
    /// The body is not a JSON object, an array of objects, or NDJSON.
    #[error("{0}")]
    Body(String),
    /// The request alone is larger than the source's whole log may be.
    #[error("the request needs {bytes} bytes in the event log, more than its max_log_bytes ({max_bytes})")]
    TooLarge { bytes: u64, max_bytes: u64 },
    /// The log holds `max_log_bytes`; retention has to free space first.
    #[error("the source's event log is full (max_log_bytes = {max_log_bytes}); retry after {retry_after_s} s")]
    LogFull {
        max_log_bytes: u64,
        retry_after_s: u64,
    },
    /// Too many requests wait for the log's writer.
    #[error("too many requests are waiting to be written; retry after {retry_after_s} s")]
    Busy { retry_after_s: u64 },
    /// The log cannot take appends (a write failed, or the source is being dropped).
    #[error("{0}")]
    Unavailable(String),
}

/// What an accepted request became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Events stored.
    pub events: usize,
    /// The log position of the first of them (offsets `[first_offset, first_offset + events)`).
    pub first_offset: i64,
}

/// A source that takes events pushed to it, all-or-nothing and durably.
#[async_trait]
pub trait Ingest: Send + Sync {
    /// Validates every event of `body`, then stores them all; answers once they are durable.
    ///
    /// # Errors
    /// [`IngestError::Invalid`] or [`IngestError::Body`] for bad input (nothing stored);
    /// [`IngestError::LogFull`], [`IngestError::Busy`] or [`IngestError::Unavailable`] when
    /// the events cannot be stored now.
    async fn ingest(&self, body: Bytes, format: BodyFormat) -> Result<Accepted, IngestError>;
}

/// The `connector = 'http'` factory.
pub struct HttpConnector;

/// Parses sizes such as `1048576`, `64 MiB`, `1GB`.
fn parse_bytes(option: &str, text: &str) -> Result<u64, ConnectorError> {
    let invalid = || ConnectorError::InvalidOption {
        option: option.to_string(),
        value: text.to_string(),
        reason: "use a number of bytes, optionally with KB, MB, GB, KiB, MiB or GiB".to_string(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(invalid)
}

/// Parses durations such as `7 days`, `12h`, `30 minutes`, `500 ms`.
fn parse_duration(option: &str, text: &str) -> Result<Duration, ConnectorError> {
    let invalid = || ConnectorError::InvalidOption {
        option: option.to_string(),
        value: text.to_string(),
        reason: "use a duration such as '7 days', '12 hours', '30 minutes' or '500 ms'".to_string(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_ms: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "millisecond" | "milliseconds" => 1,
        "" | "s" | "sec" | "second" | "seconds" => 1_000,
        "m" | "min" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(invalid)
}

fn log_settings(options: &mut Options<'_>) -> Result<LogSettings, ConnectorError> {
    let max_log_bytes = match options.get("max_log_bytes") {
        Some(text) => parse_bytes("max_log_bytes", text)?,
        None => 1 << 30,
    };
    let segment_bytes = match options.get("segment_bytes") {
        Some(text) => parse_bytes("segment_bytes", text)?,
        None => (64 << 20).min(max_log_bytes / 4),
    };
    if segment_bytes.saturating_mul(2) > max_log_bytes {
        return Err(ConnectorError::InvalidOption {
            option: "segment_bytes".to_string(),
            value: segment_bytes.to_string(),
            reason: format!(
                "must be at most half of max_log_bytes ({max_log_bytes}), so retention can free \
                 space by deleting a closed segment"
            ),
        });
    }
    let retention = match options.get("retention") {
        Some(text) => parse_duration("retention", text)?,
        None => Duration::from_secs(7 * 86_400),
    };
    Ok(LogSettings {
        segment_bytes,
        max_log_bytes,
        retention,
        queue_requests: QUEUE_REQUESTS,
    })
}

/// Checks the declared metadata columns' types and returns the payload columns.
fn payload_schema(schema: &SchemaRef) -> Result<SchemaRef, ConnectorError> {
    let mut payload = Vec::new();
    for field in schema.fields() {
        match field.name().as_str() {
            "_offset" if !field.data_type().is_integer() => {
                return Err(ConnectorError::Schema(format!(
                    "column _offset holds the event's log position: declare it BIGINT, not {}",
                    field.data_type()
                )))
            }
            "_timestamp" if !matches!(field.data_type(), DataType::Timestamp(_, _)) => {
                return Err(ConnectorError::Schema(format!(
                    "column _timestamp holds when the event was accepted: declare it TIMESTAMP, not {}",
                    field.data_type()
                )))
            }
            name if METADATA_COLUMNS.contains(&name) => {}
            _ => payload.push(field.clone()),
        }
    }
    if payload.is_empty() {
        return Err(ConnectorError::Schema(
            "an http source needs at least one column besides _offset and _timestamp".to_string(),
        ));
    }
    Ok(Arc::new(Schema::new(payload)))
}

#[async_trait]
impl SourceConnector for HttpConnector {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn create(
        &self,
        config: SourceConfig,
        validate: bool,
    ) -> Result<Arc<dyn Source>, ConnectorError> {
        Ok(Arc::new(build_source(config, validate).await?))
    }
}

/// Builds an http source: checks its columns and options and opens (or, when `validate`, at
/// CREATE SOURCE, starts afresh) its log.
async fn build_source(config: SourceConfig, validate: bool) -> Result<HttpSource, ConnectorError> {
    {
        let schema = config.schema.clone().ok_or_else(|| {
            ConnectorError::Schema(
                "an http source needs its columns: CREATE SOURCE name (column TYPE, …) WITH (connector = 'http')"
                    .to_string(),
            )
        })?;
        let mut options = Options::new("http", &config.options);
        let settings = log_settings(&mut options)?;
        options.finish(&[])?;
        let payload = payload_schema(&schema)?;
        let storage = config.storage_dir.clone().ok_or_else(|| {
            ConnectorError::Schema(format!(
                "source {}: the http connector keeps its events under the data directory, and none was given",
                config.name
            ))
        })?;
        let dir = storage.join("log");
        let name = config.name.clone();
        let log = tokio::task::spawn_blocking(move || {
            if validate && storage.exists() {
                // Left by a source of the same name that was dropped (or whose creation
                // failed): a new source starts with an empty log.
                std::fs::remove_dir_all(&storage).map_err(|e| ConnectorError::Storage {
                    source_name: name.clone(),
                    path: storage.display().to_string(),
                    message: e.to_string(),
                })?;
            }
            EventLog::open(&name, &dir, settings)
        })
        .await
        .map_err(|e| ConnectorError::Schema(format!("opening the event log failed: {e}")))??;
        let mut stored: Vec<Field> = payload
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        stored.push(Field::new(
            ARRIVAL_COLUMN,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ));
        Ok(HttpSource {
            name: config.name,
            schema,
            decoding: Arc::new(Decoding {
                decoder: PayloadDecoder::new(Format::Json, payload.clone())?,
                payload,
                stored: Arc::new(Schema::new(stored)),
            }),
            log: Arc::new(log),
            storage_dir: config.storage_dir.unwrap_or_default(),
            counters: Arc::new(SourceCounters::default()),
        })
    }
}

/// An http source: its declared columns and its log.
#[derive(Debug)]
pub struct HttpSource {
    name: String,
    schema: SchemaRef,
    decoding: Arc<Decoding>,
    log: Arc<EventLog>,
    storage_dir: PathBuf,
    counters: Arc<SourceCounters>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn skip_whitespace(body: &[u8], mut position: usize) -> usize {
    while position < body.len() && body[position].is_ascii_whitespace() {
        position += 1;
    }
    position
}

fn not_an_object(index: usize) -> EventError {
    EventError {
        index,
        field: None,
        message: "not a JSON object".to_string(),
    }
}

/// Cuts a body into its events (each one JSON object's bytes), without decoding them.
pub fn split_events(body: &[u8], format: BodyFormat) -> Result<Vec<&[u8]>, IngestError> {
    let invalid = |error: EventError| IngestError::Invalid {
        errors: vec![error],
    };
    match format {
        BodyFormat::Ndjson => {
            let mut events = Vec::new();
            for line in body.split(|b| *b == b'\n') {
                let start = skip_whitespace(line, 0);
                if start == line.len() {
                    continue;
                }
                if line[start] != b'{' {
                    return Err(invalid(not_an_object(events.len())));
                }
                events.push(line.trim_ascii_end());
            }
            Ok(events)
        }
        BodyFormat::Json => {
            let start = skip_whitespace(body, 0);
            match body.get(start) {
                None => Err(IngestError::Body("the body is empty".to_string())),
                Some(b'{') => Ok(vec![body[start..].trim_ascii_end()]),
                Some(b'[') => split_array(body, start + 1),
                Some(_) => Err(IngestError::Body(
                    "the body must be a JSON object, a JSON array of objects, or NDJSON \
                     (Content-Type: application/x-ndjson)"
                        .to_string(),
                )),
            }
        }
    }
}

/// The elements of a JSON array starting after its `[`.
fn split_array(body: &[u8], mut position: usize) -> Result<Vec<&[u8]>, IngestError> {
    let invalid = |index: usize, message: String| IngestError::Invalid {
        errors: vec![EventError {
            index,
            field: None,
            message,
        }],
    };
    let mut events = Vec::new();
    position = skip_whitespace(body, position);
    if body.get(position) == Some(&b']') {
        position += 1;
    } else {
        loop {
            let index = events.len();
            if body.get(position) != Some(&b'{') {
                return Err(invalid(index, not_an_object(index).message));
            }
            let mut values = serde_json::Deserializer::from_slice(&body[position..])
                .into_iter::<serde::de::IgnoredAny>();
            match values.next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(invalid(index, format!("invalid JSON: {e}"))),
                None => return Err(invalid(index, "invalid JSON: the array ends early".into())),
            }
            let end = position + values.byte_offset();
            events.push(&body[position..end]);
            position = skip_whitespace(body, end);
            match body.get(position) {
                Some(b',') => position = skip_whitespace(body, position + 1),
                Some(b']') => {
                    position += 1;
                    break;
                }
                _ => {
                    return Err(invalid(
                        index,
                        "invalid JSON: expected ',' or ']' after this event".to_string(),
                    ))
                }
            }
        }
    }
    if skip_whitespace(body, position) != body.len() {
        return Err(IngestError::Body(
            "unexpected data after the JSON array".to_string(),
        ));
    }
    Ok(events)
}

/// What decoding a request needs; shared with the blocking thread that does it.
#[derive(Debug)]
struct Decoding {
    /// The declared columns that come from the events.
    payload: SchemaRef,
    decoder: PayloadDecoder,
    /// What a log frame holds: the payload columns and the arrival time.
    stored: SchemaRef,
}

impl Decoding {
    /// Decodes every event or explains each bad one; `arrival_ms` fills `_timestamp`.
    fn decode(&self, events: &[&[u8]], arrival_ms: i64) -> Result<RecordBatch, IngestError> {
        let (batch, malformed) = self
            .decoder
            .decode(events)
            .map_err(|e| IngestError::Body(format!("the events could not be decoded: {e}")))?;
        if !malformed.is_empty() {
            let errors = malformed
                .iter()
                .take(EVENT_ERRORS_MAX)
                .map(|(index, message)| self.explain(*index, events[*index], message))
                .collect();
            return Err(IngestError::Invalid { errors });
        }
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(TimestampMillisecondArray::from_value(
            arrival_ms,
            batch.num_rows(),
        )));
        RecordBatch::try_new(self.stored.clone(), columns)
            .map_err(|e| IngestError::Body(format!("the events could not be stored: {e}")))
    }

    /// Names the field that made `event` fail, by decoding it one declared column at a time
    /// with the same decoder the request used, so the answer is exactly the decoder's view.
    fn explain(&self, index: usize, event: &[u8], whole: &str) -> EventError {
        for field in self.payload.fields() {
            let Ok(single) = PayloadDecoder::new(
                Format::Json,
                Arc::new(Schema::new(vec![field.as_ref().clone()])),
            ) else {
                continue;
            };
            if let Ok((_, malformed)) = single.decode(&[event]) {
                if let Some((_, message)) = malformed.first() {
                    return EventError {
                        index,
                        field: Some(field.name().clone()),
                        message: format!("expected {} ({message})", type_name(field.data_type())),
                    };
                }
            }
        }
        EventError {
            index,
            field: None,
            message: whole.to_string(),
        }
    }
}

impl HttpSource {
    /// Builds the output columns for `projection` from a stored slice starting at `offset`.
    fn assemble(
        schema: &SchemaRef,
        stored: &RecordBatch,
        offset: i64,
        projection: Option<&[usize]>,
    ) -> Result<RecordBatch, ConnectorError> {
        let indices: Vec<usize> = match projection {
            Some(p) => p.to_vec(),
            None => (0..schema.fields().len()).collect(),
        };
        let rows = stored.num_rows();
        let mut fields = Vec::with_capacity(indices.len());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(indices.len());
        for index in indices {
            let field = schema.field(index);
            let column: ArrayRef = match field.name().as_str() {
                "_offset" => Arc::new(Int64Array::from_iter_values(offset..offset + rows as i64)),
                name => stored.column_by_name(name).cloned().ok_or_else(|| {
                    ConnectorError::Schema(format!("column {name} is missing from the event log"))
                })?,
            };
            let column = if column.data_type() == field.data_type() {
                column
            } else {
                cast(&column, field.data_type())?
            };
            fields.push(field.clone().with_nullable(true));
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &options,
        )?)
    }
}

/// The SQL name of a type, for messages to people who declared columns in SQL.
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int8 | DataType::Int16 => "SMALLINT".to_string(),
        DataType::Int32 => "INTEGER".to_string(),
        DataType::Int64 => "BIGINT".to_string(),
        DataType::Float32 => "REAL".to_string(),
        DataType::Float64 => "DOUBLE PRECISION".to_string(),
        DataType::Boolean => "BOOLEAN".to_string(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "TEXT".to_string(),
        DataType::Timestamp(_, _) => {
            "TIMESTAMP (an RFC 3339 string or epoch milliseconds)".to_string()
        }
        DataType::Date32 => "DATE".to_string(),
        other => other.to_string(),
    }
}

fn encode(batch: &RecordBatch) -> Result<Vec<u8>, IngestError> {
    let fail = |e: arrow::error::ArrowError| {
        IngestError::Unavailable(format!("encoding the events failed: {e}"))
    };
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).map_err(fail)?;
    writer.write(batch).map_err(fail)?;
    writer.into_inner().map_err(fail)
}

#[async_trait]
impl Ingest for HttpSource {
    async fn ingest(&self, body: Bytes, format: BodyFormat) -> Result<Accepted, IngestError> {
        // Decoding a large body is CPU work: off the async threads.
        let decoding = self.decoding.clone();
        let prepared = tokio::task::spawn_blocking(move || -> Result<_, IngestError> {
            let events = split_events(&body, format)?;
            if events.is_empty() {
                return Ok(None);
            }
            let count = u32::try_from(events.len())
                .map_err(|_| IngestError::Body("too many events in one request".to_string()))?;
            let batch = decoding.decode(&events, now_ms())?;
            Ok(Some((encode(&batch)?, count)))
        })
        .await
        .map_err(|e| IngestError::Unavailable(format!("decoding the request failed: {e}")))??;
        let Some((payload, count)) = prepared else {
            return Ok(Accepted {
                events: 0,
                first_offset: self.log.range().1,
            });
        };
        let first_offset = self.log.append(payload, count).await?;
        Ok(Accepted {
            events: count as usize,
            first_offset,
        })
    }
}

/// One read of a split: slices of frames gathered into batches of `batch_rows`, since one
/// frame may hold a single event.
struct Reading {
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    batch_rows: usize,
    sender: mpsc::Sender<Result<RecordBatch, ConnectorError>>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    failure: Option<ConnectorError>,
}

impl Reading {
    /// Adds a stored slice; false to stop reading (the query went away, or an error).
    fn take(&mut self, offset: i64, stored: &RecordBatch) -> bool {
        match HttpSource::assemble(&self.schema, stored, offset, self.projection.as_deref()) {
            Ok(batch) => {
                self.pending_rows += batch.num_rows();
                self.pending.push(batch);
            }
            Err(err) => {
                self.failure = Some(err);
                return false;
            }
        }
        self.pending_rows < self.batch_rows || self.flush()
    }

    /// Sends what is pending in batches of at most `batch_rows`; false to stop.
    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let schema = self.pending[0].schema();
        let whole = match concat_batches(&schema, &self.pending) {
            Ok(batch) => batch,
            Err(err) => {
                self.failure = Some(err.into());
                return false;
            }
        };
        self.pending.clear();
        self.pending_rows = 0;
        let mut done = 0;
        while done < whole.num_rows() {
            let rows = self.batch_rows.min(whole.num_rows() - done);
            if self
                .sender
                .blocking_send(Ok(whole.slice(done, rows)))
                .is_err()
            {
                return false;
            }
            done += rows;
        }
        true
    }
}

/// Batches buffered between the reading thread and the query: small, so a slow query slows
/// the reading instead of growing memory.
const CHANNEL_BATCHES: usize = 2;

#[async_trait]
impl Source for HttpSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self) -> String {
        let (start, end) = self.log.range();
        format!(
            "http: POST /v1/sources/{}/events; log {} (offsets {start}..{end}, {} bytes of max {})",
            self.name.strip_prefix("public.").unwrap_or(&self.name),
            self.storage_dir.join("log").display(),
            self.log.bytes(),
            self.log.settings().max_log_bytes
        )
    }

    async fn snapshot(&self) -> Result<Vec<Split>, ConnectorError> {
        let (start, end) = self.log.range();
        Ok(if start < end {
            vec![Split {
                partition: 0,
                start,
                end,
            }]
        } else {
            Vec::new()
        })
    }

    async fn positions(&self) -> Result<Vec<Split>, ConnectorError> {
        let (start, end) = self.log.range();
        Ok(vec![Split {
            partition: 0,
            start,
            end,
        }])
    }

    fn read(
        &self,
        split: Split,
        projection: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> BoxStream<'static, Result<RecordBatch, ConnectorError>> {
        let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
        let log = self.log.clone();
        let schema = self.schema.clone();
        let counters = self.counters.clone();
        let batch_rows = batch_rows.max(1);
        tokio::task::spawn_blocking(move || {
            let mut reading = Reading {
                schema,
                projection,
                batch_rows,
                sender,
                pending: Vec::new(),
                pending_rows: 0,
                failure: None,
            };
            let result = log.read(split.start, split.end, |offset, stored| {
                counters
                    .messages_read
                    .fetch_add(stored.num_rows() as u64, Ordering::Relaxed);
                reading.take(offset, &stored)
            });
            if reading.failure.is_none() && result.is_ok() {
                reading.flush();
            }
            if let Some(err) = reading.failure.take().or(result.err()) {
                let _ = reading.sender.blocking_send(Err(err));
            }
        });
        stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })
        .boxed()
    }

    fn counters(&self) -> Arc<SourceCounters> {
        self.counters.clone()
    }

    fn ingest(&self) -> Option<&dyn Ingest> {
        Some(self)
    }
}
