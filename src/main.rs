//! The `paystream` binary: parses the command line and wires the crates together. This is the
//! only place `anyhow` is used; the libraries report typed errors.

mod cli;
mod demo;
mod pipeline;
mod telemetry;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use paystream_core::config::{self, Config, SinkConfig};
use paystream_core::schema::{DLQ_TABLE, SPANS_TABLE};
use paystream_query::format::{render, Format};
use paystream_query::LakeQuery;
use paystream_sinks::delta::{storage_options, LakeLocation};

use cli::{Cli, Command, OutputFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `run` reads its pipeline file first: `[telemetry]` decides where spans go.
    let config = match &cli.command {
        Command::Run(args) => match load(&args.config.config) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let telemetry = {
        let _in_runtime = runtime.enter();
        match telemetry::init(cli.log_format, config.as_ref().map(|c| &c.telemetry)) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let code = match runtime.block_on(dispatch(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Blocking flush of the last spans, while the runtime's workers still run.
    telemetry.shutdown();
    code
}

fn load(path: &std::path::Path) -> Result<Config> {
    config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn dispatch(command: Command, config: Option<Config>) -> Result<ExitCode> {
    match command {
        Command::Validate(args) => match config::load(&args.config) {
            Ok(cfg) => {
                println!(
                    "{}: valid ({} source(s), {} transform(s), {} sink(s))",
                    args.config.display(),
                    cfg.sources.len(),
                    cfg.transforms.len(),
                    cfg.sinks.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Run(args) => {
            let cfg = match config {
                Some(c) => c,
                None => load(&args.config.config)?,
            };
            let opts = pipeline::RunOptions {
                stop_when_idle: args.stop_when_idle,
                progress_every: Some(args.progress).filter(|d| !d.is_zero()),
                stop_after: None,
            };
            // The SQL endpoints, when asked for, serve the sink's lake from this process and
            // stop with the pipeline.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let servers = if args.serve.is_some() || args.serve_http.is_some() {
                let sink = cfg.sinks.values().next().map(|s| match s {
                    SinkConfig::Delta(d) => d,
                });
                let Some(sink) = sink else {
                    anyhow::bail!("--serve: the pipeline has no delta sink to serve");
                };
                let location = pipeline::lake_location(sink)?;
                let mut names: Vec<String> = cfg.schema.tables().map(|t| t.name.clone()).collect();
                names.push(DLQ_TABLE.to_string());
                names.push(SPANS_TABLE.to_string());
                spawn_servers(
                    &location,
                    &names,
                    args.serve,
                    args.serve_http,
                    &args.limits,
                    stop_rx,
                )
                .await?
            } else {
                Vec::new()
            };
            let totals = pipeline::run(&cfg, opts).await;
            let _ = stop_tx.send(true);
            join_servers(servers).await?;
            let totals = totals?;
            tracing::info!(rows = ?totals.rows, commits = totals.commits, files = totals.files, "pipeline stopped");
            if let (Some(busy), Some(rate)) = (totals.busy, totals.rate()) {
                // One stable line for scripts/bench to read.
                println!(
                    "drained {} messages in {:.3}s: {:.0} msg/s",
                    totals.messages,
                    busy.as_secs_f64(),
                    rate
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => demo::generate(args).await,
        Command::Query(args) => query(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => demo::demo(args).await,
    }
}

/// The lake of `--lake`, else of the pipeline file's delta sink, else ./lake; and the table
/// names to register.
fn lake_and_tables(
    lake: Option<&str>,
    config: Option<&std::path::Path>,
) -> Result<(LakeLocation, Vec<String>)> {
    let cfg = config.map(load).transpose()?;
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
    let schema = match &cfg {
        Some(c) => c.schema.clone(),
        None => paystream_core::schema::SchemaSpec::preset()?,
    };
    let mut names: Vec<String> = schema.tables().map(|t| t.name.clone()).collect();
    names.push(DLQ_TABLE.to_string());
    names.push(SPANS_TABLE.to_string());
    Ok((location, names))
}

async fn serve(args: cli::ServeArgs) -> Result<ExitCode> {
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

type Server = tokio::task::JoinHandle<paystream_query::Result<()>>;

/// Start the Postgres and/or HTTP endpoints over `location`; they stop when `stop` turns true.
async fn spawn_servers(
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
    let lake = LakeQuery::open_for_serving(location, names, limits.memory_limit_mib << 20).await?;
    let mut servers = Vec::new();
    if let Some(addr) = http {
        servers.push(tokio::spawn(paystream_query::http::serve_http(
            lake.context(),
            addr,
            users.clone(),
            limits.query_timeout,
            limits.max_concurrent_queries,
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
        };
        servers.push(tokio::spawn(paystream_query::serve::serve_postgres(
            lake,
            opts,
            stopped(),
        )));
    }
    Ok(servers)
}

async fn join_servers(servers: Vec<Server>) -> Result<()> {
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

async fn query(args: cli::QueryArgs) -> Result<ExitCode> {
    let (location, names) = lake_and_tables(args.lake.as_deref(), args.config.as_deref())?;
    let lake = LakeQuery::open(&location, &names).await?;
    let batches = lake.sql(&args.sql).await.context("query failed")?;
    let format = match args.format {
        OutputFormat::Table => Format::Table,
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Json => Format::Json,
    };
    print!("{}", render(&batches, format)?);
    if matches!(format, Format::Table) {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// S3 settings from the standard AWS_* variables, for commands given a bare lake URI.
fn env_storage_options() -> std::collections::HashMap<String, String> {
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
