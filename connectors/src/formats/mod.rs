//! Message formats: decoding many messages at once into one Arrow batch.
//!
//! The fast path hands a whole batch of messages to Arrow's vectorised JSON or CSV decoder.
//! Only when that fails (some message is malformed) are the messages decoded one at a time to
//! find the bad ones, which are reported and left out; so good data costs one pass and bad data
//! never stops a read unless the caller wants it to. Avro (module [`avro`]) is decoded by
//! `arrow-avro` in the same way: a batch at once, one message at a time only to find bad ones.

pub mod avro;
pub mod registry;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::source::ConnectorError;

/// A message payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per message.
    Json,
    /// One CSV record per message, columns in declared order, no header.
    Csv,
    /// One Avro record per message: schema-registry framed, or bare with an inline schema.
    Avro,
}

impl Format {
    /// Parses the `format` option.
    pub fn parse(value: &str) -> Result<Self, ConnectorError> {
        match value.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "avro" => Ok(Format::Avro),
            _ => Err(ConnectorError::InvalidOption {
                option: "format".to_string(),
                value: value.to_string(),
                reason: "supported formats are 'json', 'csv' and 'avro'".to_string(),
            }),
        }
    }
}

/// Decodes message payloads into batches of a fixed schema.
#[derive(Debug, Clone)]
pub struct PayloadDecoder(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Text(TextDecoder),
    Avro(avro::AvroDecoder),
}

impl PayloadDecoder {
    /// A JSON or CSV decoder producing `schema` (the payload columns, in order); Avro needs
    /// its schemas, see [`PayloadDecoder::avro`].
    pub fn new(format: Format, schema: SchemaRef) -> Result<Self, ConnectorError> {
        if format == Format::Avro {
            return Err(ConnectorError::Schema(
                "an Avro decoder needs a schema registry or an inline schema".to_string(),
            ));
        }
        Ok(Self(Kind::Text(TextDecoder::new(format, schema))))
    }

    /// An Avro decoder.
    pub fn avro(decoder: avro::AvroDecoder) -> Self {
        Self(Kind::Avro(decoder))
    }

    /// The same decoder for other columns (a projection of the payload columns).
    pub fn project(&self, schema: SchemaRef) -> Result<Self, ConnectorError> {
        Ok(match &self.0 {
            Kind::Text(text) => Self(Kind::Text(TextDecoder::new(text.format, schema))),
            Kind::Avro(avro) => Self(Kind::Avro(avro.with_columns(schema)?)),
        })
    }

    /// The schema of decoded batches.
    pub fn schema(&self) -> SchemaRef {
        match &self.0 {
            Kind::Text(text) => text.target_schema.clone(),
            Kind::Avro(avro) => avro.schema(),
        }
    }

    /// Decodes `messages`; returns the rows of the good ones, in order, and for each malformed
    /// one its index and the reason.
    pub fn decode(
        &self,
        messages: &[&[u8]],
    ) -> Result<(RecordBatch, Vec<(usize, String)>), ConnectorError> {
        match &self.0 {
            Kind::Text(text) => Ok(text.decode(messages)?),
            Kind::Avro(avro) => avro.decode(messages),
        }
    }
}

/// The JSON and CSV decoder.
#[derive(Debug, Clone)]
struct TextDecoder {
    format: Format,
    /// What the Arrow decoders produce: timestamps as milliseconds, so that epoch numbers are
    /// read as milliseconds while RFC 3339 strings still parse.
    decode_schema: SchemaRef,
    /// The declared types the batch is cast to.
    target_schema: SchemaRef,
}

fn decode_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        // The push decoders build plain strings; views are made by the final cast.
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        other => other.clone(),
    }
}

impl TextDecoder {
    fn new(format: Format, schema: SchemaRef) -> Self {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), decode_type(f.data_type()), true))
            .collect();
        Self {
            format,
            decode_schema: Arc::new(Schema::new(fields)),
            target_schema: schema,
        }
    }

    fn decode(
        &self,
        messages: &[&[u8]],
    ) -> Result<(RecordBatch, Vec<(usize, String)>), ArrowError> {
        let mut malformed = Vec::new();
        let fast = self.decode_all(messages);
        let batch = match fast {
            Ok(batch) if batch.num_rows() == messages.len() => batch,
            _ => {
                // Slow path: one message at a time, to find the bad ones.
                let mut good = Vec::with_capacity(messages.len());
                for (index, message) in messages.iter().enumerate() {
                    match self.decode_all(std::slice::from_ref(message)) {
                        Ok(batch) if batch.num_rows() == 1 => good.push(batch),
                        Ok(batch) => malformed.push((
                            index,
                            format!("expected one record, found {}", batch.num_rows()),
                        )),
                        Err(err) => malformed.push((index, err.to_string())),
                    }
                }
                concat_batches(&self.decode_schema, &good)?
            }
        };
        Ok((self.cast_to_target(batch)?, malformed))
    }

    fn decode_all(&self, messages: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
        if messages
            .iter()
            .any(|m| m.iter().all(u8::is_ascii_whitespace))
        {
            return Err(ArrowError::ParseError("empty message".to_string()));
        }
        let mut buffer = Vec::with_capacity(messages.iter().map(|m| m.len() + 1).sum());
        for message in messages {
            buffer.extend_from_slice(message);
            buffer.push(b'\n');
        }
        let rows = messages.len().max(1);
        match self.format {
            Format::Json | Format::Avro => {
                let mut decoder = arrow::json::ReaderBuilder::new(self.decode_schema.clone())
                    .with_batch_size(rows + 1)
                    .build_decoder()?;
                feed(&buffer, |chunk| decoder.decode(chunk))?;
                Ok(decoder
                    .flush()?
                    .unwrap_or_else(|| RecordBatch::new_empty(self.decode_schema.clone())))
            }
            Format::Csv => {
                let mut decoder = arrow::csv::ReaderBuilder::new(self.decode_schema.clone())
                    .with_header(false)
                    .with_batch_size(rows + 1)
                    .build_decoder();
                feed(&buffer, |chunk| decoder.decode(chunk))?;
                Ok(decoder
                    .flush()?
                    .unwrap_or_else(|| RecordBatch::new_empty(self.decode_schema.clone())))
            }
        }
    }

    fn cast_to_target(&self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        let columns = batch
            .columns()
            .iter()
            .zip(self.target_schema.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    cast(column, field.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let nullable: Vec<Field> = self
            .target_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(nullable)), columns)
    }
}

/// Feeds `buffer` to a push decoder until it is consumed (a decoder may stop early).
fn feed(
    buffer: &[u8],
    mut decode: impl FnMut(&[u8]) -> Result<usize, ArrowError>,
) -> Result<(), ArrowError> {
    let mut offset = 0;
    while offset < buffer.len() {
        let used = decode(&buffer[offset..])?;
        if used == 0 {
            return Err(ArrowError::ParseError(
                "decoder made no progress".to_string(),
            ));
        }
        offset += used;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, TimestampNanosecondArray};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]))
    }

    #[test]
    fn json_timestamps_may_be_rfc3339_or_epoch_millis_in_one_batch() {
        let decoder = PayloadDecoder::new(Format::Json, schema()).unwrap();
        let messages: Vec<&[u8]> = vec![
            br#"{"id": 1, "ts": "2026-11-01T10:00:00Z"}"#,
            br#"{"id": 2, "ts": 1793527200000}"#,
        ];
        let (batch, malformed) = decoder.decode(&messages).unwrap();
        assert!(malformed.is_empty());
        let ts = batch
            .column(1)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        assert_eq!(ts.value(0), 1_793_527_200_000_000_000);
        assert_eq!(ts.value(1), 1_793_527_200_000_000_000);
    }

    #[test]
    fn malformed_messages_are_left_out_and_reported() {
        let decoder = PayloadDecoder::new(Format::Json, schema()).unwrap();
        let messages: Vec<&[u8]> = vec![
            br#"{"id": 1}"#,
            b"{not json",
            br#"{"id": "x"}"#,
            b"",
            br#"{"id": 4}"#,
        ];
        let (batch, malformed) = decoder.decode(&messages).unwrap();
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[1, 4]);
        let bad: Vec<usize> = malformed.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, vec![1, 2, 3]);
    }

    #[test]
    fn csv_messages_decode_in_declared_order() {
        let decoder = PayloadDecoder::new(Format::Csv, schema()).unwrap();
        let messages: Vec<&[u8]> = vec![b"7,2026-11-01T10:00:00Z", b"8,"];
        let (batch, malformed) = decoder.decode(&messages).unwrap();
        assert!(malformed.is_empty(), "{malformed:?}");
        assert_eq!(batch.num_rows(), 2);
        assert!(batch.column(1).is_null(1));
    }

    #[test]
    fn unknown_format_names_the_supported_ones() {
        let err = Format::parse("protobuf").unwrap_err().to_string();
        assert!(err.contains("protobuf") && err.contains("avro"), "{err}");
    }
}
