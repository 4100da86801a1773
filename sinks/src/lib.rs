//! paystream sinks.
//!
//! Layout:
//! - [`delta`]: the lake: one Delta table per event family plus `dlq`, written with the Kafka
//!   offsets they cover in the same atomic commit (`txn` actions), so a crash at any instant
//!   neither loses nor doubles a row.

//! - [`spans`]: the `spans` table an `otlp` source feeds, de-duplicated by span id.

pub mod delta;
pub mod spans;

use deltalake::arrow::error::ArrowError;

/// Errors of the sinks crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake location cannot be used (bad URI, missing folder rights, bad S3 options).
    #[error("lake location {uri}: {message}")]
    Location { uri: String, message: String },
    /// A Delta operation failed (storage, log, or commit).
    #[error("delta table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// Rows do not fit the table's schema.
    #[error("table {table}: {message}")]
    Schema { table: String, message: String },
    /// Another writer advanced this table's offsets for a partition we own: our buffered rows
    /// would double theirs, so they are dropped and the pipeline must resume from the lake.
    #[error("table {table}: offsets of {app_id} moved from {expected:?} to {found:?} under us (another writer owns the partition now)")]
    Fenced {
        table: String,
        app_id: String,
        expected: Option<i64>,
        found: Option<i64>,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}

/// Result of the sinks crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
