//! The aggregate state of a job, keyed by (window, group key) and updated in place.
//!
//! A state row is a row of the aggregation's partial-state schema: the group key columns
//! (the window bound among them, for a windowed aggregate) followed by the accumulators'
//! partial state. DataFusion computes those rows (`Partial` over a micro-batch, `PartialReduce`
//! to merge a key's old and new partial states), so any aggregate with a partial state works;
//! this module only stores them and finds them again by key:
//!
//! - the rows live in immutable Arrow batches (*chunks*), as produced by DataFusion;
//! - an index maps each key (the group columns in Arrow's row format, which hashes and
//!   compares as bytes) to its current row in a chunk. Updating a key stores its new row in a
//!   new chunk and points the index there; the old row becomes garbage, and a chunk whose rows
//!   are all garbage is dropped. When garbage outweighs the live rows the live rows are copied
//!   into fresh chunks (amortised O(1) per update);
//! - the index is split by window end (a `BTreeMap` of windows, one hash map of keys each, and
//!   one map for keys without a window), so closing the windows the watermark passed takes
//!   their keys out without looking at the others.
//!
//! A micro-batch thus costs the keys it contains (a hash look-up each, and DataFusion's
//! vectorised merge of those rows), not the number of keys held.
//!
//! Keys are bytes, so the state can later be partitioned by a hash of them across workers,
//! and every chunk holds only rows written since it was made, so the chunks made since a
//! checkpoint (plus the keys removed) are exactly what changed: the basis of incremental
//! checkpoints.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::HashMap;

use super::plan::WindowKey;
use crate::error::EngineError;
use crate::windows::WindowRole;

/// Rows per batch handed out by [`KeyedState::all`] and [`KeyedState::take_closed`].
const OUT_ROWS: usize = 65_536;
/// Garbage rows tolerated beyond the live ones before compacting.
const COMPACT_SLACK: usize = 65_536;

/// Where a key's current state row is.
#[derive(Debug, Clone, Copy)]
struct Slot {
    chunk: u32,
    row: u32,
}

type KeyMap = HashMap<Box<[u8]>, Slot>;

#[derive(Debug)]
struct Chunk {
    batch: RecordBatch,
    /// Rows of `batch` some key still points to.
    live: usize,
}

/// Aggregate state of one job, by (window, group key).
#[derive(Debug)]
pub struct KeyedState {
    schema: SchemaRef,
    group_len: usize,
    window: Option<WindowKey>,
    converter: RowConverter,
    chunks: Vec<Option<Chunk>>,
    free_chunks: Vec<u32>,
    /// Keys by window end (ns).
    windows: BTreeMap<i64, KeyMap>,
    /// Keys of a non-windowed aggregate, and of rows whose window bound is NULL (never closed).
    unbounded: KeyMap,
    live: usize,
    /// Rows held in chunks, live or not.
    stored: usize,
}

impl KeyedState {
    /// Empty state for rows of `schema`, whose first `group_len` columns are the group key.
    pub fn new(
        schema: SchemaRef,
        group_len: usize,
        window: Option<WindowKey>,
    ) -> Result<Self, EngineError> {
        let fields = schema
            .fields()
            .iter()
            .take(group_len)
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(|e| {
            EngineError::unsupported(format!(
                "the GROUP BY keys of this query cannot be used as state keys: {e}"
            ))
        })?;
        Ok(Self {
            schema,
            group_len,
            window,
            converter,
            chunks: Vec::new(),
            free_chunks: Vec::new(),
            windows: BTreeMap::new(),
            unbounded: KeyMap::default(),
            live: 0,
            stored: 0,
        })
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Bytes of the chunks and the index, roughly.
    pub fn memory_bytes(&self) -> usize {
        let chunks: usize = self
            .chunks
            .iter()
            .flatten()
            // Chunks are often slices of one larger output buffer: count the slices.
            .flat_map(|c| c.batch.columns().iter())
            .map(|a| a.to_data().get_slice_memory_size().unwrap_or(0))
            .sum();
        let maps = std::iter::once(&self.unbounded).chain(self.windows.values());
        let index: usize = maps
            .map(|m| {
                m.capacity() * (std::mem::size_of::<(Box<[u8]>, Slot)>() + 1)
                    + m.keys().map(|k| k.len()).sum::<usize>()
            })
            .sum();
        chunks + index
    }

    fn key_rows(&self, batch: &RecordBatch) -> Result<Rows, EngineError> {
        Ok(self
            .converter
            .convert_columns(&batch.columns()[..self.group_len])?)
    }

    /// The window end (ns) of each row, when the aggregate is windowed.
    fn window_ends(&self, batch: &RecordBatch) -> Result<Option<Vec<Option<i64>>>, EngineError> {
        let Some(window) = &self.window else {
            return Ok(None);
        };
        let offset = match window.role {
            WindowRole::Start => window.spec.size_ns(),
            WindowRole::End => 0,
        };
        let ns = super::job::timestamps_ns(batch.column(window.index).as_ref())?;
        Ok(Some(
            ns.iter()
                .map(|v| v.map(|v| v.saturating_add(offset)))
                .collect(),
        ))
    }

    fn map(&self, end: Option<i64>) -> Option<&KeyMap> {
        match end {
            None => Some(&self.unbounded),
            Some(end) => self.windows.get(&end),
        }
    }

    fn map_mut(&mut self, end: Option<i64>) -> &mut KeyMap {
        match end {
            None => &mut self.unbounded,
            Some(end) => self.windows.entry(end).or_default(),
        }
    }

    /// The current state rows of the keys in `batches` (state rows) that have one, each key
    /// once even if `batches` has it several times (a partial aggregation may pass rows
    /// through ungrouped; merging a key's old state twice would count it twice).
    pub fn lookup(&self, batches: &[RecordBatch]) -> Result<Option<RecordBatch>, EngineError> {
        let mut slots = Vec::new();
        let mut seen: datafusion::common::HashSet<(u32, u32)> = Default::default();
        for batch in batches {
            let rows = self.key_rows(batch)?;
            let ends = self.window_ends(batch)?;
            for i in 0..batch.num_rows() {
                let end = ends.as_ref().and_then(|e| e[i]);
                if let Some(slot) = self.map(end).and_then(|m| m.get(rows.row(i).as_ref())) {
                    if seen.insert((slot.chunk, slot.row)) {
                        slots.push(*slot);
                    }
                }
            }
        }
        self.gather(&slots)
    }

    /// The rows at `slots`, in that order, as one batch.
    fn gather(&self, slots: &[Slot]) -> Result<Option<RecordBatch>, EngineError> {
        if slots.is_empty() {
            return Ok(None);
        }
        let mut position: HashMap<u32, usize> = HashMap::default();
        let mut used: Vec<&RecordBatch> = Vec::new();
        let mut indices = Vec::with_capacity(slots.len());
        for slot in slots {
            let at = match position.get(&slot.chunk) {
                Some(at) => *at,
                None => {
                    // A key always points into a live chunk; anything else is a bug here.
                    let chunk = self.chunks[slot.chunk as usize].as_ref().ok_or_else(|| {
                        EngineError::internal("aggregate state points to a dropped chunk")
                    })?;
                    used.push(&chunk.batch);
                    position.insert(slot.chunk, used.len() - 1);
                    used.len() - 1
                }
            };
            indices.push((at, slot.row as usize));
        }
        let columns = (0..self.schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = used.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, &indices)
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let schema = used[0].schema();
        Ok(Some(RecordBatch::try_new(schema, columns)?))
    }

    /// Stores `batches` (state rows) as the keys' current state, replacing what they had.
    pub fn upsert(&mut self, batches: Vec<RecordBatch>) -> Result<(), EngineError> {
        for batch in batches {
            self.upsert_batch(batch)?;
        }
        if self.stored > 2 * self.live + COMPACT_SLACK {
            self.compact()?;
        }
        Ok(())
    }

    fn upsert_batch(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let rows = self.key_rows(&batch)?;
        let ends = self.window_ends(&batch)?;
        let chunk = Chunk { batch, live: n };
        let id = match self.free_chunks.pop() {
            Some(id) => {
                self.chunks[id as usize] = Some(chunk);
                id
            }
            None => {
                self.chunks.push(Some(chunk));
                (self.chunks.len() - 1) as u32
            }
        };
        self.stored += n;
        for i in 0..n {
            let end = ends.as_ref().and_then(|e| e[i]);
            let slot = Slot {
                chunk: id,
                row: i as u32,
            };
            let key = rows.row(i);
            let map = self.map_mut(end);
            // Replacing a key's row is the common case: no new key allocation for it.
            match map.get_mut(key.as_ref()) {
                Some(current) => {
                    let old = std::mem::replace(current, slot);
                    self.release(old);
                }
                None => {
                    map.insert(Box::from(key.as_ref()), slot);
                    self.live += 1;
                }
            }
        }
        Ok(())
    }

    /// Marks the row at `slot` garbage, dropping its chunk when nothing points there anymore.
    fn release(&mut self, slot: Slot) {
        let id = slot.chunk as usize;
        if let Some(chunk) = self.chunks[id].as_mut() {
            chunk.live -= 1;
            if chunk.live == 0 {
                self.stored -= chunk.batch.num_rows();
                self.chunks[id] = None;
                self.free_chunks.push(slot.chunk);
            }
        }
    }

    /// Removes the windows the watermark closed (end ≤ `watermark`) and returns their rows.
    pub fn take_closed(&mut self, watermark: i64) -> Result<Vec<RecordBatch>, EngineError> {
        if self.windows.is_empty() {
            return Ok(Vec::new());
        }
        let open = self.windows.split_off(&watermark.saturating_add(1));
        let closed = std::mem::replace(&mut self.windows, open);
        let slots: Vec<Slot> = closed.values().flat_map(|m| m.values().copied()).collect();
        let mut out = Vec::new();
        for part in slots.chunks(OUT_ROWS) {
            out.extend(self.gather(part)?);
        }
        self.live -= slots.len();
        for slot in slots {
            self.release(slot);
        }
        Ok(out)
    }

    /// Every state row.
    pub fn all(&self) -> Result<Vec<RecordBatch>, EngineError> {
        let slots: Vec<Slot> = std::iter::once(&self.unbounded)
            .chain(self.windows.values())
            .flat_map(|m| m.values().copied())
            .collect();
        let mut out = Vec::new();
        for part in slots.chunks(OUT_ROWS) {
            out.extend(self.gather(part)?);
        }
        Ok(out)
    }

    /// Copies the live rows into fresh chunks, dropping the garbage.
    fn compact(&mut self) -> Result<(), EngineError> {
        let all = self.all()?;
        self.clear();
        for batch in all {
            self.upsert_batch(batch)?;
        }
        Ok(())
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.free_chunks.clear();
        self.windows.clear();
        self.unbounded.clear();
        self.live = 0;
        self.stored = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]))
    }

    fn batch(keys: &[i64], values: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(keys.to_vec())),
                Arc::new(Int64Array::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    fn contents(state: &KeyedState) -> BTreeMap<i64, i64> {
        let mut out = BTreeMap::new();
        for b in state.all().unwrap() {
            let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                assert!(
                    out.insert(k.value(i), v.value(i)).is_none(),
                    "one row per key"
                );
            }
        }
        out
    }

    #[test]
    fn upserts_replace_a_keys_row_and_lookups_find_only_known_keys() {
        let mut state = KeyedState::new(schema(), 1, None).unwrap();
        state
            .upsert(vec![batch(&[1, 2, 3], &[10, 20, 30])])
            .unwrap();
        state.upsert(vec![batch(&[2, 4], &[21, 40])]).unwrap();
        assert_eq!(state.len(), 4);
        assert_eq!(
            contents(&state),
            BTreeMap::from([(1, 10), (2, 21), (3, 30), (4, 40)])
        );
        let found = state
            .lookup(&[batch(&[4, 9, 1], &[0, 0, 0])])
            .unwrap()
            .unwrap();
        assert_eq!(found, batch(&[4, 1], &[40, 10]));
        assert!(state.lookup(&[batch(&[9], &[0])]).unwrap().is_none());
    }

    #[test]
    fn superseded_chunks_are_dropped_and_compaction_keeps_every_key() {
        let mut state = KeyedState::new(schema(), 1, None).unwrap();
        let keys: Vec<i64> = (0..1000).collect();
        for round in 0..200 {
            // Every round rewrites half the keys.
            let half: Vec<i64> = keys
                .iter()
                .copied()
                .filter(|k| k % 2 == round % 2)
                .collect();
            let values: Vec<i64> = half.iter().map(|k| k * 1000 + round).collect();
            state.upsert(vec![batch(&half, &values)]).unwrap();
        }
        assert_eq!(state.len(), 1000);
        let all = contents(&state);
        assert_eq!(all.len(), 1000);
        assert_eq!(all[&0], 198);
        assert_eq!(all[&1], 1000 + 199);
        assert!(state.stored <= 2 * state.live + COMPACT_SLACK);
        assert!(state.chunks.iter().flatten().count() <= 2);
    }

    #[test]
    fn closing_windows_takes_out_only_their_keys() {
        let spec = crate::windows::WindowSpec::tumble(
            datafusion::common::TableReference::bare("t"),
            "ts",
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
            10,
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "start",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new("k", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let rows = |starts: Vec<Option<i64>>, keys: Vec<i64>| {
            let n = keys.len() as i64;
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(TimestampNanosecondArray::from(starts)),
                    Arc::new(Int64Array::from(keys)),
                    Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
                ],
            )
            .unwrap()
        };
        let window = WindowKey {
            index: 0,
            role: WindowRole::Start,
            spec,
        };
        let mut state = KeyedState::new(schema.clone(), 2, Some(window)).unwrap();
        state
            .upsert(vec![rows(
                vec![Some(0), Some(0), Some(10), None],
                vec![1, 2, 1, 1],
            )])
            .unwrap();
        assert_eq!(state.len(), 4);
        // Window [0, 10) ends at 10: still open at 9, closed at 10.
        assert!(state.take_closed(9).unwrap().is_empty());
        let closed = state.take_closed(10).unwrap();
        assert_eq!(closed.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert_eq!(state.len(), 2);
        // The NULL window never closes.
        state.take_closed(i64::MAX).unwrap();
        assert_eq!(state.len(), 1);
    }
}
