//! Decoder throughput on realistic ~370-byte `PaymentAuthorized` events, in each wire form.
//!
//! One iteration decodes a batch of distinct events (ids, amounts, currencies and times vary,
//! as in real traffic) and finishes it into record batches, so the figure includes building
//! the Arrow arrays. Run: `cargo bench -p paystream-ingest --bench decode`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use paystream_core::record::RawRecord;
use paystream_core::schema::SchemaSpec;
use paystream_ingest::decode::{NormaliseOptions, Normaliser};

const BATCH: usize = 4096;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Builds the `i`-th message of a wire form.
type MakeMessage = fn(usize) -> Message;

struct Message {
    payload: Vec<u8>,
    headers: Vec<(&'static str, Option<Vec<u8>>)>,
}

/// The event's own fields, varied by `i`.
fn data(i: usize) -> String {
    let (currency, amount) = match i % 4 {
        0 => ("EUR", format!("\"{}.{:02}\"", 10 + i % 500, i % 100)),
        1 => ("USD", format!("{}.{:02}", 5 + i % 900, (i * 7) % 100)),
        2 => ("JPY", format!("\"{}\"", 500 + i % 20_000)),
        _ => ("GBP", format!("\"{}.{:02}\"", 1 + i % 300, (i * 3) % 100)),
    };
    format!(
        r#""payment_id":"p{i:07}","order_id":"o{o:07}","merchant_id":"m{m:04}","customer_id":"c{c:06}","amount":{amount},"currency":"{currency}","payment_method":"card","card":{{"bin":"411111","last4":"{l:04}","network":"visa"}},"country":"DE","risk_score":0.{r:03},"decision_latency_ms":{d},"installments":1"#,
        o = i * 31 % 10_000_000,
        m = i % 977,
        c = i * 13 % 1_000_000,
        l = i % 10_000,
        r = i % 1000,
        d = 20 + i % 180,
    )
}

fn time(i: usize) -> String {
    format!(
        "2024-05-01T{:02}:{:02}:{:02}.{:03}Z",
        i / 3600 % 24,
        i / 60 % 60,
        i % 60,
        i % 1000
    )
}

fn plain(i: usize) -> Message {
    let payload = format!(
        r#"{{"event_id":"e{i:09}","event_type":"PaymentAuthorized","event_time":"{}","source":"checkout","schema_version":"1",{}}}"#,
        time(i),
        data(i)
    );
    Message {
        payload: payload.into_bytes(),
        headers: vec![("traceparent", Some(TRACEPARENT.as_bytes().to_vec()))],
    }
}

fn structured(i: usize) -> Message {
    let payload = format!(
        r#"{{"specversion":"1.0","id":"e{i:09}","type":"PaymentAuthorized","source":"checkout","time":"{}","traceparent":"{TRACEPARENT}","data":{{{}}}}}"#,
        time(i),
        data(i)
    );
    Message {
        payload: payload.into_bytes(),
        headers: vec![],
    }
}

fn binary(i: usize) -> Message {
    Message {
        payload: format!("{{{}}}", data(i)).into_bytes(),
        headers: vec![
            ("ce_specversion", Some(b"1.0".to_vec())),
            ("ce_id", Some(format!("e{i:09}").into_bytes())),
            ("ce_type", Some(b"PaymentAuthorized".to_vec())),
            ("ce_source", Some(b"checkout".to_vec())),
            ("ce_time", Some(time(i).into_bytes())),
            ("traceparent", Some(TRACEPARENT.as_bytes().to_vec())),
        ],
    }
}

/// One message's Kafka headers, borrowed as `RawRecord` wants them.
type Headers<'a> = Vec<(&'a str, Option<&'a [u8]>)>;

/// The messages as the Kafka source hands them over: borrowed header lists, built once.
fn header_lists(messages: &[Message]) -> Vec<Headers<'_>> {
    messages
        .iter()
        .map(|m| m.headers.iter().map(|(k, v)| (*k, v.as_deref())).collect())
        .collect()
}

fn run(n: &mut Normaliser, messages: &[Message], headers: &[Headers<'_>]) {
    for (i, (m, headers)) in messages.iter().zip(headers).enumerate() {
        let rec = RawRecord {
            topic: "payments",
            partition: 0,
            offset: i as i64,
            timestamp_ms: Some(1_714_566_600_000),
            key: None,
            payload: Some(&m.payload),
            headers,
        };
        n.push(&rec, 1_714_566_600_000_000);
    }
    let out = n.finish().expect("finish");
    assert_eq!(
        out.good as usize,
        messages.len(),
        "bad records: {:?}",
        out.bad
    );
    black_box(out);
}

fn bench(c: &mut Criterion) {
    let spec = SchemaSpec::preset().expect("preset");
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let forms: [(&str, MakeMessage); 3] = [
        ("plain", plain),
        ("structured", structured),
        ("binary", binary),
    ];
    for (name, make) in forms {
        let messages: Vec<Message> = (0..BATCH).map(make).collect();
        let avg = messages.iter().map(|m| m.payload.len()).sum::<usize>() / BATCH;
        println!("{name}: average payload {avg} bytes");
        let mut n = Normaliser::try_new(&spec, NormaliseOptions::default()).expect("normaliser");
        let headers = header_lists(&messages);
        group.bench_function(name, |b| b.iter(|| run(&mut n, &messages, &headers)));
    }
    group.finish();
}

/// CPU time this thread has run, from the scheduler's own accounting: unlike wall time it does
/// not count the time other processes held the core, so figures stay comparable on a busy
/// machine.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Prints events per CPU-second for each form (Linux only).
fn cpu_time_report() {
    let Some(_) = thread_cpu() else { return };
    let spec = SchemaSpec::preset().expect("preset");
    let forms: [(&str, MakeMessage); 3] = [
        ("plain", plain),
        ("structured", structured),
        ("binary", binary),
    ];
    for (name, make) in forms {
        let messages: Vec<Message> = (0..BATCH).map(make).collect();
        let mut n = Normaliser::try_new(&spec, NormaliseOptions::default()).expect("normaliser");
        let headers = header_lists(&messages);
        run(&mut n, &messages, &headers);
        let rounds = 100;
        let Some(start) = thread_cpu() else { return };
        for _ in 0..rounds {
            run(&mut n, &messages, &headers);
        }
        let Some(end) = thread_cpu() else { return };
        let secs = (end - start).as_secs_f64();
        let events = (rounds * BATCH) as f64;
        println!(
            "cpu-time {name}: {:.0}k events per CPU-second ({:.0} ns/event)",
            events / secs / 1e3,
            secs * 1e9 / events
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    cpu_time_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
