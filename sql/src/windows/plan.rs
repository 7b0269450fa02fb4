//! The logical plan of a window: [`WindowTable`], and [`find_windows`] to recognise one in a
//! planned query.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, SchemaRef};
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::{provider_as_source, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    cast, lit, Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown,
};
use datafusion::physical_plan::ExecutionPlan;

use super::spec::{WindowKind, WindowRole, WindowSpec};
use crate::error::{EngineError, ErrorKind};

/// The column holding the (inclusive) start of an event's window.
pub const WINDOW_START: &str = "window_start";
/// The column holding the (exclusive) end of an event's window.
pub const WINDOW_END: &str = "window_end";
/// The HOP plan's internal column of offsets from an event's latest window start.
const HOP_OFFSET: &str = "__freshet_hop_offset";

/// A windowed table: what `TUMBLE(t, ts, size)` and `HOP(t, ts, slide, size)` return.
///
/// Its rows are the rows of the inner table whose time column is not NULL, with two more
/// columns, `window_start` and `window_end` (same type as the time column): one row per event
/// for a TUMBLE, `size / slide` rows per event for a HOP, one for each window `[window_start,
/// window_end)` containing the event. Windows are aligned to the Unix epoch.
///
/// # How it is planned
///
/// The table is a view (`TableType::View`): [`TableProvider::get_logical_plan`] returns the
/// expanded plan (scan of the inner table → filter `time IS NOT NULL` → projection with
/// `date_bin`; for a HOP an `unnest` of the constant list of window offsets duplicates each
/// row), and DataFusion inlines it where the function is called. Projection and filter
/// pushdown into the inner table (Parquet, CSV …) therefore work as for any view.
///
/// # Contract for the streaming planner
///
/// Because the plan is inlined while the SQL is planned, a planned query does not contain a
/// `WindowTable`; the window travels in the plan itself:
/// - the `window_start` and `window_end` expressions of the window's projection are aliases
///   carrying field metadata that encodes the [`WindowSpec`] ([`find_windows`] lists the windows
///   of a plan, subqueries and inlined views included);
/// - DataFusion keeps field metadata through column references, aliases and GROUP BY keys, so
///   [`super::window_column`] tells, for any output field (e.g. of an aggregate), whether it is
///   a window bound, which one, and of which window: a window closes once the watermark reaches
///   its `window_end`.
///
/// The metadata also reaches query results: Flight clients see it, and Parquet written by
/// `COPY` can keep it in the file's schema, so a column read back from such a file may carry it.
/// Trust [`super::window_column`] only for windows that [`find_windows`] reports for the same
/// plan, i.e. that the plan itself computes.
///
/// [`WindowTable::try_new`] builds the same plan over another provider of the same schema (an
/// in-memory micro-batch, say), so the runtime assigns windows exactly as batch queries do.
/// The arithmetic is also available directly: [`WindowSpec::windows_containing_ns`].
#[derive(Debug)]
pub struct WindowTable {
    spec: WindowSpec,
    plan: LogicalPlan,
    schema: SchemaRef,
}

impl WindowTable {
    /// Windows `input`, which must have the spec's time column with the spec's time type and
    /// no column named `window_start` or `window_end`. The input is scanned under the name
    /// [`WindowSpec::table`].
    pub fn try_new(spec: WindowSpec, input: Arc<dyn TableProvider>) -> Result<Self, EngineError> {
        let plan = window_plan(&spec, input)?;
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Ok(Self { spec, plan, schema })
    }

    /// The window: kind, inner table, time column, size and slide.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// The expanded logical plan (what DataFusion inlines).
    pub fn plan(&self) -> &LogicalPlan {
        &self.plan
    }
}

#[async_trait]
impl TableProvider for WindowTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        Some(Cow::Borrowed(&self.plan))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // scan() applies every filter on top of the plan, where the optimizer pushes each one
        // as far down as it can go.
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    /// Used only when DataFusion does not inline the plan (a scan built with filters); does
    /// what the inlined plan would do.
    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut plan = LogicalPlanBuilder::from(self.plan.clone());
        if let Some(filter) = filters.iter().cloned().reduce(Expr::and) {
            plan = plan.filter(filter)?;
        }
        if let Some(projection) = projection {
            let schema = self.plan.schema();
            let columns = projection
                .iter()
                .map(|i| Expr::Column(Column::from(schema.qualified_field(*i))));
            plan = plan.project(columns)?;
        }
        if let Some(limit) = limit {
            plan = plan.limit(0, Some(limit))?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}

/// The distinct windows whose bounds a plan computes, in plan order, inlined views and
/// subqueries included; empty for a query without TUMBLE or HOP. Windows are recognised by
/// the aliases that compute `window_start` / `window_end`, so this works on plans before and
/// after optimization (which may merge the two projections). Two identical windows (the same
/// call twice in a self-join) are reported once.
pub fn find_windows(plan: &LogicalPlan) -> Vec<WindowSpec> {
    let mut found: Vec<WindowSpec> = Vec::new();
    let mut note = |expr: &Expr| {
        let Expr::Alias(alias) = expr else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let window = alias
            .metadata
            .as_ref()
            .and_then(|metadata| WindowSpec::from_metadata(&metadata.to_hashmap()));
        if let Some((_, spec)) = window {
            if !found.contains(&spec) {
                found.push(spec);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    };
    // The closures never fail, so neither does the walk.
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| expr.apply(&mut note))?;
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn interval(nanos: i64) -> Expr {
    lit(ScalarValue::IntervalMonthDayNano(Some(
        IntervalMonthDayNano::new(0, 0, nanos),
    )))
}

/// `time` rounded down to a multiple of `nanos` since the Unix epoch: `date_bin` without an
/// origin, which bins from 1970-01-01 00:00:00 UTC whatever the column's time zone. Type
/// coercion hands `date_bin` nanoseconds whatever the column's unit, so the result is cast back
/// to the column's type (exact: window lengths are whole units of the column).
fn epoch_bin(nanos: i64, time: Expr, time_type: &DataType) -> Expr {
    let binned = datafusion::functions::datetime::date_bin().call(vec![interval(nanos), time]);
    cast(binned, time_type.clone())
}

fn window_plan(
    spec: &WindowSpec,
    input: Arc<dyn TableProvider>,
) -> Result<LogicalPlan, EngineError> {
    let scan = LogicalPlanBuilder::scan(spec.table().clone(), provider_as_source(input), None)?;
    let schema = Arc::clone(scan.schema());
    let time = time_column(spec, &schema)?;
    let columns: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
    let events = scan.filter(time.clone().is_not_null())?;
    let with_start = match spec.kind() {
        WindowKind::Tumble => {
            let start = epoch_bin(spec.size_ns(), time, &spec.time_type())
                .alias_with_metadata(WINDOW_START, Some(spec.field_metadata(WindowRole::Start)));
            events.project(columns.iter().cloned().chain([start]))?
        }
        WindowKind::Hop => hop_starts(spec, events, &columns, time)?,
    };
    let start = Expr::Column(Column::new_unqualified(WINDOW_START));
    let end = (start.clone() + interval(spec.size_ns()))
        .alias_with_metadata(WINDOW_END, Some(spec.field_metadata(WindowRole::End)));
    Ok(with_start
        .project(columns.into_iter().chain([start, end]))?
        .build()?)
}

/// Adds `window_start` for every window of a HOP containing each event. Each row is repeated
/// once per window by unnesting a constant list of offsets `[0, slide, 2·slide, …]`, which are
/// subtracted from the event's latest window start (the time rounded down to the slide). This
/// keeps the plan a single pass over the input, vectorised, with no join.
fn hop_starts(
    spec: &WindowSpec,
    events: LogicalPlanBuilder,
    columns: &[Expr],
    time: Expr,
) -> Result<LogicalPlanBuilder, EngineError> {
    let offsets: Vec<ScalarValue> = (0..spec.windows_per_event())
        .map(|i| {
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
                0,
                0,
                i * spec.slide_ns(),
            )))
        })
        .collect();
    let offsets = ScalarValue::List(ScalarValue::new_list(
        &offsets,
        &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
        false,
    ));
    let offset = Expr::Column(Column::new_unqualified(HOP_OFFSET));
    let start = (epoch_bin(spec.slide_ns(), time, &spec.time_type()) - offset)
        .alias_with_metadata(WINDOW_START, Some(spec.field_metadata(WindowRole::Start)));
    Ok(events
        .project(
            columns
                .iter()
                .cloned()
                .chain([lit(offsets).alias(HOP_OFFSET)]),
        )?
        .unnest_column(HOP_OFFSET)?
        .project(columns.iter().cloned().chain([start]))?)
}

/// The time column as an expression over the scan, after checking that the inner table has it
/// with the right type and does not already use the names of the window columns.
fn time_column(spec: &WindowSpec, schema: &DFSchema) -> Result<Expr, EngineError> {
    let function = spec.kind().sql_name();
    for name in [WINDOW_START, WINDOW_END] {
        if schema.has_column_with_unqualified_name(name) {
            return Err(EngineError::new(
                ErrorKind::DuplicateObject,
                format!(
                    "{function} adds a column {name}, but table '{}' already has one; rename it in a view first",
                    spec.table()
                ),
            ));
        }
    }
    let (qualifier, field) = schema
        .qualified_field_with_unqualified_name(spec.time_column())
        .map_err(|_| {
            EngineError::new(
                ErrorKind::UndefinedColumn,
                format!(
                    "{function} time column '{}' not found in table '{}'",
                    spec.time_column(),
                    spec.table()
                ),
            )
        })?;
    if !matches!(field.data_type(), DataType::Timestamp(..)) {
        return Err(super::spec::not_a_timestamp(
            spec.kind(),
            spec.table(),
            spec.time_column(),
            field.data_type(),
        ));
    }
    if field.data_type() != &spec.time_type() {
        return Err(EngineError::new(
            ErrorKind::InvalidStatement,
            format!(
                "{function} time column '{}' of table '{}' is {}, but the window was defined for {}",
                spec.time_column(),
                spec.table(),
                field.data_type(),
                spec.time_type()
            ),
        ));
    }
    Ok(Expr::Column(Column::from((qualifier, field))))
}
