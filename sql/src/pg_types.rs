//! PostgreSQL types as Freshet presents them: the one place that decides which PostgreSQL type
//! an Arrow column is, and what PostgreSQL's catalog says about that type.
//!
//! Every part of Freshet that names a PostgreSQL type asks this module, so a client that reads
//! a view's columns from the catalog and then queries the view sees the same type twice:
//!
//! - the pgwire frontend announces result columns (RowDescription: OID, length, type modifier)
//!   and parameters with [`column_type`], and turns the parameter types a client declares in
//!   its Parse message into Arrow types with [`arrow_type`];
//! - `pg_catalog.pg_attribute`, `information_schema.columns` and `format_type` describe a
//!   column with the same [`ColumnType`] ([`catalog_column_type`], [`format_type`]);
//! - `to_regtype` finds a type from the name a user writes with [`internal_name`];
//! - the engine types the parameters a statement leaves open with [`sql_type`].
//!
//! The answers are PostgreSQL's where PostgreSQL has one: `SELECT NULL` is `text`, as
//! PostgreSQL resolves an `unknown` output column; `numeric(p, s)` carries its precision and
//! scale as PostgreSQL's type modifier; arrays are their element's array type. Arrow types
//! PostgreSQL has no counterpart for are sent as the nearest wider type (`int1` → `int2`,
//! `uint64` → `numeric`, `float16` → `float4`, durations → `interval`).
//!
//! This module only maps types; it encodes no values (the pgwire frontend does).

use std::sync::Arc;

use arrow_pg::datatypes::{is_pg_char_field, pg_type_for_alias_kind, PG_OID_ALIAS_KEY};
use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::ast::DataType as SqlType;
use postgres_types::{Kind, Type};

/// The Arrow canonical extension name of JSON text columns.
pub const JSON_EXTENSION: &str = "arrow.json";

const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";

/// PostgreSQL's `VARHDRSZ`: type modifiers of variable-length types count it.
const VARHDRSZ: i32 = 4;

/// An Arrow type no PostgreSQL client can receive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot send {data_type} to a PostgreSQL client")]
pub struct UnsupportedType {
    pub data_type: DataType,
}

/// How PostgreSQL stores a type: the `pg_type` columns `pg_attribute` copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeStorage {
    /// `typlen`: the fixed width in bytes, -1 for variable-length types.
    pub len: i16,
    /// `typbyval`.
    pub by_value: bool,
    /// `typalign`: `c`, `s`, `i` or `d`.
    pub align: &'static str,
    /// `typstorage`: `p`, `m` or `x`.
    pub storage: &'static str,
    /// `typcollation`: 100 (the default collation) for text types, else 0.
    pub collation: u32,
}

/// The PostgreSQL type of one column: what the wire announces and the catalog lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    wire: Type,
    typmod: i32,
}

impl ColumnType {
    fn new(wire: Type) -> Self {
        ColumnType { wire, typmod: -1 }
    }

    /// The type as the wire protocol announces it; arrays and records carry their element and
    /// field types, which the value encoder reads.
    pub fn wire(&self) -> &Type {
        &self.wire
    }

    /// `pg_type.oid`.
    pub fn oid(&self) -> u32 {
        self.wire.oid()
    }

    /// `pg_type.typname`: `int4`, `_int4`, `record` …
    pub fn name(&self) -> &str {
        self.wire.name()
    }

    /// The type modifier (`atttypmod`, RowDescription's modifier): `numeric(p, s)` packed as
    /// PostgreSQL packs it, -1 for none. An array has its element's modifier.
    pub fn typmod(&self) -> i32 {
        self.typmod
    }

    /// `attndims`: 1 for arrays, 0 otherwise.
    pub fn dimensions(&self) -> i32 {
        i32::from(self.element().is_some())
    }

    /// The element type of an array type.
    pub fn element(&self) -> Option<&Type> {
        match self.wire.kind() {
            Kind::Array(element) => Some(element),
            _ => None,
        }
    }

    /// How PostgreSQL stores the type.
    pub fn storage(&self) -> TypeStorage {
        type_storage(&self.wire)
    }

    /// The SQL name `format_type(atttypid, atttypmod)` shows: `integer`, `numeric(10,2)`,
    /// `timestamp with time zone`, `bigint[]`.
    pub fn sql_name(&self) -> String {
        format_type(self.oid(), self.typmod).unwrap_or_else(|| self.name().to_string())
    }

    /// `information_schema`'s numeric precision, radix and scale: binary integers and floats
    /// count bits (radix 2), `numeric` counts digits (radix 10; precision and scale only when
    /// the modifier gives them). `None` for other types.
    pub fn numeric_precision(&self) -> Option<(Option<i32>, i32, Option<i32>)> {
        Some(match self.oid() {
            21 => (Some(16), 2, Some(0)),
            23 => (Some(32), 2, Some(0)),
            20 => (Some(64), 2, Some(0)),
            700 => (Some(24), 2, None),
            701 => (Some(53), 2, None),
            1700 if self.typmod >= VARHDRSZ => {
                let packed = self.typmod - VARHDRSZ;
                (Some(packed >> 16), 10, Some(packed & 0xffff))
            }
            1700 => (None, 10, None),
            _ => return None,
        })
    }

    /// `information_schema`'s fractional-second digits of date and time types: 0 for `date`,
    /// PostgreSQL's default of 6 (microseconds) for the others.
    pub fn datetime_precision(&self) -> Option<i32> {
        match self.oid() {
            1082 => Some(0),
            1083 | 1114 | 1184 | 1186 | 1266 => Some(6),
            _ => None,
        }
    }

    /// `information_schema`'s largest size in bytes of a text value: PostgreSQL's 1 GB.
    pub fn octet_length(&self) -> Option<i32> {
        matches!(self.oid(), 25 | 1042 | 1043).then_some(1_073_741_824)
    }

    /// `information_schema.columns.data_type`: `ARRAY` for arrays, else the SQL name without
    /// modifier.
    pub fn data_type_name(&self) -> String {
        if self.element().is_some() {
            return "ARRAY".to_string();
        }
        format_type(self.oid(), -1).unwrap_or_else(|| self.name().to_string())
    }
}

/// The PostgreSQL type of an Arrow column, from its type and its metadata: an `Int32` tagged
/// as an OID alias is that alias (`oid`, `regclass` …), a UTF-8 column tagged `pg.char` is
/// `"char"`, a UTF-8 column with the `arrow.json` extension is `json`, a dictionary is its
/// values' type.
pub fn column_type(field: &Field) -> Result<ColumnType, UnsupportedType> {
    if let Some(alias) = field
        .metadata()
        .get(PG_OID_ALIAS_KEY)
        .and_then(|kind| pg_type_for_alias_kind(kind))
    {
        return Ok(ColumnType::new(alias));
    }
    if is_pg_char_field(field) {
        return Ok(ColumnType::new(Type::CHAR));
    }
    if is_json(field) {
        return Ok(ColumnType::new(Type::JSON));
    }
    let unsupported = || UnsupportedType {
        data_type: field.data_type().clone(),
    };
    match field.data_type() {
        DataType::Dictionary(_, values) => {
            let values = Field::new(field.name(), values.as_ref().clone(), field.is_nullable())
                .with_metadata(field.metadata().clone());
            column_type(&values)
        }
        // List views are left out: the value encoder cannot write them.
        DataType::List(element)
        | DataType::LargeList(element)
        | DataType::FixedSizeList(element, _) => {
            let element_type = array_element_type(element).ok_or_else(unsupported)?;
            let wire = array_of(element_type.wire()).ok_or_else(unsupported)?;
            Ok(ColumnType {
                wire,
                typmod: element_type.typmod,
            })
        }
        DataType::Struct(fields) => {
            let fields = fields
                .iter()
                .map(|f| {
                    Ok(postgres_types::Field::new(
                        f.name().clone(),
                        column_type(f)?.wire,
                    ))
                })
                .collect::<Result<Vec<_>, UnsupportedType>>()?;
            Ok(ColumnType::new(record(Kind::Composite(fields))))
        }
        data_type => scalar_type(data_type).ok_or_else(unsupported),
    }
}

/// What the catalog lists for a column: its [`column_type`], or `text` for a column no client
/// can receive (a query reading it fails with [`UnsupportedType`]; the catalog still has to
/// list it, so that a client can see the relation's other columns).
pub fn catalog_column_type(field: &Field) -> ColumnType {
    column_type(field).unwrap_or_else(|_| ColumnType::new(Type::TEXT))
}

/// The type of a plain (not nested, not tagged) Arrow type.
fn scalar_type(data_type: &DataType) -> Option<ColumnType> {
    let wire = match data_type {
        // PostgreSQL resolves an output column of unknown type to text, and sends it so.
        DataType::Null => Type::TEXT,
        DataType::Boolean => Type::BOOL,
        // PostgreSQL has no one-byte or unsigned integers: each takes the next signed width.
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Decimal32(precision, scale)
        | DataType::Decimal64(precision, scale)
        | DataType::Decimal128(precision, scale)
        | DataType::Decimal256(precision, scale) => {
            return Some(ColumnType {
                wire: Type::NUMERIC,
                typmod: numeric_typmod(*precision, *scale),
            })
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Interval(_) | DataType::Duration(_) => Type::INTERVAL,
        _ => return None,
    };
    Some(ColumnType::new(wire))
}

/// The type of an array's elements; `None` for elements the value encoder cannot write inside
/// an array (nested lists, maps, dictionaries …).
fn array_element_type(element: &Field) -> Option<ColumnType> {
    if is_json(element) {
        return Some(ColumnType::new(Type::JSON));
    }
    match element.data_type() {
        DataType::Struct(_) => column_type(element).ok(),
        data_type => scalar_type(data_type),
    }
}

/// PostgreSQL's modifier of `numeric(precision, scale)`: `((precision << 16) | scale) +
/// VARHDRSZ`. A negative scale has no modifier here.
fn numeric_typmod(precision: u8, scale: i8) -> i32 {
    if scale < 0 {
        return -1;
    }
    ((i32::from(precision) << 16) | i32::from(scale)) + VARHDRSZ
}

fn record(kind: Kind) -> Type {
    Type::new(
        Type::RECORD.name().to_string(),
        Type::RECORD.oid(),
        kind,
        Type::RECORD.schema().to_string(),
    )
}

/// The array type whose elements are `element`.
fn array_of(element: &Type) -> Option<Type> {
    if element.oid() == Type::RECORD.oid() {
        return Some(Type::new(
            Type::RECORD_ARRAY.name().to_string(),
            Type::RECORD_ARRAY.oid(),
            Kind::Array(element.clone()),
            Type::RECORD_ARRAY.schema().to_string(),
        ));
    }
    let array = match *element {
        Type::BOOL => Type::BOOL_ARRAY,
        Type::BYTEA => Type::BYTEA_ARRAY,
        Type::CHAR => Type::CHAR_ARRAY,
        Type::INT2 => Type::INT2_ARRAY,
        Type::INT4 => Type::INT4_ARRAY,
        Type::INT8 => Type::INT8_ARRAY,
        Type::OID => Type::OID_ARRAY,
        Type::TEXT => Type::TEXT_ARRAY,
        Type::JSON => Type::JSON_ARRAY,
        Type::FLOAT4 => Type::FLOAT4_ARRAY,
        Type::FLOAT8 => Type::FLOAT8_ARRAY,
        Type::NUMERIC => Type::NUMERIC_ARRAY,
        Type::DATE => Type::DATE_ARRAY,
        Type::TIME => Type::TIME_ARRAY,
        Type::TIMESTAMP => Type::TIMESTAMP_ARRAY,
        Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
        Type::INTERVAL => Type::INTERVAL_ARRAY,
        _ => return None,
    };
    Some(array)
}

/// Whether a UTF-8 column carries the `arrow.json` extension: a `json` column.
pub fn is_json(field: &Field) -> bool {
    field
        .metadata()
        .get(EXTENSION_NAME_KEY)
        .is_some_and(|name| name == JSON_EXTENSION)
        && matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
}

/// How PostgreSQL stores `ty` (its `pg_type` row); arrays are stored as PostgreSQL stores
/// every array: variable length, aligned as their element when that is `d`, else `i`.
fn type_storage(ty: &Type) -> TypeStorage {
    let fixed = |len, align| TypeStorage {
        len,
        by_value: true,
        align,
        storage: "p",
        collation: 0,
    };
    let varlena = |align, storage, collation| TypeStorage {
        len: -1,
        by_value: false,
        align,
        storage,
        collation,
    };
    if let Kind::Array(element) = ty.kind() {
        let element = type_storage(element);
        let align = if element.align == "d" { "d" } else { "i" };
        return varlena(align, "x", element.collation);
    }
    match ty.oid() {
        16 | 18 => fixed(1, "c"),
        21 => fixed(2, "s"),
        // int4, oid, the reg* aliases, float4, date.
        23 | 24 | 26 | 700 | 1082 | 2202..=2206 | 3734 | 3769 | 4089 | 4096 | 4191 => fixed(4, "i"),
        20 | 701 | 1083 | 1114 | 1184 => fixed(8, "d"),
        1186 => TypeStorage {
            len: 16,
            by_value: false,
            ..fixed(16, "d")
        },
        1700 => varlena("i", "m", 0),
        2249 => varlena("d", "x", 0),
        25 => varlena("i", "x", 100),
        _ => varlena("i", "x", 0),
    }
}

/// PostgreSQL's `format_type(oid, typmod)` for the types Freshet sends: the SQL name with
/// its modifier (`numeric(10,2)`, `character varying(20)`, `integer[]`). `None` for a type
/// this module does not know; the catalog then shows its `pg_type` name.
pub fn format_type(oid: u32, typmod: i32) -> Option<String> {
    let ty = Type::from_oid(oid)?;
    if let Kind::Array(element) = ty.kind() {
        return Some(format!("{}[]", format_type(element.oid(), typmod)?));
    }
    // `_record` is a pseudo-type to `postgres-types`, an array of records to PostgreSQL.
    if ty == Type::RECORD_ARRAY {
        return Some("record[]".to_string());
    }
    let with_precision = |name: &str, suffix: &str| {
        if typmod >= 0 {
            format!("{name}({typmod}){suffix}")
        } else {
            format!("{name}{suffix}")
        }
    };
    Some(match oid {
        16 => "boolean".to_string(),
        20 => "bigint".to_string(),
        21 => "smallint".to_string(),
        23 => "integer".to_string(),
        700 => "real".to_string(),
        701 => "double precision".to_string(),
        18 => "\"char\"".to_string(),
        1042 if typmod > VARHDRSZ => format!("character({})", typmod - VARHDRSZ),
        1043 if typmod > VARHDRSZ => format!("character varying({})", typmod - VARHDRSZ),
        1043 => "character varying".to_string(),
        1700 if typmod >= VARHDRSZ => {
            let packed = typmod - VARHDRSZ;
            format!("numeric({},{})", packed >> 16, packed & 0xffff)
        }
        1083 => with_precision("time", " without time zone"),
        1266 => with_precision("time", " with time zone"),
        1114 => with_precision("timestamp", " without time zone"),
        1184 => with_precision("timestamp", " with time zone"),
        // Every other built-in type is shown by its `pg_type` name (`text`, `bpchar`,
        // `interval`, `record`, `regclass` …).
        _ => ty.name().to_string(),
    })
}

/// The `pg_type` name of a type as a user writes it (`integer` → `int4`, `double precision`
/// → `float8`, `pg_catalog.text` → `text`, `integer[]` → `_int4`): what `to_regtype` looks up.
pub fn internal_name(written: &str) -> String {
    let name = written.trim().to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    if let Some(element) = name.strip_suffix("[]") {
        return format!("_{}", internal_name(element));
    }
    let name = name.trim_matches('"');
    match name {
        "integer" | "int" => "int4",
        "bigint" => "int8",
        "smallint" => "int2",
        "boolean" => "bool",
        "real" => "float4",
        "double precision" | "float" => "float8",
        "decimal" => "numeric",
        "character varying" => "varchar",
        "character" => "bpchar",
        "time without time zone" => "time",
        "time with time zone" => "timetz",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        other => other,
    }
    .to_string()
}

/// The Arrow type of a parameter type a client declares in its Parse message; `None` for
/// `unknown` and types the engine plans from the query alone. JSON parameters are text to
/// the engine.
pub fn arrow_type(declared: &Type) -> Option<DataType> {
    if let Kind::Array(element) = declared.kind() {
        let element = declared_scalar(element)?;
        return Some(DataType::List(Arc::new(Field::new_list_field(
            element, true,
        ))));
    }
    declared_scalar(declared)
}

fn declared_scalar(declared: &Type) -> Option<DataType> {
    Some(match *declared {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::NUMERIC => DataType::Decimal128(38, 10),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::JSONB => {
            DataType::Utf8
        }
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        Type::INTERVAL => DataType::Interval(IntervalUnit::MonthDayNano),
        _ => return None,
    })
}

/// The SQL type the engine declares a parameter with (`PREPARE … (bigint, text)`) when it
/// has to give a type to a parameter the query leaves open; `None` for Arrow types that have
/// no such SQL type.
pub fn sql_type(data_type: &DataType) -> Option<SqlType> {
    use datafusion::sql::sqlparser::ast::{ArrayElemTypeDef, ExactNumberInfo, TimezoneInfo};
    Some(match data_type {
        DataType::Boolean => SqlType::Boolean,
        DataType::Int16 => SqlType::SmallInt(None),
        DataType::Int32 => SqlType::Integer(None),
        DataType::Int64 => SqlType::BigInt(None),
        DataType::Float32 => SqlType::Real,
        DataType::Float64 => SqlType::DoublePrecision,
        DataType::Decimal128(precision, scale) => SqlType::Numeric(
            ExactNumberInfo::PrecisionAndScale(*precision as u64, *scale as i64),
        ),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::Text,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => SqlType::Bytea,
        DataType::Date32 => SqlType::Date,
        DataType::Time64(_) => SqlType::Time(None, TimezoneInfo::None),
        DataType::Timestamp(_, None) => SqlType::Timestamp(None, TimezoneInfo::None),
        DataType::Timestamp(_, Some(_)) => SqlType::Timestamp(None, TimezoneInfo::WithTimeZone),
        DataType::Interval(_) => SqlType::Interval {
            fields: None,
            precision: None,
        },
        DataType::List(element) => SqlType::Array(ArrayElemTypeDef::SquareBracket(
            Box::new(sql_type(element.data_type())?),
            None,
        )),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
