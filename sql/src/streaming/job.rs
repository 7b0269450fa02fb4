//! A running continuous query: reads micro-batches, tracks the watermark, maintains aggregate
//! state, emits rows, checkpoints.
//!
//! One job is one tokio task. Each round it asks its input what is available per partition,
//! reads a bounded amount from every partition that has something (partitions concurrently),
//! runs the plan on those rows, advances the watermark, emits the windows it closed, and, when
//! the checkpoint interval has passed, writes a checkpoint. Memory is bounded: a round reads at
//! most [`ROUND_EVENTS`] events, and nothing is read ahead of processing, so a slow job slows
//! its consumer instead of growing a queue.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
use datafusion::arrow::compute::{cast, filter_record_batch, kernels::aggregate::max};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::aggregates::AggregateMode;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{collect, ExecutionPlan};
use freshet_connectors::sink::Sink;
use freshet_connectors::source::Split;
use futures::TryStreamExt;
use tokio::sync::watch;

use super::checkpoint::{self, Manifest};
use super::plan::{AggregatePlan, ContinuousPlan, PlanKind, StreamInput, WindowKey};
use super::state::KeyedState;
use super::view::ViewStore;
use crate::error::{EngineError, ErrorKind};
use crate::windows::WindowRole;

/// Events read per round, over all partitions.
pub const ROUND_EVENTS: i64 = 262_144;
/// Rows per batch read from a source.
const BATCH_ROWS: usize = 8192;
/// Row files a view may have before a checkpoint merges them into one.
const COMPACT_SEGMENTS: usize = 32;
/// Wait between rounds that found nothing new.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// A round that read fewer events than this waits [`LINGER`] before the next one, so a
/// trickle of events is read in small batches rather than one by one.
const LINGER_EVENTS: usize = 4096;
const LINGER: Duration = Duration::from_millis(20);

/// Settings of one job.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub checkpoint_interval: Duration,
    /// A partition with no new event for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Where checkpoints go; `None` for a job that does not survive a restart (SUBSCRIBE).
    pub dir: Option<PathBuf>,
}

/// What SHOW JOBS reports about a job.
#[derive(Debug, Clone, Default)]
pub struct JobStatus {
    pub state: String,
    pub events_in: u64,
    pub events_per_second: f64,
    pub watermark_ns: Option<i64>,
    /// Events available but not yet read, per partition.
    pub lag: BTreeMap<i32, i64>,
    pub late_rows: u64,
    pub last_checkpoint: Option<SystemTime>,
    pub checkpoints: u64,
    pub last_error: Option<String>,
}

/// Where a job's rows go.
pub enum JobOutput {
    View(Arc<ViewStore>),
    /// A sink: rows are written as they are produced and committed at each checkpoint, before
    /// the checkpoint itself is written.
    Sink(tokio::sync::Mutex<Box<dyn Sink>>),
}

/// How the watermark is derived from the input.
#[derive(Debug, Clone)]
enum InputWatermark {
    /// Max event time of this column per partition, minus a delay.
    Column {
        name: String,
        delay_ns: i64,
    },
    /// The upstream view's own watermark, minus an offset.
    Upstream {
        offset_ns: i64,
    },
    None,
}

/// A job and its state.
pub struct Job {
    name: String,
    plan: ContinuousPlan,
    output: JobOutput,
    settings: JobSettings,
    status: Arc<Mutex<JobStatus>>,
    input_watermark: InputWatermark,
    /// Next offset to read, per partition.
    positions: BTreeMap<i32, i64>,
    partition_max_ns: BTreeMap<i32, i64>,
    partition_last_data: BTreeMap<i32, Instant>,
    watermark_ns: Option<i64>,
    /// Aggregate state by (window, group key); `None` for a stateless query.
    state: Option<KeyedState>,
    epoch: u64,
    segments: Vec<String>,
    events_in: u64,
    late_rows: u64,
    dirty: bool,
}

fn engine_error(err: impl Into<EngineError>) -> EngineError {
    err.into()
}

/// Nanoseconds since the epoch of a timestamp array (NULL stays NULL).
pub(super) fn timestamps_ns(array: &dyn Array) -> Result<Int64Array, EngineError> {
    let ns = cast(array, &DataType::Timestamp(TimeUnit::Nanosecond, None)).map_err(engine_error)?;
    let ints = cast(&ns, &DataType::Int64).map_err(engine_error)?;
    Ok(ints
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .unwrap_or_else(|| Int64Array::from(Vec::<i64>::new())))
}

impl Job {
    pub fn new(
        name: &str,
        plan: ContinuousPlan,
        output: JobOutput,
        settings: JobSettings,
        status: Arc<Mutex<JobStatus>>,
    ) -> Result<Self, EngineError> {
        let input_watermark = input_watermark(&plan)?;
        let state = match &plan.kind {
            PlanKind::Aggregate(aggregate) => Some(KeyedState::new(
                aggregate.state_schema.clone(),
                aggregate.group_by.expr().len(),
                aggregate.window.clone(),
            )?),
            PlanKind::Stateless { .. } => None,
        };
        Ok(Self {
            name: name.to_string(),
            plan,
            output,
            settings,
            status,
            input_watermark,
            positions: BTreeMap::new(),
            partition_max_ns: BTreeMap::new(),
            partition_last_data: BTreeMap::new(),
            watermark_ns: None,
            state,
            epoch: 0,
            segments: Vec::new(),
            events_in: 0,
            late_rows: 0,
            dirty: false,
        })
    }

    fn set_status(&self, update: impl FnOnce(&mut JobStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        update(&mut status);
    }

    /// Loads the last checkpoint, if there is one, and rebuilds the output from it.
    pub async fn recover(&mut self) -> Result<(), EngineError> {
        let Some(dir) = self.settings.dir.clone() else {
            return Ok(());
        };
        let manifest = checkpoint::read_manifest(&dir)?.unwrap_or_default();
        self.epoch = manifest.epoch;
        self.positions = manifest.positions.clone();
        self.partition_max_ns = manifest.partition_max_ns.clone();
        self.watermark_ns = manifest.watermark_ns;
        self.events_in = manifest.events_in;
        self.late_rows = manifest.late_rows;
        self.segments = manifest.segments.clone();
        if let Some(state) = &mut self.state {
            state.clear();
            if let Some(file) = &manifest.state_file {
                state.upsert(checkpoint::read_batches(&dir.join(file))?)?;
            }
        }
        let mut rows = Vec::new();
        for segment in &self.segments {
            rows.extend(checkpoint::read_batches(&dir.join(segment))?);
        }
        checkpoint::remove_unlisted(&dir, &manifest);
        let contents = if self.plan.is_updating() {
            self.finalize_all().await?
        } else {
            rows
        };
        match &mut self.output {
            JobOutput::Sink(sink) => {
                let sink = sink.get_mut();
                // The destination may be ahead of our checkpoint: a commit succeeded and the
                // server died before writing the checkpoint. Its rows are there; skip them.
                let committed = sink.committed().await.map_err(EngineError::from)?;
                if let Some((epoch, metadata)) = committed {
                    if epoch > self.epoch {
                        let positions: BTreeMap<i32, i64> = serde_json::from_str(&metadata)
                            .map_err(|e| {
                                EngineError::internal(format!(
                                    "sink {} recorded unreadable metadata for epoch {epoch}: {e}",
                                    self.name
                                ))
                            })?;
                        tracing::info!(job = %self.name, epoch, "sink is ahead of the checkpoint; resuming after its last commit");
                        self.positions = positions;
                        self.epoch = epoch;
                    } else if epoch < self.epoch {
                        tracing::warn!(job = %self.name, sink_epoch = epoch, checkpoint_epoch = self.epoch, "the sink's destination is behind the checkpoint (was it reset?); rows of the missing epochs are not rewritten");
                    }
                }
            }
            JobOutput::View(store) => {
                if self.plan.is_updating() {
                    store.replace(contents)?;
                    store.mark_stable(0, self.watermark_ns);
                } else {
                    store.restore(contents, self.watermark_ns);
                }
            }
        }
        self.dirty = false;
        self.set_status(|s| {
            s.events_in = manifest.events_in;
            s.late_rows = manifest.late_rows;
            s.watermark_ns = manifest.watermark_ns;
            s.checkpoints = manifest.epoch;
        });
        if manifest.epoch > 0 {
            tracing::info!(job = %self.name, epoch = manifest.epoch, "resumed from checkpoint");
        }
        Ok(())
    }

    /// Runs until `stop` turns true. Errors reading the input are retried with a growing
    /// pause; an error in the query itself stops the job (SHOW JOBS shows it).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        self.set_status(|s| s.state = "running".to_string());
        let mut last_checkpoint = Instant::now();
        let mut rate_sample = (Instant::now(), self.events_in);
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                break;
            }
            let round = self.round().await;
            let events = match round {
                Ok(events) => {
                    backoff = Duration::from_millis(100);
                    if self
                        .status
                        .lock()
                        .map(|s| s.state != "running")
                        .unwrap_or(false)
                    {
                        self.set_status(|s| s.state = "running".to_string());
                    }
                    events
                }
                Err(RoundError::Input(err)) => {
                    tracing::warn!(job = %self.name, error = %err, "reading the input failed; retrying");
                    self.set_status(|s| {
                        s.state = "retrying".to_string();
                        s.last_error = Some(err.message().to_string());
                    });
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    if wait(&mut stop, backoff).await {
                        break;
                    }
                    continue;
                }
                Err(RoundError::Sink(err)) => {
                    tracing::warn!(job = %self.name, error = %err, "writing to the sink failed; going back to the last checkpoint");
                    self.set_status(|s| {
                        s.state = "retrying".to_string();
                        s.last_error = Some(err.message().to_string());
                    });
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    if wait(&mut stop, backoff).await {
                        break;
                    }
                    if let Err(err) = self.rewind().await {
                        self.set_status(|s| s.last_error = Some(err.message().to_string()));
                    }
                    continue;
                }
                Err(RoundError::Query(err)) => {
                    tracing::error!(job = %self.name, error = %err, "continuous query failed; job stopped");
                    self.set_status(|s| {
                        s.state = "failed".to_string();
                        s.last_error = Some(err.message().to_string());
                    });
                    return;
                }
            };
            let elapsed = rate_sample.0.elapsed();
            if elapsed >= Duration::from_secs(1) {
                let rate = (self.events_in - rate_sample.1) as f64 / elapsed.as_secs_f64();
                rate_sample = (Instant::now(), self.events_in);
                self.set_status(|s| s.events_per_second = rate);
            }
            if self.settings.dir.is_some()
                && self.dirty
                && last_checkpoint.elapsed() >= self.settings.checkpoint_interval
            {
                match self.checkpoint().await {
                    Ok(()) => last_checkpoint = Instant::now(),
                    Err(err) => {
                        tracing::error!(job = %self.name, error = %err, "checkpoint failed");
                        self.set_status(|s| s.last_error = Some(err.message().to_string()));
                        last_checkpoint = Instant::now();
                        if matches!(self.output, JobOutput::Sink(_)) {
                            // The sink dropped the epoch's rows: read them again.
                            if let Err(err) = self.rewind().await {
                                self.set_status(|s| s.last_error = Some(err.message().to_string()));
                            }
                        }
                    }
                }
            }
            let pause = match events {
                0 => IDLE_POLL,
                n if n < LINGER_EVENTS => LINGER,
                _ => Duration::ZERO,
            };
            if !pause.is_zero() && wait(&mut stop, pause).await {
                break;
            }
        }
        if self.settings.dir.is_some() && self.dirty {
            if let Err(err) = self.checkpoint().await {
                tracing::error!(job = %self.name, error = %err, "last checkpoint failed");
            }
        }
        self.set_status(|s| s.state = "stopped".to_string());
    }

    /// One round: read what is available, process it. Returns the number of events read.
    async fn round(&mut self) -> Result<usize, RoundError> {
        let batches = match self.plan.input.clone() {
            StreamInput::Source(handle) => self.read_source(&handle).await?,
            StreamInput::View { store, .. } => self.read_view(&store),
        };
        let events: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
        if events > 0 {
            self.events_in += events as u64;
            self.dirty = true;
            self.observe_event_times(&batches)
                .map_err(RoundError::Query)?;
            let rows: Vec<RecordBatch> = batches.into_iter().map(|(_, b)| b).collect();
            self.process(rows).await?;
        }
        self.advance_watermark();
        self.emit_closed().await?;
        let (events_in, late, watermark) = (self.events_in, self.late_rows, self.watermark_ns);
        self.set_status(|s| {
            s.events_in = events_in;
            s.late_rows = late;
            s.watermark_ns = watermark;
        });
        Ok(events)
    }

    async fn read_source(
        &mut self,
        handle: &crate::sources::SourceHandle,
    ) -> Result<Vec<(i32, RecordBatch)>, RoundError> {
        let splits = handle
            .source
            .positions()
            .await
            .map_err(|e| RoundError::Input(e.into()))?;
        let now = Instant::now();
        let mut lag = BTreeMap::new();
        let mut reads = Vec::new();
        let busy = splits
            .iter()
            .filter(|s| s.end > *self.positions.get(&s.partition).unwrap_or(&s.start))
            .count()
            .max(1) as i64;
        let budget = (ROUND_EVENTS / busy).max(1024);
        for split in &splits {
            self.partition_last_data
                .entry(split.partition)
                .or_insert(now);
            let position = *self.positions.entry(split.partition).or_insert(split.start);
            lag.insert(split.partition, (split.end - position).max(0));
            if split.end > position {
                let end = split.end.min(position + budget);
                reads.push(Split {
                    partition: split.partition,
                    start: position,
                    end,
                });
            }
        }
        self.set_status(|s| s.lag = lag);
        let source = handle.source.clone();
        let results = futures::future::join_all(reads.iter().map(|split| {
            let source = source.clone();
            let split = *split;
            async move {
                let batches: Vec<RecordBatch> =
                    source.read(split, None, BATCH_ROWS).try_collect().await?;
                Ok::<_, freshet_connectors::source::ConnectorError>((split, batches))
            }
        }))
        .await;
        let mut out = Vec::new();
        // Positions move only when every read of the round succeeded, so a failed round is
        // read again whole.
        let mut done = Vec::new();
        for result in results {
            let (split, batches) = result.map_err(|e| RoundError::Input(e.into()))?;
            done.push(split);
            out.extend(batches.into_iter().map(|b| (split.partition, b)));
        }
        for split in done {
            self.positions.insert(split.partition, split.end);
            if out
                .iter()
                .any(|(p, b)| *p == split.partition && b.num_rows() > 0)
            {
                self.partition_last_data
                    .insert(split.partition, Instant::now());
            }
        }
        Ok(out)
    }

    fn read_view(&mut self, store: &Arc<ViewStore>) -> Vec<(i32, RecordBatch)> {
        let position = *self.positions.get(&0).unwrap_or(&0) as usize;
        let (batches, upstream_watermark) = store.stable_from(position);
        self.positions.insert(0, (position + batches.len()) as i64);
        if let (InputWatermark::Upstream { offset_ns }, Some(w)) =
            (&self.input_watermark, upstream_watermark)
        {
            let candidate = w.saturating_sub(*offset_ns);
            self.partition_max_ns.insert(0, candidate);
        }
        self.set_status(|s| {
            s.lag = BTreeMap::from([(0, (store.stable_len() - position - batches.len()) as i64)])
        });
        batches.into_iter().map(|b| (0, b)).collect()
    }

    /// Updates the per-partition maximum event time.
    fn observe_event_times(&mut self, batches: &[(i32, RecordBatch)]) -> Result<(), EngineError> {
        let InputWatermark::Column { name, .. } = &self.input_watermark else {
            return Ok(());
        };
        for (partition, batch) in batches {
            let Some(column) = batch.column_by_name(name) else {
                continue;
            };
            let times = timestamps_ns(column.as_ref())?;
            if let Some(m) = max(&times) {
                let entry = self.partition_max_ns.entry(*partition).or_insert(m);
                *entry = (*entry).max(m);
            }
        }
        Ok(())
    }

    /// Advances the watermark from the partitions' largest event times (see
    /// [`watermark_candidate`]); it never goes back.
    fn advance_watermark(&mut self) {
        let delay = match &self.input_watermark {
            InputWatermark::Column { delay_ns, .. } => *delay_ns,
            InputWatermark::Upstream { .. } => 0,
            InputWatermark::None => return,
        };
        let idle = self.settings.idle_timeout;
        let mut partitions: Vec<i32> = self.partition_last_data.keys().copied().collect();
        for partition in self.partition_max_ns.keys() {
            if !partitions.contains(partition) {
                partitions.push(*partition);
            }
        }
        let states: Vec<PartitionTime> = partitions
            .iter()
            .map(|p| PartitionTime {
                max_ns: self.partition_max_ns.get(p).copied(),
                active: self
                    .partition_last_data
                    .get(p)
                    .is_none_or(|t| t.elapsed() < idle),
            })
            .collect();
        if let Some(w) = watermark_candidate(&states, delay) {
            if self.watermark_ns.is_none_or(|old| w > old) {
                self.watermark_ns = Some(w);
            }
        }
    }

    async fn process(&mut self, rows: Vec<RecordBatch>) -> Result<(), RoundError> {
        let output = self.compute(rows).await.map_err(RoundError::Query)?;
        match output {
            Computed::Append(rows) => self.emit(rows).await,
            Computed::Changes { before, after } => {
                if let (JobOutput::View(store), PlanKind::Aggregate(aggregate)) =
                    (&self.output, &self.plan.kind)
                {
                    store
                        .apply_diff(&before, &after, aggregate.view_key.as_deref())
                        .map_err(RoundError::Query)?;
                }
                Ok(())
            }
            Computed::Nothing => Ok(()),
        }
    }

    /// Runs the plan on a micro-batch.
    async fn compute(&mut self, rows: Vec<RecordBatch>) -> Result<Computed, EngineError> {
        self.plan.slot.set(rows);
        let ctx = self.plan.task_ctx.clone();
        match &self.plan.kind {
            PlanKind::Stateless { plan } => {
                let out = run_again(plan, ctx).await;
                self.plan.slot.set(Vec::new());
                Ok(Computed::Append(out?))
            }
            PlanKind::Aggregate(aggregate) => {
                let input = run_again(&aggregate.lower, ctx.clone()).await?;
                self.plan.slot.set(Vec::new());
                let input = match (&aggregate.window, self.watermark_ns) {
                    (Some(window), Some(watermark)) => {
                        let (kept, dropped) = drop_late(aggregate, window, watermark, input)?;
                        if dropped > 0 {
                            tracing::debug!(job = %self.name, watermark, dropped, "late rows dropped");
                        }
                        self.late_rows += dropped;
                        kept
                    }
                    _ => input,
                };
                // The micro-batch's partial state, one row per (window, key) it contains …
                let delta = run(
                    aggregate.exec(
                        AggregateMode::Partial,
                        aggregate.input_schema.clone(),
                        input,
                    )?,
                    ctx.clone(),
                )
                .await?;
                if delta.iter().all(|b| b.num_rows() == 0) {
                    return Ok(Computed::Nothing);
                }
                // … merged with those keys' current state only.
                let state = self
                    .state
                    .as_mut()
                    .ok_or_else(|| EngineError::internal("aggregate job without state"))?;
                let old = state.lookup(&delta)?;
                let mut merged = delta;
                merged.extend(old.clone());
                let new = run(
                    aggregate.exec(
                        AggregateMode::PartialReduce,
                        aggregate.state_schema.clone(),
                        merged,
                    )?,
                    ctx.clone(),
                )
                .await?;
                state.upsert(new.clone())?;
                if aggregate.window.is_none() {
                    // The view's rows of those keys before and after: their difference is
                    // the micro-batch's change.
                    let before = match old {
                        Some(old) => self.finalize(vec![old]).await?,
                        None => Vec::new(),
                    };
                    let after = self.finalize(new).await?;
                    return Ok(Computed::Changes { before, after });
                }
                Ok(Computed::Nothing)
            }
        }
    }

    /// Emits the windows the watermark closed.
    async fn emit_closed(&mut self) -> Result<(), RoundError> {
        let PlanKind::Aggregate(aggregate) = &self.plan.kind else {
            return Ok(());
        };
        let (Some(_), Some(watermark)) = (&aggregate.window, self.watermark_ns) else {
            return Ok(());
        };
        let closed_rows = match &mut self.state {
            Some(state) => state.take_closed(watermark).map_err(RoundError::Query)?,
            None => Vec::new(),
        };
        if closed_rows.is_empty() {
            return Ok(());
        }
        let rows = self
            .finalize(closed_rows)
            .await
            .map_err(RoundError::Query)?;
        self.dirty = true;
        self.emit(rows).await
    }

    /// Final aggregate of `state` rows, through the upper part of the plan.
    async fn finalize(&self, state: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, EngineError> {
        let PlanKind::Aggregate(aggregate) = &self.plan.kind else {
            return Ok(Vec::new());
        };
        let ctx = self.plan.task_ctx.clone();
        let finals = run(
            aggregate.exec(AggregateMode::Final, aggregate.state_schema.clone(), state)?,
            ctx.clone(),
        )
        .await?;
        aggregate.upper_slot.set(finals);
        let rows = run_again(&aggregate.upper, ctx).await;
        aggregate.upper_slot.set(Vec::new());
        rows
    }

    async fn finalize_all(&self) -> Result<Vec<RecordBatch>, EngineError> {
        let rows = match &self.state {
            Some(state) => state.all()?,
            None => Vec::new(),
        };
        self.finalize(rows).await
    }

    async fn emit(&mut self, rows: Vec<RecordBatch>) -> Result<(), RoundError> {
        match &mut self.output {
            JobOutput::View(store) => store.append(rows),
            JobOutput::Sink(sink) => {
                let sink = sink.get_mut();
                for batch in rows.iter().filter(|b| b.num_rows() > 0) {
                    sink.write(batch)
                        .await
                        .map_err(|e| RoundError::Sink(e.into()))?;
                }
            }
        }
        Ok(())
    }

    /// Goes back to the last checkpoint (after a sink lost the rows of an epoch).
    async fn rewind(&mut self) -> Result<(), EngineError> {
        if let JobOutput::Sink(sink) = &mut self.output {
            sink.get_mut().abort().await.map_err(EngineError::from)?;
        }
        if let Some(state) = &mut self.state {
            state.clear();
        }
        self.recover().await
    }

    /// Writes the checkpoint: new view rows, aggregate state, then the manifest that makes
    /// them current.
    async fn checkpoint(&mut self) -> Result<(), EngineError> {
        let Some(dir) = self.settings.dir.clone() else {
            return Ok(());
        };
        let epoch = self.epoch + 1;
        let started = Instant::now();
        let mut segments = self.segments.clone();
        let mut stable = None;
        match &mut self.output {
            JobOutput::Sink(sink) => {
                let metadata = serde_json::to_string(&self.positions)
                    .map_err(|e| EngineError::internal(e.to_string()))?;
                sink.get_mut()
                    .commit(epoch, &metadata)
                    .await
                    .map_err(EngineError::from)?;
            }
            JobOutput::View(store) => {
                if !self.plan.is_updating() {
                    let (len, rows) = store.unstable();
                    if !rows.is_empty() {
                        let file = format!("rows-{epoch:010}.arrow");
                        if segments.len() >= COMPACT_SEGMENTS {
                            // Compaction: one file with every row replaces the segments.
                            let all = store.snapshot();
                            let all = &all[..len.min(all.len())];
                            checkpoint::write_batches(&dir.join(&file), &store.schema(), all)?;
                            segments.clear();
                        } else {
                            checkpoint::write_batches(&dir.join(&file), &store.schema(), &rows)?;
                        }
                        segments.push(file);
                    }
                    stable = Some(len);
                }
            }
        }
        let mut state_figures = None;
        let state_file = match &self.plan.kind {
            PlanKind::Aggregate(aggregate) => {
                let file = format!("state-{epoch:010}.arrow");
                let rows = match &self.state {
                    Some(state) => state.all()?,
                    None => Vec::new(),
                };
                checkpoint::write_batches(&dir.join(&file), &aggregate.state_schema, &rows)?;
                let written = std::fs::metadata(dir.join(&file)).map_or(0, |m| m.len());
                if let Some(state) = &self.state {
                    state_figures = Some((state.len(), state.memory_bytes(), written));
                }
                Some(file)
            }
            PlanKind::Stateless { .. } => None,
        };
        let manifest = Manifest {
            epoch,
            positions: self.positions.clone(),
            partition_max_ns: self.partition_max_ns.clone(),
            watermark_ns: self.watermark_ns,
            events_in: self.events_in,
            late_rows: self.late_rows,
            segments: segments.clone(),
            state_file,
            written_at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        };
        checkpoint::write_manifest(&dir, &manifest)?;
        checkpoint::remove_unlisted(&dir, &manifest);
        self.epoch = epoch;
        self.segments = segments;
        self.dirty = false;
        if let (Some(len), JobOutput::View(store)) = (stable, &self.output) {
            store.mark_stable(len, self.watermark_ns);
        }
        self.set_status(|s| {
            s.last_checkpoint = Some(SystemTime::now());
            s.checkpoints = epoch;
        });
        let checkpoint_ms = started.elapsed().as_millis() as u64;
        match state_figures {
            Some((keys, in_memory, written)) => tracing::debug!(
                job = %self.name, epoch, checkpoint_ms, state_keys = keys,
                state_bytes_in_memory = in_memory, state_bytes_written = written,
                "checkpoint written"
            ),
            None => tracing::debug!(job = %self.name, epoch, checkpoint_ms, "checkpoint written"),
        }
        Ok(())
    }
}

/// What the watermark knows of one partition.
#[derive(Debug, Clone, Copy)]
struct PartitionTime {
    /// Largest event time seen, if any event was.
    max_ns: Option<i64>,
    /// False once the partition has been silent for `idle_timeout`.
    active: bool,
}

/// The watermark the partitions allow: min over partitions of (max event time − delay).
/// A silent partition is left out: one that never had an event stops holding the watermark
/// back, one that had events stops holding back the others. When every partition with events
/// is silent, they all count again (nothing is being held back by anyone; their minimum is the
/// watermark as if they were active). An active partition without events yet holds it (None).
fn watermark_candidate(partitions: &[PartitionTime], delay_ns: i64) -> Option<i64> {
    if partitions.iter().any(|p| p.active && p.max_ns.is_none()) {
        return None;
    }
    let active = partitions
        .iter()
        .filter(|p| p.active)
        .filter_map(|p| p.max_ns)
        .min();
    let any = partitions.iter().filter_map(|p| p.max_ns).min();
    active.or(any).map(|m| m.saturating_sub(delay_ns))
}

/// What a micro-batch produced.
enum Computed {
    /// Rows to append (stateless queries).
    Append(Vec<RecordBatch>),
    /// Non-windowed aggregates: the view's rows of the groups the micro-batch touched, before
    /// and after it.
    Changes {
        before: Vec<RecordBatch>,
        after: Vec<RecordBatch>,
    },
    Nothing,
}

/// Why a round failed.
enum RoundError {
    /// Reading the input: retried.
    Input(EngineError),
    /// Writing to the sink: the job goes back to its last checkpoint and retries.
    Sink(EngineError),
    /// Running the query: the job stops.
    Query(EngineError),
}

/// Waits `pause` or until stopped; true when stopped.
async fn wait(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

/// Runs a plan that is executed once per micro-batch. Operators that keep what they computed
/// in the plan itself (a hash join's build side, a cross join's left table) are reset first,
/// or every execution would reuse the first micro-batch's.
async fn run_again(
    plan: &Arc<dyn ExecutionPlan>,
    ctx: Arc<datafusion::execution::TaskContext>,
) -> Result<Vec<RecordBatch>, EngineError> {
    let plan = reset_plan_states(plan.clone())?;
    Ok(collect(plan, ctx).await?)
}

async fn run(
    plan: Arc<dyn ExecutionPlan>,
    ctx: Arc<datafusion::execution::TaskContext>,
) -> Result<Vec<RecordBatch>, EngineError> {
    Ok(collect(plan, ctx).await?)
}

/// Drops input rows whose window the watermark has already closed; returns the rows kept and
/// how many were dropped.
fn drop_late(
    aggregate: &AggregatePlan,
    window: &WindowKey,
    watermark: i64,
    input: Vec<RecordBatch>,
) -> Result<(Vec<RecordBatch>, u64), EngineError> {
    let (expr, _) = &aggregate.group_by.expr()[window.index];
    let mut kept = Vec::with_capacity(input.len());
    let mut dropped = 0;
    for batch in input {
        let values = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let open = open_mask(&values, window, watermark)?;
        let late = batch.num_rows() - open.true_count();
        if late == 0 {
            kept.push(batch);
        } else {
            dropped += late as u64;
            kept.push(filter_record_batch(&batch, &open)?);
        }
    }
    Ok((kept, dropped))
}

/// True for rows whose window is still open at `watermark` (window end > watermark).
fn open_mask(
    values: &dyn Array,
    window: &WindowKey,
    watermark: i64,
) -> Result<BooleanArray, EngineError> {
    let ns = timestamps_ns(values)?;
    let offset = match window.role {
        WindowRole::Start => window.spec.size_ns(),
        WindowRole::End => 0,
    };
    Ok(ns
        .iter()
        .map(|v| Some(v.is_none_or(|v| v.saturating_add(offset) > watermark)))
        .collect())
}

/// The watermark rule of a plan's input.
fn input_watermark(plan: &ContinuousPlan) -> Result<InputWatermark, EngineError> {
    match &plan.input {
        StreamInput::Source(handle) => match &handle.watermark {
            Some(w) => Ok(InputWatermark::Column {
                name: w.column.clone(),
                delay_ns: w.delay_ms.saturating_mul(1_000_000),
            }),
            None if plan.window().is_some() => Err(EngineError::new(
                ErrorKind::InvalidStatement,
                format!(
                    "source {} has no watermark, so its windows would never close; declare one \
                     with CREATE SOURCE {} (…, WATERMARK FOR <time column> AS <time column> - \
                     INTERVAL '5 seconds') WITH (…)",
                    handle.name, handle.name
                ),
            )),
            None => Ok(InputWatermark::None),
        },
        StreamInput::View { name, store } => {
            let Some(window) = plan.window() else {
                return Ok(InputWatermark::Upstream { offset_ns: 0 });
            };
            let schema = store.schema();
            let upstream = schema
                .field_with_name(window.spec.time_column())
                .ok()
                .and_then(crate::windows::window_column);
            match upstream {
                Some(column) => Ok(InputWatermark::Upstream {
                    offset_ns: match column.role {
                        WindowRole::End => 0,
                        WindowRole::Start => column.spec.size_ns(),
                    },
                }),
                None => Err(EngineError::new(
                    ErrorKind::InvalidStatement,
                    format!(
                        "windows over materialized view {name} must use its window_start or \
                         window_end column as time column, whose progress its watermark tells"
                    ),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(max_ns: Option<i64>, active: bool) -> PartitionTime {
        PartitionTime { max_ns, active }
    }

    #[test]
    fn the_watermark_is_the_slowest_partition_minus_the_delay() {
        let parts = [p(Some(100), true), p(Some(70), true), p(Some(90), true)];
        assert_eq!(watermark_candidate(&parts, 10), Some(60));
    }

    #[test]
    fn an_active_partition_without_events_holds_it_until_idle() {
        assert_eq!(
            watermark_candidate(&[p(Some(100), true), p(None, true)], 0),
            None
        );
        assert_eq!(
            watermark_candidate(&[p(Some(100), true), p(None, false)], 0),
            Some(100)
        );
    }

    #[test]
    fn idle_partitions_stop_holding_back_the_active_ones() {
        let parts = [p(Some(100), true), p(Some(20), false)];
        assert_eq!(watermark_candidate(&parts, 5), Some(95));
        // Everyone silent: the minimum over partitions with events, as if active.
        let parts = [p(Some(100), false), p(Some(20), false), p(None, false)];
        assert_eq!(watermark_candidate(&parts, 5), Some(15));
        assert_eq!(watermark_candidate(&[], 5), None);
    }

    #[test]
    fn windows_are_open_until_the_watermark_reaches_their_end() {
        use datafusion::arrow::array::TimestampNanosecondArray;
        let spec = crate::windows::WindowSpec::tumble(
            datafusion::common::TableReference::bare("t"),
            "ts",
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
            10,
        )
        .unwrap();
        let starts = TimestampNanosecondArray::from(vec![Some(0), Some(10), None]);
        let window = WindowKey {
            index: 0,
            role: WindowRole::Start,
            spec,
        };
        // Window [0, 10) closes at watermark 10; [10, 20) is still open; NULL stays.
        let open = open_mask(&starts, &window, 10).unwrap();
        assert_eq!(open, BooleanArray::from(vec![false, true, true]));
        let ends = TimestampNanosecondArray::from(vec![Some(10), Some(20)]);
        let window = WindowKey {
            role: WindowRole::End,
            ..window
        };
        let open = open_mask(&ends, &window, 9).unwrap();
        assert_eq!(open, BooleanArray::from(vec![true, true]));
    }
}
