//! Producing generated traffic into Kafka, fast and honestly accounted.
//!
//! A librdkafka `BaseProducer` with many messages in flight (`linger.ms=50`, large batches,
//! `acks=all`, idempotence on) does the work; this loop only feeds it, paces it with a token
//! bucket (sleeping once per refill, never per message), and backs off when its queue is full.
//! Each message carries its [`Truth`] as the delivery opaque, and only a delivery report that
//! says "written" puts it into the [`Summary`]: the summary is what Kafka holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use tracing::{info, warn};

use super::{GeneratedMessage, Generator, Summary, Truth};
use crate::{Error, Result};

/// Where and how fast to produce.
#[derive(Clone)]
pub struct ProduceOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Messages to produce; `None` produces until shutdown.
    pub count: Option<u64>,
    /// Messages per second; `None` produces as fast as Kafka takes them.
    pub rate_per_sec: Option<f64>,
    /// Extra librdkafka properties, applied last (they override the defaults here).
    pub properties: Vec<(String, String)>,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        ProduceOptions {
            brokers: "localhost:9092".into(),
            count: None,
            rate_per_sec: None,
            properties: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ProduceOptions {
    /// Property values are left out: they may hold SASL passwords or keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.properties.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ProduceOptions")
            .field("brokers", &self.brokers)
            .field("count", &self.count)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("property_keys", &keys)
            .finish()
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProduceStats {
    /// Messages Kafka confirmed (and the summary recorded).
    pub sent: u64,
    /// Messages Kafka refused or that timed out (not in the summary).
    pub failed: u64,
    /// Payload bytes of the confirmed messages.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Defaults for throughput with every message acknowledged by all replicas, exactly once.
const DEFAULTS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    // 50 ms, not 5: with 18 partitions at 100k msg/s, 5 ms batches hold ~30 messages each and
    // the broker's per-request cost dominates (tansu spent 2.7x the CPU: scripts/bench-freshness).
    ("linger.ms", "50"),
    ("batch.size", "1000000"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "500000"),
    ("message.timeout.ms", "60000"),
    ("client.id", "paystream-generate"),
];

/// Messages generated between two looks at delivery reports and shutdown.
const BATCH: u64 = 1_024;

/// Delivery reports, filled by librdkafka's callback and drained by the loop.
#[derive(Default)]
struct Reports {
    ok: Vec<(Truth, usize)>,
    failed: u64,
    first_error: Option<String>,
}

#[derive(Default)]
struct DeliveryContext {
    reports: Mutex<Reports>,
    /// Delivery callbacks so far: tells the drain loop whether a poll served anything.
    served: AtomicU64,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Truth>;

    fn delivery(&self, result: &DeliveryResult<'_>, truth: Box<Truth>) {
        self.served.fetch_add(1, Ordering::Relaxed);
        let mut r = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(msg) => r.ok.push((*truth, msg.payload().map_or(0, <[u8]>::len))),
            Err((e, _)) => {
                r.failed += 1;
                if r.first_error.is_none() {
                    r.first_error = Some(e.to_string());
                }
            }
        }
    }
}

/// Counts of the run so far.
struct Tally {
    sent: u64,
    failed: u64,
    bytes: u64,
    warned: bool,
}

impl Tally {
    /// Serves every pending delivery report and moves the confirmed ones into `summary`.
    fn drain(&mut self, producer: &BaseProducer<DeliveryContext>, summary: &mut Summary) {
        // One poll serves one event (one batch of reports): poll until nothing more comes,
        // or reports pile up in librdkafka, holding their messages and filling its queue.
        let served = &producer.context().served;
        loop {
            let before = served.load(Ordering::Relaxed);
            producer.poll(Duration::ZERO);
            if served.load(Ordering::Relaxed) == before {
                break;
            }
        }
        let reports = {
            let mut r = producer
                .context()
                .reports
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *r)
        };
        self.sent += reports.ok.len() as u64;
        for (truth, bytes) in reports.ok {
            summary.record(truth);
            self.bytes += bytes as u64;
        }
        self.failed += reports.failed;
        if let Some(e) = reports.first_error {
            self.warn(&e);
        }
    }

    /// Logs the first failure only: a broker outage would otherwise log once per message.
    fn warn(&mut self, error: &str) {
        if !self.warned {
            warn!(
                error,
                "message not written to Kafka (further failures are only counted)"
            );
            self.warned = true;
        }
    }
}

/// A token bucket: tokens accrue at `rate` per second up to a small burst.
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        // 50 ms of traffic: rides over timer granularity without visible bursts.
        let burst = (rate * 0.05).max(1.0);
        Pacer {
            rate,
            burst,
            tokens: 1.0,
            last: Instant::now(),
        }
    }

    /// Whole tokens available now.
    fn available(&mut self) -> u64 {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.tokens.max(0.0) as u64
    }

    fn take(&mut self, n: u64) {
        self.tokens -= n as f64;
    }

    /// How long until the next token.
    fn wait(&self) -> Duration {
        let secs = ((1.0 - self.tokens) / self.rate).max(0.001);
        Duration::from_secs_f64(secs.min(1.0))
    }
}

/// librdkafka's fatal error (for an idempotent producer: the broker broke its guarantees);
/// nothing more can be produced by this producer.
fn fatal(code: RDKafkaErrorCode, reason: &str) -> Error {
    Error::Generator(format!("kafka producer failed fatally: {code}: {reason}"))
}

fn client_config(opts: &ProduceOptions) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &opts.brokers);
    for (k, v) in DEFAULTS {
        cfg.set(*k, *v);
    }
    for (k, v) in &opts.properties {
        cfg.set(k, v);
    }
    cfg
}

/// How long the final flush may wait: every message resolves within `message.timeout.ms`.
fn flush_wait(cfg: &ClientConfig) -> Duration {
    let timeout_ms = ["message.timeout.ms", "delivery.timeout.ms"]
        .iter()
        .rev()
        .find_map(|k| cfg.get(k).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(300_000);
    Duration::from_millis(timeout_ms.saturating_add(10_000))
}

/// Produces `gen`'s messages to `opts.brokers` until `opts.count` messages are sent or
/// `shutdown` resolves, then waits for every delivery report. `summary` receives exactly the
/// messages Kafka confirmed, including those confirmed before an error is returned.
pub async fn produce(
    gen: &mut Generator,
    opts: &ProduceOptions,
    summary: &mut Summary,
    shutdown: impl Future<Output = ()>,
) -> Result<ProduceStats> {
    let started = Instant::now();
    let cfg = client_config(opts);
    let producer: BaseProducer<DeliveryContext> =
        cfg.create_with_context(DeliveryContext::default())?;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tally = Tally {
        sent: 0,
        failed: 0,
        bytes: 0,
        warned: false,
    };
    let mut pacer = opts
        .rate_per_sec
        .filter(|r| r.is_finite() && *r > 0.0)
        .map(Pacer::new);
    let mut attempted = 0u64;
    info!(brokers = %opts.brokers, count = ?opts.count, rate = ?opts.rate_per_sec, "producing");

    'run: loop {
        let remaining = opts.count.map_or(u64::MAX, |c| c.saturating_sub(attempted));
        if remaining == 0 {
            break;
        }
        let mut batch = BATCH.min(remaining);
        if let Some(p) = pacer.as_mut() {
            let available = p.available();
            if available == 0 {
                tally.drain(&producer, summary);
                let wait = p.wait();
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => break 'run,
                    () = tokio::time::sleep(wait) => continue 'run,
                }
            }
            batch = batch.min(available);
            p.take(batch);
        }
        for _ in 0..batch {
            let msg = gen.next_message();
            attempted += 1;
            if !send(&producer, msg, &mut shutdown, summary, &mut tally).await {
                break 'run;
            }
        }
        tally.drain(&producer, summary);
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(fatal(code, &reason));
        }
        if shutdown.as_mut().now_or_never().is_some() {
            break;
        }
        // Let the runtime breathe between batches when unpaced.
        tokio::task::yield_now().await;
    }

    // Wait for every delivery report so that the summary is complete.
    let wait = flush_wait(&cfg);
    let flush_started = Instant::now();
    loop {
        tally.drain(&producer, summary);
        if producer.in_flight_count() == 0 {
            break;
        }
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(fatal(code, &reason));
        }
        if flush_started.elapsed() >= wait {
            return Err(Error::Generator(format!(
                "{} messages still unconfirmed after waiting {} ms for delivery",
                producer.in_flight_count(),
                wait.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stats = ProduceStats {
        sent: tally.sent,
        failed: tally.failed,
        bytes: tally.bytes,
        elapsed: started.elapsed(),
    };
    info!(
        sent = stats.sent,
        failed = stats.failed,
        bytes = stats.bytes,
        elapsed_ms = stats.elapsed.as_millis() as u64,
        "produced"
    );
    Ok(stats)
}

/// Enqueues one message, backing off while librdkafka's queue is full. Returns `false` if
/// shutdown came while waiting (the message is then dropped, never counted).
async fn send<F: Future<Output = ()>>(
    producer: &BaseProducer<DeliveryContext>,
    msg: GeneratedMessage,
    shutdown: &mut Pin<&mut F>,
    summary: &mut Summary,
    tally: &mut Tally,
) -> bool {
    let GeneratedMessage {
        topic,
        key,
        payload,
        headers,
        truth,
    } = msg;
    let mut opaque = Box::new(truth);
    loop {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in &headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(v.as_ref()),
            });
        }
        let record = BaseRecord::with_opaque_to(&topic, opaque)
            .key(key.as_slice())
            .payload(payload.as_slice())
            .headers(owned);
        match producer.send(record) {
            Ok(()) => return true,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                opaque = record.delivery_opaque;
            }
            Err((e, _)) => {
                tally.failed += 1;
                tally.warn(&e.to_string());
                return true;
            }
        }
        // Queue full: serve delivery reports (which frees the queue), then give librdkafka
        // a moment to send.
        tally.drain(producer, summary);
        tokio::select! {
            biased;
            () = shutdown.as_mut() => return false,
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::GeneratorOptions;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::mocking::MockCluster;

    type Wire = (String, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn options() -> GeneratorOptions {
        GeneratorOptions {
            seed: 99,
            bad_ratio: 0.05,
            late_ratio: 0.05,
            topic_prefix: "test.".into(),
            start_time_ms: 1_710_670_500_000,
            rate_per_sec: None,
            ..Default::default()
        }
    }

    fn consume_all(brokers: &str, topics: &[std::sync::Arc<str>; 3], expected: usize) -> Vec<Wire> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "generator-test")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let names: Vec<&str> = topics.iter().map(|t| &**t).collect();
        consumer.subscribe(&names).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = Vec::with_capacity(expected);
        while got.len() < expected && Instant::now() < deadline {
            let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let msg = msg.unwrap();
            let headers = msg.headers().map_or_else(Vec::new, |h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            });
            got.push((
                msg.topic().to_string(),
                msg.key().unwrap_or_default().to_vec(),
                msg.payload().unwrap_or_default().to_vec(),
                headers,
            ));
        }
        got
    }

    fn sorted_ids(mut s: Summary) -> Summary {
        for t in s.good.values_mut() {
            t.event_ids.sort();
        }
        s
    }

    #[tokio::test]
    async fn produces_everything_and_the_summary_is_the_truth() {
        let n = 10_000u64;
        let cluster = MockCluster::new(1).unwrap();
        let mut gen = Generator::new(options());
        for topic in gen.topics() {
            cluster.create_topic(topic, 3, 1).unwrap();
        }
        let opts = ProduceOptions {
            brokers: cluster.bootstrap_servers(),
            count: Some(n),
            ..Default::default()
        };
        let mut summary = Summary::default();
        let stats = tokio::time::timeout(
            Duration::from_secs(60),
            produce(&mut gen, &opts, &mut summary, std::future::pending()),
        )
        .await
        .unwrap()
        .unwrap();
        println!(
            "produced {} messages ({} bytes) in {:?}: {:.0} msg/s",
            stats.sent,
            stats.bytes,
            stats.elapsed,
            stats.sent as f64 / stats.elapsed.as_secs_f64()
        );
        assert_eq!((stats.sent, stats.failed), (n, 0));
        assert_eq!(summary.total, n);

        // What Kafka holds is exactly what the same seed generates.
        let mut expected_summary = Summary::default();
        let mut expected: Vec<Wire> = Generator::new(options())
            .take(n as usize)
            .map(|m| {
                expected_summary.record(m.truth.clone());
                let headers = m
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.into_owned()))
                    .collect();
                (m.topic.to_string(), m.key, m.payload, headers)
            })
            .collect();
        assert_eq!(
            stats.bytes,
            expected.iter().map(|w| w.2.len() as u64).sum::<u64>()
        );
        let mut got = consume_all(&opts.brokers, gen.topics(), n as usize);
        assert_eq!(got.len(), n as usize);
        got.sort();
        expected.sort();
        assert!(
            got == expected,
            "consumed messages differ from the generated ones"
        );
        assert_eq!(sorted_ids(summary), sorted_ids(expected_summary));
    }

    /// Throughput against the in-process mock broker:
    /// `cargo test -p paystream-ingest --lib generator::produce -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement, not a check"]
    async fn throughput_on_the_mock_cluster() {
        let n = 200_000u64;
        let cluster = MockCluster::new(1).unwrap();
        let mut gen = Generator::new(options());
        for topic in gen.topics() {
            cluster.create_topic(topic, 6, 1).unwrap();
        }
        let opts = ProduceOptions {
            brokers: cluster.bootstrap_servers(),
            count: Some(n),
            ..Default::default()
        };
        let mut summary = Summary::default();
        let stats = tokio::time::timeout(
            Duration::from_secs(300),
            produce(&mut gen, &opts, &mut summary, std::future::pending()),
        )
        .await
        .unwrap()
        .unwrap();
        println!(
            "produced {} messages, {:.1} MB in {:?}: {:.0} msg/s",
            stats.sent,
            stats.bytes as f64 / 1e6,
            stats.elapsed,
            stats.sent as f64 / stats.elapsed.as_secs_f64()
        );
        assert_eq!(summary.total, n);
    }

    #[tokio::test]
    async fn paced_run_stops_at_shutdown() {
        let cluster = MockCluster::new(1).unwrap();
        let mut gen = Generator::new(options());
        for topic in gen.topics() {
            cluster.create_topic(topic, 1, 1).unwrap();
        }
        let opts = ProduceOptions {
            brokers: cluster.bootstrap_servers(),
            count: None,
            rate_per_sec: Some(2_000.0),
            properties: vec![("linger.ms".into(), "1".into())],
        };
        let mut summary = Summary::default();
        let stats = tokio::time::timeout(
            Duration::from_secs(30),
            produce(
                &mut gen,
                &opts,
                &mut summary,
                tokio::time::sleep(Duration::from_millis(500)),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        // About 1,000 in half a second; generous bounds for a loaded machine.
        assert!((400..=1_300).contains(&stats.sent), "{stats:?}");
        assert_eq!(summary.total, stats.sent);
        assert!(stats.elapsed >= Duration::from_millis(500));
    }

    #[test]
    fn debug_output_hides_property_values() {
        let opts = ProduceOptions {
            properties: vec![("sasl.password".into(), "hunter2".into())],
            ..Default::default()
        };
        let shown = format!("{opts:?}");
        assert!(
            shown.contains("sasl.password") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn pacer_refills_at_the_rate() {
        let mut p = Pacer::new(1_000.0);
        assert_eq!(p.available(), 1);
        p.take(1);
        assert!(p.wait() >= Duration::from_micros(900));
        std::thread::sleep(Duration::from_millis(20));
        let n = p.available();
        assert!((15..=50).contains(&n), "{n}");
    }

    #[test]
    fn produce_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let mut gen = Generator::new(options());
        let mut summary = Summary::default();
        let opts = ProduceOptions::default();
        let fut = produce(&mut gen, &opts, &mut summary, std::future::pending());
        assert_send(&fut);
    }
}
