//! The sink side of an `otlp` source: buffers received spans in the `spans` table, commits at
//! the sink's `max_latency` (or when its buffer is full), then answers every request the
//! commit covered. A failed commit is answered "unavailable" so the clients send the spans
//! again; the pipeline itself goes on.

use std::time::Duration;

use paystream_ingest::otlp::SpanRequest;
use paystream_sinks::spans::SpanSink;
use tokio::sync::mpsc::Receiver;
use tokio::sync::oneshot;
use tracing::{debug, warn};

type Ack = oneshot::Sender<Result<(), String>>;

pub(super) struct SpanLoop {
    pub(super) sink: SpanSink,
    pub(super) pipeline: String,
    pub(super) max_latency: Duration,
    pub(super) max_buffer_bytes: usize,
    /// Requests whose spans are buffered, waiting for the next commit.
    pub(super) waiting: Vec<Ack>,
    /// Spans committed so far.
    pub(super) committed: u64,
}

impl SpanLoop {
    /// Run until every sender is gone (the receiver stopped), committing what is left.
    pub(super) async fn run(mut self, mut rx: Receiver<SpanRequest>) -> u64 {
        loop {
            let deadline = self
                .sink
                .pending_since()
                .map(|t| tokio::time::Instant::from_std(t + self.max_latency));
            let request = match deadline {
                Some(d) => tokio::select! {
                    r = rx.recv() => r,
                    _ = tokio::time::sleep_until(d) => {
                        self.commit().await;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(req) = request else {
                self.commit().await;
                return self.committed;
            };
            match self.sink.write(req.spans.batch).await {
                Ok(_) => self.waiting.push(req.ack),
                Err(e) => {
                    // Nothing of this request is committed; the client will send it again.
                    warn!(error = %e, "could not buffer received spans");
                    let _ = req.ack.send(Err(e.to_string()));
                    self.sink.discard();
                    self.fail_waiting("an earlier write failed");
                }
            }
            if self.sink.pending_bytes() >= self.max_buffer_bytes {
                self.commit().await;
            }
        }
    }

    async fn commit(&mut self) {
        match self.sink.commit(&self.pipeline).await {
            Ok(outcome) => {
                if let Some(o) = outcome {
                    debug!(
                        rows = o.rows,
                        files = o.files,
                        version = o.version,
                        "spans committed"
                    );
                    self.committed += o.rows;
                }
                for ack in self.waiting.drain(..) {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) => {
                warn!(error = %e, "committing spans failed; the clients will retry");
                self.sink.discard();
                self.fail_waiting(&e.to_string());
            }
        }
    }

    fn fail_waiting(&mut self, why: &str) {
        for ack in self.waiting.drain(..) {
            let _ = ack.send(Err(why.to_owned()));
        }
    }
}
