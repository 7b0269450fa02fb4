//! The Kafka sink against librdkafka's mock cluster (a Kafka-protocol broker in-process).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Value};

use super::*;
use crate::files::PathPolicy;

/// Rows `first..first + count`: id, a name (NULL for every third id), a timestamp.
fn rows(first: i64, count: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + count).collect();
    let names: Vec<Option<String>> = ids
        .iter()
        .map(|id| (id % 3 != 0).then(|| format!("user \"{id}\"\n")))
        .collect();
    let times: Vec<i64> = ids
        .iter()
        .map(|id| 1_793_527_200_000 + id * 1_500)
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(names)),
            Arc::new(TimestampMillisecondArray::from(times)),
        ],
    )
    .unwrap()
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

/// What a consumer should see for row `id`, built independently of the sink's encoder.
fn expected(id: i64) -> Value {
    let ms = 1_793_527_200_000 + id * 1_500;
    let time = arrow::temporal_conversions::timestamp_ms_to_datetime(ms).unwrap();
    let fraction = if ms % 1000 == 0 {
        String::new()
    } else {
        format!(".{:03}", ms % 1000)
    };
    json!({
        "id": id,
        "name": if id % 3 == 0 { Value::Null } else { json!(format!("user \"{id}\"\n")) },
        "ts": format!("{}{fraction}Z", time.format("%Y-%m-%dT%H:%M:%S")),
    })
}

fn config(brokers: &str, topic: &str, extra: &[(&str, &str)]) -> SinkConfig {
    let mut options: BTreeMap<String, String> = [("bootstrap_servers", brokers), ("topic", topic)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    options.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    SinkConfig {
        name: "out".to_string(),
        schema: schema(),
        options,
    }
}

fn env() -> (tempfile::TempDir, SinkEnv) {
    let dir = tempfile::tempdir().unwrap();
    let policy = PathPolicy::new([dir.path().to_path_buf()]).unwrap();
    let env = SinkEnv::new(Arc::new(policy), dir.path().to_path_buf());
    (dir, env)
}

async fn create(config: SinkConfig, validate: bool) -> Result<Box<dyn Sink>, ConnectorError> {
    let (_dir, env) = env();
    KafkaSinkConnector.create(config, &env, validate).await
}

/// Every message of the topic visible at `isolation` (key, JSON payload), read from the
/// beginning of each partition to its end.
fn consume(brokers: &str, topic: &str, isolation: &str) -> Vec<(Option<String>, Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut ended = 0;
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ended < partitions {
        assert!(
            Instant::now() < deadline,
            "the topic was not read to its end"
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(err)) => panic!("consuming failed: {err}"),
            Some(Ok(message)) => {
                let key = message
                    .key()
                    .map(|k| String::from_utf8(k.to_vec()).unwrap());
                let payload: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
                messages.push((key, payload));
            }
        }
    }
    messages
}

fn payload_ids(messages: &[(Option<String>, Value)]) -> Vec<i64> {
    let mut ids: Vec<i64> = messages
        .iter()
        .map(|(_, v)| v["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_delivers_every_row_as_json_and_records_the_epoch() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("out", 2, 1).unwrap();
    let mut sink = create(config(&brokers, "out", &[("key", "id")]), true)
        .await
        .unwrap();
    assert_eq!(sink.committed().await.unwrap(), None);
    sink.write(&rows(0, 5)).await.unwrap();
    sink.write(&rows(5, 2)).await.unwrap();
    sink.commit(1, r#"{"offsets": [1]}"#).await.unwrap();
    sink.write(&rows(7, 4)).await.unwrap();
    sink.commit(2, r#"{"offsets": [2]}"#).await.unwrap();
    // An epoch without rows still moves the record.
    sink.commit(3, r#"{"offsets": [3]}"#).await.unwrap();
    drop(sink);

    let mut messages = consume(&brokers, "out", "read_uncommitted");
    messages.sort_by_key(|(_, v)| v["id"].as_i64());
    let want: Vec<(Option<String>, Value)> = (0..11)
        .map(|id| (Some(id.to_string()), expected(id)))
        .collect();
    assert_eq!(messages, want);

    // A restarted sink reads the record from the broker.
    let mut again = create(config(&brokers, "out", &[("key", "id")]), false)
        .await
        .unwrap();
    assert_eq!(
        again.committed().await.unwrap(),
        Some((3, r#"{"offsets": [3]}"#.to_string()))
    );
    again.commit(4, "").await.unwrap();
    let err = again.commit(4, "").await.unwrap_err().to_string();
    assert!(err.contains("epoch 4"), "{err}");
}

/// Exactly-once against librdkafka's mock cluster. The mock implements the client side of
/// transactions (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn
/// all succeed) but not the broker side: `rd_kafka_mock_handle_TxnOffsetCommit` validates the
/// request and stores nothing, `EndTxn` writes no control records, and Fetch reports no
/// aborted transactions with LastStableOffset = high-water mark. So what a read_committed
/// reader sees, and the record a transactional commit leaves, cannot be observed here; this
/// test covers the protocol sequence, the restart with the same transactional id, abort, and
/// every committed row reaching the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_commits_aborts_and_restarts_on_the_mock_cluster() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("out", 2, 3).unwrap();
    let brokers = cluster.bootstrap_servers();
    let options = [("exactly_once", "true"), ("timeout_ms", "20000")];
    let mut sink = KafkaSink::open(config(&brokers, "out", &options), true)
        .await
        .unwrap();
    assert!(sink.describe().contains("exactly-once"));
    sink.write(&rows(0, 6)).await.unwrap();
    sink.commit(1, "after epoch 1").await.unwrap();
    assert!(!sink.in_transaction, "a commit ends the transaction");
    sink.write(&rows(6, 5)).await.unwrap();
    assert!(sink.in_transaction, "a write opens the next one");
    // The rows of epoch 2 reach the broker inside a transaction that never commits.
    sink.producer.flush(Duration::from_secs(20)).unwrap();
    drop(sink);

    // The restart initialises transactions under the same id, which on a real broker aborts
    // the crashed producer's open transaction.
    let mut restarted = create(config(&brokers, "out", &options), false)
        .await
        .unwrap();
    // Not stored by the mock (see above); a real broker returns Some((1, "after epoch 1")).
    assert_eq!(restarted.committed().await.unwrap(), None);
    restarted.write(&rows(100, 3)).await.unwrap();
    restarted.abort().await.unwrap();
    restarted.abort().await.unwrap();
    restarted.write(&rows(6, 5)).await.unwrap();
    restarted.commit(2, "after epoch 2").await.unwrap();
    restarted.commit(3, "an empty epoch").await.unwrap();

    let log = consume(&brokers, "out", "read_committed");
    let ids = payload_ids(&log);
    for id in 0..11 {
        assert!(ids.contains(&id), "row {id} is missing from {ids:?}");
    }
    for (key, payload) in &log {
        assert_eq!(key, &None);
        assert_eq!(payload, &expected(payload["id"].as_i64().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_topic_the_broker_and_the_option() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let err = create(config(&brokers, "missing", &[("timeout_ms", "3000")]), true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("'missing'") && err.contains(&brokers), "{err}");

    cluster.create_topic("out", 1, 1).unwrap();
    for (options, named) in [
        (vec![("fromat", "json")], "'fromat'"),
        (vec![("format", "avro")], "'avro'"),
        (vec![("key", "nope")], "'nope'"),
        (vec![("exactly_once", "perhaps")], "'exactly_once'"),
    ] {
        let err = create(config(&brokers, "out", &options), true)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "{err}");
    }
    // The runtime's options are accepted and left to the runtime.
    create(
        config(&brokers, "out", &[("checkpoint_interval", "10s")]),
        true,
    )
    .await
    .unwrap();

    let mut sink = create(config(&brokers, "out", &[]), false).await.unwrap();
    assert!(sink.describe().contains("'out'") && sink.describe().contains(&brokers));
    let wrong =
        RecordBatch::try_from_iter([("id", Arc::new(StringArray::from(vec!["1"])) as ArrayRef)])
            .unwrap();
    let err = sink.write(&wrong).await.unwrap_err().to_string();
    assert!(err.contains("'out'"), "{err}");
}
