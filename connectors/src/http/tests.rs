//! The http source on a real directory: validation, durability (a simulated power failure),
//! group commit, recovery of a torn write, a full log, retention.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use futures::TryStreamExt;

use super::*;
use crate::source::{Source, SourceConfig, SourceConnector};

fn config(dir: &Path, options: &[(&str, &str)]) -> SourceConfig {
    SourceConfig {
        name: "public.clicks".to_string(),
        schema: Some(Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("page", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("_offset", DataType::Int64, true),
            Field::new(
                "_timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]))),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        state: BTreeMap::new(),
        storage_dir: Some(dir.join("public.clicks")),
    }
}

async fn open(dir: &Path, options: &[(&str, &str)], validate: bool) -> Arc<HttpSource> {
    Arc::new(build_source(config(dir, options), validate).await.unwrap())
}

async fn post(
    source: &HttpSource,
    body: &str,
    format: BodyFormat,
) -> Result<Accepted, IngestError> {
    Ingest::ingest(source, Bytes::from(body.to_string()), format).await
}

/// Every (user_id, page, _offset) in the log.
async fn read_all(source: &HttpSource) -> Vec<(i64, String, i64)> {
    let mut rows = Vec::new();
    for split in source.snapshot().await.unwrap() {
        let batches: Vec<_> = source
            .read(split, Some(vec![0, 1, 3]), 7)
            .try_collect()
            .await
            .unwrap();
        for batch in batches {
            assert!(batch.num_rows() <= 7, "batches respect batch_rows");
            let users = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let pages = batch
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let offsets = batch
                .column(2)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            for i in 0..batch.num_rows() {
                rows.push((users.value(i), pages.value(i).to_string(), offsets.value(i)));
            }
        }
    }
    rows
}

fn event(i: i64) -> String {
    format!(
        r#"{{"user_id": {i}, "page": "/p/{i}", "ts": "2026-11-01T10:00:{:02}Z"}}"#,
        i % 60
    )
}

#[test]
fn bodies_split_into_events() {
    let one = split_events(br#" {"a": 1} "#, BodyFormat::Json).unwrap();
    assert_eq!(one, vec![br#"{"a": 1}"#.as_slice()]);
    let array = split_events(br#"[ {"a": [1, {"b": "]"}]} ,{"a":2}]"#, BodyFormat::Json).unwrap();
    assert_eq!(array.len(), 2);
    assert_eq!(array[1], br#"{"a":2}"#.as_slice());
    assert!(split_events(b"[]", BodyFormat::Json).unwrap().is_empty());
    let lines = split_events(b"{\"a\":1}\r\n\n  {\"a\":2}\n", BodyFormat::Ndjson).unwrap();
    assert_eq!(
        lines,
        vec![b"{\"a\":1}".as_slice(), b"  {\"a\":2}".as_slice()]
    );

    let index_of = |body: &[u8], format| match split_events(body, format) {
        Err(IngestError::Invalid { errors }) => errors[0].index,
        other => panic!("expected a refused event, got {other:?}"),
    };
    assert_eq!(index_of(br#"[{"a":1}, 5]"#, BodyFormat::Json), 1);
    assert_eq!(index_of(br#"[{"a":1}, {"a": }]"#, BodyFormat::Json), 1);
    assert_eq!(index_of(br#"[{"a":1} {"a":2}]"#, BodyFormat::Json), 0);
    assert_eq!(index_of(b"{\"a\":1}\n[1]\n", BodyFormat::Ndjson), 1);
    assert!(matches!(
        split_events(b"  ", BodyFormat::Json),
        Err(IngestError::Body(_))
    ));
    assert!(matches!(
        split_events(b"42", BodyFormat::Json),
        Err(IngestError::Body(_))
    ));
    assert!(matches!(
        split_events(br#"[{"a":1}] x"#, BodyFormat::Json),
        Err(IngestError::Body(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_are_read_back_with_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), &[], true).await;
    let dynamic: Arc<dyn Source> = source.clone();
    assert!(
        dynamic.ingest().is_some(),
        "the engine finds the ingest side through dyn Source"
    );
    assert!(source.snapshot().await.unwrap().is_empty());
    let accepted = post(&source, &event(0), BodyFormat::Json).await.unwrap();
    assert_eq!(
        accepted,
        Accepted {
            events: 1,
            first_offset: 0
        }
    );
    let array = format!("[{}]", (1..=10).map(event).collect::<Vec<_>>().join(","));
    let accepted = post(&source, &array, BodyFormat::Json).await.unwrap();
    assert_eq!(
        accepted,
        Accepted {
            events: 10,
            first_offset: 1
        }
    );
    let lines: String = (11..20).map(|i| event(i) + "\n").collect();
    let accepted = post(&source, &lines, BodyFormat::Ndjson).await.unwrap();
    assert_eq!(
        accepted,
        Accepted {
            events: 9,
            first_offset: 11
        }
    );

    let rows = read_all(&source).await;
    let expected: Vec<(i64, String, i64)> = (0..20).map(|i| (i, format!("/p/{i}"), i)).collect();
    assert_eq!(rows, expected);

    // A split in the middle of frames reads exactly its offsets.
    let batches: Vec<_> = source
        .read(
            Split {
                partition: 0,
                start: 5,
                end: 13,
            },
            Some(vec![3]),
            100,
        )
        .try_collect()
        .await
        .unwrap();
    let batch = concat_batches(&batches[0].schema(), &batches).unwrap();
    let offsets = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(offsets.values().to_vec(), (5..13).collect::<Vec<_>>());

    // Reopened (a restart), the same events at the same offsets.
    drop(source);
    let source = open(dir.path(), &[], false).await;
    assert_eq!(read_all(&source).await, expected);
    let accepted = post(&source, &event(20), BodyFormat::Json).await.unwrap();
    assert_eq!(accepted.first_offset, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_event_refuses_the_whole_request_naming_index_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), &[], true).await;
    post(&source, &event(0), BodyFormat::Json).await.unwrap();
    let body = format!(
        "[{}, {}, {{\"user_id\": \"abc\", \"page\": \"/x\"}}, {}]",
        event(1),
        event(2),
        event(3)
    );
    let Err(IngestError::Invalid { errors }) = post(&source, &body, BodyFormat::Json).await else {
        panic!("a wrong type must be refused");
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].index, 2);
    assert_eq!(errors[0].field.as_deref(), Some("user_id"));
    assert!(
        errors[0].message.contains("BIGINT"),
        "{}",
        errors[0].message
    );

    let lines = format!("{}\n{{\"user_id\": 5, \"ts\": \"yesterday\"}}\n", event(4));
    let Err(IngestError::Invalid { errors }) = post(&source, &lines, BodyFormat::Ndjson).await
    else {
        panic!("a bad timestamp must be refused");
    };
    assert_eq!(
        (errors[0].index, errors[0].field.as_deref()),
        (1, Some("ts"))
    );

    // Nothing of either request was stored.
    assert_eq!(read_all(&source).await.len(), 1);
    assert_eq!(source.positions().await.unwrap()[0].end, 1);
}

/// A power failure keeps what was synced and may lose the rest. Every acknowledged event
/// must survive it: this fails if acknowledging stops waiting for the sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_a_simulated_power_failure() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), &[], true).await;
    let mut acknowledged = 0;
    for i in 0..30 {
        let accepted = post(&source, &event(i), BodyFormat::Json).await.unwrap();
        acknowledged = accepted.first_offset + 1;
    }
    let log = dir.path().join("public.clicks").join("log");
    let (active, synced) = source.log.synced();
    drop(source);
    // What the disk holds after the power failure: the synced prefix of the active segment.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap();
    file.set_len(synced).unwrap();
    drop(file);
    assert!(active.starts_with(&log));
    let source = open(dir.path(), &[], false).await;
    assert_eq!(source.positions().await.unwrap()[0].end, acknowledged);
    assert_eq!(read_all(&source).await.len() as i64, acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_syncs_and_get_distinct_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), &[], true).await;
    let requests = 200;
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            let source = source.clone();
            tokio::spawn(async move { post(&source, &event(i), BodyFormat::Json).await.unwrap() })
        })
        .collect();
    let mut offsets = Vec::new();
    for task in tasks {
        offsets.push(task.await.unwrap().first_offset);
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..requests).collect::<Vec<_>>());
    let syncs = source.log.syncs();
    assert!(
        syncs < requests as u64,
        "{requests} concurrent requests took {syncs} syncs"
    );
    assert_eq!(read_all(&source).await.len() as i64, requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_at_the_end_is_cut_off_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), &[], true).await;
    for i in 0..3 {
        post(&source, &event(i), BodyFormat::Json).await.unwrap();
    }
    let (active, synced) = source.log.synced();
    drop(source);
    // Half a frame, as a crash during a write leaves it.
    let mut bytes = std::fs::read(&active).unwrap();
    let first_frame = bytes.clone();
    bytes.extend_from_slice(&first_frame[..40]);
    std::fs::write(&active, &bytes).unwrap();
    let source = open(dir.path(), &[], false).await;
    assert_eq!(std::fs::metadata(&active).unwrap().len(), synced);
    post(&source, &event(3), BodyFormat::Json).await.unwrap();
    let rows = read_all(&source).await;
    assert_eq!(
        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_refuses_with_a_retry_time_and_retention_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = [
        ("max_log_bytes", "16 KiB"),
        ("segment_bytes", "4 KiB"),
        ("retention", "1 day"),
    ];
    let source = open(dir.path(), &options, true).await;
    let mut stored = 0;
    let full = loop {
        match post(&source, &event(stored), BodyFormat::Json).await {
            Ok(_) => stored += 1,
            Err(err) => break err,
        }
        assert!(stored < 10_000, "the log never filled");
    };
    let IngestError::LogFull { retry_after_s, .. } = full else {
        panic!("expected a full log, got {full:?}");
    };
    assert!((1..=3600).contains(&retry_after_s));
    assert_eq!(read_all(&source).await.len() as i64, stored);
    let big = format!("[{}]", (0..2000).map(event).collect::<Vec<_>>().join(","));
    assert!(matches!(
        post(&source, &big, BodyFormat::Json).await,
        Err(IngestError::TooLarge { .. })
    ));
    drop(source);

    // With a short retention, closed segments go and the log takes events again.
    let options = [
        ("max_log_bytes", "16 KiB"),
        ("segment_bytes", "4 KiB"),
        ("retention", "1 ms"),
    ];
    let source = open(dir.path(), &options, false).await;
    let accepted = post(&source, &event(0), BodyFormat::Json).await.unwrap();
    assert_eq!(accepted.first_offset, stored);
    let split = source.positions().await.unwrap()[0];
    assert!(
        split.start > 0,
        "retention deleted the oldest segments: {split:?}"
    );
    assert_eq!(split.end, stored + 1);
    let rows = read_all(&source).await;
    assert_eq!(rows.first().map(|r| r.2), Some(split.start));
    assert_eq!(rows.len() as i64, split.end - split.start);
}

#[tokio::test]
async fn options_and_columns_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |options: &'static [(&'static str, &'static str)]| {
        let config = config(dir.path(), options);
        async move {
            HttpConnector
                .create(config, true)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    assert!(bad(&[("max_log_bytes", "lots")])
        .await
        .contains("max_log_bytes"));
    assert!(bad(&[("retention", "forever")]).await.contains("retention"));
    assert!(
        bad(&[("max_log_bytes", "1 MiB"), ("segment_bytes", "1 MiB")])
            .await
            .contains("half")
    );
    assert!(bad(&[("topic", "x")]).await.contains("'topic'"));
    let mut config = config(dir.path(), &[]);
    config.schema = Some(Arc::new(Schema::new(vec![Field::new(
        "_offset",
        DataType::Utf8,
        true,
    )])));
    let err = HttpConnector
        .create(config, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("_offset") && err.contains("BIGINT"), "{err}");
}
