//! SQL over the lake: every lake table registered by name in a DataFusion session, read-only.
//!
//! Layout:
//! - [`LakeQuery`]: opens the tables and runs SQL.
//! - [`format`]: renders results as a table, CSV or JSON.

pub mod format;

use std::sync::Arc;

use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::{DeltaTableBuilder, DeltaTableError};
use paystream_sinks::delta::LakeLocation;

/// Errors of the query crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("table {table}: {source}")]
    Table {
        table: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error("{0}")]
    Sql(Box<DataFusionError>),
    #[error("{0}")]
    Sink(Box<paystream_sinks::Error>),
    #[error("output: {0}")]
    Output(#[from] ArrowError),
    #[error("no lake table exists yet under {0} (has the pipeline committed anything?)")]
    EmptyLake(String),
}

// Boxed: DataFusion's and delta-rs's errors are large, and every `Result` would carry them.
impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::Sql(Box::new(e))
    }
}

impl From<paystream_sinks::Error> for Error {
    fn from(e: paystream_sinks::Error) -> Self {
        Error::Sink(Box::new(e))
    }
}

fn table_error(table: &str, source: DeltaTableError) -> Error {
    Error::Table {
        table: table.to_string(),
        source: Box::new(source),
    }
}

/// Result of the query crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A read-only SQL session over the lake's tables.
pub struct LakeQuery {
    ctx: SessionContext,
    tables: Vec<String>,
}

impl LakeQuery {
    /// Register each of `tables` that exists under `location`. Tables that do not exist yet
    /// are skipped; an empty lake is an error.
    pub async fn open(location: &LakeLocation, tables: &[String]) -> Result<Self> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let mut found = Vec::new();
        for name in tables {
            let url = location.table(name)?;
            let builder = DeltaTableBuilder::from_url(url)
                .map_err(|e| table_error(name, e))?
                .with_storage_options(location.options().clone());
            let mut table = builder.build().map_err(|e| table_error(name, e))?;
            let exists = table.verify_deltatable_existence().await.unwrap_or(false);
            if !exists {
                continue;
            }
            table.load().await.map_err(|e| table_error(name, e))?;
            table
                .update_datafusion_session(&ctx.state())
                .map_err(|e| table_error(name, e))?;
            let provider = table.table_provider().await?;
            ctx.register_table(name.as_str(), provider)?;
            found.push(name.clone());
        }
        if found.is_empty() {
            return Err(Error::EmptyLake(location.root().to_string()));
        }
        Ok(Self { ctx, tables: found })
    }

    /// The tables registered.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// Run one read-only SQL statement (DDL, DML and `SET` are refused).
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self.ctx.sql_with_options(sql, opts).await?;
        Ok(df.collect().await?)
    }

    /// The session, for callers that need more than `sql`.
    pub fn context(&self) -> Arc<SessionContext> {
        Arc::new(self.ctx.clone())
    }
}
