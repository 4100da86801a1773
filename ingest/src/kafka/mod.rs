//! The Kafka source: one consumer-group member that reads several topics, decodes messages in
//! batches straight into Arrow, and hands them to the sink through a bounded channel.
//!
//! Why a dedicated thread with a `BaseConsumer`: the decoder reads payloads borrowed from
//! librdkafka's buffers (no copy), and rebalance callbacks run inside `poll`, where the
//! consumer must block until the lake says where each partition resumes. Neither fits an async
//! task. The sink side talks back through the [`SourceEvent`] replies.

mod context;
mod trace;
mod worker;

pub use trace::{producer_contexts, MAX_LINKS};

pub use worker::{spawn, KafkaSource, SourceOptions, SourceStats};

use std::sync::mpsc::SyncSender;

use crate::decode::Normalised;

/// Offsets `[first, next)` of one partition in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub topic: String,
    pub partition: i32,
    pub first: i64,
    pub next: i64,
    /// Messages of the partition in the batch (fewer than `next - first` when offsets have
    /// gaps) and the bytes of their payloads.
    pub messages: u64,
    pub bytes: u64,
}

/// One decoded batch with the offsets it covers.
#[derive(Debug)]
pub struct DecodedBatch {
    pub data: Normalised,
    pub ranges: Vec<Range>,
    pub messages: u64,
    pub bytes: u64,
    /// When the batch's first message was consumed.
    pub started: std::time::Instant,
    /// The batch's span (disabled unless spans are exported); its stages are children.
    pub span: tracing::Span,
}

/// A reply the consumer thread waits for.
pub type Reply<T> = SyncSender<Result<T, String>>;

/// What the source sends to the sink, in order.
#[derive(Debug)]
pub enum SourceEvent {
    /// Rows to write.
    Batch(DecodedBatch),
    /// Partitions were assigned: where does each resume? `None`: the lake has nothing, start
    /// from the configured policy.
    Resume {
        partitions: Vec<(String, i32)>,
        reply: Reply<Vec<Option<i64>>>,
    },
    /// Partitions are being taken away: commit (or drop) what covers them before answering,
    /// so the next owner resumes from the right place.
    Revoke {
        partitions: Vec<(String, i32)>,
        reply: Reply<()>,
    },
    /// The source is stopping: commit everything, then answer.
    Stop { reply: Reply<()> },
}
