//! The engine's handling of continuous-query statements.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::TableReference;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use tokio::sync::watch;

use super::job::{Job, JobOutput, JobSettings};
use super::plan::plan_continuous;
use super::statements::{
    parse_duration, CreateMaterializedView, CreateSink, StreamStatement, SubscribeTarget,
};
use super::view::{MaterializedViewTable, ViewStore};
use super::{JobEntry, JobKind, JobStatus};
use crate::catalog::{Entry, EntryKind};
use crate::engine::{key_reference, table_key, Engine, Output};
use crate::error::{EngineError, ErrorKind};
use crate::session::Session;

/// Options of CREATE MATERIALIZED VIEW.
const VIEW_OPTIONS: &str = "checkpoint_interval, idle_timeout";

impl Engine {
    /// Runs a statement about continuous queries.
    pub(crate) async fn execute_stream(
        &self,
        session: &Session,
        statement: &StreamStatement,
        sql: &str,
    ) -> Result<Output, EngineError> {
        match statement {
            StreamStatement::CreateMaterializedView(create) => {
                self.create_materialized_view(session, create, sql).await
            }
            StreamStatement::DropMaterializedView { name, if_exists } => {
                self.drop_materialized_view(session, name, *if_exists).await
            }
            StreamStatement::ShowMaterializedViews => self.show_materialized_views(),
            StreamStatement::ShowJobs => self.show_jobs(),
            StreamStatement::Subscribe(target) => self.subscribe(session, target).await,
            StreamStatement::CreateSink(create) => self.create_sink(session, create, sql).await,
            StreamStatement::DropSink { name, if_exists } => self.drop_sink(name, *if_exists).await,
            StreamStatement::ShowSinks => self.show_sinks(),
        }
    }

    /// The schema of a statement's rows, for Describe.
    pub(crate) async fn stream_statement_schema(
        &self,
        session: &Session,
        statement: &StreamStatement,
    ) -> Result<Option<SchemaRef>, EngineError> {
        Ok(match statement {
            StreamStatement::ShowMaterializedViews => Some(show_views_schema()),
            StreamStatement::ShowJobs => Some(show_jobs_schema()),
            StreamStatement::ShowSinks => Some(show_sinks_schema()),
            StreamStatement::Subscribe(target) => {
                if let Some(store) = self.subscribed_view(target) {
                    return Ok(Some(store.subscribe_schema()));
                }
                let logical = self.plan_query(session, &subscribe_query(target)).await?;
                Some(plan_continuous(session, logical).await?.subscribe_schema())
            }
            _ => None,
        })
    }

    /// The materialized view a SUBSCRIBE names, if it names one.
    fn subscribed_view(&self, target: &SubscribeTarget) -> Option<Arc<ViewStore>> {
        let SubscribeTarget::Name(name) = target else {
            return None;
        };
        let key = table_key(&TableReference::from(name.as_str()));
        let jobs = self.streams().jobs();
        jobs.get(&key)
            .filter(|e| e.kind == JobKind::MaterializedView)
            .and_then(|e| e.store.clone())
    }

    fn job_settings(
        &self,
        options: &std::collections::BTreeMap<String, String>,
        dir: Option<std::path::PathBuf>,
    ) -> Result<JobSettings, EngineError> {
        let defaults = self.streams().defaults;
        let mut settings = JobSettings {
            checkpoint_interval: defaults.checkpoint_interval,
            idle_timeout: defaults.idle_timeout,
            dir,
        };
        for (key, value) in options {
            match key.as_str() {
                "checkpoint_interval" => settings.checkpoint_interval = parse_duration(key, value)?,
                "idle_timeout" => settings.idle_timeout = parse_duration(key, value)?,
                _ => {
                    return Err(EngineError::new(
                        ErrorKind::UndefinedObject,
                        format!(
                            "unknown option '{key}' for a materialized view (valid options: \
                             {VIEW_OPTIONS})"
                        ),
                    ))
                }
            }
        }
        Ok(settings)
    }

    fn view_dir(&self, key: &str) -> std::path::PathBuf {
        self.data_dir().join("streams").join(key)
    }

    async fn create_materialized_view(
        &self,
        session: &Session,
        create: &CreateMaterializedView,
        sql: &str,
    ) -> Result<Output, EngineError> {
        let mut catalog = self.catalog().lock().await;
        let reference = TableReference::from(create.name.as_str());
        let key = table_key(&reference);
        if session.context().table_exist(reference.clone())? {
            if create.if_not_exists {
                return Ok(Output::command("CREATE MATERIALIZED VIEW"));
            }
            return Err(EngineError::new(
                ErrorKind::DuplicateObject,
                format!("relation \"{}\" already exists", create.name),
            ));
        }
        let dir = self.view_dir(&key);
        // A leftover of a view of the same name that was dropped while the server was down.
        let _ = std::fs::remove_dir_all(&dir);
        let schema = self.start_view(session, &key, create).await?;
        let entry = Entry {
            id: 0,
            name: key.clone(),
            kind: EntryKind::MaterializedView,
            sql: Some(sql.to_string()),
            schema: Some(schema.as_ref().clone()),
            location: None,
            base_dir: None,
            state: Default::default(),
        };
        if let Err(err) = catalog.upsert(entry) {
            self.streams().stop(&key).await;
            let _ = session.context().deregister_table(reference);
            return Err(err);
        }
        Ok(Output::command("CREATE MATERIALIZED VIEW"))
    }

    /// Plans the view, registers it as a table and starts its job (resuming from its last
    /// checkpoint if there is one).
    async fn start_view(
        &self,
        session: &Session,
        key: &str,
        create: &CreateMaterializedView,
    ) -> Result<SchemaRef, EngineError> {
        let settings = self.job_settings(&create.options, Some(self.view_dir(key)))?;
        let logical = self.plan_query(session, &create.query).await?;
        let plan = plan_continuous(session, logical).await?;
        let schema = plan.output_schema.clone();
        let store = Arc::new(ViewStore::new(schema.clone(), plan.is_updating()));
        let input = plan.input.name().to_string();
        let mode = plan.describe();
        let status = Arc::new(Mutex::new(JobStatus {
            state: "starting".to_string(),
            ..Default::default()
        }));
        let mut job = Job::new(
            key,
            plan,
            JobOutput::View(store.clone()),
            settings,
            status.clone(),
        )?;
        job.recover().await?;
        session.context().register_table(
            key_reference(key),
            Arc::new(MaterializedViewTable::new(
                key,
                store.clone(),
                &create.query,
            )),
        )?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(job.run(stop_rx));
        self.streams().insert(
            key.to_string(),
            JobEntry {
                kind: JobKind::MaterializedView,
                input,
                query: create.query.clone(),
                mode,
                status,
                store: Some(store),
                stop,
                task: Some(task),
            },
        );
        Ok(schema)
    }

    /// Restores a materialized view from its catalog entry at start-up.
    pub(crate) async fn restore_materialized_view(
        &self,
        session: &Session,
        entry: &Entry,
    ) -> Result<(), EngineError> {
        let sql = entry.sql.as_deref().unwrap_or_default();
        let Some(StreamStatement::CreateMaterializedView(create)) =
            super::statements::parse_stream_statement(
                &crate::statement::tokens::RawStatement::from_text(sql)?,
            )?
        else {
            return Err(EngineError::internal(
                "catalog entry is not CREATE MATERIALIZED VIEW",
            ));
        };
        self.start_view(session, &entry.name, &create)
            .await
            .map(|_| ())
    }

    async fn drop_materialized_view(
        &self,
        session: &Session,
        name: &str,
        if_exists: bool,
    ) -> Result<Output, EngineError> {
        let mut catalog = self.catalog().lock().await;
        let key = table_key(&TableReference::from(name));
        let is_view = catalog
            .entries()
            .iter()
            .any(|e| e.name == key && e.kind == EntryKind::MaterializedView);
        if !is_view {
            if if_exists {
                return Ok(Output::command("DROP MATERIALIZED VIEW"));
            }
            return Err(EngineError::new(
                ErrorKind::UndefinedTable,
                format!("materialized view \"{name}\" does not exist"),
            ));
        }
        let readers = self.streams().readers_of(&key);
        if !readers.is_empty() {
            return Err(EngineError::new(
                ErrorKind::InvalidStatement,
                format!(
                    "cannot drop materialized view {name}: {} read(s) it; drop them first",
                    readers.join(", ")
                ),
            ));
        }
        catalog.remove(&key)?;
        self.streams().stop(&key).await;
        let _ = session.context().deregister_table(key_reference(&key));
        let _ = std::fs::remove_dir_all(self.view_dir(&key));
        Ok(Output::command("DROP MATERIALIZED VIEW"))
    }

    fn show_materialized_views(&self) -> Result<Output, EngineError> {
        let rows = self.streams().list_of(JobKind::MaterializedView);
        let schema = show_views_schema();
        let columns: Vec<ArrayRef> = vec![
            text(&rows, |r| r.name.as_str()),
            text(&rows, |r| r.mode),
            text(&rows, |r| r.input.as_str()),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.rows.unwrap_or(0) as i64),
            )),
            text(&rows, |r| r.status.state.as_str()),
            text(&rows, |r| r.query.as_str()),
        ];
        Output::rows(schema.clone(), vec![RecordBatch::try_new(schema, columns)?])
    }

    fn show_jobs(&self) -> Result<Output, EngineError> {
        let rows = self.streams().list();
        let schema = show_jobs_schema();
        let millis = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
        };
        let lag = |s: &JobStatus| {
            s.lag
                .iter()
                .map(|(p, l)| format!("{p}:{l}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let columns: Vec<ArrayRef> = vec![
            text(&rows, |r| r.name.as_str()),
            text(&rows, |r| r.kind.label()),
            text(&rows, |r| r.status.state.as_str()),
            text(&rows, |r| r.input.as_str()),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.status.events_in as i64),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.iter()
                    .map(|r| (r.status.events_per_second * 10.0).round() / 10.0),
            )),
            Arc::new(TimestampMillisecondArray::from_iter(
                rows.iter()
                    .map(|r| r.status.watermark_ns.map(|w| w / 1_000_000)),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| lag(&r.status)),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.status.late_rows as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.status.checkpoints as i64),
            )),
            Arc::new(TimestampMillisecondArray::from_iter(
                rows.iter().map(|r| millis(r.status.last_checkpoint)),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.status.last_error.clone()),
            )),
        ];
        Output::rows(schema.clone(), vec![RecordBatch::try_new(schema, columns)?])
    }

    /// SUBSCRIBE: the rows now, then every new one, until the client stops reading.
    async fn subscribe(
        &self,
        session: &Session,
        target: &SubscribeTarget,
    ) -> Result<Output, EngineError> {
        if let Some(store) = self.subscribed_view(target) {
            return Ok(Output::Live(store.subscribe()));
        }
        let query = subscribe_query(target);
        let logical = self.plan_query(session, &query).await?;
        let plan = plan_continuous(session, logical).await?;
        let schema = plan.output_schema.clone();
        let store = Arc::new(ViewStore::new(schema.clone(), plan.is_updating()));
        let input = plan.input.name().to_string();
        let mode = plan.describe();
        let status = Arc::new(Mutex::new(JobStatus::default()));
        let settings = JobSettings {
            checkpoint_interval: Duration::MAX,
            idle_timeout: self.streams().defaults.idle_timeout,
            dir: None,
        };
        let job = Job::new(
            "subscription",
            plan,
            JobOutput::View(store.clone()),
            settings,
            status.clone(),
        )?;
        let name = self.streams().subscription_name();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(job.run(stop_rx));
        self.streams().insert(
            name.clone(),
            JobEntry {
                kind: JobKind::Subscription,
                input,
                query,
                mode,
                status,
                store: Some(store.clone()),
                stop,
                task: Some(task),
            },
        );
        // The job lives as long as the stream: dropping the stream stops it.
        let guard = SubscriptionGuard {
            engine: self.clone(),
            name,
        };
        let rows = store.subscribe().map(move |item| {
            let _ = &guard;
            item
        });
        let stream: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            store.subscribe_schema(),
            rows,
        ));
        Ok(Output::Live(stream))
    }
}

impl Engine {
    async fn create_sink(
        &self,
        session: &Session,
        create: &CreateSink,
        sql: &str,
    ) -> Result<Output, EngineError> {
        let mut catalog = self.catalog().lock().await;
        let key = table_key(&TableReference::from(create.name.as_str()));
        if catalog.get(&key).is_some() || self.streams().jobs().contains_key(&key) {
            if create.if_not_exists {
                return Ok(Output::command("CREATE SINK"));
            }
            return Err(EngineError::new(
                ErrorKind::DuplicateObject,
                format!("\"{}\" already exists", create.name),
            ));
        }
        let _ = std::fs::remove_dir_all(self.view_dir(&key));
        self.start_sink(session, &key, create, true).await?;
        let entry = Entry {
            id: 0,
            name: key.clone(),
            kind: EntryKind::Sink,
            sql: Some(sql.to_string()),
            schema: None,
            location: None,
            base_dir: None,
            state: Default::default(),
        };
        if let Err(err) = catalog.upsert(entry) {
            self.streams().stop(&key).await;
            return Err(err);
        }
        Ok(Output::command("CREATE SINK"))
    }

    /// Plans the sink's input, opens the destination and starts the job.
    async fn start_sink(
        &self,
        session: &Session,
        key: &str,
        create: &CreateSink,
        validate: bool,
    ) -> Result<(), EngineError> {
        let from = table_key(&TableReference::from(create.from.as_str()));
        let upstream = self
            .streams()
            .jobs()
            .get(&from)
            .map(|e| (e.kind, e.store.clone()));
        match upstream {
            Some((JobKind::MaterializedView, Some(store))) if store.is_updating() => {
                return Err(EngineError::unsupported(format!(
                    "sink {}: materialized view {} is an updating aggregate (its rows change in \
                     place); a sink reads windowed or append-only views and sources",
                    create.name, create.from
                )))
            }
            Some((JobKind::MaterializedView, _)) => {}
            _ if self.source(&from).is_some() => {}
            _ => {
                return Err(EngineError::new(
                    ErrorKind::UndefinedTable,
                    format!(
                        "sink {}: \"{}\" is not a materialized view or a source (to write a \
                         table's rows once, use COPY … TO)",
                        create.name, create.from
                    ),
                ))
            }
        }
        let mut options = create.options.clone();
        let connector_name = options.remove("connector").ok_or_else(|| {
            EngineError::new(
                ErrorKind::InvalidParameterValue,
                "CREATE SINK needs WITH (connector = 'kafka' | 'parquet', …)",
            )
        })?;
        // How often the sink commits: `rollover_interval` (files) or `checkpoint_interval`.
        let mut runtime = std::collections::BTreeMap::new();
        for key in ["checkpoint_interval", "rollover_interval"] {
            if let Some(value) = options.get(key) {
                runtime.insert("checkpoint_interval".to_string(), value.clone());
            }
        }
        let settings = self.job_settings(&runtime, Some(self.view_dir(key)))?;
        let logical = self
            .plan_query(session, &format!("SELECT * FROM {}", create.from))
            .await?;
        let plan = plan_continuous(session, logical).await?;
        let connector = freshet_connectors::sink::sink_connector(&connector_name)?;
        let config = freshet_connectors::sink::SinkConfig {
            name: key.to_string(),
            schema: plan.output_schema.clone(),
            options,
        };
        let sink = connector.create(config, &self.sink_env(), validate).await?;
        let description = sink.describe();
        let status = Arc::new(Mutex::new(JobStatus {
            state: "starting".to_string(),
            ..Default::default()
        }));
        let mut job = Job::new(
            key,
            plan,
            JobOutput::Sink(tokio::sync::Mutex::new(sink)),
            settings,
            status.clone(),
        )?;
        job.recover().await?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(job.run(stop_rx));
        self.streams().insert(
            key.to_string(),
            JobEntry {
                kind: JobKind::Sink,
                input: from,
                query: format!("{} → {}", create.from, description),
                mode: "append",
                status,
                store: None,
                stop,
                task: Some(task),
            },
        );
        Ok(())
    }

    pub(crate) async fn restore_sink(
        &self,
        session: &Session,
        entry: &Entry,
    ) -> Result<(), EngineError> {
        let sql = entry.sql.as_deref().unwrap_or_default();
        let Some(StreamStatement::CreateSink(create)) = super::statements::parse_stream_statement(
            &crate::statement::tokens::RawStatement::from_text(sql)?,
        )?
        else {
            return Err(EngineError::internal("catalog entry is not CREATE SINK"));
        };
        self.start_sink(session, &entry.name, &create, false).await
    }

    /// Keeps trying to start a sink that could not start with the server (its destination was
    /// unreachable, say): `SHOW SINKS` lists it as `retrying` with the error, it starts as soon
    /// as it can — from its checkpoint, so nothing is lost — and `DROP SINK` ends the attempts.
    /// Attempts back off from 1 s to 60 s.
    pub(crate) fn retry_sink(&self, entry: Entry, error: String) {
        let key = entry.name.clone();
        let sql = entry.sql.clone().unwrap_or_default();
        let from = match crate::statement::tokens::RawStatement::from_text(&sql)
            .and_then(|raw| super::statements::parse_stream_statement(&raw))
        {
            Ok(Some(StreamStatement::CreateSink(create))) => {
                table_key(&TableReference::from(create.from.as_str()))
            }
            _ => String::new(),
        };
        let status = Arc::new(Mutex::new(JobStatus {
            state: "retrying".to_string(),
            last_error: Some(error),
            ..Default::default()
        }));
        let (stop, mut stop_rx) = watch::channel(false);
        let engine = self.clone();
        let task_status = status.clone();
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            let key = task_key;
            let mut delay = Duration::from_secs(1);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop_rx.changed() => return,
                }
                // DROP SINK holds the catalog while it stops this task: give way to it.
                let catalog = tokio::select! {
                    catalog = engine.catalog().lock() => catalog,
                    _ = stop_rx.changed() => return,
                };
                if *stop_rx.borrow() || catalog.get(&key).is_none_or(|e| e.kind != EntryKind::Sink)
                {
                    return;
                }
                let session = engine.new_session("freshet");
                match engine.restore_sink(&session, &entry).await {
                    Ok(()) => {
                        tracing::info!(sink = %key, "sink started after retrying");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(sink = %key, error = %err, retry_in = ?delay * 2, "sink still cannot start");
                        task_status
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .last_error = Some(err.message().to_string());
                    }
                }
                drop(catalog);
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        });
        self.streams().insert(
            key,
            JobEntry {
                kind: JobKind::Sink,
                input: from.clone(),
                query: format!("{from} → (not started)"),
                mode: "append",
                status,
                store: None,
                stop,
                task: Some(task),
            },
        );
    }

    async fn drop_sink(&self, name: &str, if_exists: bool) -> Result<Output, EngineError> {
        let mut catalog = self.catalog().lock().await;
        let key = table_key(&TableReference::from(name));
        let is_sink = catalog.get(&key).is_some_and(|e| e.kind == EntryKind::Sink);
        if !is_sink {
            if if_exists {
                return Ok(Output::command("DROP SINK"));
            }
            return Err(EngineError::new(
                ErrorKind::UndefinedObject,
                format!("sink \"{name}\" does not exist"),
            ));
        }
        catalog.remove(&key)?;
        self.streams().stop(&key).await;
        let _ = std::fs::remove_dir_all(self.view_dir(&key));
        Ok(Output::command("DROP SINK"))
    }

    fn show_sinks(&self) -> Result<Output, EngineError> {
        let rows = self.streams().list_of(JobKind::Sink);
        let schema = show_sinks_schema();
        let columns: Vec<ArrayRef> = vec![
            text(&rows, |r| r.name.as_str()),
            text(&rows, |r| r.input.as_str()),
            text(&rows, |r| r.query.as_str()),
            text(&rows, |r| r.status.state.as_str()),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.status.checkpoints as i64),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.status.last_error.clone()),
            )),
        ];
        Output::rows(schema.clone(), vec![RecordBatch::try_new(schema, columns)?])
    }
}

fn show_sinks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("from", DataType::Utf8, false),
        Field::new("destination", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("commits", DataType::Int64, false),
        Field::new("last_error", DataType::Utf8, true),
    ]))
}

/// The query a SUBSCRIBE runs when it does not name a materialized view.
fn subscribe_query(target: &SubscribeTarget) -> String {
    match target {
        SubscribeTarget::Name(name) => format!("SELECT * FROM {name}"),
        SubscribeTarget::Query(query) => query.clone(),
    }
}

/// Stops a subscription's job when its stream is dropped.
struct SubscriptionGuard {
    engine: Engine,
    name: String,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.engine.streams().jobs().remove(&self.name) {
            let _ = entry.stop.send(true);
        }
    }
}

/// A text column of SHOW output, one value per row.
fn text<'a, T>(rows: &'a [T], value: impl Fn(&'a T) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(value)))
}

fn show_views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("input", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
    ]))
}

fn show_jobs_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("input", DataType::Utf8, false),
        Field::new("events_in", DataType::Int64, false),
        Field::new("events_per_second", DataType::Float64, false),
        Field::new("watermark", ts.clone(), true),
        Field::new("lag", DataType::Utf8, false),
        Field::new("late_rows_dropped", DataType::Int64, false),
        Field::new("checkpoints", DataType::Int64, false),
        Field::new("last_checkpoint", ts, true),
        Field::new("last_error", DataType::Utf8, true),
    ]))
}
