//! The engine: one entry point for every statement from every frontend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use datafusion::arrow::array::{RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::common::{ParamValues, TableReference};
use datafusion::execution::context::SessionContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::{CopyToStatement, CreateExternalTable, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{self, Value};
use freshet_connectors::files::{
    build_object_store, resolve_location, split_store_options, LocationKind, PathPolicy,
    ResolvedLocation, SandboxedLocalStore,
};
use tokio::sync::Mutex;

use crate::catalog::{CatalogStore, Entry, EntryKind};
use crate::compat::{self, ActiveRules};
use crate::error::{EngineError, ErrorKind};
use crate::functions::version_udf;
use crate::limits::StatementLimits;
use crate::pgnames;
use crate::plan_types::{
    coerce_params, ordered_param_types, placeholder_cast_types, result_schema,
    unwrap_typed_parameters, TYPED_PARAMETERS,
};
use crate::session::Session;
use crate::sources::{check_watermark, CreateSource, SourceHandle, SourceTable};
use crate::statement::copy::CopyFormat;
use crate::statement::{
    self, OwnStatement, ParsedStatement, RawStatement, Statement, TransactionKind,
};
use crate::streaming::{StreamDefaults, Streams};
use crate::tables::UnavailableTable;

/// The catalog (database) name clients see.
const DATABASE: &str = "freshet";
/// The default schema.
const DEFAULT_SCHEMA: &str = "public";

/// How the engine is set up. Built by the server from its configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Everything the server remembers lives here (catalog, table data).
    pub data_dir: PathBuf,
    /// Directories local files may be read from or written to. Empty means the defaults: the
    /// data directory and `base_dir`.
    pub allowed_roots: Vec<PathBuf>,
    /// Relative paths in statements are resolved against this directory (where the server was
    /// started).
    pub base_dir: PathBuf,
    /// Defaults of continuous queries (checkpoint interval, idle timeout).
    pub streams: StreamDefaults,
    /// Limits on one statement, checked before it is parsed.
    pub limits: StatementLimits,
}

/// The result of one statement.
pub enum Output {
    /// Rows, produced as the client reads them (SELECT, SHOW, EXPLAIN …).
    Rows(SendableRecordBatchStream),
    /// Rows that keep coming until the client stops reading (SUBSCRIBE): frontends send each
    /// batch as soon as it is produced.
    Live(SendableRecordBatchStream),
    /// `COPY (…) TO STDOUT`: rows (possibly live) the frontend sends as COPY data.
    CopyOut {
        rows: SendableRecordBatchStream,
        format: CopyFormat,
    },
    /// A statement without rows.
    Command {
        /// The PostgreSQL command tag, e.g. `CREATE TABLE`, `INSERT 0 3`, `SET`.
        tag: String,
        /// Settings whose new values clients track (pgwire ParameterStatus).
        parameter_status: Vec<(String, String)>,
        /// Set for BEGIN / COMMIT / ROLLBACK, which Freshet accepts as no-ops.
        transaction: Option<TransactionKind>,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows(stream) => write!(f, "Rows({:?})", stream.schema()),
            Output::Live(stream) => write!(f, "Live({:?})", stream.schema()),
            Output::CopyOut { rows, format } => {
                write!(f, "CopyOut({format:?}, {:?})", rows.schema())
            }
            Output::Command { tag, .. } => write!(f, "Command({tag})"),
        }
    }
}

impl Output {
    pub(crate) fn command(tag: impl Into<String>) -> Self {
        Output::Command {
            tag: tag.into(),
            parameter_status: Vec::new(),
            transaction: None,
        }
    }

    pub(crate) fn rows(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self, EngineError> {
        let stream = MemoryStream::try_new(batches, schema, None)?;
        Ok(Output::Rows(Box::pin(stream)))
    }
}

/// A parsed (and, for plain SQL, planned) statement, ready to run once or many times.
#[derive(Clone, Debug)]
pub struct Prepared {
    inner: Arc<PreparedInner>,
}

#[derive(Debug)]
struct PreparedInner {
    sql: String,
    kind: PreparedKind,
    param_types: Vec<Option<DataType>>,
    schema: Option<SchemaRef>,
    /// Result column names as PostgreSQL gives them, put on the rows when they are produced
    /// (see [`crate::pgnames`]); `None` keeps the planner's names.
    names: Option<Vec<String>>,
    /// The token-stage compatibility rules that changed the statement.
    rules_applied: Vec<&'static str>,
}

#[derive(Debug)]
enum PreparedKind {
    Empty,
    Own(OwnStatement),
    CreateExternalTable(Box<CreateExternalTable>),
    Copy(Box<CopyToStatement>),
    CopyToClient { inner: Prepared, format: CopyFormat },
    Plan(Box<PlannedStatement>),
    Stream(Box<crate::streaming::statements::StreamStatement>),
    Model(Box<crate::models::statements::ModelStatement>),
}

/// A SQL statement and its logical plan, made once and used by every execution while what it
/// depends on is unchanged.
#[derive(Debug)]
struct PlannedStatement {
    statement: DfStatement,
    plan: LogicalPlan,
    version: PlanVersion,
}

/// An external table read from its location, not yet in the session catalog.
struct BuiltExternalTable {
    command: Box<datafusion::logical_expr::CreateExternalTable>,
    /// `None` when `IF NOT EXISTS` found the table already there (nothing was read).
    provider: Option<Arc<dyn datafusion::catalog::TableProvider>>,
    /// The locations as the user sees them.
    shown: Vec<String>,
}

/// What a plan depends on besides its statement: the catalog (tables, views, sources replaced
/// or changed), the trained models (plans capture the model they score), and the session's
/// settings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlanVersion {
    catalog: u64,
    models: (u64, u64),
    settings: (usize, u64),
}

impl Prepared {
    /// The statement's text.
    pub fn sql(&self) -> &str {
        &self.inner.sql
    }

    /// Types of `$1 … $n` as inferred by the planner (`None` where unknown).
    pub fn param_types(&self) -> &[Option<DataType>] {
        &self.inner.param_types
    }

    /// The columns of the rows the statement returns; `None` for a command without rows.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.inner.schema.as_ref()
    }

    /// Whether the statement is empty (only comments or whitespace).
    pub fn is_empty(&self) -> bool {
        matches!(self.inner.kind, PreparedKind::Empty)
    }

    /// Whether the token-stage compatibility rule `name` (see [`crate::compat`]) changed it.
    pub fn rule_applied(&self, name: &str) -> bool {
        self.inner.rules_applied.contains(&name)
    }
}

/// The engine. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    policy: Arc<PathPolicy>,
    /// The template every session's context is cloned from.
    context: SessionContext,
    compat_parser: compat::PgCatalogCompat,
    /// The catalog on disk. Held for the whole of any statement that changes the catalog or
    /// the rows of an in-memory table, so catalog and data files always agree.
    catalog: Mutex<CatalogStore>,
    /// Tables that could not be restored at start-up, with the reason.
    unavailable: StdMutex<BTreeMap<String, String>>,
    /// Registered sources by `schema.name`.
    sources: StdMutex<BTreeMap<String, SourceHandle>>,
    /// Running continuous queries.
    streams: Streams,
    /// Recommendation models.
    models: Arc<crate::models::Models>,
    next_session: AtomicU64,
    /// Counts changes of the catalog (see [`PlanVersion`]).
    catalog_version: AtomicU64,
    /// Statements run through [`crate::lifecycle::StatementGuard::execute`], and those that
    /// failed before producing a result.
    statements: AtomicU64,
    statement_errors: AtomicU64,
    /// Logical plans made (a prepared statement run again reuses its plan).
    plans: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.inner.config.data_dir)
            .finish()
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
        Value::Number(n, _) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// Splits statement options into object-store options (`aws.*`, `hdfs.*`), as text, and the
/// rest, which stay statement options for DataFusion's format settings.
type StoreAndFormatOptions = (Vec<(String, String)>, Vec<(String, Value)>);

fn split_options(options: &[(String, Value)]) -> StoreAndFormatOptions {
    let text = options
        .iter()
        .map(|(k, v)| (k.clone(), value_text(v)))
        .collect();
    let (store, format) = split_store_options(text);
    let format = format
        .into_iter()
        .map(|(k, v)| (k, Value::SingleQuotedString(v)))
        .collect();
    (store, format)
}

/// `schema.table` for a table reference, lower-case as the planner resolves it.
pub(crate) fn table_key(reference: &TableReference) -> String {
    let resolved = reference.clone().resolve(DATABASE, DEFAULT_SCHEMA);
    format!("{}.{}", resolved.schema, resolved.table)
}

pub(crate) fn key_reference(key: &str) -> TableReference {
    match key.split_once('.') {
        Some((schema, table)) => TableReference::partial(schema, table),
        None => TableReference::bare(key),
    }
}

impl Engine {
    /// Opens the engine on `config.data_dir`, creating it if needed, and restores everything
    /// the catalog lists. A table that cannot be restored is reported, not fatal.
    pub async fn open(config: EngineConfig) -> Result<Self, EngineError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            EngineError::new(
                ErrorKind::Io,
                format!(
                    "could not create data directory {}: {e}",
                    config.data_dir.display()
                ),
            )
        })?;
        let roots = if config.allowed_roots.is_empty() {
            vec![config.data_dir.clone(), config.base_dir.clone()]
        } else {
            config.allowed_roots.clone()
        };
        let policy = Arc::new(PathPolicy::new(roots)?);
        let context = build_context(&policy)?;
        let models = Arc::new(crate::models::Models::default());
        crate::models::register(&context, &models);
        context
            .catalog(DATABASE)
            .ok_or_else(|| EngineError::internal("the default catalog is missing"))?
            .register_schema(
                crate::models::MODELS_SCHEMA,
                Arc::new(crate::models::ModelsSchema::new(models.clone())),
            )?;
        let catalog = CatalogStore::open(&config.data_dir)?;
        let streams = Streams::new(config.streams);
        let engine = Engine {
            inner: Arc::new(Inner {
                config,
                policy,
                context,
                compat_parser: compat::PgCatalogCompat::default(),
                catalog: Mutex::new(catalog),
                unavailable: StdMutex::new(BTreeMap::new()),
                sources: StdMutex::new(BTreeMap::new()),
                streams,
                models,
                next_session: AtomicU64::new(1),
                catalog_version: AtomicU64::new(0),
                statements: AtomicU64::new(0),
                statement_errors: AtomicU64::new(0),
                plans: AtomicU64::new(0),
            }),
        };
        engine.restore().await;
        Ok(engine)
    }

    /// The directories local files may be read from or written to.
    pub fn allowed_roots(&self) -> &[PathBuf] {
        self.inner.policy.roots()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// The running continuous queries.
    pub fn streams(&self) -> &Streams {
        &self.inner.streams
    }

    /// What sinks need from the server: where local files may be written.
    pub(crate) fn sink_env(&self) -> freshet_connectors::sink::SinkEnv {
        freshet_connectors::sink::SinkEnv::new(
            self.inner.policy.clone(),
            self.inner.config.base_dir.clone(),
        )
    }

    /// The recommendation models.
    pub(crate) fn models(&self) -> &Arc<crate::models::Models> {
        &self.inner.models
    }

    pub(crate) fn catalog(&self) -> &Mutex<CatalogStore> {
        &self.inner.catalog
    }

    /// Plans a query (text) to its logical plan, as a SELECT would be.
    pub(crate) async fn plan_query(
        &self,
        session: &Session,
        sql: &str,
    ) -> Result<LogicalPlan, EngineError> {
        let not_a_query = || {
            EngineError::new(
                ErrorKind::InvalidStatement,
                format!("expected a query, found: {sql}"),
            )
        };
        let rules = ActiveRules::for_session(session)?;
        let parsed = statement::parse(
            &RawStatement::from_text(sql)?,
            session,
            &rules,
            &self.inner.compat_parser,
        )?;
        let Statement::Sql { statement, .. } = parsed.statement else {
            return Err(not_a_query());
        };
        // Boxed: preparing a SUBSCRIBE plans its query through here.
        let (_, plan) = Box::pin(self.plan_sql(session, *statement, &rules)).await?;
        match plan {
            LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_) => Err(not_a_query()),
            plan => Ok(plan),
        }
    }

    /// A new session for `user`; `pg_backend_pid()` is its session number.
    pub fn new_session(&self, user: &str) -> Session {
        self.new_session_with_pid(user, None)
    }

    /// A new session for `user` whose `pg_backend_pid()` is `backend_pid` — for pgwire, the
    /// process id sent to the client in BackendKeyData, so a client that cancels or tells
    /// connections apart by it sees one number.
    pub fn new_session_with_pid(&self, user: &str, backend_pid: Option<i32>) -> Session {
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let state = SessionStateBuilder::new_from_existing(self.inner.context.state())
            .with_session_id(format!("freshet-{id}"))
            .build();
        let session = Session::new(user, SessionContext::new_with_state(state));
        // PostgreSQL's backend PIDs are positive int4s; session numbers wrap around in
        // that range.
        let backend_pid =
            backend_pid.unwrap_or_else(|| i32::try_from(id % i32::MAX as u64).unwrap_or(i32::MAX));
        crate::pg_compat::register_session_functions(
            session.context(),
            user,
            backend_pid,
            session.setting_reader(),
        );
        session
    }

    /// Tokenises a request once and cuts it into statements (see [`statement::split`]),
    /// after checking its length against the statement limit, so an over-long text is refused
    /// before it is read.
    pub fn split(&self, sql: &str) -> Result<Vec<RawStatement>, EngineError> {
        self.inner.config.limits.check_text(sql)?;
        statement::split(sql)
    }

    /// The texts of a request's statements (see [`Engine::split`]).
    pub fn split_statements(&self, sql: &str) -> Result<Vec<String>, EngineError> {
        Ok(self.split(sql)?.into_iter().map(|s| s.text).collect())
    }

    /// Parses and plans one statement without running it.
    pub async fn prepare(&self, session: &Session, sql: &str) -> Result<Prepared, EngineError> {
        let raw = self.one_statement(sql)?;
        self.prepare_raw(session, &raw, None).await
    }

    /// As [`Engine::prepare`], with the parameter types the client declared (pgwire's Parse
    /// message; `None` where it left the type open). A parameter whose type the query does not
    /// determine (`SELECT $1`) takes the declared type, as in PostgreSQL, or the type it is
    /// cast to (`$1::int8`); one the query does determine keeps that type and the value is
    /// cast to it.
    pub async fn prepare_with_types(
        &self,
        session: &Session,
        sql: &str,
        declared: &[Option<DataType>],
    ) -> Result<Prepared, EngineError> {
        let raw = self.one_statement(sql)?;
        self.prepare_raw(session, &raw, Some(declared)).await
    }

    /// Plans one statement of a request cut by [`Engine::split`]; `declared` as in
    /// [`Engine::prepare_with_types`] (`None`: parameter types from the query alone).
    pub async fn prepare_statement(
        &self,
        session: &Session,
        raw: &RawStatement,
        declared: Option<&[Option<DataType>]>,
    ) -> Result<Prepared, EngineError> {
        self.inner.config.limits.check_text(&raw.text)?;
        self.prepare_raw(session, raw, declared).await
    }

    fn one_statement(&self, sql: &str) -> Result<RawStatement, EngineError> {
        let mut statements = self.split(sql)?;
        match statements.len() {
            0 => Ok(RawStatement {
                text: sql.trim().to_string(),
                span: 0..sql.len(),
                tokens: Vec::new(),
            }),
            1 => Ok(statements.remove(0)),
            n => Err(EngineError::syntax(format!(
                "expected one statement, found {n}"
            ))),
        }
    }

    async fn prepare_raw(
        &self,
        session: &Session,
        raw: &RawStatement,
        declared: Option<&[Option<DataType>]>,
    ) -> Result<Prepared, EngineError> {
        self.inner.config.limits.check_tokens(raw.token_list())?;
        let rules = ActiveRules::for_session(session)?;
        let parsed = statement::parse(raw, session, &rules, &self.inner.compat_parser)?;
        let ParsedStatement {
            text,
            statement,
            rules_applied,
            ..
        } = parsed;
        let mut names = None;
        let (kind, schema, param_types) = match statement {
            Statement::Empty => (PreparedKind::Empty, None, Vec::new()),
            Statement::Own(own) => {
                let schema = self.own_schema(session, &own)?;
                (PreparedKind::Own(own), schema, Vec::new())
            }
            Statement::Stream(stream) => {
                let schema = self.stream_statement_schema(session, &stream).await?;
                (PreparedKind::Stream(stream), schema, Vec::new())
            }
            Statement::Model(model) => {
                let schema = self.model_statement_schema(&model);
                (PreparedKind::Model(model), schema, Vec::new())
            }
            Statement::CreateExternalTable(cet) => {
                (PreparedKind::CreateExternalTable(cet), None, Vec::new())
            }
            Statement::CopyTo(copy) => (PreparedKind::Copy(copy), None, Vec::new()),
            Statement::CopyToClient { query, format } => {
                let inner = Box::pin(self.prepare_raw(session, &query, None)).await?;
                if inner.schema().is_none() {
                    return Err(EngineError::new(
                        ErrorKind::InvalidStatement,
                        "COPY (…) TO STDOUT needs a query that returns rows",
                    ));
                }
                (
                    PreparedKind::CopyToClient { inner, format },
                    None,
                    Vec::new(),
                )
            }
            Statement::Sql {
                statement,
                as_written,
            } => {
                let planned = self
                    .prepare_sql(session, *statement, &rules, declared)
                    .await?;
                let mut schema = result_schema(&planned.plan);
                names = match (&as_written, &schema) {
                    (Some(written), Some(planned)) => pgnames::output_names(written, planned),
                    _ => None,
                };
                if let (Some(names), Some(planned)) = (&names, &schema) {
                    schema = Some(pgnames::rename_schema(planned, names));
                }
                let param_types = ordered_param_types(&planned.plan)?;
                (PreparedKind::Plan(Box::new(planned)), schema, param_types)
            }
        };
        Ok(Prepared {
            inner: Arc::new(PreparedInner {
                sql: text,
                kind,
                param_types,
                schema,
                names,
                rules_applied,
            }),
        })
    }

    /// Plans a statement once: with the retry rules of [`crate::compat`], and with the
    /// parameter types the client declared where the query leaves them open.
    async fn prepare_sql(
        &self,
        session: &Session,
        statement: ast::Statement,
        rules: &ActiveRules,
        declared: Option<&[Option<DataType>]>,
    ) -> Result<PlannedStatement, EngineError> {
        let version = self.plan_version(session);
        let (statement, plan) = self.plan_sql(session, statement, rules).await?;
        let planned = PlannedStatement {
            statement: DfStatement::Statement(Box::new(statement)),
            plan,
            version: version.clone(),
        };
        let Some(declared) = declared else {
            return Ok(planned);
        };
        let inferred = ordered_param_types(&planned.plan)?;
        if inferred.iter().all(Option::is_some) {
            return Ok(planned);
        }
        // `$1::int8`: like PostgreSQL, a parameter the client leaves open takes the type it is
        // cast to.
        let cast = placeholder_cast_types(&planned.plan)?;
        let chosen = |i: usize| -> Option<DataType> {
            declared
                .get(i)
                .cloned()
                .flatten()
                .or_else(|| cast.get(&(i + 1)).cloned())
        };
        if !(0..inferred.len()).any(|i| inferred[i].is_none() && chosen(i).is_some()) {
            return Ok(planned);
        }
        let mut data_types = Vec::with_capacity(inferred.len());
        for (i, inferred_type) in inferred.iter().enumerate() {
            let arrow_type = inferred_type
                .clone()
                .or_else(|| chosen(i))
                .unwrap_or(DataType::Utf8);
            match crate::pg_types::sql_type(&arrow_type) {
                Some(sql_type) => data_types.push(sql_type),
                None => return Ok(planned),
            }
        }
        let DfStatement::Statement(inner) = planned.statement else {
            return Err(EngineError::internal("a planned SQL statement is not SQL"));
        };
        // The one case planned twice: the types are known only from the first plan.
        let typed = DfStatement::Statement(Box::new(ast::Statement::Prepare {
            name: ast::Ident::new(TYPED_PARAMETERS),
            data_types,
            statement: inner,
        }));
        let plan = self.plan(session, typed.clone()).await?;
        Ok(PlannedStatement {
            statement: typed,
            plan,
            version,
        })
    }

    /// Plans a statement; a statement DataFusion refuses for duplicate expression names is
    /// planned again with aliases (rule [`compat::DUPLICATE_SELECT_NAMES`]). Returns the
    /// statement as planned.
    async fn plan_sql(
        &self,
        session: &Session,
        statement: ast::Statement,
        rules: &ActiveRules,
    ) -> Result<(ast::Statement, LogicalPlan), EngineError> {
        match self
            .plan(session, DfStatement::Statement(Box::new(statement.clone())))
            .await
        {
            // DataFusion raises this as a plain planning error (no variant of its own).
            Err(err)
                if rules.on(compat::DUPLICATE_SELECT_NAMES)
                    && err
                        .message()
                        .contains("Projections require unique expression names") =>
            {
                let mut aliased = statement;
                if !pgnames::alias_unnamed_items(&mut aliased) {
                    return Err(err);
                }
                let plan = self
                    .plan(session, DfStatement::Statement(Box::new(aliased.clone())))
                    .await?;
                Ok((aliased, plan))
            }
            result => result.map(|plan| (statement, plan)),
        }
    }

    async fn plan(
        &self,
        session: &Session,
        statement: DfStatement,
    ) -> Result<LogicalPlan, EngineError> {
        self.inner.plans.fetch_add(1, Ordering::Relaxed);
        Ok(unwrap_typed_parameters(
            session
                .context()
                .state()
                .statement_to_plan(statement)
                .await?,
        ))
    }

    /// What a plan depends on besides its statement.
    fn plan_version(&self, session: &Session) -> PlanVersion {
        PlanVersion {
            catalog: self.inner.catalog_version.load(Ordering::Acquire),
            models: self.inner.models.version(),
            settings: session.settings_version(),
        }
    }

    /// Statements run so far, and how many of them failed (over every frontend).
    pub fn statement_counts(&self) -> (u64, u64) {
        (
            self.inner.statements.load(Ordering::Relaxed),
            self.inner.statement_errors.load(Ordering::Relaxed),
        )
    }

    /// Logical plans made so far.
    pub fn plans_made(&self) -> u64 {
        self.inner.plans.load(Ordering::Relaxed)
    }

    pub(crate) fn count_statement(&self) {
        self.inner.statements.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_statement_error(&self) {
        self.inner.statement_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks every plan made so far as out of date.
    pub(crate) fn catalog_changed(&self) {
        self.inner.catalog_version.fetch_add(1, Ordering::AcqRel);
    }

    /// Runs one statement of text (no parameters).
    pub async fn execute(&self, session: &Session, sql: &str) -> Result<Output, EngineError> {
        let prepared = self.prepare(session, sql).await?;
        self.execute_prepared(session, &prepared, None).await
    }

    /// Runs a prepared statement with the given parameter values.
    pub async fn execute_prepared(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Option<ParamValues>,
    ) -> Result<Output, EngineError> {
        // The result schema was worked out at prepare time: a plan with one is a query.
        let is_query = match &prepared.inner.kind {
            PreparedKind::Plan(_) => prepared.inner.schema.is_some(),
            PreparedKind::Empty => true,
            _ => false,
        };
        let result = self.execute_kind(session, prepared, params).await;
        if !is_query {
            // DDL, DML, sources, streams, models, settings: what any plan refers to may have
            // changed (conservative: a plan made again costs only planning).
            self.catalog_changed();
        }
        result
    }

    async fn execute_kind(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Option<ParamValues>,
    ) -> Result<Output, EngineError> {
        match &prepared.inner.kind {
            PreparedKind::Empty => Ok(Output::command("")),
            PreparedKind::Own(own) => self.execute_own(session, own, prepared.sql()).await,
            PreparedKind::Stream(statement) => {
                self.execute_stream(session, statement, prepared.sql())
                    .await
            }
            PreparedKind::Model(statement) => {
                self.execute_model(session, statement, prepared.sql()).await
            }
            PreparedKind::CreateExternalTable(cet) => {
                let base_dir = self.inner.config.base_dir.clone();
                // Reading the location (listing files, inferring the schema) may wait on a slow
                // store: it happens before the catalog lock, so other DDL goes on meanwhile.
                let built = self
                    .build_external_table(session, (**cet).clone(), &base_dir)
                    .await?;
                let mut catalog = self.inner.catalog.lock().await;
                let locations = built.shown.clone();
                if !self.install_external_table(session, built)? {
                    return Ok(Output::command("CREATE TABLE"));
                }
                self.record_external_table(
                    session,
                    &mut catalog,
                    cet,
                    prepared.sql(),
                    &base_dir,
                    &locations,
                )
                .await?;
                Ok(Output::command("CREATE TABLE"))
            }
            PreparedKind::Copy(copy) => self.copy_to(session, (**copy).clone()).await,
            PreparedKind::CopyToClient { inner, format } => {
                match Box::pin(self.execute_prepared(session, inner, None)).await? {
                    Output::Rows(rows) | Output::Live(rows) => Ok(Output::CopyOut {
                        rows,
                        format: *format,
                    }),
                    _ => Err(EngineError::new(
                        ErrorKind::InvalidStatement,
                        "COPY (…) TO STDOUT needs a query that returns rows",
                    )),
                }
            }
            PreparedKind::Plan(planned) => {
                // The plan made at prepare time, unless the catalog, a model or the session's
                // settings changed since.
                let mut plan = if planned.version == self.plan_version(session) {
                    planned.plan.clone()
                } else {
                    self.plan(session, planned.statement.clone()).await?
                };
                if let Some(params) = params {
                    let params = coerce_params(params, &ordered_param_types(&plan)?)?;
                    plan = plan.replace_params_with_values(&params)?;
                }
                let output = self.execute_plan(session, plan, prepared.sql()).await?;
                Ok(match (output, &prepared.inner.names) {
                    (Output::Rows(stream), Some(names)) => {
                        Output::Rows(pgnames::rename_stream(stream, names))
                    }
                    (output, _) => output,
                })
            }
        }
    }

    async fn execute_plan(
        &self,
        session: &Session,
        plan: LogicalPlan,
        sql: &str,
    ) -> Result<Output, EngineError> {
        match plan {
            LogicalPlan::Ddl(ddl) => self.execute_ddl(session, ddl, sql).await,
            LogicalPlan::Dml(dml) => self.execute_dml(session, dml).await,
            LogicalPlan::Copy(_) => Err(EngineError::internal("COPY reached the planner directly")),
            LogicalPlan::Statement(statement) => {
                use datafusion::logical_expr::Statement as S;
                let tag = match &statement {
                    S::Prepare(_) => Some("PREPARE"),
                    S::Deallocate(_) => Some("DEALLOCATE"),
                    S::Execute(_) => None,
                    _ => {
                        return Err(EngineError::unsupported(format!(
                            "statement not supported: {}",
                            statement.name()
                        )))
                    }
                };
                let frame = session
                    .context()
                    .execute_logical_plan(LogicalPlan::Statement(statement))
                    .await?;
                match tag {
                    Some(tag) => Ok(Output::command(tag)),
                    None => Ok(Output::Rows(frame.execute_stream().await?)),
                }
            }
            plan => {
                let frame = session.context().execute_logical_plan(plan).await?;
                Ok(Output::Rows(frame.execute_stream().await?))
            }
        }
    }

    async fn execute_ddl(
        &self,
        session: &Session,
        ddl: DdlStatement,
        sql: &str,
    ) -> Result<Output, EngineError> {
        let context = session.context();
        let mut catalog = self.inner.catalog.lock().await;
        match ddl {
            DdlStatement::CreateMemoryTable(create) => {
                let key = table_key(&create.name);
                let existed = context.table_exist(create.name.clone())?;
                let has_query = !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(_));
                let skip = existed && create.if_not_exists;
                let temporary = create.temporary;
                let name = create.name.clone();
                context
                    .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)))
                    .await?;
                if skip {
                    return Ok(Output::command("CREATE TABLE"));
                }
                self.forget_unavailable(&key);
                let rows = if temporary {
                    0
                } else {
                    let entry = Entry {
                        id: 0,
                        name: key.clone(),
                        kind: EntryKind::Table,
                        sql: (!has_query).then(|| sql.to_string()),
                        schema: None,
                        location: None,
                        base_dir: None,
                        state: Default::default(),
                    };
                    let entry = catalog.upsert(entry)?;
                    self.snapshot_table(context, &catalog, &entry, &name)
                        .await?
                };
                Ok(Output::command(if has_query {
                    format!("SELECT {rows}")
                } else {
                    "CREATE TABLE".to_string()
                }))
            }
            DdlStatement::CreateView(view) => {
                let key = table_key(&view.name);
                let persist = !view.temporary;
                let schema = view.input.schema().as_arrow().clone();
                context
                    .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateView(view)))
                    .await?;
                if persist {
                    catalog.upsert(Entry {
                        id: 0,
                        name: key,
                        kind: EntryKind::View,
                        sql: Some(sql.to_string()),
                        schema: Some(schema),
                        location: None,
                        base_dir: None,
                        state: Default::default(),
                    })?;
                }
                Ok(Output::command("CREATE VIEW"))
            }
            DdlStatement::CreateCatalogSchema(create) => {
                let name = create.schema_name.to_ascii_lowercase();
                context
                    .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateCatalogSchema(
                        create,
                    )))
                    .await?;
                catalog.upsert(Entry {
                    id: 0,
                    name,
                    kind: EntryKind::Schema,
                    sql: Some(sql.to_string()),
                    schema: None,
                    location: None,
                    base_dir: None,
                    state: Default::default(),
                })?;
                Ok(Output::command("CREATE SCHEMA"))
            }
            DdlStatement::DropTable(drop) => {
                let key = table_key(&drop.name);
                if self.source_map().contains_key(&key) {
                    return Err(EngineError::new(
                        ErrorKind::InvalidStatement,
                        format!("\"{}\" is a source: use DROP SOURCE", drop.name),
                    ));
                }
                refuse_materialized_view(&catalog, &key, &drop.name)?;
                context
                    .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::DropTable(drop)))
                    .await?;
                catalog.remove(&key)?;
                self.forget_unavailable(&key);
                Ok(Output::command("DROP TABLE"))
            }
            DdlStatement::DropView(drop) => {
                let key = table_key(&drop.name);
                // A materialized view is listed as a view, but dropping it stops a job.
                refuse_materialized_view(&catalog, &key, &drop.name)?;
                context
                    .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::DropView(drop)))
                    .await?;
                catalog.remove(&key)?;
                Ok(Output::command("DROP VIEW"))
            }
            DdlStatement::DropCatalogSchema(drop) => {
                let name = drop.name.to_string().to_ascii_lowercase();
                let name = name.rsplit('.').next().unwrap_or(&name).to_string();
                context
                    .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::DropCatalogSchema(drop)))
                    .await?;
                catalog.remove_schema(&name)?;
                Ok(Output::command("DROP SCHEMA"))
            }
            DdlStatement::CreateExternalTable(_) => Err(EngineError::internal(
                "CREATE EXTERNAL TABLE reached the planner directly",
            )),
            other => Err(EngineError::unsupported(format!(
                "{} is not supported by Freshet",
                other.name()
            ))),
        }
    }

    async fn execute_dml(
        &self,
        session: &Session,
        dml: DmlStatement,
    ) -> Result<Output, EngineError> {
        let context = session.context();
        let key = table_key(&dml.table_name);
        let table = dml.table_name.clone();
        let op = dml.op.clone();
        let catalog = self.inner.catalog.lock().await;
        let frame = context.execute_logical_plan(LogicalPlan::Dml(dml)).await?;
        let batches = frame.collect().await?;
        let count = batches
            .first()
            .and_then(|b| b.column_by_name("count"))
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .map(|a| a.iter().flatten().sum::<u64>())
            .unwrap_or(0);
        if let Some(entry) = catalog
            .get(&key)
            .filter(|e| e.kind == EntryKind::Table)
            .cloned()
        {
            self.snapshot_table(context, &catalog, &entry, &table)
                .await?;
        }
        let tag = match op {
            WriteOp::Insert(_) => format!("INSERT 0 {count}"),
            WriteOp::Update => format!("UPDATE {count}"),
            WriteOp::Delete => format!("DELETE {count}"),
            WriteOp::Truncate => "TRUNCATE TABLE".to_string(),
            WriteOp::Ctas => format!("SELECT {count}"),
            WriteOp::MergeInto(_) => format!("MERGE {count}"),
            _ => format!("UPDATE {count}"),
        };
        Ok(Output::command(tag))
    }

    /// Writes the current rows of in-memory table `name` to its data file; returns the row count.
    async fn snapshot_table(
        &self,
        context: &SessionContext,
        catalog: &CatalogStore,
        entry: &Entry,
        name: &TableReference,
    ) -> Result<u64, EngineError> {
        let provider = context.table_provider(name.clone()).await?;
        let Some(table) = provider.downcast_ref::<MemTable>() else {
            return Err(EngineError::internal(format!(
                "table {} is not an in-memory table",
                entry.name
            )));
        };
        let mut batches = Vec::new();
        for partition in &table.batches {
            batches.extend(partition.read().await.iter().cloned());
        }
        let schema = provider.schema();
        catalog.write_table_data(entry, &schema, &batches)?;
        Ok(batches.iter().map(|b| b.num_rows() as u64).sum())
    }

    /// Resolves locations, registers object stores and creates the table in the session's
    /// catalog (shared by all sessions). Does not touch the persistent catalog.
    async fn create_external_table(
        &self,
        session: &Session,
        cet: CreateExternalTable,
        base_dir: &Path,
    ) -> Result<Vec<String>, EngineError> {
        let built = self.build_external_table(session, cet, base_dir).await?;
        let shown = built.shown.clone();
        self.install_external_table(session, built)?;
        Ok(shown)
    }

    /// Resolves locations, registers the object stores they need and reads the table (its
    /// files and schema): everything that waits on storage, without the catalog lock.
    async fn build_external_table(
        &self,
        session: &Session,
        mut cet: CreateExternalTable,
        base_dir: &Path,
    ) -> Result<BuiltExternalTable, EngineError> {
        let (store_options, format_options) = split_options(&cet.options);
        let mut locations = Vec::with_capacity(cet.locations.len());
        let mut shown = Vec::with_capacity(cet.locations.len());
        for location in &cet.locations {
            let resolved = resolve_location(location, base_dir, &self.inner.policy, true)?;
            locations.push(self.register_store(session, &resolved, &store_options)?);
            shown.push(resolved.display.clone());
        }
        cet.locations = locations;
        cet.options = format_options;
        let state = session.context().state();
        let plan = state
            .statement_to_plan(DfStatement::CreateExternalTable(cet))
            .await?;
        let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(command)) = plan else {
            return Err(EngineError::internal(
                "CREATE EXTERNAL TABLE did not plan as one",
            ));
        };
        if command.temporary {
            return Err(EngineError::unsupported(
                "temporary tables are not supported",
            ));
        }
        if command.if_not_exists && command.or_replace {
            return Err(EngineError::new(
                ErrorKind::InvalidStatement,
                "IF NOT EXISTS cannot be used with OR REPLACE",
            ));
        }
        if command.if_not_exists && session.context().table_exist(command.name.clone())? {
            return Ok(BuiltExternalTable {
                command,
                provider: None,
                shown,
            });
        }
        let file_type = command.file_type.to_uppercase();
        let factory = state
            .table_factories()
            .get(file_type.as_str())
            .cloned()
            .ok_or_else(|| {
                EngineError::unsupported(format!("unknown file format {}", command.file_type))
            })?;
        match factory.create(&state, &command).await {
            Ok(provider) => Ok(BuiltExternalTable {
                command,
                provider: Some(provider),
                shown,
            }),
            Err(err) => {
                let err = EngineError::from(err);
                if matches!(err.kind(), ErrorKind::Io | ErrorKind::Internal) {
                    // Storage errors rarely say where; name the location.
                    Err(EngineError::new(
                        ErrorKind::Io,
                        format!("could not read {}: {}", shown.join(", "), err.message()),
                    ))
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Puts a built external table into the session catalog, as `IF NOT EXISTS` / `OR
    /// REPLACE` say. Returns whether the table was created (not kept as it was).
    fn install_external_table(
        &self,
        session: &Session,
        built: BuiltExternalTable,
    ) -> Result<bool, EngineError> {
        let BuiltExternalTable {
            command, provider, ..
        } = built;
        let context = session.context();
        if context.table_exist(command.name.clone())? {
            if command.if_not_exists {
                return Ok(false);
            }
            if !command.or_replace {
                return Err(EngineError::new(
                    ErrorKind::DuplicateObject,
                    format!("Table '{}' already exists", command.name),
                ));
            }
            context.deregister_table(command.name.clone())?;
        }
        let provider = provider.ok_or_else(|| {
            EngineError::internal("an external table was not read before it was installed")
        })?;
        context.register_table(command.name.clone(), provider)?;
        Ok(true)
    }

    /// Registers the object store a location needs and returns the location as DataFusion
    /// should see it.
    fn register_store(
        &self,
        session: &Session,
        resolved: &ResolvedLocation,
        store_options: &[(String, String)],
    ) -> Result<String, EngineError> {
        if let LocationKind::Local = resolved.kind {
            if let Some((key, _)) = store_options.first() {
                return Err(EngineError::new(
                    ErrorKind::InvalidParameterValue,
                    format!(
                        "option '{key}' applies to S3 and HDFS locations, not to local path {}",
                        resolved.display
                    ),
                ));
            }
            return local_path_text(resolved);
        }
        let store = build_object_store(resolved, store_options, &self.inner.policy)?;
        let mut base = resolved.url.clone();
        base.set_path("");
        base.set_query(None);
        session.context().register_object_store(&base, store);
        Ok(resolved.url.to_string())
    }

    async fn record_external_table(
        &self,
        session: &Session,
        catalog: &mut CatalogStore,
        cet: &CreateExternalTable,
        sql: &str,
        base_dir: &Path,
        locations: &[String],
    ) -> Result<(), EngineError> {
        if cet.temporary {
            return Ok(());
        }
        let reference = TableReference::from(cet.name.to_string());
        let key = table_key(&reference);
        let schema = session.context().table_provider(reference).await?.schema();
        catalog.upsert(Entry {
            id: 0,
            name: key.clone(),
            kind: EntryKind::ExternalTable,
            sql: Some(sql.to_string()),
            schema: Some(schema.as_ref().clone()),
            location: Some(locations.join(", ")),
            base_dir: Some(base_dir.display().to_string()),
            state: Default::default(),
        })?;
        self.forget_unavailable(&key);
        Ok(())
    }

    async fn copy_to(
        &self,
        session: &Session,
        mut copy: CopyToStatement,
    ) -> Result<Output, EngineError> {
        let (store_options, format_options) = split_options(&copy.options);
        let resolved = resolve_location(
            &copy.target,
            &self.inner.config.base_dir,
            &self.inner.policy,
            false,
        )?;
        copy.target = self.register_store(session, &resolved, &store_options)?;
        copy.options = format_options;
        let plan = session
            .context()
            .state()
            .statement_to_plan(DfStatement::CopyTo(copy))
            .await?;
        let batches = session
            .context()
            .execute_logical_plan(plan)
            .await?
            .collect()
            .await?;
        let count: u64 = batches
            .iter()
            .filter_map(|b| b.column_by_name("count"))
            .filter_map(|c| c.as_any().downcast_ref::<UInt64Array>())
            .flat_map(|a| a.iter().flatten())
            .sum();
        Ok(Output::command(format!("COPY {count}")))
    }

    fn source_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SourceHandle>> {
        self.inner.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source registered as `schema.name`, for the streaming runtime.
    pub fn source(&self, key: &str) -> Option<SourceHandle> {
        self.source_map().get(key).cloned()
    }

    /// The source a client names as SQL would (`clicks`, `public.clicks`, `"Clicks"`), for
    /// frontends that address sources by name (HTTP event ingest).
    pub fn find_source(&self, name: &str) -> Option<SourceHandle> {
        self.source(&table_key(&TableReference::from(name)))
    }

    /// Where the source `key` may keep its own files.
    fn source_storage_dir(&self, key: &str) -> PathBuf {
        self.data_dir().join("sources").join(key)
    }

    async fn create_source(
        &self,
        session: &Session,
        create: &CreateSource,
        sql: &str,
    ) -> Result<Output, EngineError> {
        let mut catalog = self.inner.catalog.lock().await;
        let reference = TableReference::from(create.name.to_string());
        let key = table_key(&reference);
        if session.context().table_exist(reference.clone())? {
            if create.if_not_exists {
                return Ok(Output::command("CREATE SOURCE"));
            }
            return Err(EngineError::new(
                ErrorKind::DuplicateObject,
                format!("relation \"{}\" already exists", create.name),
            ));
        }
        let handle = self
            .build_source(session, &key, create, BTreeMap::new(), true)
            .await?;
        let entry = Entry {
            id: 0,
            name: key.clone(),
            kind: EntryKind::Source,
            sql: Some(sql.to_string()),
            schema: Some(handle.source.schema().as_ref().clone()),
            location: Some(handle.source.describe()),
            base_dir: None,
            state: handle.source.state(),
        };
        self.register_source(session, handle)?;
        if let Err(err) = catalog.upsert(entry) {
            let _ = session.context().deregister_table(reference);
            self.source_map().remove(&key);
            return Err(err);
        }
        Ok(Output::command("CREATE SOURCE"))
    }

    /// The text of a source's `avro.schema_file`: a local file the path policy allows, as for
    /// every path SQL names.
    fn read_schema_file(&self, path: &str) -> Result<String, EngineError> {
        let resolved =
            resolve_location(path, &self.inner.config.base_dir, &self.inner.policy, true)?;
        let LocationKind::Local = resolved.kind else {
            return Err(EngineError::new(
                ErrorKind::InvalidParameterValue,
                format!(
                    "avro.schema_file must be a local file, not {}",
                    resolved.display
                ),
            ));
        };
        let file = resolved.url.to_file_path().map_err(|()| {
            EngineError::new(
                ErrorKind::InvalidParameterValue,
                format!("avro.schema_file: {} is not a file path", resolved.display),
            )
        })?;
        std::fs::read_to_string(&file).map_err(|e| {
            EngineError::new(
                ErrorKind::Io,
                format!("avro.schema_file: could not read {}: {e}", resolved.display),
            )
        })
    }

    /// Builds a source from its statement; `state` is what it fixed when first created.
    async fn build_source(
        &self,
        session: &Session,
        key: &str,
        create: &CreateSource,
        state: BTreeMap<String, String>,
        validate: bool,
    ) -> Result<SourceHandle, EngineError> {
        let mut options = create.options.clone();
        let connector_name = options.remove("connector").ok_or_else(|| {
            EngineError::new(
                ErrorKind::InvalidParameterValue,
                "CREATE SOURCE needs WITH (connector = 'kafka' | 'http' | 'datagen' | 'nexmark', …)",
            )
        })?;
        if let Some(path) = options.remove("avro.schema_file") {
            options.insert("avro.schema".to_string(), self.read_schema_file(&path)?);
        }
        let schema = if create.columns.is_empty() {
            None
        } else {
            Some(columns_schema(session, &create.columns).await?)
        };
        let connector = freshet_connectors::source::connector(&connector_name)?;
        let config = freshet_connectors::source::SourceConfig {
            name: key.to_string(),
            schema,
            options,
            state,
            storage_dir: Some(self.source_storage_dir(key)),
        };
        let source = connector.create(config, validate).await?;
        if let Some(watermark) = &create.watermark {
            check_watermark(watermark, &source.schema())?;
        }
        Ok(SourceHandle {
            name: key.to_string(),
            connector: connector_name.to_ascii_lowercase(),
            source,
            watermark: create.watermark.clone(),
        })
    }

    fn register_source(&self, session: &Session, handle: SourceHandle) -> Result<(), EngineError> {
        let key = handle.name.clone();
        session.context().register_table(
            key_reference(&key),
            Arc::new(SourceTable::new(handle.clone())),
        )?;
        self.source_map().insert(key, handle);
        Ok(())
    }

    async fn drop_source(
        &self,
        session: &Session,
        name: &str,
        if_exists: bool,
    ) -> Result<Output, EngineError> {
        let mut catalog = self.inner.catalog.lock().await;
        let key = table_key(&TableReference::from(name));
        let readers = self.streams().readers_of(&key);
        if !readers.is_empty() {
            return Err(EngineError::new(
                ErrorKind::InvalidStatement,
                format!(
                    "cannot drop source {name}: {} read(s) it; drop them first",
                    readers.join(", ")
                ),
            ));
        }
        if !self.source_map().contains_key(&key) {
            if catalog
                .get(&key)
                .is_some_and(|e| e.kind != EntryKind::Source)
            {
                return Err(EngineError::new(
                    ErrorKind::InvalidStatement,
                    format!("\"{name}\" is not a source: use DROP TABLE or DROP VIEW"),
                ));
            }
            if if_exists {
                return Ok(Output::command("DROP SOURCE"));
            }
            return Err(EngineError::new(
                ErrorKind::UndefinedTable,
                format!("source \"{name}\" does not exist"),
            ));
        }
        session.context().deregister_table(key_reference(&key))?;
        self.source_map().remove(&key);
        catalog.remove(&key)?;
        // After the catalog forgot the source: a crash in between leaves only files that the
        // next CREATE SOURCE of that name clears.
        let storage = self.source_storage_dir(&key);
        match std::fs::remove_dir_all(&storage) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %storage.display(), error = %e, "could not delete a dropped source's files")
            }
        }
        Ok(Output::command("DROP SOURCE"))
    }

    fn show_sources(&self) -> Result<Output, EngineError> {
        use std::sync::atomic::Ordering::Relaxed;
        let sources: Vec<SourceHandle> = self.source_map().values().cloned().collect();
        let text = |f: &dyn Fn(&SourceHandle) -> String| {
            Arc::new(StringArray::from_iter_values(sources.iter().map(f)))
                as datafusion::arrow::array::ArrayRef
        };
        let count = |f: &dyn Fn(&SourceHandle) -> u64| {
            Arc::new(UInt64Array::from_iter_values(sources.iter().map(f)))
                as datafusion::arrow::array::ArrayRef
        };
        let schema = show_sources_schema();
        let columns = vec![
            text(&|h| {
                h.name
                    .strip_prefix("public.")
                    .unwrap_or(&h.name)
                    .to_string()
            }),
            text(&|h| h.connector.clone()),
            text(&|h| h.source.describe()),
            text(&|h| {
                h.watermark
                    .as_ref()
                    .map(|w| format!("{} - {} ms", w.column, w.delay_ms))
                    .unwrap_or_default()
            }),
            count(&|h| h.source.counters().messages_read.load(Relaxed)),
            count(&|h| h.source.counters().malformed_skipped.load(Relaxed)),
            text(&|h| h.source.counters().last_error().unwrap_or_default()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Output::rows(schema, vec![batch])
    }

    fn forget_unavailable(&self, key: &str) {
        self.unavailable_map().remove(key);
    }

    fn unavailable_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.inner
            .unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn own_schema(
        &self,
        session: &Session,
        own: &OwnStatement,
    ) -> Result<Option<SchemaRef>, EngineError> {
        Ok(match own {
            OwnStatement::Show { name } => Some(show_schema(session, name)?),
            OwnStatement::ShowTables => Some(show_tables_schema()),
            OwnStatement::ShowSources => Some(show_sources_schema()),
            _ => None,
        })
    }

    async fn execute_own(
        &self,
        session: &Session,
        own: &OwnStatement,
        sql: &str,
    ) -> Result<Output, EngineError> {
        match own {
            OwnStatement::Set { name, value } => {
                let status = session.set(name, value.as_deref())?;
                Ok(Output::Command {
                    tag: "SET".to_string(),
                    parameter_status: status.into_iter().collect(),
                    transaction: None,
                })
            }
            OwnStatement::SetTransaction => Ok(Output::command("SET")),
            OwnStatement::DeallocateAll => Ok(Output::command("DEALLOCATE ALL")),
            OwnStatement::NoOp { tag } => Ok(Output::command(*tag)),
            OwnStatement::Reset { name: None } | OwnStatement::DiscardAll => {
                session.reset_all();
                let tag = if matches!(own, OwnStatement::DiscardAll) {
                    "DISCARD ALL"
                } else {
                    "RESET"
                };
                Ok(Output::Command {
                    tag: tag.to_string(),
                    parameter_status: crate::session::startup_parameters(session.user()),
                    transaction: None,
                })
            }
            OwnStatement::Reset { name: Some(name) } => {
                let status = session.set(name, None)?;
                Ok(Output::Command {
                    tag: "RESET".to_string(),
                    parameter_status: status.into_iter().collect(),
                    transaction: None,
                })
            }
            OwnStatement::Show { name } => self.show(session, name),
            OwnStatement::ShowTables => self.show_tables().await,
            OwnStatement::CreateSource(create) => self.create_source(session, create, sql).await,
            OwnStatement::DropSource { name, if_exists } => {
                self.drop_source(session, name, *if_exists).await
            }
            OwnStatement::ShowSources => self.show_sources(),
            OwnStatement::Transaction { tag, kind } => Ok(Output::Command {
                tag: tag.to_string(),
                parameter_status: Vec::new(),
                transaction: Some(*kind),
            }),
        }
    }

    fn show(&self, session: &Session, name: &str) -> Result<Output, EngineError> {
        let schema = show_schema(session, name)?;
        if name == "all" {
            let all = session.all();
            let names = StringArray::from_iter_values(all.iter().map(|(n, _)| n.as_str()));
            let values = StringArray::from_iter_values(all.iter().map(|(_, v)| v.as_str()));
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(names), Arc::new(values)])?;
            return Output::rows(schema, vec![batch]);
        }
        let value = session.get(name).ok_or_else(|| unknown_setting(name))?;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![value]))],
        )?;
        Output::rows(schema, vec![batch])
    }

    async fn show_tables(&self) -> Result<Output, EngineError> {
        let catalog = self.inner.catalog.lock().await;
        let unavailable = self.unavailable_map().clone();
        let mut rows: Vec<[String; 5]> = catalog
            .entries()
            .iter()
            .filter(|e| {
                !matches!(
                    e.kind,
                    EntryKind::Schema | EntryKind::Sink | EntryKind::Model
                )
            })
            .map(|e| {
                let (schema, name) = e.name.split_once('.').unwrap_or((DEFAULT_SCHEMA, &e.name));
                let status = unavailable
                    .get(&e.name)
                    .map(|reason| format!("unavailable: {reason}"))
                    .unwrap_or_else(|| "ok".to_string());
                [
                    schema.to_string(),
                    name.to_string(),
                    e.kind.label().to_string(),
                    e.location.clone().unwrap_or_default(),
                    status,
                ]
            })
            .collect();
        rows.sort();
        let schema = show_tables_schema();
        let columns = (0..5)
            .map(|i| {
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r[i].as_str()),
                )) as _
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Output::rows(schema, vec![batch])
    }

    /// Re-creates everything in the persistent catalog, in creation order.
    async fn restore(&self) {
        let session = self.new_session("freshet");
        let catalog = self.inner.catalog.lock().await;
        let entries = catalog.entries().to_vec();
        let mut restored = 0;
        for entry in &entries {
            match self.restore_entry(&session, &catalog, entry).await {
                Ok(()) => restored += 1,
                Err(err) if entry.kind == EntryKind::Sink => {
                    tracing::error!(sink = %entry.name, error = %err, "sink could not start; retrying in the background");
                    self.retry_sink(entry.clone(), err.message().to_string());
                }
                Err(err) => {
                    tracing::error!(table = %entry.name, error = %err, "could not restore from the catalog; queries on it will report this");
                    self.mark_unavailable(&session, entry, err.message());
                }
            }
        }
        tracing::info!(
            restored,
            failed = entries.len() - restored,
            "catalog restored"
        );
    }

    async fn restore_entry(
        &self,
        session: &Session,
        catalog: &CatalogStore,
        entry: &Entry,
    ) -> Result<(), EngineError> {
        let sql = entry.sql.as_deref().unwrap_or_default();
        match entry.kind {
            EntryKind::ExternalTable => {
                let parsed = statement::parse(
                    &RawStatement::from_text(sql)?,
                    session,
                    &ActiveRules::default(),
                    &self.inner.compat_parser,
                )?;
                let Statement::CreateExternalTable(cet) = parsed.statement else {
                    return Err(EngineError::internal(
                        "catalog entry is not CREATE EXTERNAL TABLE",
                    ));
                };
                let cet = *cet;
                let base_dir = entry
                    .base_dir
                    .as_deref()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| self.inner.config.base_dir.clone());
                self.create_external_table(session, cet, &base_dir)
                    .await
                    .map(|_| ())
            }
            EntryKind::View | EntryKind::Schema => {
                let prepared = self.prepare(session, sql).await?;
                let PreparedKind::Plan(planned) = &prepared.inner.kind else {
                    return Err(EngineError::internal(
                        "catalog entry is not a plannable statement",
                    ));
                };
                session
                    .context()
                    .execute_logical_plan(planned.plan.clone())
                    .await?;
                self.catalog_changed();
                Ok(())
            }
            EntryKind::Table => self.restore_table(session, catalog, entry).await,
            EntryKind::MaterializedView => self.restore_materialized_view(session, entry).await,
            EntryKind::Sink => self.restore_sink(session, entry).await,
            EntryKind::Model => self.restore_model(session, entry).await,
            EntryKind::Source => {
                let create = crate::sources::parse_create_source(
                    &crate::statement::tokens::RawStatement::from_text(sql)?,
                )?;
                let handle = self
                    .build_source(session, &entry.name, &create, entry.state.clone(), false)
                    .await?;
                self.register_source(session, handle)
            }
        }
    }

    async fn restore_table(
        &self,
        session: &Session,
        catalog: &CatalogStore,
        entry: &Entry,
    ) -> Result<(), EngineError> {
        let (schema, batches) = catalog.read_table_data(entry)?;
        let reference = key_reference(&entry.name);
        if let Some(sql) = &entry.sql {
            // Replaying the CREATE TABLE keeps column defaults and constraints; then the rows.
            let prepared = self.prepare(session, sql).await?;
            let PreparedKind::Plan(planned) = &prepared.inner.kind else {
                return Err(EngineError::internal("catalog entry is not CREATE TABLE"));
            };
            session
                .context()
                .execute_logical_plan(planned.plan.clone())
                .await?;
            self.catalog_changed();
            let provider = session.context().table_provider(reference).await?;
            let table = provider
                .downcast_ref::<MemTable>()
                .ok_or_else(|| EngineError::internal("restored table is not in memory"))?;
            if let Some(partition) = table.batches.first() {
                partition.write().await.extend(batches);
            }
            return Ok(());
        }
        let table = MemTable::try_new(schema, vec![batches])?;
        session
            .context()
            .register_table(reference, Arc::new(table))?;
        Ok(())
    }

    fn mark_unavailable(&self, session: &Session, entry: &Entry, reason: &str) {
        self.unavailable_map()
            .insert(entry.name.clone(), reason.to_string());
        if entry.kind == EntryKind::Schema {
            return;
        }
        let schema: SchemaRef = Arc::new(entry.schema.clone().unwrap_or_else(Schema::empty));
        let table = UnavailableTable::new(&entry.name, schema, reason);
        if let Err(err) = session
            .context()
            .register_table(key_reference(&entry.name), Arc::new(table))
        {
            tracing::error!(table = %entry.name, error = %err, "could not register the unavailable table");
        }
    }
}

fn local_path_text(resolved: &ResolvedLocation) -> Result<String, EngineError> {
    let path = resolved
        .url
        .to_file_path()
        .map_err(|()| EngineError::internal(format!("{} is not a local path", resolved.url)))?;
    let mut text = path.display().to_string();
    if resolved.url.path().ends_with('/') && !text.ends_with('/') {
        text.push('/');
    }
    Ok(text)
}

fn unknown_setting(name: &str) -> EngineError {
    EngineError::new(
        ErrorKind::UndefinedObject,
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

fn show_schema(session: &Session, name: &str) -> Result<SchemaRef, EngineError> {
    if name == "all" {
        return Ok(Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ])));
    }
    if session.get(name).is_none() {
        return Err(unknown_setting(name));
    }
    let column = crate::session::display_name(name)
        .unwrap_or(name)
        .to_string();
    Ok(Arc::new(Schema::new(vec![Field::new(
        column,
        DataType::Utf8,
        false,
    )])))
}

fn show_sources_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("connector", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
        Field::new("watermark", DataType::Utf8, false),
        Field::new("messages_read", DataType::UInt64, false),
        Field::new("malformed_skipped", DataType::UInt64, false),
        Field::new("last_error", DataType::Utf8, false),
    ]))
}

/// The Arrow schema of declared columns, typed exactly as a table's would be: DataFusion plans
/// (without running) a CREATE EXTERNAL TABLE with these columns.
async fn columns_schema(
    session: &Session,
    columns: &[datafusion::sql::sqlparser::ast::ColumnDef],
) -> Result<SchemaRef, EngineError> {
    use datafusion::sql::sqlparser::ast::{Ident, ObjectName};
    let probe = CreateExternalTable {
        name: ObjectName::from(vec![Ident::new("freshet_source_columns")]),
        columns: columns.to_vec(),
        file_type: "CSV".to_string(),
        locations: vec!["/".to_string()],
        table_partition_cols: vec![],
        order_exprs: vec![],
        if_not_exists: false,
        or_replace: false,
        temporary: false,
        unbounded: false,
        options: vec![],
        constraints: vec![],
    };
    let plan = session
        .context()
        .state()
        .statement_to_plan(DfStatement::CreateExternalTable(probe))
        .await?;
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => {
            Ok(Arc::new(create.schema.as_arrow().clone()))
        }
        _ => Err(EngineError::internal(
            "column planning did not produce a table definition",
        )),
    }
}

/// DROP TABLE / DROP VIEW on a materialized view would leave its job running: point to
/// DROP MATERIALIZED VIEW instead.
fn refuse_materialized_view(
    catalog: &CatalogStore,
    key: &str,
    name: &TableReference,
) -> Result<(), EngineError> {
    match catalog.get(key) {
        Some(entry) if entry.kind == EntryKind::MaterializedView => Err(EngineError::new(
            ErrorKind::InvalidStatement,
            format!("\"{name}\" is a materialized view: use DROP MATERIALIZED VIEW"),
        )),
        _ => Ok(()),
    }
}

fn show_tables_schema() -> SchemaRef {
    Arc::new(Schema::new(
        ["schema", "name", "kind", "location", "status"]
            .into_iter()
            .map(|n| Field::new(n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ))
}

fn build_context(policy: &Arc<PathPolicy>) -> Result<SessionContext, EngineError> {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE, DEFAULT_SCHEMA)
        .with_create_default_catalog_and_schema(true)
        // `information_schema` is PostgreSQL's, registered by `pg_compat::setup`: DataFusion's
        // would hide it.
        .with_information_schema(false);
    config
        .options_mut()
        .set("datafusion.sql_parser.dialect", "PostgreSQL")?;
    // With a zone set, `timestamptz` and `now()` are zoned timestamps (sent as timestamptz, as
    // PostgreSQL does) rather than naive ones. Values are shown in each session's TimeZone.
    config
        .options_mut()
        .set("datafusion.execution.time_zone", "+00:00")?;
    let runtime = RuntimeEnvBuilder::new().build_arc()?;
    let context = SessionContext::new_with_config_rt(config, runtime);
    let local = url::Url::parse("file://").map_err(|e| EngineError::internal(e.to_string()))?;
    context.register_object_store(&local, Arc::new(SandboxedLocalStore::new(policy.clone())));
    crate::pg_compat::setup(&context, DATABASE)?;
    context.register_udf(version_udf());
    context.register_udf(crate::functions::advisory_unlock_all_udf());
    crate::windows::register(&context);
    Ok(context)
}
