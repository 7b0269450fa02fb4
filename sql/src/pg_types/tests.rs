use std::collections::HashMap;

use datafusion::arrow::datatypes::{Fields, UnionFields, UnionMode};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables;

use super::*;

fn field(data_type: DataType) -> Field {
    Field::new("c", data_type, true)
}

fn of(data_type: DataType) -> ColumnType {
    column_type(&field(data_type)).expect("a type PostgreSQL clients can receive")
}

fn list(element: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(element, true)))
}

fn json_field() -> Field {
    field(DataType::Utf8).with_metadata(HashMap::from([(
        EXTENSION_NAME_KEY.to_string(),
        JSON_EXTENSION.to_string(),
    )]))
}

/// Arrow types queries return, one of each family and width.
fn scalars() -> Vec<DataType> {
    use DataType::*;
    let mut types = vec![
        Null,
        Boolean,
        Int8,
        Int16,
        Int32,
        Int64,
        UInt8,
        UInt16,
        UInt32,
        UInt64,
        Float16,
        Float32,
        Float64,
        Decimal32(5, 2),
        Decimal64(15, 3),
        Decimal128(38, 10),
        Decimal256(60, 4),
        Utf8,
        LargeUtf8,
        Utf8View,
        Binary,
        LargeBinary,
        BinaryView,
        FixedSizeBinary(4),
        Date32,
        Date64,
        Time32(TimeUnit::Second),
        Time32(TimeUnit::Millisecond),
        Time64(TimeUnit::Microsecond),
        Time64(TimeUnit::Nanosecond),
        Interval(IntervalUnit::YearMonth),
        Interval(IntervalUnit::DayTime),
        Interval(IntervalUnit::MonthDayNano),
    ];
    for unit in [
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ] {
        types.push(Timestamp(unit, None));
        types.push(Timestamp(unit, Some("UTC".into())));
        types.push(Duration(unit));
    }
    types
}

/// A `pg_type` row from PostgreSQL 16's static catalog, as text by column name.
fn static_pg_types() -> HashMap<u32, HashMap<String, String>> {
    let tables = PgCatalogStaticTables::try_new().expect("static catalog");
    let mut rows = HashMap::new();
    for batch in tables.pg_type.data() {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let values: HashMap<String, String> = schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let value = array_value_to_string(batch.column(i), row).expect("displayable");
                    (f.name().clone(), value)
                })
                .collect();
            let oid = values["oid"].parse::<u32>().expect("numeric oid");
            rows.insert(oid, values);
        }
    }
    rows
}

#[test]
fn every_type_agrees_with_postgresql_pg_type_rows() {
    let rows = static_pg_types();
    let mut fields: Vec<Field> = scalars().into_iter().map(field).collect();
    fields.extend(scalars().into_iter().map(|t| field(list(t))));
    fields.push(json_field());
    fields.push(Field::new_list("c", json_field(), true));
    let record = DataType::Struct(Fields::from(vec![Field::new("a", DataType::Int32, true)]));
    fields.push(field(record.clone()));
    fields.push(field(list(record)));
    for f in &fields {
        let ty = column_type(f).unwrap_or_else(|e| panic!("{}: {e}", f.data_type()));
        let row = rows
            .get(&ty.oid())
            .unwrap_or_else(|| panic!("{}: OID {} is not in pg_type", f.data_type(), ty.oid()));
        let storage = ty.storage();
        let expected = (
            row["typname"].as_str(),
            row["typlen"].as_str(),
            row["typbyval"].as_str(),
            row["typalign"].as_str(),
            row["typstorage"].as_str(),
            row["typcollation"].as_str(),
        );
        let actual = (
            ty.name(),
            storage.len.to_string(),
            storage.by_value.to_string(),
            storage.align,
            storage.storage,
            storage.collation.to_string(),
        );
        assert_eq!(
            (
                actual.0,
                actual.1.as_str(),
                actual.2.as_str(),
                actual.3,
                actual.4,
                actual.5.as_str()
            ),
            expected,
            "{}",
            f.data_type()
        );
        match ty.element() {
            Some(element) => assert_eq!(row["typelem"], element.oid().to_string()),
            None => assert_eq!(row["typelem"], "0", "{}", f.data_type()),
        }
        // `to_regtype(format_type(t, -1))` finds the type again.
        assert_eq!(
            internal_name(&format_type(ty.oid(), -1).expect("known type")),
            ty.name(),
            "{}",
            f.data_type()
        );
    }
}

#[test]
fn null_columns_are_text_as_postgresql_sends_them() {
    assert_eq!(of(DataType::Null).oid(), Type::TEXT.oid());
    assert_eq!(of(list(DataType::Null)).oid(), Type::TEXT_ARRAY.oid());
}

#[test]
fn numeric_of_every_decimal_width_carries_precision_and_scale() {
    for data_type in [
        DataType::Decimal32(5, 2),
        DataType::Decimal64(5, 2),
        DataType::Decimal128(5, 2),
        DataType::Decimal256(5, 2),
    ] {
        let ty = of(data_type);
        assert_eq!((ty.oid(), ty.typmod()), (1700, (5 << 16 | 2) + 4));
        assert_eq!(ty.sql_name(), "numeric(5,2)");
        assert_eq!(ty.data_type_name(), "numeric");
    }
    let array = of(list(DataType::Decimal128(10, 0)));
    assert_eq!((array.oid(), array.dimensions()), (1231, 1));
    assert_eq!(array.sql_name(), "numeric(10,0)[]");
    assert_eq!(array.data_type_name(), "ARRAY");
    assert_eq!(of(DataType::Decimal128(5, -2)).typmod(), -1);
    assert_eq!(of(DataType::UInt64).sql_name(), "numeric");
}

#[test]
fn tagged_columns_take_their_tag() {
    assert_eq!(column_type(&json_field()).map(|t| t.oid()), Ok(114));
    let dictionary = field(DataType::Dictionary(
        Box::new(DataType::Int32),
        Box::new(DataType::Utf8),
    ));
    assert_eq!(column_type(&dictionary).map(|t| t.oid()), Ok(25));
    let oid = field(DataType::Int32).with_metadata(HashMap::from([(
        PG_OID_ALIAS_KEY.to_string(),
        "regclass".to_string(),
    )]));
    assert_eq!(column_type(&oid).map(|t| t.oid()), Ok(2205));
}

#[test]
fn types_no_client_can_receive_are_refused_and_listed_as_text() {
    let map = DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Int32, true),
            ])),
            false,
        )),
        false,
    );
    let union = DataType::Union(UnionFields::empty(), UnionMode::Sparse);
    let list_view = DataType::ListView(Arc::new(Field::new_list_field(DataType::Int32, true)));
    for data_type in [map, union, list(list(DataType::Int32)), list_view] {
        let refused = column_type(&field(data_type.clone()));
        assert_eq!(
            refused,
            Err(UnsupportedType {
                data_type: data_type.clone()
            })
        );
        assert_eq!(catalog_column_type(&field(data_type)).oid(), 25);
    }
}

#[test]
fn format_type_shows_postgresql_sql_names() {
    let cases = [
        (DataType::Int16, "smallint"),
        (DataType::Int64, "bigint"),
        (DataType::Float64, "double precision"),
        (DataType::Utf8View, "text"),
        (DataType::Boolean, "boolean"),
        (DataType::Binary, "bytea"),
        (
            DataType::Timestamp(TimeUnit::Microsecond, None),
            "timestamp without time zone",
        ),
        (
            DataType::Timestamp(TimeUnit::Nanosecond, Some("+05:30".into())),
            "timestamp with time zone",
        ),
        (
            DataType::Time64(TimeUnit::Microsecond),
            "time without time zone",
        ),
        (DataType::Duration(TimeUnit::Second), "interval"),
        (list(DataType::Int32), "integer[]"),
    ];
    for (data_type, name) in cases {
        assert_eq!(of(data_type.clone()).sql_name(), name, "{data_type}");
    }
    assert_eq!(
        format_type(1043, 24).as_deref(),
        Some("character varying(20)")
    );
    assert_eq!(
        format_type(1114, 3).as_deref(),
        Some("timestamp(3) without time zone")
    );
    assert_eq!(format_type(2249, -1).as_deref(), Some("record"));
    assert_eq!(format_type(2287, -1).as_deref(), Some("record[]"));
    assert_eq!(format_type(4_000_000, -1), None);
}

#[test]
fn declared_parameter_types_map_back_to_themselves() {
    let same = [
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::TEXT,
        Type::BYTEA,
        Type::DATE,
        Type::TIME,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::INT4_ARRAY,
        Type::TEXT_ARRAY,
    ];
    for declared in same {
        let arrow = arrow_type(&declared).unwrap_or_else(|| panic!("{declared}"));
        assert_eq!(
            of(arrow.clone()).oid(),
            declared.oid(),
            "{declared} as {arrow}"
        );
        assert!(sql_type(&arrow).is_some(), "{arrow} has a SQL type");
    }
    // Text types PostgreSQL distinguishes and JSON are text to the engine.
    for declared in [
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::JSON,
        Type::JSONB,
    ] {
        assert_eq!(arrow_type(&declared), Some(DataType::Utf8), "{declared}");
    }
    assert_eq!(arrow_type(&Type::UNKNOWN), None);
}

#[test]
fn internal_names_of_what_users_write() {
    assert_eq!(internal_name("INTEGER"), "int4");
    assert_eq!(internal_name("pg_catalog.\"char\""), "char");
    assert_eq!(internal_name("double precision[]"), "_float8");
    assert_eq!(internal_name("character varying"), "varchar");
    assert_eq!(internal_name("hstore"), "hstore");
}
