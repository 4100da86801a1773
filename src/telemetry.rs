//! Logging and paystream's own traces.
//!
//! Logs go to stderr as text or JSON lines; JSON lines carry the `trace_id` and `span_id` of
//! the span they were written in, so a log line leads to its trace. Pipeline spans (one per
//! batch, with its stages) use the target [`TRACE_TARGET`]: they are exported over OTLP when
//! `[telemetry]` (or `OTEL_EXPORTER_OTLP_*`) names a collector, and are disabled at their
//! call sites otherwise, so tracing that is off costs a relaxed atomic load per batch.

use std::collections::HashMap;
use std::fmt;

use anyhow::{Context, Result};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use paystream_core::config::{OtlpProtocol, TelemetryConfig};
use paystream_ingest::TRACE_TARGET;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{filter, EnvFilter, Layer as _};

use crate::cli::LogFormat;

const DEFAULT_FILTER: &str = "info,deltalake=warn,deltalake_core=warn,deltalake_core::writer::stats=error,buoyant_kernel=warn,delta_kernel=warn,datafusion=warn,h2=warn,tower=warn,hyper=warn";

/// Keeps the exporter alive; [`Telemetry::shutdown`] flushes the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export what is buffered and stop the exporter. Blocking: call it outside async code.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: could not flush the last spans: {e}");
            }
        }
    }
}

/// Set up logging, and span export when `telemetry` names an endpoint. Must run inside the
/// tokio runtime (the gRPC exporter connects lazily from it).
pub fn init(format: LogFormat, telemetry: Option<&TelemetryConfig>) -> Result<Telemetry> {
    let fmt_filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
            // Pipeline spans are for the exporter; log lines do not need them.
            .add_directive(
                format!("{TRACE_TARGET}=off")
                    .parse()
                    .unwrap_or_else(|_| filter::LevelFilter::OFF.into()),
            )
    };
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(fmt_filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(JsonLines)
            .with_filter(fmt_filter())
            .boxed(),
    };
    let provider = match telemetry.filter(|t| t.endpoint.is_some()) {
        Some(t) => Some(provider(t)?),
        None => None,
    };
    // INFO, the level of the pipeline spans, and not more: the subscriber's maximum level is
    // the highest any layer asks for, and it also sets the `log` crate's maximum, so TRACE here
    // would make every `log::trace!` of librdkafka and the HTTP stack reach the filters.
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("paystream"))
            .with_filter(filter::Targets::new().with_target(TRACE_TARGET, tracing::Level::INFO))
    });
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .context("installing the log subscriber")?;
    if let (Some(t), Some(endpoint)) = (telemetry, telemetry.and_then(|t| t.endpoint.as_ref())) {
        tracing::info!(
            %endpoint,
            protocol = ?t.protocol,
            sample_ratio = t.sample_ratio,
            headers = t.headers.len(),
            "exporting pipeline spans over OTLP"
        );
    }
    Ok(Telemetry { provider })
}

fn provider(t: &TelemetryConfig) -> Result<SdkTracerProvider> {
    let base = t.endpoint.as_deref().unwrap_or_default();
    let exporter = match t.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (k, v) in &t.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                    .with_context(|| format!("telemetry header name {k:?}"))?;
                let value = v.expose().parse().map_err(|_| {
                    anyhow::anyhow!("telemetry header {k}: value is not valid ASCII")
                })?;
                metadata.insert(key, value);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(base)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf => {
            let headers: HashMap<String, String> = t
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect();
            // The configured endpoint is the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT.
            let url = if base.ends_with("/v1/traces") {
                base.to_owned()
            } else {
                format!("{base}/v1/traces")
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .with_headers(headers)
                .build()
        }
    }
    .context("building the OTLP span exporter")?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(t.sample_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(t.service_name.clone())
                .build(),
        )
        .build())
}

/// One JSON object per line: time, level, target, message and fields, the current span's
/// name, and its trace and span ids when it is exported.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut obj = serde_json::Map::new();
        obj.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        if let Some(m) = fields.remove("message") {
            obj.insert("message".into(), m);
        }
        if !fields.is_empty() {
            obj.insert("fields".into(), fields.into());
        }
        if let Some(span) = ctx.lookup_current() {
            obj.insert("span".into(), span.name().into());
        }
        // Entering an exported span activates its OpenTelemetry context on this thread.
        let cx = opentelemetry::Context::current();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            obj.insert("trace_id".into(), sc.trace_id().to_string().into());
            obj.insert("span_id".into(), sc.span_id().to_string().into());
        }
        let line = serde_json::Value::Object(obj).to_string();
        writeln!(writer, "{line}")
    }
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_the_trace_of_their_span() {
        let provider = SdkTracerProvider::builder().build();
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(buf.clone())
                    .event_format(JsonLines),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let expected = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!(target: TRACE_TARGET, "batch");
            let _in = span.enter();
            tracing::warn!(rows = 5_u64, "committed");
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "outside any span");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["message"], "committed");
        assert_eq!(lines[1]["fields"]["rows"], 5);
        assert_eq!(lines[1]["span"], "batch");
        assert_eq!(lines[1]["trace_id"], expected.0.as_str());
        assert_eq!(lines[1]["span_id"], expected.1.as_str());
        assert_eq!(expected.0.len(), 32);
    }
}
