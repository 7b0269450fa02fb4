//! Arrow columns in PostgreSQL's wire formats: how each column is announced and how its
//! values are written, as text and as binary.
//!
//! Which PostgreSQL type a column is (OID, length, type modifier) is decided by
//! `freshet_sql::pg_types`, the mapping `pg_catalog` and `information_schema` use too, so a
//! client reads the same type from the catalog as from a RowDescription.
//!
//! `arrow-pg` writes most values. This module takes over where its answer differs from
//! PostgreSQL's, because drivers parse the text forms and compare them with what PostgreSQL
//! sends:
//!
//! - floats: shortest round-trip digits in PostgreSQL's layout (`2`, `0.1`, `1e+20`,
//!   `Infinity`), or `%g`-style rounding when `extra_float_digits` is 0 or less;
//! - timestamps and times: no trailing zero fractions (`2020-01-02 03:04:05`), `timestamptz`
//!   shown in the session's `TimeZone` with its offset (`+00`, `+05:30`);
//! - intervals: PostgreSQL's `postgres` style (`1 day 02:00:00`, `-1 days +02:00:00`), and
//!   NULL intervals stay NULL;
//! - numerics of every Arrow decimal width, written from their exact decimal text;
//! - Int8 columns as int2 (`arrow-pg` writes one byte where clients read two);
//! - `NULL`-typed columns (`SELECT NULL`) are written as text NULLs;
//! - JSON: a UTF-8 column whose field carries the Arrow canonical extension `arrow.json`
//!   (`json`, OID 114) is written as JSON text (jsonb's version byte when asked for jsonb);
//! - arrays of all the above.
//!
//! Everything else (integers, text, bool, bytea, date, other arrays, structs) goes to
//! `arrow-pg` unchanged.

use std::str::FromStr;
use std::sync::Arc;

use arrow_pg::encoder::encode_value;
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Datelike, Offset, TimeZone, Timelike};
use freshet_sql::datafusion::arrow::array::timezone::Tz;
use freshet_sql::datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use freshet_sql::datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Decimal256Type, Decimal32Type, Decimal64Type,
    DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType, DurationSecondType,
    Field, Float16Type, Float32Type, Float64Type, Int8Type, IntervalDayTimeType,
    IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType, Schema, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::api::Type;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use pgwire::types::ToSqlText;
use postgres_types::{to_sql_checked, IsNull, Kind, ToSql};

use freshet_sql::pg_types::{column_type, is_json};

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

const MICROS_PER_SECOND: i64 = 1_000_000;

fn is_decimal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    )
}

fn list_element(data_type: &DataType) -> Option<&Arc<Field>> {
    match data_type {
        DataType::List(element)
        | DataType::LargeList(element)
        | DataType::FixedSizeList(element, _) => Some(element),
        _ => None,
    }
}

/// The PostgreSQL type a column is announced with; an error for Arrow types no client can
/// receive (maps, unions …), with SQLSTATE 0A000 (feature not supported).
pub fn pg_type(field: &Field) -> PgWireResult<Type> {
    column_type(field)
        .map(|t| t.wire().clone())
        .map_err(|e| unsupported_type(&e))
}

fn unsupported_type(error: &freshet_sql::pg_types::UnsupportedType) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        "0A000".to_string(),
        error.to_string(),
    )))
}

/// The RowDescription fields of a result.
pub fn pg_fields(
    schema: &Schema,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<Vec<FieldInfo>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let pg = column_type(field).map_err(|e| unsupported_type(&e))?;
            Ok(FieldInfo::new(
                field.name().clone(),
                None,
                None,
                pg.wire().clone(),
                format.format_for(i),
            )
            // Length and modifier as PostgreSQL sends them (`numeric(10,2)` has one), the same
            // `pg_attribute` lists.
            .with_type_size(pg.storage().len)
            .with_type_modifier(pg.typmod())
            .with_format_options(options.clone()))
        })
        .collect()
}

/// Encodes the rows of a batch as DataRows in the formats of `fields`.
pub fn encode_batch(
    fields: Arc<Vec<FieldInfo>>,
    batch: RecordBatch,
) -> impl Iterator<Item = PgWireResult<DataRow>> + Send + Sync {
    assert_eq!(
        batch.num_columns(),
        fields.len(),
        "a batch must match its row description"
    );
    let zone = fields
        .first()
        .map(|f| session_zone(&f.format_options().time_zone))
        .unwrap_or_else(utc);
    let mut encoder = DataRowEncoder::new(fields.clone());
    let rows = batch.num_rows();
    let mut row = 0;
    std::iter::from_fn(move || {
        if row >= rows {
            return None;
        }
        let schema = batch.schema_ref();
        for (column, pg_field) in fields.iter().enumerate() {
            let array = batch.column(column);
            let field = schema.field(column);
            if let Err(err) = encode_cell(&mut encoder, array, field, pg_field, row, &zone) {
                row = rows;
                return Some(Err(err));
            }
        }
        row += 1;
        Some(Ok(encoder.take_row()))
    })
}

fn utc() -> Tz {
    Tz::from_str("+00:00").expect("a fixed offset parses")
}

/// The session's `TimeZone`, UTC when it is not a zone name or offset Arrow knows.
fn session_zone(name: &str) -> Tz {
    let name = name.trim();
    if name.eq_ignore_ascii_case("utc") || name.eq_ignore_ascii_case("etc/utc") {
        return utc();
    }
    Tz::from_str(name).unwrap_or_else(|_| utc())
}

fn encode_cell(
    encoder: &mut DataRowEncoder,
    array: &ArrayRef,
    field: &Field,
    pg_field: &FieldInfo,
    row: usize,
    zone: &Tz,
) -> PgWireResult<()> {
    if let Some(value) = cell(array, field, row, zone)? {
        return encode(encoder, &value, pg_field);
    }
    if let Some(element) = list_element(field.data_type()) {
        if takes_over(element) && !array.is_null(row) {
            let values = list_values(array, row);
            let cells = (0..values.len())
                .map(|i| cell(&values, element, i, zone).map(|v| v.unwrap_or(Value::Null)))
                .collect::<PgWireResult<Vec<Value>>>()?;
            return encode(encoder, &cells, pg_field);
        }
    }
    encode_value(encoder, array, row, field, pg_field)
}

fn encode<T: ToSql + ToSqlText>(
    encoder: &mut DataRowEncoder,
    value: &T,
    pg_field: &FieldInfo,
) -> PgWireResult<()> {
    encoder.encode_field_with_type_and_format(
        value,
        pg_field.datatype(),
        pg_field.format(),
        pg_field.format_options(),
    )
}

/// Whether this module encodes values of this element type itself.
fn takes_over(field: &Field) -> bool {
    is_json(field)
        || is_decimal(field.data_type())
        || matches!(
            field.data_type(),
            DataType::Null
                | DataType::FixedSizeBinary(_)
                | DataType::Int8
                | DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Timestamp(..)
                | DataType::Time32(_)
                | DataType::Time64(_)
                | DataType::Interval(_)
                | DataType::Duration(_)
        )
}

fn list_values(array: &ArrayRef, row: usize) -> ArrayRef {
    match array.data_type() {
        DataType::LargeList(_) => array.as_list::<i64>().value(row),
        DataType::FixedSizeList(..) => array.as_fixed_size_list().value(row),
        _ => array.as_list::<i32>().value(row),
    }
}

fn unsupported(what: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        "0A000".to_string(),
        format!("cannot send {what} to a PostgreSQL client"),
    )))
}

/// The value of one cell when this module encodes its type; `None` for types left to
/// `arrow-pg`.
fn cell(array: &ArrayRef, field: &Field, row: usize, zone: &Tz) -> PgWireResult<Option<Value>> {
    if !takes_over(field) {
        return Ok(None);
    }
    // A NullArray has no validity buffer: `is_null` is false for it.
    if array.is_null(row) || array.data_type() == &DataType::Null {
        return Ok(Some(Value::Null));
    }
    let value = match array.data_type() {
        DataType::Int8 => Value::Int2(array.as_primitive::<Int8Type>().value(row) as i16),
        DataType::FixedSizeBinary(_) => {
            Value::Bytea(array.as_fixed_size_binary().value(row).to_vec())
        }
        DataType::Float16 => Value::Float4(array.as_primitive::<Float16Type>().value(row).to_f32()),
        DataType::Float32 => Value::Float4(array.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => Value::Float8(array.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(unit, tz) => {
            let micros = timestamp_micros(array, *unit, row);
            match tz {
                None => Value::Timestamp(micros),
                Some(_) => Value::TimestampTz {
                    micros,
                    offset_seconds: offset_at(zone, micros),
                },
            }
        }
        DataType::Time32(unit) | DataType::Time64(unit) => {
            Value::Time(time_micros(array, *unit, row))
        }
        DataType::Interval(_) | DataType::Duration(_) => interval(array, row),
        DataType::Decimal32(..) => {
            Value::Numeric(array.as_primitive::<Decimal32Type>().value_as_string(row))
        }
        DataType::Decimal64(..) => {
            Value::Numeric(array.as_primitive::<Decimal64Type>().value_as_string(row))
        }
        DataType::Decimal128(..) => {
            Value::Numeric(array.as_primitive::<Decimal128Type>().value_as_string(row))
        }
        DataType::Decimal256(..) => {
            Value::Numeric(array.as_primitive::<Decimal256Type>().value_as_string(row))
        }
        DataType::Utf8 => Value::Json(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::Json(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::Json(array.as_string_view().value(row).to_string()),
        other => return Err(unsupported(&other.to_string())),
    };
    Ok(Some(value))
}

fn timestamp_micros(array: &ArrayRef, unit: TimeUnit, row: usize) -> i64 {
    match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(MICROS_PER_SECOND),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1_000),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => array
            .as_primitive::<TimestampNanosecondType>()
            .value(row)
            .div_euclid(1_000),
    }
}

fn time_micros(array: &ArrayRef, unit: TimeUnit, row: usize) -> i64 {
    match unit {
        TimeUnit::Second => {
            array.as_primitive::<Time32SecondType>().value(row) as i64 * MICROS_PER_SECOND
        }
        TimeUnit::Millisecond => {
            array.as_primitive::<Time32MillisecondType>().value(row) as i64 * 1_000
        }
        TimeUnit::Microsecond => array.as_primitive::<Time64MicrosecondType>().value(row),
        TimeUnit::Nanosecond => array.as_primitive::<Time64NanosecondType>().value(row) / 1_000,
    }
}

fn interval(array: &ArrayRef, row: usize) -> Value {
    let (months, days, micros) = match array.data_type() {
        DataType::Interval(IntervalUnit::YearMonth) => (
            array.as_primitive::<IntervalYearMonthType>().value(row),
            0,
            0,
        ),
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = array.as_primitive::<IntervalDayTimeType>().value(row);
            (0, v.days, v.milliseconds as i64 * 1_000)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            (v.months, v.days, v.nanoseconds / 1_000)
        }
        DataType::Duration(TimeUnit::Second) => (
            0,
            0,
            array
                .as_primitive::<DurationSecondType>()
                .value(row)
                .saturating_mul(MICROS_PER_SECOND),
        ),
        DataType::Duration(TimeUnit::Millisecond) => (
            0,
            0,
            array
                .as_primitive::<DurationMillisecondType>()
                .value(row)
                .saturating_mul(1_000),
        ),
        DataType::Duration(TimeUnit::Microsecond) => (
            0,
            0,
            array.as_primitive::<DurationMicrosecondType>().value(row),
        ),
        _ => (
            0,
            0,
            array.as_primitive::<DurationNanosecondType>().value(row) / 1_000,
        ),
    };
    Value::Interval {
        months,
        days,
        micros,
    }
}

/// The UTC offset of `zone` at an instant, in seconds.
fn offset_at(zone: &Tz, micros: i64) -> i32 {
    match DateTime::from_timestamp_micros(micros) {
        Some(instant) => zone
            .offset_from_utc_datetime(&instant.naive_utc())
            .fix()
            .local_minus_utc(),
        None => 0,
    }
}

/// One value in the form this module writes it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    /// Arrow's Int8: PostgreSQL has no one-byte integer, so it travels as int2.
    Int2(i16),
    /// Arrow's FixedSizeBinary, which `arrow-pg` cannot write: PostgreSQL's `bytea`.
    Bytea(Vec<u8>),
    Float4(f32),
    Float8(f64),
    /// Microseconds since the Unix epoch, no zone.
    Timestamp(i64),
    /// An instant (microseconds since the Unix epoch, UTC) shown at a UTC offset.
    TimestampTz {
        micros: i64,
        offset_seconds: i32,
    },
    /// Microseconds since midnight.
    Time(i64),
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
    /// Exact decimal text.
    Numeric(String),
    Json(String),
}

impl Value {
    fn text(&self, options: &FormatOptions) -> Result<Option<String>, BoxError> {
        Ok(Some(match self {
            Value::Null => return Ok(None),
            Value::Int2(v) => v.to_string(),
            Value::Bytea(bytes) => bytea_text(bytes),
            Value::Float4(v) => float4_text(*v, options.extra_float_digits),
            Value::Float8(v) => float8_text(*v, options.extra_float_digits),
            Value::Timestamp(micros) => timestamp_text(*micros)?,
            Value::TimestampTz {
                micros,
                offset_seconds,
            } => {
                let local = micros.saturating_add(*offset_seconds as i64 * MICROS_PER_SECOND);
                let mut text = timestamp_text(local)?;
                let bc = text.ends_with(" BC");
                if bc {
                    text.truncate(text.len() - 3);
                }
                text.push_str(&offset_text(*offset_seconds));
                if bc {
                    text.push_str(" BC");
                }
                text
            }
            Value::Time(micros) => time_text(*micros),
            Value::Interval {
                months,
                days,
                micros,
            } => interval_text(*months, *days, *micros),
            Value::Numeric(text) | Value::Json(text) => text.clone(),
        }))
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSqlText for Value {
    fn to_sql_text(
        &self,
        ty: &Type,
        out: &mut BytesMut,
        format_options: &FormatOptions,
    ) -> Result<IsNull, BoxError> {
        let Some(text) = self.text(format_options)? else {
            return Ok(IsNull::Yes);
        };
        if matches!(ty.kind(), Kind::Array(_)) && needs_array_quotes(&text) {
            out.put_u8(b'"');
            for c in text.chars() {
                if c == '"' || c == '\\' {
                    out.put_u8(b'\\');
                }
                let mut buffer = [0u8; 4];
                out.put_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
            out.put_u8(b'"');
        } else {
            out.put_slice(text.as_bytes());
        }
        Ok(IsNull::No)
    }
}

/// PostgreSQL's `hex` output of a bytea (`bytea_output`'s default): `\x` and two lower-case
/// hex digits per byte.
fn bytea_text(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + bytes.len() * 2);
    text.push_str("\\x");
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

fn needs_array_quotes(text: &str) -> bool {
    text.is_empty()
        || text.eq_ignore_ascii_case("null")
        || text
            .chars()
            .any(|c| matches!(c, '"' | '\\' | '{' | '}' | ',') || c.is_whitespace())
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => return Ok(IsNull::Yes),
            Value::Int2(v) => out.put_i16(*v),
            Value::Bytea(bytes) => out.put_slice(bytes),
            Value::Float4(v) => out.put_f32(*v),
            Value::Float8(v) => out.put_f64(*v),
            Value::Timestamp(micros) | Value::TimestampTz { micros, .. } => {
                out.put_i64(micros.saturating_sub(POSTGRES_EPOCH_MICROS))
            }
            Value::Time(micros) => out.put_i64(*micros),
            Value::Interval {
                months,
                days,
                micros,
            } => {
                out.put_i64(*micros);
                out.put_i32(*days);
                out.put_i32(*months);
            }
            Value::Numeric(text) => numeric_binary(text, out)?,
            Value::Json(text) => {
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.put_slice(text.as_bytes());
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        // The type was chosen from the same Arrow type by `pg_type`.
        true
    }

    to_sql_checked!();
}

/// PostgreSQL's text form of a float8: shortest round-trip digits when `extra_float_digits`
/// is positive (PostgreSQL 12 and later), else rounded to 15 + `extra_float_digits` digits.
pub fn float8_text(value: f64, extra_float_digits: i8) -> String {
    if let Some(special) = special_float(value.is_nan(), value.is_infinite(), value < 0.0) {
        return special;
    }
    if extra_float_digits > 0 {
        layout_float(&format!("{value:e}"), 15)
    } else {
        let digits = (15 + extra_float_digits as i32).max(1) as usize;
        layout_float(&format!("{value:.*e}", digits - 1), digits as i32)
    }
}

/// As [`float8_text`] for float4 (6 significant digits when rounding).
pub fn float4_text(value: f32, extra_float_digits: i8) -> String {
    if let Some(special) = special_float(value.is_nan(), value.is_infinite(), value < 0.0) {
        return special;
    }
    if extra_float_digits > 0 {
        layout_float(&format!("{value:e}"), 6)
    } else {
        let digits = (6 + extra_float_digits as i32).max(1) as usize;
        layout_float(&format!("{value:.*e}", digits - 1), digits as i32)
    }
}

fn special_float(nan: bool, infinite: bool, negative: bool) -> Option<String> {
    match (nan, infinite, negative) {
        (true, _, _) => Some("NaN".to_string()),
        (_, true, true) => Some("-Infinity".to_string()),
        (_, true, false) => Some("Infinity".to_string()),
        _ => None,
    }
}

/// Lays out Rust scientific notation (`-1.25e-7`) as PostgreSQL does: plain digits when the
/// decimal exponent is in `-4..fixed_below`, else `1.25e-07` (at least two exponent digits).
fn layout_float(scientific: &str, fixed_below: i32) -> String {
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("scientific notation has an exponent");
    let exponent: i32 = exponent.parse().expect("the exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if exponent < -4 || exponent >= fixed_below {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{fraction}e{exponent_sign}{:02}",
            exponent.abs()
        );
    }
    if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let integer_len = exponent as usize + 1;
    if digits.len() <= integer_len {
        format!("{sign}{digits}{}", "0".repeat(integer_len - digits.len()))
    } else {
        let (integer, fraction) = digits.split_at(integer_len);
        format!("{sign}{integer}.{fraction}")
    }
}

/// `.123` for a fraction of a second in microseconds, trailing zeros removed; empty for 0.
fn fraction_text(micros: i64) -> String {
    if micros == 0 {
        return String::new();
    }
    let text = format!(".{micros:06}");
    text.trim_end_matches('0').to_string()
}

/// `2020-01-02 03:04:05.5` (PostgreSQL's ISO style); years before 1 end in ` BC`.
fn timestamp_text(micros: i64) -> Result<String, BoxError> {
    let seconds = micros.div_euclid(MICROS_PER_SECOND);
    let fraction = micros.rem_euclid(MICROS_PER_SECOND);
    let datetime = DateTime::from_timestamp(seconds, 0).ok_or("timestamp out of range")?;
    let year = datetime.year();
    let (year, era) = if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    };
    Ok(format!(
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}{}{era}",
        datetime.month(),
        datetime.day(),
        datetime.hour(),
        datetime.minute(),
        datetime.second(),
        fraction_text(fraction)
    ))
}

/// `+00`, `+05:30`, `-03:00:15` as PostgreSQL shows UTC offsets.
fn offset_text(offset_seconds: i32) -> String {
    let sign = if offset_seconds < 0 { '-' } else { '+' };
    let total = offset_seconds.abs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    match (minutes, seconds) {
        (0, 0) => format!("{sign}{hours:02}"),
        (_, 0) => format!("{sign}{hours:02}:{minutes:02}"),
        _ => format!("{sign}{hours:02}:{minutes:02}:{seconds:02}"),
    }
}

fn time_text(micros: i64) -> String {
    let seconds = micros.div_euclid(MICROS_PER_SECOND);
    format!(
        "{:02}:{:02}:{:02}{}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        fraction_text(micros.rem_euclid(MICROS_PER_SECOND))
    )
}

/// An interval in PostgreSQL's default `postgres` style: `1 year 2 mons 3 days 04:05:06.5`,
/// `-1 days +02:00:00`, `00:00:00`.
pub fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::new();
    // Whether the last part written was negative: a positive part after it gets a `+`.
    let mut after_negative = false;
    let parts = [(months / 12, "year"), (months % 12, "mon"), (days, "day")];
    for (value, unit) in parts {
        if value == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if after_negative && value > 0 {
            out.push('+');
        }
        let plural = if value == 1 { "" } else { "s" };
        out.push_str(&format!("{value} {unit}{plural}"));
        after_negative = value < 0;
    }
    if out.is_empty() || micros != 0 {
        if !out.is_empty() {
            out.push(' ');
        }
        if micros < 0 {
            out.push('-');
        } else if after_negative {
            out.push('+');
        }
        let total = micros.unsigned_abs();
        let seconds = total / MICROS_PER_SECOND as u64;
        out.push_str(&format!(
            "{:02}:{:02}:{:02}{}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            fraction_text((total % MICROS_PER_SECOND as u64) as i64)
        ));
    }
    out
}

/// Writes PostgreSQL's binary numeric (base-10000 digits) for a decimal text such as
/// `-123.4500`.
fn numeric_binary(text: &str, out: &mut BytesMut) -> Result<(), BoxError> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (integer, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if !integer
        .chars()
        .chain(fraction.chars())
        .all(|c| c.is_ascii_digit())
    {
        return Err(format!("not a decimal number: {text}").into());
    }
    let scale = u16::try_from(fraction.len())?;
    // Pad both sides to whole groups of four digits, the integer part on the left.
    let integer_padding = (4 - integer.len() % 4) % 4;
    let fraction_padding = (4 - fraction.len() % 4) % 4;
    let padded: Vec<u8> = std::iter::repeat_n(b'0', integer_padding)
        .chain(integer.bytes())
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', fraction_padding))
        .collect();
    let mut groups: Vec<i16> = padded
        .chunks(4)
        .map(|chunk| {
            chunk
                .iter()
                .fold(0i16, |acc, d| acc * 10 + (d - b'0') as i16)
        })
        .collect();
    let mut weight = ((integer_padding + integer.len()) / 4) as i32 - 1;
    let leading_zeros = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading_zeros);
    weight -= leading_zeros as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(i16::try_from(groups.len())?);
    out.put_i16(i16::try_from(weight)?);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(scale);
    for group in groups {
        out.put_i16(group);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_sql::datafusion::arrow::array::{
        FixedSizeBinaryArray, Float64Array, IntervalMonthDayNanoArray, ListArray, StringArray,
        TimestampMicrosecondArray,
    };
    use freshet_sql::datafusion::arrow::datatypes::{Float64Type as F64, IntervalMonthDayNano};
    use freshet_sql::pg_types::JSON_EXTENSION;
    use pgwire::api::results::FieldFormat;
    use std::collections::HashMap;

    #[test]
    fn floats_look_like_postgresql() {
        let cases = [
            (2.0, "2"),
            (0.1, "0.1"),
            (-1.5, "-1.5"),
            (1e20, "1e+20"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.0 / 3.0, "0.3333333333333333"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for (value, expected) in cases {
            assert_eq!(float8_text(value, 1), expected, "{value}");
        }
        assert_eq!(float8_text(1.0 / 3.0, 0), "0.333333333333333");
        assert_eq!(float8_text(1e20, 0), "1e+20");
        assert_eq!(float8_text(2.0, -15), "2");
        assert_eq!(float4_text(1.5, 1), "1.5");
        assert_eq!(float4_text(0.1, 1), "0.1");
        assert_eq!(float4_text(1e6, 1), "1e+06");
        assert_eq!(float4_text(123456.0, 1), "123456");
        assert_eq!(float4_text(1.0 / 3.0, 0), "0.333333");
    }

    #[test]
    fn timestamps_times_and_intervals_look_like_postgresql() {
        let micros = 1_577_934_245_000_000; // 2020-01-02 03:04:05
        assert_eq!(timestamp_text(micros).unwrap(), "2020-01-02 03:04:05");
        assert_eq!(
            timestamp_text(micros + 500_000).unwrap(),
            "2020-01-02 03:04:05.5"
        );
        assert_eq!(timestamp_text(-1).unwrap(), "1969-12-31 23:59:59.999999");
        assert_eq!(offset_text(0), "+00");
        assert_eq!(offset_text(19_800), "+05:30");
        assert_eq!(offset_text(-3600), "-01");
        assert_eq!(time_text(45_296_000_000), "12:34:56");
        assert_eq!(time_text(45_296_250_000), "12:34:56.25");
        let hour = 3_600 * MICROS_PER_SECOND;
        assert_eq!(interval_text(0, 1, 2 * hour), "1 day 02:00:00");
        assert_eq!(interval_text(14, 3, 0), "1 year 2 mons 3 days");
        assert_eq!(interval_text(0, -1, 2 * hour), "-1 days +02:00:00");
        assert_eq!(interval_text(0, 0, 0), "00:00:00");
        assert_eq!(interval_text(0, 0, -90 * MICROS_PER_SECOND), "-00:01:30");
        assert_eq!(interval_text(0, 2, 1_500_000), "2 days 00:00:01.5");
    }

    fn numeric_bytes(text: &str) -> Vec<i16> {
        let mut out = BytesMut::new();
        numeric_binary(text, &mut out).unwrap();
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numeric_binary_uses_base_10000_groups() {
        // ndigits, weight, sign, dscale, digits…
        assert_eq!(
            numeric_bytes("123456.789"),
            vec![3, 1, 0, 3, 12, 3456, 7890]
        );
        assert_eq!(numeric_bytes("-1.50"), vec![2, 0, 0x4000, 2, 1, 5000]);
        assert_eq!(numeric_bytes("0.0012"), vec![1, -1, 0, 4, 12]);
        assert_eq!(numeric_bytes("0.00"), vec![0, 0, 0, 2]);
        assert_eq!(numeric_bytes("10000"), vec![1, 1, 0, 0, 1]);
    }

    fn encode_one(field: Field, array: ArrayRef, format: FieldFormat) -> Vec<u8> {
        let field = Arc::new(field);
        let schema = Arc::new(Schema::new(vec![field.clone()]));
        let pg = FieldInfo::new(
            "c".to_string(),
            None,
            None,
            pg_type(&field).unwrap(),
            format,
        );
        let batch = RecordBatch::try_new(schema, vec![array]).unwrap();
        let row = encode_batch(Arc::new(vec![pg]), batch)
            .next()
            .unwrap()
            .unwrap();
        row.data[4..].to_vec()
    }

    #[test]
    fn json_columns_are_announced_as_json() {
        let field = Field::new("doc", DataType::Utf8, true).with_metadata(HashMap::from([(
            "ARROW:extension:name".to_string(),
            JSON_EXTENSION.to_string(),
        )]));
        assert_eq!(pg_type(&field).unwrap(), Type::JSON);
        let array: ArrayRef = Arc::new(StringArray::from(vec![r#"{"a": 1}"#]));
        assert_eq!(
            encode_one(field, array, FieldFormat::Binary),
            br#"{"a": 1}"#.to_vec()
        );
        let plain = Arc::new(Field::new("s", DataType::Utf8, true));
        assert_eq!(pg_type(&plain).unwrap(), Type::TEXT);
        let null = Arc::new(Field::new("n", DataType::Null, true));
        assert_eq!(pg_type(&null).unwrap(), Type::TEXT);
    }

    #[test]
    fn fixed_size_binary_is_bytea() {
        let bytes = FixedSizeBinaryArray::try_from_iter(vec![vec![1u8, 0xab]].into_iter()).unwrap();
        let field = Field::new("b", bytes.data_type().clone(), true);
        assert_eq!(pg_type(&field).unwrap(), Type::BYTEA);
        let array: ArrayRef = Arc::new(bytes);
        assert_eq!(
            encode_one(field.clone(), array.clone(), FieldFormat::Text),
            b"\\x01ab".to_vec()
        );
        assert_eq!(
            encode_one(field, array, FieldFormat::Binary),
            vec![1u8, 0xab]
        );
    }

    #[test]
    fn arrays_of_floats_timestamps_and_intervals() {
        let list = ListArray::from_iter_primitive::<F64, _, _>(vec![Some(vec![
            Some(2.0),
            None,
            Some(0.5),
        ])]);
        let field = Field::new("l", list.data_type().clone(), true);
        assert_eq!(
            encode_one(field, Arc::new(list), FieldFormat::Text),
            b"{2,NULL,0.5}".to_vec()
        );
        let ts = TimestampMicrosecondArray::from(vec![1_577_934_245_000_000]);
        let field = Field::new("t", ts.data_type().clone(), true);
        assert_eq!(
            encode_one(field, Arc::new(ts), FieldFormat::Text),
            b"2020-01-02 03:04:05".to_vec()
        );
        let utc_ts =
            TimestampMicrosecondArray::from(vec![1_577_934_245_000_000]).with_timezone("+02:00");
        let field = Field::new("t", utc_ts.data_type().clone(), true);
        assert_eq!(
            encode_one(field, Arc::new(utc_ts), FieldFormat::Text),
            b"2020-01-02 03:04:05+00".to_vec()
        );
        let interval = IntervalMonthDayNanoArray::from(vec![Some(IntervalMonthDayNano::new(
            0,
            1,
            7_200_000_000_000,
        ))]);
        let field = Field::new("i", interval.data_type().clone(), true);
        assert_eq!(
            encode_one(field.clone(), Arc::new(interval.clone()), FieldFormat::Text),
            b"1 day 02:00:00".to_vec()
        );
        // Binary interval: microseconds, days, months.
        let mut expected = 7_200_000_000i64.to_be_bytes().to_vec();
        expected.extend(1i32.to_be_bytes());
        expected.extend(0i32.to_be_bytes());
        assert_eq!(
            encode_one(field, Arc::new(interval), FieldFormat::Binary),
            expected
        );
        let floats = Float64Array::from(vec![2.0]);
        let field = Field::new("f", DataType::Float64, true);
        assert_eq!(
            encode_one(field, Arc::new(floats), FieldFormat::Binary),
            2.0f64.to_be_bytes().to_vec()
        );
    }
}
