//! Golden tests of config diagnostics: every `tests/configs/broken/NAME.toml` must be refused
//! with exactly the lines of `NAME.expected`. Run with `UPDATE_EXPECT=1` to (re)write the
//! `.expected` files from the current output, then review the diff.
//!
//! Also checks that the shipped `pipelines.toml` loads, and a few good configs in full.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use paystream_core::config::{
    self, Config, SinkConfig, SourceConfig, StartFrom, TransformConfig, WindowKind,
};

const BROKEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/configs/broken");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../pipelines.toml");

/// The environment the broken configs see: fixed, so the goldens do not depend on the host.
fn test_env(name: &str) -> Option<String> {
    match name {
        "KAFKA_PASSWORD" => Some("hunter2-from-env".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn diagnostics_of(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    match config::from_str(&text, &name, &test_env) {
        Ok(_) => "(accepted)\n".to_owned(),
        Err(d) => format!("{d}\n"),
    }
}

#[test]
fn broken_configs_report_the_expected_diagnostics() {
    let update = std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
    let mut configs: Vec<PathBuf> = fs::read_dir(BROKEN)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 25, "only {} broken configs", configs.len());

    let mut failures = Vec::new();
    for toml_path in &configs {
        let actual = diagnostics_of(toml_path);
        let expected_path = toml_path.with_extension("expected");
        if update {
            fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let Ok(expected) = fs::read_to_string(&expected_path) else {
            failures.push(format!(
                "{} has no .expected file (run with UPDATE_EXPECT=1 to create it)",
                toml_path.display()
            ));
            continue;
        };
        if actual == "(accepted)\n" {
            failures.push(format!("{} was accepted", toml_path.display()));
        } else if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                toml_path.display()
            ));
        }
    }
    // An .expected left behind by a removed config is a stale golden.
    for entry in fs::read_dir(BROKEN).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "expected") && !p.with_extension("toml").exists() {
            failures.push(format!("{} has no .toml", p.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn secrets_never_reach_diagnostics() {
    for entry in fs::read_dir(BROKEN).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let out = diagnostics_of(&p);
            assert!(!out.contains("hunter2"), "{}: {out}", p.display());
        }
    }
}

#[test]
fn the_shipped_pipelines_toml_loads_with_its_defaults() {
    let text = fs::read_to_string(SHIPPED).unwrap();
    // As if none of its variables were set.
    let config = config::from_str(&text, "pipelines.toml", &|_| None)
        .unwrap_or_else(|d| panic!("pipelines.toml refused:\n{d}"));
    assert_eq!(config.pipeline.name, "paystream");
    let SourceConfig::Kafka(kafka) = &config.sources["kafka"] else {
        panic!("not a kafka source")
    };
    assert_eq!(kafka.brokers, "localhost:9092");
    assert_eq!(kafka.topics, ["payments", "orders", "refunds"]);
    assert_eq!(kafka.group_id, "paystream");
    assert_eq!(kafka.start_from, StartFrom::Earliest);
    assert_eq!(kafka.fetch_wait_max, Duration::from_millis(100));
    let SinkConfig::Delta(lake) = &config.sinks["lake"];
    assert_eq!(lake.inputs, ["kafka"]);
    assert_eq!(lake.uri, "./lake");
    assert_eq!(lake.target_file_size, 128 << 20);
    assert_eq!(lake.max_latency, Duration::from_secs(2));
    // The per-minute business metrics, each a one-minute tumbling window reading the source.
    let windows: Vec<&str> = config.transforms.keys().map(String::as_str).collect();
    assert_eq!(
        windows,
        [
            "orders_by_channel",
            "payment_decisions",
            "payment_volume",
            "refunds_per_minute",
            "rejections_by_reason"
        ]
    );
    for (id, t) in &config.transforms {
        let TransformConfig::Window(w) = t else {
            panic!("transforms.{id} is not a window")
        };
        assert_eq!(w.inputs, ["kafka"], "{id}");
        assert_eq!(
            w.window,
            WindowKind::Tumbling {
                size: Duration::from_secs(60)
            },
            "{id}"
        );
        assert_eq!(w.table, *id);
        assert!(w.metrics, "{id}");
    }
    assert_eq!(config.schema.tables.len(), 3);

    // And through `load`, with the process environment (KAFKA_BROKERS may be set by CI).
    let loaded = config::load(Path::new(SHIPPED)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.sinks.len(), 1);
}

#[test]
fn the_shipped_pipelines_toml_takes_its_environment() {
    let text = fs::read_to_string(SHIPPED).unwrap();
    let env = |name: &str| match name {
        "KAFKA_BROKERS" => Some("k1:9092,k2:9092".to_owned()),
        "LAKE_URI" => Some("s3://paystream-lake/prod".to_owned()),
        _ => None,
    };
    let config = config::from_str(&text, "pipelines.toml", &env).unwrap();
    let SourceConfig::Kafka(kafka) = &config.sources["kafka"] else {
        panic!("not a kafka source")
    };
    assert_eq!(kafka.brokers, "k1:9092,k2:9092");
    let SinkConfig::Delta(lake) = &config.sinks["lake"];
    assert_eq!(lake.uri, "s3://paystream-lake/prod");
}

#[test]
fn load_names_a_missing_file() {
    let err = config::load(Path::new("/nonexistent/pipelines.toml")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/pipelines.toml"),
        "{err}"
    );
}

#[test]
fn load_reports_diagnostics_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    fs::write(&path, "[pipeline]\nnmae = \"x\"\n").unwrap();
    let err = config::load(&path).unwrap_err();
    let paystream_core::Error::Config(diags) = &err else {
        panic!("expected config diagnostics, got {err}");
    };
    let typo = diags
        .iter()
        .find(|d| d.key == "pipeline.nmae")
        .unwrap_or_else(|| panic!("no diagnostic for the typo in:\n{diags}"));
    assert_eq!(typo.file, path.display().to_string());
    assert_eq!((typo.line, typo.column), (2, 1));
    assert_eq!(typo.message, "unknown key `nmae`, did you mean `name`?");
    // Also refused: no source, no sink; all reported together.
    assert_eq!(diags.len(), 3, "{diags}");
}

const FULL: &str = r#"
[pipeline]
name = "payments-eu.v2"

[sources.in]
type = "kafka"
brokers = "a:9092, b:9093"
topics = ["payments"]
group_id = "g"
start_from = "latest"
batch_max_events = "${BATCH:-5000}"
batch_max_wait = "1m30s"
max_message_bytes = "64KiB"
fetch_wait_max = "10ms"

[sources.in.librdkafka]
security.protocol = "SASL_SSL"
"sasl.password" = "${KAFKA_PASSWORD}"
"session.timeout.ms" = 45000
"enable.partition.eof" = false
"ssl.key.pem" = "-----BEGIN PRIVATE KEY-----"

[transforms.big]
type = "sql"
inputs = ["in"]
sql = "SELECT * FROM input WHERE amount_minor > 100000"

[sinks.lake]
type = "delta"
inputs = ["in", "big"]
uri = "s3://lake-bucket/prefix"
target_file_size = "1.5GiB"
max_latency = "500ms"
max_buffer_bytes = "1GB"

[sinks.lake.s3]
endpoint = "${AWS_ENDPOINT_URL:-http://localhost:9000}"
region = "${AWS_REGION:-}"
access_key_id = "AKIA-TEST"
secret_access_key = "${AWS_SECRET_ACCESS_KEY:-s3cr3t-value}"
allow_http = "${AWS_ALLOW_HTTP:-true}"

[schema.tables.chargebacks]
event_types = ["ChargebackOpened"]
columns = [
  { name = "chargeback_id", type = "string", required = true },
  { name = "amount_minor", type = "money", fields = ["amount"], currency = "currency" },
  { name = "currency", type = "currency" },
]
"#;

fn full() -> Config {
    let env = |name: &str| match name {
        "KAFKA_PASSWORD" => Some("hunter2".to_owned()),
        _ => None,
    };
    config::from_str(FULL, "full.toml", &env).unwrap_or_else(|d| panic!("{d}"))
}

#[test]
fn a_full_config_reads_every_key() {
    let c = full();
    assert_eq!(c.file, "full.toml");
    assert_eq!(c.pipeline.name, "payments-eu.v2");
    let SourceConfig::Kafka(k) = &c.sources["in"] else {
        panic!("not a kafka source")
    };
    assert_eq!(k.brokers, "a:9092,b:9093");
    assert_eq!(k.group_id, "g");
    assert_eq!(k.start_from, StartFrom::Latest);
    assert_eq!(k.batch_max_events, 5000);
    assert_eq!(k.batch_max_wait, Duration::from_secs(90));
    assert_eq!(k.max_message_bytes, 64 * 1024);
    assert_eq!(k.fetch_wait_max, Duration::from_millis(10));
    let props: BTreeMap<&str, &str> = k
        .librdkafka
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(props["security.protocol"], "SASL_SSL");
    assert_eq!(props["sasl.password"], "hunter2");
    assert_eq!(props["session.timeout.ms"], "45000");
    assert_eq!(props["enable.partition.eof"], "false");

    let SinkConfig::Delta(d) = &c.sinks["lake"];
    assert_eq!(d.inputs, ["in", "big"]);
    assert_eq!(d.target_file_size, 3 << 29);
    assert_eq!(d.max_latency, Duration::from_millis(500));
    assert_eq!(d.max_buffer_bytes, 1_000_000_000);
    assert_eq!(d.s3.endpoint.as_deref(), Some("http://localhost:9000"));
    assert_eq!(d.s3.region, None, "an empty string is not set");
    assert_eq!(
        d.s3.access_key_id.as_ref().map(|s| s.expose()),
        Some("AKIA-TEST")
    );
    assert_eq!(d.s3.session_token, None);
    assert!(d.s3.allow_http);

    assert_eq!(c.transforms["big"].inputs(), ["in"]);
    assert_eq!(c.schema.tables.len(), 4);
    assert_eq!(c.schema.tables["chargebacks"].name, "chargebacks");
}

#[test]
fn debug_of_a_config_shows_no_secret() {
    let c = full();
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("s3cr3t-value"), "{debug}");
    assert!(!debug.contains("AKIA-TEST"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(debug.contains("***"));
    let SourceConfig::Kafka(k) = &c.sources["in"] else {
        panic!("not a kafka source")
    };
    let shown = k.redacted_properties();
    assert!(shown.contains(&("sasl.password".to_owned(), "***".to_owned())));
    assert!(shown.contains(&("ssl.key.pem".to_owned(), "***".to_owned())));
    assert!(shown.contains(&("security.protocol".to_owned(), "SASL_SSL".to_owned())));
    assert!(shown.contains(&("session.timeout.ms".to_owned(), "45000".to_owned())));
}
