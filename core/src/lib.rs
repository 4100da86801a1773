//! Shared types of paystream.
//!
//! Layout:
//! - [`config`]: the `pipelines.toml` model, parsed, validated (every error at once, with file,
//!   line, column and key) and ready to build.
//! - [`schema`]: the canonical lake tables and the declared JSON-to-column mapping.
//! - [`record`]: one consumed message before decoding.
//! - [`dlq`]: the kinds of bad record.

pub mod config;
pub mod dlq;
pub mod record;
pub mod schema;

/// Errors of the core crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The built-in preset does not parse: a build defect, caught by the unit tests.
    #[error("built-in schema preset is invalid: {0}")]
    Preset(String),
    /// The configuration was refused; each diagnostic names file, line, column and key.
    #[error("{0}")]
    Config(config::Diagnostics),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result of the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
