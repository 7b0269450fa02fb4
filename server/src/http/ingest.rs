//! `POST /v1/sources/{name}/events`: events for an `http` source.
//!
//! The body is one JSON object or an array of them (`Content-Type: application/json`, or
//! `text/plain` as `navigator.sendBeacon` sends a string), or NDJSON
//! (`application/x-ndjson`). The answer comes once the events are durable in the source's
//! log: `200 {"accepted": n, "first_offset": a, "next_offset": b}`. Refusals: 400 (a bad
//! event, naming its index and field; nothing of the request is stored), 404 (no such
//! source), 409 (the source is not an http source), 413 (body over `[http] max_body_bytes`),
//! 415 (another content type), 429 (the source's log is full) and 503 (too many requests
//! waiting, or the log failed) with `Retry-After`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use freshet_sql::connectors::http::{BodyFormat, IngestError};
use futures::StreamExt;
use serde_json::json;

use super::{error, json, HttpState};

pub async fn post_events(
    State(state): State<Arc<HttpState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(handle) = state.engine.find_source(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("source \"{name}\" does not exist"),
        );
    };
    let Some(ingest) = handle.source.ingest() else {
        return error(
            StatusCode::CONFLICT,
            "not_an_http_source",
            format!(
                "source \"{name}\" is a {} source, which cannot take events over HTTP; \
                 only sources created WITH (connector = 'http') can",
                handle.connector
            ),
        );
    };
    let format = match body_format(&headers) {
        Ok(format) => format,
        Err(response) => return *response,
    };
    let bytes = match read_body(body, &headers, state.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return *response,
    };
    match ingest.ingest(bytes, format).await {
        Ok(accepted) => json(
            StatusCode::OK,
            json!({
                "accepted": accepted.events,
                "first_offset": accepted.first_offset,
                "next_offset": accepted.first_offset + accepted.events as i64,
            }),
        ),
        Err(err) => refusal(&err),
    }
}

/// The body's form, from its `Content-Type`.
fn body_format(headers: &HeaderMap) -> Result<BodyFormat, Box<Response>> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "text/plain" | "" => Ok(BodyFormat::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Ok(BodyFormat::Ndjson),
        _ => Err(Box::new(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            format!(
                "Content-Type {text} is not supported: send application/json (an object or an \
                 array of objects) or application/x-ndjson (one object per line)"
            ),
        ))),
    }
}

fn too_large(max_bytes: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is larger than [http] max_body_bytes ({max_bytes} bytes); send fewer events per request"),
    )
}

/// Reads the body, refusing it as soon as it is known to exceed `max_bytes`.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max_bytes: usize,
) -> Result<Bytes, Box<Response>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_bytes as u64) {
        return Err(Box::new(too_large(max_bytes)));
    }
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).min(max_bytes as u64) as usize);
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let chunk = frame.map_err(|e| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("could not read the body: {e}"),
            ))
        })?;
        if buffer.len() + chunk.len() > max_bytes {
            return Err(Box::new(too_large(max_bytes)));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The HTTP answer for a refused request.
fn refusal(err: &IngestError) -> Response {
    match err {
        IngestError::Invalid { errors } => {
            let first = &errors[0];
            json(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": err.to_string(),
                    "code": "invalid_event",
                    "index": first.index,
                    "field": first.field,
                    "errors": errors.iter().map(|e| json!({
                        "index": e.index,
                        "field": e.field,
                        "message": e.message,
                    })).collect::<Vec<_>>(),
                }),
            )
        }
        IngestError::Body(_) => error(StatusCode::BAD_REQUEST, "invalid_body", err.to_string()),
        IngestError::TooLarge { .. } => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            err.to_string(),
        ),
        IngestError::LogFull { retry_after_s, .. } => with_retry_after(
            error(StatusCode::TOO_MANY_REQUESTS, "log_full", err.to_string()),
            *retry_after_s,
        ),
        IngestError::Busy { retry_after_s } => with_retry_after(
            error(StatusCode::SERVICE_UNAVAILABLE, "busy", err.to_string()),
            *retry_after_s,
        ),
        IngestError::Unavailable(_) => with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                err.to_string(),
            ),
            30,
        ),
    }
}
