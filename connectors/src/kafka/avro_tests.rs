//! Avro Kafka sources against librdkafka's mock cluster, with messages written by
//! confluent-kafka's `AvroSerializer` and fastavro (tests/fixtures/avro, made by its
//! generate.py) and a schema registry that replays the recorded answers of the registry those
//! messages were registered with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use futures::TryStreamExt;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::KafkaConnector;
use crate::source::{ConnectorError, Source, SourceConfig, SourceConnector};

fn fixtures() -> Value {
    // The run-time CARGO_MANIFEST_DIR (set by cargo test) wins over the compile-time one, which a
    // build directory shared between checkouts can carry from another checkout.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let path = format!("{manifest}/../tests/fixtures/avro/fixtures.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn messages(fixtures: &Value, scenario: &str, key: &str) -> Vec<Vec<u8>> {
    fixtures[scenario][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| hex(m.as_str().unwrap()))
        .collect()
}

/// A registry replaying recorded exchanges over real HTTP; counts requests per path and
/// checks basic authentication when `auth` is set.
struct Registry {
    url: String,
    hits: Arc<Mutex<BTreeMap<String, usize>>>,
    refused: Arc<AtomicUsize>,
}

async fn registry(exchanges: &Value, auth: Option<&str>) -> Registry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answers: BTreeMap<String, (u16, String)> = exchanges
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                (e["status"].as_u64().unwrap() as u16, e["body"].to_string()),
            )
        })
        .collect();
    let expected_auth = auth.map(|a| {
        use base64::Engine;
        format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(a)
        )
    });
    let hits = Arc::new(Mutex::new(BTreeMap::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let (hits2, refused2) = (hits.clone(), refused.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let answers = answers.clone();
            let hits = hits2.clone();
            let refused = refused2.clone();
            let expected_auth = expected_auth.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request).to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let authorized = match &expected_auth {
                    None => true,
                    Some(expected) => text.lines().any(|l| {
                        l.to_ascii_lowercase().trim()
                            == format!("authorization: {expected}").to_ascii_lowercase()
                    }),
                };
                *hits.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                let (status, body) = if !authorized {
                    refused.fetch_add(1, Ordering::Relaxed);
                    (
                        401,
                        r#"{"error_code":401,"message":"Unauthorized"}"#.to_string(),
                    )
                } else {
                    answers.get(&path).cloned().unwrap_or((
                        404,
                        r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#.to_string(),
                    ))
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Registry { url, hits, refused }
}

fn produce(brokers: &str, topic: &str, messages: &[Vec<u8>]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for payload in messages {
        producer
            .send(
                BaseRecord::<(), [u8]>::to(topic)
                    .partition(0)
                    .payload(payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn config(
    brokers: &str,
    topic: &str,
    schema: Option<Schema>,
    extra: &[(&str, &str)],
) -> SourceConfig {
    let mut options: BTreeMap<String, String> = [
        ("bootstrap_servers", brokers),
        ("topic", topic),
        ("format", "avro"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    options.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    SourceConfig {
        name: topic.to_string(),
        schema: schema.map(Arc::new),
        options,
        state: BTreeMap::new(),
        storage_dir: None,
    }
}

async fn read_all(source: &Arc<dyn Source>) -> Result<RecordBatch, ConnectorError> {
    let mut batches = Vec::new();
    for split in source.snapshot().await? {
        batches.extend(source.read(split, None, 4).try_collect::<Vec<_>>().await?);
    }
    Ok(concat_batches(&batches[0].schema(), &batches)?)
}

/// Column `name` of `batch` as text, by Arrow's display (independent of pgwire).
fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch.column_by_name(name).unwrap();
    let formatter =
        arrow::util::display::ArrayFormatter::try_new(column, &Default::default()).unwrap();
    (0..column.len())
        .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_framed_messages_of_every_type_decode_without_declared_columns() {
    let fixtures = fixtures();
    let registry = registry(&fixtures["registry"], None).await;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("types", 1, 1).unwrap();
    produce(&brokers, "types", &messages(&fixtures, "types", "messages"));
    let source = KafkaConnector
        .create(
            config(
                &brokers,
                "types",
                None,
                &[("schema_registry_url", &registry.url)],
            ),
            true,
        )
        .await
        .unwrap();
    let schema = source.schema();
    let types: Vec<(&str, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    let utc = Some("+00:00".into());
    for (name, expected) in [
        ("b", DataType::Boolean),
        ("i", DataType::Int32),
        ("l", DataType::Int64),
        ("f", DataType::Float32),
        ("d", DataType::Float64),
        ("by", DataType::Binary),
        ("s", DataType::Utf8),
        ("fx", DataType::Binary),
        ("e", DataType::Utf8),
        ("dec", DataType::Decimal128(10, 2)),
        ("dt", DataType::Date32),
        ("tm", DataType::Time32(TimeUnit::Millisecond)),
        ("tu", DataType::Time64(TimeUnit::Microsecond)),
        (
            "tsm",
            DataType::Timestamp(TimeUnit::Millisecond, utc.clone()),
        ),
        (
            "tsu",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
        ),
        ("u", DataType::Utf8),
        ("opt", DataType::Utf8),
        ("m", DataType::Utf8),
    ] {
        let found = types
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone());
        assert_eq!(found, Some(expected), "column {name}");
    }
    assert!(
        matches!(schema.field_with_name("arr").unwrap().data_type(), DataType::List(f) if f.data_type() == &DataType::Int64)
    );
    assert!(
        matches!(schema.field_with_name("rec").unwrap().data_type(), DataType::Struct(f) if f.len() == 2)
    );

    let batch = read_all(&source).await.unwrap();
    let expected = fixtures["types"]["expected"].as_array().unwrap();
    assert_eq!(batch.num_rows(), expected.len());
    // Values whose Arrow display matches PostgreSQL's text (the pgwire test covers the rest).
    for name in ["i", "l", "s", "e", "dec", "dt", "u", "opt", "m"] {
        let want: Vec<Option<String>> = expected
            .iter()
            .map(|row| row[name].as_str().map(str::to_string))
            .collect();
        assert_eq!(strings(&batch, name), want, "column {name}");
    }
    // Each writer schema id was fetched once, however many messages carry it.
    let hits = registry.hits.lock().unwrap().clone();
    assert_eq!(
        hits.get("/subjects/types-value/versions/latest"),
        Some(&1),
        "{hits:?}"
    );
    let id_fetches: usize = hits
        .iter()
        .filter(|(p, _)| p.starts_with("/schemas/ids/"))
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(id_fetches, 1, "{hits:?}");
}

fn customers_schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("score", DataType::Int64, true),
        Field::new("_offset", DataType::Int64, true),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolving_writer_schemas_resolve_to_the_declared_columns_and_bad_messages_are_counted() {
    let fixtures = fixtures();
    let registry = registry(&fixtures["registry"], Some("reader:s3cret")).await;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("customers", 1, 1).unwrap();
    let mut payloads = messages(&fixtures, "customers", "messages");
    let good = payloads.len();
    // Malformed: not framed, an id the registry does not know, a truncated body.
    let mut unknown = payloads[0].clone();
    unknown[1..5].copy_from_slice(&99u32.to_be_bytes());
    let truncated = payloads[good - 1][..payloads[good - 1].len() - 3].to_vec();
    payloads.insert(2, b"{\"id\": 1}".to_vec());
    payloads.insert(4, unknown);
    payloads.push(truncated);
    produce(&brokers, "customers", &payloads);

    let auth = [
        ("schema_registry_url", registry.url.as_str()),
        ("schema_registry.username", "reader"),
        ("schema_registry.password", "s3cret"),
    ];
    let source = KafkaConnector
        .create(
            config(&brokers, "customers", Some(customers_schema()), &auth),
            true,
        )
        .await
        .unwrap();
    let batch = read_all(&source).await.unwrap();
    let expected = fixtures["customers"]["expected"].as_array().unwrap();
    assert_eq!(batch.num_rows(), expected.len());
    for name in ["id", "name", "email", "score"] {
        let want: Vec<Option<String>> = expected
            .iter()
            .map(|row| row[name].as_str().map(str::to_string))
            .collect();
        assert_eq!(strings(&batch, name), want, "column {name}");
    }
    let offsets = batch
        .column_by_name("_offset")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(offsets.values().as_ref(), &[0, 1, 3, 5, 6, 7]);
    assert_eq!(
        source.counters().malformed_skipped.load(Ordering::Relaxed),
        3
    );
    assert!(registry.refused.load(Ordering::Relaxed) == 0);
    // The unknown id was asked once, then remembered.
    assert_eq!(
        registry.hits.lock().unwrap().get("/schemas/ids/99"),
        Some(&1)
    );
    read_all(&source).await.unwrap();
    assert_eq!(
        registry.hits.lock().unwrap().get("/schemas/ids/99"),
        Some(&1)
    );

    // on_error = 'fail': the first bad message stops the read, naming its offset.
    let mut strict_options = auth.to_vec();
    strict_options.push(("on_error", "fail"));
    let strict = KafkaConnector
        .create(
            config(
                &brokers,
                "customers",
                Some(customers_schema()),
                &strict_options,
            ),
            true,
        )
        .await
        .unwrap();
    match read_all(&strict).await {
        Err(ConnectorError::Malformed { offset, .. }) => assert_eq!(offset, 2),
        other => panic!("expected a malformed-message error, got {other:?}"),
    }

    // Wrong credentials: the registry's refusal is the error, not silently skipped messages.
    let wrong = [
        ("schema_registry_url", registry.url.as_str()),
        ("schema_registry.username", "reader"),
        ("schema_registry.password", "wrong"),
    ];
    let err = KafkaConnector
        .create(
            config(&brokers, "customers", Some(customers_schema()), &wrong),
            true,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains(&registry.url), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_bodies_decode_with_an_inline_schema() {
    let fixtures = fixtures();
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("raw", 1, 1).unwrap();
    let mut payloads = messages(&fixtures, "types", "raw_messages");
    payloads.insert(1, vec![0xff]);
    produce(&brokers, "raw", &payloads);
    let schema_text = fixtures["types"]["schema"].to_string();
    let declared = Schema::new(vec![
        Field::new("l", DataType::Int64, true),
        Field::new("s", DataType::Utf8View, true),
        Field::new("tsu", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("e", DataType::Utf8, true),
    ]);
    let source = KafkaConnector
        .create(
            config(
                &brokers,
                "raw",
                Some(declared),
                &[("avro.schema", &schema_text)],
            ),
            true,
        )
        .await
        .unwrap();
    let batch = read_all(&source).await.unwrap();
    let expected = fixtures["types"]["expected"].as_array().unwrap();
    assert_eq!(batch.num_rows(), expected.len());
    let want: Vec<Option<String>> = expected
        .iter()
        .map(|row| row["e"].as_str().map(str::to_string))
        .collect();
    assert_eq!(strings(&batch, "e"), want);
    assert_eq!(batch.schema().field(1).data_type(), &DataType::Utf8View);
    assert_eq!(
        source.counters().malformed_skipped.load(Ordering::Relaxed),
        1
    );

    // A declared type the Avro field cannot become is refused when the source is created.
    let bad = Schema::new(vec![Field::new("rec", DataType::Int64, true)]);
    let err = KafkaConnector
        .create(
            config(&brokers, "raw", Some(bad), &[("avro.schema", &schema_text)]),
            true,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("column rec"), "{err}");
    // Neither a registry nor a schema.
    let err = KafkaConnector
        .create(config(&brokers, "raw", None, &[]), true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("schema_registry_url") && err.contains("avro.schema"),
        "{err}"
    );
}
