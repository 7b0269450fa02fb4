//! Avro end to end: messages written by confluent-kafka's `AvroSerializer` and fastavro
//! (tests/fixtures/avro, made by its generate.py) on librdkafka's mock cluster, a schema
//! registry replaying the recorded answers of the registry those messages were registered
//! with, the real server, PostgreSQL clients.
//!
//! No schema-registry server can be installed from the package registries reachable here
//! (none is packaged for PyPI, Debian or crates.io that runs without a JVM or a broker of its
//! own), so the registry is the documented REST API replayed from the recording.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::SimpleQueryMessage;

use crate::common::{tests_dir, Options, TestServer};

fn fixtures() -> Value {
    let path = tests_dir().join("fixtures/avro/fixtures.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn messages(fixtures: &Value, scenario: &str) -> Vec<Vec<u8>> {
    fixtures[scenario]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = m.as_str().unwrap();
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

/// Serves the recorded registry answers over HTTP; returns its URL.
async fn registry(exchanges: &Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answers: BTreeMap<String, (u64, String)> = exchanges
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                (e["status"].as_u64().unwrap(), e["body"].to_string()),
            )
        })
        .collect();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answers = answers.clone();
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
                let path = text.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = answers.get(path).cloned().unwrap_or((
                    404,
                    r#"{"error_code":404,"message":"Not Found"}"#.to_string(),
                ));
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
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

/// Rows of a simple (text) query as column → text maps.
async fn text_rows(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Vec<BTreeMap<String, Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), row.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_avro_type_reaches_postgresql_clients_with_its_type() {
    let fixtures = fixtures();
    let url = registry(&fixtures["registry"]).await;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("types", 1, 1).unwrap();
    produce(&brokers, "types", &messages(&fixtures, "types"));

    let work = tempfile::tempdir().unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE types WITH (connector = 'kafka', bootstrap_servers = '{brokers}', \
             topic = 'types', format = 'avro', schema_registry_url = '{url}')"
        ))
        .await
        .unwrap();

    // The PostgreSQL type each Avro type is announced as.
    let statement = client.prepare("SELECT * FROM types").await.unwrap();
    let types: BTreeMap<String, String> = statement
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().name().to_string()))
        .collect();
    for (column, pg) in [
        ("b", "bool"),
        ("i", "int4"),
        ("l", "int8"),
        ("f", "float4"),
        ("d", "float8"),
        ("by", "bytea"),
        ("s", "text"),
        ("fx", "bytea"),
        ("e", "text"),
        ("dec", "numeric"),
        ("dt", "date"),
        ("tm", "time"),
        ("tu", "time"),
        ("tsm", "timestamptz"),
        ("tsu", "timestamptz"),
        ("u", "text"),
        ("opt", "text"),
        ("arr", "_int8"),
        ("m", "json"),
    ] {
        assert_eq!(
            types.get(column).map(String::as_str),
            Some(pg),
            "column {column}: {types:?}"
        );
    }

    // Every value as PostgreSQL prints it, as computed by the fixture generator.
    client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    let rows = text_rows(&client, "SELECT * FROM types ORDER BY l").await;
    let expected = fixtures["types"]["expected"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, want) in rows.iter().zip(expected) {
        for (column, value) in want.as_object().unwrap() {
            if column == "rec" {
                continue; // a struct; its fields are checked below
            }
            assert_eq!(
                row.get(column).cloned().flatten().as_deref(),
                value.as_str(),
                "column {column} of {row:?}"
            );
        }
    }
    // A record's fields are reachable by name.
    let inner = text_rows(
        &client,
        "SELECT rec['x'] AS x, rec['y'] AS y FROM types ORDER BY l",
    )
    .await;
    for (row, want) in inner.iter().zip(expected) {
        let (x, y) = want["rec"]
            .as_str()
            .unwrap()
            .trim_matches(|c| c == '(' || c == ')')
            .split_once(',')
            .unwrap();
        assert_eq!(row["x"].as_deref(), Some(x));
        assert_eq!(row["y"].as_deref(), Some(y));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evolving_topic_reads_as_the_declared_columns_and_avro_files_are_tables() {
    let fixtures = fixtures();
    let url = registry(&fixtures["registry"]).await;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("customers", 1, 1).unwrap();
    let mut payloads = messages(&fixtures, "customers");
    payloads.insert(3, b"not avro".to_vec());
    produce(&brokers, "customers", &payloads);

    let work = tempfile::tempdir().unwrap();
    std::fs::copy(
        tests_dir().join("fixtures/avro/evolve_v2.avro"),
        work.path().join("customers.avro"),
    )
    .unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    let create = |name: &str, extra: &str| {
        format!(
            "CREATE SOURCE {name} (id BIGINT, name VARCHAR, email VARCHAR, score INT, _offset BIGINT) \
             WITH (connector = 'kafka', bootstrap_servers = '{brokers}', topic = 'customers', \
             format = 'avro', schema_registry_url = '{url}'{extra})"
        )
    };
    client
        .batch_execute(&create("customers", ""))
        .await
        .unwrap();
    let rows = text_rows(
        &client,
        "SELECT id, name, email, score FROM customers ORDER BY id",
    )
    .await;
    let expected: Vec<BTreeMap<String, Option<String>>> = fixtures["customers"]["expected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                .collect()
        })
        .collect();
    assert_eq!(rows, expected);

    // The bad message was counted, and SHOW SOURCES says so.
    let sources = text_rows(&client, "SHOW SOURCES").await;
    let skipped: u64 = sources[0]["malformed_skipped"]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(skipped >= 1, "{sources:?}");
    assert!(
        sources[0]["last_error"]
            .as_deref()
            .unwrap()
            .contains("offset 3"),
        "{sources:?}"
    );

    // on_error = 'fail': the query fails as a data exception naming the offset.
    client
        .batch_execute(&create("strict", ", on_error = 'fail'"))
        .await
        .unwrap();
    let err = client
        .query("SELECT count(*) FROM strict", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "22000", "{db:?}");
    assert!(db.message().contains("offset 3"), "{}", db.message());

    // A restart keeps the reader schema and reads the same rows.
    drop(client);
    server.stop();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    let again = text_rows(
        &client,
        "SELECT id, name, email, score FROM customers ORDER BY id",
    )
    .await;
    assert_eq!(again, expected);

    // An Avro object-container file (fastavro, deflate) as an external table.
    client
        .batch_execute("CREATE EXTERNAL TABLE archive STORED AS AVRO LOCATION 'customers.avro'")
        .await
        .unwrap();
    let summary = text_rows(
        &client,
        "SELECT count(*) AS n, sum(score) AS s, max(email) AS e FROM archive",
    )
    .await;
    let n = 100i64;
    assert_eq!(summary[0]["n"].as_deref(), Some(n.to_string().as_str()));
    assert_eq!(
        summary[0]["s"].as_deref(),
        Some((3 * n * (n + 1) / 2).to_string().as_str())
    );
    let max_email = (1..=n).map(|i| format!("c{i}@example.com")).max();
    assert_eq!(summary[0]["e"].clone(), max_email);
    // Outside the data roots it is refused like any other path.
    let err = client
        .batch_execute("CREATE EXTERNAL TABLE outside STORED AS AVRO LOCATION '/etc/hostname'")
        .await
        .unwrap_err();
    assert!(err.as_db_error().is_some(), "{err:?}");
}
