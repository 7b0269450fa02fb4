//! The Freshet engine: one entry point for every frontend.
//!
//! [`Engine`] owns the DataFusion session state, the persistent catalog and the rules for where
//! data may be read. A frontend (pgwire, Flight SQL, HTTP) opens a [`Session`] per client and
//! sends it statements through [`Engine::prepare`] / [`Engine::execute_prepared`] (or
//! [`Engine::execute`] for one statement of text); every result is an [`Output`]. Freshet's own
//! statements are recognised first; everything else is planned by DataFusion. This crate knows
//! nothing about wire protocols and starts no sockets.

mod bi_compat;
pub mod catalog;
pub mod compat;
mod engine;
pub mod error;
mod functions;
pub mod lifecycle;
pub mod limits;
pub mod models;
mod pg_compat;
pub mod pg_types;
pub mod pgnames;
mod plan_types;
mod session;
pub mod sources;
pub mod statement;
pub mod streaming;
mod tables;
mod text_rewrite;
mod windows;

pub use datafusion;
pub use engine::{Engine, EngineConfig, Output, Prepared};
pub use error::{EngineError, ErrorKind};
pub use freshet_connectors as connectors;
pub use functions::version_string;
pub use session::{startup_parameters, Session, PG_SERVER_VERSION};
pub use statement::copy::CopyFormat;
pub use statement::{split, RawStatement, TransactionKind};
pub use streaming::StreamDefaults;
pub use windows::{
    find_windows, window_column, WindowColumn, WindowKind, WindowRole, WindowSpec, WindowTable,
    WINDOW_END, WINDOW_START,
};
