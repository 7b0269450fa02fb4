//! End-to-end tests: each starts the real `freshet` binary and talks to it with real clients.

mod avro;
mod common;
mod compat;
mod flight;
mod hostile;
mod http_ingest;
mod kafka;
mod keyed_state;
mod models;
mod pg;
mod psql;
mod sessions;
mod slt;
mod streaming;
mod tansu;
mod tls;
