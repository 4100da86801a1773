//! paystream sources.
//!
//! Layout:
//! - [`decode`]: raw Kafka messages (plain JSON, CloudEvents structured or binary) into the
//!   canonical Arrow tables, bad records into DLQ rows with a precise reason.
//! - [`kafka`]: the consumer group: batches, rebalances that resume from the lake's offsets,
//!   pause/resume for backpressure, clean shutdown.
//! - [`generator`]: realistic synthetic payment traffic, produced into Kafka.
//! - [`otlp`]: the OpenTelemetry trace receiver (gRPC and HTTP) feeding the `spans` table.

pub mod decode;
pub mod generator;
pub mod kafka;
pub mod otlp;

/// Target of the pipeline's own spans (one per batch and stage), exported over OTLP when
/// telemetry is on and kept out of the logs.
pub const TRACE_TARGET: &str = "paystream::trace";

/// Errors of the ingest crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The lake could not say where to resume, or refused a batch: consuming cannot go on safely.
    #[error("lake: {0}")]
    Lake(String),
    /// The sink side of the pipeline has stopped.
    #[error("the sink stopped before the source")]
    SinkGone,
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Decode(String),
    #[error("generator: {0}")]
    Generator(String),
    #[error("otlp: {0}")]
    Otlp(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result of the ingest crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
