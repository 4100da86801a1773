//! Synthetic payment traffic for `paystream generate` and `paystream demo`: the event mix of a
//! payments platform (EVENTS.md), in all three wire forms, with late events and bad records,
//! deterministic from a seed, and a fast Kafka producer that records what it confirmed.
//!
//! Layout:
//! - `model`: currencies, merchants and the weighted vocabularies;
//! - `flow`: the order → payment → refund flow with bounded rolling state;
//! - `ids`: ids and trace context from the seeded RNG, and the card-number guard;
//! - `wire`: plain JSON and CloudEvents structured/binary rendering, event-time encodings;
//! - `bad`: one-defect bad records, one per DLQ kind;
//! - [`produce()`]: the Kafka producer loop; [`Summary`]: the truth of what is in Kafka.
//!
//! Every [`GeneratedMessage`] carries its [`Truth`]: what the pipeline must make of it (a row in
//! a table with this id and amount, or a DLQ record of this kind).

mod bad;
mod flow;
mod ids;
mod model;
mod produce;
mod summary;
mod wire;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;

use paystream_core::dlq::ErrorKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use produce::{produce, ProduceOptions, ProduceStats};
pub use summary::{Summary, TableSummary};

use flow::{Family, Flow};
use model::{Model, CURRENCIES};
use wire::{Draft, WireForm};

use crate::{Error, Result};

/// An option error, in the crate's error type.
fn invalid(name: &str, reason: impl std::fmt::Display) -> Error {
    Error::Generator(format!("option `{name}`: {reason}"))
}

/// Shares of the three wire forms (relative weights; they need not sum to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WireMix {
    /// Flat JSON objects.
    pub plain: f64,
    /// CloudEvents structured mode.
    pub structured: f64,
    /// CloudEvents binary mode.
    pub binary: f64,
}

impl Default for WireMix {
    fn default() -> Self {
        WireMix {
            plain: 0.5,
            structured: 0.3,
            binary: 0.2,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorOptions {
    /// The same seed and options give the same messages, byte for byte.
    pub seed: u64,
    /// Share of bad records (0 to 1), spread evenly over the DLQ kinds except `oversized`.
    pub bad_ratio: f64,
    /// Share of events whose event time lies 1 to 30 minutes in the past (out of order).
    pub late_ratio: f64,
    /// Prepended to the topic names `payments`, `orders`, `refunds` (e.g. `"demo."`).
    pub topic_prefix: String,
    /// Event time of the first event, epoch milliseconds. Default: now.
    pub start_time_ms: i64,
    /// Events per second of event time; `None` spaces events 1 ms apart.
    pub rate_per_sec: Option<f64>,
    /// Shares of the wire forms.
    pub wire_mix: WireMix,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            seed: 42,
            bad_ratio: 0.01,
            late_ratio: 0.02,
            topic_prefix: String::new(),
            start_time_ms: chrono::Utc::now().timestamp_millis(),
            rate_per_sec: None,
            wire_mix: WireMix::default(),
        }
    }
}

/// Event-time spacing without a rate.
const DEFAULT_EVENT_RATE: f64 = 1_000.0;

impl GeneratorOptions {
    /// Checks the options; [`Generator::new`] clamps instead, so call this where a user can be
    /// told (the CLI).
    pub fn validate(&self) -> Result<()> {
        let ratio = |name, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(invalid(name, format_args!("{v} is not between 0 and 1")))
            }
        };
        ratio("bad_ratio", self.bad_ratio)?;
        ratio("late_ratio", self.late_ratio)?;
        if let Some(r) = self.rate_per_sec {
            if !(r.is_finite() && r > 0.0) {
                return Err(invalid(
                    "rate_per_sec",
                    format_args!("{r} is not a positive number"),
                ));
            }
        }
        let m = self.wire_mix;
        let shares = [m.plain, m.structured, m.binary];
        if shares.iter().any(|s| !(s.is_finite() && *s >= 0.0)) || shares.iter().sum::<f64>() <= 0.0
        {
            return Err(invalid(
                "wire_mix",
                "shares must be non-negative with a positive sum",
            ));
        }
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if !self.topic_prefix.chars().all(legal) || self.topic_prefix.len() > 200 {
            return Err(invalid(
                "topic_prefix",
                format_args!(
                    "`{}` must be at most 200 characters of a-z, A-Z, 0-9, `.`, `_`, `-`",
                    self.topic_prefix
                ),
            ));
        }
        Ok(())
    }

    /// The topics messages go to: payments, orders, refunds, with the prefix.
    pub fn topics(&self) -> [String; 3] {
        Family::ALL.map(|f| format!("{}{}", self.topic_prefix, f.table()))
    }
}

/// One message ready for Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedMessage {
    pub topic: Arc<str>,
    /// The order id: all events of an order land in one partition, in order.
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Headers,
    pub truth: Truth,
}

/// Kafka headers of a generated message: names are fixed by the contract, and values that
/// are the same for every message are borrowed rather than allocated each time.
pub type Headers = Vec<(&'static str, Cow<'static, [u8]>)>;

/// What the pipeline must make of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truth {
    /// A row in `table` with this id and exact amount.
    Good {
        table: &'static str,
        event_id: String,
        currency: &'static str,
        amount_minor: i64,
    },
    /// A DLQ record of this kind.
    Bad { kind: ErrorKind },
}

/// The deterministic source of synthetic messages.
pub struct Generator {
    rng: StdRng,
    model: Model,
    flow: Flow,
    /// Shared, not cloned per message: each message names its topic.
    topics: [Arc<str>; 3],
    bad_ratio: f64,
    late_ratio: f64,
    start_time_ms: i64,
    ms_per_event: f64,
    wire_weights: [(WireForm, u32); 3],
    seq: u64,
}

impl Generator {
    /// A generator; out-of-range options are clamped (see [`GeneratorOptions::validate`]).
    pub fn new(opts: GeneratorOptions) -> Self {
        let clamp = |v: f64| {
            if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let rate = opts
            .rate_per_sec
            .filter(|r| r.is_finite() && *r > 0.0)
            .unwrap_or(DEFAULT_EVENT_RATE);
        let m = opts.wire_mix;
        // Integer weights in parts per million keep the draw exact and cheap.
        let ppm = |s: f64| if s.is_finite() && s > 0.0 { s } else { 0.0 };
        let total = ppm(m.plain) + ppm(m.structured) + ppm(m.binary);
        let wire_weights = if total > 0.0 {
            let w = |s: f64| (ppm(s) / total * 1e6).round() as u32;
            [
                (WireForm::Plain, w(m.plain)),
                (WireForm::Structured, w(m.structured)),
                (WireForm::Binary, w(m.binary)),
            ]
        } else {
            [
                (WireForm::Plain, 500_000),
                (WireForm::Structured, 300_000),
                (WireForm::Binary, 200_000),
            ]
        };
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let model = Model::new(&mut rng);
        Generator {
            rng,
            model,
            flow: Flow::new(),
            topics: opts.topics().map(Arc::from),
            bad_ratio: clamp(opts.bad_ratio),
            late_ratio: clamp(opts.late_ratio),
            start_time_ms: opts.start_time_ms,
            ms_per_event: 1_000.0 / rate,
            wire_weights,
            seq: 0,
        }
    }

    /// The topics this generator writes to (payments, orders, refunds).
    pub fn topics(&self) -> &[Arc<str>; 3] {
        &self.topics
    }

    /// How many messages have been generated.
    pub fn generated(&self) -> u64 {
        self.seq
    }

    /// The event time the `seq`-th message is paced at (before lateness).
    fn clock_ms(&self, seq: u64) -> i64 {
        self.start_time_ms
            .saturating_add((seq as f64 * self.ms_per_event) as i64)
    }

    /// The next message.
    pub fn next_message(&mut self) -> GeneratedMessage {
        let now_ms = self.clock_ms(self.seq);
        self.seq += 1;
        let rng = &mut self.rng;
        let form = model::pick(rng, &self.wire_weights);
        let content = self.flow.next(rng, &self.model);
        let family = content.event_type.family();
        let time_ms = if rng.random_bool(self.late_ratio) {
            now_ms.saturating_sub(rng.random_range(60_000..=1_800_000))
        } else {
            now_ms
        };
        let event_id = ids::uuid(rng);
        let span = ids::traceparent(rng, &content.trace_id);
        let draft = Draft {
            event_type: content.event_type.name(),
            event_id: Some(event_id.clone()),
            time: wire::event_time(rng, time_ms, form),
            source: family.source(),
            schema_version: if rng.random_bool(0.85) { "1.0" } else { "1.1" },
            traceparent: span,
            trace_in_body: form == WireForm::Structured && rng.random_bool(0.3),
            fields: content.fields,
        };
        // `Family` discriminants follow `Family::ALL`, the order of `topics`.
        let topic = Arc::clone(&self.topics[family as usize]);
        let (payload, headers, truth) = if rng.random_bool(self.bad_ratio) {
            let kind = bad::pick_kind(rng);
            let (p, h) = bad::corrupt(
                rng,
                kind,
                draft,
                form,
                content.currency,
                content.amount_minor,
            );
            (p, h, Truth::Bad { kind })
        } else {
            let (p, h) = wire::render(&draft, form);
            let truth = Truth::Good {
                table: family.table(),
                event_id,
                currency: CURRENCIES[content.currency].code,
                amount_minor: content.amount_minor,
            };
            (p, h, truth)
        };
        GeneratedMessage {
            topic,
            key: content.order_id.as_bytes().to_vec(),
            payload,
            headers,
            truth,
        }
    }
}

impl Iterator for Generator {
    type Item = GeneratedMessage;

    /// Never ends.
    fn next(&mut self) -> Option<GeneratedMessage> {
        Some(self.next_message())
    }
}
