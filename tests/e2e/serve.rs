//! `paystream serve`: the lake over the Postgres wire protocol, checked with real clients —
//! `psql` (simple protocol) and Python `psycopg` (extended protocol with parameters, as
//! Grafana's data source and BI tools use it) — against what `paystream query` answers; and the
//! guards: passwords, read-only, engine settings, the statement timeout and the memory pool; TLS
//! and cancel requests.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{free_port, unique, Lake, Proc, Scenario, Topics};

const USER: &str = "analyst";
const PASSWORD: &str = "s3cret-pw";

/// `paystream serve` on the scenario's lake, once it accepts connections.
pub fn start_serve(s: &Scenario, timeout: &str) -> (Proc, u16) {
    let (p, port, _) = start_serve_http(s, timeout);
    (p, port)
}

/// As [`start_serve`], with the HTTP endpoint too: (process, postgres port, http port).
pub fn start_serve_http(s: &Scenario, timeout: &str) -> (Proc, u16, u16) {
    let port = free_port();
    let http = free_port();
    let mut cmd = s.paystream();
    cmd.args(["serve", "--lake", &s.lake_uri])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--query-timeout", timeout])
        .env(
            "PAYSTREAM_SERVE_USERS",
            format!("{USER}:{PASSWORD},bi:other-pw"),
        );
    let mut p = Proc::spawn("serve", cmd, s.dir());
    p.wait_listening(port);
    p.wait_listening(http);
    (p, port, http)
}

/// `psql -At` of `sql` as `user` with `password`: (success, stdout, stderr).
pub fn psql(
    s: &Scenario,
    port: u16,
    user: &str,
    password: &str,
    sql: &str,
) -> (bool, String, String) {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        user,
        "-d",
        "lake",
    ])
    .args(["-At", "-F", ",", "-v", "ON_ERROR_STOP=1", "-c", sql])
    .env("PGPASSWORD", password)
    .env("PGCONNECT_TIMEOUT", "30");
    let done = Proc::spawn("psql", cmd, s.dir()).finish(Duration::from_secs(120));
    (done.status.success(), done.stdout, done.stderr)
}

fn psycopg(s: &Scenario, port: u16, sql: &str, params: &[&str]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/pg_client.py");
    let mut cmd = Command::new(&s.services.python);
    cmd.arg(script)
        .arg(format!(
            "--dsn=host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname=lake"
        ))
        .arg(format!("--sql={sql}"));
    for p in params {
        cmd.arg(format!("--param={p}"));
    }
    let done = Proc::spawn("psycopg", cmd, s.dir()).finish(Duration::from_secs(120));
    (done.status.code().unwrap_or(-1), done.stdout)
}

fn http_sql(
    s: &Scenario,
    url: &str,
    auth: Option<(&str, &str)>,
    sql: &str,
    arrow: bool,
) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/http_sql.py");
    let mut cmd = Command::new(&s.services.python);
    cmd.arg(script)
        .arg(format!("--url={url}"))
        .arg(format!("--sql={sql}"));
    if let Some((user, password)) = auth {
        cmd.arg(format!("--user={user}"))
            .arg(format!("--password={password}"));
    }
    if arrow {
        cmd.arg("--arrow");
    }
    let done = Proc::spawn("http_sql", cmd, s.dir()).finish(Duration::from_secs(120));
    (done.status.code().unwrap_or(-1), done.stdout)
}

/// A cross join of billions of rows, which only a deadline or a cancel stops.
const RUNAWAY: &str = "SELECT count(*) FROM payments a, payments b, payments c \
                       WHERE a.amount_minor * b.amount_minor <> c.amount_minor";

/// The runaway query must stop at the server's statement timeout.
fn expect_timeout(s: &Scenario, port: u16) {
    let (ok, _, err) = psql(s, port, USER, PASSWORD, RUNAWAY);
    assert!(!ok && err.contains("statement timeout"), "{err}");
}

#[test]
fn serve_answers_psql_and_psycopg_and_guards_the_lake() {
    let events = 5_000;
    let s = Scenario::new("serve", Lake::Local);
    let topics = Topics {
        payments: 2,
        orders: 1,
        refunds: 1,
    };
    s.ingest(topics, events, 5);
    let (server, port, http) = start_serve_http(&s, "3s");

    // psql and `paystream query` agree.
    let sums = "SELECT currency, sum(amount_minor) AS total FROM payments GROUP BY currency ORDER BY currency";
    let (ok, out, err) = psql(&s, port, USER, PASSWORD, sums);
    assert!(ok, "psql failed: {err}");
    assert_eq!(out.trim(), s.query_rows(sums).trim());
    assert!(out.lines().count() >= 3, "{out}");

    // The shape Grafana's Postgres data source sends: a time-bucketed series with bound
    // time parameters, through the extended protocol.
    let (code, out) = psycopg(
        &s,
        port,
        "SELECT date_trunc('minute', event_time) AS time, count(*) AS n FROM payments \
         WHERE event_time >= CAST(%s AS TIMESTAMP) AND event_time < CAST(%s AS TIMESTAMP) \
         GROUP BY 1 ORDER BY 1",
        &["2000-01-01 00:00:00", "2100-01-01 00:00:00"],
    );
    assert_eq!(code, 0, "{out}");
    let total: i64 = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .sum();
    let expected: i64 = s
        .query_rows("SELECT count(*) FROM payments")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total, expected, "{out}");

    // A schema browser's view of the tables.
    let (ok, out, err) = psql(
        &s,
        port,
        USER,
        PASSWORD,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    assert!(ok, "{err}");
    for t in ["dlq", "orders", "payments", "refunds"] {
        assert!(out.lines().any(|l| l == t), "{t} missing from {out}");
    }

    // Passwords.
    let (ok, _, err) = psql(&s, port, USER, "wrong", "SELECT 1");
    assert!(
        !ok && err
            .to_lowercase()
            .contains("password authentication failed"),
        "{err}"
    );
    let (ok, _, err) = psql(&s, port, "nobody", PASSWORD, "SELECT 1");
    assert!(
        !ok && err
            .to_lowercase()
            .contains("password authentication failed"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD));

    // Nothing writes, nothing reaches outside the lake, nothing changes the engine.
    for sql in [
        "INSERT INTO payments (event_id) VALUES ('x')",
        "DELETE FROM payments",
        "UPDATE payments SET amount_minor = 0",
        "CREATE TABLE t (a INT)",
        "DROP TABLE payments",
        "COPY payments TO '/tmp/paystream-copy.csv'",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let (ok, _, err) = psql(&s, port, USER, PASSWORD, sql);
        assert!(!ok, "{sql} was accepted");
        assert!(
            // CREATE EXTERNAL TABLE is not even Postgres syntax: refused by the parser.
            err.contains("read-only")
                || err.contains("cannot be changed")
                || err.contains("sql parser error"),
            "{sql}: {err}"
        );
        let (code, out) = psycopg(&s, port, sql, &[]);
        assert_eq!(code, 2, "{sql} through psycopg: {out}");
    }
    assert!(!Path::new("/tmp/paystream-copy.csv").exists());

    // A query past its deadline fails alone; the next one is answered.
    expect_timeout(&s, port);
    let (ok, out, err) = psql(&s, port, USER, PASSWORD, "SELECT count(*) FROM orders");
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        s.query_rows("SELECT count(*) FROM orders").trim()
    );

    // The HTTP endpoint: the same answers as JSON lines and as Arrow IPC (read by pyarrow), the
    // same users, the same read-only rule.
    let by_currency = |out: &str| -> Vec<(String, i64)> {
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let total = v["total"]
                    .as_i64()
                    .or_else(|| v["total"].as_str().and_then(|t| t.parse().ok()))
                    .unwrap();
                (v["currency"].as_str().unwrap().to_string(), total)
            })
            .collect()
    };
    let expected: Vec<(String, i64)> = s
        .query_rows(sums)
        .lines()
        .map(|l| {
            let (c, t) = l.split_once(',').unwrap();
            (c.to_string(), t.parse().unwrap())
        })
        .collect();
    let url = format!("http://127.0.0.1:{http}/sql");
    let (code, out) = http_sql(&s, &url, Some((USER, PASSWORD)), sums, false);
    assert_eq!(code, 0, "{out}");
    assert_eq!(by_currency(&out), expected);
    let (code, out) = http_sql(&s, &url, Some((USER, PASSWORD)), sums, true);
    assert_eq!(code, 0, "{out}");
    assert_eq!(by_currency(&out), expected);
    let (code, out) = http_sql(&s, &url, Some((USER, "wrong")), sums, false);
    assert!(code == 3 && out.contains("status 401"), "{out}");
    let (code, out) = http_sql(&s, &url, None, sums, false);
    assert!(code == 3 && out.contains("status 401"), "{out}");
    for sql in [
        "INSERT INTO payments (event_id) VALUES ('x')",
        "COPY payments TO '/tmp/paystream-copy-http.csv'",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let (code, out) = http_sql(&s, &url, Some((USER, PASSWORD)), sql, false);
        assert!(code == 3 && out.contains("status 403"), "{sql}: {out}");
    }
    assert!(!Path::new("/tmp/paystream-copy-http.csv").exists());

    let mut server = server;
    server.terminate();
    server.expect_success(Duration::from_secs(60));
}

const TOTAL: &str = "SELECT (SELECT count(*) FROM payments) + (SELECT count(*) FROM orders) \
     + (SELECT count(*) FROM refunds) + (SELECT count(*) FROM dlq)";

/// Polls the lake's row count through psql until it is `want`.
fn wait_for_rows(s: &Scenario, port: u16, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (ok, out, err) = psql(s, port, USER, PASSWORD, TOTAL);
        last = if ok { out.trim().to_string() } else { err };
        if last == want.to_string() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the served lake never reached {want} rows; last answer: {last}");
}

#[test]
fn serve_inside_run_follows_commits_and_runaway_queries_fail_alone() {
    let s = Scenario::new("serve-in-run", Lake::Local);
    s.create_topics(Topics {
        payments: 2,
        orders: 1,
        refunds: 1,
    });
    let config = s.write_config(&unique("group"));
    let port = free_port();
    let mut cmd = s.run_cmd(&config, None);
    cmd.args(["--serve", &format!("127.0.0.1:{port}")])
        .args(["--query-timeout", "2s", "--memory-limit-mib", "16"])
        .env("PAYSTREAM_SERVE_USERS", format!("{USER}:{PASSWORD}"));
    let mut run = Proc::spawn("run-serving", cmd, s.dir());
    run.wait_listening(port);

    s.generate(3_000, 8);
    wait_for_rows(&s, port, 3_000);

    // More traffic arrives while a query runs past its limit: the query fails, ingestion
    // does not notice.
    let more = Proc::spawn(
        "generate-more",
        s.generate_cmd(2_000, 9, Some(1_000), &[]),
        s.dir(),
    );
    expect_timeout(&s, port);
    // An aggregate that grows past the server's memory pool: it fails alone, at its limit.
    let (ok, _, err) = psql(
        &s,
        port,
        USER,
        PASSWORD,
        "SELECT array_agg(a.event_id) FROM payments a, payments b",
    );
    assert!(!ok && err.contains("Failed to allocate"), "{err}");
    more.expect_success(Duration::from_secs(120));
    wait_for_rows(&s, port, 5_000);
    assert!(
        run.poll().is_none(),
        "the pipeline stopped.\n{}",
        run.report()
    );

    run.terminate();
    run.expect_success(Duration::from_secs(60));
}

/// A self-signed certificate for 127.0.0.1 made by openssl: (cert, key).
fn self_signed(s: &Scenario) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = s.dir().join("cert.pem");
    let key = s.dir().join("key.pem");
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
    ])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert)
    .args(["-subj", "/CN=localhost"])
    .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]);
    Proc::spawn("openssl", cmd, s.dir()).expect_success(Duration::from_secs(60));
    (cert, key)
}

/// psql with an explicit `sslmode`; the root certificate is pointed nowhere so that a user's
/// ~/.postgresql/root.crt cannot turn `require` into `verify-ca`.
fn psql_ssl(s: &Scenario, port: u16, sslmode: &str, sql: &str) -> (bool, String, String) {
    let mut cmd = Command::new("psql");
    cmd.arg(format!(
        "host=127.0.0.1 port={port} user={USER} dbname=lake sslmode={sslmode} sslrootcert=/nonexistent"
    ))
    .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
    .env("PGPASSWORD", PASSWORD)
    .env("PGCONNECT_TIMEOUT", "30");
    let done = Proc::spawn("psql-ssl", cmd, s.dir()).finish(Duration::from_secs(120));
    (done.status.success(), done.stdout, done.stderr)
}

#[test]
fn serve_over_tls_and_a_cancelled_client_cancels_its_query() {
    let s = Scenario::new("serve-tls", Lake::Local);
    s.fill_lake(4_000, 1, &[]);
    let (cert, key) = self_signed(&s);
    let port = free_port();
    let https = free_port();
    let mut cmd = s.paystream();
    cmd.args(["serve", "--lake", &s.lake_uri])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--http-listen", &format!("127.0.0.1:{https}")])
        // Far longer than the cancel takes, and one query at a time: a query that went on
        // after its cancel would hold the only slot.
        .args(["--query-timeout", "120s", "--max-concurrent-queries", "1"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("PAYSTREAM_SERVE_USERS", format!("{USER}:{PASSWORD}"));
    let mut server = Proc::spawn("serve-tls", cmd, s.dir());
    server.wait_listening(port);
    server.wait_listening(https);

    // The HTTP endpoint speaks HTTPS only, verified against the certificate.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/http_sql.py");
    let http = |url: String, extra: &[String]| {
        let mut cmd = Command::new(&s.services.python);
        cmd.arg(&script)
            .arg(format!("--url={url}"))
            .arg("--sql=SELECT count(*) AS n FROM payments")
            .arg(format!("--user={USER}"))
            .arg(format!("--password={PASSWORD}"))
            .args(extra);
        let done = Proc::spawn("http_sql", cmd, s.dir()).finish(Duration::from_secs(60));
        (done.status.code().unwrap_or(-1), done.stdout)
    };
    let (code, out) = http(
        format!("https://127.0.0.1:{https}/sql"),
        &[format!("--cafile={}", cert.display())],
    );
    assert_eq!(code, 0, "{out}");
    let n: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        n["n"].to_string().trim_matches('"'),
        s.query_rows("SELECT count(*) FROM payments").trim()
    );
    let (code, out) = http(format!("http://127.0.0.1:{https}/sql"), &[]);
    assert_eq!(code, 4, "plain HTTP must not be answered: {out}");

    let (ok, out, err) = psql_ssl(&s, port, "require", "SELECT count(*) FROM payments");
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        s.query_rows("SELECT count(*) FROM payments").trim()
    );
    // The client's own report says the connection is encrypted.
    let (ok, out, err) = psql_ssl(&s, port, "require", "\\conninfo");
    assert!(ok && out.contains("SSL connection"), "{out}{err}");
    let (ok, _, err) = psql_ssl(&s, port, "disable", "SELECT 1");
    assert!(!ok && err.contains("requires TLS"), "{err}");

    // Cancelled while its rows are being computed: the query stops at once, and the only
    // slot is free for the next one.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/pg_cancel.py");
    let mut cmd = Command::new(&s.services.python);
    cmd.arg(script)
        .arg(format!(
            "--dsn=host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname=lake sslmode=require sslrootcert=/nonexistent"
        ))
        .arg(format!("--sql={RUNAWAY}"))
        .arg("--after=1.5");
    let done = Proc::spawn("pg_cancel", cmd, s.dir()).finish(Duration::from_secs(100));
    assert!(done.status.success(), "{}{}", done.stdout, done.stderr);
    let outcome: serde_json::Value = serde_json::from_str(done.stdout.trim()).unwrap();
    assert!(
        outcome["message"]
            .as_str()
            .unwrap()
            .contains("user request"),
        "{outcome}"
    );
    assert!(outcome["seconds"].as_f64().unwrap() < 60.0, "{outcome}");
    let started = Instant::now();
    let (ok, _, err) = psql_ssl(&s, port, "require", "SELECT count(*) FROM orders");
    assert!(ok, "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));

    server.terminate();
    server.expect_success(Duration::from_secs(60));
}
