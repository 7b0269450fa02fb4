//! A directory of Parquet files as a sink: local (under the allowed roots), S3 or HDFS.
//!
//! Layout of the directory (`<e>` is the epoch, ten digits; `<k>` the file's number within
//! the epoch, three digits):
//!
//! ```text
//! part-<e>-<k>.parquet                        committed data, what readers list
//! _inprogress/<run>-<n>.parquet.inprogress    rows of the epoch being written
//! _freshet/epoch-<e>.json                     the record of the last committed epoch
//! ```
//!
//! Rows stream into in-progress objects (a new one every `max_file_rows` rows, so memory stays
//! bounded); [`Sink::commit`] closes them, renames them to their final names and then writes
//! the epoch's marker. The marker is written last, so an epoch without a marker is not
//! committed: its final files are leftovers of a crash and are deleted before the next epoch
//! is committed. Readers listing the directory (DataFusion's `STORED AS PARQUET LOCATION`)
//! see only `*.parquet` files at the top level, never the hidden folders' objects.
//!
//! One directory holds the output of one sink; a second sink must not share it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::files::{build_object_store, resolve_location, split_store_options, FileError};
use crate::sink::{
    accept_runtime_options, conform_batch, EpochOrder, Sink, SinkConfig, SinkConnector, SinkEnv,
};
use crate::source::{ConnectorError, Options};

/// Where rows of the epoch being written live until the commit.
const INPROGRESS_DIR: &str = "_inprogress";
/// Where epoch markers live.
const MARKER_DIR: &str = "_freshet";
/// Rows per Parquet row group at most: the writer holds one row group in memory.
const ROW_GROUP_ROWS_MAX: usize = 128 * 1024;
/// Parts of a multipart upload in flight at once, per file.
const UPLOAD_CONCURRENCY_MAX: usize = 2;
/// Option prefixes that configure the object store.
const STORE_PREFIXES: [&str; 3] = ["aws.", "s3.", "hdfs."];

/// The `connector = 'parquet'` sink factory.
pub struct ParquetSinkConnector;

#[async_trait]
impl SinkConnector for ParquetSinkConnector {
    fn name(&self) -> &'static str {
        "parquet"
    }

    async fn create(
        &self,
        config: SinkConfig,
        env: &SinkEnv,
        validate: bool,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(ParquetSink::open(config, env, validate).await?))
    }
}

/// The name of a committed data file.
fn part_name(epoch: u64, index: usize) -> String {
    format!("part-{epoch:010}-{index:03}.parquet")
}

/// The epoch of a committed data file's name, if it is one.
fn part_epoch(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (epoch, index) = rest.split_once('-')?;
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    // Only names this sink writes: other tools' `part-…` files are left alone.
    (epoch.len() == 10 && digits(epoch) && index.len() >= 3 && digits(index))
        .then(|| epoch.parse().ok())
        .flatten()
}

fn marker_name(epoch: u64) -> String {
    format!("epoch-{epoch:010}.json")
}

fn marker_epoch(name: &str) -> Option<u64> {
    name.strip_prefix("epoch-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

fn parse_compression(value: &str) -> Result<Compression, ConnectorError> {
    match value.to_ascii_lowercase().as_str() {
        "snappy" => Ok(Compression::SNAPPY),
        "zstd" => Ok(Compression::ZSTD(ZstdLevel::default())),
        "none" | "uncompressed" => Ok(Compression::UNCOMPRESSED),
        _ => Err(ConnectorError::InvalidOption {
            option: "compression".to_string(),
            value: value.to_string(),
            reason: "use 'snappy', 'zstd' or 'none'".to_string(),
        }),
    }
}

/// A location or store error, as the option it came from.
fn path_error(path: &str, err: FileError) -> ConnectorError {
    match err {
        FileError::UnknownOption { option, valid } => ConnectorError::UnknownOption {
            option,
            connector: "parquet".to_string(),
            valid,
        },
        other => ConnectorError::InvalidOption {
            option: "path".to_string(),
            value: path.to_string(),
            reason: other.to_string(),
        },
    }
}

/// A name for this instance's in-progress files, so files of a crashed instance are told
/// apart from ours.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{:x}", std::process::id())
}

/// The parsed options of one Parquet sink.
struct Settings {
    path: String,
    max_file_rows: usize,
    compression: Compression,
    /// `aws.*`, `s3.*` and `hdfs.*` options, for the object store.
    store_options: Vec<(String, String)>,
}

impl Settings {
    fn parse(values: &BTreeMap<String, String>) -> Result<Self, ConnectorError> {
        let mut options = Options::new("parquet", values);
        let path = options.required("path")?.to_string();
        let max_file_rows: usize = options.parsed("max_file_rows", 1_000_000)?;
        if max_file_rows == 0 {
            return Err(ConnectorError::InvalidOption {
                option: "max_file_rows".to_string(),
                value: "0".to_string(),
                reason: "a file holds at least one row".to_string(),
            });
        }
        let compression = parse_compression(options.get("compression").unwrap_or("snappy"))?;
        accept_runtime_options(&mut options);
        options.finish(&STORE_PREFIXES)?;
        let all = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let (store_options, _) = split_store_options(all);
        Ok(Self {
            path,
            max_file_rows,
            compression,
            store_options,
        })
    }
}

/// The Parquet file being written.
struct OpenFile {
    writer: AsyncArrowWriter<BufWriter>,
    path: Path,
    rows: usize,
}

/// The sink's directory and its layout. Separate from [`ParquetSink`] because the Parquet
/// writer is not `Sync`, and these calls must be `Send` futures while the writer is open.
struct Directory {
    /// The sink's name, for messages.
    sink: String,
    store: Arc<dyn ObjectStore>,
    /// The directory, as a path in `store`.
    root: Path,
    /// The directory for people.
    display: String,
}

/// A directory written as a sink.
pub struct ParquetSink {
    dir: Directory,
    schema: SchemaRef,
    properties: WriterProperties,
    max_file_rows: usize,
    run: String,
    /// Number of the next in-progress file.
    next_file: u64,
    current: Option<OpenFile>,
    /// Closed in-progress files of the epoch, in row order.
    finished: Vec<Path>,
    /// Whether leftovers of earlier attempts have been removed since the last failure.
    clean: bool,
    order: EpochOrder,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("sink", &self.dir.sink)
            .field("path", &self.dir.display)
            .field("max_file_rows", &self.max_file_rows)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Directory {
    fn error(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError::Sink {
            sink: self.sink.clone(),
            destination: format!("parquet files in {}", self.display),
            message: message.into(),
        }
    }

    fn child(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.root.clone(), |path, part| path.join(*part))
    }

    /// At CREATE SINK: the directory must not hold another sink's output, and must be
    /// writable (a probe object is written and deleted).
    async fn validate(&self, run: &str) -> Result<(), ConnectorError> {
        if let Some((epoch, _)) = self.markers().await?.last() {
            return Err(self.error(format!(
                "the directory already holds the output of a sink (epoch {epoch} committed); \
                 choose an empty directory, or remove it to start over"
            )));
        }
        let probe = self.child(&[MARKER_DIR, &format!("probe-{run}")]);
        self.store
            .put(&probe, PutPayload::from_static(b"freshet"))
            .await
            .map_err(|e| self.error(format!("the directory is not writable: {e}")))?;
        self.delete(&probe).await
    }

    /// The markers, oldest epoch first.
    async fn markers(&self) -> Result<Vec<(u64, Path)>, ConnectorError> {
        let prefix = self.child(&[MARKER_DIR]);
        let mut markers: Vec<(u64, Path)> = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|meta| async move {
                let epoch = meta.location.filename().and_then(marker_epoch);
                Ok(epoch.map(|epoch| (epoch, meta.location)))
            })
            .try_collect()
            .await
            .map_err(|e| self.error(format!("could not list the epoch markers: {e}")))?;
        markers.sort();
        Ok(markers)
    }

    /// Deletes `path`; one that is already gone is fine.
    async fn delete(&self, path: &Path) -> Result<(), ConnectorError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("could not delete {path}: {e}"))),
        }
    }

    /// Deletes what earlier, failed attempts left: data files of epochs after the last
    /// marker (renamed, but their marker never written) and in-progress files of other runs.
    async fn remove_leftovers(&self, run: &str) -> Result<(), ConnectorError> {
        let last = self.markers().await?.last().map(|(epoch, _)| *epoch);
        let listing = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| self.error(format!("could not list the directory: {e}")))?;
        for meta in listing.objects {
            let epoch = meta.location.filename().and_then(part_epoch);
            if epoch.is_some_and(|epoch| last.is_none_or(|last| epoch > last)) {
                tracing::info!(sink = %self.sink, file = %meta.location, "deleting a file of an uncommitted epoch");
                self.delete(&meta.location).await?;
            }
        }
        let inprogress: Vec<Path> = self
            .store
            .list(Some(&self.child(&[INPROGRESS_DIR])))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| self.error(format!("could not list unfinished files: {e}")))?;
        for path in inprogress {
            let ours = path.filename().is_some_and(|n| n.starts_with(run));
            if !ours {
                self.delete(&path).await?;
            }
        }
        Ok(())
    }

    /// The last committed epoch and its metadata: the highest marker's.
    async fn last_committed(&self) -> Result<Option<(u64, String)>, ConnectorError> {
        let Some((epoch, path)) = self.markers().await?.pop() else {
            return Ok(None);
        };
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.error(format!("could not read {path}: {e}")))?
            .bytes()
            .await
            .map_err(|e| self.error(format!("could not read {path}: {e}")))?;
        let marker: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.error(format!("{path} is not a valid marker: {e}")))?;
        let metadata = marker
            .get("metadata")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| self.error(format!("{path} has no metadata")))?;
        Ok(Some((epoch, metadata.to_string())))
    }

    /// Deletes the markers before `epoch`'s; they are no longer needed once it is written.
    async fn prune_markers(&self, epoch: u64) {
        let markers = match self.markers().await {
            Ok(markers) => markers,
            Err(err) => {
                tracing::warn!(sink = %self.sink, error = %err, "could not prune epoch markers");
                return;
            }
        };
        for (_, path) in markers.iter().filter(|(e, _)| *e < epoch) {
            if let Err(err) = self.delete(path).await {
                tracing::warn!(sink = %self.sink, error = %err, "could not prune an epoch marker");
            }
        }
    }
}

impl ParquetSink {
    async fn open(
        config: SinkConfig,
        env: &SinkEnv,
        validate: bool,
    ) -> Result<Self, ConnectorError> {
        let settings = Settings::parse(&config.options)?;
        let path = settings.path.as_str();
        let resolved = resolve_location(path, &env.base_dir, &env.policy, false)
            .map_err(|e| path_error(path, e))?;
        if resolved.glob.is_some() {
            return Err(ConnectorError::InvalidOption {
                option: "path".to_string(),
                value: path.to_string(),
                reason: "a sink writes to a directory; glob patterns are for reading".to_string(),
            });
        }
        let store = build_object_store(&resolved, &settings.store_options, &env.policy)
            .map_err(|e| path_error(path, e))?;
        let properties = WriterProperties::builder()
            .set_compression(settings.compression)
            .set_max_row_group_row_count(Some(settings.max_file_rows.min(ROW_GROUP_ROWS_MAX)))
            .build();
        let root = Path::from_url_path(resolved.url.path()).map_err(|e| {
            ConnectorError::InvalidOption {
                option: "path".to_string(),
                value: path.to_string(),
                reason: e.to_string(),
            }
        })?;
        let sink = Self {
            dir: Directory {
                sink: config.name,
                store,
                root,
                display: resolved.display,
            },
            schema: config.schema,
            properties,
            max_file_rows: settings.max_file_rows,
            run: run_id(),
            next_file: 0,
            current: None,
            finished: Vec::new(),
            clean: false,
            order: EpochOrder::default(),
        };
        if validate {
            sink.dir.validate(&sink.run).await?;
        }
        Ok(sink)
    }
    /// A new in-progress file.
    fn start_file(&mut self) -> Result<OpenFile, ConnectorError> {
        let name = format!("{}-{:06}.parquet.inprogress", self.run, self.next_file);
        self.next_file += 1;
        let path = self.dir.child(&[INPROGRESS_DIR, &name]);
        let upload = BufWriter::new(self.dir.store.clone(), path.clone())
            .with_max_concurrency(UPLOAD_CONCURRENCY_MAX);
        let writer =
            AsyncArrowWriter::try_new(upload, self.schema.clone(), Some(self.properties.clone()))
                .map_err(|e| self.dir.error(format!("could not start {path}: {e}")))?;
        Ok(OpenFile {
            writer,
            path,
            rows: 0,
        })
    }

    /// Closes the file being written, if any, and adds it to the epoch's finished files.
    async fn finish_file(&mut self) -> Result<(), ConnectorError> {
        let Some(file) = self.current.take() else {
            return Ok(());
        };
        file.writer.close().await.map_err(|e| {
            self.dir
                .error(format!("could not finish {}: {e}", file.path))
        })?;
        self.finished.push(file.path);
        Ok(())
    }

    /// Publishes the epoch: final names for its files, then the marker.
    async fn publish(&mut self, epoch: u64, metadata: &str) -> Result<(), ConnectorError> {
        self.finish_file().await?;
        if !self.clean {
            self.dir.remove_leftovers(&self.run).await?;
            self.clean = true;
        }
        let mut files = Vec::with_capacity(self.finished.len());
        for (index, temp) in self.finished.iter().enumerate() {
            let name = part_name(epoch, index);
            let target = self.dir.child(&[&name]);
            self.dir.store.rename(temp, &target).await.map_err(|e| {
                self.dir
                    .error(format!("could not move {temp} to {target}: {e}"))
            })?;
            files.push(name);
        }
        let marker = serde_json::json!({
            "sink": self.dir.sink,
            "epoch": epoch,
            "metadata": metadata,
            "files": files,
        });
        let marker_path = self.dir.child(&[MARKER_DIR, &marker_name(epoch)]);
        self.dir
            .store
            .put(&marker_path, PutPayload::from(marker.to_string()))
            .await
            .map_err(|e| {
                self.dir
                    .error(format!("could not write {marker_path}: {e}"))
            })?;
        self.finished.clear();
        Ok(())
    }

    /// Drops the epoch's rows: the open upload is aborted, finished files deleted.
    async fn discard(&mut self) -> Result<(), ConnectorError> {
        if let Some(file) = self.current.take() {
            let mut upload = file.writer.into_inner();
            if let Err(err) = upload.abort().await {
                tracing::warn!(sink = %self.dir.sink, file = %file.path, error = %err, "could not abort an upload");
            }
        }
        let finished = std::mem::take(&mut self.finished);
        for path in &finished {
            self.dir.delete(path).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for ParquetSink {
    fn describe(&self) -> String {
        format!(
            "parquet files in {} (max {} rows per file)",
            self.dir.display, self.max_file_rows
        )
    }

    async fn committed(&mut self) -> Result<Option<(u64, String)>, ConnectorError> {
        self.dir.last_committed().await
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<(), ConnectorError> {
        let batch = conform_batch(&self.dir.sink, &self.schema, batch)?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            let mut file = match self.current.take() {
                Some(file) => file,
                None => self.start_file()?,
            };
            let rows = (self.max_file_rows - file.rows).min(batch.num_rows() - offset);
            let written = file.writer.write(&batch.slice(offset, rows)).await;
            let path = file.path.clone();
            file.rows += rows;
            let full = file.rows == self.max_file_rows;
            self.current = Some(file);
            written.map_err(|e| self.dir.error(format!("could not write {path}: {e}")))?;
            offset += rows;
            if full {
                self.finish_file().await?;
            }
        }
        Ok(())
    }

    async fn commit(&mut self, epoch: u64, metadata: &str) -> Result<(), ConnectorError> {
        self.order
            .check(epoch)
            .map_err(|message| self.dir.error(message))?;
        if let Err(err) = self.publish(epoch, metadata).await {
            // What was published of the epoch has no marker, so it is deleted as a leftover
            // before the next commit; the epoch's rows are dropped, to be replayed.
            self.clean = false;
            if let Err(discard) = self.discard().await {
                tracing::warn!(sink = %self.dir.sink, error = %discard, "could not discard unfinished files");
            }
            return Err(err);
        }
        self.order.record(epoch);
        self.dir.prune_markers(epoch).await;
        Ok(())
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        self.discard().await
    }
}

#[cfg(test)]
mod tests;
