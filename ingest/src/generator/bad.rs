//! Bad records: a good event with exactly one defect, of one of the kinds of
//! `paystream_core::dlq::ErrorKind`. One defect per record makes the expected DLQ kind
//! independent of the order in which a decoder checks things.
//!
//! `Oversized` is never produced: it depends on the consumer's `max_message_bytes`, not on the
//! record.

use paystream_core::dlq::ErrorKind;
use rand::Rng;

use super::model::{self, CURRENCIES};
use super::wire::{self, Draft, EventTime, Value, WireForm};
use super::Headers;

/// The kinds the generator produces, evenly.
pub(crate) const KINDS: [ErrorKind; 10] = [
    ErrorKind::EmptyPayload,
    ErrorKind::InvalidUtf8,
    ErrorKind::InvalidJson,
    ErrorKind::MissingField,
    ErrorKind::UnknownEventType,
    ErrorKind::WrongType,
    ErrorKind::InvalidTimestamp,
    ErrorKind::InexactAmount,
    ErrorKind::NegativeAmount,
    ErrorKind::UnknownCurrency,
];

/// Types no table routes (the contract's types are case-sensitive, so none is a near-miss).
const UNKNOWN_TYPES: &[&str] = &[
    "PaymentVoided",
    "ChargebackOpened",
    "SubscriptionRenewed",
    "PayoutCreated",
];

/// Event times no RFC 3339 parser accepts: impossible dates and clocks, and free text (never
/// empty, which a decoder may fairly call a missing field).
const BAD_TIMES: &[&str] = &[
    "2024-02-30T12:00:00Z",
    "2024-13-01T00:00:00+01:00",
    "2024-03-17T25:61:00Z",
    "yesterday",
    "17/03/2024 10:15:00",
];

/// Codes that are not ISO 4217 currencies.
const UNKNOWN_CURRENCIES: &[&str] = &["XXX", "ZZZ", "EUX"];

/// Latin-1 text, as a service with the wrong encoding would send it: not UTF-8.
const LATIN1: &[&[u8]] = &[
    b"Caf\xe9 M\xfcller GmbH",
    b"Se\xf1or Precio",
    b"K\xf8benhavn Bikes",
];

/// Picks a kind of defect.
pub(crate) fn pick_kind<R: Rng>(rng: &mut R) -> ErrorKind {
    KINDS[rng.random_range(0..KINDS.len())]
}

/// Renders `draft` in `form` with the one defect `kind`. `currency` and `amount_minor` are the
/// event's true money, which the money defects rewrite.
pub(crate) fn corrupt<R: Rng>(
    rng: &mut R,
    kind: ErrorKind,
    mut draft: Draft,
    form: WireForm,
    currency: usize,
    amount_minor: i64,
) -> (Vec<u8>, Headers) {
    let exponent = CURRENCIES[currency].exponent;
    match kind {
        ErrorKind::EmptyPayload => {
            let (_, headers) = wire::render(&draft, form);
            return (Vec::new(), headers);
        }
        ErrorKind::InvalidJson => {
            let (mut payload, headers) = wire::render(&draft, form);
            // Any strict prefix of an object is invalid JSON; keep at least one byte so the
            // record is not an empty payload instead.
            let cut = rng.random_range(1..payload.len().max(2));
            payload.truncate(cut);
            return (payload, headers);
        }
        ErrorKind::InvalidUtf8 => {
            let text = LATIN1[rng.random_range(0..LATIN1.len())];
            draft.set("description", Value::Bytes(text.to_vec()));
        }
        ErrorKind::MissingField => draft.event_id = None,
        ErrorKind::UnknownEventType => {
            draft.event_type = UNKNOWN_TYPES[rng.random_range(0..UNKNOWN_TYPES.len())];
        }
        ErrorKind::WrongType => {
            if rng.random_bool(0.5) {
                draft.set("merchant_id", Value::Int(rng.random_range(1..2_000)));
            } else {
                draft.set_money(
                    "amount_minor",
                    Value::Object(vec![
                        ("value", Value::Int(amount_minor)),
                        ("currency", Value::Static(CURRENCIES[currency].code)),
                    ]),
                );
            }
        }
        ErrorKind::InvalidTimestamp => {
            draft.time = EventTime::Text(BAD_TIMES[rng.random_range(0..BAD_TIMES.len())].into());
        }
        ErrorKind::InexactAmount => {
            // One digit beyond the currency's exponent, never zero: "19.999" EUR, "1500.5" JPY.
            let digit = rng.random_range(1..10);
            let base = model::decimal(amount_minor, exponent);
            let text = if exponent == 0 {
                format!("{base}.{digit}")
            } else {
                format!("{base}{digit}")
            };
            let value = if rng.random_bool(0.7) {
                Value::Str(text)
            } else {
                Value::Raw(text)
            };
            draft.set_money("amount", value);
        }
        ErrorKind::NegativeAmount => {
            let negative = -amount_minor.max(1);
            let (key, value) = match rng.random_range(0..3) {
                0 => ("amount_minor", Value::Int(negative)),
                1 => ("amount", Value::Str(model::decimal(negative, exponent))),
                _ => ("amount", Value::Raw(model::decimal(negative, exponent))),
            };
            draft.set_money(key, value);
        }
        ErrorKind::UnknownCurrency => {
            let code = UNKNOWN_CURRENCIES[rng.random_range(0..UNKNOWN_CURRENCIES.len())];
            draft.set("currency", Value::Static(code));
            // Integer minor units need no exponent, so the currency is the only problem.
            draft.set_money("amount_minor", Value::Int(amount_minor));
        }
        ErrorKind::Oversized => {
            // Not generated (see the module docs); a good rendering is the honest fallback.
        }
    }
    wire::render(&draft, form)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn draft() -> Draft {
        Draft {
            event_type: "PaymentAuthorized",
            event_id: Some("e-1".into()),
            time: EventTime::Text("2024-03-17T10:15:00Z".into()),
            source: "payment-gateway",
            schema_version: "1.0",
            traceparent: format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16)),
            trace_in_body: false,
            fields: vec![
                ("payment_id", Value::Str("pay_1".into())),
                ("merchant_id", Value::Str("mer_00001".into())),
                ("amount", Value::Str("19.99".into())),
                ("currency", Value::Static("EUR")),
            ],
        }
    }

    fn data(payload: &[u8], form: WireForm) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        match form {
            WireForm::Structured => v["data"].clone(),
            _ => v,
        }
    }

    #[test]
    fn each_defect_is_the_only_one() {
        let mut rng = StdRng::seed_from_u64(4);
        let eur = CURRENCIES.iter().position(|c| c.code == "EUR").unwrap();
        for form in [WireForm::Plain, WireForm::Structured, WireForm::Binary] {
            for kind in KINDS {
                let (p, h) = corrupt(&mut rng, kind, draft(), form, eur, 1999);
                let hdr = |k: &str| h.iter().any(|(n, _)| *n == k);
                match kind {
                    ErrorKind::EmptyPayload => assert!(p.is_empty()),
                    ErrorKind::InvalidUtf8 => {
                        assert!(std::str::from_utf8(&p).is_err());
                    }
                    ErrorKind::InvalidJson => {
                        assert!(!p.is_empty() && std::str::from_utf8(&p).is_ok());
                        assert!(serde_json::from_slice::<serde_json::Value>(&p).is_err());
                    }
                    ErrorKind::MissingField => {
                        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
                        assert!(v.get("event_id").is_none() && v.get("id").is_none());
                        assert!(!hdr("ce_id"));
                    }
                    ErrorKind::WrongType => {
                        let d = data(&p, form);
                        if d["merchant_id"].is_number() {
                            assert_eq!(d["amount"], "19.99");
                        } else {
                            assert!(d["amount_minor"].is_object() && d.get("amount").is_none());
                            assert_eq!(d["merchant_id"], "mer_00001");
                        }
                    }
                    ErrorKind::InexactAmount => {
                        let d = data(&p, form);
                        let text = d["amount"].to_string();
                        assert!(text.trim_matches('"').starts_with("19.99"), "{text}");
                        assert_eq!(text.trim_matches('"').len(), 6);
                    }
                    ErrorKind::NegativeAmount => {
                        let d = data(&p, form);
                        let v = d.get("amount_minor").or(d.get("amount")).unwrap();
                        assert!(v.to_string().trim_matches('"').starts_with('-'));
                    }
                    ErrorKind::UnknownCurrency => {
                        let d = data(&p, form);
                        assert!(UNKNOWN_CURRENCIES.contains(&d["currency"].as_str().unwrap()));
                        assert_eq!(d["amount_minor"], 1999);
                    }
                    ErrorKind::UnknownEventType | ErrorKind::InvalidTimestamp => {
                        assert!(serde_json::from_slice::<serde_json::Value>(&p).is_ok());
                    }
                    ErrorKind::Oversized => unreachable!(),
                }
            }
        }
    }
}
