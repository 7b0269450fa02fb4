//! Table providers the engine registers itself.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{EngineError, ErrorKind};

/// Stands in for a table that could not be restored at start-up (its files vanished, its
/// object store is unreachable …). It keeps the table's columns, so clients can still describe
/// it, and every query on it fails with the reason, so the problem is reported where it matters
/// instead of stopping the server. `CREATE OR REPLACE EXTERNAL TABLE` or `DROP TABLE` clears it.
#[derive(Debug)]
pub struct UnavailableTable {
    name: String,
    schema: SchemaRef,
    reason: String,
}

impl UnavailableTable {
    pub fn new(name: &str, schema: SchemaRef, reason: &str) -> Self {
        Self {
            name: name.to_string(),
            schema,
            reason: reason.to_string(),
        }
    }
}

#[async_trait]
impl TableProvider for UnavailableTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(EngineError::new(
            ErrorKind::UndefinedFile,
            format!(
                "table \"{}\" is unavailable: {}. Restore its files and run CREATE OR REPLACE EXTERNAL TABLE, or DROP TABLE it",
                self.name, self.reason
            ),
        )
        .into())
    }
}
