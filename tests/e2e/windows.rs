//! Window transforms end to end: generated traffic through tansu into a pipeline with two
//! 5-second tumbling windows, one reading the source, one behind a sql transform; their early and final results appear on `/metrics`, late events of
//! a second burst are counted, and its Delta table holds, for every closed window, exactly
//! what a GROUP BY over the `payments` table gives (duckdb over `deltalake`), less the events
//! recorded in `late_events`.

use std::time::{Duration, Instant};

use crate::support::{
    free_port, http_get, toml_str, unique, Lake, Proc, Scenario, Topics, E2E_WINDOW,
};

/// A sql transform deriving a column, and a window reading it.
const THROUGH_SQL: &str = r#"
[transforms.authorized]
type = "sql"
inputs = ["kafka"]
sql = "SELECT *, amount_minor >= 10000 AS large FROM payments WHERE event_type = 'PaymentAuthorized'"

[transforms.e2e_large]
type = "window"
inputs = ["authorized"]
window = "tumbling"
size = "5s"
allowed_lateness = "1s"
sql = "SELECT currency, count(*) FILTER (WHERE large) AS large, count(*) AS authorized FROM authorized GROUP BY currency"
"#;

/// Checks both windows of the test's config against the lake.
fn check(s: &Scenario) -> (usize, usize) {
    let (windows, late) = s.check_windows();
    let (through_sql, _) = s.check_window(
        "e2e_large",
        "large, authorized",
        "count(*) FILTER (WHERE amount_minor >= 10000), count(*)",
        "event_type = 'PaymentAuthorized'",
    );
    assert!(
        through_sql >= 4,
        "only {through_sql} windows closed behind the sql transform"
    );
    (windows, late)
}

#[test]
fn window_results_reach_metrics_and_equal_the_lake() {
    let events = 30_000;
    let s = Scenario::new("windows", Lake::Local);
    s.create_topics(Topics {
        payments: 3,
        orders: 1,
        refunds: 1,
    });
    // Event times advance 1 ms per event without --rate: 30 s of event time, six windows.
    s.generate(events, 11);
    let port = free_port();
    let config = s.write_config_with(
        &unique("group"),
        &format!(
            "\n[metrics]\nlisten = {}\n{E2E_WINDOW}{THROUGH_SQL}",
            toml_str(&format!("127.0.0.1:{port}"))
        ),
    );
    let mut run = Proc::spawn("run-windows", s.run_cmd(&config, None), s.dir());
    run.wait_listening(port);
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = loop {
        let (status, body) = http_get(port, "/metrics");
        assert_eq!(status, 200);
        let has = |w: &str| {
            body.lines().any(|l| {
                l.starts_with("paystream_window_e2e_decisions_authorized{")
                    && l.contains(&format!("window=\"{w}\""))
            })
        };
        if has("current") && has("last") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no current and last window series on /metrics:\n{body}\n{}",
            run.report()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for name in [
        "paystream_window_e2e_decisions_rejected{",
        "paystream_window_e2e_decisions_amount_minor{currency=",
        "paystream_event_to_metric_seconds_bucket",
        "paystream_watermark_delay_seconds",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    // A second burst, generated now that the first one's windows are closed: its late events
    // (2%, one to thirty minutes behind) fall into closed windows and must be reported.
    s.generate(5_000, 12);
    let settle = Instant::now() + Duration::from_secs(90);
    loop {
        let body = http_get(port, "/metrics").1;
        let late: f64 = body
            .lines()
            .find(|l| l.starts_with("paystream_late_events_total{transform=\"e2e_decisions\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if late > 0.0 {
            break;
        }
        assert!(
            Instant::now() < settle,
            "no late events counted after the second burst:\n{body}\n{}",
            run.report()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    run.terminate();
    run.expect_success(Duration::from_secs(60));

    let (windows, late) = check(&s);
    eprintln!("[{}] {windows} closed windows, {late} late events", s.id);
    assert!(windows >= 4, "only {windows} windows closed");
    assert!(
        late > 0,
        "the generator's late events (2%) were all counted in windows"
    );

    // A restart rebuilds the open windows from the lake and closes them with the same values
    // a single run would have: the check still holds after it.
    s.run_to_idle(&config, events + 5_000);
    let (again, _) = check(&s);
    assert!(
        again >= windows,
        "windows went missing after a restart: {again} < {windows}"
    );
}
