//! The persistent catalog: what was registered, written under the data directory.
//!
//! `catalog.json` lists every table, external table, view and schema in creation order. External
//! tables, views and schemas are stored as the statement that created them and replayed at
//! start-up; in-memory tables (`CREATE TABLE`, `CREATE TABLE … AS`, `INSERT`) also keep their rows
//! in an Arrow IPC file per table under `tables/`. Every write goes to a temporary file that is
//! synced and renamed over the old one, so a crash leaves either the old or the new catalog.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ErrorKind};

const CATALOG_FILE: &str = "catalog.json";
const TABLES_DIR: &str = "tables";
const FORMAT_VERSION: u32 = 1;

/// What a catalog entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// `CREATE EXTERNAL TABLE`: files on local disk, S3 or HDFS.
    ExternalTable,
    /// An in-memory table whose rows are kept in `tables/<id>.arrow`.
    Table,
    /// `CREATE VIEW`.
    View,
    /// `CREATE SCHEMA`.
    Schema,
    /// `CREATE SOURCE`: a Kafka topic or a generator.
    Source,
    /// `CREATE MATERIALIZED VIEW`: a continuous query whose rows and checkpoints live under
    /// `streams/<name>/`.
    MaterializedView,
    /// `CREATE SINK`: a job writing a view's or a source's rows to Kafka or Parquet files;
    /// its checkpoints live under `streams/<name>/`.
    Sink,
    /// `CREATE MODEL`: named `model:<name>`; the trained factors live under `models/<name>/`.
    Model,
}

impl EntryKind {
    /// How SHOW TABLES names the kind.
    pub fn label(self) -> &'static str {
        match self {
            EntryKind::ExternalTable => "external table",
            EntryKind::Table => "table",
            EntryKind::View => "view",
            EntryKind::Schema => "schema",
            EntryKind::Source => "source",
            EntryKind::MaterializedView => "materialized view",
            EntryKind::Sink => "sink",
            EntryKind::Model => "model",
        }
    }
}

/// One registered object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Unique, never reused; names the data file of an in-memory table.
    pub id: u64,
    /// `schema.name`, lower-case as the planner normalises it.
    pub name: String,
    pub kind: EntryKind,
    /// The statement to replay (external tables, views, schemas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The schema when created, so a table whose files vanished still describes its columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    /// Where an external table's data lives, for SHOW TABLES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The directory relative paths in `sql` were resolved against when it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    /// State a source fixed when it was created (start offsets, start time), so it reads the
    /// same data after a restart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogFile {
    version: u32,
    next_id: u64,
    entries: Vec<Entry>,
}

/// The catalog on disk. Not shared between processes; the engine serialises access to it.
#[derive(Debug)]
pub struct CatalogStore {
    dir: PathBuf,
    file: CatalogFile,
}

fn io_error(action: &str, path: &Path, err: impl std::fmt::Display) -> EngineError {
    EngineError::new(
        ErrorKind::Io,
        format!("could not {action} {}: {err}", path.display()),
    )
}

impl CatalogStore {
    /// Opens (or creates) the catalog in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, EngineError> {
        let tables = data_dir.join(TABLES_DIR);
        fs::create_dir_all(&tables).map_err(|e| io_error("create", &tables, e))?;
        let path = data_dir.join(CATALOG_FILE);
        let file = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<CatalogFile>(&bytes)
                .map_err(|e| io_error("parse the catalog", &path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogFile {
                version: FORMAT_VERSION,
                next_id: 1,
                entries: Vec::new(),
            },
            Err(e) => return Err(io_error("read", &path, e)),
        };
        if file.version > FORMAT_VERSION {
            return Err(EngineError::new(
                ErrorKind::Io,
                format!(
                    "{} was written by a newer Freshet (format {}, this one reads {})",
                    path.display(),
                    file.version,
                    FORMAT_VERSION
                ),
            ));
        }
        Ok(Self {
            dir: data_dir.to_path_buf(),
            file,
        })
    }

    /// Entries in creation order.
    pub fn entries(&self) -> &[Entry] {
        &self.file.entries
    }

    /// The entry named `name` (`schema.name`).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.file.entries.iter().find(|e| e.name == name)
    }

    /// Adds or replaces the entry called `entry.name`, assigning its id, and saves.
    pub fn upsert(&mut self, mut entry: Entry) -> Result<Entry, EngineError> {
        entry.id = self.file.next_id;
        self.file.next_id += 1;
        let old = self.file.entries.iter().position(|e| e.name == entry.name);
        let replaced = old.map(|i| self.file.entries.remove(i));
        self.file.entries.push(entry.clone());
        self.save()?;
        if let Some(old) = replaced {
            self.remove_data(&old);
        }
        Ok(entry)
    }

    /// Removes the entry called `name` (and its data), if any, and saves.
    pub fn remove(&mut self, name: &str) -> Result<(), EngineError> {
        let Some(index) = self.file.entries.iter().position(|e| e.name == name) else {
            return Ok(());
        };
        let old = self.file.entries.remove(index);
        self.save()?;
        self.remove_data(&old);
        Ok(())
    }

    /// Removes every entry whose name is in schema `schema` (for DROP SCHEMA … CASCADE).
    pub fn remove_schema(&mut self, schema: &str) -> Result<(), EngineError> {
        let prefix = format!("{schema}.");
        let (gone, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.file.entries)
            .into_iter()
            .partition(|e| {
                e.name.starts_with(&prefix) || (e.kind == EntryKind::Schema && e.name == schema)
            });
        self.file.entries = kept;
        self.save()?;
        for old in gone {
            self.remove_data(&old);
        }
        Ok(())
    }

    fn data_path(&self, id: u64) -> PathBuf {
        self.dir.join(TABLES_DIR).join(format!("{id}.arrow"))
    }

    fn remove_data(&self, entry: &Entry) {
        if entry.kind == EntryKind::Table {
            let path = self.data_path(entry.id);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove table data");
                }
            }
        }
    }

    fn save(&self) -> Result<(), EngineError> {
        let path = self.dir.join(CATALOG_FILE);
        let bytes = serde_json::to_vec_pretty(&self.file)
            .map_err(|e| EngineError::internal(format!("could not encode the catalog: {e}")))?;
        write_atomically(&path, |file| file.write_all(&bytes))
    }

    /// Writes the rows of in-memory table `entry` (replacing what was there).
    pub fn write_table_data(
        &self,
        entry: &Entry,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(), EngineError> {
        let path = self.data_path(entry.id);
        write_atomically(&path, |file| {
            let mut writer = FileWriter::try_new(file, schema).map_err(std::io::Error::other)?;
            for batch in batches {
                writer.write(batch).map_err(std::io::Error::other)?;
            }
            writer.finish().map_err(std::io::Error::other)
        })
    }

    /// Reads the rows of in-memory table `entry`.
    pub fn read_table_data(
        &self,
        entry: &Entry,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), EngineError> {
        let path = self.data_path(entry.id);
        let file = File::open(&path).map_err(|e| io_error("open", &path, e))?;
        let reader = FileReader::try_new(file, None).map_err(|e| io_error("read", &path, e))?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io_error("read", &path, e))?;
        Ok((schema, batches))
    }
}

/// Writes `path` through a synced temporary file renamed into place, then syncs the directory,
/// so readers (and a restart after a crash) see the old or the new content, never a torn file.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), EngineError> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut file = File::create(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok::<(), std::io::Error>(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error("write", path, e)
    })
}

/// A shared, cheaply cloned schema for entries.
pub fn schema_ref(schema: &Schema) -> SchemaRef {
    Arc::new(schema.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};

    fn entry(name: &str, kind: EntryKind) -> Entry {
        Entry {
            id: 0,
            name: name.to_string(),
            kind,
            sql: Some(format!("-- {name}")),
            schema: Some(Schema::new(vec![Field::new("a", DataType::Int64, true)])),
            location: None,
            base_dir: None,
            state: BTreeMap::new(),
        }
    }

    #[test]
    fn entries_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CatalogStore::open(dir.path()).unwrap();
        store
            .upsert(entry("public.a", EntryKind::ExternalTable))
            .unwrap();
        store.upsert(entry("public.b", EntryKind::View)).unwrap();
        store
            .upsert(entry("public.a", EntryKind::ExternalTable))
            .unwrap();
        store.remove("public.b").unwrap();
        let reopened = CatalogStore::open(dir.path()).unwrap();
        let names: Vec<_> = reopened.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["public.a"]);
        assert_eq!(reopened.entries()[0].id, 3, "replacing assigns a new id");
        assert_eq!(
            reopened.entries()[0]
                .schema
                .as_ref()
                .unwrap()
                .field(0)
                .name(),
            "a"
        );
    }

    #[test]
    fn table_data_round_trips_and_is_removed_with_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CatalogStore::open(dir.path()).unwrap();
        let e = store.upsert(entry("public.t", EntryKind::Table)).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        store.write_table_data(&e, &schema, &[batch]).unwrap();
        let (_, batches) = store.read_table_data(&e).unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        store.remove("public.t").unwrap();
        assert!(store.read_table_data(&e).is_err());
    }
}
