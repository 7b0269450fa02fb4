//! Catalog metadata for GetCatalogs, GetDbSchemas, GetTables, GetTableTypes and GetSqlInfo.
//!
//! Catalogs, schemas and tables are read with SQL over `information_schema` through the engine,
//! like any client's query, so Flight lists exactly what pgwire clients see. A table's columns
//! come from planning `SELECT * FROM it LIMIT 0`.

use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, SqlInfo,
    SqlNullOrdering, SqlSupportedCaseSensitivity, SqlSupportedTransaction, SupportedSqlGrammar,
};
use freshet_sql::datafusion::arrow::array::{Array, RecordBatch, StringArray};
use freshet_sql::datafusion::arrow::compute::cast;
use freshet_sql::datafusion::arrow::datatypes::{DataType, Schema};
use freshet_sql::datafusion::common::{ParamValues, ScalarValue};
use freshet_sql::{EngineError, Output, Session};
use futures::StreamExt;
use tonic::Status;

use super::results::{arrow_status, flight_schema};
use super::service::FlightSql;
use super::status;

/// Most rows a metadata query over `information_schema` may return.
const METADATA_ROWS_MAX: usize = 100_000;
/// Every schema: `information_schema.schemata` leaves out `information_schema` itself, whose
/// tables GetTables does list.
const SCHEMAS: &str = "SELECT catalog_name, schema_name FROM information_schema.schemata \
     UNION SELECT table_catalog, table_schema FROM information_schema.tables";
/// Table types GetTables reports, as `information_schema.tables` names them.
const TABLE_TYPES: [&str; 3] = ["BASE TABLE", "LOCAL TEMPORARY", "VIEW"];

/// The Arrow version Freshet is built with, reported by GetSqlInfo. A test checks it against
/// Cargo.lock.
const ARROW_VERSION: &str = "59.3.2";

/// The SqlInfo values GetSqlInfo reports.
pub fn sql_info() -> SqlInfoData {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "Freshet");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, ARROW_VERSION);
    info.append(SqlInfo::FlightSqlServerReadOnly, false);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, true);
    info.append(SqlInfo::SqlDdlTable, true);
    info.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    info.append(SqlInfo::SqlAllTablesAreSelectable, true);
    info.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    info.append(SqlInfo::SqlSearchStringEscape, "\\");
    info.append(SqlInfo::SqlSupportsColumnAliasing, true);
    info.append(SqlInfo::SqlNullPlusNullIsNull, true);
    info.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32)
            | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    info.append(SqlInfo::SqlTransactionsSupported, false);
    // Only constants above: failing to encode them is a bug.
    info.build().expect("the SqlInfo constants encode")
}

/// A double-quoted SQL identifier.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The text of every column of `batch` at `row` (NULL as the empty string).
fn text_columns(batch: &RecordBatch) -> Result<Vec<StringArray>, Status> {
    batch
        .columns()
        .iter()
        .map(|column| {
            let text =
                cast(column, &DataType::Utf8).map_err(|e| arrow_status("metadata column", e))?;
            text.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| Status::internal("metadata column is not text"))
        })
        .collect()
}

impl FlightSql {
    /// The rows of a metadata query over `information_schema`, every value as text.
    async fn metadata_rows(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Vec<Vec<String>>, Status> {
        let prepared = self
            .engine
            .prepare(session, sql)
            .await
            .map_err(|e| status(&e))?;
        let params = (!params.is_empty()).then(|| ParamValues::from(params));
        let output = self
            .engine
            .execute_prepared(session, &prepared, params)
            .await
            .map_err(|e| status(&e))?;
        let Output::Rows(mut batches) = output else {
            return Err(Status::internal("a metadata query returned no rows"));
        };
        let mut rows = Vec::new();
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| status(&EngineError::from(e)))?;
            if rows.len() + batch.num_rows() > METADATA_ROWS_MAX {
                return Err(Status::resource_exhausted(format!(
                    "more than {METADATA_ROWS_MAX} rows of metadata; narrow the request with filters"
                )));
            }
            let columns = text_columns(&batch)?;
            for row in 0..batch.num_rows() {
                rows.push(
                    columns
                        .iter()
                        .map(|c| {
                            if c.is_null(row) {
                                String::new()
                            } else {
                                c.value(row).to_string()
                            }
                        })
                        .collect(),
                );
            }
        }
        Ok(rows)
    }

    /// The columns of a table, read by planning `SELECT * … LIMIT 0` through the engine.
    async fn table_schema(
        &self,
        session: &Session,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Schema {
        let sql = format!(
            "SELECT * FROM {}.{}.{} LIMIT 0",
            quote(catalog),
            quote(schema),
            quote(table)
        );
        match self.engine.prepare(session, &sql).await {
            Ok(prepared) => prepared
                .schema()
                .map(|s| flight_schema(s).as_ref().clone())
                .unwrap_or_else(Schema::empty),
            Err(err) => {
                tracing::debug!(%catalog, %schema, %table, error = %err, "no schema for GetTables");
                Schema::empty()
            }
        }
    }

    pub(super) async fn catalogs_batch(
        &self,
        session: &Session,
        query: CommandGetCatalogs,
    ) -> Result<RecordBatch, Status> {
        let rows = self
            .metadata_rows(
                session,
                &format!("SELECT DISTINCT catalog_name FROM ({SCHEMAS})"),
                Vec::new(),
            )
            .await?;
        let mut builder = query.into_builder();
        for row in rows {
            builder.append(&row[0]);
        }
        builder.build().map_err(|e| arrow_status("GetCatalogs", e))
    }

    pub(super) async fn schemas_batch(
        &self,
        session: &Session,
        query: CommandGetDbSchemas,
    ) -> Result<RecordBatch, Status> {
        let rows = self.metadata_rows(session, SCHEMAS, Vec::new()).await?;
        let mut builder = query.into_builder();
        for row in rows {
            builder.append(&row[0], &row[1]);
        }
        builder.build().map_err(|e| arrow_status("GetDbSchemas", e))
    }

    pub(super) async fn tables_batch(
        &self,
        session: &Session,
        query: CommandGetTables,
    ) -> Result<RecordBatch, Status> {
        // Filter in SQL first, so table schemas are only looked up for the tables returned.
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        let filters = [
            ("table_catalog =", &query.catalog),
            ("table_schema LIKE", &query.db_schema_filter_pattern),
            ("table_name LIKE", &query.table_name_filter_pattern),
        ];
        for (condition, value) in filters {
            if let Some(value) = value {
                params.push(ScalarValue::Utf8(Some(value.clone())));
                conditions.push(format!("{condition} ${}", params.len()));
            }
        }
        let mut sql = "SELECT table_catalog, table_schema, table_name, table_type FROM information_schema.tables".to_string();
        if !conditions.is_empty() {
            sql = format!("{sql} WHERE {}", conditions.join(" AND "));
        }
        let rows = self.metadata_rows(session, &sql, params).await?;
        let types = query.table_types.clone();
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        for row in rows {
            let [catalog, schema, table, kind] = &row[..] else {
                return Err(Status::internal(
                    "information_schema.tables has an unexpected shape",
                ));
            };
            if !types.is_empty() && !types.contains(kind) {
                continue;
            }
            let columns = if include_schema {
                self.table_schema(session, catalog, schema, table).await
            } else {
                Schema::empty()
            };
            builder
                .append(catalog, schema, table, kind, &columns)
                .map_err(|e| arrow_status("GetTables", e))?;
        }
        builder.build().map_err(|e| arrow_status("GetTables", e))
    }
}

pub fn table_types_batch(query: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for kind in TABLE_TYPES {
        builder.append(kind);
    }
    builder
        .build()
        .map_err(|e| arrow_status("GetTableTypes", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("users"), "\"users\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn reported_arrow_version_is_the_one_built_with() {
        let lock = include_str!("../../../Cargo.lock");
        let expected = format!("name = \"arrow\"\nversion = \"{ARROW_VERSION}\"");
        assert!(
            lock.contains(&expected),
            "update ARROW_VERSION to the arrow version in Cargo.lock"
        );
    }

    #[test]
    fn sql_info_names_the_server() {
        let info = sql_info();
        let batch = info
            .record_batch([SqlInfo::FlightSqlServerName as u32])
            .unwrap();
        assert_eq!(batch.num_rows(), 1);
    }
}
