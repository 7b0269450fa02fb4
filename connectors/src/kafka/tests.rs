//! The Kafka source against librdkafka's mock cluster (a real Kafka-protocol broker in-process).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use futures::TryStreamExt;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use super::KafkaConnector;
use crate::source::{ConnectorError, Source, SourceConfig, SourceConnector};

fn produce(brokers: &str, topic: &str, messages: &[(i32, &str)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (partition, payload) in messages {
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .partition(*partition)
                    .payload(*payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn config(brokers: &str, topic: &str, extra: &[(&str, &str)]) -> SourceConfig {
    let mut options: BTreeMap<String, String> = [("bootstrap_servers", brokers), ("topic", topic)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    options.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    SourceConfig {
        name: "clicks".to_string(),
        schema: Some(Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("action", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("_partition", DataType::Int32, true),
            Field::new("_offset", DataType::Int64, true),
        ]))),
        options,
        state: BTreeMap::new(),
        storage_dir: None,
    }
}

async fn read_all(
    source: &Arc<dyn Source>,
    projection: Option<Vec<usize>>,
) -> Vec<arrow::array::RecordBatch> {
    let mut batches = Vec::new();
    for split in source.snapshot().await.unwrap() {
        batches.extend(
            source
                .read(split, projection.clone(), 3)
                .try_collect::<Vec<_>>()
                .await
                .unwrap(),
        );
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_reads_every_partition_and_skips_malformed_messages() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("clicks", 2, 1).unwrap();
    produce(
        &brokers,
        "clicks",
        &[
            (
                0,
                r#"{"user_id": 1, "action": "view", "ts": "2026-11-01T10:00:00Z"}"#,
            ),
            (0, r#"{"user_id": 2, "action": "buy", "ts": 1793527201000}"#),
            (1, "this is not json"),
            (
                1,
                r#"{"user_id": 3, "action": "view", "ts": "2026-11-01T10:00:02Z"}"#,
            ),
            (
                1,
                r#"{"user_id": 4, "action": "cart", "ts": 1793527203000}"#,
            ),
        ],
    );
    let source = KafkaConnector
        .create(config(&brokers, "clicks", &[]), true)
        .await
        .unwrap();
    let batches = read_all(&source, None).await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 4);
    assert_eq!(
        source.counters().malformed_skipped.load(Ordering::Relaxed),
        1
    );
    assert!(source
        .counters()
        .last_error()
        .unwrap()
        .contains("partition 1 offset 0"));
    let mut users: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    users.sort();
    assert_eq!(users, vec![1, 2, 3, 4]);

    // Projection: only `action` and the metadata offset.
    let projected = read_all(&source, Some(vec![1, 4])).await;
    assert_eq!(projected[0].num_columns(), 2);
    let actions = projected
        .iter()
        .map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .len()
        })
        .sum::<usize>();
    assert_eq!(actions, 4);

    // on_error = 'fail' makes the bad message fatal.
    let strict = KafkaConnector
        .create(config(&brokers, "clicks", &[("on_error", "fail")]), true)
        .await
        .unwrap();
    let mut failed = false;
    for split in strict.snapshot().await.unwrap() {
        if let Err(ConnectorError::Malformed {
            partition, offset, ..
        }) = strict.read(split, None, 10).try_collect::<Vec<_>>().await
        {
            assert_eq!((partition, offset), (1, 0));
            failed = true;
        }
    }
    assert!(failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_starts_after_what_was_there_at_creation() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("events", 1, 1).unwrap();
    produce(&brokers, "events", &[(0, r#"{"user_id": 1}"#)]);
    let source = KafkaConnector
        .create(
            config(&brokers, "events", &[("start_offset", "latest")]),
            true,
        )
        .await
        .unwrap();
    assert!(read_all(&source, None)
        .await
        .iter()
        .all(|b| b.num_rows() == 0));
    produce(&brokers, "events", &[(0, r#"{"user_id": 2}"#)]);
    let batches = read_all(&source, None).await;
    let users: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(users, vec![2]);
    assert_eq!(source.state()["start_offsets"], "0:1");
    let offsets = batches[0]
        .column(4)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(offsets.value(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_topic_the_broker_and_the_option() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let err = KafkaConnector
        .create(config(&brokers, "nope", &[("timeout_ms", "3000")]), true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectorError::TopicNotFound { .. }) || err.to_string().contains("nope"),
        "{err}"
    );
    let err = KafkaConnector
        .create(config("127.0.0.1:1", "t", &[("timeout_ms", "1500")]), true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let err = KafkaConnector
        .create(config(&brokers, "t", &[("startoffset", "x")]), true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("'startoffset'"), "{err}");
}
