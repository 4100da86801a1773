//! Window aggregation throughput, the engine alone (no Kafka, no lake): a minute of payments
//! over 10,000 merchants x 5 currencies, folded into one-minute tumbling windows, and into
//! sessions with a 10 s gap, by the business metrics' kind of SQL (counts, a FILTER, a sum,
//! grouped by currency and merchant).
//! One thread, so elements per second are events per second per core.
//!
//!     cargo bench --profile demo --bench window

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use paystream_transforms::window::{WindowKind, WindowOptions, WindowTransform};

const EVENTS: usize = 1_000_000;
const BATCH: usize = 50_000;
const MERCHANTS: usize = 10_000;
const CURRENCIES: [&str; 5] = ["EUR", "USD", "GBP", "JPY", "BRL"];
const START_US: i64 = 1_767_225_600_000_000;

const SQL: &str = "SELECT currency, merchant_id, count(*) AS payments, \
     count(*) FILTER (WHERE event_type = 'PaymentRejected') AS rejected, \
     sum(amount_minor) AS volume_minor \
     FROM payments GROUP BY currency, merchant_id";

fn schema() -> SchemaRef {
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
    ]))
}

/// `EVENTS` events over one minute, in batches of `BATCH`: a cheap deterministic mix.
fn batches() -> Vec<RecordBatch> {
    let merchants: Vec<String> = (0..MERCHANTS).map(|m| format!("m{m:05}")).collect();
    (0..EVENTS / BATCH)
        .map(|b| {
            let range = b * BATCH..(b + 1) * BATCH;
            let mix = |i: usize| i.wrapping_mul(2_654_435_761) >> 7;
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(
                        TimestampMicrosecondArray::from_iter_values(
                            range.clone().map(|i| START_US + (i as i64) * 60),
                        )
                        .with_timezone("UTC"),
                    ),
                    Arc::new(StringArray::from_iter_values(range.clone().map(|i| {
                        if mix(i) % 10 == 0 {
                            "PaymentRejected"
                        } else {
                            "PaymentAuthorized"
                        }
                    }))),
                    Arc::new(StringArray::from_iter_values(
                        range
                            .clone()
                            .map(|i| merchants[mix(i) % MERCHANTS].as_str()),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        range
                            .clone()
                            .map(|i| CURRENCIES[mix(i + 1) % CURRENCIES.len()]),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        range.map(|i| (mix(i) % 100_000) as i64),
                    )),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// Fold every batch of `input` into a fresh `kind` window transform and close everything.
fn fold_and_close<'a>(
    rt: &'a tokio::runtime::Runtime,
    input: &'a [RecordBatch],
    kind: WindowKind,
) -> impl FnMut(&mut criterion::Bencher<'_>) + 'a {
    let tables = [("payments".to_string(), schema())];
    let options = WindowOptions {
        kind,
        time_column: "event_time".into(),
        allowed_lateness: Duration::from_secs(5),
    };
    move |b| {
        b.iter_batched(
            || {
                rt.block_on(WindowTransform::try_new(&tables, SQL, options.clone()))
                    .unwrap()
            },
            |mut w| {
                rt.block_on(async {
                    for batch in input {
                        w.push(batch).await.unwrap();
                    }
                    // The final results: 50,000 groups (more for sessions: one row per session).
                    let closed = w.advance(i64::MAX).await.unwrap().unwrap();
                    assert!(!closed.batches.is_empty());
                })
            },
            BatchSize::PerIteration,
        );
    }
}

fn window_aggregation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let input = batches();
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.bench_function(
        "tumbling_1m_10k_merchants_x_5_currencies",
        fold_and_close(
            &rt,
            &input,
            WindowKind::Tumbling {
                size: Duration::from_secs(60),
            },
        ),
    );
    // Each group sees an event every 3 s on average: a 10 s gap gives one or two sessions per
    // group, with the per-row session lookup on top of the aggregation.
    group.bench_function(
        "session_10s_gap_10k_merchants_x_5_currencies",
        fold_and_close(
            &rt,
            &input,
            WindowKind::Session {
                gap: Duration::from_secs(10),
            },
        ),
    );
    group.finish();
}

criterion_group!(benches, window_aggregation);
criterion_main!(benches);
