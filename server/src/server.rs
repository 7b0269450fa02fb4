//! Start-up, the listeners, and shutdown.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use anyhow::{Context, Result};
use freshet_sql::{Engine, EngineConfig, Output};
use futures::{FutureExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::flight::FlightFrontend;
use crate::metrics::Metrics;
use crate::pg::PgFrontend;
use crate::throttle::LoginThrottle;
use crate::tls::ServerTls;

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(config: Config, demo: bool) -> Result<()> {
    // First, so a bad certificate stops start-up before anything else is done.
    let tls = match &config.tls {
        Some(settings) => Some(ServerTls::load(settings, config.authentication_timeout)?),
        None => None,
    };
    let engine = Engine::open(EngineConfig {
        data_dir: config.data_dir.clone(),
        allowed_roots: config.allowed_roots.clone(),
        base_dir: config.base_dir.clone(),
        streams: config.streams,
        limits: config.statement_limits,
    })
    .await
    .context("could not open the engine")?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        allowed_roots = ?engine.allowed_roots(),
        "engine ready"
    );
    if let Some(path) = &config.init_sql {
        run_init_sql(&engine, path).await?;
    }
    // Held until the server stops: the demo's embedded Kafka broker lives in it.
    let live = if demo {
        crate::demo::prepare(&engine).await?;
        Some(crate::demo::start_live(&engine).await?)
    } else {
        None
    };

    let metrics = Arc::new(Metrics::default());
    let pg_listener = bind(config.pg_addr, "pgwire").await?;
    let pg_addr = pg_listener.local_addr()?;
    warn_if_exposed(&config, tls.is_some(), "pgwire", pg_addr);
    let flight_listener = bind(config.flight_addr, "flight").await?;
    let flight_addr = flight_listener.local_addr()?;
    warn_if_exposed(&config, tls.is_some(), "flight", flight_addr);
    let http_listener = bind(config.http_addr, "http").await?;
    let http_addr = http_listener.local_addr()?;
    warn_if_exposed(&config, tls.is_some(), "http", http_addr);
    let encryption = match &tls {
        None => "",
        Some(tls) if tls.required() => " (TLS required)",
        Some(_) => " (TLS optional)",
    };
    tracing::info!("pgwire listening on {pg_addr}{encryption}");
    tracing::info!("flight listening on {flight_addr}{encryption}");
    // Logged last: test harnesses take this line to mean every listener is up.
    tracing::info!("http listening on {http_addr}{encryption}");
    if let Some(live) = &live {
        crate::demo::print_banner(
            pg_addr,
            http_addr,
            live.bootstrap_servers(),
            &live.archive(),
        );
    }

    // Wire-level bounds, applied by pgwire's decoder to every connection.
    pgwire::messages::set_frontend_message_length_max(config.max_message_bytes);
    pgwire::tokio::set_startup_timeout(config.authentication_timeout);
    pgwire::tokio::set_idle_session_timeout(config.idle_session_timeout);
    // One record of failed logins for pgwire and Flight: guessing on one does not reset the other.
    let throttle = Arc::new(LoginThrottle::new(config.auth_failure_delay));

    let mut tasks = JoinSet::new();
    let frontend = PgFrontend::new(
        engine.clone(),
        &config.auth.users,
        metrics.clone(),
        tls.as_ref().is_some_and(ServerTls::required),
        throttle.clone(),
    );
    tasks.spawn(accept_pg(
        pg_listener,
        frontend,
        config.max_connections,
        metrics.clone(),
        tls.as_ref().map(ServerTls::pg_acceptor),
    ));
    let flight = FlightFrontend::new(engine.clone(), &config.auth.users, throttle.clone());
    tasks.spawn(crate::flight::serve(
        flight_listener,
        flight,
        config.max_connections,
        tls.as_ref().map(ServerTls::flight),
    ));
    let router = crate::http::router(metrics.clone(), engine.clone(), config.http.clone());
    let http_tls = tls.as_ref().map(ServerTls::http);
    tasks.spawn(async move {
        let served = match http_tls {
            None => axum::serve(http_listener, router).await,
            Some(handshake) => {
                let listener = crate::tls::Listener {
                    local_addr: http_addr,
                    incoming: crate::tls::incoming(http_listener, Some(handshake), |_| Some(())),
                };
                axum::serve(listener, router).await
            }
        };
        if let Err(err) = served {
            tracing::error!(error = %err, "http server stopped");
        }
    });

    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; open ones are closed");
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    // Continuous queries write a last checkpoint, so a restart resumes exactly here.
    engine.streams().stop_all().await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen for {what} on {addr}"))
}

fn warn_if_exposed(config: &Config, tls: bool, protocol: &str, addr: SocketAddr) {
    if addr.ip().is_loopback() {
        return;
    }
    if !tls {
        tracing::warn!(
            "{protocol} listens on {addr}, which is not a loopback address, WITHOUT TLS: \
             passwords, tokens and results travel in clear text. Set [tls] cert_file and \
             key_file in the config file (see docs/security.md)"
        );
    }
    if protocol != "http" && !config.auth_enabled() {
        tracing::warn!(
            "{protocol} listens on {addr}, which is not a loopback address, WITHOUT AUTHENTICATION: \
             anyone who can reach it can read every table. Add [[auth.users]] to the config file \
             or listen on 127.0.0.1"
        );
    }
}

/// Refused connections answered at once; more are dropped unanswered.
const REFUSALS_AT_ONCE_MAX: usize = 64;

async fn accept_pg(
    listener: TcpListener,
    frontend: Arc<PgFrontend>,
    max_connections: usize,
    metrics: Arc<Metrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    // Refusals are answered on tasks of their own, a bounded number at once: beyond that a
    // connection is dropped without a word rather than queued.
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE_MAX));
    let mut connections = JoinSet::new();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics
                .pg_connections_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%peer, max_connections, "connection refused: too many connections");
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                let tls = tls.clone();
                tokio::spawn(async move {
                    crate::pg::refuse_too_many_clients(socket, tls).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let frontend = frontend.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            // The catch-all: a panic left anywhere under a connection (our code or a
            // dependency's) ends that connection with one line in the log, never the server.
            let served = AssertUnwindSafe(crate::pg::serve_socket(socket, frontend, tls))
                .catch_unwind()
                .await;
            if served.is_err() {
                tracing::error!(%peer, "connection closed after an internal error (a panic, logged above)");
            }
            drop(permit);
        });
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Runs every statement of `path`; the first failure stops start-up.
async fn run_init_sql(engine: &Engine, path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read init SQL file {}", path.display()))?;
    let session = engine.new_session("freshet");
    let statements = engine
        .split_statements(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for sql in &statements {
        let output = engine
            .execute(&session, sql)
            .await
            .map_err(|e| anyhow::anyhow!("{}: `{sql}` failed: {e}", path.display()))?;
        if let Output::Rows(mut rows) = output {
            while let Some(batch) = rows.next().await {
                batch.map_err(|e| anyhow::anyhow!("{}: `{sql}` failed: {e}", path.display()))?;
            }
        }
    }
    tracing::info!(statements = statements.len(), file = %path.display(), "init SQL done");
    Ok(())
}
