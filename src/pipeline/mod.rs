//! Wiring of a running pipeline: the delta sink and the sources it lists as inputs.
//!
//! A Kafka source runs on its own thread and feeds [`kafka_sink`], which commits rows with their
//! offsets; an otlp source serves gRPC and HTTP and feeds [`spans`], which commits rows and
//! then answers the requests. Window transforms ([`windows`]) ride on the Kafka sink loop: they
//! see each row once its table accepted it, and commit with it. Both stop on SIGINT/SIGTERM
//! after committing what they hold.

mod kafka_sink;
mod spans;
mod sql_stages;
mod window_metrics;
mod windows;

pub use windows::check as check_windows;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use paystream_core::config::{
    Config, DeltaSinkConfig, KafkaSourceConfig, OtlpSourceConfig, SinkConfig, SourceConfig,
    StartFrom,
};
use paystream_core::schema::SPANS_TABLE;
use paystream_ingest::kafka::{self, SourceOptions, SourceStats};
use paystream_ingest::otlp::{OtlpOptions, OtlpReceiver, SpanRequest};
use paystream_sinks::delta::{storage_options, Lake, LakeLocation};
use paystream_sinks::spans::SpanSink;
use tokio::sync::mpsc::Receiver;
use tokio::sync::watch;
use tracing::info;

use crate::metrics::{self, PipelineMetrics};
use kafka_sink::SinkLoop;
use spans::SpanLoop;

/// How long span ids are remembered for de-duplicating OTLP retries, across restarts too.
const SPAN_DEDUPE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Settings of `paystream run` that are not part of the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop once no message arrived for this long and everything is committed.
    pub stop_when_idle: Option<Duration>,
    /// Print a progress line this often.
    pub progress_every: Option<Duration>,
    /// Stop (committing everything) after this long.
    pub stop_after: Option<Duration>,
}

/// Totals of a finished run.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub rows: BTreeMap<String, u64>,
    pub commits: u64,
    pub files: u64,
    /// Messages consumed.
    pub messages: u64,
    /// From the first batch received to the last commit that carried data: the drain time
    /// `scripts/bench` reports, free of group-join and idle waits.
    pub busy: Option<Duration>,
}

impl Totals {
    /// Messages per second over the busy time.
    pub fn rate(&self) -> Option<f64> {
        self.busy
            .map(|d| self.messages as f64 / d.as_secs_f64().max(1e-6))
    }
}

/// The lake location a delta sink writes to, with its S3 options.
pub fn lake_location(sink: &DeltaSinkConfig) -> Result<LakeLocation> {
    let s3 = &sink.s3;
    let opts = storage_options(
        s3.endpoint.as_deref(),
        s3.region.as_deref(),
        s3.access_key_id.as_ref().map(|s| s.expose()),
        s3.secret_access_key.as_ref().map(|s| s.expose()),
        s3.session_token.as_ref().map(|s| s.expose()),
        s3.allow_http,
    );
    Ok(LakeLocation::resolve(&sink.uri, opts)?)
}

/// Source options from a `[sources.<id>]` of type kafka.
pub fn source_options(k: &KafkaSourceConfig, run: &RunOptions) -> SourceOptions {
    SourceOptions {
        brokers: k.brokers.clone(),
        topics: k.topics.clone(),
        group_id: k.group_id.clone(),
        start_from_end: matches!(k.start_from, StartFrom::Latest),
        batch_max_events: k.batch_max_events,
        batch_max_wait: k.batch_max_wait,
        max_message_bytes: usize::try_from(k.max_message_bytes).unwrap_or(usize::MAX),
        fetch_wait_max: k.fetch_wait_max,
        properties: k
            .librdkafka
            .iter()
            .map(|(key, v)| (key.clone(), v.expose().to_string()))
            .collect(),
        stop_when_idle: run.stop_when_idle,
        resume_rewind: i64::try_from(k.resume_rewind).unwrap_or(i64::MAX),
    }
}

/// What `paystream run` wires: one delta sink fed by at most one kafka source and at most
/// one otlp source.
struct Plan<'a> {
    sink: &'a DeltaSinkConfig,
    kafka: Option<&'a KafkaSourceConfig>,
    /// The kafka source's id.
    kafka_id: Option<&'a str>,
    otlp: Option<&'a OtlpSourceConfig>,
}

fn plan(cfg: &Config) -> Result<Plan<'_>> {
    let (sink_id, sink) = match cfg.sinks.iter().next() {
        Some((id, SinkConfig::Delta(d))) if cfg.sinks.len() == 1 => (id, d),
        _ => bail!(
            "{}: exactly one delta sink is supported per pipeline",
            cfg.file
        ),
    };
    let mut plan = Plan {
        sink,
        kafka: None,
        kafka_id: None,
        otlp: None,
    };
    for input in &sink.inputs {
        match cfg.sources.get(input) {
            Some(SourceConfig::Kafka(k)) if plan.kafka.is_none() => {
                plan.kafka = Some(k);
                plan.kafka_id = Some(input.as_str());
            }
            Some(SourceConfig::Otlp(o)) if plan.otlp.is_none() => plan.otlp = Some(o),
            Some(_) => bail!(
                "{}: sinks.{sink_id}.inputs: at most one kafka and one otlp source per sink",
                cfg.file
            ),
            None => bail!(
                "{}: sinks.{sink_id}.inputs: {input} is not a source (the lake stores the \
                 sources' events; transforms publish their own results)",
                cfg.file
            ),
        }
    }
    if !cfg.transforms.is_empty() && plan.kafka.is_none() {
        bail!(
            "{}: transforms read the kafka source's rows as the lake accepts them, so the delta \
             sink must read a kafka source",
            cfg.file
        );
    }
    Ok(plan)
}

/// Run the pipeline until SIGINT/SIGTERM (or idle, when asked).
pub async fn run(cfg: &Config, run: RunOptions) -> Result<Totals> {
    let plan = plan(cfg)?;
    let location = lake_location(plan.sink)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = PipelineMetrics::new();
    let metrics_server = match cfg.metrics.listen {
        Some(addr) => Some(tokio::spawn(metrics::serve(
            metrics::bind(addr).await?,
            metrics.clone(),
            stop_rx.clone(),
        ))),
        None => None,
    };
    let signals = tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            wait_for_signal().await;
            info!("signal received: committing and stopping");
            let _ = stop_tx.send(true);
        }
    });
    let timer = run.stop_after.map(|after| {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = stop_tx.send(true);
        })
    });
    let otlp = match plan.otlp {
        Some(o) => Some(start_otlp(cfg, plan.sink, o, &location).await?),
        None => None,
    };
    let (receiver, span_loop) = match otlp {
        Some((receiver, span_loop, rx)) => (Some(receiver), Some((span_loop, rx))),
        None => (None, None),
    };
    // Both sides run in this task (the lake writers are not `Sync`, so not spawned): the
    // Kafka path until it stops, then the receiver, whose in-flight requests wait for the span
    // loop's commit; the span loop ends when the receiver's last sender is gone.
    let sources = async {
        let result = match plan.kafka {
            Some(k) => {
                run_kafka(
                    cfg,
                    plan.sink,
                    (plan.kafka_id.unwrap_or_default(), k),
                    &location,
                    &run,
                    stop_rx.clone(),
                    metrics.clone(),
                )
                .await
            }
            None => {
                let mut rx = stop_rx.clone();
                let _ = rx.wait_for(|s| *s).await;
                Ok(Totals::default())
            }
        };
        if let Some(r) = receiver {
            r.shutdown().await;
        }
        result
    };
    let spans = async {
        match span_loop {
            Some((l, rx)) => Some(l.run(rx).await),
            None => None,
        }
    };
    let (result, committed) = tokio::join!(sources, spans);
    let mut totals = result?;
    if let Some(n) = committed {
        totals.rows.insert(SPANS_TABLE.to_string(), n);
    }
    signals.abort();
    if let Some(t) = timer {
        t.abort();
    }
    metrics.set_ready(false);
    let _ = stop_tx.send(true);
    if let Some(server) = metrics_server {
        server.await??;
    }
    Ok(totals)
}

/// Start the OTLP receiver and the loop that commits its spans.
async fn start_otlp(
    cfg: &Config,
    sink_cfg: &DeltaSinkConfig,
    otlp: &OtlpSourceConfig,
    location: &LakeLocation,
) -> Result<(OtlpReceiver, SpanLoop, Receiver<SpanRequest>)> {
    let sink = SpanSink::open(location, sink_cfg.target_file_size, SPAN_DEDUPE_WINDOW)
        .await
        .with_context(|| format!("opening the spans table at {}", location.root()))?;
    info!(remembered = sink.remembered(), "spans table open");
    let (tx, rx) = tokio::sync::mpsc::channel(otlp.max_pending_requests);
    let receiver = paystream_ingest::otlp::start(
        OtlpOptions {
            grpc: otlp.grpc,
            http: otlp.http,
            max_request_bytes: usize::try_from(otlp.max_request_bytes).unwrap_or(usize::MAX),
        },
        tx,
    )
    .await?;
    let span_loop = SpanLoop {
        sink,
        pipeline: cfg.pipeline.name.clone(),
        max_latency: sink_cfg.max_latency,
        max_buffer_bytes: usize::try_from(sink_cfg.max_buffer_bytes).unwrap_or(usize::MAX),
        waiting: Vec::new(),
        committed: 0,
    };
    Ok((receiver, span_loop, rx))
}

/// The Kafka source into the lake's event tables, until it stops.
async fn run_kafka(
    cfg: &Config,
    sink_cfg: &DeltaSinkConfig,
    (kafka_id, kafka_cfg): (&str, &KafkaSourceConfig),
    location: &LakeLocation,
    run: &RunOptions,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<PipelineMetrics>,
) -> Result<Totals> {
    let lake = Lake::open(
        location,
        &cfg.pipeline.name,
        &cfg.schema,
        sink_cfg.target_file_size,
    )
    .await
    .with_context(|| format!("opening the lake at {}", location.root()))?;
    info!(lake = %location.root(), tables = ?lake.table_names().collect::<Vec<_>>(), "lake open");
    let windows = windows::Windows::open(
        cfg,
        kafka_id,
        location,
        sink_cfg.target_file_size,
        metrics.clone(),
    )
    .await?;

    // A few batches in flight: enough to overlap decoding with Parquet encoding, small enough
    // that a stalled sink pauses the consumer quickly.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let source = kafka::spawn(source_options(kafka_cfg, run), &cfg.schema, tx)?;
    let source_stop = source.stop_handle();
    let stats = source.stats.clone();
    let committed = source.committed_sender();
    // The source's thread polls an atomic flag; a signal (or the timer) raises it.
    let forward = tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        source_stop.store(true, Ordering::SeqCst);
    });
    let progress = run
        .progress_every
        .map(|every| tokio::spawn(progress(stats.clone(), every)));
    let lag = tokio::spawn({
        let (stats, metrics) = (stats.clone(), metrics.clone());
        async move {
            let mut every = tokio::time::interval(metrics::LAG_REFRESH);
            loop {
                every.tick().await;
                let lag = stats
                    .lag
                    .lock()
                    .map(|l| l.clone())
                    .unwrap_or_else(|p| p.into_inner().clone());
                metrics.set_lag(&lag);
            }
        }
    });
    metrics.set_ready(true);

    let sink = SinkLoop {
        lake,
        max_latency: sink_cfg.max_latency,
        max_buffer_bytes: usize::try_from(sink_cfg.max_buffer_bytes).unwrap_or(usize::MAX),
        committed,
        totals: Totals::default(),
        first_batch: None,
        pending_spans: Vec::new(),
        metrics,
        pending_starts: Vec::new(),
        pending_kafka_ms: Vec::new(),
        windows,
    };
    let sink_result = sink.run(rx).await;
    lag.abort();
    if sink_result.is_err() {
        source.stop();
    }
    let source_result = tokio::task::spawn_blocking(move || source.join()).await?;
    forward.abort();
    if let Some(p) = progress {
        p.abort();
    }
    let totals = sink_result?;
    source_result?;
    Ok(totals)
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn progress(stats: Arc<SourceStats>, every: Duration) {
    let mut last = (0u64, Instant::now());
    loop {
        tokio::time::sleep(every).await;
        let n = stats.messages.load(Ordering::Relaxed);
        let rate = (n - last.0) as f64 / last.1.elapsed().as_secs_f64().max(1e-3);
        info!(
            consumed = n,
            per_sec = rate.round(),
            batches = stats.batches.load(Ordering::Relaxed),
            // Times the sink fell behind and the consumer paused: the first thing to look at
            // when the rate is lower than the broker's.
            paused = stats.paused.load(Ordering::Relaxed),
            "progress"
        );
        last = (n, Instant::now());
    }
}
