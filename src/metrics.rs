//! The pipeline's own metrics, served as Prometheus text on `/metrics` (every name prefixed
//! `paystream_`), with `/healthz` (the process answers) and `/readyz` (the lake is open and the
//! source is running) beside them.
//!
//! Counters are bumped once per batch or per commit, never on the consumer thread, so the hot
//! path does not pay for them (the freshness histogram takes one observation per row, at
//! commit time, on the sink's task). Consumer lag is librdkafka's own figure (high watermark minus the group
//! offset the pipeline commits after each lake commit), refreshed every second from its
//! statistics and replaced whole each time, so a partition that moved to another consumer
//! stops being reported instead of going stale.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

impl PartitionLabels {
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: topic.to_owned(),
            partition: partition.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransformLabels {
    pub transform: String,
}

/// Latency buckets from 1 ms to about 65 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

/// Finer buckets around the one-second freshness target than [`latency_buckets`] has.
const FRESHNESS_BUCKETS: [f64; 16] = [
    0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];

fn histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Every metric of a running pipeline.
pub struct PipelineMetrics {
    registry: Registry,
    pub consumed_events: Family<PartitionLabels, Counter>,
    pub consumed_bytes: Family<PartitionLabels, Counter>,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub decode_errors: Family<KindLabels, Counter>,
    pub dlq_records: Counter,
    pub rows_committed: Family<TableLabels, Counter>,
    pub commits: Counter,
    pub files_written: Counter,
    pub bytes_written: Counter,
    pub batch_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub kafka_to_commit_seconds: Histogram,
    pub last_commit_seconds: Gauge<f64, AtomicU64>,
    pub late_events: Family<TransformLabels, Counter>,
    pub window_series_dropped: Family<TransformLabels, Gauge>,
    pub watermark_delay_seconds: Gauge<f64, AtomicU64>,
    pub event_to_metric_seconds: Histogram,
    /// The window transforms' result gauges, rendered by [`crate::pipeline`] at each emission
    /// (their label sets change with every window, so they are replaced whole).
    window_text: std::sync::Mutex<String>,
    ready: AtomicBool,
    /// The partitions the lag gauge reports, to remove those that went away.
    lag_partitions: std::sync::Mutex<Vec<PartitionLabels>>,
}

impl PipelineMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("paystream");
        let m = Self {
            consumed_events: Family::default(),
            consumed_bytes: Family::default(),
            consumer_lag: Family::default(),
            decode_errors: Family::default(),
            dlq_records: Counter::default(),
            rows_committed: Family::default(),
            commits: Counter::default(),
            files_written: Counter::default(),
            bytes_written: Counter::default(),
            batch_seconds: histogram(),
            commit_seconds: histogram(),
            kafka_to_commit_seconds: histogram(),
            last_commit_seconds: Gauge::default(),
            late_events: Family::default(),
            window_series_dropped: Family::default(),
            watermark_delay_seconds: Gauge::default(),
            event_to_metric_seconds: Histogram::new(FRESHNESS_BUCKETS.iter().copied()),
            window_text: std::sync::Mutex::new(String::new()),
            ready: AtomicBool::new(false),
            lag_partitions: std::sync::Mutex::new(Vec::new()),
            registry: Registry::default(),
        };
        registry.register(
            "consumed_events",
            "Kafka messages consumed, per topic and partition",
            m.consumed_events.clone(),
        );
        registry.register(
            "consumed_bytes",
            "Bytes of Kafka message payloads consumed, per topic and partition",
            m.consumed_bytes.clone(),
        );
        registry.register(
            "consumer_lag_messages",
            "Messages in the partition not yet committed to the lake (high watermark minus the committed offset)",
            m.consumer_lag.clone(),
        );
        registry.register(
            "decode_errors",
            "Records that could not be decoded or normalised, by kind (they go to the dlq table)",
            m.decode_errors.clone(),
        );
        registry.register(
            "dlq_records",
            "Records written to the dlq table",
            m.dlq_records.clone(),
        );
        registry.register(
            "rows_committed",
            "Rows committed to the lake, per table",
            m.rows_committed.clone(),
        );
        registry.register("commits", "Commits to the lake", m.commits.clone());
        registry.register(
            "files_written",
            "Data files added to the lake",
            m.files_written.clone(),
        );
        registry.register(
            "bytes_written",
            "Bytes of data files added to the lake",
            m.bytes_written.clone(),
        );
        registry.register(
            "batch_latency_seconds",
            "From a batch's first message consumed to its rows committed",
            m.batch_seconds.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time of one commit to the lake (all tables)",
            m.commit_seconds.clone(),
        );
        registry.register(
            "kafka_to_commit_seconds",
            "Freshness: from each row's Kafka timestamp to the commit that made it queryable",
            m.kafka_to_commit_seconds.clone(),
        );
        registry.register(
            "last_commit_timestamp_seconds",
            "Unix time of the last commit to the lake (a stalled pipeline stops moving it)",
            m.last_commit_seconds.clone(),
        );
        registry.register(
            "late_events",
            "Events that reached a window transform after all their windows had closed (they are in the late_events table)",
            m.late_events.clone(),
        );
        registry.register(
            "window_series_dropped",
            "Result series of a window transform left off /metrics at the last emission, over its max_series",
            m.window_series_dropped.clone(),
        );
        registry.register(
            "watermark_delay_seconds",
            "How far the event-time watermark of the window transforms is behind the wall clock",
            m.watermark_delay_seconds.clone(),
        );
        registry.register(
            "event_to_metric_seconds",
            "Freshness: from an event's time to the window result that counts it being published on /metrics",
            m.event_to_metric_seconds.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// The lake is open and the source runs (or not any more).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Replace the lag of every partition with librdkafka's latest figures. Partitions no
    /// longer reported are removed one by one (never the whole family at once, so a scrape
    /// in between sees no gap).
    pub fn set_lag(&self, lag: &[((String, i32), i64)]) {
        let now: Vec<PartitionLabels> = lag
            .iter()
            .map(|((topic, partition), _)| PartitionLabels::new(topic, *partition))
            .collect();
        for (labels, ((_, _), n)) in now.iter().zip(lag) {
            self.consumer_lag.get_or_create(labels).set((*n).max(0));
        }
        let mut known = self
            .lag_partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in known.iter().filter(|l| !now.contains(l)) {
            self.consumer_lag.remove(gone);
        }
        *known = now;
    }

    /// The text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        let windows = self
            .window_text
            .lock()
            .map(|t| t.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        if !windows.is_empty() {
            // OpenMetrics ends with `# EOF`; the window families go before it.
            if let Some(body) = out.strip_suffix("# EOF\n") {
                out = format!("{body}{windows}# EOF\n");
            } else {
                out.push_str(&windows);
            }
        }
        out
    }

    /// Replace the window transforms' result families (OpenMetrics text, without `# EOF`).
    pub fn set_window_text(&self, text: String) {
        match self.window_text.lock() {
            Ok(mut t) => *t = text,
            Err(p) => *p.into_inner() = text,
        }
    }
}

async fn metrics(State(m): State<Arc<PipelineMetrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn readyz(State(m): State<Arc<PipelineMetrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Listen on `addr` (before the pipeline starts, so a taken port stops it at once).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics.listen: cannot listen on {addr}: {e}"))?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "serving /metrics, /healthz and /readyz");
    }
    Ok(listener)
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    m: Arc<PipelineMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(m);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

/// How often the source's lag figures are copied into the gauge (librdkafka reports them
/// every second).
pub const LAG_REFRESH: Duration = Duration::from_secs(1);
