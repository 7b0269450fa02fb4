//! `information_schema` as PostgreSQL shapes it, built from the live catalog each time a table
//! is read: `schemata`, `tables`, `views`, `columns`, and the constraint views BI tools and
//! SQLAlchemy read (`table_constraints`, `key_column_usage`, `referential_constraints`,
//! `constraint_column_usage`), which are empty because Freshet has no constraints.
//!
//! Column types are named after the type the wire protocol sends each column as
//! ([`crate::pg_types`]), so `data_type`, `udt_name` and `pg_attribute` agree with what a client
//! receives. DataFusion's own `df_settings`, `routines` and `parameters` stay (DataFusion's
//! `SHOW` reads `df_settings`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::array::{ArrayRef, Int32Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;

use super::catalog::{
    batch, int32, live, null_text, text, BuildRows, CatalogSource, Relation, Snapshot, OWNER_ROLE,
};
use crate::pg_types::catalog_column_type;

/// The tables Freshet builds; the others come from DataFusion's provider.
const OWN_TABLES: &[&str] = &[
    "schemata",
    "tables",
    "views",
    "columns",
    "table_constraints",
    "key_column_usage",
    "referential_constraints",
    "constraint_column_usage",
];
/// DataFusion's tables that stay.
const DATAFUSION_TABLES: &[&str] = &["df_settings", "routines", "parameters"];

/// The `information_schema` schema.
#[derive(Debug)]
pub(crate) struct InformationSchema {
    source: Arc<CatalogSource>,
    datafusion: InformationSchemaProvider,
}

impl InformationSchema {
    pub(crate) fn new(source: Arc<CatalogSource>, catalogs: Arc<dyn CatalogProviderList>) -> Self {
        Self {
            source,
            datafusion: InformationSchemaProvider::new(catalogs),
        }
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        OWN_TABLES
            .iter()
            .chain(DATAFUSION_TABLES)
            .map(|name| name.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let name = name.to_ascii_lowercase();
        let (schema, build): (SchemaRef, BuildRows) = match name.as_str() {
            "schemata" => (schemata_schema(), schemata_rows),
            "tables" => (tables_schema(), tables_rows),
            "views" => (views_schema(), views_rows),
            "columns" => (columns_schema(), columns_rows),
            "table_constraints" => (table_constraints_schema(), no_rows),
            "key_column_usage" => (key_column_usage_schema(), no_rows),
            "referential_constraints" => (referential_constraints_schema(), no_rows),
            "constraint_column_usage" => (constraint_column_usage_schema(), no_rows),
            other if DATAFUSION_TABLES.contains(&other) => {
                return self.datafusion.table(other).await
            }
            _ => return Ok(None),
        };
        live(schema, &self.source, build).map(Some)
    }

    fn table_exist(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        OWN_TABLES.contains(&name.as_str()) || DATAFUSION_TABLES.contains(&name.as_str())
    }
}

/// A schema of nullable columns, text unless named in `integers`.
fn schema_of(columns: &[&str], integers: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|name| {
                let data_type = if integers.contains(name) {
                    DataType::Int32
                } else {
                    DataType::Utf8
                };
                Field::new(*name, data_type, true)
            })
            .collect::<Vec<_>>(),
    ))
}

fn no_rows(_snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    Ok(RecordBatch::new_empty(schema.clone()))
}

fn repeat(value: &str, rows: usize) -> ArrayRef {
    text(std::iter::repeat_n(value, rows))
}

fn optional_text<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn optional_int32(values: impl IntoIterator<Item = Option<i32>>) -> ArrayRef {
    Arc::new(Int32Array::from_iter(values))
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "YES"
    } else {
        "NO"
    }
}

fn schemata_schema() -> SchemaRef {
    schema_of(
        &[
            "catalog_name",
            "schema_name",
            "schema_owner",
            "default_character_set_catalog",
            "default_character_set_schema",
            "default_character_set_name",
            "sql_path",
        ],
        &[],
    )
}

fn schemata_rows(snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let rows = snapshot.namespaces.len();
    batch(
        schema,
        vec![
            repeat(&snapshot.database, rows),
            text(snapshot.namespaces.iter().map(|(_, name)| name.as_str())),
            repeat(OWNER_ROLE, rows),
            null_text(rows),
            null_text(rows),
            null_text(rows),
            null_text(rows),
        ],
    )
}

fn tables_schema() -> SchemaRef {
    schema_of(
        &[
            "table_catalog",
            "table_schema",
            "table_name",
            "table_type",
            "self_referencing_column_name",
            "reference_generation",
            "user_defined_type_catalog",
            "user_defined_type_schema",
            "user_defined_type_name",
            "is_insertable_into",
            "is_typed",
            "commit_action",
        ],
        &[],
    )
}

fn table_type(relation: &Relation) -> &'static str {
    match relation.table_type {
        TableType::Base => "BASE TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

fn tables_rows(snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let relations = &snapshot.relations;
    let rows = relations.len();
    batch(
        schema,
        vec![
            repeat(&snapshot.database, rows),
            text(relations.iter().map(|r| r.schema.as_str())),
            text(relations.iter().map(|r| r.name.as_str())),
            text(relations.iter().map(table_type)),
            null_text(rows),
            null_text(rows),
            null_text(rows),
            null_text(rows),
            null_text(rows),
            text(
                relations
                    .iter()
                    .map(|r| yes_no(r.table_type != TableType::View)),
            ),
            repeat("NO", rows),
            null_text(rows),
        ],
    )
}

fn views_schema() -> SchemaRef {
    schema_of(
        &[
            "table_catalog",
            "table_schema",
            "table_name",
            "view_definition",
            "check_option",
            "is_updatable",
            "is_insertable_into",
            "is_trigger_updatable",
            "is_trigger_deletable",
            "is_trigger_insertable_into",
        ],
        &[],
    )
}

fn views_rows(snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let views: Vec<&Relation> = snapshot
        .relations
        .iter()
        .filter(|r| r.table_type == TableType::View)
        .collect();
    let rows = views.len();
    batch(
        schema,
        vec![
            repeat(&snapshot.database, rows),
            text(views.iter().map(|r| r.schema.as_str())),
            text(views.iter().map(|r| r.name.as_str())),
            optional_text(views.iter().map(|r| r.definition.as_deref())),
            repeat("NONE", rows),
            repeat("NO", rows),
            repeat("NO", rows),
            repeat("NO", rows),
            repeat("NO", rows),
            repeat("NO", rows),
        ],
    )
}

const COLUMNS: &[&str] = &[
    "table_catalog",
    "table_schema",
    "table_name",
    "column_name",
    "ordinal_position",
    "column_default",
    "is_nullable",
    "data_type",
    "character_maximum_length",
    "character_octet_length",
    "numeric_precision",
    "numeric_precision_radix",
    "numeric_scale",
    "datetime_precision",
    "interval_type",
    "interval_precision",
    "character_set_catalog",
    "character_set_schema",
    "character_set_name",
    "collation_catalog",
    "collation_schema",
    "collation_name",
    "domain_catalog",
    "domain_schema",
    "domain_name",
    "udt_catalog",
    "udt_schema",
    "udt_name",
    "scope_catalog",
    "scope_schema",
    "scope_name",
    "maximum_cardinality",
    "dtd_identifier",
    "is_self_referencing",
    "is_identity",
    "identity_generation",
    "identity_start",
    "identity_increment",
    "identity_maximum",
    "identity_minimum",
    "identity_cycle",
    "is_generated",
    "generation_expression",
    "is_updatable",
];

fn columns_schema() -> SchemaRef {
    schema_of(
        COLUMNS,
        &[
            "ordinal_position",
            "character_maximum_length",
            "character_octet_length",
            "numeric_precision",
            "numeric_precision_radix",
            "numeric_scale",
            "datetime_precision",
            "interval_precision",
            "maximum_cardinality",
        ],
    )
}

/// What `information_schema.columns` says about one column's type.
#[derive(Debug, PartialEq, Eq)]
struct ColumnType {
    data_type: String,
    udt_name: String,
    octet_length: Option<i32>,
    precision: Option<i32>,
    radix: Option<i32>,
    scale: Option<i32>,
    datetime_precision: Option<i32>,
}

fn column_type(field: &Field) -> ColumnType {
    let pg = catalog_column_type(field);
    let udt_name = pg.name().to_string();
    let data_type = pg.data_type_name();
    let (precision, radix, scale) = match pg.numeric_precision() {
        Some((precision, radix, scale)) => (precision, Some(radix), scale),
        None => (None, None, None),
    };
    let datetime_precision = pg.datetime_precision();
    let octet_length = pg.octet_length();
    ColumnType {
        data_type,
        udt_name,
        octet_length,
        precision,
        radix,
        scale,
        datetime_precision,
    }
}

fn columns_rows(snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let columns: Vec<(&Relation, i32, &Field, ColumnType)> = snapshot
        .columns()
        .map(|(r, position, f)| (r, position as i32, f, column_type(f)))
        .collect();
    let rows = columns.len();
    let nulls = || null_text(rows);
    let null_ints = || optional_int32(std::iter::repeat_n(None, rows));
    let positions: Vec<String> = columns.iter().map(|c| c.1.to_string()).collect();
    batch(
        schema,
        vec![
            repeat(&snapshot.database, rows),
            text(columns.iter().map(|c| c.0.schema.as_str())),
            text(columns.iter().map(|c| c.0.name.as_str())),
            text(columns.iter().map(|c| c.2.name().as_str())),
            int32(columns.iter().map(|c| c.1)),
            nulls(),
            text(columns.iter().map(|c| yes_no(c.2.is_nullable()))),
            text(columns.iter().map(|c| c.3.data_type.as_str())),
            null_ints(),
            optional_int32(columns.iter().map(|c| c.3.octet_length)),
            optional_int32(columns.iter().map(|c| c.3.precision)),
            optional_int32(columns.iter().map(|c| c.3.radix)),
            optional_int32(columns.iter().map(|c| c.3.scale)),
            optional_int32(columns.iter().map(|c| c.3.datetime_precision)),
            nulls(),
            null_ints(),
            nulls(),
            nulls(),
            nulls(),
            nulls(),
            nulls(),
            nulls(),
            nulls(),
            nulls(),
            nulls(),
            repeat(&snapshot.database, rows),
            repeat("pg_catalog", rows),
            text(columns.iter().map(|c| c.3.udt_name.as_str())),
            nulls(),
            nulls(),
            nulls(),
            null_ints(),
            text(positions.iter().map(String::as_str)),
            repeat("NO", rows),
            repeat("NO", rows),
            nulls(),
            nulls(),
            nulls(),
            nulls(),
            nulls(),
            repeat("NO", rows),
            repeat("NEVER", rows),
            nulls(),
            text(
                columns
                    .iter()
                    .map(|c| yes_no(c.0.table_type != TableType::View)),
            ),
        ],
    )
}

fn table_constraints_schema() -> SchemaRef {
    schema_of(
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "constraint_type",
            "is_deferrable",
            "initially_deferred",
            "enforced",
            "nulls_distinct",
        ],
        &[],
    )
}

fn key_column_usage_schema() -> SchemaRef {
    schema_of(
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "column_name",
            "ordinal_position",
            "position_in_unique_constraint",
        ],
        &["ordinal_position", "position_in_unique_constraint"],
    )
}

fn referential_constraints_schema() -> SchemaRef {
    schema_of(
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "unique_constraint_catalog",
            "unique_constraint_schema",
            "unique_constraint_name",
            "match_option",
            "update_rule",
            "delete_rule",
        ],
        &[],
    )
}

fn constraint_column_usage_schema() -> SchemaRef {
    schema_of(
        &[
            "table_catalog",
            "table_schema",
            "table_name",
            "column_name",
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
        ],
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(data_type: DataType) -> ColumnType {
        column_type(&Field::new("c", data_type, true))
    }

    #[test]
    fn column_types_have_postgresql_names() {
        let bigint = of(DataType::Int64);
        assert_eq!(
            (bigint.data_type.as_str(), bigint.udt_name.as_str()),
            ("bigint", "int8")
        );
        assert_eq!(
            (bigint.precision, bigint.radix, bigint.scale),
            (Some(64), Some(2), Some(0))
        );
        let double = of(DataType::Float64);
        assert_eq!(
            (double.data_type.as_str(), double.udt_name.as_str()),
            ("double precision", "float8")
        );
        let numeric = of(DataType::Decimal128(10, 2));
        assert_eq!(numeric.data_type, "numeric");
        assert_eq!(
            (numeric.precision, numeric.radix, numeric.scale),
            (Some(10), Some(10), Some(2))
        );
        let list = of(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Int32,
            true,
        ))));
        assert_eq!(
            (list.data_type.as_str(), list.udt_name.as_str()),
            ("ARRAY", "_int4")
        );
        use datafusion::arrow::datatypes::TimeUnit;
        assert_eq!(
            of(DataType::Timestamp(TimeUnit::Microsecond, None)).data_type,
            "timestamp without time zone"
        );
        let tz = of(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        ));
        assert_eq!(
            (tz.data_type.as_str(), tz.udt_name.as_str()),
            ("timestamp with time zone", "timestamptz")
        );
        assert_eq!(of(DataType::Utf8View).octet_length, Some(1_073_741_824));
        assert_eq!(of(DataType::Boolean).data_type, "boolean");
        assert_eq!(of(DataType::Binary).data_type, "bytea");
    }
}
