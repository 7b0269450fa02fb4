//! The rows of a materialized view, readable by queries and subscriptions while the job that
//! maintains them runs.
//!
//! An *append* view (windowed aggregate, stateless query) grows by batches; a prefix of them is
//! *stable* (written by a checkpoint, so it survives a crash unchanged) and downstream jobs read
//! only that prefix. An *updating* view (aggregate without a window) is replaced as a whole on
//! each change.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::watch;

use super::exec::BatchesExec;

#[derive(Debug, Default)]
struct ViewData {
    batches: Vec<RecordBatch>,
    rows: usize,
    /// Batches written by a checkpoint.
    stable: usize,
    /// Watermark (ns) of the job when the stable prefix was written.
    stable_watermark_ns: Option<i64>,
}

/// The contents of a materialized view (or of a subscription's query).
#[derive(Debug)]
pub struct ViewStore {
    schema: SchemaRef,
    updating: bool,
    data: Mutex<ViewData>,
    /// Bumped on every change; subscribers wait on it.
    version: watch::Sender<u64>,
}

impl ViewStore {
    pub fn new(schema: SchemaRef, updating: bool) -> Self {
        Self {
            schema,
            updating,
            data: Mutex::new(ViewData::default()),
            version: watch::channel(0).0,
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, ViewData> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn is_updating(&self) -> bool {
        self.updating
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Appends rows (append views).
    pub fn append(&self, batches: Vec<RecordBatch>) {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            return;
        }
        {
            let mut data = self.data();
            data.rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
            data.batches.extend(batches);
        }
        self.bump();
    }

    /// Replaces every row (updating views).
    pub fn replace(&self, batches: Vec<RecordBatch>) {
        {
            let mut data = self.data();
            data.rows = batches.iter().map(RecordBatch::num_rows).sum();
            data.stable = 0;
            data.batches = batches;
        }
        self.bump();
    }

    /// Every row now.
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        self.data().batches.clone()
    }

    pub fn rows(&self) -> usize {
        self.data().rows
    }

    /// Batches appended since the stable prefix, to be written by a checkpoint.
    pub fn unstable(&self) -> (usize, Vec<RecordBatch>) {
        let data = self.data();
        (data.batches.len(), data.batches[data.stable..].to_vec())
    }

    /// Marks the first `batches` batches stable, as of `watermark_ns`.
    pub fn mark_stable(&self, batches: usize, watermark_ns: Option<i64>) {
        {
            let mut data = self.data();
            data.stable = batches.min(data.batches.len());
            data.stable_watermark_ns = watermark_ns;
        }
        self.bump();
    }

    /// Stable batches from index `from`, and the watermark they are complete up to.
    pub fn stable_from(&self, from: usize) -> (Vec<RecordBatch>, Option<i64>) {
        let data = self.data();
        let from = from.min(data.stable);
        (
            data.batches[from..data.stable].to_vec(),
            data.stable_watermark_ns,
        )
    }

    /// Number of stable batches.
    pub fn stable_len(&self) -> usize {
        self.data().stable
    }

    /// Restores rows read from a checkpoint, all stable.
    pub fn restore(&self, batches: Vec<RecordBatch>, watermark_ns: Option<i64>) {
        {
            let mut data = self.data();
            data.rows = batches.iter().map(RecordBatch::num_rows).sum();
            data.stable = batches.len();
            data.batches = batches;
            data.stable_watermark_ns = watermark_ns;
        }
        self.bump();
    }

    /// The current rows, then every row added, until the store is dropped by its job and the
    /// stream's reader stops. An updating view sends its whole contents on each change.
    pub fn subscribe(self: &Arc<Self>) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let receiver = self.version.subscribe();
        let state = (self.clone(), receiver, 0usize, true);
        let stream =
            futures::stream::unfold(state, |(store, mut receiver, cursor, first)| async move {
                let mut first = first;
                loop {
                    if !first && receiver.changed().await.is_err() {
                        return None;
                    }
                    first = false;
                    receiver.borrow_and_update();
                    let (batches, next) = {
                        let data = store.data();
                        if store.updating {
                            (data.batches.clone(), 0)
                        } else {
                            let from = cursor.min(data.batches.len());
                            (data.batches[from..].to_vec(), data.batches.len())
                        }
                    };
                    let batches: Vec<RecordBatch> =
                        batches.into_iter().filter(|b| b.num_rows() > 0).collect();
                    if batches.is_empty() {
                        continue;
                    }
                    let batch = datafusion::arrow::compute::concat_batches(&store.schema, &batches)
                        .map_err(Into::into);
                    return Some((batch, (store, receiver, next, false)));
                }
            });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// A materialized view as a table: a plain SELECT reads its current rows.
///
/// Its table type is `View`, so catalogs (`information_schema.tables`, `pg_class`, psql `\dv`)
/// list it with the views and show its query as the definition.
#[derive(Debug)]
pub struct MaterializedViewTable {
    name: String,
    store: Arc<ViewStore>,
    /// The query as the user wrote it.
    query: String,
}

impl MaterializedViewTable {
    pub fn new(name: &str, store: Arc<ViewStore>, query: &str) -> Self {
        Self {
            name: name.to_string(),
            store,
            query: query.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Arc<ViewStore> {
        &self.store
    }
}

#[async_trait]
impl TableProvider for MaterializedViewTable {
    fn schema(&self) -> SchemaRef {
        self.store.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(&self.query)
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(BatchesExec::fixed_projected(
            self.store.schema(),
            self.store.snapshot(),
            projection.cloned(),
        )?))
    }
}
