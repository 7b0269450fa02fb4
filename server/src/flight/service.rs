//! The Flight SQL commands, each answered through the engine's entry point.
//!
//! Statements (queries, updates, prepared statements, and the plain-ticket path) go through
//! [`Engine::prepare`] / [`Engine::execute_prepared`] exactly as pgwire's do. Catalog metadata
//! is read with SQL through the engine too (see [`super::metadata`]). Results are encoded batch
//! by batch as the client reads them (see [`super::results`]); nothing collects a whole result.
//!
//! Commands without rows (`CREATE …`, `SET …`, `INSERT …` sent as a query) run when the client
//! asks for their `FlightInfo`, which then lists no endpoints: there is nothing to fetch.

use std::sync::Arc;

use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{Action, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use freshet_sql::datafusion::arrow::datatypes::{DataType, Field, Schema};
use freshet_sql::datafusion::common::{ParamValues, ScalarValue};
use freshet_sql::lifecycle::StatementGuard;
use freshet_sql::{Engine, EngineError, Output, Prepared, Session};
use futures::{stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::metadata::{sql_info, table_types_batch};
use super::registry::Registry;
use super::results::{
    affected_rows, arrow_status, conform, encode, encode_batch, flight_schema, parameter_rows,
    schema_bytes, DoGetStream,
};
use super::{status, Caller};

/// The Flight SQL service. Authentication happened before any of these methods run: each
/// request carries its [`Caller`].
pub struct FlightSql {
    pub(super) engine: Engine,
    registry: Arc<Registry>,
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

fn handle_text(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle).map_err(|_| unknown_handle())
}

fn unknown_handle() -> Status {
    Status::not_found("unknown prepared statement handle (closed, evicted, or from another session): prepare it again")
}

impl FlightSql {
    /// The statement behind `handle`, if the caller's session prepared it.
    fn prepared_statement(
        &self,
        caller: &Caller,
        handle: &[u8],
    ) -> Result<(Prepared, Option<Vec<ScalarValue>>), Status> {
        self.registry
            .statement(&caller.key, handle_text(handle)?)
            .ok_or_else(unknown_handle)
    }

    pub fn new(engine: Engine, registry: Arc<Registry>) -> Self {
        Self {
            engine,
            registry,
            sql_info: sql_info(),
        }
    }

    /// Prepares the one statement of `sql` (a trailing `;` or comments are fine).
    async fn prepare(&self, session: &Session, sql: &str) -> Result<Prepared, Status> {
        let mut statements = self.engine.split(sql).map_err(|e| status(&e))?;
        if statements.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "a Flight SQL call runs one statement; this text has {}",
                statements.len()
            )));
        }
        let mut guard = StatementGuard::new(session, None);
        match statements.pop() {
            Some(raw) => {
                guard
                    .prepare_statement(&self.engine, session, raw, None)
                    .await
            }
            None => guard.prepare(&self.engine, session, "").await,
        }
        .map_err(|e| status(&e))
    }

    /// Runs a statement within its `statement_timeout`; returns the guard that also bounds
    /// reading its rows.
    async fn run(
        &self,
        session: &Session,
        prepared: &Prepared,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<(Output, StatementGuard), Status> {
        tracing::debug!(sql = prepared.sql(), "flight statement");
        let mut guard = StatementGuard::new(session, None);
        let result = guard
            .execute(
                &self.engine,
                session,
                prepared,
                params.map(ParamValues::from),
            )
            .await;
        match result {
            Ok(output) => Ok((output, guard)),
            Err(err) => {
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
            (Output::Rows(stream), guard) => match announced {
                Some(schema) => {
                    let target = schema.clone();
                    let batches = guard
                        .stream(stream)
                        .map(move |batch| conform(batch?, &target));
                    Ok(encode(schema, batches))
                }
                None => Ok(encode(stream.schema(), guard.stream(stream))),
            },
            // A subscription streams for as long as the client reads.
            (Output::Live(stream), _) => Ok(encode(
                stream.schema(),
                stream.map(|batch| batch.map_err(EngineError::from)),
            )),
            (Output::Command { .. }, _) => Ok(encode(Arc::new(Schema::empty()), stream::empty())),
            (Output::CopyOut { .. }, _) => Err(copy_out_refused()),
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
            (Output::Rows(_) | Output::Live(_), _) => Err(Status::internal(
                "a statement without a schema returned rows",
            )),
            (Output::CopyOut { .. }, _) => Err(copy_out_refused()),
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
        let schema = query.into_builder().schema();
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
        let schema = query.into_builder().schema();
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

/// `COPY (…) TO STDOUT` is PostgreSQL's protocol for sending rows; Flight sends the rows of the
/// query itself.
fn copy_out_refused() -> Status {
    Status::invalid_argument(
        "COPY (…) TO STDOUT sends COPY data over the PostgreSQL protocol; over Flight SQL, run \
         the query itself",
    )
}
