//! Freshet's connectors: the code that reads from and writes to the world outside the engine.
//!
//! One folder per connector (`files/`, `kafka/`, `generators/`, `http/`), each owning its
//! configuration parsing, errors and I/O; sources implement [`source::Source`] and are listed
//! in [`source::registry`]. Message formats live in `formats/`. The crate knows nothing about
//! SQL statements: the `sql` crate turns statements into calls on what is exported here.

pub mod files;
pub mod formats;
pub mod generators;
pub mod http;
pub mod kafka;
pub mod sink;
pub mod sinks;
pub mod source;
