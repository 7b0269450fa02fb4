//! The Flight SQL frontend with arrow-flight's own client: statements, prepared statements with
//! parameters, our own statements, errors and authentication.

use std::sync::Arc;

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::FlightInfo;
use freshet_sql::datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use freshet_sql::datafusion::arrow::compute::cast;
use freshet_sql::datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::common::{copy_fixtures, Options, TestServer};

async fn client(server: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel = Endpoint::new(format!("http://{}", server.flight_addr))
        .unwrap()
        .connect()
        .await
        .expect("connect to flight");
    FlightSqlServiceClient::new(channel)
}

/// Fetches every endpoint of `info`.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let stream = client.do_get(ticket).await.expect("do_get");
        batches.extend(
            stream
                .try_collect::<Vec<_>>()
                .await
                .expect("read the stream"),
        );
    }
    batches
}

/// Column `index` of every batch, as text.
fn column_text(batches: &[RecordBatch], index: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|batch| {
            let text = cast(batch.column(index), &DataType::Utf8).unwrap();
            let text = text.as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..text.len()).map(move |i| text.value(i).to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_prepared_statements_go_through_the_engine() {
    let work = tempfile::tempdir().unwrap();
    copy_fixtures(work.path());
    let server = TestServer::start(work.path(), &Options::default());
    let mut client = client(&server).await;

    // DDL as an update (DoPut), then our own statement as a query.
    let created = client
        .execute_update(
            "CREATE EXTERNAL TABLE users STORED AS CSV LOCATION 'data/users.csv'".to_string(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(created, 0);
    let info = client
        .execute("SHOW TABLES".to_string(), None)
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(column_text(&batches, 1), vec!["users"]);

    // SET lasts for the connection's session.
    client
        .execute_update("SET datafusion.execution.batch_size = 2".to_string(), None)
        .await
        .unwrap();
    let info = client
        .execute("SELECT user_id FROM users".to_string(), None)
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
    assert!(
        batches.len() >= 2,
        "batch_size = 2 gives several batches: {}",
        batches.len()
    );

    // A prepared statement: parameter schema, then two executions with different values.
    let mut prepared = client
        .prepare(
            "SELECT name FROM users WHERE user_id > $1 ORDER BY user_id".to_string(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
    assert_eq!(prepared.dataset_schema().unwrap().field(0).name(), "name");
    for (after, expected) in [(2_i64, vec!["carol", "dave"]), (3, vec!["dave"])] {
        let schema = Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)]));
        let values =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![after]))]).unwrap();
        prepared.set_parameters(values).unwrap();
        let info = prepared.execute().await.unwrap();
        assert_eq!(column_text(&fetch(&mut client, info).await, 0), expected);
    }
    prepared.close().await.unwrap();

    // An unknown table is NOT_FOUND with the engine's message; the connection goes on.
    let err = client
        .execute("SELECT * FROM missing".to_string(), None)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("NotFound") || text.contains("not found"),
        "{text}"
    );
    assert!(
        text.contains("table 'freshet.public.missing' not found"),
        "{text}"
    );
    let info = client
        .execute("SELECT 1 AS one".to_string(), None)
        .await
        .unwrap();
    assert_eq!(column_text(&fetch(&mut client, info).await, 0), vec!["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_uses_the_configured_users() {
    let work = tempfile::tempdir().unwrap();
    let options = Options {
        config: Some("[[auth.users]]\nname = \"alice\"\npassword = \"s3cret\"\n".to_string()),
        ..Options::default()
    };
    let server = TestServer::start(work.path(), &options);

    let mut anonymous = client(&server).await;
    let err = anonymous
        .execute("SELECT 1".to_string(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");
    let err = anonymous.handshake("alice", "wrong").await.unwrap_err();
    assert!(
        err.to_string().contains("invalid user name or password"),
        "{err}"
    );

    let mut alice = client(&server).await;
    let token = alice.handshake("alice", "s3cret").await.unwrap();
    assert_eq!(token.len(), 64);
    let info = alice
        .execute("SELECT 41 + 1 AS answer".to_string(), None)
        .await
        .unwrap();
    assert_eq!(column_text(&fetch(&mut alice, info).await, 0), vec!["42"]);
}
