//! The front door: text to [`Statement`]s, in one place.
//!
//! Every statement any frontend sends, and every statement the catalog replays, is read here:
//!
//! 1. [`tokens::split`] tokenises the request once and cuts it into [`RawStatement`]s (text,
//!    span in the request, significant tokens).
//! 2. The token-stage compatibility rules ([`crate::compat`]) may rewrite a statement's tokens
//!    (Flink's window syntax, Grafana's search-path subquery, `?` placeholders…).
//! 3. [`recognise`] decides from the leading keywords which grammar reads the statement:
//!    Freshet's own (sessions and sources: [`own`], continuous queries:
//!    [`crate::streaming::statements`], models: [`crate::models::statements`]), DataFusion's
//!    extensions (`CREATE EXTERNAL TABLE`, `COPY … TO`) or plain SQL (sqlparser's parser over
//!    the same tokens).
//! 4. Plain SQL gets the statement-stage compatibility rules.
//!
//! A new statement is added to [`recognise`] and given a grammar; nothing else looks at text.

pub mod copy;
pub(crate) mod own;
pub mod tokens;

use datafusion::sql::parser::{
    CopyToStatement, CreateExternalTable, DFParserBuilder, Statement as DfStatement,
};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::Token;
use std::borrow::Cow;

pub use own::{OwnStatement, TransactionKind};
pub use tokens::{split, RawStatement};

use crate::compat::{self, ActiveRules, PgCatalogCompat};
use crate::error::EngineError;
use crate::models::statements::ModelStatement;
use crate::session::Session;
use crate::streaming::statements::StreamStatement;
use tokens::Cursor;

/// One statement, read.
#[derive(Debug, Clone)]
pub enum Statement {
    /// Only comments or whitespace.
    Empty,
    /// Session settings, transaction control, `SHOW TABLES`, sources.
    Own(OwnStatement),
    /// Materialized views, sinks, `SUBSCRIBE`, `SHOW JOBS`.
    Stream(Box<StreamStatement>),
    /// `CREATE / DROP / REFRESH MODEL`, `SHOW MODELS`.
    Model(Box<ModelStatement>),
    /// DataFusion's `CREATE EXTERNAL TABLE`.
    CreateExternalTable(Box<CreateExternalTable>),
    /// DataFusion's `COPY … TO 'location'`.
    CopyTo(Box<CopyToStatement>),
    /// `COPY (statement) TO STDOUT`: the statement's rows as COPY data to the client.
    CopyToClient {
        query: Box<RawStatement>,
        format: copy::CopyFormat,
    },
    /// Everything else: planned by DataFusion. `as_written` is the statement before the
    /// statement-stage compatibility rules, which result column names are taken from.
    Sql {
        statement: Box<ast::Statement>,
        as_written: Option<Box<ast::Statement>>,
    },
}

/// A statement with where it came from.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    /// The statement as the client wrote it (what the catalog stores).
    pub text: String,
    /// Where it is in the request (bytes).
    pub span: std::ops::Range<usize>,
    pub statement: Statement,
    /// The token-stage compatibility rules that changed it.
    pub rules_applied: Vec<&'static str>,
}

/// Which grammar reads a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Empty,
    Own,
    Stream,
    Model,
    DataFusionExtension,
    Sql,
}

/// The one recogniser: which grammar a statement belongs to, from its leading keywords.
pub(crate) fn recognise(raw: &RawStatement) -> Kind {
    let c = Cursor::new(raw);
    let Some(first) = c.peek_keyword(0) else {
        return if raw.is_empty() {
            Kind::Empty
        } else {
            Kind::Sql
        };
    };
    let second = c.peek_keyword(1);
    match (first.as_str(), second.as_deref()) {
        (
            "SET" | "RESET" | "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT"
            | "SAVEPOINT" | "RELEASE" | "DISCARD" | "UNLISTEN" | "DEALLOCATE" | "CLOSE",
            _,
        ) => Kind::Own,
        ("SHOW", Some("MODELS")) => Kind::Model,
        ("SHOW", Some("MATERIALIZED" | "JOBS" | "SINKS")) => Kind::Stream,
        ("SHOW", _) => Kind::Own,
        ("SUBSCRIBE", _) => Kind::Stream,
        ("REFRESH", Some("MODEL")) => Kind::Model,
        ("COPY", _) => Kind::DataFusionExtension,
        ("CREATE" | "DROP", _) => {
            let offset = if c.looking_at(&["CREATE", "OR", "REPLACE"]) {
                3
            } else {
                1
            };
            match c.peek_keyword(offset).as_deref() {
                Some("MODEL") => Kind::Model,
                Some("MATERIALIZED" | "SINK") => Kind::Stream,
                Some("SOURCE") => Kind::Own,
                _ if (1..5).any(|i| c.peek_keyword(i).as_deref() == Some("EXTERNAL")) => {
                    Kind::DataFusionExtension
                }
                _ => Kind::Sql,
            }
        }
        _ => Kind::Sql,
    }
}

/// Reads one statement.
pub(crate) fn parse(
    raw: &RawStatement,
    session: &Session,
    rules: &ActiveRules,
    pg_catalog: &PgCatalogCompat,
) -> Result<ParsedStatement, EngineError> {
    let (rewritten, rules_applied) = compat::apply_token_rules(Cow::Borrowed(raw), session, rules)?;
    let statement = read(&rewritten, rules, pg_catalog)?;
    Ok(ParsedStatement {
        text: raw.text.clone(),
        span: raw.span.clone(),
        statement,
        rules_applied,
    })
}

fn read(
    raw: &RawStatement,
    rules: &ActiveRules,
    pg_catalog: &PgCatalogCompat,
) -> Result<Statement, EngineError> {
    let kind = recognise(raw);
    let statement = match kind {
        Kind::Empty => Statement::Empty,
        Kind::Own => match own::parse_own(raw)? {
            Some(own) => Statement::Own(own),
            None => read_sql(raw, rules, pg_catalog)?,
        },
        Kind::Stream => match crate::streaming::statements::parse_stream_statement(raw)? {
            Some(stream) => Statement::Stream(Box::new(stream)),
            None => read_sql(raw, rules, pg_catalog)?,
        },
        Kind::Model => match crate::models::statements::parse_model_statement(raw)? {
            Some(model) => Statement::Model(Box::new(model)),
            None => read_sql(raw, rules, pg_catalog)?,
        },
        Kind::DataFusionExtension => {
            if let Some((query, format)) = copy::parse_copy_to_client(raw)? {
                return Ok(Statement::CopyToClient {
                    query: Box::new(query),
                    format,
                });
            }
            let dialect = PostgreSqlDialect {};
            let mut parser = DFParserBuilder::new(raw.tokens_with_spans(0))
                .with_dialect(&dialect)
                .build()
                .map_err(|e| EngineError::syntax(e.to_string()))?;
            let statement = parser
                .parse_statement()
                .map_err(|e| EngineError::syntax(e.to_string()))?;
            expect_end(&parser.parser.peek_token().token)?;
            match statement {
                DfStatement::CreateExternalTable(cet) => {
                    Statement::CreateExternalTable(Box::new(cet))
                }
                DfStatement::CopyTo(copy) => Statement::CopyTo(Box::new(copy)),
                DfStatement::Statement(statement) => {
                    let as_written = statement.clone();
                    let mut statement = *statement;
                    compat::apply_statement_rules(&mut statement, rules);
                    Statement::Sql {
                        statement: Box::new(statement),
                        as_written: Some(as_written),
                    }
                }
                other => {
                    return Err(EngineError::unsupported(format!(
                        "statement not supported: {other}"
                    )))
                }
            }
        }
        Kind::Sql => read_sql(raw, rules, pg_catalog)?,
    };
    Ok(statement)
}

fn expect_end(next: &Token) -> Result<(), EngineError> {
    match next {
        Token::EOF => Ok(()),
        other => Err(EngineError::syntax(format!(
            "expected the end of the statement, found {other}"
        ))),
    }
}

/// Whether a statement names a `pg_*` relation or function: only such catalog queries can be
/// one of the client queries [`compat::PG_CATALOG_CLIENT_QUERIES`] replaces.
fn mentions_pg_catalog(raw: &RawStatement) -> bool {
    raw.token_list().any(|t| {
        matches!(t, Token::Word(w) if w.value.len() > 3
            && w.value.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("pg_")))
    })
}

fn read_sql(
    raw: &RawStatement,
    rules: &ActiveRules,
    pg_catalog: &PgCatalogCompat,
) -> Result<Statement, EngineError> {
    let plain = || -> Result<ast::Statement, EngineError> {
        let mut parser = raw.sqlparser(0);
        let statement = parser
            .parse_statement()
            .map_err(|e| EngineError::syntax(e.to_string()))?;
        expect_end(&parser.peek_token().token)?;
        Ok(statement)
    };
    let (mut statement, as_written) =
        if rules.on(compat::PG_CATALOG_CLIENT_QUERIES) && mentions_pg_catalog(raw) {
            // The replacements of whole client queries are matched by datafusion-pg-catalog on its
            // own tokens, so such a statement is read by its parser (which applies its rewrites too).
            let mut statements = pg_catalog.parse_catalog_query(&raw.text)?;
            if statements.len() != 1 {
                return Err(EngineError::syntax(format!(
                    "expected one statement, found {}",
                    statements.len()
                )));
            }
            // Names come from the statement as written, which this path does not keep: read it
            // once more (catalog queries only).
            (statements.remove(0), plain().ok())
        } else {
            let statement = plain()?;
            let as_written = statement.clone();
            if rules.on(compat::PG_CATALOG_REWRITES) {
                (pg_catalog.rewrite(statement), Some(as_written))
            } else {
                (statement, Some(as_written))
            }
        };
    compat::apply_statement_rules(&mut statement, rules);
    Ok(Statement::Sql {
        statement: Box::new(statement),
        as_written: as_written.map(Box::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> Kind {
        recognise(&RawStatement::from_text(sql).unwrap())
    }

    #[test]
    fn statements_are_recognised_by_their_leading_keywords() {
        let cases = [
            ("SET x = 1", Kind::Own),
            ("show tables", Kind::Own),
            ("SHOW MODELS", Kind::Model),
            ("SHOW JOBS", Kind::Stream),
            ("SHOW MATERIALIZED VIEWS", Kind::Stream),
            (
                "CREATE OR REPLACE MODEL m USING als AS SELECT 1",
                Kind::Model,
            ),
            ("CREATE MATERIALIZED VIEW v AS SELECT 1", Kind::Stream),
            ("DROP SINK s", Kind::Stream),
            ("CREATE SOURCE s WITH (connector = 'datagen')", Kind::Own),
            (
                "CREATE UNBOUNDED EXTERNAL TABLE t STORED AS CSV LOCATION 'x'",
                Kind::DataFusionExtension,
            ),
            ("COPY t TO 'x.parquet'", Kind::DataFusionExtension),
            ("CREATE TABLE t (a INT)", Kind::Sql),
            ("WITH a AS (SELECT 1) SELECT * FROM a", Kind::Sql),
            ("-- nothing", Kind::Empty),
        ];
        for (sql, expected) in cases {
            assert_eq!(kind(sql), expected, "{sql}");
        }
    }

    #[test]
    fn catalog_detection_is_safe_on_any_text() {
        for (sql, expected) in [
            ("SELECT * FROM pg_class", true),
            ("SELECT ñññ, 'pg_x'", false),
            ("SELECT \"p€g_x\"", false),
        ] {
            assert_eq!(
                mentions_pg_catalog(&RawStatement::from_text(sql).unwrap()),
                expected,
                "{sql}"
            );
        }
    }

    #[test]
    fn syntax_errors_say_where() {
        let session = Session::for_tests();
        let raw = RawStatement::from_text("SELECT (1 +\n  ) AS x").unwrap();
        let err = parse(
            &raw,
            &session,
            &ActiveRules::default(),
            &PgCatalogCompat::default(),
        )
        .unwrap_err();
        assert!(
            err.message().contains("Line: 2, Column: 3"),
            "{}",
            err.message()
        );
        let raw = RawStatement::from_text("CREATE SINK s FROM v WITH connector").unwrap();
        let err = parse(
            &raw,
            &session,
            &ActiveRules::default(),
            &PgCatalogCompat::default(),
        )
        .unwrap_err();
        assert!(
            err.message().contains("line 1, column 27"),
            "{}",
            err.message()
        );
    }
}
