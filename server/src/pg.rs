//! The PostgreSQL wire protocol frontend.
//!
//! Every statement goes through the engine's entry point ([`Engine::prepare`] /
//! [`Engine::execute_prepared`]); this module only translates between pgwire messages and
//! engine types: Arrow results to rows (through `arrow-pg`), [`EngineError`] to an
//! `ErrorResponse` with its SQLSTATE (in [`error_info`], the one place), parameters to
//! DataFusion values. It also owns the connection-level concerns: authentication, cancel
//! requests, `statement_timeout` and the connection limit.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use arrow_pg::datatypes::df::deserialize_parameters;
use async_trait::async_trait;
use freshet_sql::datafusion::arrow::datatypes::{DataType, Field};
use freshet_sql::datafusion::execution::SendableRecordBatchStream;
use freshet_sql::lifecycle::{Canceller, StatementGuard};
use freshet_sql::{
    compat, pg_types, Engine, EngineError, Output, Prepared, RawStatement, Session, TransactionKind,
};
use futures::{stream, Sink, SinkExt, StreamExt};
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata, AuthSource,
    LoginInfo, Password, ServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::DataRow;
use pgwire::messages::startup::{ParameterStatus, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;

use crate::config::User;
use crate::metrics::Metrics;
use crate::pg_encode::{encode_batch, pg_fields, pg_type};
use crate::pg_stream::{send_copy, send_live};
use crate::throttle::LoginThrottle;

/// SCRAM iterations, as PostgreSQL's default.
const SCRAM_ITERATIONS: usize = 4096;

/// Maps an engine error to a pgwire error: the one place SQLSTATEs are chosen.
pub fn error_info(err: &EngineError) -> ErrorInfo {
    ErrorInfo::new(
        "ERROR".to_string(),
        err.kind().sqlstate().to_string(),
        err.message().to_string(),
    )
}

fn pg_error(err: EngineError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&err)))
}

/// Everything the pgwire frontend shares across connections.
pub struct PgFrontend {
    engine: Engine,
    users: Option<Arc<UserStore>>,
    cancels: Arc<CancelRegistry>,
    metrics: Arc<Metrics>,
    /// Refuse start-up on a connection that did not negotiate TLS (`[tls] require`).
    tls_required: bool,
    /// Delays the answer to failed logins, per client address.
    throttle: Arc<LoginThrottle>,
}

impl PgFrontend {
    pub fn new(
        engine: Engine,
        users: &[User],
        metrics: Arc<Metrics>,
        tls_required: bool,
        throttle: Arc<LoginThrottle>,
    ) -> Arc<Self> {
        let users = (!users.is_empty()).then(|| Arc::new(UserStore::new(users)));
        Arc::new(Self {
            engine,
            users,
            cancels: Arc::new(CancelRegistry::default()),
            metrics,
            tls_required,
            throttle,
        })
    }
}

/// The per-connection handlers pgwire asks for.
pub struct Handlers {
    frontend: Arc<PgFrontend>,
    queries: Arc<QueryHandler>,
}

impl Handlers {
    pub fn new(frontend: Arc<PgFrontend>) -> Self {
        let queries = Arc::new(QueryHandler {
            frontend: frontend.clone(),
            parser: Arc::new(StatementParser {
                frontend: frontend.clone(),
            }),
        });
        Self { frontend, queries }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        // A fresh handler per connection: the SCRAM handler keeps the exchange's state.
        let auth = match &self.frontend.users {
            Some(users) => Auth::Scram(Box::new(
                SASLAuthStartupHandler::new(Arc::new(server_parameters()))
                    .with_scram(scram(users.clone()))
                    .with_pid_secret_key_generator(pid_generator()),
            )),
            None => Auth::Trust,
        };
        Arc::new(Startup {
            tls_required: self.frontend.tls_required,
            throttle: self.frontend.throttle.clone(),
            auth,
        })
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.frontend.cancels.clone()
    }
}

/// One process-id sequence for every connection: the handlers are made per connection, and a
/// generator made with them would give every connection the same process id.
fn pid_generator() -> Arc<RandomPidSecretKeyGenerator> {
    static GENERATOR: std::sync::OnceLock<Arc<RandomPidSecretKeyGenerator>> =
        std::sync::OnceLock::new();
    GENERATOR.get_or_init(Default::default).clone()
}

fn scram(users: Arc<UserStore>) -> ScramAuth {
    let mut auth = ScramAuth::new(users);
    auth.set_iterations(SCRAM_ITERATIONS);
    auth
}

fn server_parameters() -> ServerParameters {
    ServerParameters
}

/// Settings a client may choose in its start-up packet (or in `options=-c name=value`), which
/// then apply to its session and are echoed in the start-up ParameterStatus.
const STARTUP_SETTINGS: &[&str] = &[
    "application_name",
    "datestyle",
    "intervalstyle",
    "timezone",
    "extra_float_digits",
    "bytea_output",
    "search_path",
    "statement_timeout",
];

/// The settings a client asked for at start-up, by lower-case name: start-up parameters and
/// `-c name=value` / `--name=value` in `options`.
fn startup_settings(metadata: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, value: &str| {
        let name = name.trim().to_ascii_lowercase();
        if STARTUP_SETTINGS.contains(&name.as_str()) {
            settings.retain(|(n, _)| *n != name);
            settings.push((name, value.trim().to_string()));
        }
    };
    if let Some(options) = metadata.get("options") {
        let mut words = options.split_whitespace();
        while let Some(word) = words.next() {
            let assignment = match word {
                "-c" => words.next(),
                other => other
                    .strip_prefix("--")
                    .or_else(|| other.strip_prefix("-c")),
            };
            if let Some((name, value)) = assignment.and_then(|a| a.split_once('=')) {
                add(&name.replace('-', "_"), value);
            }
        }
    }
    for (name, value) in metadata {
        add(name, value);
    }
    settings
}

/// The ParameterStatus messages sent after authentication: the settings PostgreSQL reports,
/// with the values the client chose at start-up.
struct ServerParameters;

impl ServerParameterProvider for ServerParameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let metadata = client.metadata();
        let user = metadata
            .get(METADATA_USER)
            .map(String::as_str)
            .unwrap_or("freshet");
        let chosen = startup_settings(metadata);
        Some(
            freshet_sql::startup_parameters(user)
                .into_iter()
                .map(|(name, default)| {
                    let value = chosen
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                        .map(|(_, v)| v.clone())
                        .unwrap_or(default);
                    (name, value)
                })
                .collect(),
        )
    }
}

/// Connection start-up: the TLS requirement, then authentication.
struct Startup {
    tls_required: bool,
    throttle: Arc<LoginThrottle>,
    auth: Auth,
}

/// Authentication: none (any user name) or SCRAM-SHA-256.
enum Auth {
    Trust,
    Scram(Box<SASLAuthStartupHandler<ServerParameters>>),
}

/// The answer to a start-up packet on a clear-text connection when TLS is required: FATAL
/// 28000 (invalid_authorization_specification), as PostgreSQL answers a connection no
/// `hostssl`-only pg_hba.conf matches. Sent before any password is asked for.
fn tls_required_error<C: ClientInfo>(client: &C) -> PgWireError {
    let user = client
        .metadata()
        .get(METADATA_USER)
        .map(String::as_str)
        .unwrap_or("");
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        "28000".to_string(),
        format!(
            "connection without TLS refused for host \"{}\", user \"{user}\": this server \
             requires TLS (connect with sslmode=require or stronger)",
            client.socket_addr().ip()
        ),
    )))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(ref startup) = message {
            if self.tls_required && !client.is_secure() {
                tracing::info!(peer = %client.socket_addr(), "connection without TLS refused: TLS is required");
                // For the message's user name; the connection closes after the error.
                save_startup_parameters_to_metadata(client, startup);
                return Err(tls_required_error(client));
            }
        }
        let scram = match &self.auth {
            Auth::Scram(handler) => handler,
            Auth::Trust => {
                if let PgWireFrontendMessage::Startup(ref startup) = message {
                    protocol_negotiation(client, startup).await?;
                    save_startup_parameters_to_metadata(client, startup);
                    let (pid, secret_key) = pid_generator().generate(client);
                    client.set_pid_and_secret_key(pid, secret_key);
                    finish_authentication(client, &server_parameters()).await?;
                }
                return Ok(());
            }
        };
        let result = scram.on_startup(client, message).await;
        let ip = client.socket_addr().ip();
        match &result {
            // A wrong password (or user), or a SCRAM exchange that does not add up: the
            // error is sent only after the delay.
            Err(PgWireError::InvalidPassword(_) | PgWireError::InvalidScramMessage(_)) => {
                self.throttle.delay_failure(ip).await
            }
            Ok(()) if matches!(client.state(), PgWireConnectionState::ReadyForQuery) => {
                self.throttle.succeeded(ip)
            }
            _ => {}
        }
        result
    }
}

/// Users from the configuration, with SCRAM salted passwords computed once.
#[derive(Debug)]
struct UserStore {
    salted: HashMap<String, (Vec<u8>, Vec<u8>)>,
}

impl UserStore {
    fn new(users: &[User]) -> Self {
        let salted = users
            .iter()
            .map(|u| {
                let salt = rand::random::<[u8; 16]>().to_vec();
                let hash = gen_salted_password(&u.password, &salt, SCRAM_ITERATIONS);
                (u.name.clone(), (salt, hash))
            })
            .collect();
        Self { salted }
    }
}

#[async_trait]
impl AuthSource for UserStore {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.salted.get(user) {
            Some((salt, hash)) => Ok(Password::new(Some(salt.clone()), hash.clone())),
            // An unknown user gets a password nobody knows, so the exchange fails exactly like
            // a wrong password and does not reveal which user names exist.
            None => {
                let salt = rand::random::<[u8; 16]>().to_vec();
                let secret = rand::random::<[u8; 32]>();
                let hash = gen_salted_password(&format!("{secret:?}"), &salt, SCRAM_ITERATIONS);
                Ok(Password::new(Some(salt), hash))
            }
        }
    }
}

/// Finds a connection's [`Canceller`] by the (pid, secret key) of a CancelRequest. pgwire's
/// own cancel support only covers the moment a statement is planned; the canceller covers
/// planning and every row, until the statement ends.
#[derive(Default)]
struct CancelRegistry {
    connections: Mutex<Vec<(i32, SecretKey, Weak<Canceller>)>>,
}

impl CancelRegistry {
    fn register(&self, pid: i32, key: SecretKey, canceller: &Arc<Canceller>) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections.retain(|(_, _, weak)| weak.strong_count() > 0);
        connections.push((pid, key, Arc::downgrade(canceller)));
    }
}

#[async_trait]
impl CancelHandler for CancelRegistry {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let target = {
            let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            connections
                .iter()
                .find(|(pid, key, _)| *pid == request.pid && key.eq_value(&request.secret_key))
                .and_then(|(_, _, weak)| weak.upgrade())
        };
        match target {
            Some(canceller) => {
                tracing::info!(pid = request.pid, "cancel request");
                canceller.cancel();
            }
            None => tracing::debug!(pid = request.pid, "cancel request for no known connection"),
        }
    }
}

/// What a connection keeps between statements.
struct Connection {
    session: Session,
    canceller: Arc<Canceller>,
    _counted: ConnectionCount,
}

/// Counts a connection as active until dropped with it.
struct ConnectionCount(Arc<Metrics>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.pg_connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The handler for both query protocols.
pub struct QueryHandler {
    frontend: Arc<PgFrontend>,
    parser: Arc<StatementParser>,
}

fn connection<C: ClientInfo>(frontend: &PgFrontend, client: &C) -> Arc<Connection> {
    client.session_extensions().get_or_insert_with(|| {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_else(|| "freshet".to_string());
        let canceller = Arc::new(Canceller::default());
        let (pid, key) = client.pid_and_secret_key();
        frontend.cancels.register(pid, key, &canceller);
        frontend
            .metrics
            .pg_connections_active
            .fetch_add(1, Ordering::Relaxed);
        frontend
            .metrics
            .pg_connections_total
            .fetch_add(1, Ordering::Relaxed);
        let session = frontend.engine.new_session_with_pid(&user, Some(pid));
        for (name, value) in startup_settings(client.metadata()) {
            if let Err(err) = session.set(&name, Some(&value)) {
                tracing::debug!(%name, %value, error = %err, "start-up setting ignored");
            }
        }
        Connection {
            session,
            canceller,
            _counted: ConnectionCount(frontend.metrics.clone()),
        }
    })
}

/// How values are written for this session: its `IntervalStyle`, `TimeZone`, `bytea_output`
/// and `extra_float_digits`, as set at start-up or with SET.
fn format_options(session: &Session) -> Arc<FormatOptions> {
    // Dates and timestamps are always written in ISO style, whatever DateStyle says, so that
    // both are written alike.
    let mut options = FormatOptions::default();
    options.date_style = "ISO, MDY".to_string();
    if let Some(value) = session.get("intervalstyle") {
        options.interval_style = value;
    }
    if let Some(value) = session.get("bytea_output") {
        options.bytea_output = value;
    }
    if let Some(value) = session.get("timezone") {
        options.time_zone = value;
    }
    if let Some(digits) = session
        .get("extra_float_digits")
        .and_then(|v| v.trim().parse::<i8>().ok())
    {
        options.extra_float_digits = digits.clamp(-15, 3);
    }
    Arc::new(options)
}

fn rows_response(
    stream: SendableRecordBatchStream,
    guard: StatementGuard,
    format: &Format,
    options: Arc<FormatOptions>,
) -> Result<QueryResponse, EngineError> {
    let fields = pg_fields(stream.schema().as_ref(), format, options)
        .map_err(|e| EngineError::unsupported(e.to_string()))?;
    let fields = Arc::new(fields);
    let encoder_fields = fields.clone();
    let rows = guard
        .stream(stream)
        .map(
            move |batch| -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> {
                match batch {
                    Ok(batch) => Box::new(encode_batch(encoder_fields.clone(), batch)),
                    Err(err) => Box::new(std::iter::once(Err(pg_error(err)))),
                }
            },
        )
        .flat_map(stream::iter);
    Ok(QueryResponse::new(fields, rows))
}

impl QueryHandler {
    /// Runs one prepared statement and turns its output into a pgwire response.
    async fn run<C>(
        &self,
        client: &mut C,
        connection: &Connection,
        prepared: &Prepared,
        params: Option<freshet_sql::datafusion::common::ParamValues>,
        format: &Format,
        describe: bool,
        mut guard: StatementGuard,
    ) -> Result<Response, EngineError>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let output = guard
            .execute(&self.frontend.engine, &connection.session, prepared, params)
            .await?;
        match output {
            Output::Rows(stream) => Ok(Response::Query(rows_response(
                stream,
                guard,
                format,
                format_options(&connection.session),
            )?)),
            Output::CopyOut {
                rows,
                format: copy_format,
            } => {
                let fields = pg_fields(
                    rows.schema().as_ref(),
                    &Format::UnifiedText,
                    format_options(&connection.session),
                )
                .map_err(|e| EngineError::unsupported(e.to_string()))?;
                let rows = Box::pin(guard.stream(rows));
                let sent = send_copy(client, rows, Arc::new(fields), copy_format).await?;
                Ok(Response::Execution(Tag::new("COPY").with_rows(sent)))
            }
            Output::Live(stream) => {
                let fields = pg_fields(
                    stream.schema().as_ref(),
                    format,
                    format_options(&connection.session),
                )
                .map_err(|e| EngineError::unsupported(e.to_string()))?;
                let rows = Box::pin(guard.stream(stream));
                let sent = send_live(client, rows, Arc::new(fields), describe).await?;
                Ok(Response::Execution(Tag::new("SELECT").with_rows(sent)))
            }
            Output::Command {
                tag,
                parameter_status,
                transaction,
            } => {
                for (name, value) in parameter_status {
                    client
                        .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                            name, value,
                        )))
                        .await
                        .map_err(|e| {
                            EngineError::internal(format!("{:?}", PgWireError::from(e)))
                        })?;
                }
                if prepared.is_empty() {
                    return Ok(Response::EmptyQuery);
                }
                let tag = Tag::new(&tag);
                Ok(match transaction {
                    Some(TransactionKind::Start) => Response::TransactionStart(tag),
                    Some(TransactionKind::End) => Response::TransactionEnd(tag),
                    _ => Response::Execution(tag),
                })
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let connection = connection(&self.frontend, client);
        let statements = self.frontend.engine.split(query).map_err(pg_error)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for raw in statements {
            let sql = raw.text.clone();
            tracing::debug!(%sql, "simple query");
            let result = async {
                // One guard from planning to the last row: statement_timeout and cancel
                // apply to planning too.
                let mut guard =
                    StatementGuard::new(&connection.session, Some(&connection.canceller));
                let prepared = guard
                    .prepare_statement(&self.frontend.engine, &connection.session, raw, None)
                    .await?;
                self.run(
                    client,
                    &connection,
                    &prepared,
                    None,
                    &Format::UnifiedText,
                    true,
                    guard,
                )
                .await
            }
            .await;
            match result {
                Ok(response) => responses.push(response),
                Err(err) => {
                    // Like PostgreSQL, the statements after a failed one are not run.
                    tracing::debug!(%sql, error = %err, "statement failed");
                    responses.push(Response::Error(Box::new(error_info(&err))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// Parses and plans statements for the extended protocol (Parse messages).
pub struct StatementParser {
    frontend: Arc<PgFrontend>,
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let connection = connection(&self.frontend, client);
        let mut statements = self.frontend.engine.split(sql).map_err(pg_error)?;
        if statements.len() > 1 {
            return Err(pg_error(EngineError::syntax(
                "cannot insert multiple commands into a prepared statement",
            )));
        }
        let raw = statements.pop().unwrap_or_else(|| RawStatement {
            text: sql.trim().to_string(),
            span: 0..sql.len(),
            tokens: Vec::new(),
        });
        let declared: Vec<Option<DataType>> = types
            .iter()
            .map(|t| t.as_ref().and_then(pg_types::arrow_type))
            .collect();
        let prepared = StatementGuard::new(&connection.session, Some(&connection.canceller))
            .prepare_statement(
                &self.frontend.engine,
                &connection.session,
                raw,
                Some(declared),
            )
            .await
            .map_err(pg_error)?;
        Ok(Some(prepared))
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        // The replacement of asyncpg's introspection reads its parameter as oid[], which the
        // planner infers as a list of integers.
        if statement.rule_applied(compat::ASYNCPG_TYPE_INTROSPECTION) {
            return Ok(vec![Type::OID_ARRAY]);
        }
        statement
            .param_types()
            .iter()
            .map(|t| match t {
                Some(data_type) => pg_type(&Field::new("", data_type.clone(), true)),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match statement.schema() {
            Some(schema) => pg_fields(
                schema,
                format.unwrap_or(&Format::UnifiedText),
                Arc::new(FormatOptions::default()),
            ),
            None => Ok(Vec::new()),
        }
    }
}

/// JSON parameters are text to the engine: a copy of the portal with `json`/`jsonb` declared
/// as `text` (and jsonb's binary version byte removed), or `None` when there are none.
fn json_parameters_as_text(portal: &Portal<Prepared>) -> Option<Portal<Prepared>> {
    let types = &portal.statement.parameter_types;
    let is_json = |t: &Option<Type>| matches!(t, Some(t) if *t == Type::JSON || *t == Type::JSONB);
    if !types.iter().any(is_json) {
        return None;
    }
    let mut parameters = portal.parameters.clone();
    for (i, declared) in types.iter().enumerate() {
        let binary_jsonb = matches!(declared, Some(t) if *t == Type::JSONB)
            && portal.parameter_format.is_binary(i);
        if let (true, Some(Some(bytes))) = (binary_jsonb, parameters.get_mut(i)) {
            if bytes.first() == Some(&1) {
                *bytes = bytes.slice(1..);
            }
        }
    }
    let statement = pgwire::api::stmt::StoredStatement::new(
        portal.statement.id.clone(),
        portal.statement.statement.clone(),
        types
            .iter()
            .map(|t| {
                if is_json(t) {
                    Some(Type::TEXT)
                } else {
                    t.clone()
                }
            })
            .collect(),
    );
    let formats = (0..parameters.len())
        .map(|i| i16::from(portal.parameter_format.is_binary(i)))
        .collect();
    let bind = pgwire::messages::extendedquery::Bind::new(
        Some(portal.name.clone()),
        Some(portal.statement.id.clone()),
        formats,
        parameters,
        Vec::new(),
    );
    Portal::try_new(&bind, Arc::new(statement)).ok()
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Prepared;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let connection = connection(&self.frontend, client);
        let prepared = &portal.statement.statement;
        tracing::debug!(sql = prepared.sql(), "extended query");
        let params = if portal.parameter_len() > 0 {
            let inferred: Vec<Option<&DataType>> =
                prepared.param_types().iter().map(|t| t.as_ref()).collect();
            match json_parameters_as_text(portal) {
                Some(portal) => Some(deserialize_parameters(&portal, &inferred)?),
                None => Some(deserialize_parameters(portal, &inferred)?),
            }
        } else {
            None
        };
        let guard = StatementGuard::new(&connection.session, Some(&connection.canceller));
        self.run(
            client,
            &connection,
            prepared,
            params,
            &portal.result_column_format,
            false,
            guard,
        )
        .await
        .map_err(pg_error)
    }
}

/// How long a refused client gets to send its start-up packet (and finish a TLS handshake);
/// one that takes longer is closed without an answer.
const REFUSAL_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers a connection over `max_connections` the way PostgreSQL does: it reads the client's
/// start-up packet, then sends `FATAL 53300 sorry, too many clients already` and closes, so
/// psql and the drivers show that message instead of "server closed the connection
/// unexpectedly". GSS encryption is declined; TLS is accepted when the server has it (`tls`),
/// so a client that requires TLS reads the refusal too, and declined otherwise.
pub async fn refuse_too_many_clients(
    mut socket: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    use tokio::io::AsyncWriteExt;

    let refuse = async {
        // At most an SSL request, a GSS request and the start-up packet itself.
        for _ in 0..3 {
            match read_startup_packet(&mut socket).await? {
                StartupPacket::SslRequest if tls.is_some() => {
                    socket.write_all(b"S").await?;
                    let Some(acceptor) = &tls else { break };
                    let mut secure = acceptor.accept(socket).await?;
                    read_startup_packet(&mut secure).await?;
                    send_too_many_clients(&mut secure).await;
                    return Ok(());
                }
                StartupPacket::SslRequest | StartupPacket::GssRequest => {
                    socket.write_all(b"N").await?
                }
                StartupPacket::Other => break,
            }
        }
        send_too_many_clients(&mut socket).await;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(REFUSAL_READ_TIMEOUT, refuse).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "refused client went away"),
        Err(_) => tracing::debug!("refused client sent no start-up packet in time"),
    }
}

/// Sends FATAL 53300 and closes.
async fn send_too_many_clients<S: tokio::io::AsyncWrite + Unpin>(socket: &mut S) {
    use pgwire::messages::response::ErrorResponse;
    use pgwire::messages::Message;
    use tokio::io::AsyncWriteExt;

    let info = ErrorInfo::new(
        "FATAL".to_string(),
        "53300".to_string(),
        "sorry, too many clients already".to_string(),
    );
    let mut buffer = bytes::BytesMut::new();
    if ErrorResponse::from(info).encode(&mut buffer).is_ok() {
        let _ = tokio::time::timeout(REFUSAL_READ_TIMEOUT, socket.write_all(&buffer)).await;
    }
    let _ = socket.shutdown().await;
}

enum StartupPacket {
    /// SSLRequest: answered with `S` (then TLS) or `N`, then the client sends another packet.
    SslRequest,
    /// GSSENCRequest: answered with `N`, then the client sends another packet.
    GssRequest,
    /// A start-up packet, a cancel request or anything else.
    Other,
}

/// Reads one length-prefixed start-up-phase packet (at most 10 000 bytes, as pgwire allows).
async fn read_startup_packet<S: tokio::io::AsyncRead + Unpin>(
    socket: &mut S,
) -> std::io::Result<StartupPacket> {
    use tokio::io::AsyncReadExt;
    const SSL_REQUEST: i32 = 80_877_103;
    const GSS_REQUEST: i32 = 80_877_104;
    let length = socket.read_i32().await?;
    if !(8..=10_000).contains(&length) {
        return Ok(StartupPacket::Other);
    }
    let mut body = vec![0u8; length as usize - 4];
    socket.read_exact(&mut body).await?;
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    Ok(match code {
        SSL_REQUEST => StartupPacket::SslRequest,
        GSS_REQUEST => StartupPacket::GssRequest,
        _ => StartupPacket::Other,
    })
}

/// Serves one accepted socket until the client leaves. With `tls`, an SSLRequest is accepted
/// and the connection encrypted (pgwire negotiates it, within the start-up timeout).
pub async fn serve_socket(
    socket: tokio::net::TcpStream,
    frontend: Arc<PgFrontend>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let peer = socket.peer_addr().ok();
    let _ = socket.set_nodelay(true);
    if let Err(err) = pgwire::tokio::process_socket(socket, tls, Handlers::new(frontend)).await {
        tracing::debug!(?peer, error = %err, "connection ended with an error");
    }
}
