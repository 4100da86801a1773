//! `paystream generate` and `paystream demo`: synthetic traffic into a real broker, or into an
//! embedded one (librdkafka's mock cluster) together with the default pipeline, so a newcomer
//! sees the whole path with nothing installed.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use paystream_core::config;
use paystream_ingest::generator::{produce, Generator, GeneratorOptions, ProduceOptions, Summary};
use rdkafka::mocking::MockCluster;
use tracing::info;

use crate::cli::{DemoArgs, GenerateArgs};
use crate::pipeline;

/// The shipped pipeline, which the demo runs as it is.
pub(crate) const DEFAULT_PIPELINE: &str = include_str!("../pipelines.toml");

async fn ctrl_c() {
    // If signals cannot be installed, only --count or the process ending stops production.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub async fn generate(args: GenerateArgs) -> Result<ExitCode> {
    if let Some(uri) = args.lake.clone() {
        return crate::fill::generate_into_lake(args, &uri).await;
    }
    let options = GeneratorOptions {
        seed: args.seed,
        bad_ratio: args.bad_ratio,
        late_ratio: args.late_ratio,
        topic_prefix: args.topic_prefix.clone(),
        rate_per_sec: args.rate,
        ..GeneratorOptions::default()
    };
    options.validate()?;
    let mut generator = Generator::new(options);
    let opts = ProduceOptions {
        brokers: args.brokers.clone(),
        count: args.count,
        rate_per_sec: args.rate,
        properties: args.property.clone(),
    };
    let mut summary = Summary::default();
    let stats = produce(&mut generator, &opts, &mut summary, ctrl_c())
        .await
        .context("producing to Kafka")?;
    let secs = stats.elapsed.as_secs_f64().max(1e-3);
    eprintln!(
        "produced {} messages ({} bytes) in {:.1}s: {:.0} msg/s",
        stats.sent,
        stats.bytes,
        secs,
        stats.sent as f64 / secs
    );
    if let Some(path) = &args.summary {
        summary
            .to_json_file(path)
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn demo(args: DemoArgs) -> Result<ExitCode> {
    let cluster =
        MockCluster::new(1).context("starting the embedded Kafka (librdkafka mock cluster)")?;
    for (topic, partitions) in [("payments", 6), ("orders", 3), ("refunds", 3)] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    let brokers = cluster.bootstrap_servers();
    let lake = args.lake.clone();
    let env = |name: &str| match name {
        "KAFKA_BROKERS" => Some(brokers.clone()),
        "LAKE_URI" => Some(lake.clone()),
        // Any free port, unless one is asked for: the demo must start whatever else runs.
        "METRICS_LISTEN" => Some(std::env::var(name).unwrap_or_else(|_| "127.0.0.1:0".into())),
        _ => std::env::var(name).ok(),
    };
    let cfg = config::from_str(DEFAULT_PIPELINE, "pipelines.toml (built in)", &env)
        .map_err(|d| anyhow::anyhow!("{d}"))?;

    eprintln!(
        "paystream demo\n\
         - embedded Kafka at {brokers} with topics payments (6 partitions), orders, refunds\n\
         - synthetic traffic at {rate} events/s, {bad:.1}% bad records (they go to the dlq table)\n\
         - the default pipeline (pipelines.toml) writing Delta tables under {lake}\n\
         Stop with Ctrl-C; everything consumed is committed first.\n",
        rate = args.rate,
        bad = args.bad_ratio * 100.0,
    );

    let producer = tokio::spawn({
        let brokers = brokers.clone();
        let rate = args.rate;
        let bad_ratio = args.bad_ratio;
        async move {
            let mut generator = Generator::new(GeneratorOptions {
                bad_ratio,
                late_ratio: 0.02,
                rate_per_sec: Some(rate),
                ..GeneratorOptions::default()
            });
            let opts = ProduceOptions {
                brokers,
                count: None,
                rate_per_sec: Some(rate),
                properties: Vec::new(),
            };
            let mut summary = Summary::default();
            produce(&mut generator, &opts, &mut summary, ctrl_c()).await
        }
    });

    let totals = pipeline::run(
        &cfg,
        pipeline::RunOptions {
            stop_when_idle: None,
            progress_every: Some(Duration::from_secs(5)),
            stop_after: args.duration,
        },
    )
    .await?;
    producer.abort();
    info!(rows = ?totals.rows, commits = totals.commits, "demo stopped");
    let lake = &args.lake;
    eprintln!(
        "\nThe lake is in {lake}: {rows:?} rows committed in {commits} commits.\n\
         Query it:\n  \
         paystream query --lake {lake} \"SELECT currency, count(*) AS payments, sum(amount_minor) AS amount_minor FROM payments GROUP BY currency ORDER BY 2 DESC\"\n  \
         paystream query --lake {lake} \"SELECT error_kind, count(*) FROM dlq GROUP BY 1\"\n  \
         paystream query --lake {lake} \"SELECT window_start, currency, authorized, rejected, authorization_rate FROM payment_decisions ORDER BY window_start DESC, currency LIMIT 10\"\n  \
         python -c \"import deltalake; print(deltalake.DeltaTable('{lake}/payments').to_pyarrow_table().num_rows)\"",
        rows = totals.rows,
        commits = totals.commits,
    );
    drop(cluster);
    Ok(ExitCode::SUCCESS)
}
