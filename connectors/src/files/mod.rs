//! The `files` connector: where tables backed by files live and how to reach them.
//!
//! This module owns three things:
//!
//! * [`PathPolicy`]: the set of local directories the server may read or write.
//!   Every local path a user names is checked against it, after resolving
//!   symlinks, so a link inside a root cannot smuggle a file from outside.
//! * [`resolve_location`]: turning a user's `LOCATION '...'` / `COPY ... TO '...'`
//!   string into a URL that DataFusion's `ListingTableUrl` understands, and
//!   [`build_object_store`] / [`split_store_options`]: building the object
//!   store (local, S3, HDFS) that serves that URL.
//! * [`SandboxedLocalStore`]: the store registered for `file://`, which repeats
//!   the policy check on every path it touches, because DataFusion lists and
//!   opens files that the user never named directly (files in a directory,
//!   partitions, glob matches).
//!
//! It does not parse SQL, register stores in a session or choose file formats;
//! format options are handed back untouched by [`split_store_options`].

mod location;
mod policy;
mod sandbox;
mod stores;
#[cfg(test)]
mod tests;

pub use location::{resolve_location, LocationKind, ResolvedLocation};
pub use policy::PathPolicy;
pub use sandbox::SandboxedLocalStore;
pub use stores::{build_object_store, split_store_options, TableOptions};

/// Everything that can go wrong while resolving a location or building its store.
///
/// Messages are written for the person who typed the SQL statement: each names
/// the location, option or path involved and, where possible, what would be
/// accepted instead.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A local path lies outside every allowed root (after resolving symlinks).
    #[error(
        "permission denied for location '{path}': local paths must be under an allowed root ({roots})"
    )]
    PermissionDenied {
        /// The path as the user gave it (made absolute), not its symlink target.
        path: String,
        /// The allowed roots, comma separated.
        roots: String,
    },

    /// A location that must already exist (a table to read) does not.
    #[error("location '{path}' does not exist")]
    NotFound {
        /// The absolute path that was looked for.
        path: String,
    },

    /// The location string cannot be used: unsupported scheme, malformed URL,
    /// missing bucket, `..` after a missing directory, and so on.
    #[error("invalid location '{location}': {reason}")]
    InvalidLocation {
        /// The location, as given or as far as it was resolved.
        location: String,
        /// What is wrong and, where possible, what would be accepted.
        reason: String,
    },

    /// A table option aimed at the object store is not one the store understands.
    #[error("unknown object store option '{option}'; valid options are: {valid}")]
    UnknownOption {
        /// The option key exactly as the user wrote it.
        option: String,
        /// The accepted keys (the common ones, for S3).
        valid: String,
    },

    /// The object store for a location could not be built.
    #[error("cannot set up object store for '{url}': {source}")]
    Store {
        /// The URL of the location whose store failed.
        url: String,
        /// The object store's own error.
        source: object_store::Error,
    },

    /// A local file system call failed for a reason other than the path not existing.
    #[error("cannot access '{path}': {source}")]
    Io {
        /// The path the failing call was made on.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}
