//! OTLP span decoding throughput: an `ExportTraceServiceRequest` as the OpenTelemetry SDKs send
//! it (512 spans, a checkout service's resource, 6 attributes and one event per span), from
//! protobuf bytes to the `spans` record batch, which is the receiver's whole CPU cost before the
//! Parquet writer. Run: `cargo bench -p paystream-ingest --bench otlp`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use paystream_ingest::otlp::decode_request;
use prost::Message;

const SPANS: usize = 512;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn request() -> Vec<u8> {
    let spans = (0..SPANS)
        .map(|i| {
            let mut trace = [0u8; 16];
            trace[..8].copy_from_slice(&(i as u64 / 4 + 1).to_be_bytes());
            let start = 1_767_225_600_000_000_000 + i as u64 * 1_000_000;
            Span {
                trace_id: trace.to_vec(),
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                parent_span_id: if i % 4 == 0 {
                    vec![]
                } else {
                    (i as u64).to_be_bytes().to_vec()
                },
                name: if i % 4 == 0 {
                    "POST /checkout".into()
                } else {
                    "authorize".into()
                },
                kind: if i % 4 == 0 { 2 } else { 3 },
                start_time_unix_nano: start,
                end_time_unix_nano: start + 12_345_678,
                attributes: vec![
                    kv(
                        "http.request.method",
                        any_value::Value::StringValue("POST".into()),
                    ),
                    kv("http.response.status_code", any_value::Value::IntValue(200)),
                    kv(
                        "payment.id",
                        any_value::Value::StringValue(format!("p{i:07}")),
                    ),
                    kv(
                        "payment.amount_minor",
                        any_value::Value::IntValue(1999 + i as i64),
                    ),
                    kv("risk.score", any_value::Value::DoubleValue(0.125)),
                    kv("retry", any_value::Value::BoolValue(false)),
                ],
                events: vec![span::Event {
                    time_unix_nano: start + 1_000,
                    name: "risk.checked".into(),
                    attributes: vec![kv("score", any_value::Value::DoubleValue(0.25))],
                    ..Default::default()
                }],
                status: Some(Status {
                    code: 1,
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv(
                        "service.name",
                        any_value::Value::StringValue("checkout".into()),
                    ),
                    kv(
                        "service.version",
                        any_value::Value::StringValue("1.42.0".into()),
                    ),
                    kv(
                        "deployment.environment",
                        any_value::Value::StringValue("prod".into()),
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.checkout".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let body = request();
    let mut g = c.benchmark_group("otlp");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("protobuf_to_spans_batch", |b| {
        b.iter(|| {
            let req = ExportTraceServiceRequest::decode(black_box(body.as_slice())).unwrap();
            black_box(decode_request(&req, 0).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
