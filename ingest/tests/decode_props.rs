//! Property tests of the decoder: no input can crash it or lose a record, valid events
//! round-trip exactly, and decimal amounts scale exactly or are flagged inexact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, FixedOffset, SecondsFormat};
use paystream_core::record::RawRecord;
use paystream_core::schema::{dlq_schema, SchemaSpec};
use paystream_ingest::decode::{currency_exponent, NormaliseOptions, Normalised, Normaliser};
use proptest::prelude::*;

const INGEST: i64 = 1_714_600_000_000_000;

fn normaliser() -> Normaliser {
    Normaliser::try_new(&SchemaSpec::preset().unwrap(), NormaliseOptions::default()).unwrap()
}

type Headers = Vec<(String, Option<Vec<u8>>)>;

fn push(n: &mut Normaliser, payload: Option<&[u8]>, headers: &Headers) {
    let hs: Vec<(&str, Option<&[u8]>)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    n.push(
        &RawRecord {
            topic: "t",
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            key: None,
            payload,
            headers: &hs,
        },
        INGEST,
    );
}

/// Checks the one-message invariant and returns the output.
fn exactly_one_row(n: &mut Normaliser) -> Normalised {
    assert_eq!(n.buffered_rows(), 1);
    let out = n.finish().unwrap();
    let spec = SchemaSpec::preset().unwrap();
    let mut rows = 0;
    for (name, batch) in &out.tables {
        assert_eq!(batch.schema(), spec.tables[name].arrow_schema());
        rows += batch.num_rows();
    }
    if let Some(dlq) = &out.dlq {
        assert_eq!(dlq.schema(), dlq_schema());
        rows += dlq.num_rows();
    }
    assert_eq!(rows, 1);
    assert_eq!(out.good + out.bad.values().sum::<u64>(), 1);
    out
}

fn string(batch: &RecordBatch, name: &str) -> Option<String> {
    let col = cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
    let col = col.as_string::<i32>();
    col.is_valid(0).then(|| col.value(0).to_owned())
}

fn int64(batch: &RecordBatch, name: &str) -> i64 {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0)
}

fn micros(batch: &RecordBatch, name: &str) -> i64 {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>()
        .value(0)
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("traceparent".to_owned()),
        Just("content-type".to_owned()),
        Just("ce_id".to_owned()),
        Just("ce_type".to_owned()),
        Just("ce_time".to_owned()),
        Just("ce_specversion".to_owned()),
        "[a-z_]{1,8}",
    ]
}

fn headers() -> impl Strategy<Value = Headers> {
    let value = prop_oneof![
        Just(Some(b"application/cloudevents+json".to_vec())),
        Just(Some(b"PaymentAuthorized".to_vec())),
        Just(Some(b"2024-05-01T12:30:00Z".to_vec())),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    ];
    prop::collection::vec((header_name(), value), 0..4)
}

/// JSON values biased towards what the decoder looks at.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| v.to_string()),
        Just("1e400".to_owned()),
        Just("-0.0".to_owned()),
        Just("4111111111111111".to_owned()),
        prop_oneof![
            Just("PaymentAuthorized"),
            Just("OrderCreated"),
            Just("EUR"),
            Just("JPY"),
            Just("XXX"),
            Just("19.99"),
            Just("19.999"),
            Just("-1"),
            Just("2024-05-01T12:30:00+02:00"),
            Just("2024-02-30T00:00:00Z"),
            Just("4111 1111 1111 1111"),
            Just("1.0"),
            Just(""),
        ]
        .prop_map(|s| format!("{s:?}")),
        "[ -~]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..6).prop_map(|v| object(&v)),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "event_id",
            "event_type",
            "event_time",
            "source",
            "schema_version",
            "specversion",
            "id",
            "type",
            "time",
            "data",
            "traceparent",
            "payment_id",
            "merchant_id",
            "amount",
            "amount_minor",
            "currency",
            "card",
            "bin",
            "network",
            "installments",
            "risk_score",
            "decision_latency_ms",
            "order_id",
            "refund_id",
            "item_count",
        ])
        .prop_map(str::to_owned),
        "[a-z\"\\\\]{1,4}",
    ]
}

fn object(members: &[(String, String)]) -> String {
    let inner: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
        .collect();
    format!("{{{}}}", inner.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic and always yield exactly one row.
    #[test]
    fn arbitrary_bytes_yield_exactly_one_row(
        payload in prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        headers in headers(),
    ) {
        let mut n = normaliser();
        push(&mut n, payload.as_deref(), &headers);
        exactly_one_row(&mut n);
    }

    /// Arbitrary JSON objects built from the names the decoder looks for.
    #[test]
    fn arbitrary_objects_yield_exactly_one_row(
        members in prop::collection::vec((key(), json_value()), 0..12),
        headers in headers(),
    ) {
        let payload = object(&members);
        let mut n = normaliser();
        push(&mut n, Some(payload.as_bytes()), &headers);
        let out = exactly_one_row(&mut n);
        // Nothing written may hold a full card number.
        for (_, batch) in &out.tables {
            if let Some(extra) = string(batch, "extra") {
                prop_assert!(!extra.contains("4111111111111111"));
                serde_json::from_str::<serde_json::Value>(&extra).unwrap();
            }
        }
        if let Some(dlq) = &out.dlq {
            let raw = dlq.column_by_name("raw").unwrap().as_binary::<i32>().value(0);
            prop_assert!(!String::from_utf8_lossy(raw).contains("4111111111111111"));
        }
    }
}

const CURRENCIES: &[&str] = &[
    "EUR", "USD", "JPY", "KRW", "KWD", "BHD", "CLF", "GBP", "CHF",
];

#[derive(Debug, Clone)]
struct Event {
    id: String,
    event_type: &'static str,
    form: u8,
    currency: &'static str,
    minor: i64,
    /// 0: amount_minor integer, 1: amount decimal string, 2: amount JSON number.
    amount_form: u8,
    trailing_zeros: usize,
    time_us: i64,
    offset_minutes: i32,
    time_as_millis: bool,
}

fn decimal(minor: i64, exp: u8, trailing_zeros: usize) -> String {
    let scale = 10i64.pow(u32::from(exp));
    let mut s = (minor / scale).to_string();
    if exp > 0 || trailing_zeros > 0 {
        s.push('.');
        if exp > 0 {
            s.push_str(&format!(
                "{:0width$}",
                minor % scale,
                width = usize::from(exp)
            ));
        }
        s.push_str(&"0".repeat(trailing_zeros.max(usize::from(exp == 0))));
    }
    s
}

impl Event {
    fn time_json(&self) -> String {
        if self.time_as_millis {
            self.time_us.div_euclid(1000).to_string()
        } else {
            let offset = FixedOffset::east_opt(self.offset_minutes * 60).unwrap();
            let t = DateTime::from_timestamp_micros(self.time_us)
                .unwrap()
                .with_timezone(&offset);
            format!("{:?}", t.to_rfc3339_opts(SecondsFormat::AutoSi, false))
        }
    }

    fn expected_time(&self) -> i64 {
        if self.time_as_millis {
            self.time_us.div_euclid(1000) * 1000
        } else {
            self.time_us
        }
    }

    fn fields(&self) -> String {
        let exp = currency_exponent(self.currency).unwrap();
        let amount = match self.amount_form {
            0 => format!(r#""amount_minor":{}"#, self.minor),
            1 => format!(
                r#""amount":"{}""#,
                decimal(self.minor, exp, self.trailing_zeros)
            ),
            _ => format!(
                r#""amount":{}"#,
                decimal(self.minor, exp, self.trailing_zeros)
            ),
        };
        format!(
            r#""payment_id":"p-{id}","merchant_id":"m","currency":"{}",{amount},"card":{{"bin":"424242"}}"#,
            self.currency,
            id = self.id
        )
    }

    /// Payload and headers in the event's wire form.
    fn encode(&self) -> (String, Headers) {
        let time = self.time_json();
        match self.form {
            0 => (
                format!(
                    r#"{{"event_id":"{}","event_type":"{}","event_time":{time},{}}}"#,
                    self.id,
                    self.event_type,
                    self.fields()
                ),
                vec![],
            ),
            1 => (
                format!(
                    r#"{{"specversion":"1.0","id":"{}","type":"{}","source":"s","time":{time},"data":{{{}}}}}"#,
                    self.id,
                    self.event_type,
                    self.fields()
                ),
                vec![],
            ),
            _ => {
                let time: String = serde_json::from_str::<serde_json::Value>(&time)
                    .map(|v| match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .unwrap();
                (
                    format!("{{{}}}", self.fields()),
                    vec![
                        ("ce_specversion".into(), Some(b"1.0".to_vec())),
                        ("ce_id".into(), Some(self.id.clone().into_bytes())),
                        ("ce_type".into(), Some(self.event_type.as_bytes().to_vec())),
                        ("ce_source".into(), Some(b"s".to_vec())),
                        ("ce_time".into(), Some(time.into_bytes())),
                    ],
                )
            }
        }
    }
}

fn event() -> impl Strategy<Value = Event> {
    (
        "[A-Za-z0-9_-]{1,24}",
        prop::sample::select(vec![
            "PaymentAuthorized",
            "PaymentRejected",
            "PaymentCaptured",
            "PaymentFailed",
        ]),
        0u8..3,
        prop::sample::select(CURRENCIES.to_vec()),
        0i64..1_000_000_000_000,
        0u8..3,
        0usize..3,
        -2_000_000_000_000_000i64..5_000_000_000_000_000,
        -(14 * 60)..=(14 * 60),
        any::<bool>(),
    )
        .prop_map(
            |(
                id,
                event_type,
                form,
                currency,
                minor,
                amount_form,
                trailing_zeros,
                time_us,
                offset_minutes,
                time_as_millis,
            )| Event {
                id,
                event_type,
                form,
                currency,
                minor,
                amount_form,
                trailing_zeros,
                time_us,
                offset_minutes,
                time_as_millis,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Valid events in any wire form round-trip: ids, currency, amount, time.
    #[test]
    fn valid_events_round_trip(e in event()) {
        let (payload, headers) = e.encode();
        let mut n = normaliser();
        push(&mut n, Some(payload.as_bytes()), &headers);
        let out = exactly_one_row(&mut n);
        if let Some(dlq) = &out.dlq {
            prop_assert!(false, "{payload} went to the DLQ: {:?}", string(dlq, "error"));
        }
        let (table, batch) = &out.tables[0];
        prop_assert_eq!(table, "payments");
        prop_assert_eq!(string(batch, "event_id"), Some(e.id.clone()));
        prop_assert_eq!(string(batch, "event_type"), Some(e.event_type.to_owned()));
        prop_assert_eq!(string(batch, "payment_id"), Some(format!("p-{}", e.id)));
        prop_assert_eq!(string(batch, "currency"), Some(e.currency.to_owned()));
        prop_assert_eq!(int64(batch, "amount_minor"), e.minor);
        prop_assert_eq!(micros(batch, "event_time"), e.expected_time());
        prop_assert_eq!(string(batch, "card_bin"), Some("424242".to_owned()));
    }

    /// Decimal strings at any scale become exact minor units or are flagged inexact.
    #[test]
    fn decimal_amounts_scale_or_are_inexact(
        int_part in "[0-9]{1,12}",
        frac_part in "[0-9]{0,6}",
        currency in prop::sample::select(CURRENCIES.to_vec()),
    ) {
        let exp = usize::from(currency_exponent(currency).unwrap());
        let amount = if frac_part.is_empty() { int_part.clone() } else { format!("{int_part}.{frac_part}") };
        let payload = format!(
            r#"{{"event_id":"e","event_type":"PaymentAuthorized","event_time":0,"payment_id":"p","merchant_id":"m","currency":"{currency}","amount":"{amount}"}}"#
        );
        // Reference: digits beyond the exponent must all be zero.
        let (kept, dropped) = if frac_part.len() > exp {
            frac_part.split_at(exp)
        } else {
            (frac_part.as_str(), "")
        };
        let exact = dropped.bytes().all(|d| d == b'0');
        let expected: i128 = format!("{int_part}{kept:0<exp$}").parse().unwrap();

        let mut n = normaliser();
        push(&mut n, Some(payload.as_bytes()), &vec![]);
        let out = exactly_one_row(&mut n);
        match (&out.dlq, out.tables.first()) {
            (None, Some((_, batch))) => {
                prop_assert!(exact, "{amount} {currency} should be inexact");
                prop_assert_eq!(i128::from(int64(batch, "amount_minor")), expected);
            }
            (Some(dlq), None) => {
                prop_assert!(!exact, "{amount} {currency}: {:?}", string(dlq, "error"));
                prop_assert_eq!(string(dlq, "error_kind"), Some("inexact_amount".to_owned()));
                let message = string(dlq, "error").unwrap();
                prop_assert!(message.starts_with(&format!("$.amount: \"{amount}\" has ")), "{}", message);
                prop_assert!(message.ends_with(&format!("but {currency} allows {exp}")), "{}", message);
            }
            _ => prop_assert!(false, "expected exactly one row"),
        }
    }
}
