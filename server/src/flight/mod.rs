//! The Arrow Flight SQL frontend.
//!
//! Every statement goes through the engine's entry point ([`freshet_sql::Engine::prepare`] /
//! [`freshet_sql::Engine::execute_prepared`]), as over pgwire, so Freshet's own statements
//! (`SHOW TABLES`, `SET`, `CREATE EXTERNAL TABLE` …) behave the same on both. This module owns
//! what is particular to Flight:
//!
//! - [`FlightFrontend`], the gRPC service: it authenticates every call (see [`auth`]), attaches
//!   the caller's session, then hands Flight SQL commands to [`service::FlightSql`]. A DoGet
//!   ticket that is not a Flight SQL command is read as SQL text, so plain `pyarrow.flight`
//!   clients can run `do_get(Ticket(b"SELECT …"))`.
//! - Sessions ([`registry`]). Flight calls are independent, so a session is kept per client
//!   connection without authentication (closed with the connection) and per bearer token with
//!   it, in bounded maps.
//! - [`status`], the one place an [`EngineError`] becomes a gRPC status.
//! - [`serve`], the listener, with a connection limit and TLS (see [`crate::tls`]).
//!
//! It must not reach past the engine into DataFusion's session: catalog metadata is read with
//! SQL over `information_schema`, through the engine.

mod auth;
mod metadata;
mod registry;
mod results;
mod service;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::Any;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use freshet_sql::{Engine, EngineError, ErrorKind, Session};
use futures::stream;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;
use tonic::{Code, Request, Response, Status, Streaming};

use self::auth::{credentials, is_refused, refused, Credentials, Users};
use self::registry::{random_hex, Registry, SessionKey};
use self::service::FlightSql;
use crate::config::User;
use crate::throttle::LoginThrottle;

/// Most calls in flight on one client connection at once.
const STREAMS_PER_CONNECTION_MAX: u32 = 64;
/// Largest message a client may send (DoPut parameter batches).
const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The gRPC code for each kind of engine error: the one place Flight chooses codes.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Syntax | ErrorKind::InvalidStatement | ErrorKind::InvalidParameterValue => {
            Code::InvalidArgument
        }
        ErrorKind::UndefinedTable
        | ErrorKind::UndefinedColumn
        | ErrorKind::UndefinedFunction
        | ErrorKind::UndefinedObject
        | ErrorKind::UndefinedFile => Code::NotFound,
        ErrorKind::DuplicateObject => Code::AlreadyExists,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::FeatureNotSupported => Code::Unimplemented,
        ErrorKind::Canceled => Code::Cancelled,
        ErrorKind::ResourcesExhausted
        | ErrorKind::ProgramLimitExceeded
        | ErrorKind::StatementTooComplex => Code::ResourceExhausted,
        ErrorKind::UndefinedParameter => Code::InvalidArgument,
        ErrorKind::AmbiguousColumn
        | ErrorKind::CantChangeSetting
        | ErrorKind::DataException
        | ErrorKind::DivisionByZero
        | ErrorKind::NotNullViolation
        | ErrorKind::Io
        | ErrorKind::Internal => Code::Internal,
    }
}

/// An engine error as a gRPC status carrying the engine's message.
pub fn status(err: &EngineError) -> Status {
    Status::new(code(err.kind()), err.message())
}

/// Who is calling; attached to every request once it is authenticated.
#[derive(Clone)]
pub struct Caller {
    pub key: SessionKey,
    pub session: Arc<Session>,
}

/// Identifies a client connection; tonic attaches it to every request on the connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub id: u64,
    pub peer: Option<SocketAddr>,
}

/// The Flight service: authentication and sessions in front of the Flight SQL commands.
pub struct FlightFrontend {
    sql: FlightSql,
    users: Option<Users>,
    registry: Arc<Registry>,
    /// Delays the answer to wrong passwords, per client address.
    throttle: Arc<LoginThrottle>,
}

impl FlightFrontend {
    pub fn new(engine: Engine, users: &[User], throttle: Arc<LoginThrottle>) -> Self {
        let registry = Registry::new(engine.clone());
        Self {
            sql: FlightSql::new(engine, registry.clone()),
            users: Users::new(users),
            registry,
            throttle,
        }
    }

    /// [`Self::authenticate`], with a wrong user name or password answered only after the
    /// failed-login delay of the caller's address, and a right one clearing its failures.
    async fn admit<T>(&self, request: &mut Request<T>) -> Result<Option<String>, Status> {
        let result = self.authenticate(request);
        self.after_login(peer_ip(request), &result).await;
        result
    }

    async fn after_login(
        &self,
        ip: Option<std::net::IpAddr>,
        result: &Result<Option<String>, Status>,
    ) {
        let Some(ip) = ip else { return };
        match result {
            Err(status) if is_refused(status) => self.throttle.delay_failure(ip).await,
            Ok(Some(_)) => self.throttle.succeeded(ip),
            _ => {}
        }
    }

    /// Checks the caller and attaches its [`Caller`]. Returns the token issued when the call
    /// carried a user name and password instead of a token.
    fn authenticate<T>(&self, request: &mut Request<T>) -> Result<Option<String>, Status> {
        let (caller, issued) = match &self.users {
            None => {
                let connection = request
                    .extensions()
                    .get::<ConnectionInfo>()
                    .ok_or_else(|| Status::internal("the call carries no connection information"))?;
                let session = self.registry.connection_session(connection.id);
                let key = SessionKey::Connection(connection.id);
                (Caller { key, session }, None)
            }
            Some(users) => match credentials(request.metadata())? {
                Credentials::Bearer(token) => {
                    let session = self.registry.token_session(&token).ok_or_else(|| {
                        Status::unauthenticated("unknown or expired bearer token: authenticate again")
                    })?;
                    (Caller { key: SessionKey::Token(token), session }, None)
                }
                Credentials::Basic { user, password } => {
                    if !users.verify(&user, &password) {
                        return Err(refused());
                    }
                    let token = random_hex::<32>();
                    let session = self.registry.open_token_session(&token, &user);
                    let key = SessionKey::Token(token.clone());
                    (Caller { key, session }, Some(token))
                }
                Credentials::Missing => {
                    return Err(Status::unauthenticated(
                        "authentication required: send Basic credentials in a Handshake, then the bearer token it returns",
                    ))
                }
            },
        };
        request.extensions_mut().insert(caller);
        Ok(issued)
    }

    /// Answers a Handshake: Basic credentials in, bearer token out. Without authentication
    /// any handshake succeeds and no token is issued.
    fn handshake_token(
        &self,
        request: &Request<Streaming<HandshakeRequest>>,
    ) -> Result<Option<String>, Status> {
        let Some(users) = &self.users else {
            return Ok(None);
        };
        match credentials(request.metadata())? {
            Credentials::Basic { user, password } => {
                if !users.verify(&user, &password) {
                    return Err(refused());
                }
                let token = random_hex::<32>();
                self.registry.open_token_session(&token, &user);
                tracing::debug!(%user, "flight client authenticated");
                Ok(Some(token))
            }
            Credentials::Bearer(token) if self.registry.token_session(&token).is_some() => {
                Ok(Some(token))
            }
            Credentials::Bearer(_) => {
                Err(Status::unauthenticated("unknown or expired bearer token"))
            }
            Credentials::Missing => Err(Status::unauthenticated(
                "Handshake needs Basic credentials (user and password) in the authorization header",
            )),
        }
    }
}

/// The client's address, from the connection the call came on.
fn peer_ip<T>(request: &Request<T>) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(|c| c.peer)
        .map(|p| p.ip())
}

/// Adds `authorization: Bearer <token>` to a response that issued a token.
fn with_token<T>(mut response: Response<T>, issued: Option<String>) -> Response<T> {
    if let Some(token) = issued {
        // A token is hex digits, so it always makes a valid header value.
        if let Ok(value) = format!("Bearer {token}").parse() {
            response.metadata_mut().insert("authorization", value);
        }
    }
    response
}

/// Whether a ticket is a Flight SQL command rather than SQL text.
fn is_flight_sql_command(ticket: &[u8]) -> bool {
    Any::decode(ticket).is_ok_and(|any| {
        any.type_url
            .starts_with("type.googleapis.com/arrow.flight.protocol.sql.")
    })
}

type Boxed<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for FlightFrontend {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoExchangeStream = Boxed<FlightData>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let token = self.handshake_token(&request);
        self.after_login(peer_ip(&request), &token).await;
        let token = token?;
        let payload = token.clone().unwrap_or_default().into_bytes();
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: payload.into(),
        };
        let output: Self::HandshakeStream = Box::pin(stream::iter([Ok(reply)]));
        Ok(with_token(Response::new(output), token))
    }

    async fn list_flights(
        &self,
        mut request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let issued = self.admit(&mut request).await?;
        Ok(with_token(self.sql.list_flights(request).await?, issued))
    }

    async fn get_flight_info(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let issued = self.admit(&mut request).await?;
        Ok(with_token(self.sql.get_flight_info(request).await?, issued))
    }

    async fn poll_flight_info(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let issued = self.admit(&mut request).await?;
        Ok(with_token(
            self.sql.poll_flight_info(request).await?,
            issued,
        ))
    }

    async fn get_schema(
        &self,
        mut request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let issued = self.admit(&mut request).await?;
        Ok(with_token(self.sql.get_schema(request).await?, issued))
    }

    async fn do_get(
        &self,
        mut request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let issued = self.admit(&mut request).await?;
        let response = if is_flight_sql_command(&request.get_ref().ticket) {
            self.sql.do_get(request).await?
        } else {
            self.sql.do_get_sql_text(request).await?
        };
        Ok(with_token(response, issued))
    }

    async fn do_put(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let issued = self.admit(&mut request).await?;
        Ok(with_token(self.sql.do_put(request).await?, issued))
    }

    async fn do_exchange(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let issued = self.admit(&mut request).await?;
        Ok(with_token(self.sql.do_exchange(request).await?, issued))
    }

    async fn do_action(
        &self,
        mut request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let issued = self.admit(&mut request).await?;
        Ok(with_token(self.sql.do_action(request).await?, issued))
    }

    async fn list_actions(
        &self,
        mut request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let issued = self.admit(&mut request).await?;
        Ok(with_token(self.sql.list_actions(request).await?, issued))
    }
}

/// An accepted connection. Holds its place under the connection limit, and closes its session
/// when tonic drops it at the end of the connection.
struct TrackedStream {
    socket: crate::tls::Stream,
    info: ConnectionInfo,
    registry: Arc<Registry>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        tracing::debug!(id = self.info.id, peer = ?self.info.peer, "flight connection closed");
        self.registry.close(&SessionKey::Connection(self.info.id));
    }
}

impl Connected for TrackedStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}

/// Serves Flight SQL on `listener` until the task is aborted. At most `connections_max`
/// client connections are open at once; connections beyond are closed at once. With `tls`,
/// connections are encrypted (grpc+tls), and clear-text ones served or refused as it says.
pub async fn serve(
    listener: TcpListener,
    frontend: FlightFrontend,
    connections_max: usize,
    tls: Option<Arc<crate::tls::Handshake>>,
) {
    let limit = Arc::new(Semaphore::new(connections_max));
    // The place under the limit is taken before the TLS handshake, so handshakes count too.
    let admit = move |peer: SocketAddr| match limit.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => {
            tracing::warn!(%peer, connections_max, "flight connection refused: too many connections");
            None
        }
    };
    let accepted = crate::tls::incoming(listener, tls, admit);
    let registry = frontend.registry.clone();
    let next_id = AtomicU64::new(1);
    let incoming = Box::pin(stream::unfold(accepted, move |mut accepted| {
        let registry = registry.clone();
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        async move {
            let connection = accepted.recv().await?;
            let stream = TrackedStream {
                socket: connection.stream,
                info: ConnectionInfo {
                    id,
                    peer: Some(connection.peer),
                },
                registry,
                _permit: connection.admitted,
            };
            Some((Ok::<_, std::io::Error>(stream), accepted))
        }
    }));
    let service = FlightServiceServer::new(frontend).max_decoding_message_size(MESSAGE_BYTES_MAX);
    let result = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .add_service(service)
        .serve_with_incoming(incoming)
        .await;
    if let Err(err) = result {
        tracing::error!(error = %err, "flight server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_map_to_grpc_codes() {
        let cases = [
            (ErrorKind::Syntax, Code::InvalidArgument),
            (ErrorKind::InvalidStatement, Code::InvalidArgument),
            (ErrorKind::InvalidParameterValue, Code::InvalidArgument),
            (ErrorKind::UndefinedTable, Code::NotFound),
            (ErrorKind::UndefinedColumn, Code::NotFound),
            (ErrorKind::UndefinedFunction, Code::NotFound),
            (ErrorKind::UndefinedObject, Code::NotFound),
            (ErrorKind::UndefinedFile, Code::NotFound),
            (ErrorKind::DuplicateObject, Code::AlreadyExists),
            (ErrorKind::PermissionDenied, Code::PermissionDenied),
            (ErrorKind::FeatureNotSupported, Code::Unimplemented),
            (ErrorKind::Canceled, Code::Cancelled),
            (ErrorKind::ResourcesExhausted, Code::ResourceExhausted),
            (ErrorKind::ProgramLimitExceeded, Code::ResourceExhausted),
            (ErrorKind::StatementTooComplex, Code::ResourceExhausted),
            (ErrorKind::UndefinedParameter, Code::InvalidArgument),
            (ErrorKind::DivisionByZero, Code::Internal),
            (ErrorKind::Io, Code::Internal),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, expected) in cases {
            assert_eq!(code(kind), expected, "{kind:?}");
        }
        let err = EngineError::new(
            ErrorKind::UndefinedTable,
            "table 'freshet.public.nope' not found",
        );
        let status = status(&err);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "table 'freshet.public.nope' not found");
    }

    #[test]
    fn sql_text_tickets_are_told_apart_from_commands() {
        use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
        let command = TicketStatementQuery {
            statement_handle: "SELECT 1".into(),
        };
        assert!(is_flight_sql_command(&command.as_any().encode_to_vec()));
        assert!(!is_flight_sql_command(b"SELECT 1"));
        assert!(!is_flight_sql_command(b""));
        assert!(!is_flight_sql_command("SELECT 'é'".as_bytes()));
    }
}
