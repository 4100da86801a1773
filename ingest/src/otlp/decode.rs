//! OTLP trace requests into rows of the `spans` table.
//!
//! The protobuf structs are walked once, writing straight into Arrow builders; attributes,
//! events and links become JSON text written by hand (no intermediate `serde_json::Value`).
//! A span whose trace or span id has the wrong length cannot be stored or joined: it is
//! rejected alone and counted, as OTLP's partial success allows, and the rest is kept.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use paystream_core::schema::spans_schema;

use crate::decode::json_string;
use crate::Result;

/// Rows decoded from one request, and what was refused.
#[derive(Debug)]
pub struct DecodedSpans {
    pub batch: RecordBatch,
    /// Spans refused (bad ids); they are not in `batch`.
    pub rejected: u64,
    /// Why the first refused span was refused, for the client.
    pub error: Option<String>,
}

#[derive(Default)]
struct Columns {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    service_name: StringBuilder,
    scope_name: StringBuilder,
    start_time: TimestampMicrosecondBuilder,
    end_time: TimestampMicrosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attributes: StringBuilder,
    resource_attributes: StringBuilder,
    events: StringBuilder,
    links: StringBuilder,
    received_at: TimestampMicrosecondBuilder,
    event_date: Date32Builder,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Decode every span of `req`; `now_us` is the receive time (UTC microseconds).
pub fn decode_request(req: &ExportTraceServiceRequest, now_us: i64) -> Result<DecodedSpans> {
    let mut c = Columns::default();
    let mut rejected = 0u64;
    let mut error = None;
    let mut json = String::new();
    let mut hex = String::with_capacity(32);
    for rs in &req.resource_spans {
        let resource_attrs: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
        let service = resource_attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                },
            );
        json.clear();
        write_attributes(&mut json, resource_attrs);
        let resource_json = json.clone();
        for ss in &rs.scope_spans {
            let scope = ss
                .scope
                .as_ref()
                .map(|s| s.name.as_str())
                .filter(|n| !n.is_empty());
            for span in &ss.spans {
                if let Err(why) = check_ids(span) {
                    rejected += 1;
                    error.get_or_insert(why);
                    continue;
                }
                append_span(
                    &mut c,
                    span,
                    service,
                    scope,
                    &resource_json,
                    now_us,
                    &mut json,
                    &mut hex,
                );
            }
        }
    }
    let batch = c.finish()?;
    Ok(DecodedSpans {
        batch,
        rejected,
        error,
    })
}

fn check_ids(span: &Span) -> std::result::Result<(), String> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(format!(
            "span {:?}: trace_id must be 16 bytes and not all zero, found {} bytes",
            span.name,
            span.trace_id.len()
        ));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(format!(
            "span {:?}: span_id must be 8 bytes and not all zero, found {} bytes",
            span.name,
            span.span_id.len()
        ));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(format!(
            "span {:?}: parent_span_id must be empty or 8 bytes, found {} bytes",
            span.name,
            span.parent_span_id.len()
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn append_span(
    c: &mut Columns,
    span: &Span,
    service: Option<&str>,
    scope: Option<&str>,
    resource_json: &str,
    now_us: i64,
    json: &mut String,
    hex: &mut String,
) {
    c.trace_id.append_value(to_hex(hex, &span.trace_id));
    c.span_id.append_value(to_hex(hex, &span.span_id));
    if span.parent_span_id.is_empty() {
        c.parent_span_id.append_null();
    } else {
        c.parent_span_id
            .append_value(to_hex(hex, &span.parent_span_id));
    }
    c.trace_state
        .append_option(Some(span.trace_state.as_str()).filter(|s| !s.is_empty()));
    c.name.append_value(&span.name);
    c.kind.append_value(kind_name(span.kind));
    c.service_name.append_option(service);
    c.scope_name.append_option(scope);
    let start = nanos_to_micros(span.start_time_unix_nano);
    c.start_time.append_value(start);
    c.end_time
        .append_value(nanos_to_micros(span.end_time_unix_nano));
    let duration = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano);
    c.duration_ns
        .append_value(i64::try_from(duration).unwrap_or(i64::MAX));
    let (code, message) = match &span.status {
        Some(s) => (
            status_name(s.code),
            Some(s.message.as_str()).filter(|m| !m.is_empty()),
        ),
        None => ("unset", None),
    };
    c.status_code.append_value(code);
    c.status_message.append_option(message);
    json.clear();
    write_attributes(json, &span.attributes);
    c.attributes.append_value(json.as_str());
    c.resource_attributes.append_value(resource_json);
    json.clear();
    json.push('[');
    for (i, e) in span.events.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("{\"time_unix_nano\":");
        let _ = write!(json, "{}", e.time_unix_nano);
        json.push_str(",\"name\":");
        json_string(&e.name, json);
        json.push_str(",\"attributes\":");
        write_attributes(json, &e.attributes);
        json.push('}');
    }
    json.push(']');
    c.events.append_value(json.as_str());
    json.clear();
    json.push('[');
    for (i, l) in span.links.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("{\"trace_id\":");
        json_string(to_hex(hex, &l.trace_id), json);
        json.push_str(",\"span_id\":");
        json_string(to_hex(hex, &l.span_id), json);
        json.push_str(",\"attributes\":");
        write_attributes(json, &l.attributes);
        json.push('}');
    }
    json.push(']');
    c.links.append_value(json.as_str());
    c.received_at.append_value(now_us);
    // Spans carry no event_date of their own; the day they started is what queries prune on.
    c.event_date
        .append_value(i32::try_from(start.div_euclid(MICROS_PER_DAY)).unwrap_or(0));
}

impl Columns {
    fn finish(mut self) -> Result<RecordBatch> {
        let utc = |b: &mut TimestampMicrosecondBuilder| -> ArrayRef {
            Arc::new(b.finish().with_timezone("UTC"))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.scope_name.finish()),
            utc(&mut self.start_time),
            utc(&mut self.end_time),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.links.finish()),
            utc(&mut self.received_at),
            Arc::new(self.event_date.finish()),
        ];
        Ok(RecordBatch::try_new(spans_schema(), columns)?)
    }
}

fn nanos_to_micros(ns: u64) -> i64 {
    i64::try_from(ns / 1000).unwrap_or(i64::MAX)
}

fn to_hex<'a>(buf: &'a mut String, bytes: &[u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    buf.clear();
    for b in bytes {
        buf.push(DIGITS[usize::from(b >> 4)] as char);
        buf.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    buf.as_str()
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

/// `{"key": value, ...}`; a repeated key keeps its last value, as OTLP readers do.
fn write_attributes(out: &mut String, attrs: &[KeyValue]) {
    out.push('{');
    let mut first = true;
    for (i, kv) in attrs.iter().enumerate() {
        if attrs[i + 1..].iter().any(|later| later.key == kv.key) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        json_string(&kv.key, out);
        out.push(':');
        write_value(out, kv.value.as_ref());
    }
    out.push('}');
}

fn write_value(out: &mut String, v: Option<&AnyValue>) {
    match v.and_then(|v| v.value.as_ref()) {
        None | Some(any_value::Value::StringValueStrindex(_)) => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => json_string(s, out),
        Some(any_value::Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(n)) => {
            let _ = write!(out, "{n}");
        }
        Some(any_value::Value::DoubleValue(d)) if d.is_finite() => {
            let _ = write!(out, "{d:?}");
        }
        // JSON has no NaN or infinity.
        Some(any_value::Value::DoubleValue(d)) => json_string(&d.to_string(), out),
        Some(any_value::Value::ArrayValue(a)) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, Some(item));
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(l)) => write_attributes(out, &l.values),
        Some(any_value::Value::BytesValue(b)) => {
            let mut hex = String::new();
            json_string(to_hex(&mut hex, b), out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Status};
    use proptest::prelude::*;

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("checkout".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "shop".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: "authorize".into(),
            kind: 3,
            start_time_unix_nano: 1_767_225_600_000_000_123,
            end_time_unix_nano: 1_767_225_600_250_000_456,
            ..Default::default()
        }
    }

    fn text(b: &RecordBatch, col: &str, row: usize) -> Option<String> {
        let a = b.column_by_name(col).unwrap().as_string::<i32>();
        (!a.is_null(row)).then(|| a.value(row).to_string())
    }

    #[test]
    fn every_field_lands_in_its_column() {
        let mut s = span(0xab, 0x01);
        s.parent_span_id = vec![0x02; 8];
        s.status = Some(Status {
            code: 2,
            message: "card \"declined\"".into(),
        });
        s.attributes = vec![
            kv("http.status_code", any_value::Value::IntValue(402)),
            kv("retry", any_value::Value::BoolValue(false)),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
            kv(
                "tags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::StringValue("a\nb".into())),
                    }],
                }),
            ),
            kv(
                "nested",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", any_value::Value::BytesValue(vec![0xff, 0x00]))],
                }),
            ),
        ];
        s.events = vec![span::Event {
            time_unix_nano: 7,
            name: "retry".into(),
            ..Default::default()
        }];
        s.links = vec![span::Link {
            trace_id: vec![0x11; 16],
            span_id: vec![0x22; 8],
            ..Default::default()
        }];
        let d = decode_request(&request(vec![s]), 42).unwrap();
        let b = &d.batch;
        assert_eq!(d.rejected, 0);
        assert_eq!(b.num_rows(), 1);
        assert_eq!(text(b, "trace_id", 0).unwrap(), "ab".repeat(16));
        assert_eq!(text(b, "span_id", 0).unwrap(), "01".repeat(8));
        assert_eq!(text(b, "parent_span_id", 0).unwrap(), "02".repeat(8));
        assert_eq!(text(b, "kind", 0).unwrap(), "client");
        assert_eq!(text(b, "service_name", 0).unwrap(), "checkout");
        assert_eq!(text(b, "scope_name", 0).unwrap(), "shop");
        assert_eq!(text(b, "status_code", 0).unwrap(), "error");
        assert_eq!(text(b, "trace_state", 0), None);
        let attrs: serde_json::Value =
            serde_json::from_str(&text(b, "attributes", 0).unwrap()).unwrap();
        assert_eq!(
            attrs,
            serde_json::json!({"http.status_code": 402, "retry": false, "ratio": 0.5,
                "tags": ["a\nb"], "nested": {"k": "ff00"}})
        );
        let links: serde_json::Value = serde_json::from_str(&text(b, "links", 0).unwrap()).unwrap();
        assert_eq!(links[0]["trace_id"], "11".repeat(16));
        let events: serde_json::Value =
            serde_json::from_str(&text(b, "events", 0).unwrap()).unwrap();
        assert_eq!(events[0]["name"], "retry");
        assert_eq!(text(b, "status_message", 0).unwrap(), "card \"declined\"");
        let start = b
            .column_by_name("start_time")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(start.value(0), 1_767_225_600_000_000);
        let dur = b
            .column_by_name("duration_ns")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(dur.value(0), 250_000_333);
        let date = b
            .column_by_name("event_date")
            .unwrap()
            .as_primitive::<arrow::datatypes::Date32Type>();
        assert_eq!(date.value(0), 20_454, "2026-01-01");
    }

    #[test]
    fn bad_ids_are_rejected_alone() {
        let mut short = span(1, 1);
        short.trace_id.truncate(4);
        let mut zero = span(0, 2);
        zero.trace_id = vec![0; 16];
        let d = decode_request(&request(vec![span(1, 3), short, zero, span(1, 4)]), 0).unwrap();
        assert_eq!(d.batch.num_rows(), 2);
        assert_eq!(d.rejected, 2);
        assert!(d.error.unwrap().contains("trace_id must be 16 bytes"));
    }

    proptest! {
        // Any protobuf-decodable request decodes without panicking into valid rows.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            use prost::Message;
            if let Ok(req) = ExportTraceServiceRequest::decode(bytes.as_slice()) {
                let d = decode_request(&req, 0).unwrap();
                for col in ["attributes", "events", "links", "resource_attributes"] {
                    let a = d.batch.column_by_name(col).unwrap().as_string::<i32>();
                    for v in a.iter().flatten() {
                        prop_assert!(serde_json::from_str::<serde_json::Value>(v).is_ok(), "{v}");
                    }
                }
            }
        }

        #[test]
        fn strings_round_trip_through_json(s in ".*") {
            let mut out = String::new();
            json_string(&s, &mut out);
            prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
    }
}
