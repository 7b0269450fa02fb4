//! The grammar of the statements the engine answers itself, before anything reaches DataFusion:
//! session settings (`SET`, `SHOW`, `RESET`), transaction control (accepted as no-ops),
//! `SHOW TABLES`, and sources (`CREATE` / `DROP SOURCE`, `SHOW SOURCES`).

use datafusion::sql::sqlparser::tokenizer::Token;

use super::tokens::RawStatement;
use crate::error::EngineError;

/// A statement the engine answers without DataFusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnStatement {
    /// `SET [SESSION | LOCAL] name { = | TO } value`, `SET TIME ZONE value`.
    /// `value` is `None` for `DEFAULT`.
    Set { name: String, value: Option<String> },
    /// `SET TRANSACTION ...` and `SET SESSION CHARACTERISTICS ...`: accepted, nothing changes.
    SetTransaction,
    /// `RESET name`, or `RESET ALL` (`name` is `None`).
    Reset { name: Option<String> },
    /// `SHOW name`, `SHOW ALL`, `SHOW TRANSACTION ISOLATION LEVEL`.
    Show { name: String },
    /// `SHOW TABLES`: the tables and views of the catalog.
    ShowTables,
    /// `BEGIN`, `COMMIT`, `ROLLBACK` and friends: Freshet has no multi-statement transactions,
    /// so they are accepted and do nothing. The tag is what PostgreSQL would answer.
    Transaction {
        tag: &'static str,
        kind: TransactionKind,
    },
    /// `DISCARD ALL`: forget session settings.
    DiscardAll,
    /// `DEALLOCATE [PREPARE] ALL`: drivers (psycopg) send it after DDL to drop their prepared
    /// statements; protocol-level statements are per connection and need nothing here.
    DeallocateAll,
    /// `CLOSE ALL` and `UNLISTEN …`: Freshet has neither cursors nor notification channels,
    /// so there is nothing to close or stop listening to. Connection pools (asyncpg) send them
    /// when a connection is given back. The tag is PostgreSQL's.
    NoOp { tag: &'static str },
    /// `CREATE SOURCE …`: a Kafka topic or a generator as a table.
    CreateSource(Box<crate::sources::CreateSource>),
    /// `DROP SOURCE [IF EXISTS] name`.
    DropSource { name: String, if_exists: bool },
    /// `SHOW SOURCES`: every source with its connector and counters.
    ShowSources,
}

/// Whether a transaction statement opens or closes a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    /// BEGIN / START TRANSACTION.
    Start,
    /// COMMIT / ROLLBACK / END / ABORT.
    End,
    /// SAVEPOINT / RELEASE / ROLLBACK TO: inside a block, no change of state.
    Within,
}

/// The upper-cased word at `index`, if that token is an unquoted word.
pub(crate) fn keyword_at(tokens: &[Token], index: usize) -> Option<String> {
    match tokens.get(index) {
        Some(Token::Word(word)) if word.quote_style.is_none() => {
            Some(word.value.to_ascii_uppercase())
        }
        _ => None,
    }
}

/// Whether the statement starts with the given keywords.
pub(crate) fn starts_with(tokens: &[Token], keywords: &[&str]) -> bool {
    keywords
        .iter()
        .enumerate()
        .all(|(i, k)| keyword_at(tokens, i).as_deref() == Some(*k))
}

/// Reads a statement the engine answers itself; `None` hands it to the SQL planner (`SHOW
/// COLUMNS` and the other `SHOW`s DataFusion knows, `DEALLOCATE name`).
pub(crate) fn parse_own(raw: &RawStatement) -> Result<Option<OwnStatement>, EngineError> {
    let tokens: Vec<Token> = raw.token_list().cloned().collect();
    let Some(first) = keyword_at(&tokens, 0) else {
        return Ok(None);
    };
    let statement = match first.as_str() {
        "SET" => Some(parse_set(&tokens[1..])?),
        "RESET" => Some(parse_reset(&tokens[1..])?),
        "SHOW" => parse_show(&tokens[1..])?,
        "BEGIN" | "START" => Some(OwnStatement::Transaction {
            tag: "BEGIN",
            kind: TransactionKind::Start,
        }),
        "COMMIT" | "END" => Some(OwnStatement::Transaction {
            tag: "COMMIT",
            kind: TransactionKind::End,
        }),
        "ROLLBACK" | "ABORT" => Some(parse_rollback(&tokens)),
        "SAVEPOINT" => Some(OwnStatement::Transaction {
            tag: "SAVEPOINT",
            kind: TransactionKind::Within,
        }),
        "RELEASE" => Some(OwnStatement::Transaction {
            tag: "RELEASE",
            kind: TransactionKind::Within,
        }),
        "DISCARD" => Some(OwnStatement::DiscardAll),
        "DEALLOCATE"
            if keyword_at(&tokens, 1).as_deref() == Some("ALL")
                || starts_with(&tokens[1..], &["PREPARE", "ALL"]) =>
        {
            Some(OwnStatement::DeallocateAll)
        }
        "CLOSE" if keyword_at(&tokens, 1).as_deref() == Some("ALL") => Some(OwnStatement::NoOp {
            tag: "CLOSE CURSOR ALL",
        }),
        "UNLISTEN" => Some(OwnStatement::NoOp { tag: "UNLISTEN" }),
        "CREATE" if starts_with(&tokens, &["CREATE", "SOURCE"]) => Some(
            OwnStatement::CreateSource(Box::new(crate::sources::parse_create_source(raw)?)),
        ),
        "DROP" if starts_with(&tokens, &["DROP", "SOURCE"]) => {
            Some(parse_drop_source(&tokens[2..])?)
        }
        _ => None,
    };
    Ok(statement)
}

fn parse_drop_source(tokens: &[Token]) -> Result<OwnStatement, EngineError> {
    let if_exists = starts_with(tokens, &["IF", "EXISTS"]);
    let rest = if if_exists { &tokens[2..] } else { tokens };
    let (name, used) = parse_name(rest)?;
    if used != rest.len() {
        return Err(EngineError::syntax("DROP SOURCE takes one source name"));
    }
    Ok(OwnStatement::DropSource { name, if_exists })
}

fn parse_rollback(tokens: &[Token]) -> OwnStatement {
    let to_savepoint = tokens
        .iter()
        .skip(1)
        .take(2)
        .any(|t| matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case("TO")));
    OwnStatement::Transaction {
        tag: "ROLLBACK",
        kind: if to_savepoint {
            TransactionKind::Within
        } else {
            TransactionKind::End
        },
    }
}

/// Reads a possibly dotted setting name (`a`, `datafusion.execution.batch_size`) starting at
/// `tokens[0]`, returning it lower-cased and the number of tokens used.
fn parse_name(tokens: &[Token]) -> Result<(String, usize), EngineError> {
    let mut parts = Vec::new();
    let mut used = 0;
    loop {
        match tokens.get(used) {
            Some(Token::Word(word)) => {
                parts.push(word.value.to_ascii_lowercase());
                used += 1;
            }
            _ => return Err(EngineError::syntax("expected a setting name")),
        }
        if matches!(tokens.get(used), Some(Token::Period)) {
            used += 1;
        } else {
            return Ok((parts.join("."), used));
        }
    }
}

/// Renders the value tokens of a SET: strings lose their quotes, a list is joined with ", ".
fn parse_value(tokens: &[Token]) -> Result<Option<String>, EngineError> {
    if tokens.is_empty() {
        return Err(EngineError::syntax("SET needs a value"));
    }
    if tokens.len() == 1 && keyword_at(tokens, 0).as_deref() == Some("DEFAULT") {
        return Ok(None);
    }
    let mut items: Vec<String> = Vec::new();
    let mut current = String::new();
    for token in tokens {
        match token {
            Token::Comma => items.push(std::mem::take(&mut current)),
            Token::SingleQuotedString(s)
            | Token::DoubleQuotedString(s)
            | Token::EscapedStringLiteral(s)
            | Token::NationalStringLiteral(s) => current.push_str(s),
            Token::Word(word) => current.push_str(&word.value),
            Token::Number(n, _) => current.push_str(n),
            Token::Minus => current.push('-'),
            Token::Plus => current.push('+'),
            Token::Period => current.push('.'),
            other => current.push_str(&other.to_string()),
        }
    }
    items.push(current);
    Ok(Some(items.join(", ")))
}

fn parse_set(tokens: &[Token]) -> Result<OwnStatement, EngineError> {
    let mut rest = tokens;
    if matches!(
        keyword_at(rest, 0).as_deref(),
        Some("SESSION") | Some("LOCAL")
    ) {
        if keyword_at(rest, 1).as_deref() == Some("CHARACTERISTICS") {
            return Ok(OwnStatement::SetTransaction);
        }
        if keyword_at(rest, 1).as_deref() == Some("AUTHORIZATION") {
            return Ok(OwnStatement::Set {
                name: "session_authorization".to_string(),
                value: parse_value(&rest[2..])?,
            });
        }
        rest = &rest[1..];
    }
    if keyword_at(rest, 0).as_deref() == Some("TRANSACTION") {
        return Ok(OwnStatement::SetTransaction);
    }
    if starts_with(rest, &["TIME", "ZONE"]) {
        let value = if keyword_at(rest, 2).as_deref() == Some("LOCAL") {
            None
        } else {
            parse_value(&rest[2..])?
        };
        return Ok(OwnStatement::Set {
            name: "timezone".to_string(),
            value,
        });
    }
    if starts_with(rest, &["NAMES"]) {
        return Ok(OwnStatement::Set {
            name: "client_encoding".to_string(),
            value: parse_value(&rest[1..])?,
        });
    }
    let (name, used) = parse_name(rest)?;
    rest = &rest[used..];
    match rest.first() {
        Some(Token::Eq) => rest = &rest[1..],
        Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("TO") => rest = &rest[1..],
        _ => {
            return Err(EngineError::syntax(format!(
                "expected = or TO after SET {name}"
            )))
        }
    }
    Ok(OwnStatement::Set {
        name,
        value: parse_value(rest)?,
    })
}

fn parse_reset(tokens: &[Token]) -> Result<OwnStatement, EngineError> {
    if keyword_at(tokens, 0).as_deref() == Some("ALL") {
        return Ok(OwnStatement::Reset { name: None });
    }
    if starts_with(tokens, &["TIME", "ZONE"]) {
        return Ok(OwnStatement::Reset {
            name: Some("timezone".to_string()),
        });
    }
    let (name, _) = parse_name(tokens)?;
    Ok(OwnStatement::Reset { name: Some(name) })
}

fn parse_show(tokens: &[Token]) -> Result<Option<OwnStatement>, EngineError> {
    let Some(first) = keyword_at(tokens, 0) else {
        // SHOW "quoted name"
        let (name, _) = parse_name(tokens)?;
        return Ok(Some(OwnStatement::Show { name }));
    };
    let statement = match first.as_str() {
        "TABLES" => Some(OwnStatement::ShowTables),
        "SOURCES" => Some(OwnStatement::ShowSources),
        // Statements DataFusion knows: leave them to it.
        "COLUMNS" | "FULL" | "EXTENDED" | "FUNCTIONS" | "CREATE" => None,
        "TRANSACTION" if starts_with(tokens, &["TRANSACTION", "ISOLATION", "LEVEL"]) => {
            Some(OwnStatement::Show {
                name: "transaction_isolation".to_string(),
            })
        }
        "TIME" if starts_with(tokens, &["TIME", "ZONE"]) => Some(OwnStatement::Show {
            name: "timezone".to_string(),
        }),
        "SESSION" if starts_with(tokens, &["SESSION", "AUTHORIZATION"]) => {
            Some(OwnStatement::Show {
                name: "session_authorization".to_string(),
            })
        }
        _ => {
            let (name, _) = parse_name(tokens)?;
            Some(OwnStatement::Show { name })
        }
    };
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_own(sql: &str) -> Result<Option<OwnStatement>, EngineError> {
        super::parse_own(&RawStatement::from_text(sql)?)
    }

    #[test]
    fn set_forms_are_recognised() {
        let cases = [
            (
                "SET application_name = 'psql'",
                "application_name",
                Some("psql"),
            ),
            (
                "set extra_float_digits to 3",
                "extra_float_digits",
                Some("3"),
            ),
            (
                "SET SESSION DateStyle TO ISO, MDY",
                "datestyle",
                Some("ISO, MDY"),
            ),
            ("SET TIME ZONE 'UTC'", "timezone", Some("UTC")),
            ("SET search_path TO DEFAULT", "search_path", None),
            (
                "SET datafusion.execution.batch_size = 1024",
                "datafusion.execution.batch_size",
                Some("1024"),
            ),
            (
                "SET statement_timeout = -1",
                "statement_timeout",
                Some("-1"),
            ),
        ];
        for (sql, name, value) in cases {
            assert_eq!(
                parse_own(sql).unwrap(),
                Some(OwnStatement::Set {
                    name: name.to_string(),
                    value: value.map(str::to_string)
                }),
                "{sql}"
            );
        }
    }

    #[test]
    fn show_forms_are_recognised_and_datafusion_ones_left_alone() {
        assert_eq!(
            parse_own("SHOW TABLES").unwrap(),
            Some(OwnStatement::ShowTables)
        );
        assert_eq!(
            parse_own("show transaction isolation level").unwrap(),
            Some(OwnStatement::Show {
                name: "transaction_isolation".to_string()
            })
        );
        assert_eq!(parse_own("SHOW COLUMNS FROM t").unwrap(), None);
        assert_eq!(parse_own("SELECT 1").unwrap(), None);
    }

    #[test]
    fn deallocate_all_is_ours_and_deallocate_name_is_datafusions() {
        for sql in ["DEALLOCATE ALL", "deallocate prepare all"] {
            assert_eq!(parse_own(sql).unwrap(), Some(OwnStatement::DeallocateAll));
        }
        for (sql, tag) in [
            ("CLOSE ALL", "CLOSE CURSOR ALL"),
            ("UNLISTEN *", "UNLISTEN"),
        ] {
            assert_eq!(parse_own(sql).unwrap(), Some(OwnStatement::NoOp { tag }));
        }
        assert_eq!(parse_own("DEALLOCATE my_plan").unwrap(), None);
    }

    #[test]
    fn transaction_statements_are_no_ops_with_postgres_tags() {
        let begin = parse_own("BEGIN ISOLATION LEVEL READ COMMITTED").unwrap();
        assert!(matches!(
            begin,
            Some(OwnStatement::Transaction {
                tag: "BEGIN",
                kind: TransactionKind::Start
            })
        ));
        let to_savepoint = parse_own("ROLLBACK TO SAVEPOINT s1").unwrap();
        assert!(matches!(
            to_savepoint,
            Some(OwnStatement::Transaction {
                kind: TransactionKind::Within,
                ..
            })
        ));
    }

    #[test]
    fn set_without_value_is_a_syntax_error() {
        let err = parse_own("SET application_name =").unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Syntax);
    }
}
