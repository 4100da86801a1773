//! The SQL commands over the lake: `query` (one statement, or the shell), `export` (a result
//! to a file or S3, once or as an `[exports.<id>]`), and `serve` (Postgres wire and HTTP
//! endpoints). They share how a lake and its table names are found.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use paystream_core::config::{Config, SinkConfig, TransformConfig};
use paystream_core::schema::{DLQ_TABLE, LATE_EVENTS_TABLE, SPANS_TABLE};
use paystream_query::export::{export, ExportFormat, ExportStats, ExportTarget};
use paystream_query::format::{render, Format};
use paystream_query::schedule::{self, Period, RunOutcome};
use paystream_query::LakeQuery;
use paystream_sinks::delta::{storage_options, LakeLocation};

use crate::cli::{self, ExportFormatArg, OutputFormat};
use crate::{pipeline, repl};

pub async fn query(args: cli::QueryArgs) -> Result<ExitCode> {
    let (location, names) = lake_and_tables(args.lake.as_deref(), args.config.as_deref())?;
    let lake = LakeQuery::open(&location, &names).await?;
    let Some(sql) = args.sql else {
        repl::run(&lake, args.timing).await?;
        return Ok(ExitCode::SUCCESS);
    };
    if args.format == OutputFormat::Parquet || args.output.is_some() {
        // A file: streamed, whatever the result size, and never left half-written.
        let Some(path) = &args.output else {
            anyhow::bail!("--format parquet writes a file: add --output FILE");
        };
        let to = path.to_string_lossy();
        let format = match args.format {
            OutputFormat::Parquet => ExportFormat::Parquet,
            OutputFormat::Json => ExportFormat::Json,
            OutputFormat::Csv => ExportFormat::Csv,
            OutputFormat::Table => {
                anyhow::bail!("--output writes csv, json or parquet: add --format")
            }
        };
        let target = ExportTarget::parse(&to, &env_storage_options())?;
        let started = Instant::now();
        let stats = export(&lake, &sql, format, &target, &mut |_| {}).await?;
        report_timing(args.timing, started);
        eprintln!("{} rows written to {target}", stats.rows);
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let batches = lake.sql(&sql).await.context("query failed")?;
    let elapsed = started;
    let format = match args.format {
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Json => Format::Json,
        _ => Format::Table,
    };
    let mut text = render(&batches, format)?;
    if format == Format::Table {
        text.push('\n');
    }
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing the result")?;
    report_timing(args.timing, elapsed);
    Ok(ExitCode::SUCCESS)
}

/// The `--timing` line; the last line on stderr, which scripts/bench-query reads.
fn report_timing(on: bool, started: Instant) {
    if on {
        eprintln!("timing: {:.3} ms", started.elapsed().as_secs_f64() * 1e3);
    }
}

pub async fn export_command(args: cli::ExportArgs) -> Result<ExitCode> {
    let (location, names) = lake_and_tables(args.lake.as_deref(), args.config.as_deref())?;
    let lake = LakeQuery::open(&location, &names).await?;
    if let Some(id) = &args.id {
        // `requires = "config"` in the CLI guarantees the file.
        let path = args.config.as_deref().context("--id needs --config")?;
        let cfg = crate::load(path)?;
        let Some(e) = cfg.exports.get(id) else {
            let known: Vec<_> = cfg.exports.keys().cloned().collect();
            anyhow::bail!(
                "{}: no [exports.{id}] (exports: {})",
                path.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
        };
        let settled =
            chrono::Utc::now() - chrono::Duration::from_std(schedule::SETTLE).unwrap_or_default();
        let period =
            Period::last_completed(settled, e.every).context("the export's period is too long")?;
        match schedule::run_once(&lake, e, period, &export_options(&location)).await? {
            RunOutcome::Written { file, stats } => {
                eprintln!(
                    "{} rows ({} bytes) written to {file}",
                    stats.rows, stats.bytes
                );
            }
            RunOutcome::AlreadyThere { file } => {
                eprintln!(
                    "{file} exists already: period {} to {} was exported",
                    period.start, period.end
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(sql), Some(to)) = (&args.sql, &args.to) else {
        anyhow::bail!("give --sql and --to, or --config and --id");
    };
    let format = match args.format {
        Some(ExportFormatArg::Csv) => ExportFormat::Csv,
        Some(ExportFormatArg::Json) => ExportFormat::Json,
        Some(ExportFormatArg::Parquet) => ExportFormat::Parquet,
        None if to.ends_with(".parquet") => ExportFormat::Parquet,
        None if to.ends_with(".json") || to.ends_with(".jsonl") => ExportFormat::Json,
        None => ExportFormat::Csv,
    };
    let target = ExportTarget::parse(to, &export_options(&location))?;
    let started = Instant::now();
    let mut bar = Progress::new();
    let stats = export(&lake, sql, format, &target, &mut |s| bar.update(s)).await;
    bar.finish();
    let stats = stats?;
    eprintln!(
        "{} rows ({} bytes) written to {target} in {:.1}s",
        stats.rows,
        stats.bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// S3 settings for export targets: the lake's own, over the `AWS_*` variables (which
/// object_store does not read by itself when given explicit options).
fn export_options(location: &LakeLocation) -> std::collections::HashMap<String, String> {
    let mut options = env_storage_options();
    options.extend(location.options().clone());
    options
}

/// A progress line on a terminal (rows and bytes so far); nothing when stderr is not one.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Self(Some(bar))
    }

    fn update(&mut self, s: ExportStats) {
        if let Some(bar) = &self.0 {
            bar.set_message(format!(
                "{} rows, {}",
                s.rows,
                indicatif::HumanBytes(s.bytes)
            ));
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// The lake of `--lake`, else of the pipeline file's delta sink, else ./lake; and the table
/// names to register.
pub fn lake_and_tables(
    lake: Option<&str>,
    config: Option<&std::path::Path>,
) -> Result<(LakeLocation, Vec<String>)> {
    let cfg = config.map(crate::load).transpose()?;
    let sink = cfg.as_ref().and_then(|c| {
        c.sinks
            .values()
            .map(|s| match s {
                SinkConfig::Delta(d) => d,
            })
            .next()
    });
    let location = match (lake, sink) {
        (Some(uri), _) => LakeLocation::resolve(uri, env_storage_options())?,
        (None, Some(d)) => pipeline::lake_location(d)?,
        (None, None) => LakeLocation::resolve("./lake", env_storage_options())?,
    };
    let names = match &cfg {
        Some(c) => table_names(c),
        None => table_names(&shipped_pipeline()?),
    };
    Ok((location, names))
}

/// The shipped `pipelines.toml` (built in), for the tables a lake written without a pipeline
/// file of one's own holds.
fn shipped_pipeline() -> Result<Config> {
    let env = |name: &str| std::env::var(name).ok();
    paystream_core::config::from_str(
        crate::demo::DEFAULT_PIPELINE,
        "pipelines.toml (built in)",
        &env,
    )
    .map_err(|d| anyhow::anyhow!("{d}"))
}

/// Every table `cfg`'s pipeline writes: its event tables, `dlq`, `spans`, `late_events` and
/// its window transforms' result tables.
pub fn table_names(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = cfg.schema.tables().map(|t| t.name.clone()).collect();
    names.push(DLQ_TABLE.to_string());
    names.push(SPANS_TABLE.to_string());
    names.push(LATE_EVENTS_TABLE.to_string());
    for t in cfg.transforms.values() {
        if let TransformConfig::Window(w) = t {
            names.push(w.table.clone());
        }
    }
    names
}

pub async fn serve(args: cli::ServeArgs) -> Result<ExitCode> {
    let (location, names) = lake_and_tables(args.lake.as_deref(), args.config.as_deref())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let servers = spawn_servers(
        &location,
        &names,
        Some(args.listen),
        args.http_listen,
        &args.limits,
        stop_rx,
    )
    .await?;
    pipeline::wait_for_signal().await;
    let _ = stop_tx.send(true);
    join_servers(servers).await?;
    Ok(ExitCode::SUCCESS)
}

pub type Server = tokio::task::JoinHandle<paystream_query::Result<()>>;

/// Start the Postgres and/or HTTP endpoints over `location`; they stop when `stop` turns true.
pub async fn spawn_servers(
    location: &LakeLocation,
    names: &[String],
    postgres: Option<std::net::SocketAddr>,
    http: Option<std::net::SocketAddr>,
    limits: &cli::ServeLimits,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<Server>> {
    let users = match std::env::var("PAYSTREAM_SERVE_USERS") {
        Ok(v) => parse_users(&v)?,
        Err(_) => Default::default(),
    };
    if users.is_empty() && !limits.allow_anonymous {
        anyhow::bail!(
            "no users configured: set PAYSTREAM_SERVE_USERS=name:password[,name:password] \
             (or pass --allow-anonymous)"
        );
    }
    let stopped = move || {
        let mut rx = stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let tls = match (&limits.tls_cert, &limits.tls_key) {
        (Some(cert), Some(key)) => Some(paystream_query::serve::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let lake = LakeQuery::open_for_serving(location, names, limits.memory_limit_mib << 20).await?;
    let mut servers = Vec::new();
    if let Some(addr) = http {
        servers.push(tokio::spawn(paystream_query::http::serve_http(
            lake.context(),
            addr,
            users.clone(),
            limits.query_timeout,
            limits.max_concurrent_queries,
            tls.clone(),
            stopped(),
        )));
    }
    if let Some(listen) = postgres {
        let opts = paystream_query::serve::ServeOptions {
            listen,
            users,
            allow_anonymous: limits.allow_anonymous,
            query_timeout: limits.query_timeout,
            max_concurrent_queries: limits.max_concurrent_queries,
            refresh_every: std::time::Duration::from_secs(1),
            tls,
        };
        servers.push(tokio::spawn(paystream_query::serve::serve_postgres(
            lake,
            opts,
            stopped(),
        )));
    }
    Ok(servers)
}

/// Start the scheduled exports of `cfg` over `location`; they stop when `stop` turns true.
pub async fn spawn_exports(
    location: &LakeLocation,
    names: &[String],
    cfg: &Config,
    limits: &cli::ServeLimits,
    max_latency: std::time::Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Server> {
    let lake = LakeQuery::open_for_serving(location, names, limits.memory_limit_mib << 20).await?;
    let exports: Vec<_> = cfg.exports.values().cloned().collect();
    // On a lake with tables, a query that cannot plan is a config error: refuse to start. On
    // a new lake the tables do not exist yet, and each period's run reports its own errors.
    if !lake.tables().is_empty() {
        schedule::check(&lake, &exports).await?;
    }
    let options = export_options(location);
    // Rows at a period's end are committed within the sink's max_latency.
    let settle = schedule::SETTLE + max_latency;
    Ok(tokio::spawn(async move {
        schedule::run_scheduled(lake, exports, options, settle, stop).await;
        Ok(())
    }))
}

pub async fn join_servers(servers: Vec<Server>) -> Result<()> {
    for s in servers {
        s.await.context("an SQL endpoint task failed")??;
    }
    Ok(())
}

/// `name:password[,name:password]`; a password may contain ':' but not ','.
fn parse_users(text: &str) -> Result<std::collections::HashMap<String, String>> {
    let mut users = std::collections::HashMap::new();
    for (i, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        match entry.split_once(':') {
            Some((name, password)) if !name.is_empty() && !password.is_empty() => {
                users.insert(name.to_owned(), password.to_owned());
            }
            // Says where, never what: the entry holds a password.
            _ => anyhow::bail!(
                "PAYSTREAM_SERVE_USERS: entry {} is not name:password",
                i + 1
            ),
        }
    }
    Ok(users)
}

/// S3 settings from the standard AWS_* variables, for commands given a bare lake URI.
pub fn env_storage_options() -> std::collections::HashMap<String, String> {
    let var = |k: &str| std::env::var(k).ok();
    storage_options(
        var("AWS_ENDPOINT_URL").as_deref(),
        var("AWS_REGION").as_deref(),
        var("AWS_ACCESS_KEY_ID").as_deref(),
        var("AWS_SECRET_ACCESS_KEY").as_deref(),
        var("AWS_SESSION_TOKEN").as_deref(),
        var("AWS_ALLOW_HTTP").is_some_and(|v| v == "true" || v == "1"),
    )
}
