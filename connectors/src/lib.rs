//! Freshet's connectors: the code that reads from and writes to the world
//! outside the engine (files and object stores, and later Kafka and generators).
//!
//! The crate holds one folder per connector (`files/`, ...). Each connector
//! owns its own configuration parsing, errors and I/O. The crate knows nothing
//! about SQL statements: the `sql` crate turns statements into calls on the
//! functions exported here, never the other way round.

pub mod files;
