//! The rows of a materialized view, readable by queries and subscriptions while the job that
//! maintains them runs.
//!
//! An *append* view (windowed aggregate, stateless query) grows by batches; a prefix of them is
//! *stable* (written by a checkpoint, so it survives a crash unchanged) and downstream jobs read
//! only that prefix. An *updating* view (aggregate without a window) holds its current rows as
//! a multiset (rows in Arrow's row format, with a count) and applies the changes its job
//! computes per micro-batch: a retracted row is removed, an inserted row added. Subscribers of
//! an updating view get the rows once, then each micro-batch's changes, with an `op` column
//! (see [`Op`]).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::{cast, concat_batches, interleave};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::HashMap;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::{broadcast, watch};

use super::exec::BatchesExec;
use crate::error::EngineError;

/// The name of the operation column of an updating view's SUBSCRIBE.
pub const OP_COLUMN: &str = "op";
/// Change batches kept for subscribers of an updating view that read slower than the job
/// writes; one that falls further behind is told so and its stream ends.
const CHANGE_BACKLOG: usize = 256;
/// Rows per batch of an updating view's snapshot.
const SNAPSHOT_ROWS: usize = 65_536;

/// What a change row of an updating view does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A new row (a group appeared, or passed a HAVING filter).
    Insert,
    /// A row removed (a group left a HAVING filter, or a row without its group key changed).
    Delete,
    /// The old values of a group whose values changed; the next row is the new ones.
    UpdateBefore,
    /// The new values of a group, right after its `update_before`.
    UpdateAfter,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Delete => "delete",
            Op::UpdateBefore => "update_before",
            Op::UpdateAfter => "update_after",
        }
    }

    fn adds(self) -> bool {
        matches!(self, Op::Insert | Op::UpdateAfter)
    }
}

/// The rows of `schema` plus the operation column.
pub fn changelog_schema(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false)));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A row converter over every column of `schema`, if its types have a row format.
pub fn row_converter(schema: &SchemaRef) -> Result<RowConverter, EngineError> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    RowConverter::new(fields).map_err(|e| {
        EngineError::unsupported(format!(
            "an updating view cannot hold rows of these column types: {e}"
        ))
    })
}

#[derive(Debug, Default)]
struct ViewData {
    batches: Vec<RecordBatch>,
    rows: usize,
    /// Batches written by a checkpoint.
    stable: usize,
    /// Watermark (ns) of the job when the stable prefix was written.
    stable_watermark_ns: Option<i64>,
    /// Updating views: the current rows (row format) and how many times each is there.
    current: HashMap<Box<[u8]>, usize>,
    /// Updating views: `current` as batches, until the next change.
    snapshot: Option<Vec<RecordBatch>>,
}

/// The contents of a materialized view (or of a subscription's query).
#[derive(Debug)]
pub struct ViewStore {
    schema: SchemaRef,
    updating: bool,
    data: Mutex<ViewData>,
    /// Bumped on every change; subscribers wait on it.
    version: watch::Sender<u64>,
    /// Updating views: converts rows to and from the row format of `current`. (Planning
    /// refuses an updating view whose types have none, so it is only missing by mistake.)
    converter: Option<RowConverter>,
    /// Updating views: each micro-batch's changes, with the operation column, to subscribers.
    changes: broadcast::Sender<RecordBatch>,
}

impl ViewStore {
    pub fn new(schema: SchemaRef, updating: bool) -> Self {
        let converter = if updating {
            row_converter(&schema).ok()
        } else {
            None
        };
        Self {
            schema,
            updating,
            data: Mutex::new(ViewData::default()),
            version: watch::channel(0).0,
            converter,
            changes: broadcast::channel(CHANGE_BACKLOG).0,
        }
    }

    /// The schema of a SUBSCRIBE to this view: the rows, plus the operation column for an
    /// updating view (an append view's rows are all inserts, so they come as they are).
    pub fn subscribe_schema(&self) -> SchemaRef {
        if self.updating {
            changelog_schema(&self.schema)
        } else {
            self.schema.clone()
        }
    }

    fn converter(&self) -> Result<&RowConverter, EngineError> {
        self.converter
            .as_ref()
            .ok_or_else(|| EngineError::internal("updating view without a row converter"))
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

    /// Replaces every row (updating views, when recovering from a checkpoint).
    pub fn replace(&self, batches: Vec<RecordBatch>) -> Result<(), EngineError> {
        let converter = self.converter()?;
        let mut current: HashMap<Box<[u8]>, usize> = HashMap::default();
        let mut rows = 0;
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let converted = converter.convert_columns(batch.columns())?;
            for row in converted.iter() {
                *current.entry(Box::from(row.as_ref())).or_default() += 1;
            }
            rows += batch.num_rows();
        }
        {
            let mut data = self.data();
            data.rows = rows;
            data.stable = 0;
            data.current = current;
            data.snapshot = None;
        }
        self.bump();
        Ok(())
    }

    /// Applies the change from `before` (rows the view had for the groups a micro-batch
    /// touched) to `after` (their rows now): rows in both cancel, the others are retracted or
    /// inserted. With `key` (the columns holding the group key, when the view shows all of
    /// it), a retracted and an inserted row of the same key are paired as an update. Sends
    /// the changes to subscribers; returns how many change rows there were.
    pub fn apply_diff(
        &self,
        before: &[RecordBatch],
        after: &[RecordBatch],
        key: Option<&[usize]>,
    ) -> Result<usize, EngineError> {
        let converter = self.converter()?;
        let before = concat_nonempty(before)?;
        let after = concat_nonempty(after)?;
        let empty = RecordBatch::new_empty(self.schema.clone());
        let before = before.unwrap_or_else(|| empty.clone());
        let after = after.unwrap_or(empty);
        let old_rows = converter.convert_columns(before.columns())?;
        let new_rows = converter.convert_columns(after.columns())?;
        // Net count per row: −1 for each old occurrence, +1 for each new one.
        let mut net: HashMap<&[u8], i64> = HashMap::default();
        for row in old_rows.iter() {
            *net.entry(row.data()).or_default() -= 1;
        }
        for row in new_rows.iter() {
            *net.entry(row.data()).or_default() += 1;
        }
        let mut retracted = Vec::new();
        for (i, row) in old_rows.iter().enumerate() {
            if let Some(n) = net.get_mut(row.data()).filter(|n| **n < 0) {
                *n += 1;
                retracted.push(i);
            }
        }
        let mut inserted = Vec::new();
        for (i, row) in new_rows.iter().enumerate() {
            if let Some(n) = net.get_mut(row.data()).filter(|n| **n > 0) {
                *n -= 1;
                inserted.push(i);
            }
        }
        if retracted.is_empty() && inserted.is_empty() {
            return Ok(0);
        }
        // (side, row, op): side 0 is `before`, 1 is `after`.
        let mut changes: Vec<(usize, usize, Op)> = Vec::new();
        match key {
            Some(key) if !retracted.is_empty() && !inserted.is_empty() => {
                let key_of = |batch: &RecordBatch| -> Result<Rows, EngineError> {
                    let columns: Vec<ArrayRef> =
                        key.iter().map(|&c| batch.column(c).clone()).collect();
                    let fields = columns
                        .iter()
                        .map(|c| SortField::new(c.data_type().clone()))
                        .collect();
                    Ok(RowConverter::new(fields)?.convert_columns(&columns)?)
                };
                let old_keys = key_of(&before)?;
                let new_keys = key_of(&after)?;
                let mut open: HashMap<&[u8], Vec<usize>> = HashMap::default();
                for &i in retracted.iter().rev() {
                    open.entry(old_keys.row(i).data()).or_default().push(i);
                }
                let mut paired = vec![false; before.num_rows()];
                let mut lone_inserts = Vec::new();
                for &i in &inserted {
                    match open.get_mut(new_keys.row(i).data()).and_then(Vec::pop) {
                        Some(old) => {
                            paired[old] = true;
                            changes.push((0, old, Op::UpdateBefore));
                            changes.push((1, i, Op::UpdateAfter));
                        }
                        None => lone_inserts.push(i),
                    }
                }
                changes.extend(
                    retracted
                        .iter()
                        .filter(|&&i| !paired[i])
                        .map(|&i| (0, i, Op::Delete)),
                );
                changes.extend(lone_inserts.into_iter().map(|i| (1, i, Op::Insert)));
            }
            _ => {
                changes.extend(retracted.iter().map(|&i| (0, i, Op::Delete)));
                changes.extend(inserted.iter().map(|&i| (1, i, Op::Insert)));
            }
        }
        let indices: Vec<(usize, usize)> = changes.iter().map(|&(s, r, _)| (s, r)).collect();
        let mut columns = (0..self.schema.fields().len())
            .map(|c| {
                let sides: [&dyn Array; 2] = [before.column(c).as_ref(), after.column(c).as_ref()];
                interleave(&sides, &indices)
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        columns.push(Arc::new(StringArray::from_iter_values(
            changes.iter().map(|(_, _, op)| op.label()),
        )));
        let batch = RecordBatch::try_new(self.subscribe_schema(), columns)?;
        {
            let mut guard = self.data();
            let data = &mut *guard;
            for &(side, row, op) in &changes {
                let bytes = if side == 0 {
                    old_rows.row(row)
                } else {
                    new_rows.row(row)
                };
                let bytes = bytes.data();
                if op.adds() {
                    match data.current.get_mut(bytes) {
                        Some(n) => *n += 1,
                        None => {
                            data.current.insert(Box::from(bytes), 1);
                        }
                    }
                    data.rows += 1;
                } else if let Some(n) = data.current.get_mut(bytes) {
                    *n -= 1;
                    data.rows -= 1;
                    if *n == 0 {
                        data.current.remove(bytes);
                    }
                }
            }
            data.snapshot = None;
            // Sent under the lock, so a subscriber that took the snapshot under it sees each
            // change exactly once. No receiver is fine.
            let _ = self.changes.send(batch);
        }
        self.bump();
        Ok(changes.len())
    }

    /// Every row now.
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        if !self.updating {
            return self.data().batches.clone();
        }
        let mut data = self.data();
        match self.updating_snapshot(&mut data) {
            Ok(batches) => batches,
            Err(err) => {
                tracing::error!(error = %err, "could not read an updating view's rows");
                Vec::new()
            }
        }
    }

    /// The rows of an updating view, as batches (cached until the next change).
    fn updating_snapshot(&self, data: &mut ViewData) -> Result<Vec<RecordBatch>, EngineError> {
        if let Some(batches) = &data.snapshot {
            return Ok(batches.clone());
        }
        let converter = self.converter()?;
        let parser = converter.parser();
        let rows: Vec<&Box<[u8]>> = data
            .current
            .iter()
            .flat_map(|(row, n)| std::iter::repeat_n(row, *n))
            .collect();
        let mut batches = Vec::new();
        for part in rows.chunks(SNAPSHOT_ROWS) {
            let columns = converter.convert_rows(part.iter().map(|r| parser.parse(r)))?;
            // The row format gives back the types it stores; the view's may differ in
            // nullability or dictionary encoding.
            let columns = columns
                .into_iter()
                .zip(self.schema.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        Ok(c)
                    } else {
                        cast(&c, f.data_type())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            batches.push(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        data.snapshot = Some(batches.clone());
        Ok(batches)
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
    /// stream's reader stops. An updating view sends its rows once (op `insert`), then each
    /// micro-batch's changes.
    pub fn subscribe(self: &Arc<Self>) -> SendableRecordBatchStream {
        if self.updating {
            return self.subscribe_changes();
        }
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

/// Phases of an updating view's subscription.
enum Feed {
    Snapshot(Option<RecordBatch>, broadcast::Receiver<RecordBatch>),
    Live(broadcast::Receiver<RecordBatch>),
    Done,
}

impl ViewStore {
    fn subscribe_changes(self: &Arc<Self>) -> SendableRecordBatchStream {
        let schema = self.subscribe_schema();
        let start = {
            let mut data = self.data();
            // The snapshot and the receiver are taken under the lock changes are applied
            // under: the stream sees every change after the snapshot, once.
            let receiver = self.changes.subscribe();
            self.updating_snapshot(&mut data)
                .and_then(|rows| self.as_inserts(&rows))
                .map(|rows| Feed::Snapshot(rows, receiver))
        };
        let store = self.clone();
        let stream = futures::stream::unfold(Some((start, store)), |state| async move {
            let (feed, store) = state?;
            let mut feed = match feed {
                Ok(feed) => feed,
                Err(err) => return Some((Err(err.into()), None)),
            };
            loop {
                feed = match feed {
                    Feed::Snapshot(Some(rows), receiver) => {
                        return Some((Ok(rows), Some((Ok(Feed::Live(receiver)), store))))
                    }
                    Feed::Snapshot(None, receiver) => Feed::Live(receiver),
                    Feed::Live(mut receiver) => match receiver.recv().await {
                        Ok(batch) => {
                            return Some((Ok(batch), Some((Ok(Feed::Live(receiver)), store))))
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let err = datafusion::error::DataFusionError::Execution(format!(
                                "this subscriber read too slowly and missed {n} batches of                                  changes (at most {CHANGE_BACKLOG} are kept); subscribe again"
                            ));
                            return Some((Err(err), Some((Ok(Feed::Done), store))));
                        }
                        Err(broadcast::error::RecvError::Closed) => Feed::Done,
                    },
                    Feed::Done => return None,
                };
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }

    /// `rows` as one batch of inserts (None when there is no row).
    fn as_inserts(&self, rows: &[RecordBatch]) -> Result<Option<RecordBatch>, EngineError> {
        let Some(rows) = concat_nonempty(rows)? else {
            return Ok(None);
        };
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(Op::Insert.label(), rows.num_rows()),
        )));
        Ok(Some(RecordBatch::try_new(
            self.subscribe_schema(),
            columns,
        )?))
    }
}

/// The non-empty batches of `batches` as one (None when there is no row).
fn concat_nonempty(batches: &[RecordBatch]) -> Result<Option<RecordBatch>, EngineError> {
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    match batches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        many => Ok(Some(concat_batches(
            &many[0].schema(),
            many.iter().copied(),
        )?)),
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
