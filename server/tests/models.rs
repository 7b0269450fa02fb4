//! ALS models end to end: trained from SQL over a CSV table, served by recommend() and
//! predict_rating(), persisted across a restart, and folding in fresh clicks from a Kafka
//! source (librdkafka's mock cluster).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::common::{Options, TestServer};

const USERS: u64 = 300;
const ITEMS: u64 = 400;
const NOISE: f64 = 0.1;

/// A deterministic hash-based random number in [0, 1).
fn unit(seed: u64, a: u64, b: u64) -> f64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Ratings = rank-3 truth + noise, on ~25 % of the (user, item) pairs; every 10th rating goes
/// to the test set.
type Rows = Vec<(u64, u64, f64)>;

fn ratings() -> (Rows, Rows) {
    let factor = |kind: u64, id: u64, k: u64| unit(kind, id, k) * 2.0 - 1.0;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let mut n = 0;
    for u in 0..USERS {
        for i in 0..ITEMS {
            if unit(3, u, i) > 0.25 {
                continue;
            }
            let truth: f64 = (0..3)
                .map(|k| factor(1, u, k) * factor(2, i, k))
                .sum::<f64>()
                + 3.0;
            // Uniform noise with standard deviation NOISE.
            let noise = (unit(4, u, i) - 0.5) * NOISE * 12f64.sqrt();
            let row = (u, i, truth + noise);
            n += 1;
            if n % 10 == 0 {
                test.push(row);
            } else {
                train.push(row);
            }
        }
    }
    (train, test)
}

fn csv(rows: &[(u64, u64, f64)]) -> String {
    let mut text = String::from("user_id,item_id,rating\n");
    for (u, i, r) in rows {
        writeln!(text, "{u},{i},{r:.6}").unwrap();
    }
    text
}

/// MovieLens-100k's `u.data` format: user, item, rating, timestamp, tab-separated.
fn u_data(rows: &[(u64, u64, f64)]) -> String {
    let mut text = String::new();
    for (u, i, r) in rows {
        writeln!(text, "{u}\t{i}\t{r:.6}\t881250949").unwrap();
    }
    text
}

/// MovieLens-1M's `ratings.dat` format: `user::item::rating::timestamp`.
fn ratings_dat(rows: &[(u64, u64, f64)]) -> String {
    let mut text = String::new();
    for (u, i, r) in rows {
        writeln!(text, "{u}::{i}::{r:.6}::978300760").unwrap();
    }
    text
}

async fn recommended(client: &tokio_postgres::Client, sql: &str) -> Vec<(i64, f32)> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| (r.get::<_, i64>(1), r.get::<_, f32>(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn als_trained_in_sql_predicts_held_out_ratings_and_recommends() {
    let (train, test) = ratings();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("u.data"), u_data(&train)).unwrap();
    std::fs::write(work.path().join("test.csv"), csv(&test)).unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    // The MovieLens-100k loader of docs/models.md.
    client
        .batch_execute(
            "CREATE EXTERNAL TABLE ratings (user_id BIGINT, item_id BIGINT, rating DOUBLE, ts BIGINT)
               STORED AS CSV LOCATION 'u.data' OPTIONS ('format.delimiter' '\t', 'format.has_header' 'false');
             CREATE EXTERNAL TABLE test STORED AS CSV LOCATION 'test.csv';
             CREATE MODEL recs USING als
               WITH (rank = 5, iterations = 12, regularization = 0.02, seed = 7)
               AS SELECT user_id, item_id, rating FROM ratings",
        )
        .await
        .unwrap();

    // Held-out RMSE, computed in SQL, close to the noise and far below predicting the mean.
    let row = client
        .query_one(
            "SELECT sqrt(avg(power(predict_rating('recs', user_id, item_id) - rating, 2))),
                    stddev(rating), count(predict_rating('recs', user_id, item_id))
             FROM test",
            &[],
        )
        .await
        .unwrap();
    let (rmse, spread, predicted): (f64, f64, i64) = (row.get(0), row.get(1), row.get(2));
    eprintln!("held-out RMSE {rmse:.4} (noise {NOISE}, rating spread {spread:.3})");
    assert!(rmse < 2.0 * NOISE, "RMSE {rmse}");
    assert!(rmse < spread / 3.0, "RMSE {rmse} vs spread {spread}");
    assert_eq!(predicted as usize, test.len());

    // recommend: best first, k rows, nothing the user rated in training.
    let rated: BTreeSet<i64> = train
        .iter()
        .filter(|(u, _, _)| *u == 7)
        .map(|(_, i, _)| *i as i64)
        .collect();
    let top = recommended(&client, "SELECT * FROM recommend('recs', 7, 10)").await;
    assert_eq!(top.len(), 10);
    assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "{top:?}");
    assert!(top.iter().all(|(i, _)| !rated.contains(i)), "{top:?}");
    // The scores are the model's predictions.
    let predicted: f64 = client
        .query_one(
            &format!("SELECT predict_rating('recs', 7, {})", top[0].0),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((predicted - top[0].1 as f64).abs() < 1e-4);
    // Keeping rated items: the list may now start with one of them, and it is never worse.
    let with_rated = recommended(&client, "SELECT * FROM recommend('recs', 7, 10, false)").await;
    assert!(with_rated[0].1 >= top[0].1);

    let users = client
        .query("SELECT * FROM recommend_users('recs', 3, 4)", &[])
        .await
        .unwrap();
    assert_eq!(users.len(), 4);
    let all: i64 = client
        .query_one("SELECT count(*) FROM recommend_all('recs', 2)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(all, 2 * USERS as i64);

    // Unknown user or item: no rows / NULL; unknown model: an error naming it.
    assert!(
        recommended(&client, "SELECT * FROM recommend('recs', 999999, 5)")
            .await
            .is_empty()
    );
    let null: Option<f64> = client
        .query_one("SELECT predict_rating('recs', 1, 999999)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(null, None);
    let err = client
        .query("SELECT * FROM recommend('nosuch', 1, 5)", &[])
        .await
        .unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("nosuch"),
        "{err:?}"
    );

    // SHOW MODELS describes the training.
    let rows = client.simple_query("SHOW MODELS").await.unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(row.get("name"), Some("recs"));
    assert_eq!(row.get("users"), Some(USERS.to_string().as_str()));
    assert_eq!(row.get("ratings"), Some(train.len().to_string().as_str()));
    assert_eq!(row.get("state"), Some("ready"));

    // Text ids work too.
    client
        .batch_execute(
            "CREATE MODEL named USING als WITH (rank = 4, iterations = 5)
               AS SELECT 'user-' || CAST(user_id AS VARCHAR), 'item-' || CAST(item_id AS VARCHAR), rating FROM ratings",
        )
        .await
        .unwrap();
    let text = client
        .query("SELECT item_id FROM recommend('named', 'user-7', 3)", &[])
        .await
        .unwrap();
    assert_eq!(text.len(), 3);
    assert!(text[0].get::<_, String>(0).starts_with("item-"));

    // The model survives a restart without retraining: identical recommendations.
    drop(client);
    server.stop();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    let again = recommended(&client, "SELECT * FROM recommend('recs', 7, 10)").await;
    assert_eq!(again, top);
    client.batch_execute("REFRESH MODEL recs").await.unwrap();
    let refreshed = recommended(&client, "SELECT * FROM recommend('recs', 7, 10)").await;
    assert_eq!(refreshed, top, "same data and seed, same model");
    // A scheduled refresh retrains and swaps the model in.
    client
        .batch_execute(
            "CREATE MODEL scheduled USING als WITH (rank = 3, iterations = 2, refresh_interval = '1s')
               AS SELECT user_id, item_id, rating FROM ratings",
        )
        .await
        .unwrap();
    let trained_at = |rows: Vec<tokio_postgres::SimpleQueryMessage>| -> Option<String> {
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("name") == Some("scheduled") => {
                r.get("trained_at").map(str::to_string)
            }
            _ => None,
        })
    };
    let first = trained_at(client.simple_query("SHOW MODELS").await.unwrap());
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = trained_at(client.simple_query("SHOW MODELS").await.unwrap());
        if now != first {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no scheduled refresh"
        );
    }
    client.batch_execute("DROP MODEL scheduled").await.unwrap();
    client.batch_execute("DROP MODEL recs").await.unwrap();
    let err = client
        .query("SELECT * FROM recommend('recs', 7, 10)", &[])
        .await
        .unwrap_err();
    assert!(err.as_db_error().unwrap().message().contains("recs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_clicks_change_recommendations_through_fold_in() {
    let (train, _) = ratings();
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("clicks", 1, 1).unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("ratings.dat"), ratings_dat(&train)).unwrap();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    // The MovieLens-1M loader of docs/models.md.
    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE lines (line VARCHAR) STORED AS CSV LOCATION 'ratings.dat'
               OPTIONS ('format.delimiter' '|', 'format.has_header' 'false');
             CREATE VIEW ratings AS SELECT CAST(split_part(line, '::', 1) AS BIGINT) AS user_id,
               CAST(split_part(line, '::', 2) AS BIGINT) AS item_id,
               CAST(split_part(line, '::', 3) AS DOUBLE) AS rating FROM lines;
             CREATE SOURCE clicks (user_id BIGINT, item_id BIGINT, rating DOUBLE)
               WITH (connector = 'kafka', bootstrap_servers = '{brokers}', topic = 'clicks');
             CREATE MODEL live USING als
               WITH (rank = 5, iterations = 10, regularization = 0.02, seed = 3, fold_in_source = 'clicks')
               AS SELECT user_id, item_id, rating FROM ratings"
        ))
        .await
        .unwrap();
    let new_user = 5_000;
    assert!(recommended(
        &client,
        &format!("SELECT * FROM recommend('live', {new_user}, 5)")
    )
    .await
    .is_empty());
    let before = recommended(&client, "SELECT * FROM recommend('live', 7, 10)").await;

    // The new user copies user 12's ratings; user 7 rates its current favourite low.
    let mut clicks: Vec<String> = train
        .iter()
        .filter(|(u, _, _)| *u == 12)
        .map(|(_, i, r)| format!(r#"{{"user_id": {new_user}, "item_id": {i}, "rating": {r}}}"#))
        .collect();
    clicks.push(format!(
        r#"{{"user_id": 7, "item_id": {}, "rating": 0.0}}"#,
        before[0].0
    ));
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for click in &clicks {
        producer
            .send(
                BaseRecord::<(), str>::to("clicks")
                    .partition(0)
                    .payload(click),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let start = Instant::now();
    let (fresh, after) = loop {
        let fresh = recommended(
            &client,
            &format!("SELECT * FROM recommend('live', {new_user}, 5)"),
        )
        .await;
        let after = recommended(&client, "SELECT * FROM recommend('live', 7, 10)").await;
        if (!fresh.is_empty() && after != before) || start.elapsed() > Duration::from_secs(20) {
            break (fresh, after);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The new user gets recommendations close to user 12's (its items are excluded).
    assert_eq!(fresh.len(), 5, "no fold-in for the new user");
    let twelve = recommended(&client, "SELECT * FROM recommend('live', 12, 5)").await;
    let twelve: BTreeSet<i64> = twelve.iter().map(|(i, _)| *i).collect();
    let overlap = fresh.iter().filter(|(i, _)| twelve.contains(i)).count();
    assert!(overlap >= 3, "fresh {fresh:?} vs user 12 {twelve:?}");
    // User 7's clicked item left its list.
    assert!(after.iter().all(|(i, _)| *i != before[0].0), "{after:?}");

    // After a restart (the saved model, no retraining) fold-in resumes from where the training
    // query started, so the clicks made before the restart still count.
    drop(client);
    server.stop();
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    let start = Instant::now();
    let again = loop {
        let again = recommended(
            &client,
            &format!("SELECT * FROM recommend('live', {new_user}, 5)"),
        )
        .await;
        if again == fresh || start.elapsed() > Duration::from_secs(20) {
            break again;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(again, fresh, "fold-in after a restart");
    let after_restart = recommended(&client, "SELECT * FROM recommend('live', 7, 10)").await;
    assert_eq!(after_restart, after);
}
