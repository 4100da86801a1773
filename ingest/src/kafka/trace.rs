//! The spans of a batch on its way through the pipeline, and their links to the traces that
//! produced its events.
//!
//! A batch holds events of many traces, so it cannot be a child of any one of them: its span
//! starts a trace of its own and carries a link to each producer span (from the events'
//! `traceparent`), up to [`MAX_LINKS`]. Every span here is disabled at the call site unless an
//! exporter is installed (see the binary's telemetry), so none of this work happens otherwise.

use std::collections::HashSet;

use arrow::array::{Array, AsArray};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::Range;
use crate::decode::Normalised;
use crate::TRACE_TARGET;

/// Most producer links on one batch span: the OpenTelemetry SDK's default link limit.
pub const MAX_LINKS: usize = 128;

/// A new batch span and its `consume` child, started at the batch's first message.
pub(super) fn start_batch() -> (Span, Span) {
    let batch = tracing::info_span!(
        target: TRACE_TARGET,
        "batch",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.batch.message_count = Empty,
        kafka.topics = Empty,
        kafka.partitions = Empty,
        kafka.offsets = Empty,
        rows = Empty,
        dlq_rows = Empty,
        bytes = Empty,
        producer_traces = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    );
    if batch.is_disabled() {
        return (batch, Span::none());
    }
    let consume = tracing::info_span!(target: TRACE_TARGET, parent: &batch, "consume");
    (batch, consume)
}

/// A `decode` child of `batch`: building the Arrow columns of what was consumed.
pub(super) fn decode_span(batch: &Span) -> Span {
    if batch.is_disabled() {
        return Span::none();
    }
    tracing::info_span!(target: TRACE_TARGET, parent: batch, "decode", rows = Empty, dlq_rows = Empty)
}

/// Record what the batch holds on its span and link it to its producers' spans.
pub(super) fn describe(
    batch: &Span,
    data: &Normalised,
    ranges: &[Range],
    messages: u64,
    bytes: u64,
) {
    if batch.is_disabled() {
        return;
    }
    let mut topics: Vec<&str> = ranges.iter().map(|r| r.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let offsets = ranges
        .iter()
        .map(|r| format!("{}/{}:{}..{}", r.topic, r.partition, r.first, r.next))
        .collect::<Vec<_>>()
        .join(",");
    let dlq_rows: u64 = data.bad.values().sum();
    batch.record("messaging.batch.message_count", messages);
    batch.record("kafka.topics", topics.join(",").as_str());
    batch.record("kafka.partitions", ranges.len() as u64);
    batch.record("kafka.offsets", offsets.as_str());
    batch.record("rows", data.good);
    batch.record("dlq_rows", dlq_rows);
    batch.record("bytes", bytes);
    let links = producer_contexts(data, MAX_LINKS);
    batch.record("producer_traces", links.len() as u64);
    for cx in links {
        batch.add_link(cx);
    }
}

/// Distinct producer span contexts of the batch's events (first `max` traces).
pub fn producer_contexts(data: &Normalised, max: usize) -> Vec<SpanContext> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (_, batch) in &data.tables {
        let (Some(traces), Some(spans)) = (
            batch
                .column_by_name("trace_id")
                .and_then(|c| c.as_string_opt::<i32>()),
            batch
                .column_by_name("span_id")
                .and_then(|c| c.as_string_opt::<i32>()),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            if out.len() >= max {
                return out;
            }
            if traces.is_null(i) || spans.is_null(i) {
                continue;
            }
            let (Ok(t), Ok(s)) = (
                TraceId::from_hex(traces.value(i)),
                SpanId::from_hex(spans.value(i)),
            ) else {
                continue;
            };
            if t == TraceId::INVALID || !seen.insert(t) {
                continue;
            }
            out.push(SpanContext::new(
                t,
                s,
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ));
        }
    }
    out
}
