//! Traces: the official OpenTelemetry SDK (gRPC and HTTP exporters) sending spans to an otlp
//! source, each stored exactly once; bad OTLP input refused with the right codes; and the
//! pipeline's own batch spans, exported to a second paystream, linked to the producers' traces,
//! with `payments JOIN spans ON trace_id` answering through `paystream query`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{free_port, toml_str, Lake, Proc, Scenario, Topics};

struct Receiver {
    grpc: u16,
    http: u16,
    config: PathBuf,
}

/// A pipeline file with only an otlp source, into `lake`.
fn otlp_config(s: &Scenario, name: &str, lake: &str, max_request: &str) -> Receiver {
    let (grpc, http) = (free_port(), free_port());
    let toml = format!(
        r#"[pipeline]
name = "{name}"

[sources.otlp]
type = "otlp"
grpc_address = "127.0.0.1:{grpc}"
http_address = "127.0.0.1:{http}"
max_request_bytes = "{max_request}"

[sinks.lake]
type = "delta"
inputs = ["otlp"]
uri = {uri}
max_latency = "200ms"
"#,
        uri = toml_str(lake),
    );
    let config = s.dir().join(format!("{name}.toml"));
    std::fs::write(&config, toml).unwrap();
    Receiver { grpc, http, config }
}

/// Starts `paystream run` on `r` and waits until both ports accept connections.
fn start(s: &Scenario, r: &Receiver, name: &str) -> Proc {
    let mut cmd = s.paystream();
    cmd.args(["run", "-c"]).arg(&r.config);
    let mut p = Proc::spawn(name, cmd, s.dir());
    p.wait_listening(r.grpc);
    p.wait_listening(r.http);
    p
}

/// SIGTERM, and the clean exit that must follow.
fn stop(mut p: Proc) {
    p.terminate();
    p.expect_success(Duration::from_secs(60));
}

fn python(s: &Scenario, name: &str, script: &str, args: &[String]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e")
        .join(script);
    let mut cmd = Command::new(&s.services.python);
    cmd.arg(path).args(args);
    let out = Proc::spawn(name, cmd, s.dir())
        .expect_success(Duration::from_secs(240))
        .stdout;
    eprint!("[{}] {out}", s.id);
    out
}

fn query_json(s: &Scenario, lake: &str, sql: &str) -> Vec<Value> {
    let mut cmd = s.paystream();
    cmd.args(["query", "--lake", lake, "--format", "json", sql]);
    let out = Proc::spawn("query", cmd, s.dir())
        .expect_success(Duration::from_secs(120))
        .stdout;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[test]
fn otlp_sdk_services_spans_exactly_once() {
    let s = Scenario::new("otlp-sdk", Lake::Local);
    let r = otlp_config(&s, "otlp-sdk", &s.lake_uri, "4MiB");
    let p = start(&s, &r, "run-otlp");
    let mut expect = Vec::new();
    for (protocol, endpoint, service) in [
        ("grpc", format!("http://127.0.0.1:{}", r.grpc), "checkout"),
        (
            "http",
            format!("http://127.0.0.1:{}", r.http),
            "payments-api",
        ),
    ] {
        let out = s.dir().join(format!("{protocol}.json"));
        python(
            &s,
            &format!("service-{protocol}"),
            "otlp_service.py",
            &[
                format!("--protocol={protocol}"),
                format!("--endpoint={endpoint}"),
                format!("--service={service}"),
                "--traces=60".into(),
                format!("--out={}", out.display()),
            ],
        );
        expect.push(format!("--expect={}", out.display()));
    }
    stop(p);
    let mut args = vec![format!("--lake={}", s.lake_uri)];
    args.extend(expect);
    let verdict = python(&s, "check_spans", "check_spans.py", &args);
    assert!(
        verdict.contains("spans OK: 240 spans sent, 240 in the table"),
        "{verdict}"
    );
}

#[test]
fn otlp_bad_input_refused_and_retries_not_doubled() {
    let s = Scenario::new("otlp-bad", Lake::Local);
    let r = otlp_config(&s, "otlp-bad", &s.lake_uri, "64KiB");
    let args = [
        format!("--http=http://127.0.0.1:{}", r.http),
        format!("--grpc=127.0.0.1:{}", r.grpc),
        "--max-bytes=65536".to_string(),
    ];
    let mut p = start(&s, &r, "run-otlp");
    python(&s, "bad-input", "otlp_bad_input.py", &args);
    assert!(
        p.poll().is_none(),
        "the receiver died on bad input.\n{}",
        p.report()
    );
    stop(p);
    // The same valid spans again, after a restart: a client retrying a request whose answer
    // it never got. They are already in the lake and must not be stored twice.
    let p = start(&s, &r, "run-otlp-again");
    let mut again = args.to_vec();
    again.push("--resend-only".into());
    python(&s, "resend", "otlp_bad_input.py", &again);
    stop(p);
    let rows = query_json(
        &s,
        &s.lake_uri,
        "SELECT count(*) AS n, count(DISTINCT span_id) AS ids FROM spans WHERE name = 'probe'",
    );
    assert_eq!(int(&rows[0]["n"]), 2, "{rows:?}");
    assert_eq!(int(&rows[0]["ids"]), 2, "{rows:?}");
}

#[test]
fn pipeline_spans_link_producers_and_join_payments() {
    let s = Scenario::new("traces", Lake::Local);
    s.create_topics(Topics {
        payments: 2,
        orders: 1,
        refunds: 1,
    });
    s.generate(3_000, 11);

    // A second paystream receives the first one's spans, into a lake of its own.
    let receiver_lake = s.dir().join("receiver-lake").display().to_string();
    let r = otlp_config(&s, "receiver", &receiver_lake, "4MiB");
    let receiver = start(&s, &r, "receiver");

    // The standard variables, not the file, point the pipeline at it.
    let config = s.write_config("traces");
    let mut cmd = s.run_cmd(&config, Some("3s"));
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{}", r.grpc),
    )
    .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    .args(["--log-format", "json"]);
    let run = Proc::spawn("run-traced", cmd, s.dir()).expect_success(Duration::from_secs(300));
    for line in run.stderr.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    stop(receiver);
    python(
        &s,
        "check_own_spans",
        "check_spans.py",
        &[
            format!("--lake={receiver_lake}"),
            "--own".into(),
            format!("--events-lake={}", s.lake_uri),
        ],
    );

    // A service continues 30 payments' traces and sends its spans beside the events.
    let parents = query_json(
        &s,
        &s.lake_uri,
        "SELECT trace_id, span_id FROM payments WHERE trace_id IS NOT NULL ORDER BY event_id LIMIT 30",
    );
    assert_eq!(parents.len(), 30, "too few payments with a traceparent");
    let parents_path = s.dir().join("parents.json");
    std::fs::write(&parents_path, Value::from(parents).to_string()).unwrap();
    let beside = otlp_config(&s, "beside", &s.lake_uri, "4MiB");
    let p = start(&s, &beside, "run-beside");
    let out = s.dir().join("joined.json");
    python(
        &s,
        "service-joined",
        "otlp_service.py",
        &[
            "--protocol=http".into(),
            format!("--endpoint=http://127.0.0.1:{}", beside.http),
            "--service=risk".into(),
            format!("--parents={}", parents_path.display()),
            format!("--out={}", out.display()),
        ],
    );
    stop(p);
    let joined = query_json(
        &s,
        &s.lake_uri,
        "SELECT count(DISTINCT s.span_id) AS spans, count(DISTINCT p.payment_id) AS payments \
         FROM payments p JOIN spans s ON p.trace_id = s.trace_id",
    );
    assert_eq!(int(&joined[0]["spans"]), 60, "{joined:?}");
    assert!(int(&joined[0]["payments"]) >= 30, "{joined:?}");

    // The same join through `paystream serve`, as psql (or Grafana) sends it.
    let (mut server, port) = crate::serve::start_serve(&s, "30s");
    let (ok, out, err) = crate::serve::psql(
        &s,
        port,
        "analyst",
        "s3cret-pw",
        "SELECT count(DISTINCT s.span_id) FROM payments p JOIN spans s ON p.trace_id = s.trace_id",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "60");
    server.terminate();
    server.expect_success(Duration::from_secs(60));

    // The README's example and the Grafana panel answer over the same lake.
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(README_JOIN),
        "README no longer shows README_JOIN"
    );
    let rows = query_json(&s, &s.lake_uri, README_JOIN);
    assert_eq!(rows.len(), 20, "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["payment_id"].is_string() && r["name"].is_string()));
    let dashboard: Value =
        serde_json::from_str(include_str!("../../dashboards/grafana/traces.json")).unwrap();
    for target in dashboard["panels"][0]["targets"].as_array().unwrap() {
        let sql = grafana_sql(target["rawSql"].as_str().unwrap());
        let rows = query_json(&s, &s.lake_uri, &sql);
        assert!(!rows.is_empty(), "the panel query returned nothing: {sql}");
    }
}

/// The example of the README's Traces section, verbatim.
const README_JOIN: &str = "SELECT p.payment_id, p.merchant_id, s.service_name, s.name, s.duration_ns / 1e6 AS ms, s.status_code
  FROM payments p JOIN spans s ON p.trace_id = s.trace_id
  WHERE p.event_date >= current_date - INTERVAL '1 day'
  ORDER BY s.duration_ns DESC LIMIT 20";

/// Grafana's `$__timeFilter(col)` macro as the data source expands it, for the last day.
fn grafana_sql(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "$__timeFilter(".len()..];
        let end = after.find(')').unwrap();
        let col = &after[..end];
        out.push_str(&format!(
            "{col} BETWEEN now() - INTERVAL '1 day' AND now() + INTERVAL '1 hour'"
        ));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}
