//! Feeding micro-batches to DataFusion plans.
//!
//! A continuous query is planned once. Its streaming input (a source, or another materialized
//! view) is replaced in the plan by a [`BatchSlotTable`]: every execution of the plan reads the
//! batches the job put in the slot for the current micro-batch. [`BatchesExec`] is the physical
//! node doing that, and is also how the job hands fixed batches (aggregate state) to an
//! `AggregateExec`.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};

/// The batches of the current micro-batch, shared by the job and its plan.
#[derive(Debug, Default, Clone)]
pub struct BatchSlot(Arc<Mutex<Vec<RecordBatch>>>);

impl BatchSlot {
    /// Puts `batches` in the slot for the next executions.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = batches;
    }

    fn get(&self) -> Vec<RecordBatch> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A table whose rows are whatever is in its slot: the streaming input of a planned query.
#[derive(Debug)]
pub struct BatchSlotTable {
    schema: SchemaRef,
    slot: BatchSlot,
}

impl BatchSlotTable {
    pub fn new(schema: SchemaRef, slot: BatchSlot) -> Self {
        Self { schema, slot }
    }
}

#[async_trait]
impl TableProvider for BatchSlotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(BatchesExec::slot(
            self.schema.clone(),
            self.slot.clone(),
            projection.cloned(),
        )?))
    }
}

#[derive(Debug)]
enum Batches {
    /// Read from a slot at each execution.
    Slot(BatchSlot),
    /// Fixed batches.
    Fixed(Vec<RecordBatch>),
}

/// One partition of in-memory batches, projected.
#[derive(Debug)]
pub struct BatchesExec {
    batches: Batches,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl BatchesExec {
    /// Reads the slot's batches (of `schema`) at each execution, projected.
    pub fn slot(
        schema: SchemaRef,
        slot: BatchSlot,
        projection: Option<Vec<usize>>,
    ) -> DfResult<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema,
        };
        Ok(Self::new(Batches::Slot(slot), projection, projected))
    }

    /// Produces `batches`, which have `schema`.
    pub fn fixed(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self::new(Batches::Fixed(batches), None, schema)
    }

    /// Produces `batches` (of `schema`), projected.
    pub fn fixed_projected(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        projection: Option<Vec<usize>>,
    ) -> DfResult<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema,
        };
        Ok(Self::new(Batches::Fixed(batches), projection, projected))
    }

    fn new(batches: Batches, projection: Option<Vec<usize>>, schema: SchemaRef) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            batches,
            projection,
            schema,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for BatchesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.batches {
            Batches::Slot(_) => write!(f, "MicroBatchExec"),
            Batches::Fixed(b) => write!(f, "BatchesExec: batches={}", b.len()),
        }
    }
}

impl ExecutionPlan for BatchesExec {
    fn name(&self) -> &'static str {
        "BatchesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let batches = match &self.batches {
            Batches::Slot(slot) => slot.get(),
            Batches::Fixed(batches) => batches.clone(),
        };
        let batches = match &self.projection {
            None => batches,
            Some(p) => batches
                .iter()
                .map(|b| b.project(p))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let schema = self.schema.clone();
        // Batches keep the schema they were made with; the plan expects `schema` (same
        // columns, possibly other nullability or metadata).
        let stream = futures::stream::iter(batches.into_iter().map(move |b| {
            if b.schema() == schema {
                Ok(b)
            } else {
                RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(Into::into)
            }
        }));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}
