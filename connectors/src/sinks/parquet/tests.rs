//! The Parquet sink on the local file system, in a temporary allowed root.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use crate::files::PathPolicy;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

/// Rows `first..first + count`; every fourth name is NULL.
fn rows(first: i64, count: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + count).collect();
    let names: Vec<Option<String>> = ids
        .iter()
        .map(|id| (id % 4 != 0).then(|| format!("n{id}")))
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap()
}

struct Fixture {
    root: tempfile::TempDir,
    env: SinkEnv,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let policy = PathPolicy::new([root.path().to_path_buf()]).unwrap();
        let env = SinkEnv::new(Arc::new(policy), root.path().to_path_buf());
        Self { root, env }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("out")
    }

    fn config(&self, extra: &[(&str, &str)]) -> SinkConfig {
        let mut options: BTreeMap<String, String> =
            BTreeMap::from([("path".to_string(), self.dir().display().to_string())]);
        options.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        SinkConfig {
            name: "lake".to_string(),
            schema: schema(),
            options,
        }
    }

    async fn open(&self, extra: &[(&str, &str)], validate: bool) -> ParquetSink {
        ParquetSink::open(self.config(extra), &self.env, validate)
            .await
            .unwrap()
    }

    /// The names of the files directly in the sink's directory, sorted.
    fn files(&self) -> Vec<String> {
        names_in(&self.dir())
    }
}

fn names_in(dir: &FsPath) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn read_parquet(path: &FsPath) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    concat_batches(&schema(), &batches).unwrap()
}

/// Every committed row, file by file in name order.
fn read_all(dir: &FsPath) -> RecordBatch {
    let batches: Vec<RecordBatch> = names_in(dir)
        .iter()
        .filter(|n| n.ends_with(".parquet"))
        .map(|n| read_parquet(&dir.join(n)))
        .collect();
    concat_batches(&schema(), &batches).unwrap()
}

fn expected(ranges: &[(i64, i64)]) -> RecordBatch {
    let batches: Vec<RecordBatch> = ranges.iter().map(|(f, c)| rows(*f, *c)).collect();
    concat_batches(&schema(), &batches).unwrap()
}

#[tokio::test]
async fn two_epochs_are_read_back_as_written_and_recorded_in_the_directory() {
    let fixture = Fixture::new();
    let mut sink = fixture.open(&[], true).await;
    assert_eq!(sink.committed().await.unwrap(), None);
    sink.write(&rows(0, 3)).await.unwrap();
    sink.write(&rows(3, 4)).await.unwrap();
    assert!(
        fixture.files().is_empty(),
        "nothing is published before the commit: {:?}",
        fixture.files()
    );
    sink.commit(1, r#"{"offsets":[7]}"#).await.unwrap();
    sink.write(&rows(7, 5)).await.unwrap();
    sink.commit(2, r#"{"offsets":[12]}"#).await.unwrap();
    assert_eq!(
        fixture.files(),
        ["part-0000000001-000.parquet", "part-0000000002-000.parquet"]
    );
    assert_eq!(read_all(&fixture.dir()), expected(&[(0, 12)]));
    assert_eq!(
        read_parquet(&fixture.dir().join("part-0000000002-000.parquet")),
        rows(7, 5)
    );
    // Only the newest marker is kept.
    assert_eq!(
        names_in(&fixture.dir().join("_freshet")),
        ["epoch-0000000002.json"]
    );

    // A restarted sink reads the record from the directory.
    let mut restarted = fixture.open(&[], false).await;
    assert_eq!(
        restarted.committed().await.unwrap(),
        Some((2, r#"{"offsets":[12]}"#.to_string()))
    );
    // An empty epoch records its metadata and writes no data file.
    restarted.commit(3, "empty").await.unwrap();
    assert_eq!(fixture.files().len(), 2);
    assert_eq!(
        restarted.committed().await.unwrap(),
        Some((3, "empty".to_string()))
    );
    let err = restarted.commit(3, "again").await.unwrap_err().to_string();
    assert!(err.contains("epoch 3") && err.contains("'lake'"), "{err}");
}

#[tokio::test]
async fn max_file_rows_splits_an_epoch_into_files_in_row_order() {
    let fixture = Fixture::new();
    let mut sink = fixture.open(&[("max_file_rows", "4")], true).await;
    sink.write(&rows(0, 3)).await.unwrap();
    sink.write(&rows(3, 7)).await.unwrap();
    sink.commit(1, "").await.unwrap();
    assert_eq!(
        fixture.files(),
        [
            "part-0000000001-000.parquet",
            "part-0000000001-001.parquet",
            "part-0000000001-002.parquet"
        ]
    );
    let counts: Vec<usize> = fixture
        .files()
        .iter()
        .map(|n| read_parquet(&fixture.dir().join(n)).num_rows())
        .collect();
    assert_eq!(counts, [4, 4, 2]);
    assert_eq!(read_all(&fixture.dir()), expected(&[(0, 10)]));
}

#[tokio::test]
async fn replaying_an_epoch_after_a_crash_leaves_no_duplicates() {
    let fixture = Fixture::new();
    let mut sink = fixture.open(&[("max_file_rows", "2")], true).await;
    sink.write(&rows(0, 5)).await.unwrap();
    sink.commit(1, "one").await.unwrap();
    // Epoch 2 is being written when the process dies: full files already sit in
    // `_inprogress/`, and an earlier attempt got as far as renaming a fourth file into place
    // without writing the marker (the replay writes three, so it would stay a duplicate).
    sink.write(&rows(5, 5)).await.unwrap();
    let inprogress = fixture.dir().join("_inprogress");
    assert_eq!(
        names_in(&inprogress).len(),
        2,
        "{:?}",
        names_in(&inprogress)
    );
    drop(sink);
    std::fs::copy(
        fixture.dir().join("part-0000000001-000.parquet"),
        fixture.dir().join("part-0000000002-003.parquet"),
    )
    .unwrap();

    let mut restarted = fixture.open(&[("max_file_rows", "2")], false).await;
    assert_eq!(
        restarted.committed().await.unwrap(),
        Some((1, "one".to_string()))
    );
    restarted.write(&rows(5, 5)).await.unwrap();
    restarted.commit(2, "two").await.unwrap();
    assert_eq!(read_all(&fixture.dir()), expected(&[(0, 10)]));
    assert!(
        names_in(&inprogress).is_empty(),
        "{:?}",
        names_in(&inprogress)
    );
    assert_eq!(
        restarted.committed().await.unwrap(),
        Some((2, "two".to_string()))
    );
}

#[tokio::test]
async fn aborted_rows_are_never_published() {
    let fixture = Fixture::new();
    let mut sink = fixture.open(&[("max_file_rows", "3")], true).await;
    sink.write(&rows(0, 8)).await.unwrap();
    sink.abort().await.unwrap();
    sink.commit(1, "nothing").await.unwrap();
    assert!(fixture.files().is_empty(), "{:?}", fixture.files());
    assert!(names_in(&fixture.dir().join("_inprogress")).is_empty());
    sink.write(&rows(8, 2)).await.unwrap();
    sink.commit(2, "two rows").await.unwrap();
    assert_eq!(read_all(&fixture.dir()), expected(&[(8, 2)]));
}

#[tokio::test]
async fn datafusion_lists_only_committed_files() {
    let fixture = Fixture::new();
    let mut sink = fixture
        .open(&[("max_file_rows", "4"), ("compression", "zstd")], true)
        .await;
    sink.write(&rows(0, 6)).await.unwrap();
    sink.commit(1, "m").await.unwrap();
    // Uncommitted rows: one finished in-progress file and one open upload.
    sink.write(&rows(6, 5)).await.unwrap();

    let ctx = datafusion::prelude::SessionContext::new();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE lake STORED AS PARQUET LOCATION '{}/'",
        fixture.dir().display()
    ))
    .await
    .unwrap();
    let batches = ctx
        .sql("SELECT count(*) AS n, sum(id) AS total FROM lake")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    let total = batches[0]
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!((n, total), (6, 15));
}

#[tokio::test]
async fn options_and_paths_are_checked_at_create() {
    let fixture = Fixture::new();
    let create = |config: SinkConfig| async {
        ParquetSinkConnector
            .create(config, &fixture.env, true)
            .await
            .unwrap_err()
            .to_string()
    };
    let err = create(fixture.config(&[("max_rows_per_file", "10")])).await;
    assert!(
        err.contains("'max_rows_per_file'") && err.contains("max_file_rows"),
        "{err}"
    );
    let err = create(fixture.config(&[("compression", "lz5")])).await;
    assert!(err.contains("'lz5'") && err.contains("zstd"), "{err}");
    let err = create(fixture.config(&[("max_file_rows", "0")])).await;
    assert!(err.contains("max_file_rows"), "{err}");
    let err = create(fixture.config(&[("aws.region", "eu-west-1")])).await;
    assert!(err.contains("'aws.region'"), "{err}");

    let mut outside = fixture.config(&[]);
    outside
        .options
        .insert("path".to_string(), "/etc/freshet-sink".to_string());
    let err = create(outside).await;
    assert!(
        err.contains("/etc/freshet-sink") && err.contains("permission denied"),
        "{err}"
    );

    // The runtime's options are accepted; a relative path is under `base_dir`.
    let mut relative = fixture.config(&[("rollover_interval", "1m")]);
    relative
        .options
        .insert("path".to_string(), "relative/out".to_string());
    let mut sink = ParquetSinkConnector
        .create(relative, &fixture.env, true)
        .await
        .unwrap();
    sink.write(&rows(0, 1)).await.unwrap();
    sink.commit(1, "").await.unwrap();
    assert_eq!(
        names_in(&fixture.root.path().join("relative/out")),
        ["part-0000000001-000.parquet"]
    );

    // A directory that holds a sink's output is refused at CREATE SINK, not at restart.
    let mut first = fixture.open(&[], true).await;
    first.commit(5, "").await.unwrap();
    let err = create(fixture.config(&[])).await;
    assert!(
        err.contains("already holds") && err.contains("epoch 5"),
        "{err}"
    );
    fixture.open(&[], false).await;
}

#[test]
fn only_names_this_sink_writes_count_as_its_files() {
    assert_eq!(part_epoch(&part_name(42, 7)), Some(42));
    assert_eq!(part_epoch(&part_name(3, 1234)), Some(3));
    for foreign in [
        "part-00000-c000.snappy.parquet",
        "part-00000-5f0c2b9e.parquet",
        "part-42-000.parquet",
        "part-0000000042-.parquet",
        "part-0000000042-000.parquet.inprogress",
    ] {
        assert_eq!(part_epoch(foreign), None, "{foreign}");
    }
    assert_eq!(marker_epoch(&marker_name(9)), Some(9));
}
