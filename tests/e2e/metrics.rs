//! The pipeline's own metrics: `/metrics`, `/healthz` and `/readyz` of a running pipeline with
//! the window transforms of the shipped `pipelines.toml`, scraped by a real Prometheus (Debian's),
//! whose answers to every panel query of the "Pipeline health" and "Payments overview" dashboards
//! must hold series, and whose totals must equal what the generator produced. The shipped
//! Prometheus config and alert rules pass `promtool`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{free_port, http_get, toml_str, unique, Lake, Proc, Scenario, Topics};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The dashboards whose every panel query must return series.
const DASHBOARDS: [&str; 2] = [
    "dashboards/grafana/pipeline-health.json",
    "dashboards/grafana/payments-overview.json",
];

/// How long after a window's end its events are still taken: the default `allowed_lateness`,
/// which the shipped window transforms keep. A window is reported as closed (`window="last"`)
/// once the watermark, the largest event time seen, is past its end by this much.
const ALLOWED_LATENESS_MS: u128 = 5_000;

/// The `[transforms.*]` tables of the shipped `pipelines.toml`, verbatim (comments and all), so
/// that the "Payments overview" panels are checked against the business metrics users get.
fn shipped_transforms() -> String {
    let text = std::fs::read_to_string(repo("pipelines.toml")).unwrap();
    let mut out = String::new();
    let (mut keep, mut in_string) = (false, None::<&str>);
    for line in text.lines() {
        let trimmed = line.trim_start();
        if in_string.is_none() && trimmed.starts_with('[') {
            keep = trimmed.starts_with("[transforms.");
        }
        for delim in ["\"\"\"", "'''"] {
            if in_string.is_none_or(|d| d == delim) && line.matches(delim).count() % 2 == 1 {
                in_string = if in_string.is_some() {
                    None
                } else {
                    Some(delim)
                };
            }
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        out.contains("type = \"window\""),
        "no window transforms in pipelines.toml:\n{out}"
    );
    out
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The bad records a generator run produced, from its summary.
fn bad_records(summary_path: &Path) -> u64 {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary_path).unwrap()).unwrap();
    summary["bad"]
        .as_object()
        .map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum::<u64>())
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
fn prometheus_scrapes_the_pipeline_and_every_dashboard_panel_has_series() {
    // A burst, then (past the end of its minute) a smaller one that closes the burst's windows.
    let (burst, closer) = (3_000, 500);
    let events = burst + closer;
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
        "\n[metrics]\nlisten = {}\n\n{}",
        toml_str(&format!("127.0.0.1:{port}")),
        shipped_transforms()
    ));
    std::fs::write(&config, text).unwrap();
    let mut run = Proc::spawn("run-metrics", s.run_cmd(&config, None), s.dir());
    run.wait_listening(port);
    assert_eq!(http_get(port, "/healthz").0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/readyz").0 != 200 {
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

    // The generator stamps events with the time it starts, 1 ms apart (2% of them 1 to 30
    // minutes earlier), so the burst's windows end at the latest at the minute boundary after
    // `stamped_until`; the closer, stamped past that boundary plus the allowed lateness, moves
    // the watermark past them, and their final values become the window="last" series.
    let started = now_ms();
    s.generate(burst, 51);
    let mut bad = bad_records(&s.summary_path());
    let stamped_until = now_ms().max(started + u128::from(burst));
    let closing = (stamped_until / 60_000 + 1) * 60_000 + ALLOWED_LATENESS_MS + 2_000;
    std::thread::sleep(Duration::from_millis(
        u64::try_from(closing.saturating_sub(now_ms())).unwrap(),
    ));
    s.generate(closer, 52);
    bad += bad_records(&s.summary_path());
    assert!(bad > 0, "no bad records generated");

    let mut check = Command::new(&s.services.python);
    check
        .arg(repo("tests/e2e/prom_check.py"))
        .arg(format!("--prometheus=http://127.0.0.1:{prom_port}"));
    for dashboard in DASHBOARDS {
        check.arg(format!("--dashboard={}", repo(dashboard).display()));
    }
    // The event tables and the dlq: window results and late events have tables of their own.
    let out = check
        .arg(format!(
            "--expect=sum(paystream_rows_committed_total{{table=~\"payments|orders|refunds|dlq\"}})={events}"
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
        let (status, body) = http_get(port, "/metrics");
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
