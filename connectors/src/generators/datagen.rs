//! `connector = 'datagen'`: typed random values for the declared columns.
//!
//! Per-column options: `fields.<column>.kind` (`random`, default, or `sequence`: the event
//! number plus `min`), `fields.<column>.min` / `.max` (numbers, inclusive), `fields.<column>.length`
//! (strings, default 8). Timestamp columns carry the event time unless their kind is `random`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
    TimestampNanosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use futures::stream::{self, BoxStream};
use futures::StreamExt;

use super::{random, Timing};
use crate::source::{
    ConnectorError, Options, Source, SourceConfig, SourceConnector, SourceCounters, Split,
};

/// The `connector = 'datagen'` factory.
pub struct DatagenConnector;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Random,
    Sequence,
    EventTime,
}

#[derive(Debug, Clone)]
struct Column {
    field: Field,
    kind: Kind,
    min: f64,
    max: f64,
    length: usize,
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn supported(data_type: &DataType) -> bool {
    data_type.is_integer()
        || data_type.is_floating()
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Timestamp(_, _)
                | DataType::Date32
        )
}

fn column_options(
    field: &Field,
    values: &BTreeMap<String, String>,
) -> Result<Column, ConnectorError> {
    let prefix = format!("fields.{}.", field.name().to_ascii_lowercase());
    let get = |key: &str| values.get(&format!("{prefix}{key}"));
    let number = |key: &str, default: f64| -> Result<f64, ConnectorError> {
        match get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| ConnectorError::InvalidOption {
                option: format!("{prefix}{key}"),
                value: v.clone(),
                reason: "must be a number".to_string(),
            }),
        }
    };
    if !supported(field.data_type()) {
        return Err(ConnectorError::Schema(format!(
            "datagen cannot generate column {} of type {}",
            field.name(),
            field.data_type()
        )));
    }
    let is_time = matches!(field.data_type(), DataType::Timestamp(_, _));
    let kind = match get("kind").map(|k| k.to_ascii_lowercase()) {
        None if is_time => Kind::EventTime,
        None => Kind::Random,
        Some(k) if k == "random" => Kind::Random,
        Some(k) if k == "sequence" => Kind::Sequence,
        Some(k) if k == "event_time" && is_time => Kind::EventTime,
        Some(k) => {
            return Err(ConnectorError::InvalidOption {
                option: format!("{prefix}kind"),
                value: k,
                reason: "use 'random', 'sequence' or, for timestamps, 'event_time'".to_string(),
            })
        }
    };
    let (min, max) = (number("min", 0.0)?, number("max", 1_000_000.0)?);
    if min > max {
        return Err(ConnectorError::InvalidOption {
            option: format!("{prefix}min"),
            value: min.to_string(),
            reason: format!("is larger than {prefix}max ({max})"),
        });
    }
    Ok(Column {
        field: field.clone(),
        kind,
        min,
        max,
        length: number("length", 8.0)? as usize,
    })
}

#[async_trait]
impl SourceConnector for DatagenConnector {
    fn name(&self) -> &'static str {
        "datagen"
    }

    async fn create(
        &self,
        config: SourceConfig,
        _validate: bool,
    ) -> Result<Arc<dyn Source>, ConnectorError> {
        let schema = config.schema.clone().ok_or_else(|| {
            ConnectorError::Schema(
                "a datagen source needs its columns: CREATE SOURCE name (column TYPE, …) WITH (…)"
                    .to_string(),
            )
        })?;
        let mut options = Options::new("datagen", &config.options);
        let seed: u64 = options.parsed("seed", 0)?;
        let timing = Timing::from_options(&mut options, &config.state, 1000.0)?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| column_options(f, &config.options))
            .collect::<Result<Vec<_>, _>>()?;
        let known: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("fields.{}.", f.name().to_ascii_lowercase()))
            .collect();
        let prefixes: Vec<&str> = known.iter().map(String::as_str).collect();
        options.finish(&prefixes)?;
        Ok(Arc::new(DatagenSource {
            schema,
            columns: Arc::new(columns),
            seed,
            timing,
            counters: Arc::new(SourceCounters::default()),
        }))
    }
}

/// A datagen source.
#[derive(Debug)]
pub struct DatagenSource {
    schema: SchemaRef,
    columns: Arc<Vec<Column>>,
    seed: u64,
    timing: Timing,
    counters: Arc<SourceCounters>,
}

fn generate(
    column: &Column,
    stream: u64,
    seed: u64,
    timing: &Timing,
    rows: std::ops::Range<u64>,
) -> Result<ArrayRef, ConnectorError> {
    let unit = |i: u64| (random(seed, stream, i) >> 11) as f64 / (1u64 << 53) as f64;
    let number = |i: u64| match column.kind {
        Kind::Sequence => column.min + i as f64,
        _ => {
            column.min
                + (unit(i) * (column.max - column.min + 1.0))
                    .floor()
                    .min(column.max - column.min)
        }
    };
    let array: ArrayRef = match column.field.data_type() {
        t if t.is_integer() => {
            Arc::new(Int64Array::from_iter_values(rows.map(|i| number(i) as i64)))
        }
        t if t.is_floating() => {
            Arc::new(Float64Array::from_iter_values(rows.map(
                |i| match column.kind {
                    Kind::Sequence => column.min + i as f64,
                    _ => column.min + unit(i) * (column.max - column.min),
                },
            )))
        }
        DataType::Boolean => Arc::new(BooleanArray::from_iter(
            rows.map(|i| Some(random(seed, stream, i) & 1 == 1)),
        )),
        DataType::Timestamp(_, tz) => {
            let values = rows.map(|i| match column.kind {
                Kind::EventTime => timing.event_time_ns(i),
                Kind::Sequence => timing.start_ns + i as i64 * 1_000_000_000,
                Kind::Random => {
                    timing.start_ns + (random(seed, stream, i) % 86_400_000_000_000) as i64
                }
            });
            Arc::new(
                TimestampNanosecondArray::from_iter_values(values).with_timezone_opt(tz.clone()),
            )
        }
        DataType::Date32 => Arc::new(Int64Array::from_iter_values(rows.map(|i| number(i) as i64))),
        _ => Arc::new(StringArray::from_iter_values(rows.map(|i| {
            (0..column.length)
                .map(|k| {
                    ALPHABET[(random(seed, stream ^ (k as u64 + 1) << 32, i)
                        % ALPHABET.len() as u64) as usize] as char
                })
                .collect::<String>()
        }))),
    };
    let target = match column.field.data_type() {
        DataType::Timestamp(unit, tz) if *unit != TimeUnit::Nanosecond => {
            DataType::Timestamp(*unit, tz.clone())
        }
        other => other.clone(),
    };
    if array.data_type() == &target {
        Ok(array)
    } else if target == DataType::Date32 {
        Ok(cast(&cast(&array, &DataType::Int32)?, &DataType::Date32)?)
    } else {
        Ok(cast(&array, &target)?)
    }
}

#[async_trait]
impl Source for DatagenSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self) -> String {
        match (self.timing.paced_rate, self.timing.events) {
            (Some(rate), Some(events)) => {
                format!("datagen: {rate} rows/s, {events} rows, seed {}", self.seed)
            }
            (Some(rate), None) => format!("datagen: {rate} rows/s, unbounded, seed {}", self.seed),
            (None, events) => format!("datagen: {} rows, seed {}", events.unwrap_or(0), self.seed),
        }
    }

    fn state(&self) -> BTreeMap<String, String> {
        self.timing.state()
    }

    async fn snapshot(&self) -> Result<Vec<Split>, ConnectorError> {
        Ok(self.timing.splits_of(self.timing.available()))
    }

    async fn positions(&self) -> Result<Vec<Split>, ConnectorError> {
        Ok(self.timing.continuous_split(self.timing.available()))
    }

    fn read(
        &self,
        split: Split,
        projection: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> BoxStream<'static, Result<RecordBatch, ConnectorError>> {
        let indices: Vec<usize> = projection.unwrap_or_else(|| (0..self.columns.len()).collect());
        let columns = self.columns.clone();
        let (seed, timing, counters) = (self.seed, self.timing, self.counters.clone());
        let batch_rows = batch_rows.max(1) as i64;
        let starts = (split.start..split.end).step_by(batch_rows as usize);
        stream::iter(starts)
            .map(move |start| {
                let end = (start + batch_rows).min(split.end);
                let rows = start as u64..end as u64;
                let mut fields = Vec::with_capacity(indices.len());
                let mut arrays = Vec::with_capacity(indices.len());
                for &index in &indices {
                    let column = &columns[index];
                    arrays.push(generate(column, index as u64, seed, &timing, rows.clone())?);
                    fields.push(column.field.clone().with_nullable(true));
                }
                counters
                    .messages_read
                    .fetch_add((end - start) as u64, std::sync::atomic::Ordering::Relaxed);
                let options =
                    RecordBatchOptions::new().with_row_count(Some((end - start) as usize));
                Ok(RecordBatch::try_new_with_options(
                    Arc::new(Schema::new(fields)),
                    arrays,
                    &options,
                )?)
            })
            .boxed()
    }

    fn counters(&self) -> Arc<SourceCounters> {
        self.counters.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    fn config(options: &[(&str, &str)]) -> SourceConfig {
        SourceConfig {
            name: "g".to_string(),
            schema: Some(Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("score", DataType::Int32, true),
                Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
                Field::new("tag", DataType::Utf8, true),
            ]))),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: BTreeMap::new(),
            storage_dir: None,
        }
    }

    async fn read_all(source: &Arc<dyn Source>) -> Vec<RecordBatch> {
        let mut batches = Vec::new();
        for split in source.snapshot().await.unwrap() {
            batches.extend(
                source
                    .read(split, None, 7)
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap(),
            );
        }
        batches
    }

    #[tokio::test]
    async fn rows_are_typed_bounded_and_reproducible() {
        let options = [
            ("events", "100"),
            ("seed", "7"),
            ("start_time_ms", "0"),
            ("fields.id.kind", "sequence"),
            ("fields.score.min", "5"),
            ("fields.score.max", "9"),
            ("splits", "3"),
        ];
        let source = DatagenConnector
            .create(config(&options), true)
            .await
            .unwrap();
        let first = read_all(&source).await;
        let again = read_all(&source).await;
        assert_eq!(first, again);
        let batch = arrow::compute::concat_batches(&first[0].schema(), &first).unwrap();
        assert_eq!(batch.num_rows(), 100);
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values().to_vec(), (0..100).collect::<Vec<i64>>());
        let scores = cast(batch.column(1), &DataType::Int64).unwrap();
        let scores = scores.as_any().downcast_ref::<Int64Array>().unwrap();
        assert!(scores.values().iter().all(|s| (5..=9).contains(s)));
        assert!(
            (5..=9).all(|v| scores.values().contains(&v)),
            "every value in range appears"
        );
        let ts = batch
            .column(2)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        assert_eq!(
            ts.value(1) - ts.value(0),
            1_000_000,
            "1000 rows/s of event time"
        );
    }

    #[tokio::test]
    async fn bad_options_are_named() {
        let err = DatagenConnector
            .create(config(&[("rows", "5")]), true)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("'rows'"), "{err}");
        let err = DatagenConnector
            .create(config(&[("fields.score.min", "x")]), true)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("fields.score.min"), "{err}");
    }
}
