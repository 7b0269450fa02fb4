//! `TUMBLE` and `HOP` as DataFusion table functions: argument checking and resolution of the
//! windowed table.

use std::sync::Arc;

use datafusion::catalog::{
    Session as DfSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{ScalarValue, TableReference};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use futures::FutureExt;

use super::plan::WindowTable;
use super::spec::{interval_nanos, WindowKind, WindowSpec};
use crate::error::{EngineError, ErrorKind};

/// `TUMBLE(table, time_col, size)` or `HOP(table, time_col, slide, size)`.
#[derive(Debug)]
pub(crate) struct WindowFunction {
    kind: WindowKind,
}

impl WindowFunction {
    pub(crate) fn new(kind: WindowKind) -> Self {
        Self { kind }
    }

    fn usage(&self) -> &'static str {
        match self.kind {
            WindowKind::Tumble => "TUMBLE(table, time_column, size)",
            WindowKind::Hop => "HOP(table, time_column, slide, size)",
        }
    }

    fn window_table(
        &self,
        args: &[Expr],
        session: &dyn DfSession,
    ) -> Result<WindowTable, EngineError> {
        let name = self.kind.sql_name();
        let expected = match self.kind {
            WindowKind::Tumble => 3,
            WindowKind::Hop => 4,
        };
        if args.len() != expected {
            return Err(EngineError::new(
                ErrorKind::InvalidStatement,
                format!(
                    "{name} takes {expected} arguments, {}; found {}",
                    self.usage(),
                    args.len()
                ),
            ));
        }
        let table = table_argument(name, &args[0])?;
        let time_column = column_argument(name, &table, &args[1])?;
        let provider = resolve_table(session, &table)?;
        let schema = provider.schema();
        let time_type = schema
            .field_with_name(&time_column)
            .map_err(|_| {
                EngineError::new(
                    ErrorKind::UndefinedColumn,
                    format!("{name} time column '{time_column}' not found in table '{table}'"),
                )
            })?
            .data_type()
            .clone();
        let spec = match self.kind {
            WindowKind::Tumble => {
                let size = interval_argument(name, "size", &args[2])?;
                WindowSpec::tumble(table, &time_column, &time_type, size)?
            }
            WindowKind::Hop => {
                let slide = interval_argument(name, "slide", &args[2])?;
                let size = interval_argument(name, "size", &args[3])?;
                WindowSpec::hop(table, &time_column, &time_type, slide, size)?
            }
        };
        WindowTable::try_new(spec, provider)
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let table = self.window_table(args.exprs(), args.session())?;
        Ok(Arc::new(table))
    }
}

/// The first argument: a table or view name, bare or qualified (the planner hands it over as a
/// column reference, since it plans arguments as expressions), or a string.
fn table_argument(function: &str, arg: &Expr) -> Result<TableReference, EngineError> {
    match arg {
        Expr::Column(column) => match &column.relation {
            None => Ok(TableReference::bare(column.name.as_str())),
            Some(TableReference::Bare { table }) => Ok(TableReference::partial(
                table.as_ref(),
                column.name.as_str(),
            )),
            Some(TableReference::Partial { schema, table }) => Ok(TableReference::full(
                schema.as_ref(),
                table.as_ref(),
                column.name.as_str(),
            )),
            Some(TableReference::Full { .. }) => Err(bad_argument(function, "table", arg)),
        },
        Expr::Literal(ScalarValue::Utf8(Some(name)), _) => Ok(TableReference::from(name.as_str())),
        _ => Err(bad_argument(function, "table", arg)),
    }
}

/// The second argument: a column of the windowed table, optionally qualified by its name.
fn column_argument(
    function: &str,
    table: &TableReference,
    arg: &Expr,
) -> Result<String, EngineError> {
    match arg {
        Expr::Column(column) => match &column.relation {
            Some(relation) if relation.table() != table.table() => {
                Err(bad_argument(function, "time column", arg))
            }
            _ => Ok(column.name.clone()),
        },
        Expr::Literal(ScalarValue::Utf8(Some(name)), _) => Ok(name.clone()),
        _ => Err(bad_argument(function, "time column", arg)),
    }
}

fn interval_argument(function: &str, what: &str, arg: &Expr) -> Result<i64, EngineError> {
    match arg {
        // The planner has already folded constant expressions (`INTERVAL '1' MINUTE * 5`).
        Expr::Literal(value, _) => interval_nanos(function, what, value),
        _ => Err(EngineError::new(
            ErrorKind::InvalidParameterValue,
            format!(
                "{function} {what} must be a constant interval such as INTERVAL '1 minute', found {arg}"
            ),
        )),
    }
}

fn bad_argument(function: &str, what: &str, arg: &Expr) -> EngineError {
    EngineError::new(
        ErrorKind::InvalidStatement,
        format!("{function} {what} argument must be a name, found {arg}"),
    )
}

/// Looks the table up in the session's catalogs. Table functions are called synchronously
/// while a statement is planned, but catalog lookups are `async`; every schema Freshet
/// registers answers at once, so the lookup is polled once instead of blocking a runtime
/// thread, and a schema that would have to wait is reported instead of hanging.
fn resolve_table(
    session: &dyn DfSession,
    table: &TableReference,
) -> Result<Arc<dyn TableProvider>, EngineError> {
    let defaults = &session.config_options().catalog;
    let resolved = table
        .clone()
        .resolve(&defaults.default_catalog, &defaults.default_schema);
    let not_found = || {
        EngineError::new(
            ErrorKind::UndefinedTable,
            format!("table '{resolved}' not found"),
        )
    };
    let catalog = session
        .catalog_list()
        .catalog(&resolved.catalog)
        .ok_or_else(not_found)?;
    let schema = catalog.schema(&resolved.schema).ok_or_else(not_found)?;
    match schema.table(&resolved.table).now_or_never() {
        Some(Ok(Some(provider))) => Ok(provider),
        Some(Ok(None)) => Err(not_found()),
        Some(Err(err)) => Err(err.into()),
        None => Err(EngineError::unsupported(format!(
            "table '{resolved}' cannot be windowed: its schema loads tables asynchronously"
        ))),
    }
}
