//! The three wire forms of EVENTS.md (plain JSON, CloudEvents structured, CloudEvents binary) and
//! the event-time encodings, rendered from one [`Draft`] of an event.
//!
//! JSON is written by hand into a byte buffer: the generator must outrun the pipeline it feeds,
//! and a byte buffer is also the only way to carry the deliberately broken payloads of
//! `bad.rs` (invalid UTF-8) through the same code.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use rand::Rng;

use super::{ids, Headers};

/// How an event is put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireForm {
    /// A flat object with `event_id`, `event_type`, `event_time`, … and the fields.
    Plain,
    /// CloudEvents 1.0 structured mode: attributes and a `data` object in the body.
    Structured,
    /// CloudEvents 1.0 binary mode: attributes in `ce_*` headers, the body is `data`.
    Binary,
}

/// A JSON value of an event field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    /// An id shared with the generator's state (orders and payments it may reuse).
    Shared(std::sync::Arc<str>),
    Static(&'static str),
    Int(i64),
    /// Pre-rendered JSON (a decimal number such as `19.99`, kept as exact text).
    Raw(String),
    /// A string whose bytes are written as they are, even if they are not UTF-8.
    Bytes(Vec<u8>),
    Object(Vec<(&'static str, Value)>),
}

/// The event time as it will be written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EventTime {
    /// RFC 3339 text (or, for bad records, any text).
    Text(String),
    /// Epoch milliseconds, as a JSON number (plain form only).
    EpochMs(i64),
}

/// An event before rendering: envelope attributes and the data fields.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub event_type: &'static str,
    /// `None` renders an event without an id (a bad record).
    pub event_id: Option<String>,
    pub time: EventTime,
    pub source: &'static str,
    pub schema_version: &'static str,
    pub traceparent: String,
    /// For CloudEvents structured mode: carry `traceparent` as an attribute, not a header.
    pub trace_in_body: bool,
    pub fields: Vec<(&'static str, Value)>,
}

impl Draft {
    /// Replaces the field `key` (keeping its position), or appends it.
    pub(crate) fn set(&mut self, key: &'static str, value: Value) {
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
    }

    /// Replaces whichever money field the event has (`amount_minor` or `amount`) with one.
    pub(crate) fn set_money(&mut self, key: &'static str, value: Value) {
        match self
            .fields
            .iter()
            .position(|(k, _)| *k == "amount_minor" || *k == "amount")
        {
            Some(i) => self.fields[i] = (key, value),
            None => self.fields.push((key, value)),
        }
    }
}

/// Offsets event times are written with, weighted: services log in their own time zone.
const OFFSETS: &[(i32, u32)] = &[
    (0, 40),
    (2 * 3600, 14),
    (3600, 12),
    (-5 * 3600, 12),
    (-3 * 3600, 5),
    (9 * 3600, 6),
    (19_800, 4), // +05:30
    (3 * 3600, 4),
    (-8 * 3600, 3),
];

/// Encodes an event time for `form`: RFC 3339 with a varying offset, or (plain form only, as
/// CloudEvents requires RFC 3339) sometimes epoch milliseconds.
pub(crate) fn event_time<R: Rng>(rng: &mut R, ms: i64, form: WireForm) -> EventTime {
    if form == WireForm::Plain && rng.random_bool(0.25) {
        return EventTime::EpochMs(pan_safe_ms(ms));
    }
    let offset = super::model::pick(rng, OFFSETS);
    let precision = if rng.random_bool(0.8) {
        SecondsFormat::Millis
    } else {
        SecondsFormat::Micros
    };
    match (
        DateTime::from_timestamp_millis(ms),
        FixedOffset::east_opt(offset),
    ) {
        (Some(t), Some(off)) => EventTime::Text(
            t.with_timezone(&off)
                .to_rfc3339_opts(precision, offset == 0),
        ),
        // Out of chrono's range (an absurd start time): fall back to the number.
        _ => EventTime::EpochMs(pan_safe_ms(ms)),
    }
}

/// `ms`, nudged by a millisecond if its digits would pass for a card number.
fn pan_safe_ms(ms: i64) -> i64 {
    if ids::contains_pan(ms.to_string().as_bytes()) {
        ms + 1
    } else {
        ms
    }
}

/// Renders `draft` in `form`: the payload and the Kafka headers.
pub(crate) fn render(draft: &Draft, form: WireForm) -> (Vec<u8>, Headers) {
    let mut out = Vec::with_capacity(640);
    let mut headers: Headers = Vec::with_capacity(8);
    match form {
        WireForm::Plain => {
            out.push(b'{');
            if let Some(id) = &draft.event_id {
                member_str(&mut out, "event_id", id.as_bytes());
                out.push(b',');
            }
            member_str(&mut out, "event_type", draft.event_type.as_bytes());
            out.push(b',');
            key(&mut out, "event_time");
            match &draft.time {
                EventTime::Text(t) => string(&mut out, t.as_bytes()),
                EventTime::EpochMs(ms) => int(&mut out, *ms),
            }
            out.push(b',');
            member_str(&mut out, "source", draft.source.as_bytes());
            out.push(b',');
            member_str(&mut out, "schema_version", draft.schema_version.as_bytes());
            for (k, v) in &draft.fields {
                out.push(b',');
                key(&mut out, k);
                value(&mut out, v);
            }
            out.push(b'}');
            headers.push(("content-type", Cow::Borrowed(b"application/json")));
            headers.push((
                "traceparent",
                Cow::Owned(draft.traceparent.clone().into_bytes()),
            ));
        }
        WireForm::Structured => {
            out.extend_from_slice(b"{\"specversion\":\"1.0\",");
            if let Some(id) = &draft.event_id {
                member_str(&mut out, "id", id.as_bytes());
                out.push(b',');
            }
            member_str(&mut out, "source", draft.source.as_bytes());
            out.push(b',');
            member_str(&mut out, "type", draft.event_type.as_bytes());
            out.push(b',');
            member_str(&mut out, "time", time_text(&draft.time).as_bytes());
            out.extend_from_slice(b",\"datacontenttype\":\"application/json\",");
            if draft.trace_in_body {
                member_str(&mut out, "traceparent", draft.traceparent.as_bytes());
                out.push(b',');
            }
            key(&mut out, "data");
            object(&mut out, &draft.fields);
            out.push(b'}');
            headers.push((
                "content-type",
                Cow::Borrowed(b"application/cloudevents+json"),
            ));
            if !draft.trace_in_body {
                headers.push((
                    "traceparent",
                    Cow::Owned(draft.traceparent.clone().into_bytes()),
                ));
            }
        }
        WireForm::Binary => {
            object(&mut out, &draft.fields);
            headers.push(("ce_specversion", Cow::Borrowed(b"1.0")));
            if let Some(id) = &draft.event_id {
                headers.push(("ce_id", Cow::Owned(id.clone().into_bytes())));
            }
            headers.push(("ce_type", Cow::Borrowed(draft.event_type.as_bytes())));
            headers.push(("ce_source", Cow::Borrowed(draft.source.as_bytes())));
            headers.push(("ce_time", Cow::Owned(time_text(&draft.time).into_bytes())));
            headers.push(("content-type", Cow::Borrowed(b"application/json")));
            headers.push((
                "traceparent",
                Cow::Owned(draft.traceparent.clone().into_bytes()),
            ));
        }
    }
    (out, headers)
}

fn time_text(t: &EventTime) -> String {
    match t {
        EventTime::Text(s) => s.clone(),
        EventTime::EpochMs(ms) => ms.to_string(),
    }
}

fn key(out: &mut Vec<u8>, k: &str) {
    string(out, k.as_bytes());
    out.push(b':');
}

fn member_str(out: &mut Vec<u8>, k: &str, v: &[u8]) {
    key(out, k);
    string(out, v);
}

fn object(out: &mut Vec<u8>, fields: &[(&'static str, Value)]) {
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        key(out, k);
        value(out, v);
    }
    out.push(b'}');
}

fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => string(out, s.as_bytes()),
        Value::Shared(s) => string(out, s.as_bytes()),
        Value::Static(s) => string(out, s.as_bytes()),
        Value::Bytes(b) => string(out, b),
        Value::Int(n) => int(out, *n),
        Value::Raw(r) => out.extend_from_slice(r.as_bytes()),
        Value::Object(f) => object(out, f),
    }
}

/// An integer as JSON, without an intermediate `String`.
fn int(out: &mut Vec<u8>, n: i64) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// A JSON string; escapes what JSON requires and passes every other byte through unchanged.
/// Runs of plain bytes are copied whole: ids and names rarely hold anything to escape.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut rest = s;
    while let Some(i) = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
    {
        out.extend_from_slice(&rest[..i]);
        match rest[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft {
            event_type: "OrderCreated",
            event_id: Some("e-1".into()),
            time: EventTime::Text("2024-03-17T10:15:00.000+02:00".into()),
            source: "checkout-service",
            schema_version: "1.0",
            traceparent: format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16)),
            trace_in_body: false,
            fields: vec![
                ("order_id", Value::Str("ord_1".into())),
                ("amount", Value::Raw("19.99".into())),
                ("note", Value::Str("say \"hi\"\n".into())),
                (
                    "card",
                    Value::Object(vec![("bin", Value::Static("411111"))]),
                ),
            ],
        }
    }

    fn json(payload: &[u8]) -> serde_json::Value {
        serde_json::from_slice(payload).unwrap()
    }

    fn header<'a>(h: &'a Headers, k: &str) -> Option<&'a [u8]> {
        h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_ref())
    }

    #[test]
    fn strings_escape_only_what_json_requires_wherever_it_is() {
        for raw in [
            &b""[..],
            b"plain",
            b"\"",
            b"a\\b\"c",
            b"\x01start",
            b"end\x1f",
            b"\xe9t\xe9\n",
        ] {
            let mut out = Vec::new();
            string(&mut out, raw);
            let mut expected = vec![b'"'];
            for &b in raw {
                match b {
                    b'"' => expected.extend_from_slice(b"\\\""),
                    b'\\' => expected.extend_from_slice(b"\\\\"),
                    0..=0x1f => expected.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                    _ => expected.push(b),
                }
            }
            expected.push(b'"');
            assert_eq!(out, expected, "{raw:?}");
        }
    }

    #[test]
    fn plain_form_is_a_flat_object() {
        let (p, h) = render(&draft(), WireForm::Plain);
        let v = json(&p);
        assert_eq!(v["event_id"], "e-1");
        assert_eq!(v["event_type"], "OrderCreated");
        assert_eq!(v["event_time"], "2024-03-17T10:15:00.000+02:00");
        assert_eq!(v["schema_version"], "1.0");
        assert_eq!(v["note"], "say \"hi\"\n");
        assert_eq!(v["card"]["bin"], "411111");
        assert_eq!(serde_json::to_string(&v["amount"]).unwrap(), "19.99");
        assert!(header(&h, "traceparent").is_some());
    }

    #[test]
    fn structured_form_follows_cloudevents() {
        let mut d = draft();
        d.trace_in_body = true;
        let (p, h) = render(&d, WireForm::Structured);
        let v = json(&p);
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "e-1");
        assert_eq!(v["type"], "OrderCreated");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["order_id"], "ord_1");
        assert!(v["traceparent"].as_str().unwrap().starts_with("00-"));
        assert_eq!(
            header(&h, "content-type"),
            Some(&b"application/cloudevents+json"[..])
        );
        assert!(header(&h, "traceparent").is_none());
    }

    #[test]
    fn binary_form_puts_attributes_in_headers() {
        let mut d = draft();
        d.time = EventTime::EpochMs(1_700_000_000_000);
        let (p, h) = render(&d, WireForm::Binary);
        let v = json(&p);
        assert_eq!(v["order_id"], "ord_1");
        assert!(v.get("type").is_none());
        assert_eq!(header(&h, "ce_id"), Some(&b"e-1"[..]));
        assert_eq!(header(&h, "ce_type"), Some(&b"OrderCreated"[..]));
        assert_eq!(header(&h, "ce_specversion"), Some(&b"1.0"[..]));
        assert_eq!(header(&h, "ce_time"), Some(&b"1700000000000"[..]));
        assert!(header(&h, "ce_source").is_some());
    }

    #[test]
    fn event_times_keep_the_instant() {
        use rand::rngs::StdRng;
        use rand::SeedableRng;
        let mut rng = StdRng::seed_from_u64(11);
        let ms = 1_710_670_500_123;
        let mut offsets = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            match event_time(&mut rng, ms, WireForm::Plain) {
                EventTime::Text(t) => {
                    let parsed = DateTime::parse_from_rfc3339(&t).unwrap();
                    assert_eq!(parsed.timestamp_millis(), ms, "{t}");
                    offsets.insert(parsed.offset().local_minus_utc());
                    if parsed.offset().local_minus_utc() == 0 {
                        assert!(t.ends_with('Z'));
                    }
                }
                EventTime::EpochMs(m) => assert!(m == ms || m == ms + 1),
            }
            assert!(matches!(
                event_time(&mut rng, ms, WireForm::Structured),
                EventTime::Text(_)
            ));
        }
        assert!(offsets.len() >= 5, "{offsets:?}");
    }
}
