//! paystream transforms: DataFusion SQL over the batches flowing through a pipeline.
//!
//! Layout:
//! - [`sql`]: a per-batch SQL transform; the batch is visible as a table named after the
//!   transform's input.
//! - [`window`]: windowed aggregations on event time, with mergeable state, watermarks and
//!   allowed lateness.

pub mod sql;
pub mod window;

/// Errors of the transforms crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sql(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Invalid(String),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Result of the transforms crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
