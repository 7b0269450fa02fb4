//! pgwire results sent as they are produced, flushed batch by batch: the rows of SUBSCRIBE,
//! and `COPY (query) TO STDOUT` in text or CSV format (what psql's `COPY … TO STDOUT` and
//! `\copy` and psycopg's `cursor.copy()` use).

use std::fmt::Debug;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use freshet_sql::datafusion::arrow::array::RecordBatch;
use freshet_sql::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use freshet_sql::datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use freshet_sql::{EngineError, ErrorKind};

use crate::pg_encode::encode_batch;
use futures::{Sink, SinkExt, Stream, StreamExt};
use pgwire::api::results::FieldInfo;
use pgwire::error::PgWireError;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::PgWireBackendMessage;

/// The text format of a COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's text format: tab-separated, `\N` for NULL, backslash escapes.
    Text,
    /// CSV, with an optional header line.
    Csv { header: bool },
}

/// `COPY (query) TO STDOUT [WITH] [(FORMAT csv, HEADER …)] | [CSV [HEADER]]`: the inner query
/// and the format. `None` for any other statement.
pub fn parse_copy_to_stdout(sql: &str) -> Result<Option<(String, CopyFormat)>, EngineError> {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return Ok(None);
    };
    let tokens: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon | Token::EOF))
        .collect();
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    if word(0).as_deref() != Some("COPY") || tokens.get(1) != Some(&Token::LParen) {
        return Ok(None);
    }
    // The query: from after `(` to its matching `)`, cut from the text.
    let open = sql.find('(').unwrap_or(0);
    let mut depth = 0usize;
    let mut close_token = None;
    for (i, token) in tokens.iter().enumerate().skip(1) {
        match token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    close_token = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close_token) = close_token else {
        return Err(EngineError::syntax("COPY (query): missing )"));
    };
    if word(close_token + 1).as_deref() != Some("TO")
        || word(close_token + 2).as_deref() != Some("STDOUT")
    {
        return Ok(None);
    }
    // The closing parenthesis in the text: the last `)` before `TO STDOUT`.
    let upper = sql.to_ascii_uppercase();
    let to_at = upper
        .rfind("STDOUT")
        .and_then(|s| upper[..s].rfind("TO"))
        .unwrap_or(sql.len());
    let close = sql[..to_at].rfind(')').unwrap_or(sql.len());
    let query = sql[open + 1..close].trim().to_string();

    let mut format = CopyFormat::Text;
    let mut header = false;
    let options: Vec<String> = tokens[close_token + 3..]
        .iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.value.to_ascii_uppercase()),
            Token::SingleQuotedString(s) => Some(s.to_ascii_uppercase()),
            Token::LParen | Token::RParen | Token::Comma => None,
            other => Some(other.to_string().to_ascii_uppercase()),
        })
        .collect();
    let mut i = 0;
    while i < options.len() {
        match options[i].as_str() {
            "WITH" => {}
            "CSV" => format = CopyFormat::Csv { header: false },
            "FORMAT" => {
                i += 1;
                match options.get(i).map(String::as_str) {
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
                header = !matches!(
                    options.get(i + 1).map(String::as_str),
                    Some("FALSE") | Some("OFF") | Some("0")
                );
                if matches!(
                    options.get(i + 1).map(String::as_str),
                    Some("TRUE" | "FALSE" | "ON" | "OFF" | "0" | "1")
                ) {
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
    Ok(Some((query, format)))
}

fn send_error(err: PgWireError) -> EngineError {
    EngineError::new(
        ErrorKind::Io,
        format!("could not send to the client: {err}"),
    )
}

/// Sends every row of `batches` as DataRows, flushing after each batch, after a
/// RowDescription when `describe` (simple protocol). Returns the number of rows.
pub async fn send_live<C, S>(
    client: &mut C,
    mut batches: S,
    fields: Arc<Vec<FieldInfo>>,
    describe: bool,
) -> Result<usize, EngineError>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    S: Stream<Item = Result<RecordBatch, EngineError>> + Unpin,
{
    if describe {
        let description = RowDescription::new(fields.iter().map(FieldDescription::from).collect());
        client
            .send(PgWireBackendMessage::RowDescription(description))
            .await
            .map_err(|e| send_error(e.into()))?;
    }
    let mut rows = 0;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        for row in encode_batch(fields.clone(), batch) {
            let row = row.map_err(|e| EngineError::internal(e.to_string()))?;
            client
                .feed(PgWireBackendMessage::DataRow(row))
                .await
                .map_err(|e| send_error(e.into()))?;
            rows += 1;
        }
        client.flush().await.map_err(|e| send_error(e.into()))?;
    }
    Ok(rows)
}

/// Sends every row of `batches` as COPY data (text-format `fields`), flushing after each batch.
/// Sends CopyOutResponse first and CopyDone last; the caller sends CommandComplete.
pub async fn send_copy<C, S>(
    client: &mut C,
    mut batches: S,
    fields: Arc<Vec<FieldInfo>>,
    format: CopyFormat,
) -> Result<usize, EngineError>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    S: Stream<Item = Result<RecordBatch, EngineError>> + Unpin,
{
    let columns = fields.len();
    let response = CopyOutResponse::new(0, columns as i16, vec![0; columns]);
    client
        .send(PgWireBackendMessage::CopyOutResponse(response))
        .await
        .map_err(|e| send_error(e.into()))?;
    if let CopyFormat::Csv { header: true } = format {
        let names: Vec<Option<&[u8]>> = fields.iter().map(|f| Some(f.name().as_bytes())).collect();
        let line = csv_line(&names);
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(line)))
            .await
            .map_err(|e| send_error(e.into()))?;
    }
    let mut rows = 0;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        for row in encode_batch(fields.clone(), batch) {
            let row = row.map_err(|e| EngineError::internal(e.to_string()))?;
            let values = row_values(&row);
            let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            let line = match format {
                CopyFormat::Text => text_line(&values),
                CopyFormat::Csv { .. } => csv_line(&values),
            };
            client
                .feed(PgWireBackendMessage::CopyData(CopyData::new(line)))
                .await
                .map_err(|e| send_error(e.into()))?;
            rows += 1;
        }
        client.flush().await.map_err(|e| send_error(e.into()))?;
    }
    client
        .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await
        .map_err(|e| send_error(e.into()))?;
    Ok(rows)
}

/// The text values of an encoded DataRow (each field: length, or -1 for NULL, then bytes).
fn row_values(row: &DataRow) -> Vec<Option<Vec<u8>>> {
    let mut data = Bytes::copy_from_slice(&row.data);
    let mut values = Vec::with_capacity(row.field_count as usize);
    for _ in 0..row.field_count {
        if data.remaining() < 4 {
            break;
        }
        let len = data.get_i32();
        if len < 0 {
            values.push(None);
        } else {
            let len = (len as usize).min(data.remaining());
            values.push(Some(data.split_to(len).to_vec()));
        }
    }
    values
}

/// One line of PostgreSQL's COPY text format.
fn text_line(values: &[Option<&[u8]>]) -> Bytes {
    let mut line = Vec::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            line.push(b'\t');
        }
        match value {
            None => line.extend_from_slice(b"\\N"),
            Some(bytes) => {
                for &b in *bytes {
                    match b {
                        b'\\' => line.extend_from_slice(b"\\\\"),
                        b'\t' => line.extend_from_slice(b"\\t"),
                        b'\n' => line.extend_from_slice(b"\\n"),
                        b'\r' => line.extend_from_slice(b"\\r"),
                        other => line.push(other),
                    }
                }
            }
        }
    }
    line.push(b'\n');
    Bytes::from(line)
}

/// One CSV line: NULL is empty, values with a comma, quote or line break are quoted.
fn csv_line(values: &[Option<&[u8]>]) -> Bytes {
    let mut line = Vec::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        if let Some(bytes) = value {
            let quote = bytes.is_empty()
                || bytes
                    .iter()
                    .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
            if quote {
                line.push(b'"');
                for &b in *bytes {
                    if b == b'"' {
                        line.push(b'"');
                    }
                    line.push(b);
                }
                line.push(b'"');
            } else {
                line.extend_from_slice(bytes);
            }
        }
    }
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_statements() {
        let (query, format) =
            parse_copy_to_stdout("COPY (SELECT a, ')' FROM t WHERE (b > 1)) TO STDOUT")
                .unwrap()
                .unwrap();
        assert_eq!(query, "SELECT a, ')' FROM t WHERE (b > 1)");
        assert_eq!(format, CopyFormat::Text);
        let (query, format) =
            parse_copy_to_stdout("copy (SUBSCRIBE v) to stdout with (format csv, header true);")
                .unwrap()
                .unwrap();
        assert_eq!(query, "SUBSCRIBE v");
        assert_eq!(format, CopyFormat::Csv { header: true });
        assert_eq!(
            parse_copy_to_stdout("COPY (SELECT 1) TO STDOUT CSV HEADER")
                .unwrap()
                .unwrap()
                .1,
            CopyFormat::Csv { header: true }
        );
        assert!(parse_copy_to_stdout("COPY t TO 'x.csv'").unwrap().is_none());
        assert!(parse_copy_to_stdout("COPY (SELECT 1) TO STDOUT (FORMAT binary)").is_err());
    }

    #[test]
    fn text_and_csv_escaping() {
        let values = [Some(&b"a\tb\\c"[..]), None, Some(&b"x,\"y\""[..])];
        assert_eq!(&text_line(&values)[..], b"a\\tb\\\\c\t\\N\tx,\"y\"\n");
        assert_eq!(&csv_line(&values)[..], b"a\tb\\c,,\"x,\"\"y\"\"\"\n");
    }
}
