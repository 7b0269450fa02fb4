//! A statement's lifecycle: the client's cancel and `statement_timeout`, applied the same way
//! by every frontend to planning and to every row.
//!
//! A frontend keeps one [`Canceller`] per connection (pgwire finds it by the cancel key of a
//! CancelRequest) and makes a [`StatementGuard`] for each statement. The guard's
//! [`StatementGuard::prepare`] plans the statement on a thread of the blocking pool, so a timeout or a cancel
//! answers the client at once even while the planner is busy, and
//! [`StatementGuard::run`] / [`StatementGuard::stream`] bound running it and reading its rows.
//! Frontends translate protocols only; this module owns when a statement must stop.

use std::future::Future;
use std::sync::Mutex;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::{stream, Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Engine, Prepared};
use crate::error::{EngineError, ErrorKind};
use crate::session::Session;

/// Cancellation of the statement running on one connection.
#[derive(Debug, Default)]
pub struct Canceller {
    current: Mutex<Option<watch::Sender<bool>>>,
}

impl Canceller {
    /// Starts a new statement: from now on [`Canceller::cancel`] stops it, and no longer the
    /// one before.
    fn start(&self) -> watch::Receiver<bool> {
        let (sender, receiver) = watch::channel(false);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        receiver
    }

    /// Cancels the connection's current statement, if one runs.
    pub fn cancel(&self) {
        if let Some(sender) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = sender.send(true);
        }
    }
}

/// When one statement must stop: its connection's cancel and its session's
/// `statement_timeout`, counted from the moment the guard is made.
#[derive(Clone)]
pub struct StatementGuard {
    cancel: Option<watch::Receiver<bool>>,
    deadline: Option<Instant>,
}

impl StatementGuard {
    /// A guard for a statement that starts now on `session`; `canceller` is the connection's,
    /// when its protocol can cancel.
    pub fn new(session: &Session, canceller: Option<&Canceller>) -> Self {
        Self {
            cancel: canceller.map(Canceller::start),
            deadline: session
                .statement_timeout()
                .map(|timeout| Instant::now() + timeout),
        }
    }

    /// Completes when the statement must stop, with the reason.
    pub async fn stopped(&mut self) -> EngineError {
        let cancel = async {
            let Some(cancel) = self.cancel.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                if *cancel.borrow_and_update() {
                    return;
                }
                if cancel.changed().await.is_err() {
                    // The connection started another statement: this one can no longer be
                    // cancelled.
                    std::future::pending::<()>().await;
                }
            }
        };
        let timeout = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel => canceled_by_user(),
            _ = timeout => timed_out(),
        }
    }

    /// Runs a prepared statement within the guard: the one call every frontend makes to run a
    /// statement, which counts it (and its failure) in [`Engine::statement_counts`].
    pub async fn execute(
        &mut self,
        engine: &Engine,
        session: &Session,
        prepared: &Prepared,
        params: Option<datafusion::common::ParamValues>,
    ) -> Result<crate::Output, EngineError> {
        engine.count_statement();
        self.run(engine.execute_prepared(session, prepared, params))
            .await
            .inspect_err(|_| engine.count_statement_error())
    }

    /// Runs `work` unless the statement must stop first.
    pub async fn run<T>(
        &mut self,
        work: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        tokio::select! {
            biased;
            err = self.stopped() => Err(err),
            result = work => result,
        }
    }

    /// Parses and plans `sql` on a thread of its own, so that a cancel or the timeout answers
    /// at once even while the planner is busy.
    pub async fn prepare(
        &mut self,
        engine: &Engine,
        session: &Session,
        sql: &str,
    ) -> Result<Prepared, EngineError> {
        let (engine, session, sql) = (engine.clone(), session.clone(), sql.to_string());
        self.spawned(async move { engine.prepare(&session, &sql).await })
            .await
    }

    /// Plans one statement of a request cut by [`Engine::split`] (see
    /// [`Engine::prepare_statement`]), on a thread of its own as [`StatementGuard::prepare`].
    pub async fn prepare_statement(
        &mut self,
        engine: &Engine,
        session: &Session,
        raw: crate::statement::RawStatement,
        declared: Option<Vec<Option<datafusion::arrow::datatypes::DataType>>>,
    ) -> Result<Prepared, EngineError> {
        let (engine, session) = (engine.clone(), session.clone());
        self.spawned(async move {
            engine
                .prepare_statement(&session, &raw, declared.as_deref())
                .await
        })
        .await
    }

    /// As [`StatementGuard::prepare`], with the parameter types the client declared.
    pub async fn prepare_with_types(
        &mut self,
        engine: &Engine,
        session: &Session,
        sql: &str,
        declared: &[Option<datafusion::arrow::datatypes::DataType>],
    ) -> Result<Prepared, EngineError> {
        let (engine, session, sql) = (engine.clone(), session.clone(), sql.to_string());
        let declared = declared.to_vec();
        self.spawned(async move { engine.prepare_with_types(&session, &sql, &declared).await })
            .await
    }

    /// Runs `work` on a thread of the blocking pool: planning is CPU work that does not
    /// yield, and a statement abandoned at its deadline must not keep a runtime worker (of
    /// which there is one per core) from serving every other connection while it finishes.
    async fn spawned<T: Send + 'static>(
        &mut self,
        work: impl Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        let runtime = tokio::runtime::Handle::current();
        let mut task = AbortOnDrop(tokio::task::spawn_blocking(move || runtime.block_on(work)));
        self.run(async {
            match (&mut task.0).await {
                Ok(result) => result,
                Err(err) if err.is_panic() => Err(EngineError::internal(
                    "planning the statement failed unexpectedly (see the server log)",
                )),
                Err(_) => Err(canceled_by_user()),
            }
        })
        .await
    }

    /// Stops a result stream when the statement must stop.
    pub fn stream(
        self,
        stream: SendableRecordBatchStream,
    ) -> impl Stream<Item = Result<RecordBatch, EngineError>> + Send {
        stream::unfold(Some((stream, self)), |state| async move {
            let (mut stream, mut guard) = state?;
            let next = tokio::select! {
                biased;
                err = guard.stopped() => Some(Err(err)),
                item = stream.next() => item.map(|r| r.map_err(EngineError::from)),
            };
            match next {
                None => None,
                Some(Ok(batch)) => Some((Ok(batch), Some((stream, guard)))),
                Some(Err(err)) => Some((Err(err), None)),
            }
        })
    }
}

/// Aborts a planning task nobody waits for any more, if it has not started yet (a running
/// one finishes on its own; `max_expression_depth` bounds how long that can take).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn canceled_by_user() -> EngineError {
    EngineError::new(
        ErrorKind::Canceled,
        "canceling statement due to user request",
    )
}

/// The error of a statement past its `statement_timeout`.
pub fn timed_out() -> EngineError {
    EngineError::new(
        ErrorKind::Canceled,
        "canceling statement due to statement timeout",
    )
}
