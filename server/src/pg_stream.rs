//! pgwire results sent as they are produced, flushed batch by batch: the rows of SUBSCRIBE,
//! and `COPY (query) TO STDOUT` in text or CSV format (what psql's `COPY … TO STDOUT` and
//! `\copy` and psycopg's `cursor.copy()` use).

use std::fmt::Debug;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use freshet_sql::datafusion::arrow::array::RecordBatch;
use freshet_sql::{CopyFormat, EngineError, ErrorKind};

use crate::pg_encode::encode_batch;
use futures::{Sink, SinkExt, Stream, StreamExt};
use pgwire::api::results::FieldInfo;
use pgwire::error::PgWireError;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::PgWireBackendMessage;

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
    fn text_and_csv_escaping() {
        let values = [Some(&b"a\tb\\c"[..]), None, Some(&b"x,\"y\""[..])];
        assert_eq!(&text_line(&values)[..], b"a\\tb\\\\c\t\\N\tx,\"y\"\n");
        assert_eq!(&csv_line(&values)[..], b"a\tb\\c,,\"x,\"\"y\"\"\"\n");
    }
}
