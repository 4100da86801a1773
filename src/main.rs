//! The `paystream` binary: parses the command line and wires the crates together. This is the
//! only place `anyhow` is used; the libraries report typed errors.

mod cli;
mod demo;
mod fill;
mod metrics;
mod pipeline;
mod repl;
mod sql;
mod telemetry;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use paystream_core::config::{self, Config, SinkConfig};

use cli::{Cli, Command};

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
                let problems = pipeline::check_windows(&cfg).await;
                if !problems.is_empty() {
                    for p in &problems {
                        eprintln!("{p}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
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
            // The SQL endpoints and the scheduled exports, when asked for, work on the sink's
            // lake from this process and stop with the pipeline.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let wants_serve = args.serve.is_some() || args.serve_http.is_some();
            let mut servers = Vec::new();
            if wants_serve || !cfg.exports.is_empty() {
                let sink = cfg.sinks.values().next().map(|s| match s {
                    SinkConfig::Delta(d) => d,
                });
                let Some(sink) = sink else {
                    anyhow::bail!("--serve and [exports]: the pipeline has no delta sink to read");
                };
                let location = pipeline::lake_location(sink)?;
                let names = sql::table_names(&cfg);
                if wants_serve {
                    servers = sql::spawn_servers(
                        &location,
                        &names,
                        args.serve,
                        args.serve_http,
                        &args.limits,
                        stop_rx.clone(),
                    )
                    .await?;
                }
                if !cfg.exports.is_empty() {
                    servers.push(
                        sql::spawn_exports(
                            &location,
                            &names,
                            &cfg,
                            &args.limits,
                            sink.max_latency,
                            stop_rx,
                        )
                        .await?,
                    );
                }
            }
            let totals = pipeline::run(&cfg, opts).await;
            let _ = stop_tx.send(true);
            sql::join_servers(servers).await?;
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
        Command::Query(args) => sql::query(args).await,
        Command::Export(args) => sql::export_command(args).await,
        Command::Serve(args) => sql::serve(args).await,
        Command::Demo(args) => demo::demo(args).await,
    }
}
