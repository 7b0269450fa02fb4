//! The statements of continuous queries:
//!
//! ```sql
//! CREATE MATERIALIZED VIEW [IF NOT EXISTS] name [WITH (option = value, …)] AS query
//! DROP MATERIALIZED VIEW [IF EXISTS] name
//! SHOW MATERIALIZED VIEWS
//! SHOW JOBS
//! SUBSCRIBE [TO] name | SUBSCRIBE [TO] (query)
//! CREATE SINK [IF NOT EXISTS] name FROM name WITH (connector = …, …)
//! DROP SINK [IF EXISTS] name
//! SHOW SINKS
//! ```
//!
//! A query inside a statement is kept as the text the user wrote, cut out of the statement by
//! token positions, and planned by the engine like any query.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::EngineError;
use crate::statement::tokens::{Cursor, RawStatement};

/// A statement about continuous queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStatement {
    CreateMaterializedView(CreateMaterializedView),
    DropMaterializedView { name: String, if_exists: bool },
    ShowMaterializedViews,
    ShowJobs,
    Subscribe(SubscribeTarget),
    CreateSink(CreateSink),
    DropSink { name: String, if_exists: bool },
    ShowSinks,
}

/// `CREATE MATERIALIZED VIEW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateMaterializedView {
    pub name: String,
    pub if_not_exists: bool,
    /// WITH options, keys lower-case.
    pub options: BTreeMap<String, String>,
    /// The query text.
    pub query: String,
}

/// What SUBSCRIBE reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeTarget {
    /// A materialized view, source or other relation.
    Name(String),
    /// A query.
    Query(String),
}

/// `CREATE SINK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSink {
    pub name: String,
    pub if_not_exists: bool,
    /// The materialized view or source the sink reads.
    pub from: String,
    /// WITH options, keys lower-case (including `connector`).
    pub options: BTreeMap<String, String>,
}

/// Reads a statement about continuous queries; `None` for anything else.
pub(crate) fn parse_stream_statement(
    raw: &RawStatement,
) -> Result<Option<StreamStatement>, EngineError> {
    let mut c = Cursor::new(raw);
    if c.keywords(&["CREATE", "MATERIALIZED", "VIEW"]) {
        let if_not_exists = c.keywords(&["IF", "NOT", "EXISTS"]);
        let name = c.name("a view name")?;
        let options = if c.keyword("WITH") {
            c.options()?
        } else {
            BTreeMap::new()
        };
        c.expect_keyword("AS", "before the view's query")?;
        let query = c.rest_text();
        if query.is_empty() {
            return Err(EngineError::syntax(
                "CREATE MATERIALIZED VIEW needs a query after AS",
            ));
        }
        return Ok(Some(StreamStatement::CreateMaterializedView(
            CreateMaterializedView {
                name,
                if_not_exists,
                options,
                query,
            },
        )));
    }
    if c.keywords(&["DROP", "MATERIALIZED", "VIEW"]) {
        let if_exists = c.keywords(&["IF", "EXISTS"]);
        let name = c.name("a view name")?;
        c.expect_end("DROP MATERIALIZED VIEW")?;
        return Ok(Some(StreamStatement::DropMaterializedView {
            name,
            if_exists,
        }));
    }
    if c.keywords(&["SHOW", "MATERIALIZED", "VIEWS"]) {
        c.expect_end("SHOW MATERIALIZED VIEWS")?;
        return Ok(Some(StreamStatement::ShowMaterializedViews));
    }
    if c.keywords(&["SHOW", "JOBS"]) {
        c.expect_end("SHOW JOBS")?;
        return Ok(Some(StreamStatement::ShowJobs));
    }
    if c.keywords(&["SHOW", "SINKS"]) {
        c.expect_end("SHOW SINKS")?;
        return Ok(Some(StreamStatement::ShowSinks));
    }
    if c.keyword("SUBSCRIBE") {
        c.keyword("TO");
        if c.next_is(&Token::LParen) {
            let text = c.rest_text();
            let inner = text
                .strip_prefix('(')
                .and_then(|t| t.strip_suffix(')'))
                .ok_or_else(|| EngineError::syntax("SUBSCRIBE (query) needs the closing )"))?;
            return Ok(Some(StreamStatement::Subscribe(SubscribeTarget::Query(
                inner.trim().to_string(),
            ))));
        }
        let name = c.name("a view, source or (query) to subscribe to")?;
        c.expect_end("SUBSCRIBE")?;
        return Ok(Some(StreamStatement::Subscribe(SubscribeTarget::Name(
            name,
        ))));
    }
    if c.keywords(&["CREATE", "SINK"]) {
        let if_not_exists = c.keywords(&["IF", "NOT", "EXISTS"]);
        let name = c.name("a sink name")?;
        c.expect_keyword("FROM", "after the sink's name")?;
        let from = c.name("the view or source the sink reads")?;
        c.expect_keyword(
            "WITH",
            "and the sink's options, e.g. WITH (connector = 'kafka', …)",
        )?;
        let options = c.options()?;
        c.expect_end("CREATE SINK")?;
        return Ok(Some(StreamStatement::CreateSink(CreateSink {
            name,
            if_not_exists,
            from,
            options,
        })));
    }
    if c.keywords(&["DROP", "SINK"]) {
        let if_exists = c.keywords(&["IF", "EXISTS"]);
        let name = c.name("a sink name")?;
        c.expect_end("DROP SINK")?;
        return Ok(Some(StreamStatement::DropSink { name, if_exists }));
    }
    Ok(None)
}

/// A duration option: `'10s'`, `'500ms'`, `'2 minutes'`, `'1 minute 30 seconds'`, or a
/// number of seconds.
pub fn parse_duration(option: &str, text: &str) -> Result<std::time::Duration, EngineError> {
    let trimmed = text.trim().to_ascii_lowercase();
    // Split a number glued to its unit: `10s`, `500ms`, `2min`.
    let spaced = match trimmed.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) if i > 0 && !trimmed.contains(' ') => {
            format!("{} {}", &trimmed[..i], &trimmed[i..])
        }
        _ => trimmed.clone(),
    };
    match crate::sources::interval_ms(&spaced) {
        Some(ms) if ms > 0 => Ok(std::time::Duration::from_millis(ms as u64)),
        _ => Err(EngineError::new(
            crate::error::ErrorKind::InvalidParameterValue,
            format!(
                "invalid value '{text}' for option {option}: use a duration such as '10s', \
                 '500ms' or '2 minutes'"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_stream_statement_text(sql: &str) -> Result<Option<StreamStatement>, EngineError> {
        parse_stream_statement(&RawStatement::from_text(sql)?)
    }

    #[test]
    fn create_materialized_view_keeps_the_query_text() {
        let sql = "CREATE MATERIALIZED VIEW IF NOT EXISTS v WITH (checkpoint_interval = '2s', idle_timeout = 5) AS\n  SELECT a, count(*) FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY a;";
        let Some(StreamStatement::CreateMaterializedView(create)) =
            parse_stream_statement_text(sql).unwrap()
        else {
            panic!("not parsed");
        };
        assert_eq!(create.name, "v");
        assert!(create.if_not_exists);
        assert_eq!(create.options["checkpoint_interval"], "2s");
        assert_eq!(create.options["idle_timeout"], "5");
        assert_eq!(
            create.query,
            "SELECT a, count(*) FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY a"
        );
    }

    #[test]
    fn subscribe_forms() {
        assert_eq!(
            parse_stream_statement_text("SUBSCRIBE TO public.v").unwrap(),
            Some(StreamStatement::Subscribe(SubscribeTarget::Name(
                "public.v".to_string()
            )))
        );
        assert_eq!(
            parse_stream_statement_text("subscribe (SELECT (1) FROM s)").unwrap(),
            Some(StreamStatement::Subscribe(SubscribeTarget::Query(
                "SELECT (1) FROM s".to_string()
            )))
        );
        assert!(parse_stream_statement_text("SUBSCRIBE v extra").is_err());
    }

    #[test]
    fn sinks_and_errors() {
        let sql =
            "CREATE SINK out FROM v WITH (connector = 'kafka', topic = 'o', kafka.acks = all)";
        let Some(StreamStatement::CreateSink(sink)) = parse_stream_statement_text(sql).unwrap()
        else {
            panic!("not parsed");
        };
        assert_eq!(sink.from, "v");
        assert_eq!(sink.options["kafka.acks"], "all");
        assert!(parse_stream_statement_text("CREATE SINK out FROM v")
            .unwrap_err()
            .message()
            .contains("WITH"));
        assert!(
            parse_stream_statement_text("CREATE MATERIALIZED VIEW v SELECT 1")
                .unwrap_err()
                .message()
                .contains("AS")
        );
        assert_eq!(parse_stream_statement_text("SELECT 1").unwrap(), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("x", "10s").unwrap().as_millis(), 10_000);
        assert_eq!(parse_duration("x", "500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("x", "2 minutes").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("x", "3").unwrap().as_secs(), 3);
        assert!(parse_duration("x", "soon").is_err());
        assert!(parse_duration("x", "0s").is_err());
    }
}
