//! The pipeline's own metrics: `/metrics`, `/healthz` and `/readyz` of a running pipeline,
//! scraped by a real Prometheus (Debian's), whose answers to every panel query of the "Pipeline
//! health" dashboard must hold series, and whose totals must equal what the generator produced.
//! The shipped Prometheus config and alert rules pass `promtool`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{free_port, toml_str, unique, Lake, Proc, Scenario, Topics};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `GET path` on 127.0.0.1:port: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

#[test]
fn promtool_accepts_the_shipped_prometheus_config_and_alert_rules() {
    for args in [
        vec!["check", "config", "dashboards/prometheus/prometheus.yml"],
        vec!["check", "rules", "dashboards/prometheus/alerts.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("promtool (Debian's prometheus package; scripts/test installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn prometheus_scrapes_the_pipeline_and_every_health_panel_has_series() {
    let events = 3_000;
    let s = Scenario::new("metrics", Lake::Local);
    s.create_topics(Topics {
        payments: 2,
        orders: 1,
        refunds: 1,
    });
    let port = free_port();
    let config = s.write_config(&unique("group"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[metrics]\nlisten = {}\n",
        toml_str(&format!("127.0.0.1:{port}"))
    ));
    std::fs::write(&config, text).unwrap();
    let mut run = Proc::spawn("run-metrics", s.run_cmd(&config, None), s.dir());
    run.wait_listening(port);
    assert_eq!(get(port, "/healthz").0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready: {}", run.report());
        std::thread::sleep(Duration::from_millis(200));
    }

    // A real Prometheus, scraping every second, with the shipped alert rules loaded.
    let prom_port = free_port();
    let prom_dir = s.dir().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    std::fs::copy(
        repo("dashboards/prometheus/alerts.yml"),
        prom_dir.join("alerts.yml"),
    )
    .unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\n\
             scrape_configs:\n  - job_name: paystream\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!(
        "--config.file={}",
        prom_dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        prom_dir.join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let mut prometheus = Proc::spawn("prometheus", cmd, s.dir());
    prometheus.wait_listening(prom_port);

    s.generate(events, 51);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.summary_path()).unwrap()).unwrap();
    let bad = summary["bad"]
        .as_object()
        .map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum::<u64>());
    assert!(bad > 0, "{summary}");

    let out = Command::new(&s.services.python)
        .arg(repo("tests/e2e/prom_check.py"))
        .arg(format!("--prometheus=http://127.0.0.1:{prom_port}"))
        .arg(format!(
            "--dashboard={}",
            repo("dashboards/grafana/pipeline-health.json").display()
        ))
        .arg(format!(
            "--expect=sum(paystream_rows_committed_total)={events}"
        ))
        .arg(format!(
            "--expect=sum(paystream_consumed_events_total)={events}"
        ))
        .arg(format!("--expect=sum(paystream_dlq_records_total)={bad}"))
        .arg("--timeout=120")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        run.report()
    );
    // Every family the README lists is in the exposition, with the prefix; lag needs the
    // group's committed offsets, which librdkafka reports within a second or two of a commit.
    let lag_series = |body: &str| {
        body.lines()
            .filter(|l| l.starts_with("paystream_consumer_lag_messages{"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = get(port, "/metrics");
        assert_eq!(status, 200);
        if lag_series(&body) == 4 || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    for name in [
        "paystream_consumed_events_total",
        "paystream_consumed_bytes_total",
        "paystream_consumer_lag_messages",
        "paystream_decode_errors_total",
        "paystream_batch_latency_seconds_bucket",
        "paystream_commit_duration_seconds_bucket",
        "paystream_kafka_to_commit_seconds_bucket",
        "paystream_files_written_total",
        "paystream_bytes_written_total",
        "paystream_last_commit_timestamp_seconds",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    // Lag is never negative.
    for line in body
        .lines()
        .filter(|l| l.starts_with("paystream_consumer_lag_messages{"))
    {
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v >= 0.0, "{line}");
    }

    prometheus.terminate();
    run.terminate();
    run.expect_success(Duration::from_secs(60));
}
