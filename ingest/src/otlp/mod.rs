//! The `otlp` source: an OpenTelemetry trace receiver (OTLP/gRPC and OTLP/HTTP with protobuf
//! bodies) whose spans go to the `spans` lake table.
//!
//! A request is answered only after its spans are committed: the receiver hands the decoded
//! rows to the sink with a one-shot reply and waits. "OK" therefore means "in the lake", and
//! anything else tells the exporter to retry, which is how OTLP exporters already behave. The
//! hand-over is a bounded channel; when it is full the receiver answers "unavailable, retry"
//! (HTTP 503, gRPC UNAVAILABLE) instead of queueing without bound: the same backpressure the
//! Kafka path gets by pausing its partitions.

mod decode;
mod server;

pub use decode::{decode_request, DecodedSpans};
pub use server::{start, OtlpOptions, OtlpReceiver, OtlpStats, SpanRequest};
