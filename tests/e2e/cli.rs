//! The user-facing commands around the pipeline: `paystream query` answers what readers we
//! did not write see in the lake, in each output format; `paystream validate` accepts the
//! shipped config and points at the exact line of each mistake in a broken one.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Finished, Lake, Proc, Scenario, Topics};

const PAYMENT_SUMS: &str =
    "SELECT currency, sum(amount_minor) AS total FROM payments GROUP BY currency ORDER BY currency";
const DLQ_KINDS: &str = "SELECT error_kind, count(*) AS n FROM dlq GROUP BY error_kind";

fn query(s: &Scenario, format: &str, sql: &str) -> String {
    let mut cmd = s.paystream();
    cmd.args(["query", "--lake", &s.lake_uri, "--format", format, sql]);
    Proc::spawn("query", cmd, s.dir())
        .expect_success(Duration::from_secs(120))
        .stdout
}

/// An integer cell, whether a writer emitted it as a JSON number or a string.
fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Rows of `--format json`: one object per line (a single JSON array is accepted too).
fn json_rows(out: &str) -> Vec<serde_json::Map<String, Value>> {
    let values: Vec<Value> = match serde_json::from_str::<Value>(out.trim()) {
        Ok(Value::Array(rows)) => rows,
        _ => out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect(),
    };
    values
        .into_iter()
        .map(|v| match v {
            Value::Object(m) => m,
            other => panic!("a JSON row is not an object: {other}"),
        })
        .collect()
}

/// `key` column -> integer `value` column of JSON rows.
fn json_map(out: &str, key: &str, value: &str) -> BTreeMap<String, i64> {
    json_rows(out)
        .iter()
        .map(|row| {
            let k = row[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} is not a string in {row:?}"));
            (k.to_string(), int(&row[value]))
        })
        .collect()
}

/// Header and rows of `--format csv` (cells here never need quoting, but quotes are removed).
fn csv_rows(out: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let split = |l: &str| -> Vec<String> {
        l.split(',')
            .map(|c| c.trim().trim_matches('"').to_string())
            .collect()
    };
    let header = split(lines.next().unwrap_or_else(|| panic!("empty CSV output")));
    (header, lines.map(split).collect())
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn query_cli() {
    let events = 5_000;
    let s = Scenario::new("query", Lake::Local);
    let topics = Topics {
        payments: 3,
        orders: 1,
        refunds: 1,
    };
    s.ingest(topics, events, 21);
    let sums_path = s.dir().join("sums.json");
    s.check_lake(Some(&sums_path));

    // What Python's deltalake reader summed (and check_lake.py matched to the generator).
    let expected: BTreeMap<String, i64> = read_json(&sums_path)["payments"]
        .as_object()
        .unwrap_or_else(|| panic!("no payments sums in {}", sums_path.display()))
        .iter()
        .map(|(k, v)| (k.clone(), int(v)))
        .collect();
    assert!(!expected.is_empty(), "the generator produced no payments");

    let json = query(&s, "json", PAYMENT_SUMS);
    assert_eq!(
        json_map(&json, "currency", "total"),
        expected,
        "--format json:\n{json}"
    );

    let csv = query(&s, "csv", PAYMENT_SUMS);
    let (header, rows) = csv_rows(&csv);
    assert_eq!(header, ["currency", "total"], "--format csv:\n{csv}");
    let from_csv: BTreeMap<String, i64> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 2, "CSV row {r:?}");
            let total = r[1]
                .parse()
                .unwrap_or_else(|e| panic!("CSV total {:?} is not an integer: {e}", r[1]));
            (r[0].clone(), total)
        })
        .collect();
    assert_eq!(from_csv, expected, "--format csv:\n{csv}");
    let currencies: Vec<&String> = rows.iter().map(|r| &r[0]).collect();
    assert!(
        currencies.is_sorted(),
        "ORDER BY currency not kept: {currencies:?}"
    );

    let table = query(&s, "table", PAYMENT_SUMS);
    for (currency, total) in &expected {
        assert!(
            table
                .lines()
                .any(|l| l.contains(currency.as_str()) && l.contains(&total.to_string())),
            "--format table lacks {currency} {total}:\n{table}"
        );
    }

    let summary = read_json(&s.summary_path());
    let bad: BTreeMap<String, i64> = summary["bad"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), int(v)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default();
    let dlq = query(&s, "json", DLQ_KINDS);
    assert_eq!(
        json_map(&dlq, "error_kind", "n"),
        bad,
        "dlq by error_kind:\n{dlq}"
    );
}

fn validate(config: &Path, dir: &Path) -> Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paystream"));
    cmd.arg("validate").arg("-c").arg(config);
    Proc::spawn("validate", cmd, dir).finish(Duration::from_secs(60))
}

/// Whether `stderr` has a diagnostic `<file_name>:<line>:<column>:` for `line`.
fn points_at(stderr: &str, file_name: &str, line: usize) -> bool {
    let needle = format!("{file_name}:{line}:");
    stderr.match_indices(&needle).any(|(i, _)| {
        let rest = &stderr[i + needle.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(':')
    })
}

/// A config with two mistakes, on lines 12 (an input that names nothing) and 14 (a duration
/// that is not one).
const BROKEN: &str = r#"[pipeline]
name = "broken"

[sources.kafka]
type = "kafka"
brokers = "127.0.0.1:9092"
topics = ["payments"]
group_id = "g"

[sinks.lake]
type = "delta"
inputs = ["kafak"]
uri = "lake"
max_latency = "soon"
"#;

#[test]
fn validate_cli() {
    // Pure validation needs no service, so this test runs under plain `cargo test` too.
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines.toml");
    let ok = validate(&shipped, dir.path());
    assert!(
        ok.status.success(),
        "the shipped pipelines.toml does not validate ({}):\n{}",
        ok.status,
        ok.stderr
    );

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, BROKEN).unwrap();
    let bad = validate(&broken, dir.path());
    assert!(
        !bad.status.success(),
        "a broken config validated:\n{}",
        bad.stdout
    );
    for line in [12, 14] {
        assert!(
            points_at(&bad.stderr, "broken.toml", line),
            "no diagnostic at broken.toml:{line}:<column> in:\n{}",
            bad.stderr
        );
    }
    assert!(
        bad.stderr.contains("kafak"),
        "the unknown input is not named:\n{}",
        bad.stderr
    );

    // A window whose SQL cannot run is refused by validate, not on the first event.
    let windows = dir.path().join("windows.toml");
    let mut text = std::fs::read_to_string(&shipped).unwrap();
    text.push_str(
        r#"
[transforms.bad_column]
type = "window"
inputs = ["kafka"]
window = "tumbling"
size = "1m"
sql = "SELECT merchant, count(*) AS n FROM payments GROUP BY merchant"

[transforms.arrival_order]
type = "window"
inputs = ["kafka"]
window = "tumbling"
size = "1m"
sql = "SELECT currency, first_value(amount_minor) AS first FROM payments GROUP BY currency"

[transforms.no_position]
type = "sql"
inputs = ["kafka"]
sql = "SELECT currency, event_time FROM payments"

[transforms.same_table]
type = "window"
inputs = ["kafka"]
window = "tumbling"
size = "1m"
table = "payment_volume"
sql = "SELECT currency, count(*) AS n FROM payments GROUP BY currency"
"#,
    );
    std::fs::write(&windows, text).unwrap();
    let bad = validate(&windows, dir.path());
    assert!(!bad.status.success(), "windows that cannot run validated");
    for needle in [
        "transforms.bad_column: sql",
        "merchant",
        "transforms.arrival_order: sql",
        "first_value",
        "transforms.no_position: sql",
        "kafka_topic, kafka_partition, kafka_offset",
        "transforms.same_table.table: `payment_volume` is already the table of transforms.payment_volume",
    ] {
        assert!(
            bad.stderr.contains(needle),
            "{needle:?} missing from:\n{}",
            bad.stderr
        );
    }

    let syntax = dir.path().join("syntax.toml");
    std::fs::write(
        &syntax,
        "[pipeline]\nname = \"x\"\n[sources.kafka\ntype = \"kafka\"\n",
    )
    .unwrap();
    let bad = validate(&syntax, dir.path());
    assert!(
        !bad.status.success(),
        "a config with a syntax error validated"
    );
    assert!(
        points_at(&bad.stderr, "syntax.toml", 3),
        "no diagnostic at syntax.toml:3:<column> in:\n{}",
        bad.stderr
    );
}

#[test]
fn points_at_reads_file_line_column() {
    assert!(points_at(
        "x/broken.toml:12:5: sinks.lake.inputs: …",
        "broken.toml",
        12
    ));
    assert!(!points_at("broken.toml:12: no column", "broken.toml", 12));
    assert!(!points_at("broken.toml:120:5: …", "broken.toml", 12));
}
