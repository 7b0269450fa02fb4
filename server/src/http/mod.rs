//! The HTTP frontend: `/health` for load balancers, `/metrics` for Prometheus, and
//! `POST /v1/sources/{name}/events` for event collection (see [`ingest`]).
//!
//! Like the other frontends it is a thin translator over the engine: it finds sources through
//! [`Engine::find_source`] and never reaches into DataFusion. Errors are JSON objects
//! (`{"error": …, "code": …}`) with the HTTP status that fits.

mod cors;
mod ingest;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use freshet_sql::Engine;

use crate::config::HttpConfig;
use crate::metrics::Metrics;

/// What the handlers share.
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub engine: Engine,
    pub config: HttpConfig,
}

/// The HTTP routes.
pub fn router(metrics: Arc<Metrics>, engine: Engine, config: HttpConfig) -> Router {
    let cors = Arc::new(cors::Cors::new(&config.cors_allowed_origins));
    let state = Arc::new(HttpState {
        metrics,
        engine,
        config,
    });
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .route("/v1/sources/{name}/events", post(ingest::post_events))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(cors, cors::cors))
}

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"status\":\"ok\",\"version\":\"{}\"}}\n",
            env!("CARGO_PKG_VERSION")
        ),
    )
}

async fn render_metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&state.engine),
    )
}

/// A JSON answer with `status`.
pub(crate) fn json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut text = body.to_string();
    text.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// A JSON error: `{"error": message, "code": code}`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json(
        status,
        serde_json::json!({ "error": message.into(), "code": code }),
    )
}
