//! End-to-end tests of the normaliser: messages in, record batches out.

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Int32Type, Int64Type, TimestampMicrosecondType};
use paystream_core::schema::dlq_schema;

use super::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const T0: i64 = 1_714_566_600_000_000; // 2024-05-01T12:30:00Z
const INGEST: i64 = 1_714_600_000_000_000; // 2024-05-01T21:46:40Z

fn normaliser() -> Normaliser {
    Normaliser::try_new(&SchemaSpec::preset().unwrap(), NormaliseOptions::default()).unwrap()
}

fn rec<'a>(payload: &'a [u8], headers: &'a [(&'a str, Option<&'a [u8]>)]) -> RawRecord<'a> {
    RawRecord {
        topic: "payments",
        partition: 3,
        offset: 42,
        timestamp_ms: Some(1_714_566_601_000),
        key: Some(b"k1"),
        payload: Some(payload),
        headers,
    }
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = batch.column_by_name(name).unwrap();
    let col = cast(col, &DataType::Utf8).unwrap();
    let col = col.as_string::<i32>();
    (0..col.len())
        .map(|i| col.is_valid(i).then(|| col.value(i).to_owned()))
        .collect()
}

fn string(batch: &RecordBatch, name: &str) -> Option<String> {
    strings(batch, name).remove(0)
}

fn int64(batch: &RecordBatch, name: &str) -> Option<i64> {
    let col = batch.column_by_name(name).unwrap();
    let col = col.as_primitive::<Int64Type>();
    col.is_valid(0).then(|| col.value(0))
}

fn micros(batch: &RecordBatch, name: &str) -> Option<i64> {
    let col = batch.column_by_name(name).unwrap();
    let col = col.as_primitive::<TimestampMicrosecondType>();
    col.is_valid(0).then(|| col.value(0))
}

fn date(batch: &RecordBatch, name: &str) -> i32 {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Date32Type>()
        .value(0)
}

/// Decodes one message; returns the table batch or the DLQ batch.
fn one(
    payload: &[u8],
    headers: &[(&str, Option<&[u8]>)],
) -> (Option<(String, RecordBatch)>, Option<RecordBatch>) {
    let mut n = normaliser();
    n.push(&rec(payload, headers), INGEST);
    assert_eq!(n.buffered_rows(), 1);
    let out = n.finish().unwrap();
    assert_eq!(out.tables.len() + usize::from(out.dlq.is_some()), 1);
    (out.tables.into_iter().next(), out.dlq)
}

fn good(payload: &[u8], headers: &[(&str, Option<&[u8]>)]) -> (String, RecordBatch) {
    match one(payload, headers) {
        (Some(t), None) => t,
        (_, Some(dlq)) => panic!("went to the DLQ: {:?}", string(&dlq, "error")),
        _ => unreachable!(),
    }
}

/// The DLQ row's `(error_kind, error)`.
fn bad(payload: &[u8], headers: &[(&str, Option<&[u8]>)]) -> (String, String) {
    let (_, dlq) = one(payload, headers);
    let dlq = dlq.expect("expected a DLQ row");
    (
        string(&dlq, "error_kind").unwrap(),
        string(&dlq, "error").unwrap(),
    )
}

const DATA: &str = r#""payment_id":"pay_1","order_id":"ord_1","merchant_id":"m_9","customer_id":"c_5","amount":"19.99","currency":"EUR","payment_method":"card","card":{"bin":"411111","last4":"1111","network":"visa"},"country":"DE","risk_score":0.12,"decision_latency_ms":85,"installments":1"#;

fn check_payment(table: &str, batch: &RecordBatch) {
    assert_eq!(table, "payments");
    let spec = SchemaSpec::preset().unwrap();
    assert_eq!(batch.schema(), spec.tables["payments"].arrow_schema());
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(
        string(batch, "event_type").as_deref(),
        Some("PaymentAuthorized")
    );
    assert_eq!(micros(batch, "event_time"), Some(T0));
    assert_eq!(micros(batch, "ingest_time"), Some(INGEST));
    assert_eq!(
        micros(batch, "kafka_timestamp"),
        Some(1_714_566_601_000_000)
    );
    assert_eq!(string(batch, "kafka_topic").as_deref(), Some("payments"));
    assert_eq!(
        batch
            .column_by_name("kafka_partition")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        3
    );
    assert_eq!(int64(batch, "kafka_offset"), Some(42));
    assert_eq!(date(batch, "event_date"), 19844); // 2024-05-01
    assert_eq!(string(batch, "payment_id").as_deref(), Some("pay_1"));
    assert_eq!(int64(batch, "amount_minor"), Some(1999));
    assert_eq!(string(batch, "currency").as_deref(), Some("EUR"));
    assert_eq!(string(batch, "card_bin").as_deref(), Some("411111"));
    assert_eq!(string(batch, "card_network").as_deref(), Some("visa"));
    assert_eq!(string(batch, "country").as_deref(), Some("DE"));
    assert_eq!(int64(batch, "decision_latency_ms"), Some(85));
    assert_eq!(string(batch, "rejection_reason"), None);
}

#[test]
fn plain_event() {
    let body = format!(
        r#"{{"event_id":"evt_1","event_type":"PaymentAuthorized","event_time":"2024-05-01T14:30:00+02:00","source":"checkout","schema_version":"1",{DATA},"device":{{"os":"ios"}}}}"#
    );
    let headers: &[(&str, Option<&[u8]>)] = &[("traceparent", Some(TP.as_bytes()))];
    let (table, batch) = good(body.as_bytes(), headers);
    check_payment(&table, &batch);
    assert_eq!(string(&batch, "event_id").as_deref(), Some("evt_1"));
    assert_eq!(string(&batch, "source").as_deref(), Some("checkout"));
    assert_eq!(string(&batch, "schema_version").as_deref(), Some("1"));
    assert_eq!(
        string(&batch, "trace_id").as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(
        string(&batch, "span_id").as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert_eq!(string(&batch, "card_last4").as_deref(), Some("1111"));
    assert_eq!(
        string(&batch, "extra").as_deref(),
        Some(r#"{"device":{"os":"ios"}}"#)
    );
}

#[test]
fn structured_cloudevent() {
    let body = format!(
        r#"{{"specversion":"1.0","id":"evt_2","type":"PaymentAuthorized","source":"/checkout","time":1714566600000,"datacontenttype":"application/json","schemaversion":"3","traceparent":"{TP}","data":{{{DATA},"promo":"SPRING"}}}}"#
    );
    let (table, batch) = good(body.as_bytes(), &[]);
    check_payment(&table, &batch);
    assert_eq!(string(&batch, "event_id").as_deref(), Some("evt_2"));
    assert_eq!(string(&batch, "schema_version").as_deref(), Some("3"));
    assert_eq!(
        string(&batch, "span_id").as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert_eq!(
        string(&batch, "extra").as_deref(),
        Some(r#"{"promo":"SPRING"}"#)
    );
}

#[test]
fn binary_cloudevent() {
    let body = format!("{{{DATA}}}");
    let headers: &[(&str, Option<&[u8]>)] = &[
        ("ce_specversion", Some(b"1.0")),
        ("ce_id", Some(b"evt_3")),
        ("ce_type", Some(b"PaymentAuthorized")),
        ("ce_source", Some(b"/checkout")),
        ("ce_time", Some(b"2024-05-01T07:30:00-05:00")),
        ("traceparent", Some(b"not-a-traceparent")),
    ];
    let (table, batch) = good(body.as_bytes(), headers);
    check_payment(&table, &batch);
    assert_eq!(string(&batch, "event_id").as_deref(), Some("evt_3"));
    assert_eq!(string(&batch, "source").as_deref(), Some("/checkout"));
    // An invalid traceparent is only missing context, not a bad record.
    assert_eq!(string(&batch, "trace_id"), None);
    assert_eq!(string(&batch, "schema_version"), None);
}

#[test]
fn routes_by_type_and_orders_tables_by_name() {
    let mut n = normaliser();
    let refund = br#"{"event_id":"r","event_type":"RefundCreated","event_time":0,"refund_id":"rf","payment_id":"p","merchant_id":"m","amount_minor":500,"currency":"JPY","reason":"dup"}"#;
    let order = br#"{"event_id":"o","event_type":"OrderCreated","event_time":0,"order_id":"o1","merchant_id":"m","amount":12.5,"currency":"KWD","item_count":2,"channel":"web"}"#;
    n.push(&rec(refund, &[]), INGEST);
    n.push(&rec(order, &[]), INGEST);
    n.push(&rec(b"", &[]), INGEST);
    assert_eq!(n.buffered_rows(), 3);
    assert_eq!(n.buffered_bytes(), refund.len() + order.len());
    let out = n.finish().unwrap();
    let names: Vec<&str> = out.tables.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(names, ["orders", "refunds"]);
    let spec = SchemaSpec::preset().unwrap();
    for (name, batch) in &out.tables {
        assert_eq!(batch.schema(), spec.tables[name].arrow_schema());
    }
    assert_eq!(int64(&out.tables[0].1, "amount_minor"), Some(12_500));
    assert_eq!(int64(&out.tables[1].1, "amount_minor"), Some(500));
    assert_eq!(date(&out.tables[0].1, "event_date"), 0);
    assert_eq!(out.good, 2);
    assert_eq!(out.bad.get(&ErrorKind::EmptyPayload), Some(&1));
    assert_eq!(out.dlq.unwrap().schema(), dlq_schema());
    // Everything was handed over.
    assert_eq!((n.buffered_rows(), n.buffered_bytes()), (0, 0));
    let again = n.finish().unwrap();
    assert!(again.tables.is_empty() && again.dlq.is_none() && again.good == 0);
}

#[test]
fn every_error_kind_with_its_message() {
    let ok_env =
        r#""event_id":"e","event_type":"PaymentAuthorized","event_time":"2024-05-01T12:30:00Z""#;
    let base = r#""payment_id":"p","merchant_id":"m""#;
    let cases: Vec<(Vec<u8>, &str, String)> = vec![
        (b"".to_vec(), "empty_payload", "payload is empty".into()),
        (b"\xff{}".to_vec(), "invalid_utf8", "payload is not valid UTF-8: invalid byte at offset 0".into()),
        (b"{\"a\": }".to_vec(), "invalid_json", "invalid JSON at line 1 column 7: expected value".into()),
        (b"[1,2]".to_vec(), "invalid_json", "payload is an array, not a JSON object".into()),
        (b"{} {}".to_vec(), "invalid_json", "invalid JSON at line 1 column 4: trailing characters".into()),
        (br#"{"event_type":"PaymentAuthorized","event_time":1}"#.to_vec(), "missing_field", "$.event_id: required field missing".into()),
        (br#"{"event_id":"e","event_type":"Nope","event_time":1}"#.to_vec(), "unknown_event_type", r#"$.event_type: event type "Nope" is routed to no table"#.into()),
        (format!(r#"{{"event_id":"e","event_type":"PaymentAuthorized","event_time":"yesterday",{base}}}"#).into_bytes(), "invalid_timestamp", r#"$.event_time: "yesterday" is not RFC 3339 or epoch milliseconds"#.into()),
        (format!(r#"{{{ok_env},{base},"amount":"19.999","currency":"EUR"}}"#).into_bytes(), "inexact_amount", r#"$.amount: "19.999" has 3 decimal places but EUR allows 2"#.into()),
        (format!(r#"{{{ok_env},{base},"amount":-1,"currency":"EUR"}}"#).into_bytes(), "negative_amount", "$.amount: -1 is negative".into()),
        (format!(r#"{{{ok_env},{base},"amount":"1.00","currency":"XXX"}}"#).into_bytes(), "unknown_currency", r#"$.currency: unknown ISO 4217 code "XXX""#.into()),
        (format!(r#"{{{ok_env},{base},"amount_minor":100,"currency":"EUR","installments":"2"}}"#).into_bytes(), "wrong_type", r#"$.installments: expected an integer, found a string "2""#.into()),
        (format!(r#"{{{ok_env},"merchant_id":"m","amount_minor":100,"currency":"EUR"}}"#).into_bytes(), "missing_field", "$.payment_id: required field missing".into()),
        (br#"{"specversion":"1.0","id":"e","type":"PaymentAuthorized","time":1}"#.to_vec(), "missing_field", "$.data.payment_id: required field missing".into()),
        (br#"{"specversion":"1.0","id":"e","type":"PaymentAuthorized","time":1,"data":"x"}"#.to_vec(), "wrong_type", r#"$.data: expected an object, found a string "x""#.into()),
        (format!(r#"{{"specversion":"1.0","id":"e","type":"PaymentAuthorized","time":1,"data":{{{base},"amount":"1.5","currency":"JPY"}}}}"#).into_bytes(), "inexact_amount", r#"$.data.amount: "1.5" has 1 decimal places but JPY allows 0"#.into()),
    ];
    for (payload, kind, message) in cases {
        let (k, m) = bad(&payload, &[]);
        assert_eq!(
            (k.as_str(), m.as_str()),
            (kind, message.as_str()),
            "{}",
            String::from_utf8_lossy(&payload)
        );
    }
    // No payload at all.
    let mut n = normaliser();
    n.push(
        &RawRecord {
            payload: None,
            ..rec(b"", &[])
        },
        INGEST,
    );
    let dlq = n.finish().unwrap().dlq.unwrap();
    assert_eq!(
        string(&dlq, "error").as_deref(),
        Some("message has no payload")
    );
    assert!(dlq.column_by_name("raw").unwrap().is_null(0));
}

#[test]
fn oversized_payload() {
    let opts = NormaliseOptions {
        max_message_bytes: 16,
        ..Default::default()
    };
    let mut n = Normaliser::try_new(&SchemaSpec::preset().unwrap(), opts).unwrap();
    n.push(&rec(&[b' '; 17], &[]), INGEST);
    n.push(&rec(b"{}", &[]), INGEST);
    let out = n.finish().unwrap();
    let dlq = out.dlq.unwrap();
    assert_eq!(
        strings(&dlq, "error")[0].as_deref(),
        Some("payload is 17 bytes, over max_message_bytes 16")
    );
    assert_eq!(strings(&dlq, "error_kind")[0].as_deref(), Some("oversized"));
    assert_eq!(out.bad.get(&ErrorKind::Oversized), Some(&1));
    assert_eq!(out.bad.get(&ErrorKind::MissingField), Some(&1));
}

#[test]
fn dlq_row_keeps_the_record_and_masks_card_numbers() {
    let payload = br#"{"event_id":"e","event_type":"PaymentAuthorized","event_time":"2024-05-01T12:30:00Z","payment_id":"p","merchant_id":"m","currency":"EUR","amount":"4111111111111111.001"}"#;
    let headers: &[(&str, Option<&[u8]>)] =
        &[("traceparent", Some(TP.as_bytes())), ("bin", Some(b"\xff"))];
    let (_, dlq) = one(payload, headers);
    let dlq = dlq.unwrap();
    assert_eq!(dlq.schema(), dlq_schema());
    let raw = dlq
        .column_by_name("raw")
        .unwrap()
        .as_binary::<i32>()
        .value(0)
        .to_vec();
    let raw = String::from_utf8(raw).unwrap();
    assert!(!raw.contains("4111111111111111"), "{raw}");
    assert!(raw.contains(r#""amount":"************1111.001""#), "{raw}");
    assert_eq!(
        string(&dlq, "error").as_deref(),
        Some(r#"$.amount: "************1111.001" has 3 decimal places but EUR allows 2"#)
    );
    assert_eq!(
        string(&dlq, "error_kind").as_deref(),
        Some("inexact_amount")
    );
    assert_eq!(
        string(&dlq, "headers").as_deref(),
        Some(format!(r#"{{"traceparent":"{TP}","bin":"b64:/w=="}}"#).as_str())
    );
    assert_eq!(
        dlq.column_by_name("key")
            .unwrap()
            .as_binary::<i32>()
            .value(0),
        b"k1"
    );
    assert_eq!(string(&dlq, "kafka_topic").as_deref(), Some("payments"));
    assert_eq!(int64(&dlq, "kafka_offset"), Some(42));
    assert_eq!(micros(&dlq, "kafka_timestamp"), Some(1_714_566_601_000_000));
    assert_eq!(micros(&dlq, "received_at"), Some(INGEST));
    assert_eq!(date(&dlq, "event_date"), 19844);
}

#[test]
fn extra_masks_card_numbers_and_can_be_off() {
    let body = br#"{"event_id":"e","event_type":"PaymentAuthorized","event_time":0,"payment_id":"p","merchant_id":"m","amount_minor":1,"currency":"EUR","card":{"number":"4111 1111 1111 1111","bin":"411111"},"pan":5555555555554444}"#;
    let (_, batch) = good(body, &[]);
    let extra = string(&batch, "extra").unwrap();
    assert_eq!(
        extra,
        r#"{"card":{"number":"**** **** **** 1111"},"pan":"************4444"}"#
    );
    serde_json::from_str::<serde_json::Value>(&extra).unwrap();

    let opts = NormaliseOptions {
        keep_extra: false,
        ..Default::default()
    };
    let mut n = Normaliser::try_new(&SchemaSpec::preset().unwrap(), opts).unwrap();
    n.push(&rec(body, &[]), INGEST);
    let out = n.finish().unwrap();
    assert_eq!(string(&out.tables[0].1, "extra"), None);
    assert_eq!(
        string(&out.tables[0].1, "card_bin").as_deref(),
        Some("411111")
    );
}

#[test]
fn minimal_event_has_nulls_and_no_extra() {
    let body = br#"{"event_id":"e","event_type":"PaymentRejected","event_time":-86400001,"payment_id":"p","merchant_id":"m","amount_minor":0,"currency":"USD","rejection_reason":"fraud_suspected"}"#;
    let (_, batch) = good(body, &[]);
    assert_eq!(string(&batch, "extra"), None);
    assert_eq!(string(&batch, "source"), None);
    assert_eq!(string(&batch, "customer_id"), None);
    assert_eq!(
        string(&batch, "rejection_reason").as_deref(),
        Some("fraud_suspected")
    );
    assert_eq!(date(&batch, "event_date"), -2);
    assert_eq!(int64(&batch, "amount_minor"), Some(0));
}

#[test]
fn ambiguous_routes_and_bad_mappings_are_refused() {
    let mut spec = SchemaSpec::preset().unwrap();
    let mut t = spec.tables["orders"].clone();
    t.name = "orders2".into();
    spec.tables.insert("orders2".into(), t);
    let err = Normaliser::try_new(&spec, NormaliseOptions::default())
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        r#"event type "OrderCreated" is routed to both table orders and table orders2"#
    );
}

#[test]
fn normaliser_can_move_to_a_worker_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Normaliser>();
    assert_send::<Normalised>();
}
