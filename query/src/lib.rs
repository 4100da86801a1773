//! SQL over the lake: every lake table registered by name in a DataFusion session, read-only.
//!
//! Layout:
//! - [`LakeQuery`]: opens the tables and runs SQL.
//! - [`distinct`]: a plan rewrite that makes `count(DISTINCT x)` beside plain aggregates fast.
//! - [`asof`]: time travel, `"payments@v12"` or `"payments@2026-11-22T10:00:00Z"`.
//! - [`format`]: renders results as a table, CSV or JSON.
//! - [`export`]: streams a query's result to a file or an S3 object, atomically.
//! - `bloom_prefetch`: a lookup's bloom filters read per file and column, not per row group.
//! - `scan`: whether a table's filters are evaluated inside the Parquet decoder.
//! - [`schedule`]: the `[exports.<id>]` that run every period.
//! - [`serve`]: the Postgres wire protocol endpoint (psql, Grafana, BI tools).
//! - [`http`]: `POST /sql` answering JSON lines or Arrow IPC.

pub mod asof;
mod bloom_prefetch;
pub mod distinct;
pub mod export;
pub mod format;
pub mod http;
mod scan;
pub mod schedule;
pub mod serve;

use std::sync::Arc;

use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
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
    #[error("serve: {0}")]
    Serve(String),
    #[error("{name}: {message}")]
    AsOf { name: String, message: String },
    #[error("export to {to}: {message}")]
    Export { to: String, message: String },
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

/// The engine's settings: DataFusion's defaults, then any `DATAFUSION_*` environment variable
/// (e.g. `DATAFUSION_EXECUTION_TARGET_PARTITIONS=8`), so an operator can tune a deployment
/// without a new build; nothing a client sends can change them.
fn session_config() -> Result<SessionConfig> {
    Ok(SessionConfig::from_env()?.with_information_schema(true))
}

/// A session with DataFusion's defaults plus paystream's plan rewrites.
fn session(
    config: SessionConfig,
    runtime: Option<Arc<datafusion::execution::runtime_env::RuntimeEnv>>,
) -> SessionContext {
    let mut builder = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rule(Arc::new(distinct::DistinctAsGroupBy));
    if let Some(runtime) = runtime {
        builder = builder.with_runtime_env(runtime);
    }
    SessionContext::new_with_state(builder.build())
}

/// A read-only SQL session over the lake's tables.
pub struct LakeQuery {
    ctx: SessionContext,
    location: LakeLocation,
    /// Every table asked for, with its Delta handle once it exists.
    tables: Vec<(String, Option<DeltaTable>)>,
}

impl LakeQuery {
    /// Register each of `tables` that exists under `location`. Tables that do not exist yet
    /// are skipped; an empty lake is an error.
    pub async fn open(location: &LakeLocation, tables: &[String]) -> Result<Self> {
        Self::open_in(session(session_config()?, None), location, tables, true).await
    }

    /// As [`LakeQuery::open`], with every query of the session sharing a memory pool of
    /// `memory_limit` bytes (a query that needs more fails alone), and an empty lake
    /// accepted: a server starts before the pipeline's first commit.
    pub async fn open_for_serving(
        location: &LakeLocation,
        tables: &[String],
        memory_limit: usize,
    ) -> Result<Self> {
        let config = session_config()?;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory_limit, 1.0)
            .build_arc()?;
        let ctx = session(config, Some(runtime));
        Self::open_in(ctx, location, tables, false).await
    }

    async fn open_in(
        ctx: SessionContext,
        location: &LakeLocation,
        tables: &[String],
        require_one: bool,
    ) -> Result<Self> {
        let mut lake = Self {
            ctx,
            location: location.clone(),
            tables: tables.iter().map(|t| (t.clone(), None)).collect(),
        };
        lake.refresh().await?;
        if require_one && lake.tables().is_empty() {
            return Err(Error::EmptyLake(location.root().to_string()));
        }
        Ok(lake)
    }

    /// Make the session see what was committed since it was opened (or last refreshed),
    /// including tables created since.
    pub async fn refresh(&mut self) -> Result<()> {
        for (name, handle) in &mut self.tables {
            let changed = match handle {
                Some(table) => {
                    let before = table.version();
                    table
                        .update_incremental(None)
                        .await
                        .map_err(|e| table_error(name, e))?;
                    table.version() != before
                }
                None => {
                    let url = self.location.table(name)?;
                    let mut table = DeltaTableBuilder::from_url(url)
                        .map_err(|e| table_error(name, e))?
                        .with_storage_options(self.location.options().clone())
                        .build()
                        .map_err(|e| table_error(name, e))?;
                    if !table.verify_deltatable_existence().await.unwrap_or(false) {
                        continue;
                    }
                    table.load().await.map_err(|e| table_error(name, e))?;
                    *handle = Some(table);
                    true
                }
            };
            if let (true, Some(table)) = (changed, handle.as_ref()) {
                table
                    .update_datafusion_session(&self.ctx.state())
                    .map_err(|e| table_error(name, e))?;
                let provider = scan::table_provider(table, &self.ctx).await?;
                // A schema refuses a second table of the same name: the previous snapshot's
                // provider goes first. Queries already planned keep the one they hold.
                self.ctx.deregister_table(name.as_str())?;
                self.ctx.register_table(name.as_str(), provider)?;
            }
        }
        Ok(())
    }

    /// The tables registered (those that exist).
    pub fn tables(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Run one read-only SQL statement (DDL, DML and `SET` are refused).
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.plan(sql).await?.collect().await?)
    }

    /// Plan one read-only SQL statement, with the `table@…` snapshots it names; the caller
    /// executes it (collected or streamed).
    pub async fn plan(&self, sql: &str) -> Result<DataFrame> {
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        self.register_snapshots(sql).await?;
        Ok(self.ctx.sql_with_options(sql, opts).await?)
    }

    /// The session, for callers that need more than `sql`.
    pub fn context(&self) -> Arc<SessionContext> {
        Arc::new(self.ctx.clone())
    }
}
