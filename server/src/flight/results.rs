//! Results and parameters as Flight data: encoding, the announced schema, timeouts.

use std::pin::Pin;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::{FlightData, IpcMessage, SchemaAsIpc};
use freshet_sql::datafusion::arrow::array::RecordBatch;
use freshet_sql::datafusion::arrow::compute::cast;
use freshet_sql::datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use freshet_sql::datafusion::arrow::ipc::writer::IpcWriteOptions;
use freshet_sql::datafusion::common::ScalarValue;
use freshet_sql::limits::PARAMETER_NUMBER_MAX;
use freshet_sql::{EngineError, ErrorKind};
use futures::{stream, Stream, StreamExt, TryStreamExt};
use tonic::{Request, Status};

use super::status;

/// Most parameter rows one DoPut may bind (each row runs the statement once).
pub const PARAMETER_ROWS_MAX: usize = 10_000;

/// The most parameter data one DoPut may bind, in memory bytes: with the 16 MiB gRPC message
/// limit and the row limit, what a client may make the server hold for one call.
pub const PARAMETER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The stream type every DoGet answers with.
pub type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

pub fn arrow_status(context: &str, err: impl std::fmt::Display) -> Status {
    Status::internal(format!("{context}: {err}"))
}

/// A schema as the bytes of an IPC schema message, as Flight SQL sends schemas.
pub fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| arrow_status("could not encode a schema", e))?;
    Ok(bytes)
}

/// The schema as it travels over Flight: dictionaries are sent as their values.
pub fn flight_schema(schema: &SchemaRef) -> SchemaRef {
    FlightDataEncoderBuilder::new()
        .with_schema(schema.clone())
        .build(stream::empty())
        .known_schema()
        .unwrap_or_else(|| schema.clone())
}

/// Encodes record batches to Flight data, one batch at a time, as the client reads.
pub fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, EngineError>> + Send + 'static,
) -> DoGetStream {
    let batches = batches.map_err(|e| FlightError::Tonic(Box::new(status(&e))));
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Box::pin(data)
}

pub fn encode_batch(batch: RecordBatch) -> DoGetStream {
    encode(batch.schema(), stream::iter([Ok(batch)]))
}

/// Gives a result batch the schema announced when the statement was prepared.
///
/// The announced schema comes from planning before parameter values are known, the rows from
/// the plan made with them, so the two may differ in nullability (`$1 + 1` may be NULL until
/// `$1` is known) or, rarely, in type. Columns are cast to the announced types.
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, EngineError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(EngineError::internal(format!(
            "the result has {} columns but {} were announced",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                return Ok(column.clone());
            }
            let mismatch = |reason: String| {
                EngineError::new(
                    ErrorKind::InvalidStatement,
                    format!(
                        "column \"{}\" is {} but was announced as {} when the statement was prepared \
                         (add a CAST to its parameter): {reason}",
                        field.name(),
                        column.data_type(),
                        field.data_type()
                    ),
                )
            };
            // Arrow casts some types to Null by dropping every value; never do that to a result.
            if field.data_type() == &DataType::Null {
                return Err(mismatch("the type was unknown".to_string()));
            }
            cast(column, field.data_type()).map_err(|e| mismatch(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The row count of a command tag: `INSERT 0 3` → 3, `CREATE TABLE` → 0.
pub fn affected_rows(tag: &str) -> i64 {
    let counted = ["INSERT", "UPDATE", "DELETE", "SELECT", "COPY", "MERGE"];
    let first = tag.split_whitespace().next().unwrap_or_default();
    if !counted.contains(&first) {
        return 0;
    }
    tag.split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// Reads the parameter rows of a DoPut: each row is one set of values for `$1 … $n`.
pub async fn parameter_rows(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<Vec<ScalarValue>>, Status> {
    let data = request.into_inner().map_err(FlightError::from);
    let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(batch) = batches.next().await {
        let batch = batch
            .map_err(|e| Status::invalid_argument(format!("could not read the parameters: {e}")))?;
        if rows.len() + batch.num_rows() > PARAMETER_ROWS_MAX {
            return Err(Status::resource_exhausted(format!(
                "at most {PARAMETER_ROWS_MAX} parameter rows may be bound at once"
            )));
        }
        if batch.num_columns() > PARAMETER_NUMBER_MAX {
            return Err(Status::invalid_argument(format!(
                "{} parameters were sent; a statement has at most {PARAMETER_NUMBER_MAX}",
                batch.num_columns()
            )));
        }
        bytes += batch.get_array_memory_size();
        if bytes > PARAMETER_BYTES_MAX {
            return Err(Status::resource_exhausted(format!(
                "parameter values over {PARAMETER_BYTES_MAX} bytes may not be bound at once"
            )));
        }
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|column| ScalarValue::try_from_array(column, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    Status::invalid_argument(format!("unsupported parameter value: {e}"))
                })?;
            rows.push(values);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use freshet_sql::datafusion::arrow::datatypes::Field;

    use super::*;

    #[test]
    fn command_tags_give_row_counts() {
        assert_eq!(affected_rows("INSERT 0 3"), 3);
        assert_eq!(affected_rows("UPDATE 2"), 2);
        assert_eq!(affected_rows("SELECT 10"), 10);
        assert_eq!(affected_rows("CREATE TABLE"), 0);
        assert_eq!(affected_rows("SET"), 0);
    }

    #[test]
    fn results_take_the_announced_schema() {
        use freshet_sql::datafusion::arrow::array::Int32Array;
        let actual = Arc::new(Schema::new(vec![Field::new("y", DataType::Int32, false)]));
        let batch =
            RecordBatch::try_new(actual, vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
        let announced: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("y", DataType::Int64, true)]));
        let conformed = conform(batch, &announced).unwrap();
        assert_eq!(conformed.schema_ref(), &announced);
        let unknown: SchemaRef = Arc::new(Schema::new(vec![Field::new("y", DataType::Null, true)]));
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("y", DataType::Int32, false)])),
            vec![Arc::new(Int32Array::from(vec![1]))],
        )
        .unwrap();
        let err = conform(batch, &unknown).unwrap_err();
        assert!(err.message().contains("add a CAST"), "{}", err.message());
    }
}
