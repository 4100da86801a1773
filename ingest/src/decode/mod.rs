//! Decoding and normalising: raw Kafka messages into the canonical Arrow tables, bad ones into
//! DLQ rows.
//!
//! One [`Normaliser`] per worker takes [`RawRecord`]s one at a time and buffers each as a row of
//! its event table (routed by event type) or, if anything about it is wrong, as a row of the
//! `dlq` table with its raw bytes and a precise, located reason. [`Normaliser::finish`] hands
//! the buffered rows over as record batches whose schemas are exactly
//! `TableSpec::arrow_schema()` and `dlq_schema()`. Every message yields exactly one row.
//!
//! The contract is `shared/EVENTS.md`: three wire forms (CloudEvents structured and binary,
//! plain), W3C trace context, event time as RFC 3339 or epoch milliseconds, exact money in
//! minor units, and card numbers masked wherever input is copied through.
//!
//! This is the pipeline's hot path. A message is validated and split into members in one pass
//! by a hand-written scanner (a CloudEvents `data` object in the same pass), without building
//! any JSON value; only mapped members are read, each with a typed read, straight into Arrow
//! builders. Scratch buffers are reused across messages, so a good event allocates nothing of
//! its own.
//!
//! Layout: [`envelope`] (wire forms and the envelope), [`trace`] (traceparent), [`object`] (the
//! one JSON parse), [`paths`] (member-to-column trie and `extra`) and [`keys`] (its name index),
//! [`plan`] (per-table columns and typed reads), [`value`], [`money`], [`currency`], [`time`]
//! (typed reads), [`table`] and [`dlq`] (Arrow builders), [`pan`] (card-number masking).

mod currency;
mod dlq;
mod envelope;
mod keys;
mod money;
mod object;
mod pan;
mod paths;
mod plan;
mod table;
mod time;
mod trace;
mod value;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::collections::BTreeMap;
use std::mem;

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use paystream_core::dlq::ErrorKind;
use paystream_core::record::RawRecord;
use paystream_core::schema::SchemaSpec;

pub use currency::currency_exponent;
pub use pan::mask_pans;

pub(crate) use dlq::json_string;

use dlq::DlqBuilders;
use envelope::{is_plain_envelope_key, locate, WireForm};
use keys::KeyIndex;
use object::{describe_invalid, parse_object, recycle, Fields, Shape};
use paths::{walk, ExtraWriter, NestedScratch, Slots};
use plan::{TablePlan, Val};
use table::TableBuilders;
use value::{wrong_type, FieldError};

use crate::{Error, Result};

/// How messages are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormaliseOptions {
    /// A payload larger than this is a bad record (`oversized`).
    pub max_message_bytes: usize,
    /// Keep unmapped fields in the `extra` column; when false, `extra` is always null.
    pub keep_extra: bool,
}

impl Default for NormaliseOptions {
    fn default() -> Self {
        NormaliseOptions {
            max_message_bytes: 1024 * 1024,
            keep_extra: true,
        }
    }
}

/// Everything buffered since the last [`Normaliser::finish`].
#[derive(Debug)]
pub struct Normalised {
    /// Table name and its rows, for each table that has rows, in table-name order. Each batch's
    /// schema is the table's `TableSpec::arrow_schema()`.
    pub tables: Vec<(String, RecordBatch)>,
    /// Bad records, with schema `dlq_schema()`; `None` if there were none.
    pub dlq: Option<RecordBatch>,
    /// Rows in `tables`.
    pub good: u64,
    /// Rows in `dlq`, by kind.
    pub bad: BTreeMap<ErrorKind, u64>,
}

/// Decodes messages into buffered table rows; one per worker.
pub struct Normaliser {
    opts: NormaliseOptions,
    plans: Vec<TablePlan>,
    tables: Vec<TableBuilders>,
    routes: KeyIndex<usize>,
    dlq: DlqBuilders,
    good: u64,
    bad: BTreeMap<ErrorKind, u64>,
    bytes: usize,
    /// An Arrow error met while appending; reported by the next `finish`.
    deferred: Option<ArrowError>,
    fields: Fields<'static>,
    data: Fields<'static>,
    slots: Slots<'static>,
    vals: Vec<Val<'static>>,
    nested: NestedScratch,
    extra: ExtraWriter,
}

/// Scratch vectors lent to one message's decoding.
struct Scratch<'a> {
    fields: Fields<'a>,
    data: Fields<'a>,
    slots: Slots<'a>,
    vals: Vec<Val<'a>>,
}

impl Normaliser {
    /// Plans every table of `schema` and the routing of event types to them. Fails with
    /// [`Error::Decode`] for a mapping that cannot be decoded (a column declared twice or named
    /// like an envelope column, an empty path segment, an event type routed to two tables).
    pub fn try_new(schema: &SchemaSpec, opts: NormaliseOptions) -> Result<Self> {
        let mut plans = Vec::new();
        let mut routes: KeyIndex<usize> = KeyIndex::default();
        for spec in schema.tables() {
            let plan = TablePlan::try_new(spec).map_err(Error::Decode)?;
            let idx = plans.len();
            for ty in &spec.event_types {
                if let Some(&other) = routes.get(ty.as_str()) {
                    let first: &TablePlan = &plans[other];
                    return Err(Error::Decode(format!(
                        "event type {ty:?} is routed to both table {} and table {}",
                        first.name, spec.name
                    )));
                }
                routes.get_or_insert_with(ty, || idx);
            }
            plans.push(plan);
        }
        Ok(Normaliser {
            opts,
            tables: plans.iter().map(TableBuilders::new).collect(),
            plans,
            routes,
            dlq: DlqBuilders::new(),
            good: 0,
            bad: BTreeMap::new(),
            bytes: 0,
            deferred: None,
            fields: Vec::new(),
            data: Vec::new(),
            slots: Vec::new(),
            vals: Vec::new(),
            nested: NestedScratch::default(),
            extra: ExtraWriter::default(),
        })
    }

    /// Decodes one message into the right table's builders, or into the DLQ builders.
    pub fn push(&mut self, rec: &RawRecord<'_>, ingest_time_us: i64) {
        self.bytes = self
            .bytes
            .saturating_add(rec.payload.map_or(0, <[u8]>::len));
        let mut s = Scratch {
            fields: recycle(mem::take(&mut self.fields)),
            data: recycle(mem::take(&mut self.data)),
            slots: recycle(mem::take(&mut self.slots)),
            vals: recycle(mem::take(&mut self.vals)),
        };
        let outcome = self.decode(rec, ingest_time_us, &mut s);
        self.fields = recycle(s.fields);
        self.data = recycle(s.data);
        self.slots = recycle(s.slots);
        self.vals = recycle(s.vals);
        let appended = match outcome {
            Ok(()) => return,
            Err(err) => {
                *self.bad.entry(err.kind).or_default() += 1;
                self.dlq.append(rec, ingest_time_us, &err)
            }
        };
        if let Err(e) = appended {
            self.deferred.get_or_insert(e);
        }
    }

    /// Decodes one message into its table, or says why it is bad.
    fn decode<'a>(
        &mut self,
        rec: &RawRecord<'a>,
        ingest_time_us: i64,
        s: &mut Scratch<'a>,
    ) -> Result<(), FieldError> {
        let text = check_payload(rec.payload, self.opts.max_message_bytes)?;
        // A CloudEvents `data` object is split in the same pass, whatever the form turns out to
        // be: only structured mode reads it.
        let data_parsed = match parse_object(text, &mut s.fields, Some(("data", &mut s.data))) {
            Ok((Shape::Object, expanded)) => expanded,
            Ok((Shape::NotObject(what), _)) => {
                return Err(FieldError::new(
                    ErrorKind::InvalidJson,
                    format!("payload is {what}, not a JSON object"),
                ))
            }
            Err(_) => {
                return Err(FieldError::new(
                    ErrorKind::InvalidJson,
                    describe_invalid(text),
                ))
            }
        };
        let loc = locate(rec, &s.fields);
        let routes = &self.routes;
        let env = loc.validate(|t| routes.get(t).copied())?;
        let plan = &self.plans[env.table];
        s.slots.clear();
        s.slots.resize(plan.n_slots, None);
        let mut extra = if self.opts.keep_extra {
            self.extra.start();
            Some(&mut self.extra)
        } else {
            None
        };
        match loc.form {
            WireForm::Plain => walk(
                &plan.root,
                &s.fields,
                is_plain_envelope_key,
                &mut s.slots,
                extra.as_deref_mut(),
                &mut self.nested,
            ),
            WireForm::Binary => walk(
                &plan.root,
                &s.fields,
                |_| false,
                &mut s.slots,
                extra.as_deref_mut(),
                &mut self.nested,
            ),
            WireForm::Structured => {
                if let Some(data) = loc.data {
                    // The first `data` member was expanded if it is an object; `loc.data` is
                    // that same first member.
                    if !data_parsed {
                        return Err(wrong_type("$.data", "an object", data));
                    }
                    walk(
                        &plan.root,
                        &s.data,
                        |_| false,
                        &mut s.slots,
                        extra.as_deref_mut(),
                        &mut self.nested,
                    );
                }
            }
        }
        plan.read(&s.slots, loc.form, &mut s.vals)?;
        let extra = extra.and_then(|x| x.finish()).map(pan::mask_json);
        if let Err(e) =
            self.tables[env.table].append(&env, rec, ingest_time_us, &s.vals, extra.as_deref())
        {
            self.deferred.get_or_insert(e);
        }
        self.good += 1;
        Ok(())
    }

    /// Rows buffered, good and bad.
    pub fn buffered_rows(&self) -> usize {
        self.tables.iter().map(|t| t.rows).sum::<usize>() + self.dlq.rows
    }

    /// Approximate payload bytes buffered, for backpressure. Call [`finish`](Self::finish)
    /// well before this reaches 1 GiB: Arrow string columns hold at most 2 GiB per batch.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Takes everything buffered as record batches (one per table that has rows, plus the DLQ
    /// if any) and resets. An [`Error::Arrow`] here is a defect, and the buffered rows are
    /// dropped with it.
    pub fn finish(&mut self) -> Result<Normalised> {
        let mut first_error = self.deferred.take();
        let mut tables = Vec::new();
        for (plan, builders) in self.plans.iter().zip(self.tables.iter_mut()) {
            if builders.rows == 0 {
                continue;
            }
            match builders.finish(plan) {
                Ok(batch) => tables.push((plan.name.clone(), batch)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let dlq = self.dlq.finish();
        let good = mem::take(&mut self.good);
        let bad = mem::take(&mut self.bad);
        self.bytes = 0;
        if let Some(e) = first_error {
            return Err(e.into());
        }
        Ok(Normalised {
            tables,
            dlq: dlq?,
            good,
            bad,
        })
    }
}

/// The payload as text, or why it cannot be an event: empty, oversized, not UTF-8.
fn check_payload(payload: Option<&[u8]>, max: usize) -> Result<&str, FieldError> {
    let payload = match payload {
        None => {
            return Err(FieldError::new(
                ErrorKind::EmptyPayload,
                "message has no payload",
            ))
        }
        Some([]) => return Err(FieldError::new(ErrorKind::EmptyPayload, "payload is empty")),
        Some(p) => p,
    };
    if payload.len() > max {
        return Err(FieldError::new(
            ErrorKind::Oversized,
            format!(
                "payload is {} bytes, over max_message_bytes {max}",
                payload.len()
            ),
        ));
    }
    std::str::from_utf8(payload).map_err(|e| {
        FieldError::new(
            ErrorKind::InvalidUtf8,
            format!(
                "payload is not valid UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            ),
        )
    })
}
