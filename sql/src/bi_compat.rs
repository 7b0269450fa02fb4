//! Grafana's search-path expansion, answered from the session.
//!
//! (`current_setting()` itself is a per-session function, see `pg_compat::functions`.)
//!
//! Grafana expands the search path with a subquery that uses a scalar function in FROM
//! (`string_to_array(…) s`) and array subscripts by a column, which DataFusion cannot plan. That
//! subquery, recognised token by token, is replaced by the schema names it would return for this
//! session: the entries of `search_path`, trimmed, with `"$user"` standing for the user.
//!
//! The schema names are taken when the statement is prepared: a named prepared statement run
//! again after `SET search_path` still lists the old ones. Only queries (`SELECT`, `WITH`,
//! `VALUES`) are rewritten: a view's text keeps its calls.

use std::borrow::Cow;
use std::sync::OnceLock;

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::session::Session;
use crate::text_rewrite::{apply_edits, is_word, significant_pieces, Edit, Piece};

/// Grafana's search-path expansion (postgresMetaQuery.ts, `buildSchemaConstraint`), compared
/// token by token, so whitespace and letter case do not matter.
const GRAFANA_SEARCH_PATH_SUBQUERY: &str = r#"SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s"#;

/// Rewrites Grafana's search-path subquery for `session`.
/// Returns the text unchanged (borrowed) when there is nothing to rewrite or it cannot be
/// tokenized (the parser then reports the error).
pub(crate) fn rewrite_session_lookups<'a>(sql: &'a str, session: &Session) -> Cow<'a, str> {
    if !sql.to_ascii_lowercase().contains("current_setting") {
        return Cow::Borrowed(sql);
    }
    let Some(pieces) = significant_pieces(sql) else {
        return Cow::Borrowed(sql);
    };
    if !is_query(&pieces) {
        return Cow::Borrowed(sql);
    }
    let pattern = grafana_pattern();
    let mut edits = Vec::new();
    let mut index = 0;
    while index < pieces.len() {
        if matches_at(&pieces, index, pattern) {
            let last = &pieces[index + pattern.len() - 1];
            edits.push(Edit {
                start: pieces[index].start,
                end: last.end,
                text: search_path_schemas(session),
            });
            index += pattern.len();
        } else {
            index += 1;
        }
    }
    apply_edits(sql, edits)
}

fn is_query(pieces: &[Piece]) -> bool {
    let first = pieces.iter().find(|p| p.token != Token::LParen);
    ["select", "with", "values"]
        .iter()
        .any(|keyword| is_word(first, keyword))
}

fn grafana_pattern() -> &'static [Token] {
    static PATTERN: OnceLock<Vec<Token>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        significant_pieces(GRAFANA_SEARCH_PATH_SUBQUERY)
            .expect("the Grafana search-path pattern tokenizes")
            .into_iter()
            .map(|p| p.token)
            .collect()
    })
}

fn matches_at(pieces: &[Piece], index: usize, pattern: &[Token]) -> bool {
    pieces.len() >= index + pattern.len()
        && pieces[index..]
            .iter()
            .zip(pattern)
            .all(|(piece, expected)| same_token(&piece.token, expected))
}

/// Token equality with unquoted words compared without regard to case.
fn same_token(a: &Token, b: &Token) -> bool {
    match (a, b) {
        (Token::Word(x), Token::Word(y)) if x.quote_style.is_none() && y.quote_style.is_none() => {
            x.value.eq_ignore_ascii_case(&y.value)
        }
        _ => a == b,
    }
}

/// What Grafana's subquery returns for this session, as the inside of `IN ( … )`.
fn search_path_schemas(session: &Session) -> String {
    let search_path = session.get("search_path").unwrap_or_default();
    let schemas: Vec<String> = search_path
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            if entry == "\"$user\"" {
                quote_literal(session.user())
            } else {
                quote_literal(entry)
            }
        })
        .collect();
    if schemas.is_empty() {
        // An empty search path: the subquery returns no rows.
        return "SELECT CAST(NULL AS TEXT) WHERE false".to_string();
    }
    schemas.join(", ")
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn session() -> Session {
        Session::new("grafana", SessionContext::new())
    }

    fn rewrite(sql: &str, session: &Session) -> String {
        rewrite_session_lookups(sql, session).into_owned()
    }

    #[test]
    fn other_statements_and_other_calls_are_left_alone() {
        let session = session();
        for sql in [
            "CREATE VIEW v AS SELECT current_setting('timezone')",
            "SELECT current_setting('timezone')",
            "SELECT 'current_setting(''search_path'')'",
        ] {
            assert_eq!(rewrite(sql, &session), sql);
        }
    }

    #[test]
    fn grafana_search_path_subquery_lists_the_schemas() {
        let session = session();
        let sql = format!(
            "SELECT 1 WHERE quote_ident(table_schema) IN (\n  {GRAFANA_SEARCH_PATH_SUBQUERY}\n  )"
        );
        assert_eq!(
            rewrite(&sql, &session),
            "SELECT 1 WHERE quote_ident(table_schema) IN (\n  'public'\n  )"
        );
        session
            .set("search_path", Some("\"$user\", public, \"My Schema\""))
            .unwrap();
        assert_eq!(
            rewrite(&sql, &session),
            "SELECT 1 WHERE quote_ident(table_schema) IN (\n  'grafana', 'public', '\"My Schema\"'\n  )"
        );
        session.set("search_path", Some("")).unwrap();
        assert!(
            rewrite(&sql, &session).contains("IN (\n  SELECT CAST(NULL AS TEXT) WHERE false\n  )")
        );
    }
}
