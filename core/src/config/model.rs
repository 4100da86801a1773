//! The validated config: what [`super::from_str`] returns once a `pipelines.toml` has no
//! problem left. Every value here is already checked (sizes parsed, URIs accepted, inputs
//! resolved), so building components from it needs no further validation beyond what only
//! the network or the disk can tell.

use std::collections::BTreeMap;
use std::time::Duration;

use super::secret::{is_secret_property, SecretString, REDACTED};
use crate::schema::SchemaSpec;

/// Default pipeline name; also the prefix of the Delta `txn` app ids.
pub const DEFAULT_PIPELINE_NAME: &str = "paystream";
/// Default Kafka consumer group.
pub const DEFAULT_GROUP_ID: &str = "paystream";
/// Default most events per decoded batch.
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 100_000;
/// Default longest wait to fill a batch.
pub const DEFAULT_BATCH_MAX_WAIT: Duration = Duration::from_millis(250);
/// Default largest accepted Kafka message; bigger ones go to the DLQ.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1 << 20;
/// Default `fetch.wait.max.ms`: small, because tansu holds every fetch for the full wait.
pub const DEFAULT_FETCH_WAIT_MAX: Duration = Duration::from_millis(100);
/// Default Parquet file size a Delta sink aims for.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 << 20;
/// Default longest time from the first buffered row to its commit.
pub const DEFAULT_MAX_LATENCY: Duration = Duration::from_secs(2);
/// Default buffered bytes above which the source pauses.
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = 256 << 20;
/// Default event-time column of a window transform.
pub const DEFAULT_WINDOW_TIME_COLUMN: &str = "event_time";
/// Default lateness a window transform still accepts after a window has closed.
pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(5);
/// Default period between early (partial) results of an open window.
pub const DEFAULT_EMIT_EVERY: Duration = Duration::from_secs(1);
/// Default cap on the Prometheus series one window transform exports per metric.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// A whole `pipelines.toml`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, as given to [`super::from_str`] (used in later messages).
    pub file: String,
    /// `[pipeline]`.
    pub pipeline: PipelineSection,
    /// The built-in preset with the `[schema.tables.*]` overrides applied.
    pub schema: SchemaSpec,
    /// `[sources.<id>]`.
    pub sources: BTreeMap<String, SourceConfig>,
    /// `[transforms.<id>]`.
    pub transforms: BTreeMap<String, TransformConfig>,
    /// `[sinks.<id>]`.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// `[telemetry]`, with the `OTEL_*` environment fallbacks applied.
    pub telemetry: TelemetryConfig,
    /// `[exports.<id>]`.
    pub exports: BTreeMap<String, ExportConfig>,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the pipeline's `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where to serve them; `None` (absent, or `"off"`): not served.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[exports.<id>]`: a query over the lake written to a file every period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    pub id: String,
    pub sql: String,
    pub every: Duration,
    /// A folder or `s3://bucket/prefix`, without a trailing `/`.
    pub to: String,
    pub format: ExportFileFormat,
    /// `file:line` of the section, for errors found when the export runs.
    pub defined_at: String,
}

/// File format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFileFormat {
    Csv,
    Json,
    Parquet,
}

/// `[pipeline]`: settings of the pipeline as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSection {
    /// Name of the pipeline, `[A-Za-z0-9_.-]+`; part of the exactly-once `txn` app id
    /// (`<name>/<topic>/<partition>`), so renaming a pipeline restarts its offsets.
    pub name: String,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            name: DEFAULT_PIPELINE_NAME.to_owned(),
        }
    }
}

/// A source, by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `type = "kafka"`.
    Kafka(KafkaSourceConfig),
    /// `type = "otlp"`.
    Otlp(OtlpSourceConfig),
}

/// `type = "otlp"`: an OpenTelemetry trace receiver. A request is answered only once its spans
/// are committed to the lake, so a client that got "OK" can forget them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSourceConfig {
    /// OTLP/gRPC listen address; `None` when `"off"`.
    pub grpc: Option<std::net::SocketAddr>,
    /// OTLP/HTTP (`POST /v1/traces`, protobuf) listen address; `None` when `"off"`.
    pub http: Option<std::net::SocketAddr>,
    /// Largest request body; bigger ones are refused (HTTP 413, gRPC RESOURCE_EXHAUSTED).
    pub max_request_bytes: u64,
    /// Requests waiting for their commit at most; more are answered "retry later"
    /// (HTTP 503, gRPC UNAVAILABLE), which OTLP exporters back off from.
    pub max_pending_requests: usize,
}

/// Service name of paystream's own spans unless configured.
pub const DEFAULT_SERVICE_NAME: &str = "paystream";

/// How spans are sent to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP/gRPC, usually port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies, usually port 4318.
    HttpProtobuf,
}

/// `[telemetry]`: paystream's own spans.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Collector base URL (`http://host:4317`); `None`: no spans are exported.
    pub endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Sent with every export (gRPC metadata or HTTP headers); values are secret.
    pub headers: Vec<(String, SecretString)>,
    /// Share of traces kept, 0..=1; a sampled producer trace is always followed.
    pub sample_ratio: f64,
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: OtlpProtocol::Grpc,
            headers: Vec::new(),
            sample_ratio: 1.0,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
        }
    }
}

/// `type = "kafka"`: a consumer group over some topics.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topics to consume; non-empty, valid Kafka topic names, no duplicates.
    pub topics: Vec<String>,
    /// Consumer group (offsets committed there are for lag monitoring only; the lake is the
    /// source of truth for where to resume).
    pub group_id: String,
    /// Where a partition starts when the lake has no offset for it.
    pub start_from: StartFrom,
    /// Most events per batch; > 0.
    pub batch_max_events: usize,
    /// Longest wait to fill a batch.
    pub batch_max_wait: Duration,
    /// Largest message accepted; bigger ones go to the DLQ.
    pub max_message_bytes: u64,
    /// librdkafka `fetch.wait.max.ms` (at most 5 minutes).
    pub fetch_wait_max: Duration,
    /// Start fetching this many offsets before the lake's offset when a partition is assigned
    /// (0, the default, for Kafka). Rows the lake already holds are dropped by offset, so this
    /// only costs a short re-read; it exists for brokers such as tansu 0.6 that return nothing
    /// for a fetch starting inside a record batch.
    pub resume_rewind: usize,
    /// Any other librdkafka property, values as strings.
    pub librdkafka: BTreeMap<String, SecretString>,
}

impl KafkaSourceConfig {
    /// A source over `topics` at `brokers` with every other setting at its default.
    pub fn new(brokers: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topics,
            group_id: DEFAULT_GROUP_ID.to_owned(),
            start_from: StartFrom::default(),
            batch_max_events: DEFAULT_BATCH_MAX_EVENTS,
            batch_max_wait: DEFAULT_BATCH_MAX_WAIT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            fetch_wait_max: DEFAULT_FETCH_WAIT_MAX,
            resume_rewind: 0,
            librdkafka: BTreeMap::new(),
        }
    }

    /// The librdkafka properties for logs: values of secret-looking keys (see
    /// [`super::is_secret_property`]) replaced by `***`. Sorted by key.
    pub fn redacted_properties(&self) -> Vec<(String, String)> {
        self.librdkafka
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) {
                    REDACTED.to_owned()
                } else {
                    v.expose().to_owned()
                };
                (k.clone(), shown)
            })
            .collect()
    }
}

/// Where a partition starts when the lake holds no offset for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest retained message (`"earliest"`, the default): nothing is skipped.
    #[default]
    Earliest,
    /// Only messages produced from now on (`"latest"`).
    Latest,
}

impl StartFrom {
    /// The config spelling, which is also librdkafka's `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// A transform, by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformConfig {
    /// `type = "sql"`.
    Sql(SqlTransformConfig),
    /// `type = "window"`.
    Window(WindowTransformConfig),
}

impl TransformConfig {
    /// Ids of the components it reads from.
    pub fn inputs(&self) -> &[String] {
        match self {
            TransformConfig::Sql(c) => &c.inputs,
            TransformConfig::Window(c) => &c.inputs,
        }
    }
}

/// `type = "sql"`: DataFusion SQL run on each batch of its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTransformConfig {
    /// Ids of sources or transforms; non-empty.
    pub inputs: Vec<String>,
    /// The query; non-empty. Checked by the SQL engine when the pipeline is built.
    pub sql: String,
}

/// `type = "window"`: a SQL aggregation over event-time windows of one input, whose results
/// go to a Delta table of their own and, unless turned off, to `/metrics`.
///
/// ```toml
/// [transforms.payments_per_minute]
/// type = "window"
/// inputs = ["kafka"]
/// sql = "SELECT currency, count(*) AS payments FROM payments GROUP BY currency"
/// window = "tumbling"
/// size = "1m"
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowTransformConfig {
    /// `inputs`: the id of the one source or transform it reads (exactly one).
    pub inputs: Vec<String>,
    /// `sql`: the aggregation run over the rows of each window; non-empty. Checked by the SQL
    /// engine when the pipeline is built.
    pub sql: String,
    /// `window` (`"tumbling"`, `"hopping"` or its alias `"sliding"`, `"session"`) with its
    /// `size`, `slide` or `gap`.
    pub window: WindowKind,
    /// `time_column`: the event-time column windows are cut on; default `"event_time"`
    /// (also for an empty string, as for every optional key); never blank.
    pub time_column: String,
    /// `allowed_lateness`: how long after a window's end its rows are still accepted; default
    /// 5s, `"0s"` allowed.
    pub allowed_lateness: Duration,
    /// `emit_every`: how often an open window's partial result is emitted; default 1s, at
    /// least 10ms. `None` (`"off"`): only final results, once a window closes.
    pub emit_every: Option<Duration>,
    /// `max_series`: a cap on the Prometheus series exported per metric; default 10000, at
    /// least 1.
    pub max_series: usize,
    /// `metrics`: export the results on `/metrics`; default `true`.
    pub metrics: bool,
    /// `table`: the Delta table the results go to; default the transform id. Matches
    /// `[a-z_][a-z0-9_]*` and is not a built-in table (`payments`, `orders`, `refunds`,
    /// `dlq`, `late_events`, `spans`).
    pub table: String,
}

/// The kind of window of a window transform, with its lengths (each greater than zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `window = "tumbling"`: back-to-back windows of `size`; each row is in exactly one.
    Tumbling {
        /// `size`: the length of each window.
        size: Duration,
    },
    /// `window = "hopping"` (or `"sliding"`): windows of `size` starting every `slide`, so each
    /// row is in `size / slide` windows. `slide` is at most `size` and divides it exactly.
    Hopping {
        /// `size`: the length of each window.
        size: Duration,
        /// `slide`: the time between the starts of two windows.
        slide: Duration,
    },
    /// `window = "session"`: a window that grows while rows keep coming and closes once `gap`
    /// passes without one.
    Session {
        /// `gap`: the idle time that ends a session.
        gap: Duration,
    },
}

/// A sink, by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// `type = "delta"`.
    Delta(DeltaSinkConfig),
}

impl SinkConfig {
    /// Ids of the components it reads from.
    pub fn inputs(&self) -> &[String] {
        match self {
            SinkConfig::Delta(c) => &c.inputs,
        }
    }
}

/// `type = "delta"`: the lake, one Delta table per event table plus `dlq`, under `uri`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaSinkConfig {
    /// Ids of sources or transforms; non-empty.
    pub inputs: Vec<String>,
    /// A local path (relative to the process cwd), `file:///abs/path` or `s3://bucket[/prefix]`.
    pub uri: String,
    /// Parquet file size to aim for; >= 1MiB.
    pub target_file_size: u64,
    /// Longest time from the first buffered row to its commit; >= 10ms.
    pub max_latency: Duration,
    /// Buffered bytes above which the source pauses (backpressure).
    pub max_buffer_bytes: u64,
    /// `[sinks.<id>.s3]`.
    pub s3: S3Options,
}

impl DeltaSinkConfig {
    /// A sink of `inputs` into `uri` with every other setting at its default.
    pub fn new(inputs: Vec<String>, uri: impl Into<String>) -> Self {
        Self {
            inputs,
            uri: uri.into(),
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            max_latency: DEFAULT_MAX_LATENCY,
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
            s3: S3Options::default(),
        }
    }
}

/// `[sinks.<id>.s3]`: all optional; whatever is not set falls back to the `AWS_*`
/// environment when the sink is built. An empty string counts as not set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct S3Options {
    /// An `http://` or `https://` URL (MinIO, moto, ...).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<SecretString>,
    pub secret_access_key: Option<SecretString>,
    pub session_token: Option<SecretString>,
    /// Allow a plain `http://` endpoint; required when `endpoint` is `http://`.
    pub allow_http: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn source_with_secrets() -> KafkaSourceConfig {
        let mut k = KafkaSourceConfig::new("localhost:9092", vec!["payments".into()]);
        for (key, value) in [
            ("sasl.password", "hunter2"),
            ("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required password=\"jaas-pw\";"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
            ("sasl.oauthbearer.config", "principal=svc secret=oauth-pw"),
            ("sasl.username", "svc-paystream"),
            ("security.protocol", "SASL_SSL"),
        ] {
            k.librdkafka.insert(key.into(), SecretString::from(value));
        }
        k
    }

    #[test]
    fn debug_of_a_source_hides_every_property_value() {
        let debug = format!("{:?}", source_with_secrets());
        for secret in ["hunter2", "jaas-pw", "PRIVATE KEY", "oauth-pw"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("\"sasl.password\": ***"), "{debug}");
    }

    #[test]
    fn redacted_properties_show_only_non_secret_values() {
        let shown = source_with_secrets().redacted_properties();
        let expected = [
            ("sasl.jaas.config", "***"),
            ("sasl.oauthbearer.config", "***"),
            ("sasl.password", "***"),
            ("sasl.username", "svc-paystream"),
            ("security.protocol", "SASL_SSL"),
            ("ssl.key.pem", "***"),
        ];
        let shown: Vec<(&str, &str)> = shown
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(shown, expected);
    }

    #[test]
    fn constructors_use_the_documented_defaults() {
        let k = KafkaSourceConfig::new("b:1", vec!["t".into()]);
        assert_eq!(k.group_id, "paystream");
        assert_eq!(k.start_from, StartFrom::Earliest);
        assert_eq!(k.batch_max_events, 100_000);
        assert_eq!(k.batch_max_wait, Duration::from_millis(250));
        assert_eq!(k.max_message_bytes, 1 << 20);
        assert_eq!(k.fetch_wait_max, Duration::from_millis(100));
        let d = DeltaSinkConfig::new(vec!["k".into()], "./lake");
        assert_eq!(d.target_file_size, 128 << 20);
        assert_eq!(d.max_latency, Duration::from_secs(2));
        assert_eq!(d.max_buffer_bytes, 256 << 20);
        assert_eq!(d.s3, S3Options::default());
        assert_eq!(StartFrom::Latest.as_str(), "latest");
    }
}
