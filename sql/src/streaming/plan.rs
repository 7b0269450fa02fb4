//! Planning a continuous query once, into the pieces a job runs per micro-batch.
//!
//! The query is planned by DataFusion like any other. Then:
//! 1. its one streaming input (a source or a materialized view) is found among the table scans
//!    and replaced by a [`BatchSlotTable`], so each execution reads the current micro-batch;
//! 2. the physical plan is made with one partition and searched for an aggregation. Without
//!    one the query is *stateless*: the whole plan runs on each micro-batch and its rows are
//!    appended. With one, the plan is cut in three: the *lower* part (micro-batch rows →
//!    aggregate input, run per micro-batch), the aggregation itself (its group and aggregate
//!    expressions, instantiated as `AggregateExec`s in `Partial`, `PartialReduce` and `Final`
//!    modes over in-memory state), and the *upper* part (final aggregate rows → view rows:
//!    HAVING, projections, joins above the aggregate), which reads the finalised rows from a
//!    slot in place of the aggregate;
//! 3. a GROUP BY key that is a window bound (see [`crate::windows::window_column`]) makes the
//!    aggregate *windowed*: a window's rows are emitted once the watermark reaches its end.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{LogicalPlan, TableScan};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::ExecutionPlan;

use super::exec::{BatchSlot, BatchSlotTable, BatchesExec};
use super::view::{MaterializedViewTable, ViewStore};
use crate::error::{EngineError, ErrorKind};
use crate::session::Session;
use crate::sources::{SourceHandle, SourceTable};
use crate::windows::{find_windows, window_column, WindowRole, WindowSpec};

/// What a continuous query reads.
#[derive(Debug, Clone)]
pub enum StreamInput {
    /// A source: Kafka topic or generator.
    Source(SourceHandle),
    /// The rows another materialized view emitted (its checkpointed prefix).
    View { name: String, store: Arc<ViewStore> },
}

impl StreamInput {
    pub fn name(&self) -> &str {
        match self {
            StreamInput::Source(handle) => &handle.name,
            StreamInput::View { name, .. } => name,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        match self {
            StreamInput::Source(handle) => handle.source.schema(),
            StreamInput::View { store, .. } => store.schema(),
        }
    }
}

/// A GROUP BY key that is a window bound.
#[derive(Debug, Clone)]
pub struct WindowKey {
    /// Position among the group keys (and so among the state's columns).
    pub index: usize,
    pub role: WindowRole,
    pub spec: WindowSpec,
}

/// The aggregation of a continuous query, cut out of its plan.
#[derive(Debug)]
pub struct AggregatePlan {
    /// Micro-batch rows → aggregate input rows.
    pub lower: Arc<dyn ExecutionPlan>,
    pub group_by: PhysicalGroupBy,
    pub aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    pub filter_expr: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The schema of the aggregate's input (the lower part's output).
    pub input_schema: SchemaRef,
    /// The schema of partial-state rows.
    pub state_schema: SchemaRef,
    /// Final aggregate rows (from `upper_slot`) → view rows.
    pub upper: Arc<dyn ExecutionPlan>,
    pub upper_slot: BatchSlot,
    /// Set when the aggregate groups by a window.
    pub window: Option<WindowKey>,
    /// The view columns that are copies of the group key columns, in group key order, when
    /// the view shows the whole key: a changed group's old and new rows are then paired as
    /// one update.
    pub view_key: Option<Vec<usize>>,
}

impl AggregatePlan {
    /// An `AggregateExec` of this aggregation in `mode` over `input` rows of `schema`.
    pub fn exec(
        &self,
        mode: AggregateMode,
        schema: SchemaRef,
        input: Vec<datafusion::arrow::record_batch::RecordBatch>,
    ) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
        let input: Arc<dyn ExecutionPlan> = Arc::new(BatchesExec::fixed(schema, input));
        let (group_by, filters) = match mode {
            AggregateMode::Partial => (self.group_by.clone(), self.filter_expr.clone()),
            _ => (self.group_by.as_final(), vec![None; self.aggr_expr.len()]),
        };
        Ok(Arc::new(AggregateExec::try_new(
            mode,
            group_by,
            self.aggr_expr.clone(),
            filters,
            input,
            self.input_schema.clone(),
        )?))
    }
}

/// How a planned continuous query runs.
#[derive(Debug)]
pub enum PlanKind {
    /// Filter, projection, joins with bounded tables: run on each micro-batch, rows appended.
    Stateless { plan: Arc<dyn ExecutionPlan> },
    /// One aggregation, windowed or not.
    Aggregate(Box<AggregatePlan>),
}

/// A continuous query, planned.
#[derive(Debug)]
pub struct ContinuousPlan {
    pub input: StreamInput,
    /// Where the job puts each micro-batch (rows of `input.schema()`).
    pub slot: BatchSlot,
    pub kind: PlanKind,
    /// The rows the query produces.
    pub output_schema: SchemaRef,
    pub task_ctx: Arc<TaskContext>,
}

impl ContinuousPlan {
    /// Whether the query's result is replaced as a whole on each change (a non-windowed
    /// aggregate) rather than appended to.
    pub fn is_updating(&self) -> bool {
        matches!(&self.kind, PlanKind::Aggregate(a) if a.window.is_none())
    }

    /// `windowed aggregate`, `aggregate` or `append`, for SHOW MATERIALIZED VIEWS.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            PlanKind::Stateless { .. } => "append",
            PlanKind::Aggregate(a) if a.window.is_some() => "windowed aggregate",
            PlanKind::Aggregate(_) => "updating aggregate",
        }
    }

    /// The schema of a SUBSCRIBE to this query: an updating aggregate's changes carry an
    /// operation column.
    pub fn subscribe_schema(&self) -> SchemaRef {
        if self.is_updating() {
            super::view::changelog_schema(&self.output_schema)
        } else {
            self.output_schema.clone()
        }
    }

    pub fn window(&self) -> Option<&WindowKey> {
        match &self.kind {
            PlanKind::Aggregate(a) => a.window.as_ref(),
            PlanKind::Stateless { .. } => None,
        }
    }
}

fn unsupported(message: impl Into<String>) -> EngineError {
    EngineError::new(ErrorKind::FeatureNotSupported, message)
}

/// The streaming input a scan reads, if it reads one.
fn streaming_input(scan: &TableScan) -> Option<StreamInput> {
    let provider = source_as_provider(&scan.source).ok()?;
    if let Some(table) = provider.downcast_ref::<SourceTable>() {
        return Some(StreamInput::Source(table.handle().clone()));
    }
    if let Some(table) = provider.downcast_ref::<MaterializedViewTable>() {
        return Some(StreamInput::View {
            name: table.name().to_string(),
            store: table.store().clone(),
        });
    }
    None
}

/// Plans `plan` (the logical plan of the query) as a continuous query.
pub async fn plan_continuous(
    session: &Session,
    plan: LogicalPlan,
) -> Result<ContinuousPlan, EngineError> {
    // 1. The streaming input.
    let mut inputs: Vec<StreamInput> = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Some(input) = streaming_input(scan) {
                inputs.push(input);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let input = match inputs.len() {
        0 => {
            return Err(EngineError::new(
                ErrorKind::InvalidStatement,
                "a continuous query must read a source or a materialized view; \
                 for bounded tables use CREATE VIEW or CREATE TABLE … AS",
            ))
        }
        1 => inputs.remove(0),
        _ => {
            return Err(unsupported(format!(
                "a continuous query can read one stream, this one reads {} ({}); joins between \
                 streams are not supported yet — join a stream with bounded tables instead",
                inputs.len(),
                inputs
                    .iter()
                    .map(StreamInput::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if let StreamInput::View { name, store } = &input {
        if store.is_updating() {
            return Err(unsupported(format!(
                "materialized view {name} is an updating aggregate (its rows change in place); \
                 a continuous query reads sources and windowed or append-only views"
            )));
        }
    }
    let slot = BatchSlot::default();
    let table = Arc::new(BatchSlotTable::new(input.schema(), slot.clone()));
    let plan = plan
        .transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(scan) if streaming_input(&scan).is_some() => {
                Ok(Transformed::yes(LogicalPlan::TableScan(TableScan {
                    source: provider_as_source(table.clone()),
                    ..scan
                })))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;

    // 2. One partition: the job parallelises by reading partitions concurrently, and the
    //    aggregation is cut out of the plan more simply without exchanges.
    let base = session.context().state();
    let mut config = base.config().clone();
    config = config.with_target_partitions(1);
    // The plan is executed once per micro-batch (after `reset_plan_states`), which dynamic
    // filters do not survive.
    // The partial aggregation of a micro-batch must group its rows (one state row per key):
    // the job looks each key up in its state once. DataFusion otherwise stops grouping when
    // most keys are distinct, which is the usual case of a micro-batch over many keys.
    config
        .options_mut()
        .execution
        .skip_partial_aggregation_probe_rows_threshold = usize::MAX;
    {
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.enable_dynamic_filter_pushdown = false;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        optimizer.enable_topk_dynamic_filter_pushdown = false;
        optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    }
    let state = SessionStateBuilder::new_from_existing(base)
        .with_config(config)
        .build();
    let optimized = state.optimize(&plan)?;
    let windows = find_windows(&optimized);
    let physical = state
        .query_planner()
        .create_physical_plan(&optimized, &state)
        .await?;
    let task_ctx = Arc::new(TaskContext::from(&state));
    let output_schema = physical.schema();

    let mut aggregates: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    physical.apply(|node| {
        if node.downcast_ref::<AggregateExec>().is_some() {
            aggregates.push(node.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if aggregates.is_empty() {
        check_stateless(&physical, "")?;
        return Ok(ContinuousPlan {
            input,
            slot,
            kind: PlanKind::Stateless { plan: physical },
            output_schema,
            task_ctx,
        });
    }

    // 3. The aggregation: the top aggregate, and its partial half if it is a final one.
    let top = aggregates[0].clone();
    let top_exec = top
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| EngineError::internal("aggregate node lost its type"))?;
    let partial: Arc<dyn ExecutionPlan> = match top_exec.mode() {
        AggregateMode::Single | AggregateMode::SinglePartitioned => top.clone(),
        AggregateMode::Final | AggregateMode::FinalPartitioned => aggregates
            .get(1)
            .filter(|p| {
                p.downcast_ref::<AggregateExec>()
                    .is_some_and(|p| *p.mode() == AggregateMode::Partial)
            })
            .cloned()
            .ok_or_else(|| EngineError::internal("final aggregate without its partial half"))?,
        other => {
            return Err(EngineError::internal(format!(
                "unexpected aggregate mode {other:?}"
            )))
        }
    };
    let used = if Arc::ptr_eq(&partial, &top) { 1 } else { 2 };
    if aggregates.len() > used {
        return Err(unsupported(
            "a continuous query can have one level of aggregation (no aggregate over an \
             aggregate, no aggregating subqueries); build a materialized view on top of \
             another instead",
        ));
    }
    let partial_exec = partial
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| EngineError::internal("aggregate node lost its type"))?;
    let group_by = partial_exec.group_expr().clone();
    if !group_by.is_single() {
        return Err(unsupported(
            "GROUPING SETS, ROLLUP and CUBE are not supported in continuous queries",
        ));
    }
    let lower = partial_exec.input().clone();
    check_stateless(&lower, " below the aggregation")?;
    let input_schema = partial_exec.input_schema();
    let aggr_expr = partial_exec.aggr_expr().to_vec();
    let filter_expr = partial_exec.filter_expr().to_vec();
    let state_schema = {
        let probe = AggregateExec::try_new(
            AggregateMode::Partial,
            group_by.clone(),
            aggr_expr.clone(),
            filter_expr.clone(),
            Arc::new(BatchesExec::fixed(input_schema.clone(), Vec::new())),
            input_schema.clone(),
        )?;
        probe.schema()
    };

    // The window among the group keys, from the field metadata the window functions set.
    let mut window = None;
    for (index, field) in state_schema
        .fields()
        .iter()
        .take(group_by.expr().len())
        .enumerate()
    {
        if let Some(column) = window_column(field) {
            if windows.contains(&column.spec) {
                window = Some(WindowKey {
                    index,
                    role: column.role,
                    spec: column.spec,
                });
                break;
            }
        }
    }

    let upper_slot = BatchSlot::default();
    let aggregate_schema = top.schema();
    let replacement: Arc<dyn ExecutionPlan> = Arc::new(BatchesExec::slot(
        aggregate_schema,
        upper_slot.clone(),
        None,
    )?);
    let upper = physical
        .clone()
        .transform_down(|node| {
            if Arc::ptr_eq(&node, &top) {
                Ok(Transformed::new(
                    replacement.clone(),
                    true,
                    TreeNodeRecursion::Jump,
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })?
        .data;
    // Each micro-batch now runs the upper part over the groups it changed only, so it must
    // act row by row; a LIMIT would apply to those groups.
    check_no_limit(&upper)?;
    let view_key = if window.is_none() {
        super::view::row_converter(&output_schema)?;
        view_key(&upper, &replacement, group_by.expr().len())
    } else {
        None
    };
    Ok(ContinuousPlan {
        input,
        slot,
        kind: PlanKind::Aggregate(Box::new(AggregatePlan {
            lower,
            group_by,
            aggr_expr,
            filter_expr,
            input_schema,
            state_schema,
            upper,
            upper_slot,
            window,
            view_key,
        })),
        output_schema,
        task_ctx,
    })
}

/// Operators whose result depends on more than one micro-batch at a time.
fn stateful_operator(name: &str) -> Option<&'static str> {
    match name {
        "GlobalLimitExec" | "LocalLimitExec" => Some("LIMIT"),
        "WindowAggExec" | "BoundedWindowAggExec" => Some("window functions (OVER …)"),
        "SortExec" | "SortPreservingMergeExec" => None,
        _ => None,
    }
}

fn check_stateless(plan: &Arc<dyn ExecutionPlan>, place: &str) -> Result<(), EngineError> {
    let mut found = None;
    plan.apply(|node| {
        if let Some(what) = stateful_operator(node.name()) {
            found = Some(what);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match found {
        Some(what) => Err(unsupported(format!(
            "{what}{place} is not supported in a continuous query: it would apply to each \
             micro-batch, not to the whole stream"
        ))),
        None => Ok(()),
    }
}

fn check_no_limit(plan: &Arc<dyn ExecutionPlan>) -> Result<(), EngineError> {
    let mut limited = false;
    plan.apply(|node| {
        limited |=
            matches!(node.name(), "GlobalLimitExec" | "LocalLimitExec") || node.fetch().is_some();
        Ok(TreeNodeRecursion::Continue)
    })?;
    if limited {
        return Err(unsupported(
            "LIMIT over an aggregate is not supported in a continuous query (it would apply to \
             each micro-batch's changed groups or closed windows); apply it when reading the \
             view",
        ));
    }
    Ok(())
}

/// The output columns of `upper` that copy the group key columns (in key order), if all of
/// them are there. Looks through projections, filters and the nodes that only move rows; any
/// other node (a join, say) gives `None`: the view's rows are then changed by retracting and
/// inserting rather than by updates.
fn view_key(
    upper: &Arc<dyn ExecutionPlan>,
    aggregate: &Arc<dyn ExecutionPlan>,
    group_len: usize,
) -> Option<Vec<usize>> {
    let sources = column_sources(upper, aggregate)?;
    (0..group_len)
        .map(|g| sources.iter().position(|s| *s == Some(g)))
        .collect()
}

/// For each output column of `plan`, the column of `aggregate`'s output it is a copy of.
fn column_sources(
    plan: &Arc<dyn ExecutionPlan>,
    aggregate: &Arc<dyn ExecutionPlan>,
) -> Option<Vec<Option<usize>>> {
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::physical_plan::projection::ProjectionExec;
    if Arc::ptr_eq(plan, aggregate) {
        return Some((0..plan.schema().fields().len()).map(Some).collect());
    }
    let children = plan.children();
    let [child] = children.as_slice() else {
        return None;
    };
    let below = column_sources(child, aggregate)?;
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return Some(
            projection
                .expr()
                .iter()
                .map(|e| {
                    e.expr
                        .downcast_ref::<Column>()
                        .and_then(|c| below.get(c.index()).copied().flatten())
                })
                .collect(),
        );
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        return Some(match filter.projection() {
            Some(p) => p.iter().map(|&i| below.get(i).copied().flatten()).collect(),
            None => below,
        });
    }
    match plan.name() {
        "SortExec"
        | "SortPreservingMergeExec"
        | "CoalesceBatchesExec"
        | "CoalescePartitionsExec"
        | "RepartitionExec" => Some(below),
        _ => None,
    }
}
