//! Sink connectors, one folder each: `kafka/` (a topic, at-least-once or exactly-once) and
//! `parquet/` (a directory of Parquet files on a local disk, S3 or HDFS).
//!
//! Each implements [`crate::sink::Sink`] and is listed in [`crate::sink::sink_registry`]. A sink
//! owns its destination's layout and the record of the last committed epoch kept there; it
//! does not decide when epochs end.

pub mod kafka;
pub mod parquet;
