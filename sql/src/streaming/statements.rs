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

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::EngineError;
use crate::parser::byte_offset;

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

/// Significant tokens with their byte offsets in the statement.
pub(crate) struct Cursor<'a> {
    sql: &'a str,
    tokens: Vec<(Token, usize)>,
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(sql: &'a str) -> Result<Self, EngineError> {
        let dialect = PostgreSqlDialect {};
        let tokens: Vec<TokenWithSpan> = Tokenizer::new(&dialect, sql)
            .tokenize_with_location()
            .map_err(|e| EngineError::syntax(e.to_string()))?;
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        let tokens = tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
            .map(|t| {
                let offset = byte_offset(&line_starts, sql, t.span.start);
                (t.token, offset)
            })
            .collect();
        Ok(Self { sql, tokens, at: 0 })
    }

    pub(crate) fn peek_keyword(&self, offset: usize) -> Option<String> {
        match self.tokens.get(self.at + offset) {
            Some((Token::Word(w), _)) if w.quote_style.is_none() => {
                Some(w.value.to_ascii_uppercase())
            }
            _ => None,
        }
    }

    pub(crate) fn keyword(&mut self, keyword: &str) -> bool {
        if self.peek_keyword(0).as_deref() == Some(keyword) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn keywords(&mut self, keywords: &[&str]) -> bool {
        let matches = keywords
            .iter()
            .enumerate()
            .all(|(i, k)| self.peek_keyword(i).as_deref() == Some(*k));
        if matches {
            self.at += keywords.len();
        }
        matches
    }

    pub(crate) fn expect_keyword(
        &mut self,
        keyword: &str,
        context: &str,
    ) -> Result<(), EngineError> {
        if self.keyword(keyword) {
            Ok(())
        } else {
            Err(EngineError::syntax(format!(
                "expected {keyword} {context}, found {}",
                self.describe_next()
            )))
        }
    }

    pub(crate) fn describe_next(&self) -> String {
        match self.tokens.get(self.at) {
            Some((token, _)) => format!("'{token}'"),
            None => "the end of the statement".to_string(),
        }
    }

    pub(crate) fn token(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    pub(crate) fn next_is(&self, token: &Token) -> bool {
        self.token() == Some(token)
    }

    pub(crate) fn done(&self) -> bool {
        self.tokens
            .get(self.at..)
            .is_none_or(|rest| rest.iter().all(|(t, _)| *t == Token::SemiColon))
    }

    pub(crate) fn expect_end(&self, statement: &str) -> Result<(), EngineError> {
        if self.done() {
            Ok(())
        } else {
            Err(EngineError::syntax(format!(
                "unexpected {} at the end of {statement}",
                self.describe_next()
            )))
        }
    }

    /// A possibly qualified name, as written (unquoted parts lower-cased).
    pub(crate) fn name(&mut self, what: &str) -> Result<String, EngineError> {
        let mut parts = Vec::new();
        loop {
            match self.token() {
                Some(Token::Word(w)) => {
                    parts.push(if w.quote_style.is_some() {
                        w.value.clone()
                    } else {
                        w.value.to_ascii_lowercase()
                    });
                    self.at += 1;
                }
                _ => {
                    return Err(EngineError::syntax(format!(
                        "expected {what}, found {}",
                        self.describe_next()
                    )))
                }
            }
            if self.next_is(&Token::Period) {
                self.at += 1;
            } else {
                return Ok(parts.join("."));
            }
        }
    }

    /// The text from the current token to the end (without a trailing semicolon).
    pub(crate) fn rest_text(&self) -> String {
        let from = self
            .tokens
            .get(self.at)
            .map(|(_, o)| *o)
            .unwrap_or(self.sql.len());
        self.sql[from..]
            .trim()
            .trim_end_matches(';')
            .trim()
            .to_string()
    }

    /// `( key = value, … )`: keys may be dotted or quoted; values strings, numbers or words.
    pub(crate) fn options(&mut self) -> Result<BTreeMap<String, String>, EngineError> {
        let mut options = BTreeMap::new();
        if !self.next_is(&Token::LParen) {
            return Err(EngineError::syntax("expected ( after WITH"));
        }
        self.at += 1;
        loop {
            if self.next_is(&Token::RParen) {
                self.at += 1;
                return Ok(options);
            }
            let mut key = String::new();
            loop {
                match self.token() {
                    Some(Token::Word(w)) => key.push_str(&w.value.to_ascii_lowercase()),
                    Some(Token::SingleQuotedString(s)) => key.push_str(&s.to_ascii_lowercase()),
                    _ => {
                        return Err(EngineError::syntax(format!(
                            "expected an option name, found {}",
                            self.describe_next()
                        )))
                    }
                }
                self.at += 1;
                if self.next_is(&Token::Period) {
                    key.push('.');
                    self.at += 1;
                } else {
                    break;
                }
            }
            if !self.next_is(&Token::Eq) {
                return Err(EngineError::syntax(format!(
                    "expected = after option {key}"
                )));
            }
            self.at += 1;
            let mut value = String::new();
            if self.next_is(&Token::Minus) {
                value.push('-');
                self.at += 1;
            }
            match self.token() {
                Some(Token::SingleQuotedString(s)) | Some(Token::DoubleQuotedString(s)) => {
                    value.push_str(s)
                }
                Some(Token::Number(n, _)) => value.push_str(n),
                Some(Token::Word(w)) => value.push_str(&w.value),
                _ => {
                    return Err(EngineError::syntax(format!(
                        "expected a value for option {key}, found {}",
                        self.describe_next()
                    )))
                }
            }
            self.at += 1;
            if options.insert(key.clone(), value).is_some() {
                return Err(EngineError::syntax(format!("option {key} is given twice")));
            }
            if self.next_is(&Token::Comma) {
                self.at += 1;
            } else if !self.next_is(&Token::RParen) {
                return Err(EngineError::syntax(format!(
                    "expected , or ) after option {key}, found {}",
                    self.describe_next()
                )));
            }
        }
    }
}

/// Recognises a statement about continuous queries; `None` for anything else.
pub fn parse_stream_statement(sql: &str) -> Result<Option<StreamStatement>, EngineError> {
    let mut c = Cursor::new(sql)?;
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

    #[test]
    fn create_materialized_view_keeps_the_query_text() {
        let sql = "CREATE MATERIALIZED VIEW IF NOT EXISTS v WITH (checkpoint_interval = '2s', idle_timeout = 5) AS\n  SELECT a, count(*) FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY a;";
        let Some(StreamStatement::CreateMaterializedView(create)) =
            parse_stream_statement(sql).unwrap()
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
            parse_stream_statement("SUBSCRIBE TO public.v").unwrap(),
            Some(StreamStatement::Subscribe(SubscribeTarget::Name(
                "public.v".to_string()
            )))
        );
        assert_eq!(
            parse_stream_statement("subscribe (SELECT (1) FROM s)").unwrap(),
            Some(StreamStatement::Subscribe(SubscribeTarget::Query(
                "SELECT (1) FROM s".to_string()
            )))
        );
        assert!(parse_stream_statement("SUBSCRIBE v extra").is_err());
    }

    #[test]
    fn sinks_and_errors() {
        let sql =
            "CREATE SINK out FROM v WITH (connector = 'kafka', topic = 'o', kafka.acks = all)";
        let Some(StreamStatement::CreateSink(sink)) = parse_stream_statement(sql).unwrap() else {
            panic!("not parsed");
        };
        assert_eq!(sink.from, "v");
        assert_eq!(sink.options["kafka.acks"], "all");
        assert!(parse_stream_statement("CREATE SINK out FROM v")
            .unwrap_err()
            .message()
            .contains("WITH"));
        assert!(
            parse_stream_statement("CREATE MATERIALIZED VIEW v SELECT 1")
                .unwrap_err()
                .message()
                .contains("AS")
        );
        assert_eq!(parse_stream_statement("SELECT 1").unwrap(), None);
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
