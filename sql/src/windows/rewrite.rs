//! Flink's window syntax, rewritten to the plain call before the SQL is parsed.
//!
//! Flink writes `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE))`, optionally with
//! named arguments (`DATA => TABLE t, TIMECOL => DESCRIPTOR(ts), SIZE => …`; HOP also takes
//! `SLIDE`). DataFusion's parser knows neither `TABLE(…)` in FROM nor `DESCRIPTOR`, so the
//! statement is rewritten at the token level to `tumble(t, ts, INTERVAL '1' MINUTE)`. The
//! tokenizer keeps strings, quoted identifiers and comments intact, and every argument keeps its
//! original text. Window function names are also lower-cased, because DataFusion looks table
//! functions up by the name exactly as written.

use std::borrow::Cow;

use datafusion::sql::sqlparser::tokenizer::Token;

use super::spec::WindowKind;
use crate::error::EngineError;
use crate::text_rewrite::{apply_edits, is_token, is_word, significant_pieces, Edit, Piece};

/// Rewrites Flink's `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))` and `TABLE(HOP(TABLE t,
/// DESCRIPTOR(ts), slide, size))` (positional or named arguments) to `tumble(t, ts, size)` and
/// `hop(t, ts, slide, size)`, and lower-cases the names of plain `TUMBLE(…)` / `HOP(…)` calls.
/// Returns the text unchanged (borrowed) when there is nothing to rewrite, and also when it
/// cannot be tokenized: the parser then reports that error.
pub(crate) fn rewrite_flink_window_syntax(sql: &str) -> Result<Cow<'_, str>, EngineError> {
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("tumble") && !lower.contains("hop") {
        return Ok(Cow::Borrowed(sql));
    }
    let Some(pieces) = significant_pieces(sql) else {
        return Ok(Cow::Borrowed(sql));
    };
    let mut edits = Vec::new();
    let mut index = 0;
    while index < pieces.len() {
        match window_call_at(sql, &pieces, index)? {
            Some((edit, next)) => {
                edits.extend(edit);
                index = next;
            }
            None => index += 1,
        }
    }
    Ok(apply_edits(sql, edits))
}

fn window_kind(piece: Option<&Piece>) -> Option<WindowKind> {
    if is_word(piece, "tumble") {
        Some(WindowKind::Tumble)
    } else if is_word(piece, "hop") {
        Some(WindowKind::Hop)
    } else {
        None
    }
}

/// The index of the parenthesis closing the one at `open`.
fn matching_paren(pieces: &[Piece], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, piece) in pieces.iter().enumerate().skip(open) {
        match piece.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

/// Recognises a window call starting at `index`; returns the edit it needs (if any) and the
/// index just after it.
fn window_call_at(
    sql: &str,
    pieces: &[Piece],
    index: usize,
) -> Result<Option<(Option<Edit>, usize)>, EngineError> {
    let wrapped = is_word(pieces.get(index), "TABLE")
        && is_token(pieces.get(index + 1), &Token::LParen)
        && window_kind(pieces.get(index + 2)).is_some()
        && is_token(pieces.get(index + 3), &Token::LParen);
    let name_index = if wrapped { index + 2 } else { index };
    let Some(kind) = window_kind(pieces.get(name_index)) else {
        return Ok(None);
    };
    // `schema.hop(…)` is somebody else's function.
    let qualified = index > 0 && is_token(pieces.get(index - 1), &Token::Period);
    if !is_token(pieces.get(name_index + 1), &Token::LParen) || qualified {
        return Ok(None);
    }
    let Some(close) = matching_paren(pieces, name_index + 1) else {
        return Ok(None);
    };
    let last = if wrapped {
        if !is_token(pieces.get(close + 1), &Token::RParen) {
            return Err(EngineError::syntax(format!(
                "TABLE({}(…)) is missing its closing parenthesis",
                kind.sql_name()
            )));
        }
        close + 1
    } else {
        close
    };
    let (arguments, rewritten) = arguments(sql, kind, &pieces[name_index + 2..close])?;
    let name = &sql[pieces[name_index].start..pieces[name_index].end];
    let lower_case = name.to_ascii_lowercase();
    if !wrapped && !rewritten && name == lower_case {
        return Ok(Some((None, last + 1)));
    }
    let edit = Edit {
        start: pieces[index].start,
        end: pieces[last].end,
        text: format!("{lower_case}({})", arguments.join(", ")),
    };
    Ok(Some((Some(edit), last + 1)))
}

/// One argument after removing Flink's decorations.
struct Argument<'a> {
    name: Option<String>,
    text: &'a str,
    rewritten: bool,
}

/// The arguments' texts in the plain call's order, and whether any of them changed.
fn arguments(
    sql: &str,
    kind: WindowKind,
    inside: &[Piece],
) -> Result<(Vec<String>, bool), EngineError> {
    let mut parsed = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, piece) in inside.iter().enumerate() {
        match piece.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Comma if depth == 0 => {
                parsed.push(argument(sql, kind, &inside[start..index])?);
                start = index + 1;
            }
            _ => {}
        }
    }
    if !inside.is_empty() {
        parsed.push(argument(sql, kind, &inside[start..])?);
    }
    let rewritten = parsed.iter().any(|a| a.rewritten);
    let texts = if parsed.iter().any(|a| a.name.is_some()) {
        order_named(kind, parsed)?
    } else {
        parsed.iter().map(|a| a.text.to_string()).collect()
    };
    Ok((texts, rewritten))
}

fn argument<'a>(
    sql: &'a str,
    kind: WindowKind,
    pieces: &[Piece],
) -> Result<Argument<'a>, EngineError> {
    let mut rest = pieces;
    let mut name = None;
    if let (
        Some(Piece {
            token: Token::Word(word),
            ..
        }),
        true,
    ) = (rest.first(), is_token(rest.get(1), &Token::RArrow))
    {
        name = Some(word.value.to_ascii_uppercase());
        rest = &rest[2..];
    }
    if is_word(rest.first(), "TABLE") && rest.len() > 1 {
        rest = &rest[1..];
    }
    let descriptor = is_word(rest.first(), "DESCRIPTOR")
        && is_token(rest.get(1), &Token::LParen)
        && matching_paren(rest, 1) == Some(rest.len() - 1)
        && rest.len() > 3;
    if descriptor {
        rest = &rest[2..rest.len() - 1];
    }
    let (Some(first), Some(last)) = (rest.first(), rest.last()) else {
        return Err(EngineError::syntax(format!(
            "{} has an empty argument",
            kind.sql_name()
        )));
    };
    Ok(Argument {
        rewritten: rest.len() != pieces.len(),
        name,
        text: &sql[first.start..last.end],
    })
}

/// Puts named arguments (`DATA => …, TIMECOL => …, [SLIDE => …,] SIZE => …`) in call order.
fn order_named(kind: WindowKind, arguments: Vec<Argument<'_>>) -> Result<Vec<String>, EngineError> {
    let names: &[&str] = match kind {
        WindowKind::Tumble => &["DATA", "TIMECOL", "SIZE"],
        WindowKind::Hop => &["DATA", "TIMECOL", "SLIDE", "SIZE"],
    };
    let function = kind.sql_name();
    let mut ordered: Vec<Option<String>> = vec![None; names.len()];
    for argument in arguments {
        let Some(name) = argument.name else {
            return Err(EngineError::syntax(format!(
                "{function} arguments must be all named or all positional"
            )));
        };
        if name == "OFFSET" {
            return Err(EngineError::unsupported(format!(
                "{function} with an OFFSET is not supported; windows are aligned to the Unix epoch"
            )));
        }
        let Some(position) = names.iter().position(|n| *n == name) else {
            return Err(EngineError::syntax(format!(
                "{function} has no argument named {name}; its arguments are {}",
                names.join(", ")
            )));
        };
        if ordered[position]
            .replace(argument.text.to_string())
            .is_some()
        {
            return Err(EngineError::syntax(format!(
                "{function} argument {name} is given twice"
            )));
        }
    }
    ordered
        .into_iter()
        .zip(names)
        .map(|(text, name)| {
            text.ok_or_else(|| {
                EngineError::syntax(format!("{function} is missing its argument {name}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn rewrite(sql: &str) -> String {
        rewrite_flink_window_syntax(sql).unwrap().into_owned()
    }

    #[test]
    fn flink_tumble_becomes_a_plain_call() {
        assert_eq!(
            rewrite("SELECT * FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) AS w"),
            "SELECT * FROM tumble(clicks, ts, INTERVAL '1' MINUTE) AS w"
        );
    }

    #[test]
    fn flink_hop_keeps_slide_then_size() {
        assert_eq!(
            rewrite(
                "select * from table(\n  hop(table public.clicks, descriptor(\"Ts\"), interval '1' minute, interval '3' minute)\n)"
            ),
            "select * from hop(public.clicks, \"Ts\", interval '1' minute, interval '3' minute)"
        );
    }

    #[test]
    fn named_arguments_are_put_in_order() {
        assert_eq!(
            rewrite(
                "SELECT * FROM TABLE(HOP(SIZE => INTERVAL '3' MINUTES, DATA => TABLE c, SLIDE => INTERVAL '1' MINUTE, TIMECOL => DESCRIPTOR(ts)))"
            ),
            "SELECT * FROM hop(c, ts, INTERVAL '1' MINUTE, INTERVAL '3' MINUTES)"
        );
        let err = rewrite_flink_window_syntax(
            "SELECT * FROM TABLE(TUMBLE(DATA => TABLE c, TIMECOL => DESCRIPTOR(ts)))",
        )
        .unwrap_err();
        assert_eq!(err.message(), "TUMBLE is missing its argument SIZE");
        let err = rewrite_flink_window_syntax(
            "SELECT * FROM TABLE(TUMBLE(DATA => TABLE c, TIMECOL => DESCRIPTOR(ts), SIZE => INTERVAL '1' MINUTE, OFFSET => INTERVAL '1' SECOND))",
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FeatureNotSupported);
    }

    #[test]
    fn plain_calls_only_lose_their_upper_case() {
        assert_eq!(
            rewrite("SELECT * FROM TUMBLE(clicks, ts, INTERVAL '1 minute')"),
            "SELECT * FROM tumble(clicks, ts, INTERVAL '1 minute')"
        );
        let sql = "SELECT * FROM tumble(clicks,  ts, INTERVAL '1 minute')";
        assert!(matches!(
            rewrite_flink_window_syntax(sql).unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn strings_comments_and_quoted_names_are_left_alone() {
        for sql in [
            "SELECT 'TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), x))' AS s",
            "SELECT 1 -- TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), x))",
            "SELECT 1 /* HOP(t, ts, a, b) */",
            "SELECT \"TUMBLE\"(x) FROM shop",
            "SELECT my_schema.HOP(x) FROM t",
        ] {
            assert!(
                matches!(rewrite_flink_window_syntax(sql).unwrap(), Cow::Borrowed(_)),
                "{sql}"
            );
        }
    }

    #[test]
    fn text_around_and_after_a_call_is_kept_with_multibyte_characters() {
        assert_eq!(
            rewrite(
                "SELECT 'é' AS a, * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) w\nJOIN TABLE(TUMBLE(TABLE u, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) v USING (window_start) -- ü"
            ),
            "SELECT 'é' AS a, * FROM tumble(t, ts, INTERVAL '1' MINUTE) w\nJOIN tumble(u, ts, INTERVAL '1' MINUTE) v USING (window_start) -- ü"
        );
    }

    #[test]
    fn unclosed_table_wrapper_is_a_syntax_error() {
        let err = rewrite_flink_window_syntax(
            "SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE) AS w",
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Syntax);
    }

    #[test]
    fn untokenizable_text_is_left_for_the_parser() {
        let sql = "SELECT 'unterminated FROM hop(";
        assert!(matches!(
            rewrite_flink_window_syntax(sql).unwrap(),
            Cow::Borrowed(_)
        ));
    }
}
