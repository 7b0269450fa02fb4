//! Continuous queries: materialized views, subscriptions and sinks, each run as a job.
//!
//! - [`statements`]: the SQL of continuous queries.
//! - [`plan`]: a query planned once, cut into the parts a job runs per micro-batch.
//! - [`job`]: the running job (reading, watermark, incremental aggregation, checkpoints).
//! - [`view`]: the rows of a materialized view, for queries and subscribers.
//! - [`checkpoint`]: the checkpoint files.
//! - [`ops`]: the engine's handling of the statements.
//!
//! See `docs/streaming.md` for the user's view and `docs/architecture.md` for the design.

mod checkpoint;
mod exec;
mod job;
mod ops;
mod plan;
mod state;
pub mod statements;
mod view;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use job::JobStatus;
pub use view::{MaterializedViewTable, ViewStore};

/// Server-wide defaults of continuous queries.
#[derive(Debug, Clone, Copy)]
pub struct StreamDefaults {
    /// How often jobs checkpoint (overridable per view with `checkpoint_interval`).
    pub checkpoint_interval: Duration,
    /// How long a partition may stay silent before it stops holding the watermark back.
    pub idle_timeout: Duration,
}

impl Default for StreamDefaults {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// What kind of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    MaterializedView,
    Subscription,
    Sink,
}

impl JobKind {
    pub fn label(self) -> &'static str {
        match self {
            JobKind::MaterializedView => "materialized view",
            JobKind::Subscription => "subscription",
            JobKind::Sink => "sink",
        }
    }
}

/// A registered job.
pub struct JobEntry {
    pub kind: JobKind,
    /// The source or view it reads.
    pub input: String,
    /// The query text.
    pub query: String,
    /// `append`, `windowed aggregate` or `updating aggregate`.
    pub mode: &'static str,
    pub status: Arc<Mutex<JobStatus>>,
    pub store: Option<Arc<ViewStore>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl JobEntry {
    /// A copy of the job's status.
    pub fn status(&self) -> JobStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Every running job, by name.
#[derive(Default)]
pub struct Streams {
    jobs: Mutex<BTreeMap<String, JobEntry>>,
    next_subscription: AtomicU64,
    pub defaults: StreamDefaults,
}

impl Streams {
    pub fn new(defaults: StreamDefaults) -> Self {
        Self {
            defaults,
            ..Default::default()
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, JobEntry>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, name: String, entry: JobEntry) {
        if let Some(old) = self.jobs().insert(name, entry) {
            let _ = old.stop.send(true);
        }
    }

    /// Stops the job `name` and waits (a few seconds at most) for it to finish.
    async fn stop(&self, name: &str) -> Option<JobEntry> {
        let mut entry = self.jobs().remove(name)?;
        let _ = entry.stop.send(true);
        if let Some(task) = entry.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        Some(entry)
    }

    /// Names of the jobs reading `input`.
    pub fn readers_of(&self, input: &str) -> Vec<String> {
        self.jobs()
            .iter()
            .filter(|(_, e)| e.input == input && e.kind != JobKind::Subscription)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `(name, kind, input, mode, query, status, rows)` of every job.
    pub fn list(&self) -> Vec<JobRow> {
        self.jobs()
            .iter()
            .map(|(name, e)| JobRow {
                name: name.clone(),
                kind: e.kind,
                input: e.input.clone(),
                mode: e.mode,
                query: e.query.clone(),
                status: e.status(),
                rows: e.store.as_ref().map(|s| s.rows()),
            })
            .collect()
    }

    /// The jobs of one kind.
    pub fn list_of(&self, kind: JobKind) -> Vec<JobRow> {
        self.list().into_iter().filter(|r| r.kind == kind).collect()
    }

    fn subscription_name(&self) -> String {
        let n = self.next_subscription.fetch_add(1, Ordering::Relaxed) + 1;
        format!("subscribe-{n}")
    }

    /// Stops every job (server shutdown).
    pub async fn stop_all(&self) {
        let names: Vec<String> = self.jobs().keys().cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
    }
}

/// One line of SHOW JOBS / SHOW MATERIALIZED VIEWS.
pub struct JobRow {
    pub name: String,
    pub kind: JobKind,
    pub input: String,
    pub mode: &'static str,
    pub query: String,
    pub status: JobStatus,
    pub rows: Option<usize>,
}
