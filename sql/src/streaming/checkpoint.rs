//! Checkpoint files of a job, under `<data dir>/streams/<job>/`.
//!
//! A checkpoint is: the view rows emitted since the previous checkpoint
//! (`rows-<epoch>.arrow`), the aggregate state (`state-<epoch>.arrow`), and `manifest.json`,
//! which lists the row files and the state file and holds the read positions and the
//! watermark. Data files are written and synced first; the manifest is written to a temporary
//! file, synced and renamed over the old one, so a crash at any moment leaves the previous
//! checkpoint or the new one, whole. Files the current manifest does not list are leftovers
//! and are deleted.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ErrorKind};

const MANIFEST: &str = "manifest.json";

/// What a checkpoint records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub epoch: u64,
    /// Next offset to read, per partition.
    pub positions: BTreeMap<i32, i64>,
    /// Largest event time seen, per partition (ns).
    pub partition_max_ns: BTreeMap<i32, i64>,
    pub watermark_ns: Option<i64>,
    pub events_in: u64,
    pub late_rows: u64,
    /// Files of emitted rows, in order.
    pub segments: Vec<String>,
    pub state_file: Option<String>,
    pub written_at_ms: i64,
}

fn io_error(what: &str, path: &Path, err: impl std::fmt::Display) -> EngineError {
    EngineError::new(
        ErrorKind::Io,
        format!("could not {what} {}: {err}", path.display()),
    )
}

/// The manifest in `dir`, if a checkpoint was ever written.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>, EngineError> {
    let path = dir.join(MANIFEST);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_error("parse checkpoint manifest", &path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", &path, e)),
    }
}

/// Writes `manifest` atomically (temporary file, sync, rename, sync of the directory).
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), EngineError> {
    fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
    let path = dir.join(MANIFEST);
    let temp = dir.join(format!("{MANIFEST}.tmp"));
    let bytes = serde_json::to_vec_pretty(manifest)
        .map_err(|e| io_error("encode checkpoint manifest", &path, e))?;
    let mut file = File::create(&temp).map_err(|e| io_error("create", &temp, e))?;
    file.write_all(&bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| io_error("write", &temp, e))?;
    fs::rename(&temp, &path).map_err(|e| io_error("rename", &temp, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `batches` to an Arrow IPC file and syncs it.
pub fn write_batches(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), EngineError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
    }
    let file = File::create(path).map_err(|e| io_error("create", path, e))?;
    let mut writer = FileWriter::try_new(file, schema).map_err(|e| io_error("write", path, e))?;
    for batch in batches {
        writer
            .write(batch)
            .map_err(|e| io_error("write", path, e))?;
    }
    writer.finish().map_err(|e| io_error("write", path, e))?;
    writer
        .get_ref()
        .sync_all()
        .map_err(|e| io_error("sync", path, e))?;
    Ok(())
}

/// Reads an Arrow IPC file.
pub fn read_batches(path: &Path) -> Result<Vec<RecordBatch>, EngineError> {
    let file = File::open(path).map_err(|e| io_error("open checkpoint file", path, e))?;
    let reader = FileReader::try_new(file, None).map_err(|e| io_error("read", path, e))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_error("read", path, e))
}

/// Deletes data files `manifest` does not list (left by a checkpoint that did not finish, or
/// replaced by a newer one).
pub fn remove_unlisted(dir: &Path, manifest: &Manifest) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let listed = name == MANIFEST
            || manifest.segments.contains(&name)
            || manifest.state_file.as_deref() == Some(name.as_str());
        if !listed && name.ends_with(".arrow") {
            let _ = fs::remove_file(entry.path());
        }
    }
}
