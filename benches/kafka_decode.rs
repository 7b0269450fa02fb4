//! Events per second decoded from Kafka into Arrow by one reader (one partition, one consumer
//! thread doing fetch + vectorised JSON decode), against librdkafka's in-process mock broker.
//!
//! Run: `cargo bench -p freshet-connectors --bench kafka_decode -- [EVENTS]`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use freshet_connectors::formats::{Format, PayloadDecoder};
use freshet_connectors::kafka::KafkaConnector;
use freshet_connectors::source::{SourceConfig, SourceConnector};
use futures::StreamExt;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

fn event(i: u64) -> String {
    // ~100 bytes, like a click event.
    format!(
        r#"{{"user_id":{},"item_id":{},"action":"{}","price":{}.{:02},"ts":{}}}"#,
        i % 100_000,
        (i * 7919) % 50_000,
        ["view", "cart", "buy"][(i % 3) as usize],
        i % 500,
        i % 100,
        1_793_527_200_000u64 + i * 3
    )
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, true),
        Field::new("item_id", DataType::Int64, true),
        Field::new("action", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]))
}

fn main() {
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let payloads: Vec<String> = (0..events).map(event).collect();
    let bytes: usize = payloads.iter().map(String::len).sum();

    // Decoding alone, one thread.
    let decoder = PayloadDecoder::new(Format::Json, schema()).expect("decoder");
    let started = Instant::now();
    for chunk in payloads.chunks(8192) {
        let messages: Vec<&[u8]> = chunk.iter().map(|p| p.as_bytes()).collect();
        let (batch, bad) = decoder.decode(&messages).expect("decode");
        assert!(bad.is_empty() && batch.num_rows() == chunk.len());
    }
    let decode_s = started.elapsed().as_secs_f64();

    // Fetch from the broker and decode, one partition after the other on one consumer thread.
    // librdkafka's mock broker keeps only the last ~50 000 messages of a partition, so the
    // events are spread over partitions of 40 000.
    let partitions = events.div_ceil(40_000).max(1) as i32;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("bench", partitions, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for (index, payload) in payloads.iter().enumerate() {
        while let Err((err, _)) = producer.send(
            BaseRecord::<(), str>::to("bench")
                .partition(index as i32 % partitions)
                .payload(payload),
        ) {
            producer.poll(Duration::from_millis(10));
            let _ = err;
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (rows, read_s) = runtime.block_on(async {
        let options: BTreeMap<String, String> =
            [("bootstrap_servers", brokers.as_str()), ("topic", "bench")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let config = SourceConfig {
            name: "bench".to_string(),
            schema: Some(schema()),
            options,
            state: BTreeMap::new(),
            storage_dir: None,
        };
        let source = KafkaConnector.create(config, true).await.expect("source");
        let splits = source.snapshot().await.expect("snapshot");
        let started = Instant::now();
        let mut rows = 0usize;
        for split in splits {
            let mut stream = source.read(split, None, 8192);
            while let Some(batch) = stream.next().await {
                rows += batch.expect("batch").num_rows();
            }
        }
        (rows, started.elapsed().as_secs_f64())
    });
    assert_eq!(rows as u64, events);
    let mb = bytes as f64 / 1e6;
    println!(
        "{{\"events\": {events}, \"avg_event_bytes\": {:.0}, \"decode_only\": {{\"events_per_s\": {:.0}, \"mb_per_s\": {:.1}}}, \"kafka_fetch_and_decode\": {{\"events_per_s\": {:.0}, \"mb_per_s\": {:.1}}}}}",
        bytes as f64 / events as f64,
        events as f64 / decode_s,
        mb / decode_s,
        events as f64 / read_s,
        mb / read_s
    );
}
