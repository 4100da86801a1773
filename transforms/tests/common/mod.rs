//! Shared by the window tests: a small payments table, events written as text, and a driver
//! that feeds batches, advances the watermark and collects final results as sorted CSV lines.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use paystream_transforms::window::{WindowKind, WindowOptions, WindowTransform};

/// One test event: (seconds since 2026-01-01T00:00:00Z, type, merchant, currency, amount,
/// rejection reason, partition).
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub secs: i64,
    pub event_type: String,
    pub merchant: String,
    pub currency: String,
    pub amount: i64,
    pub reason: Option<String>,
    pub partition: i32,
}

pub const EPOCH_US: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("merchant_id", DataType::Utf8, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("amount_minor", DataType::Int64, false),
        Field::new("rejection_reason", DataType::Utf8, true),
        Field::new("kafka_topic", DataType::Utf8, true),
        Field::new("kafka_partition", DataType::Int32, true),
    ]))
}

pub fn batch(events: &[Ev]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    events.iter().map(|e| EPOCH_US + e.secs * 1_000_000),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| &e.event_type),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| &e.merchant),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| &e.currency),
            )),
            Arc::new(Int64Array::from_iter_values(
                events.iter().map(|e| e.amount),
            )),
            Arc::new(StringArray::from_iter(
                events.iter().map(|e| e.reason.as_deref()),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|_| "payments"),
            )),
            Arc::new(Int32Array::from_iter_values(
                events.iter().map(|e| e.partition),
            )),
        ],
    )
    .unwrap()
}

pub async fn transform(sql: &str, kind: WindowKind, lateness: Duration) -> WindowTransform {
    WindowTransform::try_new(
        &[("payments".to_string(), schema())],
        sql,
        WindowOptions {
            kind,
            time_column: "event_time".into(),
            allowed_lateness: lateness,
        },
    )
    .await
    .unwrap()
}

/// Rows as CSV lines (header first), rows sorted.
pub fn csv_lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buf);
        for b in batches {
            w.write(b).unwrap();
        }
    }
    let text = String::from_utf8(buf).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        return lines;
    }
    // The CSV writer repeats nothing, but writes the header only once.
    let header = lines.remove(0);
    lines.sort();
    lines.insert(0, header);
    lines
}

/// Feed `batches` in order, moving the watermark after each to the largest event time seen
/// (as a single-partition pipeline would), then close everything. Returns the final results
/// (sorted CSV) and the number of late rows.
pub async fn run(w: &mut WindowTransform, batches: &[Vec<Ev>]) -> (Vec<String>, usize) {
    let mut finals = Vec::new();
    let mut late = 0;
    let mut watermark = i64::MIN;
    for events in batches {
        if events.is_empty() {
            continue;
        }
        if let Some(l) = w.push(&batch(events)).await.unwrap() {
            late += l.rows.num_rows();
        }
        let max = events.iter().map(|e| e.secs).max().unwrap();
        watermark = watermark.max(EPOCH_US + max * 1_000_000);
        if let Some(r) = w.advance(watermark).await.unwrap() {
            assert!(r.final_results);
            finals.extend(r.batches);
        }
    }
    if let Some(r) = w.advance(i64::MAX).await.unwrap() {
        finals.extend(r.batches);
    }
    assert_eq!(w.groups(), 0, "state left after closing every window");
    let mut lines = csv_lines(&finals);
    if lines.is_empty() {
        lines.push("(no results)".into());
    }
    (lines, late)
}
