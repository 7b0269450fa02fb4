//! `COPY (query) TO STDOUT [WITH] [(FORMAT csv, HEADER …)] | [CSV [HEADER]]`: a query's rows
//! sent to the client as COPY data (psql's `\copy … to`, psycopg's `cursor.copy()`). The
//! query is any statement that returns rows, a `SUBSCRIBE` too.

use datafusion::sql::sqlparser::tokenizer::Token;

use super::tokens::{Cursor, RawStatement, Tok};
use crate::error::{EngineError, ErrorKind};

/// The text format of a COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's text format: tab-separated, `\N` for NULL, backslash escapes.
    Text,
    /// CSV, with an optional header line.
    Csv { header: bool },
}

/// Reads `COPY ( … ) TO STDOUT …`: the inner statement and the format. `None` for any other
/// COPY (DataFusion's `COPY … TO 'location'`).
pub(crate) fn parse_copy_to_client(
    raw: &RawStatement,
) -> Result<Option<(RawStatement, CopyFormat)>, EngineError> {
    let tokens = &raw.tokens;
    if !matches!(tokens.get(1).map(|t| &t.token), Some(Token::LParen)) {
        return Ok(None);
    }
    let mut depth = 0usize;
    let mut close = None;
    for (i, tok) in tokens.iter().enumerate().skip(1) {
        match tok.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return Err(EngineError::syntax("COPY (query): missing )"));
    };
    let mut c = Cursor::new(raw);
    for _ in 0..=close {
        c.skip();
    }
    if !c.keywords(&["TO", "STDOUT"]) {
        return Ok(None);
    }
    let format = copy_options(&mut c)?;
    Ok(Some((inner_statement(raw, &tokens[2..close]), format)))
}

/// The statement between the parentheses, its token offsets rebased on its own text.
fn inner_statement(raw: &RawStatement, tokens: &[Tok]) -> RawStatement {
    let (Some(first), Some(last)) = (tokens.first(), tokens.last()) else {
        return RawStatement {
            text: String::new(),
            span: raw.span.start..raw.span.start,
            tokens: Vec::new(),
        };
    };
    let (from, to) = (first.start, last.end);
    RawStatement {
        text: raw.text[from..to].to_string(),
        span: raw.span.start + from..raw.span.start + to,
        tokens: tokens
            .iter()
            .map(|t| Tok {
                token: t.token.clone(),
                span: t.span,
                start: t.start - from,
                end: t.end - from,
            })
            .collect(),
    }
}

fn copy_options(c: &mut Cursor<'_>) -> Result<CopyFormat, EngineError> {
    let mut words = Vec::new();
    while let Some(token) = c.token() {
        match token {
            Token::Word(w) => words.push(w.value.to_ascii_uppercase()),
            Token::SingleQuotedString(s) => words.push(s.to_ascii_uppercase()),
            Token::LParen | Token::RParen | Token::Comma => {}
            other => words.push(other.to_string().to_ascii_uppercase()),
        }
        c.skip();
    }
    let mut format = CopyFormat::Text;
    let mut header = false;
    let mut i = 0;
    while i < words.len() {
        match words[i].as_str() {
            "WITH" => {}
            "CSV" => format = CopyFormat::Csv { header: false },
            "FORMAT" => {
                i += 1;
                match words.get(i).map(String::as_str) {
                    Some("CSV") => format = CopyFormat::Csv { header: false },
                    Some("TEXT") => format = CopyFormat::Text,
                    other => {
                        return Err(EngineError::unsupported(format!(
                            "COPY format {} is not supported: use text or csv",
                            other.unwrap_or("(none)").to_ascii_lowercase()
                        )))
                    }
                }
            }
            "HEADER" => {
                let next = words.get(i + 1).map(String::as_str);
                header = !matches!(next, Some("FALSE" | "OFF" | "0"));
                if matches!(next, Some("TRUE" | "FALSE" | "ON" | "OFF" | "0" | "1")) {
                    i += 1;
                }
            }
            other => {
                return Err(EngineError::new(
                    ErrorKind::FeatureNotSupported,
                    format!(
                        "COPY … TO STDOUT option {} is not supported (supported: FORMAT text|csv, HEADER)",
                        other.to_ascii_lowercase()
                    ),
                ))
            }
        }
        i += 1;
    }
    if let CopyFormat::Csv { .. } = format {
        format = CopyFormat::Csv { header };
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Option<(String, CopyFormat)> {
        parse_copy_to_client(&RawStatement::from_text(sql).unwrap())
            .unwrap()
            .map(|(inner, format)| (inner.text, format))
    }

    #[test]
    fn copy_to_stdout_forms() {
        assert_eq!(
            parse("COPY (SELECT a, (b) FROM t) TO STDOUT"),
            Some(("SELECT a, (b) FROM t".to_string(), CopyFormat::Text))
        );
        assert_eq!(
            parse("copy (SUBSCRIBE v) to stdout with (format csv, header true)"),
            Some(("SUBSCRIBE v".to_string(), CopyFormat::Csv { header: true }))
        );
        assert_eq!(
            parse("COPY (SELECT ')') TO STDOUT CSV HEADER"),
            Some(("SELECT ')'".to_string(), CopyFormat::Csv { header: true }))
        );
        assert_eq!(parse("COPY t TO 'out.parquet'"), None);
        assert_eq!(parse("COPY (SELECT 1) TO 'out.csv'"), None);
        let err = parse_copy_to_client(
            &RawStatement::from_text("COPY (SELECT 1) TO STDOUT (FORMAT binary)").unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FeatureNotSupported);
    }
}
