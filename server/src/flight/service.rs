//! The Flight SQL commands, each answered through the engine's entry point.
//!
//! Statements (queries, updates, prepared statements, and the plain-ticket path) go through
//! [`Engine::prepare`] / [`Engine::execute_prepared`] exactly as pgwire's do. Catalog metadata
//! (GetCatalogs, GetDbSchemas, GetTables) is read with SQL over `information_schema`, also through
//! the engine, so Flight and pgwire clients see the same tables. Results are encoded batch by batch
//! as the client reads them; nothing collects a whole result.
//!
//! Commands without rows (`CREATE …`, `SET …`, `INSERT …` sent as a query) run when the client
//! asks for their `FlightInfo`, which then lists no endpoints: there is nothing to fetch.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, SqlNullOrdering,
    SqlSupportedCaseSensitivity, SqlSupportedTransaction, SupportedSqlGrammar,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc,
    Ticket,
};
use freshet_sql::datafusion::arrow::array::{Array, RecordBatch, StringArray};
use freshet_sql::datafusion::arrow::compute::cast;
use freshet_sql::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use freshet_sql::datafusion::arrow::ipc::writer::IpcWriteOptions;
use freshet_sql::datafusion::common::{ParamValues, ScalarValue};
use freshet_sql::datafusion::execution::SendableRecordBatchStream;
use freshet_sql::{split_statements, Engine, EngineError, ErrorKind, Output, Prepared, Session};
use futures::{stream, Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::registry::Registry;
use super::{status, Caller};
use crate::metrics::Metrics;

/// Most parameter rows one DoPut may bind (each row runs the statement once).
pub const PARAMETER_ROWS_MAX: usize = 10_000;
/// Most rows a metadata query over `information_schema` may return.
const METADATA_ROWS_MAX: usize = 100_000;
/// Every schema: `information_schema.schemata` leaves out `information_schema` itself, whose
/// tables GetTables does list.
const SCHEMAS: &str = "SELECT catalog_name, schema_name FROM information_schema.schemata \
     UNION SELECT table_catalog, table_schema FROM information_schema.tables";
/// Table types GetTables reports, as `information_schema.tables` names them.
const TABLE_TYPES: [&str; 3] = ["BASE TABLE", "LOCAL TEMPORARY", "VIEW"];

/// The Arrow version Freshet is built with, reported by GetSqlInfo. A test checks it against
/// Cargo.lock.
const ARROW_VERSION: &str = "59.3.2";

/// The stream type every DoGet answers with.
pub type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The Flight SQL service. Authentication happened before any of these methods run: each
/// request carries its [`Caller`].
pub struct FlightSql {
    engine: Engine,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    sql_info: SqlInfoData,
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("the call reached the SQL service unauthenticated"))
}

fn no_transactions(transaction_id: &Option<bytes::Bytes>) -> Result<(), Status> {
    match transaction_id {
        Some(id) if !id.is_empty() => Err(Status::unimplemented(
            "Freshet does not support Flight SQL transactions; run statements without one",
        )),
        _ => Ok(()),
    }
}

fn arrow_status(context: &str, err: impl std::fmt::Display) -> Status {
    Status::internal(format!("{context}: {err}"))
}

/// A schema as the bytes of an IPC schema message, as Flight SQL sends schemas.
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| arrow_status("could not encode a schema", e))?;
    Ok(bytes)
}

/// The schema as it travels over Flight: dictionaries are sent as their values.
fn flight_schema(schema: &SchemaRef) -> SchemaRef {
    FlightDataEncoderBuilder::new()
        .with_schema(schema.clone())
        .build(stream::empty())
        .known_schema()
        .unwrap_or_else(|| schema.clone())
}

/// Encodes record batches to Flight data, one batch at a time, as the client reads.
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, EngineError>> + Send + 'static,
) -> DoGetStream {
    let batches = batches.map_err(|e| FlightError::Tonic(Box::new(status(&e))));
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Box::pin(data)
}

fn encode_batch(batch: RecordBatch) -> DoGetStream {
    encode(batch.schema(), stream::iter([Ok(batch)]))
}

fn statement_timeout() -> EngineError {
    EngineError::new(
        ErrorKind::Canceled,
        "canceling statement due to statement timeout",
    )
}

/// Stops a result stream at the statement's deadline (`statement_timeout`).
fn guarded(
    stream: SendableRecordBatchStream,
    deadline: Option<Instant>,
) -> impl Stream<Item = Result<RecordBatch, EngineError>> + Send {
    stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        let next = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, stream.next())
                .await
                .unwrap_or_else(|_| Some(Err(statement_timeout().into()))),
            None => stream.next().await,
        };
        match next? {
            Ok(batch) => Some((Ok(batch), Some(stream))),
            Err(err) => Some((Err(EngineError::from(err)), None)),
        }
    })
}

/// Gives a result batch the schema announced when the statement was prepared.
///
/// The announced schema comes from planning before parameter values are known, the rows from
/// the plan made with them, so the two may differ in nullability (`$1 + 1` may be NULL until
/// `$1` is known) or, rarely, in type. Columns are cast to the announced types.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, EngineError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(EngineError::internal(format!(
            "the result has {} columns but {} were announced",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                return Ok(column.clone());
            }
            let mismatch = |reason: String| {
                EngineError::new(
                    ErrorKind::InvalidStatement,
                    format!(
                        "column \"{}\" is {} but was announced as {} when the statement was prepared \
                         (add a CAST to its parameter): {reason}",
                        field.name(),
                        column.data_type(),
                        field.data_type()
                    ),
                )
            };
            // Arrow casts some types to Null by dropping every value; never do that to a result.
            if field.data_type() == &DataType::Null {
                return Err(mismatch("the type was unknown".to_string()));
            }
            cast(column, field.data_type()).map_err(|e| mismatch(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The row count of a command tag: `INSERT 0 3` → 3, `CREATE TABLE` → 0.
fn affected_rows(tag: &str) -> i64 {
    let counted = ["INSERT", "UPDATE", "DELETE", "SELECT", "COPY", "MERGE"];
    let first = tag.split_whitespace().next().unwrap_or_default();
    if !counted.contains(&first) {
        return 0;
    }
    tag.split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// Reads the parameter rows of a DoPut: each row is one set of values for `$1 … $n`.
async fn parameter_rows(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<Vec<ScalarValue>>, Status> {
    let data = request.into_inner().map_err(FlightError::from);
    let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
    let mut rows = Vec::new();
    while let Some(batch) = batches.next().await {
        let batch = batch
            .map_err(|e| Status::invalid_argument(format!("could not read the parameters: {e}")))?;
        if rows.len() + batch.num_rows() > PARAMETER_ROWS_MAX {
            return Err(Status::resource_exhausted(format!(
                "at most {PARAMETER_ROWS_MAX} parameter rows may be bound at once"
            )));
        }
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|column| ScalarValue::try_from_array(column, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    Status::invalid_argument(format!("unsupported parameter value: {e}"))
                })?;
            rows.push(values);
        }
    }
    Ok(rows)
}

/// The SqlInfo values GetSqlInfo reports.
fn sql_info() -> SqlInfoData {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "Freshet");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, ARROW_VERSION);
    info.append(SqlInfo::FlightSqlServerReadOnly, false);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, true);
    info.append(SqlInfo::SqlDdlTable, true);
    info.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    info.append(SqlInfo::SqlAllTablesAreSelectable, true);
    info.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    info.append(SqlInfo::SqlSearchStringEscape, "\\");
    info.append(SqlInfo::SqlSupportsColumnAliasing, true);
    info.append(SqlInfo::SqlNullPlusNullIsNull, true);
    info.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32)
            | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    info.append(SqlInfo::SqlTransactionsSupported, false);
    // Only constants above: failing to encode them is a bug.
    info.build().expect("the SqlInfo constants encode")
}

/// A double-quoted SQL identifier.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The text of every column of `batch` at `row` (NULL as the empty string).
fn text_columns(batch: &RecordBatch) -> Result<Vec<StringArray>, Status> {
    batch
        .columns()
        .iter()
        .map(|column| {
            let text =
                cast(column, &DataType::Utf8).map_err(|e| arrow_status("metadata column", e))?;
            text.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| Status::internal("metadata column is not text"))
        })
        .collect()
}

impl FlightSql {
    pub fn new(engine: Engine, registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        Self {
            engine,
            registry,
            metrics,
            sql_info: sql_info(),
        }
    }

    /// Prepares the one statement of `sql` (a trailing `;` or comments are fine).
    async fn prepare(&self, session: &Session, sql: &str) -> Result<Prepared, Status> {
        let mut statements = split_statements(sql).map_err(|e| status(&e))?;
        if statements.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "a Flight SQL call runs one statement; this text has {}",
                statements.len()
            )));
        }
        let text = statements.pop().unwrap_or_default();
        self.engine
            .prepare(session, &text)
            .await
            .map_err(|e| status(&e))
    }

    /// Runs a statement within its `statement_timeout`; returns the deadline that also bounds
    /// reading its rows.
    async fn run(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<(Output, Option<Instant>), Status> {
        self.metrics.queries_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(sql = prepared.sql(), "flight statement");
        let deadline = session.statement_timeout().map(|t| Instant::now() + t);
        let work = self
            .engine
            .execute_prepared(session, prepared, params.map(ParamValues::from));
        let result = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, work)
                .await
                .unwrap_or_else(|_| Err(statement_timeout())),
            None => work.await,
        };
        match result {
            Ok(output) => Ok((output, deadline)),
            Err(err) => {
                self.metrics
                    .query_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sql = prepared.sql(), error = %err, "flight statement failed");
                Err(status(&err))
            }
        }
    }

    /// Runs a statement and streams its rows; a command yields no rows and no columns.
    ///
    /// With `announce`, the rows are sent with the schema the statement's FlightInfo announced
    /// (clients such as ADBC check that they match exactly): see [`conform`].
    async fn rows(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Option<Vec<ScalarValue>>,
        announce: bool,
    ) -> Result<DoGetStream, Status> {
        let announced = prepared.schema().filter(|_| announce).map(flight_schema);
        match self.run(session, prepared, params).await? {
            (Output::Rows(stream), deadline) => match announced {
                Some(schema) => {
                    let target = schema.clone();
                    let batches =
                        guarded(stream, deadline).map(move |batch| conform(batch?, &target));
                    Ok(encode(schema, batches))
                }
                None => Ok(encode(stream.schema(), guarded(stream, deadline))),
            },
            (Output::Command { .. }, _) => Ok(encode(Arc::new(Schema::empty()), stream::empty())),
        }
    }

    /// Runs a statement that must not return rows; returns how many rows it changed.
    async fn update(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<i64, Status> {
        if prepared.schema().is_some() {
            return Err(Status::invalid_argument(
                "this statement returns rows: run it as a query, not as an update",
            ));
        }
        match self.run(session, prepared, params).await? {
            (Output::Command { tag, .. }, _) => Ok(affected_rows(&tag)),
            (Output::Rows(_), _) => Err(Status::internal(
                "a statement without a schema returned rows",
            )),
        }
    }

    /// The FlightInfo of a statement. A command runs now and lists no endpoint; a query lists
    /// one endpoint whose ticket runs it.
    async fn statement_info(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Option<Vec<ScalarValue>>,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let info = FlightInfo::new().with_descriptor(descriptor);
        let Some(schema) = prepared.schema() else {
            self.run(session, prepared, params).await?;
            return info
                .try_with_schema(&Schema::empty())
                .map_err(|e| arrow_status("could not encode a schema", e));
        };
        info.try_with_schema(&flight_schema(schema))
            .map_err(|e| arrow_status("could not encode a schema", e))
            .map(|info| {
                info.with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
                    .with_ordered(true)
            })
    }

    /// The FlightInfo of a metadata command: its schema, and a ticket that is the command itself.
    fn metadata_info(
        schema: &Schema,
        command: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let ticket = Ticket::new(command.as_any().encode_to_vec());
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| arrow_status("could not encode a schema", e))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor))
    }

    /// Runs SQL text (the ticket of a plain `pyarrow.flight` DoGet) and streams its rows.
    pub async fn do_get_sql_text(
        &self,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        let sql = std::str::from_utf8(&request.get_ref().ticket).map_err(|_| {
            Status::invalid_argument(
                "the ticket is neither a Flight SQL command nor UTF-8 SQL text",
            )
        })?;
        let prepared = self.prepare(&caller.session, sql).await?;
        Ok(Response::new(
            self.rows(&caller.session, &prepared, None, false).await?,
        ))
    }

    /// The rows of a metadata query over `information_schema`, every value as text.
    async fn metadata_rows(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Vec<Vec<String>>, Status> {
        let prepared = self
            .engine
            .prepare(session, sql)
            .await
            .map_err(|e| status(&e))?;
        let params = (!params.is_empty()).then(|| ParamValues::from(params));
        let output = self
            .engine
            .execute_prepared(session, &prepared, params)
            .await
            .map_err(|e| status(&e))?;
        let Output::Rows(mut batches) = output else {
            return Err(Status::internal("a metadata query returned no rows"));
        };
        let mut rows = Vec::new();
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| status(&EngineError::from(e)))?;
            if rows.len() + batch.num_rows() > METADATA_ROWS_MAX {
                return Err(Status::resource_exhausted(format!(
                    "more than {METADATA_ROWS_MAX} rows of metadata; narrow the request with filters"
                )));
            }
            let columns = text_columns(&batch)?;
            for row in 0..batch.num_rows() {
                rows.push(
                    columns
                        .iter()
                        .map(|c| {
                            if c.is_null(row) {
                                String::new()
                            } else {
                                c.value(row).to_string()
                            }
                        })
                        .collect(),
                );
            }
        }
        Ok(rows)
    }

    /// The columns of a table, read by planning `SELECT * … LIMIT 0` through the engine.
    async fn table_schema(
        &self,
        session: &Session,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Schema {
        let sql = format!(
            "SELECT * FROM {}.{}.{} LIMIT 0",
            quote(catalog),
            quote(schema),
            quote(table)
        );
        match self.engine.prepare(session, &sql).await {
            Ok(prepared) => prepared
                .schema()
                .map(|s| flight_schema(s).as_ref().clone())
                .unwrap_or_else(Schema::empty),
            Err(err) => {
                tracing::debug!(%catalog, %schema, %table, error = %err, "no schema for GetTables");
                Schema::empty()
            }
        }
    }

    async fn catalogs_batch(
        &self,
        session: &Session,
        query: CommandGetCatalogs,
    ) -> Result<RecordBatch, Status> {
        let rows = self
            .metadata_rows(
                session,
                &format!("SELECT DISTINCT catalog_name FROM ({SCHEMAS})"),
                Vec::new(),
            )
            .await?;
        let mut builder = query.into_builder();
        for row in rows {
            builder.append(&row[0]);
        }
        builder.build().map_err(|e| arrow_status("GetCatalogs", e))
    }

    async fn schemas_batch(
        &self,
        session: &Session,
        query: CommandGetDbSchemas,
    ) -> Result<RecordBatch, Status> {
        let rows = self.metadata_rows(session, SCHEMAS, Vec::new()).await?;
        let mut builder = query.into_builder();
        for row in rows {
            builder.append(&row[0], &row[1]);
        }
        builder.build().map_err(|e| arrow_status("GetDbSchemas", e))
    }

    async fn tables_batch(
        &self,
        session: &Session,
        query: CommandGetTables,
    ) -> Result<RecordBatch, Status> {
        // Filter in SQL first, so table schemas are only looked up for the tables returned.
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        let filters = [
            ("table_catalog =", &query.catalog),
            ("table_schema LIKE", &query.db_schema_filter_pattern),
            ("table_name LIKE", &query.table_name_filter_pattern),
        ];
        for (condition, value) in filters {
            if let Some(value) = value {
                params.push(ScalarValue::Utf8(Some(value.clone())));
                conditions.push(format!("{condition} ${}", params.len()));
            }
        }
        let mut sql = "SELECT table_catalog, table_schema, table_name, table_type FROM information_schema.tables".to_string();
        if !conditions.is_empty() {
            sql = format!("{sql} WHERE {}", conditions.join(" AND "));
        }
        let rows = self.metadata_rows(session, &sql, params).await?;
        let types = query.table_types.clone();
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        for row in rows {
            let [catalog, schema, table, kind] = &row[..] else {
                return Err(Status::internal(
                    "information_schema.tables has an unexpected shape",
                ));
            };
            if !types.is_empty() && !types.contains(kind) {
                continue;
            }
            let columns = if include_schema {
                self.table_schema(session, catalog, schema, table).await
            } else {
                Schema::empty()
            };
            builder
                .append(catalog, schema, table, kind, &columns)
                .map_err(|e| arrow_status("GetTables", e))?;
        }
        builder.build().map_err(|e| arrow_status("GetTables", e))
    }
}

fn table_types_batch(query: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for kind in TABLE_TYPES {
        builder.append(kind);
    }
    builder
        .build()
        .map_err(|e| arrow_status("GetTableTypes", e))
}

fn handle_text(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle).map_err(|_| unknown_handle())
}

fn unknown_handle() -> Status {
    Status::not_found("unknown prepared statement handle (closed, evicted, or from another session): prepare it again")
}

impl FlightSql {
    fn prepared_statement(
        &self,
        caller: &Caller,
        handle: &[u8],
    ) -> Result<(Prepared, Option<Vec<ScalarValue>>), Status> {
        self.registry
            .statement(&caller.key, handle_text(handle)?)
            .ok_or_else(unknown_handle)
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&request)?;
        no_transactions(&query.transaction_id)?;
        let prepared = self.prepare(&caller.session, &query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into(),
        };
        let ticket = ticket.as_any().encode_to_vec();
        let info = self
            .statement_info(
                &caller.session,
                &prepared,
                None,
                ticket,
                request.into_inner(),
            )
            .await?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        let sql = std::str::from_utf8(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("the statement ticket is not UTF-8 SQL text"))?;
        let prepared = self.prepare(&caller.session, sql).await?;
        Ok(Response::new(
            self.rows(&caller.session, &prepared, None, true).await?,
        ))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = caller(&request)?;
        no_transactions(&command.transaction_id)?;
        let prepared = self.prepare(&caller.session, &command.query).await?;
        self.update(&caller.session, &prepared, None).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = caller(&request)?;
        no_transactions(&query.transaction_id)?;
        let prepared = self.prepare(&caller.session, &query.query).await?;
        let dataset_schema = match prepared.schema() {
            Some(schema) => schema_bytes(&flight_schema(schema))?,
            None => schema_bytes(&Schema::empty())?,
        };
        // A parameter whose type the planner could not infer is reported as Null: any value
        // is accepted and used as sent.
        let parameters: Vec<Field> = prepared
            .param_types()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Field::new(
                    format!("${}", i + 1),
                    t.clone().unwrap_or(DataType::Null),
                    true,
                )
            })
            .collect();
        let parameter_schema = schema_bytes(&Schema::new(parameters))?;
        let handle = self.registry.add_statement(&caller.key, prepared);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = caller(&request)?;
        // Closing twice, or closing a statement already evicted, is not an error.
        if let Ok(handle) = handle_text(&query.prepared_statement_handle) {
            self.registry.remove_statement(&caller.key, handle);
        }
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = caller(&request)?;
        self.prepared_statement(&caller, &query.prepared_statement_handle)?;
        let mut rows = parameter_rows(request).await?;
        if rows.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "a query takes one row of parameters; {} were bound (use an update to run a statement once per row)",
                rows.len()
            )));
        }
        let values = rows.pop().unwrap_or_default();
        if !self.registry.bind(
            &caller.key,
            handle_text(&query.prepared_statement_handle)?,
            values,
        ) {
            return Err(unknown_handle());
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&request)?;
        let (prepared, params) =
            self.prepared_statement(&caller, &query.prepared_statement_handle)?;
        let ticket = query.as_any().encode_to_vec();
        let info = self
            .statement_info(
                &caller.session,
                &prepared,
                params,
                ticket,
                request.into_inner(),
            )
            .await?;
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        let (prepared, params) =
            self.prepared_statement(&caller, &query.prepared_statement_handle)?;
        Ok(Response::new(
            self.rows(&caller.session, &prepared, params, true).await?,
        ))
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = caller(&request)?;
        let (prepared, bound) =
            self.prepared_statement(&caller, &query.prepared_statement_handle)?;
        let rows = parameter_rows(request).await?;
        if rows.is_empty() {
            return self.update(&caller.session, &prepared, bound).await;
        }
        // Like executemany: once per parameter row, stopping at the first failure.
        let mut total = 0;
        for values in rows {
            let count = self
                .update(&caller.session, &prepared, Some(values))
                .await?;
            total = if count < 0 || total < 0 {
                -1
            } else {
                total + count
            };
        }
        Ok(total)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(Self::metadata_info(
            &schema,
            query,
            request.into_inner(),
        )?))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        let batch = self.catalogs_batch(&caller.session, query).await?;
        Ok(Response::new(encode_batch(batch)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(Self::metadata_info(
            &schema,
            query,
            request.into_inner(),
        )?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        let batch = self.schemas_batch(&caller.session, query).await?;
        Ok(Response::new(encode_batch(batch)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(Self::metadata_info(
            &schema,
            query,
            request.into_inner(),
        )?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        let batch = self.tables_batch(&caller.session, query).await?;
        Ok(Response::new(encode_batch(batch)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(Self::metadata_info(
            &schema,
            query,
            request.into_inner(),
        )?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(encode_batch(table_types_batch(query)?)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        Ok(Response::new(Self::metadata_info(
            &schema,
            query,
            request.into_inner(),
        )?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = query
            .into_builder(&self.sql_info)
            .build()
            .map_err(|e| arrow_status("GetSqlInfo", e))?;
        Ok(Response::new(encode_batch(batch)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_give_row_counts() {
        assert_eq!(affected_rows("INSERT 0 3"), 3);
        assert_eq!(affected_rows("UPDATE 2"), 2);
        assert_eq!(affected_rows("SELECT 10"), 10);
        assert_eq!(affected_rows("CREATE TABLE"), 0);
        assert_eq!(affected_rows("SET"), 0);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("users"), "\"users\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn reported_arrow_version_is_the_one_built_with() {
        let lock = include_str!("../../../Cargo.lock");
        let expected = format!("name = \"arrow\"\nversion = \"{ARROW_VERSION}\"");
        assert!(
            lock.contains(&expected),
            "update ARROW_VERSION to the arrow version in Cargo.lock"
        );
    }

    #[test]
    fn results_take_the_announced_schema() {
        use freshet_sql::datafusion::arrow::array::Int32Array;
        let actual = Arc::new(Schema::new(vec![Field::new("y", DataType::Int32, false)]));
        let batch =
            RecordBatch::try_new(actual, vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
        let announced: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("y", DataType::Int64, true)]));
        let conformed = conform(batch, &announced).unwrap();
        assert_eq!(conformed.schema_ref(), &announced);
        let unknown: SchemaRef = Arc::new(Schema::new(vec![Field::new("y", DataType::Null, true)]));
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("y", DataType::Int32, false)])),
            vec![Arc::new(Int32Array::from(vec![1]))],
        )
        .unwrap();
        let err = conform(batch, &unknown).unwrap_err();
        assert!(err.message().contains("add a CAST"), "{}", err.message());
    }

    #[test]
    fn sql_info_names_the_server() {
        let info = sql_info();
        let batch = info
            .record_batch([SqlInfo::FlightSqlServerName as u32])
            .unwrap();
        assert_eq!(batch.num_rows(), 1);
    }
}
