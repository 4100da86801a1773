//! paystream transforms: DataFusion SQL over the batches flowing through a pipeline.
//!
//! Layout:
//! - [`sql`]: a per-batch SQL transform; the batch is visible as a table named after the
//!   transform's input.
//!
//! `paystream run` does not wire transforms into the lake path yet (windowed aggregations and
//! their wiring are the metrics work); the transform is usable and tested on its own.

pub mod sql;

/// Errors of the transforms crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sql transform: {0}")]
    Sql(#[from] datafusion::error::DataFusionError),
    #[error("sql transform: {0}")]
    Invalid(String),
}

/// Result of the transforms crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
