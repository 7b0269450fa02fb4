//! The `pg_catalog` tables that describe Freshet's own objects, built from the live DataFusion
//! catalog each time they are read.
//!
//! `datafusion-pg-catalog` provides the static tables (types, operators, procedures …) and a
//! default version of the dynamic ones. Freshet replaces the dynamic ones so that:
//!
//! - materialized views and models (table type `View`) are views: relkind `'v'`, listed in
//!   `pg_views` with their query as the definition;
//! - column types are the PostgreSQL types the wire protocol sends for the Arrow type, from
//!   the one mapping in [`crate::pg_types`] (type modifiers, array dimensions, storage);
//! - every object is owned by one role, [`OWNER_ROLE`] (OID [`OWNER_OID`]), which `pg_roles`,
//!   `pg_authid` and `pg_get_userbyid` agree on;
//! - OIDs are stable while an object exists (a dropped and re-created table gets a new OID, as
//!   in PostgreSQL), and `pg_class`, `pg_attribute` and `pg_namespace` agree on them.
//!
//! This module only reads the catalog; it never registers or drops anything.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Int16Array, Int16Builder, Int32Array,
    Int32Builder, ListBuilder, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::information_schema::INFORMATION_SCHEMA;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion_pg_catalog::pg_catalog::oid_field::{kind, oid_field};
use datafusion_pg_catalog::pg_catalog::{ArrowTable, PgCatalogStaticTables};

use crate::pg_types::{catalog_column_type, ColumnType, TypeStorage};

/// The role that owns every object.
pub(crate) const OWNER_ROLE: &str = "freshet";
/// Its OID: PostgreSQL's bootstrap superuser OID, which the static catalog rows refer to.
pub(crate) const OWNER_OID: i32 = 10;

/// PostgreSQL's fixed namespace OIDs; other schemas get OIDs from the user range.
const PG_CATALOG_OID: u32 = 11;
const PUBLIC_OID: u32 = 2200;
const INFORMATION_SCHEMA_OID: u32 = 13_000;
/// Where PostgreSQL starts handing out OIDs to user objects.
const FIRST_USER_OID: u32 = 16_384;

/// One schema, table or view as the catalog tables show it.
#[derive(Debug, Clone)]
pub(crate) struct Relation {
    pub oid: u32,
    pub namespace_oid: u32,
    pub schema: String,
    pub name: String,
    pub table_type: TableType,
    pub columns: SchemaRef,
    pub definition: Option<String>,
}

/// What the catalog holds at one moment.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The database's name.
    pub database: String,
    /// (OID, name), sorted by name.
    pub namespaces: Vec<(u32, String)>,
    pub relations: Vec<Relation>,
}

impl Snapshot {
    /// Every column of every relation: (relation, 1-based position, field).
    pub(crate) fn columns(&self) -> impl Iterator<Item = (&Relation, usize, &Field)> {
        self.relations.iter().flat_map(|r| {
            r.columns
                .fields()
                .iter()
                .enumerate()
                .map(move |(i, f)| (r, i + 1, f.as_ref()))
        })
    }
}

#[derive(Debug, Default)]
struct OidState {
    next: u32,
    namespaces: HashMap<String, u32>,
    relations: HashMap<(String, String), u32>,
    /// Per relation OID of the last snapshot: its schema and view definition.
    by_oid: HashMap<u32, (String, Option<String>)>,
}

/// Reads the live catalog and keeps the OIDs it handed out.
#[derive(Debug)]
pub(crate) struct CatalogSource {
    catalogs: Arc<dyn CatalogProviderList>,
    database: String,
    oids: Mutex<OidState>,
}

impl CatalogSource {
    pub(crate) fn new(catalogs: Arc<dyn CatalogProviderList>, database: &str) -> Self {
        Self {
            catalogs,
            database: database.to_string(),
            oids: Mutex::new(OidState {
                next: FIRST_USER_OID,
                ..Default::default()
            }),
        }
    }

    /// Every schema and relation of the database now, with their OIDs.
    pub(crate) async fn snapshot(&self) -> DfResult<Snapshot> {
        let mut schemas: Vec<(String, Arc<dyn SchemaProvider>)> = Vec::new();
        if let Some(catalog) = self.catalogs.catalog(&self.database) {
            for name in catalog.schema_names() {
                if let Some(schema) = catalog.schema(&name) {
                    schemas.push((name, schema));
                }
            }
        }
        schemas.sort_by(|a, b| a.0.cmp(&b.0));
        let mut found = Vec::new();
        for (schema_name, schema) in &schemas {
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                // A table that cannot be looked up is left out rather than failing every
                // catalog query: clients list tables before they can query any.
                match schema.table(&name).await {
                    Ok(Some(table)) => found.push((schema_name.clone(), name, table)),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%schema_name, %name, "left out of pg_catalog: {e}"),
                }
            }
        }
        Ok(self.assign_oids(schemas.into_iter().map(|(n, _)| n).collect(), found))
    }

    fn assign_oids(
        &self,
        schema_names: Vec<String>,
        found: Vec<(String, String, Arc<dyn TableProvider>)>,
    ) -> Snapshot {
        let mut state = self.oids.lock().unwrap_or_else(|p| p.into_inner());
        // Forget objects that are gone, so a re-created one gets a new OID and the maps stay
        // as small as the catalog.
        let live_schemas: BTreeSet<&String> = schema_names.iter().collect();
        state
            .namespaces
            .retain(|name, _| live_schemas.contains(name));
        let live: BTreeSet<(&String, &String)> = found.iter().map(|(s, n, _)| (s, n)).collect();
        state
            .relations
            .retain(|(schema, name), _| live.contains(&(schema, name)));

        let mut namespaces = Vec::new();
        for name in schema_names {
            let oid = match name.as_str() {
                "pg_catalog" => PG_CATALOG_OID,
                "public" => PUBLIC_OID,
                INFORMATION_SCHEMA => INFORMATION_SCHEMA_OID,
                _ => next_oid(
                    &mut state,
                    |s| s.namespaces.get(&name).copied(),
                    |s, oid| {
                        s.namespaces.insert(name.clone(), oid);
                    },
                ),
            };
            namespaces.push((oid, name));
        }
        let namespace_oid: HashMap<&str, u32> =
            namespaces.iter().map(|(o, n)| (n.as_str(), *o)).collect();
        let mut relations = Vec::new();
        for (schema, name, table) in &found {
            let key = (schema.clone(), name.clone());
            let oid = next_oid(
                &mut state,
                |s| s.relations.get(&key).copied(),
                |s, oid| {
                    s.relations.insert(key.clone(), oid);
                },
            );
            relations.push(Relation {
                oid,
                namespace_oid: namespace_oid.get(schema.as_str()).copied().unwrap_or(0),
                schema: schema.clone(),
                name: name.clone(),
                table_type: table.table_type(),
                columns: table.schema(),
                definition: table.get_table_definition().map(view_query),
            });
        }
        state.by_oid = relations
            .iter()
            .map(|r| (r.oid, (r.schema.clone(), r.definition.clone())))
            .collect();
        Snapshot {
            database: self.database.clone(),
            namespaces,
            relations,
        }
    }

    /// Whether the relation `oid` is found by its bare name: it is in a schema on the search
    /// path (`public`, then `pg_catalog`). OIDs come from the `pg_class` the same query read.
    pub(crate) fn is_visible(&self, oid: i64) -> bool {
        let state = self.oids.lock().unwrap_or_else(|p| p.into_inner());
        u32::try_from(oid)
            .ok()
            .and_then(|oid| state.by_oid.get(&oid))
            .is_some_and(|(schema, _)| SEARCH_PATH.contains(&schema.as_str()))
    }

    /// The OID of the relation `name` (`schema.table` or a bare name looked up on the search
    /// path, quoted parts as written, unquoted ones lower-cased), as `'name'::regclass` finds
    /// it. Only relations some catalog query has listed have OIDs.
    pub(crate) fn relation_oid(&self, name: &str) -> Option<u32> {
        let parts = identifier_parts(name)?;
        let state = self.oids.lock().unwrap_or_else(|p| p.into_inner());
        let find = |schema: &str, table: &str| {
            state
                .relations
                .get(&(schema.to_string(), table.to_string()))
                .copied()
        };
        match parts.as_slice() {
            [table] => SEARCH_PATH.iter().find_map(|schema| find(schema, table)),
            [schema, table] => find(schema, table),
            [database, schema, table] if *database == self.database => find(schema, table),
            _ => None,
        }
    }

    /// The definition of view `oid`, if it is a view.
    pub(crate) fn definition(&self, oid: i64) -> Option<String> {
        let state = self.oids.lock().unwrap_or_else(|p| p.into_inner());
        u32::try_from(oid)
            .ok()
            .and_then(|oid| state.by_oid.get(&oid))
            .and_then(|(_, definition)| definition.clone())
    }
}

/// The query of a view definition: PostgreSQL's `pg_get_viewdef` and `pg_views.definition` hold
/// only the `SELECT`, while a plain view keeps the whole `CREATE VIEW` statement it was made
/// with. Other definitions (a materialized view's query) are already queries.
fn view_query(definition: &str) -> String {
    use datafusion::sql::sqlparser::{ast::Statement, dialect::PostgreSqlDialect, parser::Parser};
    match Parser::parse_sql(&PostgreSqlDialect {}, definition).as_deref() {
        Ok([Statement::CreateView(view)]) => view.query.to_string(),
        _ => definition.to_string(),
    }
}

/// The parts of a dotted SQL name: `"A b".c` is `["A b", "c"]`. `None` if it is malformed.
fn identifier_parts(name: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = name.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != '.') {
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => {}
            Some(_) => return None,
        }
    }
}

/// The schemas a bare name is looked up in, as PostgreSQL's default search path.
const SEARCH_PATH: &[&str] = &["public", "pg_catalog"];

fn next_oid(
    state: &mut OidState,
    existing: impl Fn(&OidState) -> Option<u32>,
    remember: impl Fn(&mut OidState, u32),
) -> u32 {
    if let Some(oid) = existing(state) {
        return oid;
    }
    let oid = state.next;
    state.next += 1;
    remember(state, oid);
    oid
}

/// `pg_class.relkind` of a relation.
pub(crate) fn relkind(table_type: TableType) -> &'static str {
    match table_type {
        TableType::View => "v",
        TableType::Base | TableType::Temporary => "r",
    }
}

/// Builds a live table's rows from a snapshot.
pub(super) type BuildRows = fn(&Snapshot, &SchemaRef) -> DfResult<RecordBatch>;

/// A catalog table whose rows are built from a fresh [`Snapshot`] each time it is scanned.
#[derive(Debug, Clone)]
struct LiveTable {
    schema: SchemaRef,
    source: Arc<CatalogSource>,
    build: BuildRows,
}

impl PartitionStream for LiveTable {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let this = self.clone();
        Box::pin(RecordBatchStreamAdapter::new(
            this.schema.clone(),
            futures::stream::once(async move {
                let snapshot = this.source.snapshot().await?;
                (this.build)(&snapshot, &this.schema)
            }),
        ))
    }
}

/// A table whose rows `build` makes from a fresh snapshot of `source` each time it is read.
pub(super) fn live(
    schema: SchemaRef,
    source: &Arc<CatalogSource>,
    build: BuildRows,
) -> DfResult<Arc<dyn TableProvider>> {
    streaming(Arc::new(LiveTable {
        schema,
        source: source.clone(),
        build,
    }))
}

fn streaming(partition: Arc<dyn PartitionStream>) -> DfResult<Arc<dyn TableProvider>> {
    Ok(Arc::new(StreamingTable::try_new(
        partition.schema().clone(),
        vec![partition],
    )?))
}

/// The table `name` of [`LIVE_TABLES`], or `None` for a table this module does not build.
pub(crate) fn live_table(
    name: &str,
    source: &Arc<CatalogSource>,
    static_tables: &PgCatalogStaticTables,
) -> DfResult<Option<Arc<dyn TableProvider>>> {
    let (schema, build): (SchemaRef, BuildRows) = match name {
        "pg_namespace" => (pg_namespace_schema(), pg_namespace_rows),
        "pg_class" => (pg_class_schema(), pg_class_rows),
        "pg_attribute" => (pg_attribute_schema(), pg_attribute_rows),
        "pg_tables" => (pg_tables_schema(), pg_tables_rows),
        "pg_views" => (pg_views_schema(), pg_views_rows),
        "pg_roles" => (pg_roles_schema(), pg_roles_rows),
        "pg_authid" => return pg_authid(static_tables).map(Some),
        "pg_index" => return pg_index(static_tables).map(Some),
        "pg_constraint" => return pg_constraint(static_tables).map(Some),
        _ => return Ok(None),
    };
    streaming(Arc::new(LiveTable {
        schema,
        source: source.clone(),
        build,
    }))
    .map(Some)
}

pub(super) fn text(values: impl IntoIterator<Item = impl Into<String>>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        values.into_iter().map(Into::into),
    ))
}

pub(super) fn null_text(rows: usize) -> ArrayRef {
    Arc::new(StringArray::from(vec![None::<&str>; rows]))
}

pub(super) fn int32(values: impl IntoIterator<Item = i32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(values))
}

fn int16(values: impl IntoIterator<Item = i16>) -> ArrayRef {
    Arc::new(Int16Array::from_iter_values(values))
}

fn booleans(rows: usize, value: bool) -> ArrayRef {
    Arc::new(BooleanArray::from(vec![value; rows]))
}

fn null_text_list(rows: usize) -> ArrayRef {
    let mut builder = ListBuilder::new(datafusion::arrow::array::StringBuilder::new());
    for _ in 0..rows {
        builder.append(false);
    }
    Arc::new(builder.finish())
}

fn text_list_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    )
}

pub(super) fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn pg_namespace_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        oid_field("oid", kind::OID, false),
        Field::new("nspname", DataType::Utf8, false),
        Field::new("nspowner", DataType::Int32, false),
        Field::new("nspacl", DataType::Utf8, true),
        Field::new("options", DataType::Utf8, true),
    ]))
}

fn pg_namespace_rows(snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let rows = snapshot.namespaces.len();
    batch(
        schema,
        vec![
            int32(snapshot.namespaces.iter().map(|(oid, _)| *oid as i32)),
            text(snapshot.namespaces.iter().map(|(_, name)| name.as_str())),
            int32(std::iter::repeat_n(OWNER_OID, rows)),
            null_text(rows),
            null_text(rows),
        ],
    )
}

fn pg_class_schema() -> SchemaRef {
    let int = |name: &str| Field::new(name, DataType::Int32, false);
    let flag = |name: &str| Field::new(name, DataType::Boolean, false);
    Arc::new(Schema::new(vec![
        oid_field("oid", kind::OID, false),
        Field::new("relname", DataType::Utf8, false),
        oid_field("relnamespace", kind::OID, false),
        oid_field("reltype", kind::OID, false),
        oid_field("reloftype", kind::OID, true),
        int("relowner"),
        int("relam"),
        int("relfilenode"),
        int("reltablespace"),
        int("relpages"),
        Field::new("reltuples", DataType::Float32, false),
        int("relallvisible"),
        oid_field("reltoastrelid", kind::OID, false),
        flag("relhasindex"),
        flag("relisshared"),
        Field::new("relpersistence", DataType::Utf8, false),
        Field::new("relkind", DataType::Utf8, false),
        Field::new("relnatts", DataType::Int16, false),
        Field::new("relchecks", DataType::Int16, false),
        flag("relhasrules"),
        flag("relhastriggers"),
        flag("relhassubclass"),
        flag("relrowsecurity"),
        flag("relforcerowsecurity"),
        flag("relispopulated"),
        Field::new("relreplident", DataType::Utf8, false),
        flag("relispartition"),
        oid_field("relrewrite", kind::OID, true),
        int("relfrozenxid"),
        int("relminmxid"),
        text_list_field("relacl"),
        text_list_field("reloptions"),
        Field::new("relpartbound", DataType::Utf8, true),
    ]))
}

fn pg_class_rows(snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let relations = &snapshot.relations;
    let rows = relations.len();
    let zeros = || int32(std::iter::repeat_n(0, rows));
    let no = || booleans(rows, false);
    let single = |value: &str| text(std::iter::repeat_n(value, rows));
    batch(
        schema,
        vec![
            int32(relations.iter().map(|r| r.oid as i32)),
            text(relations.iter().map(|r| r.name.as_str())),
            int32(relations.iter().map(|r| r.namespace_oid as i32)),
            zeros(),
            Arc::new(Int32Array::from(vec![None::<i32>; rows])),
            int32(std::iter::repeat_n(OWNER_OID, rows)),
            zeros(),
            int32(relations.iter().map(|r| r.oid as i32)),
            zeros(),
            zeros(),
            // -1: "never analysed", as PostgreSQL reports a table without statistics.
            Arc::new(Float32Array::from(vec![-1.0f32; rows])),
            zeros(),
            zeros(),
            no(),
            no(),
            single("p"),
            text(relations.iter().map(|r| relkind(r.table_type))),
            int16(relations.iter().map(|r| r.columns.fields().len() as i16)),
            int16(std::iter::repeat_n(0, rows)),
            no(),
            no(),
            no(),
            no(),
            no(),
            booleans(rows, true),
            single("d"),
            no(),
            Arc::new(Int32Array::from(vec![None::<i32>; rows])),
            zeros(),
            zeros(),
            null_text_list(rows),
            null_text_list(rows),
            null_text(rows),
        ],
    )
}

fn pg_attribute_schema() -> SchemaRef {
    let int = |name: &str| Field::new(name, DataType::Int32, false);
    let small = |name: &str| Field::new(name, DataType::Int16, false);
    let flag = |name: &str| Field::new(name, DataType::Boolean, false);
    let txt = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        oid_field("attrelid", kind::OID, false),
        txt("attname", false),
        oid_field("atttypid", kind::OID, false),
        int("attstattarget"),
        small("attlen"),
        small("attnum"),
        int("attndims"),
        int("attcacheoff"),
        int("atttypmod"),
        flag("attbyval"),
        txt("attalign", false),
        txt("attstorage", false),
        txt("attcompression", true),
        flag("attnotnull"),
        flag("atthasdef"),
        flag("atthasmissing"),
        txt("attidentity", false),
        txt("attgenerated", false),
        flag("attisdropped"),
        flag("attislocal"),
        int("attinhcount"),
        int("attcollation"),
        txt("attacl", true),
        txt("attoptions", true),
        txt("attfdwoptions", true),
        txt("attmissingval", true),
    ]))
}

fn pg_attribute_rows(snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let columns: Vec<(u32, i16, &Field, ColumnType, TypeStorage)> = snapshot
        .columns()
        .map(|(r, position, f)| {
            let column_type = catalog_column_type(f);
            let storage = column_type.storage();
            (r.oid, position as i16, f, column_type, storage)
        })
        .collect();
    let rows = columns.len();
    let repeat_i32 = |v: i32| int32(std::iter::repeat_n(v, rows));
    let repeat_text = |v: &str| text(std::iter::repeat_n(v, rows));
    let no = || booleans(rows, false);
    batch(
        schema,
        vec![
            int32(columns.iter().map(|c| c.0 as i32)),
            text(columns.iter().map(|c| c.2.name().as_str())),
            int32(columns.iter().map(|c| c.3.oid() as i32)),
            repeat_i32(-1),
            int16(columns.iter().map(|c| c.4.len)),
            int16(columns.iter().map(|c| c.1)),
            int32(columns.iter().map(|c| c.3.dimensions())),
            repeat_i32(-1),
            int32(columns.iter().map(|c| c.3.typmod())),
            Arc::new(BooleanArray::from_iter(
                columns.iter().map(|c| Some(c.4.by_value)),
            )),
            text(columns.iter().map(|c| c.4.align)),
            text(columns.iter().map(|c| c.4.storage)),
            null_text(rows),
            Arc::new(BooleanArray::from_iter(
                columns.iter().map(|c| Some(!c.2.is_nullable())),
            )),
            no(),
            no(),
            repeat_text(""),
            repeat_text(""),
            no(),
            booleans(rows, true),
            repeat_i32(0),
            // Text columns use the default collation (100), as in PostgreSQL.
            int32(columns.iter().map(|c| c.4.collation as i32)),
            null_text(rows),
            null_text(rows),
            null_text(rows),
            null_text(rows),
        ],
    )
}

fn pg_tables_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("schemaname", DataType::Utf8, false),
        Field::new("tablename", DataType::Utf8, false),
        Field::new("tableowner", DataType::Utf8, false),
        Field::new("tablespace", DataType::Utf8, true),
        Field::new("hasindexes", DataType::Boolean, false),
        Field::new("hasrules", DataType::Boolean, false),
        Field::new("hastriggers", DataType::Boolean, false),
        Field::new("rowsecurity", DataType::Boolean, false),
    ]))
}

fn pg_tables_rows(snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let tables: Vec<&Relation> = snapshot
        .relations
        .iter()
        .filter(|r| r.table_type != TableType::View)
        .collect();
    let rows = tables.len();
    batch(
        schema,
        vec![
            text(tables.iter().map(|r| r.schema.as_str())),
            text(tables.iter().map(|r| r.name.as_str())),
            text(std::iter::repeat_n(OWNER_ROLE, rows)),
            null_text(rows),
            booleans(rows, false),
            booleans(rows, false),
            booleans(rows, false),
            booleans(rows, false),
        ],
    )
}

fn pg_views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("schemaname", DataType::Utf8, false),
        Field::new("viewname", DataType::Utf8, false),
        Field::new("viewowner", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, true),
    ]))
}

fn pg_views_rows(snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let views: Vec<&Relation> = snapshot
        .relations
        .iter()
        .filter(|r| r.table_type == TableType::View)
        .collect();
    batch(
        schema,
        vec![
            text(views.iter().map(|r| r.schema.as_str())),
            text(views.iter().map(|r| r.name.as_str())),
            text(std::iter::repeat_n(OWNER_ROLE, views.len())),
            Arc::new(StringArray::from_iter(
                views.iter().map(|r| r.definition.as_deref()),
            )),
        ],
    )
}

fn pg_roles_schema() -> SchemaRef {
    let flag = |name: &str| Field::new(name, DataType::Boolean, true);
    Arc::new(Schema::new(vec![
        Field::new("rolname", DataType::Utf8, true),
        flag("rolsuper"),
        flag("rolinherit"),
        flag("rolcreaterole"),
        flag("rolcreatedb"),
        flag("rolcanlogin"),
        flag("rolreplication"),
        Field::new("rolconnlimit", DataType::Int32, true),
        Field::new("rolpassword", DataType::Utf8, true),
        Field::new(
            "rolvaliduntil",
            DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
            true,
        ),
        flag("rolbypassrls"),
        text_list_field("rolconfig"),
        oid_field("oid", kind::OID, true),
    ]))
}

fn pg_roles_rows(_snapshot: &Snapshot, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let yes = || booleans(1, true);
    batch(
        schema,
        vec![
            text([OWNER_ROLE]),
            yes(),
            yes(),
            yes(),
            yes(),
            yes(),
            yes(),
            int32([-1]),
            // PostgreSQL shows the password of pg_roles as asterisks.
            text(["********"]),
            Arc::new(
                datafusion::arrow::array::TimestampMicrosecondArray::from(vec![None])
                    .with_timezone("UTC"),
            ),
            yes(),
            null_text_list(1),
            int32([OWNER_OID]),
        ],
    )
}

/// `pg_authid`: the static row of the bootstrap superuser, renamed to [`OWNER_ROLE`]; the
/// predefined `pg_*` roles stay.
fn pg_authid(static_tables: &PgCatalogStaticTables) -> DfResult<Arc<dyn TableProvider>> {
    let table = &static_tables.pg_authid;
    let schema = table.schema();
    let mut batches = Vec::new();
    for batch in table.data() {
        let names = column::<StringArray>(batch, "rolname")?;
        let oids = column::<Int32Array>(batch, "oid")?;
        let renamed: StringArray = (0..batch.num_rows())
            .map(|i| {
                if oids.is_valid(i) && oids.value(i) == OWNER_OID {
                    Some(OWNER_ROLE)
                } else {
                    names.is_valid(i).then(|| names.value(i))
                }
            })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[schema.index_of("rolname")?] = Arc::new(renamed);
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(Arc::new(datafusion::catalog::MemTable::try_new(
        schema,
        vec![batches],
    )?))
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> DfResult<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            DataFusionError::Internal(format!("static catalog column {name} has another type"))
        })
}

/// PostgreSQL's built-in types, from the static `pg_type` rows: what `to_regtype` and
/// `format_type` look up for types [`crate::pg_types`] does not describe itself.
#[derive(Debug, Default)]
pub(crate) struct StaticTypes {
    /// `typname` → OID.
    pub by_name: HashMap<String, i32>,
    /// OID → (`typname`, `typelem`).
    pub by_oid: HashMap<i32, (String, i32)>,
}

pub(crate) fn static_types(static_tables: &PgCatalogStaticTables) -> DfResult<StaticTypes> {
    let mut found = StaticTypes::default();
    for batch in static_tables.pg_type.data() {
        let names = column::<StringArray>(batch, "typname")?;
        let oids = column::<Int32Array>(batch, "oid")?;
        let elements = column::<Int32Array>(batch, "typelem")?;
        for i in 0..batch.num_rows() {
            if names.is_valid(i) && oids.is_valid(i) {
                let name = names.value(i).to_string();
                let element = if elements.is_valid(i) {
                    elements.value(i)
                } else {
                    0
                };
                found.by_name.insert(name.clone(), oids.value(i));
                found.by_oid.insert(oids.value(i), (name, element));
            }
        }
    }
    Ok(found)
}

/// `pg_index` with its vector columns as arrays (`int2vector` / `oidvector` in PostgreSQL),
/// so `unnest(indkey)` works. Freshet has no indexes: only the static system rows are there.
fn pg_index(static_tables: &PgCatalogStaticTables) -> DfResult<Arc<dyn TableProvider>> {
    with_arrays(
        &static_tables.pg_index,
        &["indkey", "indoption"],
        &["indcollation", "indclass"],
    )
}

/// `pg_constraint` with its key columns as arrays (`int2[]` / `oid[]` in PostgreSQL), so
/// `attnum = ANY(conkey)` plans. Freshet has no constraints: only the static system rows are
/// there.
fn pg_constraint(static_tables: &PgCatalogStaticTables) -> DfResult<Arc<dyn TableProvider>> {
    with_arrays(
        &static_tables.pg_constraint,
        &["conkey", "confkey", "confdelsetcols"],
        &["conpfeqop", "conppeqop", "conffeqop", "conexclop"],
    )
}

/// A static table whose text columns `int16_arrays` and `oid_arrays` become `int2[]` and
/// `oid[]` arrays.
fn with_arrays(
    table: &ArrowTable,
    int16_arrays: &[&str],
    oid_arrays: &[&str],
) -> DfResult<Arc<dyn TableProvider>> {
    let old = table.schema();
    let fields: Vec<Field> = old
        .fields()
        .iter()
        .map(|f| {
            let element = if int16_arrays.contains(&f.name().as_str()) {
                DataType::Int16
            } else if oid_arrays.contains(&f.name().as_str()) {
                DataType::Int32
            } else {
                return f.as_ref().clone();
            };
            Field::new(
                f.name(),
                DataType::List(Arc::new(Field::new("item", element, true))),
                true,
            )
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for batch in table.data() {
        let mut columns = Vec::new();
        for (field, array) in old.fields().iter().zip(batch.columns()) {
            let name = field.name().as_str();
            if int16_arrays.contains(&name) {
                columns.push(int16_vectors(array)?);
            } else if oid_arrays.contains(&name) {
                columns.push(oid_vectors(array)?);
            } else {
                columns.push(array.clone());
            }
        }
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    // Without rows, the static batches are empty and the schema still has the array types.
    let batches = if batches.is_empty() {
        vec![RecordBatch::new_empty(schema.clone())]
    } else {
        batches
    };
    let table = datafusion::catalog::MemTable::try_new(schema, vec![batches])?;
    Ok(Arc::new(table))
}

/// Parses the static catalog's vector text (`"1 2"` for a vector, `"[1, 2]"` for an array)
/// into its numbers.
fn vector_numbers(text: &str) -> DfResult<Vec<i64>> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '{' | '}'))
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse::<i64>().map_err(|e| {
                DataFusionError::Internal(format!("static catalog vector {text:?}: {e}"))
            })
        })
        .collect()
}

fn vector_texts(array: &ArrayRef) -> DfResult<&StringArray> {
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("static catalog vector is not text".into()))
}

fn int16_vectors(array: &ArrayRef) -> DfResult<ArrayRef> {
    let texts = vector_texts(array)?;
    let mut builder = ListBuilder::new(Int16Builder::new());
    for value in texts.iter() {
        match value {
            Some(text) => {
                for n in vector_numbers(text)? {
                    builder.values().append_value(n as i16);
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Ok(Arc::new(builder.finish()))
}

fn oid_vectors(array: &ArrayRef) -> DfResult<ArrayRef> {
    let texts = vector_texts(array)?;
    let mut builder = ListBuilder::new(Int32Builder::new());
    for value in texts.iter() {
        match value {
            Some(text) => {
                for n in vector_numbers(text)? {
                    builder.values().append_value(n as i32);
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Ok(Arc::new(builder.finish()))
}

/// `pg_catalog`: Freshet's live tables in front of `datafusion-pg-catalog`'s provider.
#[derive(Debug)]
pub(crate) struct PgCatalogSchema {
    inner: Arc<dyn SchemaProvider>,
    source: Arc<CatalogSource>,
    static_tables: Arc<PgCatalogStaticTables>,
}

impl PgCatalogSchema {
    pub(crate) fn new(
        inner: Arc<dyn SchemaProvider>,
        source: Arc<CatalogSource>,
        static_tables: Arc<PgCatalogStaticTables>,
    ) -> Self {
        Self {
            inner,
            source,
            static_tables,
        }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let lower = name.to_ascii_lowercase();
        match live_table(&lower, &self.source, &self.static_tables)? {
            Some(table) => Ok(Some(table)),
            None => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_columns_take_the_wire_type_of_their_tag() {
        let oid = catalog_column_type(&oid_field("o", kind::OID, false));
        assert_eq!((oid.oid(), oid.storage().len), (26, 4));
    }

    #[test]
    fn names_split_into_parts() {
        assert_eq!(identifier_parts("Public.T").unwrap(), ["public", "t"]);
        assert_eq!(identifier_parts("\"A \"\"b\".c").unwrap(), ["A \"b", "c"]);
        assert_eq!(identifier_parts("a..b"), None);
    }

    #[test]
    fn view_definitions_are_their_query() {
        assert_eq!(
            view_query("CREATE VIEW v AS SELECT a FROM t WHERE b > 1"),
            "SELECT a FROM t WHERE b > 1"
        );
        assert_eq!(
            view_query("SELECT count(*) FROM t"),
            "SELECT count(*) FROM t"
        );
    }

    #[test]
    fn vectors_parse_as_arrays() {
        let texts: ArrayRef = Arc::new(StringArray::from(vec![Some("1 2"), None, Some("")]));
        let lists = int16_vectors(&texts).unwrap();
        assert_eq!(lists.len(), 3);
        assert!(lists.is_null(1));
        assert_eq!(vector_numbers("[2, 20, 3]").unwrap(), vec![2, 20, 3]);
        assert!(vector_numbers("x").is_err());
    }
}
