//! Every client-compatibility rule of `freshet_sql::compat::RULES` is needed: its example runs
//! with the rule and fails (or answers differently) with the rule turned off for the session.
//! Rules without an example are proven by their client's own test (`Rule::proof`).

use tokio_postgres::SimpleQueryMessage;

use crate::common::{copy_fixtures, Options, TestServer};

/// The rows of a simple query as text, or the error's message.
async fn answer(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| crate::common::error_message(&e))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_compatibility_rule_is_needed_by_its_example() {
    let work = tempfile::tempdir().unwrap();
    copy_fixtures(work.path());
    let server = TestServer::start(work.path(), &Options::default());
    let client = server.client().await;
    let mut checked = 0;
    for rule in freshet_sql::compat::RULES {
        if rule.example.is_empty() {
            assert!(
                !rule.proof.is_empty(),
                "{}: no example and no proof",
                rule.name
            );
            continue;
        }
        for statement in rule.setup {
            client.simple_query(statement).await.unwrap();
        }
        client
            .simple_query("SET compat_rules_disabled = ''")
            .await
            .unwrap();
        let with_rule = answer(&client, rule.example)
            .await
            .unwrap_or_else(|e| panic!("{}: the example fails with the rule on: {e}", rule.name));
        assert!(
            !with_rule.is_empty(),
            "{}: the example returns no rows",
            rule.name
        );
        client
            .simple_query(&format!("SET compat_rules_disabled = '{}'", rule.name))
            .await
            .unwrap();
        let without_rule = answer(&client, rule.example).await;
        assert_ne!(
            without_rule.as_ref(),
            Ok(&with_rule),
            "{}: the example answers the same without the rule",
            rule.name
        );
        checked += 1;
    }
    client
        .simple_query("SET compat_rules_disabled = ''")
        .await
        .unwrap();
    // A correlated scalar subquery in a user's select list gets PostgreSQL's answer (a rewrite
    // meant for catalog lookups once turned it into NULL).
    let rows = answer(
        &client,
        "SELECT a.id, (SELECT b.name FROM compat_b b WHERE b.id = a.t) AS name FROM compat_a a",
    )
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![vec![Some("1".to_string()), Some("ten".to_string())]]
    );
    // An unknown rule name is refused clearly, and the session goes on.
    let err = answer(&client, "SET compat_rules_disabled = 'no-such-rule'")
        .await
        .unwrap_err();
    assert!(
        err.contains("unknown compatibility rule 'no-such-rule'"),
        "{err}"
    );
    assert_eq!(
        answer(&client, "SELECT 1").await.unwrap(),
        vec![vec![Some("1".to_string())]]
    );
    assert!(checked >= 10, "only {checked} rules have examples");
}
