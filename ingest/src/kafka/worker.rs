//! The consumer thread: poll, decode into the batch being built, hand full batches to the
//! sink, pause partitions while the sink is behind, and stop cleanly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender as StdSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use paystream_core::record::RawRecord;
use paystream_core::schema::SchemaSpec;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tracing::{debug, info, warn};

use super::context::SourceContext;
use super::{trace, DecodedBatch, Range, SourceEvent};
use crate::decode::{NormaliseOptions, Normaliser};
use crate::{Error, Result};

/// How the source runs (built from a `[sources.<id>]` of type `kafka`).
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    /// Where a partition starts when the lake has no offset for it: the end (true) or the
    /// beginning (false) of the partition.
    pub start_from_end: bool,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    pub max_message_bytes: usize,
    pub fetch_wait_max: Duration,
    /// Extra librdkafka properties; they may hold secrets, so they are never logged here.
    pub properties: Vec<(String, String)>,
    /// Stop by itself once no message has come for this long and everything is committed.
    pub stop_when_idle: Option<Duration>,
    /// Fetch this many offsets before the lake's offset on assignment (see the config key).
    pub resume_rewind: i64,
}

/// Counters the source keeps, readable from any thread.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub batches: AtomicU64,
    pub paused: AtomicU64,
    /// Messages not yet committed to the lake per assigned partition (high watermark minus
    /// the group offset committed after each lake commit), from librdkafka's last statistics.
    pub lag: Mutex<Vec<((String, i32), i64)>>,
}

/// State the rebalance callback shares with the poll loop. Both run on the consumer thread
/// (callbacks fire inside `poll`), so the lock is never contended; it exists because the
/// context and the loop are two owners.
pub(super) struct Shared {
    normaliser: Normaliser,
    /// Per assigned partition: the next offset expected and the range in the batch being built.
    /// A short vector: a linear scan beats hashing a topic name per message.
    pub(super) parts: Vec<Part>,
    messages: u64,
    bytes: u64,
    started: Option<Instant>,
    /// The batch span and its `consume` child, from the batch's first message.
    spans: Option<(tracing::Span, tracing::Span)>,
    outbox: Option<DecodedBatch>,
    pub(super) assigned: Vec<(String, i32)>,
    pub(super) fatal: Option<String>,
    /// The sink has committed everything and stopped: revocations from leaving the group
    /// have nothing left to commit.
    pub(super) stopping: bool,
}

/// One assigned partition as the poll loop tracks it.
pub(super) struct Part {
    pub(super) topic: String,
    pub(super) partition: i32,
    /// Offsets below this were already delivered in this assignment: a broker that hands a
    /// record batch over twice must not make us write it twice.
    pub(super) next: i64,
    /// `[first, next)` of this partition in the batch being built.
    pub(super) range: Option<(i64, i64)>,
    /// Messages and payload bytes of this partition in the batch being built.
    pub(super) batch_messages: u64,
    pub(super) batch_bytes: u64,
}

impl Shared {
    /// Forget rows not yet handed to the sink.
    pub(super) fn drop_unsent(&mut self) {
        if self.normaliser.buffered_rows() > 0 {
            // The rows are thrown away; only the builders' reset matters.
            let _ = self.normaliser.finish();
        }
        for p in &mut self.parts {
            p.range = None;
            p.batch_messages = 0;
            p.batch_bytes = 0;
        }
        self.messages = 0;
        self.bytes = 0;
        self.started = None;
        self.spans = None;
        self.outbox = None;
    }

    fn has_rows(&self) -> bool {
        self.parts.iter().any(|p| p.range.is_some())
    }

    fn take_batch(&mut self) -> Result<Option<DecodedBatch>> {
        if !self.has_rows() {
            return Ok(None);
        }
        let (span, consume) = self.spans.take().unwrap_or_else(trace::start_batch);
        drop(consume);
        let decode = trace::decode_span(&span);
        let data = decode.in_scope(|| self.normaliser.finish());
        let data = data.map_err(|e| Error::Decode(e.to_string()))?;
        drop(decode);
        let ranges: Vec<Range> = self
            .parts
            .iter_mut()
            .filter_map(|p| {
                p.range.take().map(|(first, next)| Range {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    first,
                    next,
                    messages: std::mem::take(&mut p.batch_messages),
                    bytes: std::mem::take(&mut p.batch_bytes),
                })
            })
            .collect();
        let messages = std::mem::take(&mut self.messages);
        let bytes = std::mem::take(&mut self.bytes);
        trace::describe(&span, &data, &ranges, messages, bytes);
        let batch = DecodedBatch {
            data,
            ranges,
            messages,
            bytes,
            started: self.started.take().unwrap_or_else(Instant::now),
            span,
        };
        Ok(Some(batch))
    }
}

/// A running Kafka source.
pub struct KafkaSource {
    thread: JoinHandle<Result<()>>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<SourceStats>,
    committed: StdSender<BTreeMap<(String, i32), i64>>,
}

impl KafkaSource {
    /// Ask the source to stop: it hands over what it decoded, waits for the sink to commit,
    /// commits the group offsets and leaves the group.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// A handle that stops the source from another task (signal handlers).
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Tell the source what the lake now holds, so it commits the group's offsets (for lag
    /// monitoring only: resuming always reads the lake).
    pub fn committed_sender(&self) -> StdSender<BTreeMap<(String, i32), i64>> {
        self.committed.clone()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Wait for the consumer thread.
    pub fn join(self) -> Result<()> {
        self.thread
            .join()
            .map_err(|_| Error::Decode("the consumer thread panicked".into()))?
    }
}

fn client_config(opts: &SourceOptions) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &opts.brokers)
        .set("group.id", &opts.group_id)
        .set(
            "auto.offset.reset",
            if opts.start_from_end {
                "latest"
            } else {
                "earliest"
            },
        )
        .set(
            "fetch.wait.max.ms",
            opts.fetch_wait_max.as_millis().max(1).to_string(),
        )
        .set("queued.min.messages", "200000")
        // The prefetch queue is always over its thresholds at these settings, and
        // librdkafka's default 1 s back-off then left the decoder idle for ~0.5 s at a time
        // with the queue drained (measured: 185k -> 238k msg/s in scripts/bench's setup).
        .set("fetch.queue.backoff.ms", "50")
        .set("fetch.message.max.bytes", "8388608")
        .set("enable.partition.eof", "false")
        // Lag comes from librdkafka's statistics (see `SourceContext::stats`).
        .set("statistics.interval.ms", "1000");
    for (k, v) in &opts.properties {
        cfg.set(k, v);
    }
    // Exactly-once depends on these: the lake holds the offsets, never librdkafka's
    // auto-commit, so they win over anything the config says.
    cfg.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    cfg
}

/// Start the source on its own thread. Events go to `tx` in order.
pub fn spawn(
    opts: SourceOptions,
    schema: &SchemaSpec,
    tx: Sender<SourceEvent>,
) -> Result<KafkaSource> {
    let normaliser = Normaliser::try_new(
        schema,
        NormaliseOptions {
            max_message_bytes: opts.max_message_bytes,
            keep_extra: true,
        },
    )
    .map_err(|e| Error::Decode(e.to_string()))?;
    let shared = Arc::new(Mutex::new(Shared {
        normaliser,
        parts: Vec::new(),
        messages: 0,
        bytes: 0,
        started: None,
        spans: None,
        outbox: None,
        assigned: Vec::new(),
        fatal: None,
        stopping: false,
    }));
    let stats = Arc::new(SourceStats::default());
    let context = SourceContext {
        tx: tx.clone(),
        shared: shared.clone(),
        start_from_end: opts.start_from_end,
        rewind: opts.resume_rewind.max(0),
        stats: stats.clone(),
    };
    let consumer: BaseConsumer<SourceContext> =
        client_config(&opts).create_with_context(context)?;
    let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (committed_tx, committed_rx) = std::sync::mpsc::channel();
    let worker = Worker {
        consumer,
        shared,
        tx,
        opts,
        stop: stop.clone(),
        stats: stats.clone(),
        committed: committed_rx,
    };
    let thread = std::thread::Builder::new()
        .name("kafka-source".into())
        .spawn(move || worker.run())?;
    Ok(KafkaSource {
        thread,
        stop,
        stats,
        committed: committed_tx,
    })
}

/// Most messages taken from librdkafka's queue in one go between housekeeping rounds.
const BURST: usize = 256;

struct Worker {
    consumer: BaseConsumer<SourceContext>,
    shared: Arc<Mutex<Shared>>,
    tx: Sender<SourceEvent>,
    opts: SourceOptions,
    stop: Arc<AtomicBool>,
    stats: Arc<SourceStats>,
    committed: Receiver<BTreeMap<(String, i32), i64>>,
}

impl Worker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(self) -> Result<()> {
        let mut paused = false;
        let mut last_message = Instant::now();
        let poll_timeout = Duration::from_millis(20).min(self.opts.batch_max_wait);
        loop {
            if let Some(fatal) = self.lock().fatal.take() {
                return Err(Error::Lake(fatal));
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            self.forward_commits();

            // Hand over a finished batch; while the sink is behind, keep polling (rebalances
            // and heartbeats must go on) with every partition paused.
            let pending = self.lock().outbox.take();
            if let Some(batch) = pending {
                match self.tx.try_send(SourceEvent::Batch(batch)) {
                    Ok(()) => {
                        self.stats.batches.fetch_add(1, Ordering::Relaxed);
                        if paused {
                            self.set_paused(false);
                            paused = false;
                        }
                    }
                    Err(TrySendError::Full(SourceEvent::Batch(batch))) => {
                        self.lock().outbox = Some(batch);
                        if !paused {
                            self.set_paused(true);
                            paused = true;
                            self.stats.paused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => return Err(Error::SinkGone),
                }
            }

            if let Some(msg) = self.consumer.poll(poll_timeout) {
                // One clock read per burst: messages already fetched are taken without waiting
                // (up to BURST, and never past a full batch) before the housekeeping above runs
                // again; their ingest_time is the burst's.
                let now = chrono::Utc::now().timestamp_micros();
                last_message = Instant::now();
                let mut next = Some(msg);
                let mut taken = 0;
                while let Some(msg) = next.take() {
                    let full = match msg {
                        Ok(m) => self.decode(&m, now),
                        Err(e) => {
                            warn!(error = %e, "kafka consumer error");
                            false
                        }
                    };
                    taken += 1;
                    if taken < BURST && !full {
                        next = self.consumer.poll(Duration::ZERO);
                    }
                }
            }

            let mut shared = self.lock();
            let full = shared.normaliser.buffered_rows() >= self.opts.batch_max_events;
            let due = shared
                .started
                .is_some_and(|t| t.elapsed() >= self.opts.batch_max_wait);
            if shared.outbox.is_none() && (full || due) {
                shared.outbox = shared.take_batch()?;
            }
            let idle = !shared.has_rows() && shared.outbox.is_none();
            let has_assignment = !shared.assigned.is_empty();
            drop(shared);
            if let Some(limit) = self.opts.stop_when_idle {
                if idle && has_assignment && last_message.elapsed() >= limit {
                    info!(idle_for = ?limit, "no message for a while, stopping");
                    break;
                }
                if !has_assignment {
                    last_message = Instant::now();
                }
            }
        }
        self.shutdown()
    }

    /// Decode one message into the batch being built; returns whether the batch is full.
    fn decode(&self, m: &rdkafka::message::BorrowedMessage<'_>, now: i64) -> bool {
        let headers: Vec<(&str, Option<&[u8]>)> = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        // rdkafka checks the topic name's UTF-8 on every `topic()` call: once per message.
        let (topic, partition) = (m.topic(), m.partition());
        let rec = RawRecord {
            topic,
            partition,
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key(),
            payload: m.payload(),
            headers: &headers,
        };
        let len = m.payload_len() as u64;
        let offset = m.offset();
        let mut shared = self.lock();
        let Some(i) = shared
            .parts
            .iter()
            .position(|p| p.partition == partition && p.topic == topic)
        else {
            // Not (or no longer) ours: a message fetched before a revocation.
            return false;
        };
        if offset < shared.parts[i].next {
            debug!(topic, partition, offset, "redelivered message skipped");
            return false;
        }
        shared.normaliser.push(&rec, now);
        let part = &mut shared.parts[i];
        part.next = offset + 1;
        let range = part.range.get_or_insert((offset, offset));
        range.1 = offset + 1;
        part.batch_messages += 1;
        part.batch_bytes += len;
        shared.messages += 1;
        shared.bytes += len;
        if shared.started.is_none() {
            shared.started = Some(Instant::now());
            shared.spans = Some(trace::start_batch());
        }
        let full = shared.normaliser.buffered_rows() >= self.opts.batch_max_events;
        drop(shared);
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(len, Ordering::Relaxed);
        full
    }

    fn set_paused(&self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let res = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match res {
            Ok(()) => debug!(pause, "backpressure"),
            Err(e) => warn!(error = %e, pause, "pause/resume failed"),
        }
    }

    /// Commit the group's offsets to what the lake holds (lag monitoring only).
    fn forward_commits(&self) {
        let mut latest = BTreeMap::new();
        while let Ok(offsets) = self.committed.try_recv() {
            latest.extend(offsets);
        }
        if latest.is_empty() {
            return;
        }
        let assigned = self.lock().assigned.clone();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in latest {
            if assigned.contains(&(topic.clone(), partition)) {
                // Best effort: a failed lag commit changes nothing about what is in the lake.
                let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(next));
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                debug!(error = %e, "group offset commit failed");
            }
        }
    }

    fn shutdown(self) -> Result<()> {
        let (last, outbox) = {
            let mut shared = self.lock();
            let outbox = shared.outbox.take();
            (shared.take_batch()?, outbox)
        };
        for batch in outbox.into_iter().chain(last) {
            self.tx
                .blocking_send(SourceEvent::Batch(batch))
                .map_err(|_| Error::SinkGone)?;
        }
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .blocking_send(SourceEvent::Stop { reply })
            .map_err(|_| Error::SinkGone)?;
        rx.recv()
            .map_err(|_| Error::SinkGone)?
            .map_err(Error::Lake)?;
        self.lock().stopping = true;
        self.forward_commits();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            debug!(error = %e, "final group offset commit");
        }
        info!("kafka source stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(properties: &[(&str, &str)]) -> SourceOptions {
        SourceOptions {
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["payments".into()],
            group_id: "g".into(),
            start_from_end: false,
            batch_max_events: 10,
            batch_max_wait: Duration::from_millis(100),
            max_message_bytes: 1024,
            fetch_wait_max: Duration::from_millis(10),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stop_when_idle: None,
            resume_rewind: 0,
        }
    }

    #[test]
    fn fetch_back_off_is_short_unless_the_config_says_otherwise() {
        let cfg = client_config(&options(&[]));
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("50"));
        let cfg = client_config(&options(&[("fetch.queue.backoff.ms", "200")]));
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("200"));
    }

    #[test]
    fn the_lake_keeps_the_offsets_whatever_the_config_says() {
        let cfg = client_config(&options(&[
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "true"),
        ]));
        assert_eq!(cfg.get("enable.auto.commit"), Some("false"));
        assert_eq!(cfg.get("enable.auto.offset.store"), Some("false"));
    }
}
