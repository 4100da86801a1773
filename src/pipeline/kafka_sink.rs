//! The sink side of a Kafka source: buffers decoded batches in the lake, commits them with
//! their offsets at the sink's `max_latency` (or sooner when its buffer is full), and answers
//! the source's rebalance questions in stream order. Each batch's span gets a `write` and a
//! `commit` stage here and ends when its rows are committed.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender as StdSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
use paystream_ingest::kafka::SourceEvent;
use paystream_ingest::TRACE_TARGET;
use paystream_sinks::delta::{Lake, OffsetRange, PartitionKey};
use tokio::sync::mpsc::Receiver;
use tracing::field::Empty;
use tracing::{info, warn, Instrument as _, Span};

use super::windows::Windows;
use super::Totals;
use crate::metrics::{KindLabels, PartitionLabels, PipelineMetrics, TableLabels};

pub(super) struct SinkLoop {
    pub(super) lake: Lake,
    pub(super) max_latency: Duration,
    pub(super) max_buffer_bytes: usize,
    pub(super) committed: StdSender<BTreeMap<(String, i32), i64>>,
    pub(super) totals: Totals,
    pub(super) first_batch: Option<Instant>,
    /// Spans of the batches written since the last commit (disabled ones when not tracing).
    pub(super) pending_spans: Vec<Span>,
    pub(super) metrics: Arc<PipelineMetrics>,
    /// When each batch written since the last commit started, for the batch latency.
    pub(super) pending_starts: Vec<Instant>,
    /// Kafka timestamps (ms) of the rows written since the last commit, for freshness.
    pub(super) pending_kafka_ms: Vec<i64>,
    /// The window transforms, if the pipeline declares any.
    pub(super) windows: Option<Windows>,
}

fn keys(partitions: &[(String, i32)]) -> Vec<PartitionKey> {
    partitions
        .iter()
        .map(|(t, p)| PartitionKey::new(t.clone(), *p))
        .collect()
}

impl SinkLoop {
    pub(super) async fn run(mut self, mut rx: Receiver<SourceEvent>) -> Result<Totals> {
        loop {
            let commit_at = self.lake.pending_since().map(|t| t + self.max_latency);
            let emit_at = self.windows.as_ref().and_then(Windows::next_emit);
            let wake = match (commit_at, emit_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let event = match wake {
                Some(d) => tokio::select! {
                    ev = rx.recv() => ev,
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(d)) => {
                        self.on_timer().await?;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            match event {
                None => {
                    self.commit().await?;
                    return Ok(self.totals);
                }
                Some(SourceEvent::Batch(b)) => {
                    self.first_batch.get_or_insert_with(Instant::now);
                    self.totals.messages += b.messages;
                    let ranges: Vec<OffsetRange> = b
                        .ranges
                        .iter()
                        .map(|r| OffsetRange {
                            partition: PartitionKey::new(r.topic.clone(), r.partition),
                            first: r.first,
                            next: r.next,
                        })
                        .collect();
                    self.observe_batch(&b);
                    let write = stage(&b.span, "write");
                    let written = self
                        .lake
                        .write(b.data.tables, b.data.dlq, &ranges)
                        .instrument(write.clone())
                        .await;
                    if let Err(e) = &written {
                        failed(&write, e);
                        failed(&b.span, e);
                    }
                    let accepted = written?;
                    if let Some(w) = &mut self.windows {
                        w.push(&accepted, &ranges)
                            .await
                            .context("feeding the window transforms")?;
                    }
                    drop(write);
                    if !b.span.is_disabled() {
                        self.pending_spans.push(b.span);
                    }
                    let late = self
                        .lake
                        .pending_since()
                        .is_some_and(|t| t.elapsed() >= self.max_latency);
                    if late || self.lake.pending_bytes() >= self.max_buffer_bytes {
                        self.commit().await?;
                    }
                }
                Some(SourceEvent::Resume { partitions, reply }) => {
                    if let Some(w) = &mut self.windows {
                        if let Err(e) = w.resume(&keys(&partitions)).await {
                            let _ = reply.send(Err(e.to_string()));
                            return Err(e);
                        }
                    }
                    let res = self.lake.resume(&keys(&partitions)).await;
                    let answer = res
                        .map(|m| {
                            keys(&partitions)
                                .iter()
                                .map(|k| m.get(k).copied().flatten())
                                .collect()
                        })
                        .map_err(|e| e.to_string());
                    let _ = reply.send(answer);
                }
                Some(SourceEvent::Revoke { partitions, reply }) => {
                    // Everything buffered is committed before the partitions go, so whoever
                    // gets them next resumes exactly after it.
                    let res = self.commit().await;
                    let _ = reply.send(res.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    res?;
                    if let Some(w) = &mut self.windows {
                        w.revoke(&partitions);
                    }
                    info!(partitions = partitions.len(), "committed before revoke");
                }
                Some(SourceEvent::Stop { reply }) => {
                    let res = self.commit().await;
                    let _ = reply.send(res.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    res?;
                    return Ok(self.totals);
                }
            }
        }
    }

    /// A timer fired: commit what is due, publish early window results, and close windows the
    /// watermark passed even when no new rows are waiting.
    async fn on_timer(&mut self) -> Result<()> {
        let due = self
            .lake
            .pending_since()
            .is_some_and(|t| t.elapsed() >= self.max_latency);
        if let Some(w) = &mut self.windows {
            if w.next_emit().is_some_and(|t| t <= Instant::now()) {
                w.emit().await.context("publishing early window results")?;
            }
        }
        let close = self.windows.as_ref().is_some_and(Windows::would_close);
        if due || close {
            self.commit().await?;
        }
        Ok(())
    }

    /// Commit in the order that keeps windows exact across a crash: close windows, commit late
    /// events, commit the event tables, then the windows' final results.
    async fn commit(&mut self) -> Result<()> {
        if let Some(w) = &mut self.windows {
            w.advance().await.context("closing windows")?;
            let pending = self.lake.pending_offsets().clone();
            if let Err(e) = w.commit_late(&pending).await {
                w.discard();
                self.lake.discard();
                return Err(e).context("committing late events");
            }
        }
        self.commit_lake().await?;
        if let Some(w) = &mut self.windows {
            w.commit_results().await?;
        }
        Ok(())
    }

    async fn commit_lake(&mut self) -> Result<()> {
        let started = Instant::now();
        let spans = std::mem::take(&mut self.pending_spans);
        let stages: Vec<Span> = spans.iter().map(|b| stage(b, "commit")).collect();
        let result = self.lake.commit().await;
        if let Err(e) = &result {
            for s in stages.iter().chain(&spans) {
                failed(s, e);
            }
        }
        drop(stages);
        drop(spans);
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                // The files written are not referenced by any commit: dropping them loses
                // nothing, since the source will re-read from the lake's offsets on restart.
                self.lake.discard();
                return Err(e).context("committing to the lake");
            }
        };
        if stats.offsets.is_empty() {
            return Ok(());
        }
        self.observe_commit(&stats, started.elapsed());
        self.totals.commits += 1;
        self.totals.busy = self.first_batch.map(|t| t.elapsed());
        self.totals.files += stats.files;
        for (t, n) in &stats.rows {
            *self.totals.rows.entry(t.clone()).or_default() += n;
        }
        tracing::debug!(rows = ?stats.rows, files = stats.files, bytes = stats.bytes, took = ?started.elapsed(), "committed");
        let offsets = stats
            .offsets
            .into_iter()
            .map(|(k, v)| ((k.topic, k.partition), v))
            .collect();
        if self.committed.send(offsets).is_err() {
            warn!("source gone; group offsets not updated");
        }
        Ok(())
    }
}

impl SinkLoop {
    /// Counts what a batch consumed and decoded, and keeps what its commit will measure.
    fn observe_batch(&mut self, b: &paystream_ingest::kafka::DecodedBatch) {
        let m = &self.metrics;
        for r in &b.ranges {
            let labels = PartitionLabels::new(&r.topic, r.partition);
            m.consumed_events.get_or_create(&labels).inc_by(r.messages);
            m.consumed_bytes.get_or_create(&labels).inc_by(r.bytes);
        }
        // Per kind as decoded; the DLQ total is counted at commit, after the lake has dropped
        // records it already held (a rewind re-reads some).
        for (kind, n) in &b.data.bad {
            m.decode_errors
                .get_or_create(&KindLabels {
                    kind: kind.to_string(),
                })
                .inc_by(*n);
        }
        self.pending_starts.push(b.started);
        let batches = b
            .data
            .tables
            .iter()
            .map(|(_, t)| t)
            .chain(b.data.dlq.as_ref());
        for batch in batches {
            kafka_millis(batch, &mut self.pending_kafka_ms);
        }
    }

    fn observe_commit(&mut self, stats: &paystream_sinks::delta::FlushStats, took: Duration) {
        let m = &self.metrics;
        m.commits.inc();
        m.commit_seconds.observe(took.as_secs_f64());
        m.files_written.inc_by(stats.files);
        m.bytes_written.inc_by(stats.bytes);
        if let Some(n) = stats.rows.get(paystream_core::schema::DLQ_TABLE) {
            m.dlq_records.inc_by(*n);
        }
        for (table, n) in &stats.rows {
            m.rows_committed
                .get_or_create(&TableLabels {
                    table: table.clone(),
                })
                .inc_by(*n);
        }
        for started in self.pending_starts.drain(..) {
            m.batch_seconds.observe(started.elapsed().as_secs_f64());
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        for ts in self.pending_kafka_ms.drain(..) {
            m.kafka_to_commit_seconds
                .observe((now_ms - ts).max(0) as f64 / 1000.0);
        }
        m.last_commit_seconds.set(now_ms as f64 / 1000.0);
    }
}

/// Appends the Kafka timestamps of `batch`'s rows, in milliseconds (rows without one are
/// left out).
fn kafka_millis(batch: &RecordBatch, out: &mut Vec<i64>) {
    let Some(col) = batch.column_by_name("kafka_timestamp") else {
        return;
    };
    let Some(ts) = col.as_any().downcast_ref::<TimestampMicrosecondArray>() else {
        return;
    };
    out.extend(ts.iter().flatten().map(|us| us / 1000));
}

/// A stage span (`write`, `commit`) of a batch; disabled when the batch's span is.
fn stage(batch: &Span, name: &'static str) -> Span {
    if batch.is_disabled() {
        return Span::none();
    }
    match name {
        "write" => {
            tracing::info_span!(target: TRACE_TARGET, parent: batch, "write", otel.status_code = Empty, otel.status_message = Empty)
        }
        _ => {
            tracing::info_span!(target: TRACE_TARGET, parent: batch, "commit", otel.status_code = Empty, otel.status_message = Empty)
        }
    }
}

/// Mark a span as failed with `error` (the exporter turns these fields into the span status).
fn failed(span: &Span, error: &dyn std::fmt::Display) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", error.to_string().as_str());
}
