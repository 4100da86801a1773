//! The `pipelines.toml` model: parse, validate, then hand a checked [`Config`] to the code that
//! builds the pipeline.
//!
//! - **Parse**: `toml`'s spanned tree, so every value keeps its line and column.
//! - **Validate**: the whole document is walked and *every* problem is collected into
//!   [`Diagnostics`] (syntax, unknown keys with suggestions, missing keys, types, sizes,
//!   durations, URIs, topic names, the component graph, schema overrides) before anything is
//!   refused. Validation is pure: no network, no files besides the config itself.
//! - **Build** (elsewhere): components are built from the typed, already-checked [`Config`].
//!
//! `${VAR}` / `${VAR:-default}` are substituted inside string values (never in the raw text,
//! so positions stay right); `$$` is a literal `$`. For optional keys an empty string, such
//! as `"${AWS_REGION:-}"` with the variable unset, means "not set": the default applies.
//! Secrets (librdkafka properties, S3 credentials) are [`SecretString`]s and no message
//! ever contains their value.

use std::fmt;
use std::path::Path;

mod components;
mod delta;
mod document;
mod env;
mod exports;
mod graph;
mod kafka;
mod metrics;
mod model;
mod otlp;
mod reader;
mod schema_overrides;
mod secret;
mod suggest;
mod telemetry;
mod units;
mod window;

pub use model::*;
pub use otlp::{
    DEFAULT_OTLP_GRPC_ADDRESS, DEFAULT_OTLP_HTTP_ADDRESS, DEFAULT_OTLP_MAX_PENDING_REQUESTS,
    DEFAULT_OTLP_MAX_REQUEST_BYTES,
};
pub use secret::{is_secret_property, SecretString, REDACTED};
pub use suggest::{did_you_mean, edit_distance};
pub use units::{format_duration, format_size, parse_duration, parse_size};

/// Reads `path` and checks it with [`from_str`], taking `${VAR}`s from the process
/// environment. Diagnostics name the file as given.
pub fn load(path: &Path) -> crate::Result<Config> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| crate::Error::Io {
        path: file.clone(),
        source,
    })?;
    from_str(&text, &file, &|name| std::env::var(name).ok()).map_err(crate::Error::Config)
}

/// Parses and validates a config; `file` is only used in diagnostics, `env` resolves
/// `${VAR}`. Returns every problem at once, sorted by position.
pub fn from_str(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Diagnostics> {
    document::from_str(text, file, env)
}

/// One problem found in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `sinks.lake.target_file_size`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.key, self.message
        )
    }
}

/// Every problem found in a config, reported together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}
