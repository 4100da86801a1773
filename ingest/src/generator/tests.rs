//! Whole-generator properties over large samples: determinism, the event and wire mixes, bad
//! records, exact money, lateness, card-number safety.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use chrono::DateTime;
use paystream_core::dlq::ErrorKind;
use serde_json::Value as Json;

use super::*;

const START: i64 = 1_710_670_500_000; // 2024-03-17T10:15:00Z

fn options(seed: u64, bad_ratio: f64, late_ratio: f64) -> GeneratorOptions {
    GeneratorOptions {
        seed,
        bad_ratio,
        late_ratio,
        topic_prefix: "t.".into(),
        start_time_ms: START,
        rate_per_sec: Some(1_000.0),
        ..Default::default()
    }
}

fn sample(opts: GeneratorOptions, n: usize) -> Vec<GeneratedMessage> {
    Generator::new(opts).take(n).collect()
}

fn header<'a>(m: &'a GeneratedMessage, k: &str) -> Option<&'a str> {
    m.headers
        .iter()
        .find(|(n, _)| *n == k)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// A good message as a consumer would see it, whatever its wire form.
struct Parsed {
    form: &'static str,
    event_type: String,
    event_id: String,
    time_ms: i64,
    data: Json,
    traceparent: String,
}

fn time_ms(v: &Json) -> i64 {
    match v {
        Json::Number(n) => n.as_i64().unwrap(),
        Json::String(s) => DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis(),
        other => panic!("event time {other}"),
    }
}

fn parse(m: &GeneratedMessage) -> Parsed {
    let body: Json = serde_json::from_slice(&m.payload).unwrap();
    if let Some(t) = header(m, "ce_type") {
        Parsed {
            form: "binary",
            event_type: t.into(),
            event_id: header(m, "ce_id").unwrap().into(),
            time_ms: time_ms(&Json::String(header(m, "ce_time").unwrap().into())),
            traceparent: header(m, "traceparent").unwrap().into(),
            data: body,
        }
    } else if header(m, "content-type") == Some("application/cloudevents+json") {
        let tp = body["traceparent"].as_str().map(String::from);
        Parsed {
            form: "structured",
            event_type: body["type"].as_str().unwrap().into(),
            event_id: body["id"].as_str().unwrap().into(),
            time_ms: time_ms(&body["time"]),
            traceparent: tp
                .or_else(|| header(m, "traceparent").map(String::from))
                .unwrap(),
            data: body["data"].clone(),
        }
    } else {
        Parsed {
            form: "plain",
            event_type: body["event_type"].as_str().unwrap().into(),
            event_id: body["event_id"].as_str().unwrap().into(),
            time_ms: time_ms(&body["event_time"]),
            traceparent: header(m, "traceparent").unwrap().into(),
            data: body,
        }
    }
}

/// The raw JSON text of member `key` (first occurrence), to check numbers exactly.
fn raw_member<'a>(payload: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let start = payload.find(&pat)? + pat.len();
    let rest = &payload[start..];
    let end = if let Some(stripped) = rest.strip_prefix('"') {
        stripped.find('"')? + 2
    } else {
        rest.find([',', '}'])?
    };
    Some(&rest[..end])
}

/// Decimal text to minor units, refusing anything inexact.
fn to_minor(text: &str, exponent: u32) -> i64 {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    assert!(
        frac.len() <= exponent as usize,
        "{text} has more than {exponent} decimals"
    );
    let padded = format!("{frac:0<width$}", width = exponent as usize);
    let scale = 10i64.pow(exponent);
    int.parse::<i64>().unwrap() * scale
        + if padded.is_empty() {
            0
        } else {
            padded.parse::<i64>().unwrap()
        }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = sample(options(7, 0.05, 0.1), 5_000);
    let b = sample(options(7, 0.05, 0.1), 5_000);
    let c = sample(options(8, 0.05, 0.1), 5_000);
    assert_eq!(a, b);
    assert_ne!(a[..100], c[..100]);
}

#[test]
fn event_and_wire_mix_within_tolerance() {
    let n = 100_000;
    let started = Instant::now();
    let msgs = sample(options(1, 0.0, 0.0), n);
    let elapsed = started.elapsed();
    println!(
        "generated {n} messages in {elapsed:?}: {:.0} msg/s, {:.0} B avg (this build profile)",
        n as f64 / elapsed.as_secs_f64(),
        msgs.iter().map(|m| m.payload.len()).sum::<usize>() as f64 / n as f64
    );
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    let mut forms: BTreeMap<&str, usize> = BTreeMap::new();
    let mut currencies: BTreeMap<String, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = HashSet::new();
    for m in &msgs {
        let p = parse(m);
        *types.entry(p.event_type.clone()).or_default() += 1;
        *forms.entry(p.form).or_default() += 1;
        *currencies
            .entry(p.data["currency"].as_str().unwrap().into())
            .or_default() += 1;
        if let Some(r) = p.data["rejection_reason"].as_str() {
            *reasons.entry(r.into()).or_default() += 1;
        }
        assert!(
            ids.insert(p.event_id.clone()),
            "duplicate id {}",
            p.event_id
        );
        let tp: Vec<&str> = p.traceparent.split('-').collect();
        assert_eq!(
            (tp.len(), tp[0], tp[1].len(), tp[2].len(), tp[3]),
            (4, "00", 32, 16, "01")
        );
        let Truth::Good {
            table, event_id, ..
        } = &m.truth
        else {
            panic!("bad record")
        };
        assert_eq!(event_id, &p.event_id);
        assert_eq!(*m.topic, format!("t.{table}"));
        let family = flow::MIX
            .iter()
            .find(|(t, _)| t.name() == p.event_type)
            .map(|(t, _)| t.family().table());
        assert_eq!(family, Some(*table));
        assert_eq!(m.key, p.data["order_id"].as_str().unwrap().as_bytes());
    }
    let share = |count: usize| count as f64 / n as f64;
    for (t, per_mille) in flow::MIX {
        let got = share(types[t.name()]);
        let want = f64::from(*per_mille) / 1000.0;
        assert!((got - want).abs() < 0.01, "{}: {got} vs {want}", t.name());
    }
    for (form, want) in [("plain", 0.5), ("structured", 0.3), ("binary", 0.2)] {
        let got = share(forms[form]);
        assert!((got - want).abs() < 0.01, "{form}: {got}");
    }
    for common in ["EUR", "USD", "GBP"] {
        assert!(share(currencies[common]) > 0.08, "{common}: {currencies:?}");
    }
    for rare in ["JPY", "KWD", "BHD", "BRL", "SEK", "CHF"] {
        assert!(
            currencies.get(rare).is_some_and(|c| *c > 100),
            "{rare}: {currencies:?}"
        );
    }
    assert_eq!(reasons.len(), 6, "{reasons:?}");
    assert!(reasons["insufficient_funds"] > reasons["network_error"] * 3);
}

#[test]
fn bad_records_cover_every_kind_and_nothing_else() {
    let n = 50_000;
    let msgs = sample(options(2, 0.1, 0.0), n);
    let mut kinds: BTreeMap<ErrorKind, usize> = BTreeMap::new();
    for m in &msgs {
        match &m.truth {
            Truth::Bad { kind } => *kinds.entry(*kind).or_default() += 1,
            Truth::Good { .. } => {
                // Every good record parses in full.
                parse(m);
            }
        }
    }
    let bad: usize = kinds.values().sum();
    assert!((bad as f64 / n as f64 - 0.1).abs() < 0.01, "{bad}");
    for kind in bad::KINDS {
        assert!(
            kinds.get(&kind).is_some_and(|c| *c > 300),
            "{kind}: {kinds:?}"
        );
    }
    assert!(!kinds.contains_key(&ErrorKind::Oversized));
    let none = sample(options(2, 0.0, 0.0), 10_000);
    assert!(none.iter().all(|m| matches!(m.truth, Truth::Good { .. })));
}

#[test]
fn no_card_number_anywhere() {
    for m in sample(options(3, 0.1, 0.1), 100_000) {
        assert!(
            !ids::contains_pan(&m.payload),
            "{}",
            String::from_utf8_lossy(&m.payload)
        );
        for (k, v) in &m.headers {
            assert!(!ids::contains_pan(v), "header {k}");
        }
        assert!(!ids::contains_pan(&m.key));
    }
}

#[test]
fn money_is_exact_at_the_currency_exponent() {
    let mut encodings: BTreeMap<&str, usize> = BTreeMap::new();
    for m in sample(options(4, 0.0, 0.0), 50_000) {
        let Truth::Good {
            currency,
            amount_minor,
            ..
        } = &m.truth
        else {
            unreachable!()
        };
        let text = std::str::from_utf8(&m.payload).unwrap();
        let exponent = CURRENCIES
            .iter()
            .find(|c| c.code == *currency)
            .unwrap()
            .exponent;
        assert_eq!(
            raw_member(text, "currency"),
            Some(format!("\"{currency}\"").as_str())
        );
        let got = if let Some(minor) = raw_member(text, "amount_minor") {
            *encodings.entry("minor").or_default() += 1;
            minor.parse::<i64>().unwrap()
        } else {
            let raw = raw_member(text, "amount").unwrap();
            let kind = if raw.starts_with('"') {
                "string"
            } else {
                "number"
            };
            *encodings.entry(kind).or_default() += 1;
            to_minor(raw.trim_matches('"'), exponent)
        };
        assert_eq!(got, *amount_minor, "{text}");
        assert!(*amount_minor > 0);
    }
    assert_eq!(encodings.len(), 3, "{encodings:?}");
}

#[test]
fn late_events_lie_1_to_30_minutes_in_the_past() {
    let n = 20_000;
    let msgs = sample(options(5, 0.0, 0.2), n);
    let mut late = 0;
    for (i, m) in msgs.iter().enumerate() {
        let clock = START + i as i64; // 1,000 events per second of event time
        let t = parse(m).time_ms;
        assert!(t <= clock + 1, "event {i} is in the future");
        if t < clock - 1 {
            late += 1;
            let behind = clock - t;
            assert!((59_999..=1_800_000).contains(&behind), "{behind} ms late");
            assert!(
                t < START,
                "the first 20 s of events are all before the base when late"
            );
        }
    }
    let share = late as f64 / n as f64;
    assert!((share - 0.2).abs() < 0.015, "{share}");
    let on_time = sample(options(5, 0.0, 0.0), 5_000);
    for (i, m) in on_time.iter().enumerate() {
        assert!((parse(m).time_ms - (START + i as i64)).abs() <= 1);
    }
}

#[test]
fn options_are_validated_and_clamped() {
    assert!(options(1, 0.1, 0.1).validate().is_ok());
    assert!(options(1, 1.5, 0.1).validate().is_err());
    assert!(options(1, 0.1, f64::NAN).validate().is_err());
    let bad_rate = GeneratorOptions {
        rate_per_sec: Some(0.0),
        ..options(1, 0.0, 0.0)
    };
    assert!(bad_rate.validate().is_err());
    let bad_prefix = GeneratorOptions {
        topic_prefix: "a b".into(),
        ..options(1, 0.0, 0.0)
    };
    assert!(bad_prefix.validate().is_err());
    let no_mix = GeneratorOptions {
        wire_mix: WireMix {
            plain: 0.0,
            structured: 0.0,
            binary: 0.0,
        },
        ..options(1, 0.0, 0.0)
    };
    assert!(no_mix.validate().is_err());
    // Clamped rather than panicking: every record is bad.
    let all_bad = sample(options(1, 7.0, -1.0), 200);
    assert!(all_bad.iter().all(|m| matches!(m.truth, Truth::Bad { .. })));
    // A mix with one form only.
    let binary_only = GeneratorOptions {
        wire_mix: WireMix {
            plain: 0.0,
            structured: 0.0,
            binary: 1.0,
        },
        ..options(1, 0.0, 0.0)
    };
    assert!(sample(binary_only, 500)
        .iter()
        .all(|m| header(m, "ce_type").is_some()));
    assert_eq!(
        options(1, 0.0, 0.0).topics(),
        [
            "t.payments".to_string(),
            "t.orders".into(),
            "t.refunds".into()
        ]
    );
}

/// The contract between generator and decoder: every message decodes as its `Truth` says.
#[test]
fn decoder_agrees_with_the_truth() {
    use crate::decode::{NormaliseOptions, Normaliser};
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{DataType, Int64Type};
    use paystream_core::record::RawRecord;
    use paystream_core::schema::SchemaSpec;

    fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let col =
            arrow::compute::cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        let col = col.as_string::<i32>();
        (0..col.len())
            .map(|i| col.is_valid(i).then(|| col.value(i).to_string()))
            .collect()
    }
    fn ints(batch: &RecordBatch, name: &str) -> Vec<i64> {
        let col = batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>();
        col.values().to_vec()
    }

    let msgs = sample(options(6, 0.1, 0.1), 20_000);
    let mut normaliser =
        Normaliser::try_new(&SchemaSpec::preset().unwrap(), NormaliseOptions::default()).unwrap();
    for (offset, m) in msgs.iter().enumerate() {
        let headers: Vec<(&str, Option<&[u8]>)> = m
            .headers
            .iter()
            .map(|(k, v)| (*k, Some(v.as_ref())))
            .collect();
        normaliser.push(
            &RawRecord {
                topic: &m.topic,
                partition: 0,
                offset: offset as i64,
                timestamp_ms: None,
                key: Some(&m.key),
                payload: Some(&m.payload),
                headers: &headers,
            },
            0,
        );
    }
    let out = normaliser.finish().unwrap();
    let bad = msgs
        .iter()
        .filter(|m| matches!(m.truth, Truth::Bad { .. }))
        .count();
    assert!(bad > 1_000);
    assert_eq!(out.bad.values().sum::<u64>(), bad as u64);
    assert_eq!(out.good, (msgs.len() - bad) as u64);
    let mut seen = vec![false; msgs.len()];
    if let Some(dlq) = &out.dlq {
        let kinds = strings(dlq, "error_kind");
        let errors = strings(dlq, "error");
        for (i, offset) in ints(dlq, "kafka_offset").into_iter().enumerate() {
            let m = &msgs[offset as usize];
            let kind = kinds[i].as_deref().unwrap();
            let want = match &m.truth {
                Truth::Bad { kind } => kind.as_str(),
                Truth::Good { .. } => "(good)",
            };
            assert_eq!(kind, want, "offset {offset}: {:?}", errors[i]);
            seen[offset as usize] = true;
        }
    }
    for (table, batch) in &out.tables {
        let ids = strings(batch, "event_id");
        let currencies = strings(batch, "currency");
        let amounts = ints(batch, "amount_minor");
        let extra = strings(batch, "extra");
        let traces = strings(batch, "trace_id");
        for (i, offset) in ints(batch, "kafka_offset").into_iter().enumerate() {
            let m = &msgs[offset as usize];
            let Truth::Good {
                table: t,
                event_id,
                currency,
                amount_minor,
            } = &m.truth
            else {
                panic!(
                    "offset {offset}: bad record {:?} decoded into {table}",
                    m.truth
                );
            };
            assert_eq!(t, table);
            assert_eq!(ids[i].as_ref(), Some(event_id));
            assert_eq!(currencies[i].as_ref(), Some(&currency.to_string()));
            assert_eq!(amounts[i], *amount_minor);
            assert_eq!(extra[i], None, "every generated field is mapped");
            assert_eq!(traces[i].as_deref().map(str::len), Some(32));
            seen[offset as usize] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "every message yields one row");
}
