//! The lake for analysts and BI tools without a server: `paystream query` with time travel,
//! file output and its shell, and `paystream export` (once, and as `[exports.<id>]`), read back
//! with pyarrow and duckdb and compared with what `paystream query` answers.
//!
//! The lakes are filled with `paystream generate --lake` (no Kafka), except for the scheduled
//! exports, which run inside `paystream run`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{unique, Lake, Proc, Scenario, Topics};

fn count(s: &Scenario, table: &str) -> u64 {
    let out = s.query_rows(&format!("SELECT count(*) FROM {table}"));
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("count of {table}: {out:?}: {e}"))
}

/// The rows of an exported file, as read by pyarrow or duckdb (`read_export.py`).
fn read_export(s: &Scenario, uri: &str, format: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/read_export.py");
    let mut cmd = Command::new(&s.services.python);
    cmd.arg(script).args([uri, format]).envs(s.s3_env());
    let out = Proc::spawn("read_export", cmd, s.dir())
        .expect_success(Duration::from_secs(120))
        .stdout;
    out.trim_end().to_owned()
}

/// The ids, currencies and amounts of the payments, in one order.
const ROWS: &str = "SELECT payment_id, currency, amount_minor, event_type FROM payments \
                    ORDER BY event_id";

#[test]
fn query_time_travel_file_output_and_shell() {
    let s = Scenario::new("query-tt", Lake::Local);
    s.fill_lake(6_000, 11, &[]);
    let v1 = count(&s, "payments");
    assert!(v1 > 1_000, "{v1}");
    // An instant between the two fills, from a clock we did not write.
    let between = Command::new(&s.services.python)
        .args([
            "-c",
            "import datetime; print(datetime.datetime.now(datetime.timezone.utc).isoformat())",
        ])
        .output()
        .unwrap();
    let between = String::from_utf8_lossy(&between.stdout).trim().to_owned();
    s.fill_lake(12_000, 11, &[]);
    let v2 = count(&s, "payments");
    assert!(v2 > v1, "{v1} then {v2}");

    // The same command again adds nothing: the lake already holds those events of that seed.
    let again = s.fill_lake(12_000, 11, &[]);
    assert!(again.contains("nothing to add"), "{again}");
    assert_eq!(count(&s, "payments"), v2);

    // Versions and instants; checked against deltalake's own idea of version 1.
    assert_eq!(count(&s, "\"payments@v1\""), v1);
    assert_eq!(count(&s, &format!("\"payments@{between}\"")), v1);
    let table = format!("{}/payments", s.lake_uri);
    let py = Command::new(&s.services.python)
        .args([
            "-c",
            "import sys, deltalake; print(deltalake.DeltaTable(sys.argv[1], version=1).to_pyarrow_table().num_rows)",
            &table,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        v1.to_string(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    // Rows added between two versions, by joining the table with its past.
    let added = s.query_rows(
        "SELECT count(*) FROM payments p LEFT JOIN \"payments@v1\" o ON p.event_id = o.event_id \
         WHERE o.event_id IS NULL",
    );
    assert_eq!(added.trim(), (v2 - v1).to_string());
    let mut cmd = s.paystream();
    cmd.args([
        "query",
        "--lake",
        &s.lake_uri,
        "SELECT 1 FROM \"payments@yesterday\"",
    ]);
    let bad = Proc::spawn("query-bad-as-of", cmd, s.dir()).finish(Duration::from_secs(60));
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("TABLE@vN"), "{}", bad.stderr);

    // Parquet output, read with pyarrow: the same rows as the CSV answer.
    let file = s.dir().join("out/payments.parquet");
    let mut cmd = s.paystream();
    cmd.args(["query", "--lake", &s.lake_uri, "--format", "parquet", "-o"])
        .arg(&file)
        .arg(ROWS);
    Proc::spawn("query-parquet", cmd, s.dir()).expect_success(Duration::from_secs(120));
    let expected = s.query_rows(ROWS);
    assert_eq!(read_export(&s, file.to_str().unwrap(), "parquet"), expected);

    // The shell: statements over several lines, commands, and history kept on disk.
    let history = s.dir().join("history");
    let mut child = s
        .paystream()
        .args(["query", "--lake", &s.lake_uri])
        .env("PAYSTREAM_HISTORY", &history)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT count(*) AS n\nFROM payments;\n\\dt\nSELECT nope FROM payments;\n\\q\n")
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains(&format!("| {v2} ")), "{stdout}");
    assert!(stdout.contains("(1 row)"), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim() == "refunds"), "{stdout}");
    // The bad statement is reported and the shell goes on to \q.
    assert!(stderr.contains("nope"), "{stderr}");
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(kept.contains("FROM payments;"), "{kept}");
}

fn wait_output(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the shell did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn export_to_files_and_s3_matches_the_query_and_is_atomic() {
    let s = Scenario::new("export", Lake::S3);
    s.fill_lake(8_000, 21, &[]);
    let expected = s.query_rows(ROWS);
    assert!(expected.lines().count() > 1_000);

    let bucket_key = format!(
        "s3://{}/{}-exports/payments.parquet",
        s.services.s3_bucket, s.id
    );
    let local_csv = s.dir().join("exports/payments.csv");
    let local_json = s.dir().join("exports/payments.jsonl");
    for (to, format) in [
        (bucket_key.as_str(), "parquet"),
        (local_csv.to_str().unwrap(), "csv"),
        (local_json.to_str().unwrap(), "json"),
    ] {
        let mut cmd = s.paystream();
        cmd.args(["export", "--lake", &s.lake_uri, "--sql", ROWS, "--to", to]);
        let done = Proc::spawn("export", cmd, s.dir()).expect_success(Duration::from_secs(120));
        assert!(done.stderr.contains("rows ("), "{}", done.stderr);
        assert_eq!(read_export(&s, to, format), expected, "export to {to}");
    }

    // A query that fails while its rows stream leaves nothing behind: no file, no staging
    // file, no S3 object. The second one fails at its last row, after more than the 10 MiB
    // the upload buffers in memory, so the multipart upload (or local staging file) has begun.
    let late_failure = "SELECT value, CASE WHEN value = 2000000 \
                        THEN CAST(CAST(value AS VARCHAR) || 'x' AS BIGINT) ELSE value END AS v \
                        FROM generate_series(1, 2000000)";
    let s3_failing = format!("s3://{}/{}-failing/out.csv", s.services.s3_bucket, s.id);
    for (sql, to) in [
        (
            "SELECT CAST(payment_id AS INT) AS n FROM payments",
            s.dir().join("failing/early.csv").display().to_string(),
        ),
        (
            late_failure,
            s.dir().join("failing/late.csv").display().to_string(),
        ),
        (late_failure, s3_failing.clone()),
    ] {
        let mut cmd = s.paystream();
        cmd.args(["export", "--lake", &s.lake_uri, "--sql", sql, "--to", &to]);
        let done = Proc::spawn("export-failing", cmd, s.dir()).finish(Duration::from_secs(180));
        assert!(!done.status.success(), "{to}: {}", done.stderr);
        assert!(
            done.stderr.contains("Cannot cast") || done.stderr.contains("cast"),
            "{}",
            done.stderr
        );
    }
    let left: Vec<_> = std::fs::read_dir(s.dir().join("failing"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let mut cmd = Command::new(&s.services.python);
    cmd.args([
        "-c",
        "import os, sys, boto3; s3 = boto3.client('s3', endpoint_url=os.environ['AWS_ENDPOINT_URL']); \
         b, k = sys.argv[1][5:].split('/', 1); r = s3.list_objects_v2(Bucket=b, Prefix=k); \
         u = s3.list_multipart_uploads(Bucket=b, Prefix=k); \
         print(r.get('KeyCount', 0), len(u.get('Uploads', [])))",
        &s3_failing,
    ]);
    cmd.envs(s.s3_env());
    let out = Proc::spawn("s3-list", cmd, s.dir()).expect_success(Duration::from_secs(60));
    assert_eq!(
        out.stdout.trim(),
        "0 0",
        "an object or an open upload was left on S3"
    );

    // A configured export, run twice for the same period: one file, written once.
    let config = s.write_config(&unique("group"));
    let folder = s.dir().join("scheduled");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[exports.by_currency]\nsql = \"SELECT currency, count(*) AS n, sum(amount_minor) AS total FROM payments GROUP BY currency ORDER BY currency\"\nevery = \"1h\"\nto = {}\nformat = \"csv\"\n",
        crate::support::toml_str(folder.to_str().unwrap())
    ));
    std::fs::write(&config, text).unwrap();
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let mut cmd = s.paystream();
        cmd.args(["export", "--id", "by_currency", "-c"])
            .arg(&config);
        outputs.push(
            Proc::spawn("export-id", cmd, s.dir())
                .expect_success(Duration::from_secs(120))
                .stderr,
        );
    }
    assert!(outputs[1].contains("exists already"), "{}", outputs[1]);
    let files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with("by_currency-") && files[0].ends_with(".csv"),
        "{files:?}"
    );
    let file = folder.join(&files[0]);
    assert_eq!(
        read_export(&s, file.to_str().unwrap(), "csv"),
        s.query_rows("SELECT currency, count(*) AS n, sum(amount_minor) AS total FROM payments GROUP BY currency ORDER BY currency"
        )
    );
}

#[test]
fn scheduled_exports_run_inside_the_pipeline_once_per_period() {
    let events = 2_000;
    let s = Scenario::new("export-sched", Lake::Local);
    let topics = Topics {
        payments: 2,
        orders: 1,
        refunds: 1,
    };
    let config = s.ingest(topics, events, 31);
    // The exports are added once everything is in the lake, so that every file holds it all.
    let folder = s.dir().join("exports");
    let sql = "SELECT currency, count(*) AS n FROM payments GROUP BY currency ORDER BY currency";
    let mut text = std::fs::read_to_string(&config).unwrap();
    // Every 2 s, so that a run sees periods end; and hourly, so that the second run falls in
    // the period the first one exported (unless the hour turns in between) and must skip it.
    for (id, every) in [("every2s", "2s"), ("hourly", "1h")] {
        text.push_str(&format!(
            "\n[exports.{id}]\nsql = \"{sql}\"\nevery = \"{every}\"\nto = {}\nformat = \"parquet\"\n",
            crate::support::toml_str(folder.to_str().unwrap())
        ));
    }
    std::fs::write(&config, text).unwrap();

    let files = |folder: &Path| -> Vec<(String, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(folder)
            .map(|d| {
                d.map(|e| {
                    let e = e.unwrap();
                    let modified = e.metadata().unwrap().modified().unwrap();
                    (e.file_name().to_string_lossy().into_owned(), modified)
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    // Two runs with nothing left to consume: the periods that end are exported; the second
    // run finds the files of the first and leaves them alone.
    let count = |v: &[(String, std::time::SystemTime)], prefix: &str| {
        v.iter().filter(|(f, _)| f.starts_with(prefix)).count()
    };
    // The first run exports the last periods (hourly ones included); the second must see two
    // more 2 s periods end, so that its first wake-up, which looks at the hourly periods too,
    // is over before it stops.
    let mut before: Vec<(String, std::time::SystemTime)> = Vec::new();
    for second in [false, true] {
        let every2s_before = count(&before, "every2s-");
        let mut run = Proc::spawn("run-exports", s.run_cmd(&config, None), s.dir());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let now = files(&folder);
            let done = if second {
                count(&now, "every2s-") >= every2s_before + 2
            } else {
                count(&now, "every2s-") >= 2 && count(&now, "hourly-") >= 1
            };
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "{now:?}\n{}", run.report());
            assert!(
                run.poll().is_none(),
                "the pipeline stopped: {}",
                run.report()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        run.terminate();
        let now = files(&folder);
        for old in &before {
            assert!(now.contains(old), "{old:?} was rewritten: {now:?}");
        }
        before = now;
    }
    let expected = s.query_rows(sql);
    for (f, _) in &before {
        assert!(
            (f.starts_with("every2s-") || f.starts_with("hourly-"))
                && f.ends_with(".parquet")
                && !f.contains('#'),
            "{before:?}"
        );
        let path = folder.join(f);
        assert_eq!(
            read_export(&s, path.to_str().unwrap(), "parquet"),
            expected,
            "{f}"
        );
    }
}

#[test]
fn a_filter_on_event_date_reads_only_that_days_files() {
    let s = Scenario::new("query-prune", Lake::Local);
    // 0.05 events per second of event time: 6,000 events over more than a day.
    s.fill_lake(6_000, 41, &["--rate", "0.05"]);
    let days =
        s.query_rows("SELECT CAST(event_date AS VARCHAR) FROM payments GROUP BY 1 ORDER BY 1");
    let days: Vec<&str> = days.lines().collect();
    assert!(days.len() >= 2, "{days:?}");
    let plan = |sql: &str| s.query_rows(&format!("EXPLAIN {sql}"));
    let all = plan("SELECT sum(amount_minor) FROM payments");
    for d in &days {
        assert!(all.contains(&format!("event_date={d}")), "{d}: {all}");
    }
    let one = plan(&format!(
        "SELECT sum(amount_minor) FROM payments WHERE event_date = DATE '{}'",
        days[0]
    ));
    assert!(one.contains(&format!("event_date={}", days[0])), "{one}");
    for d in &days[1..] {
        assert!(!one.contains(&format!("event_date={d}")), "{d} read: {one}");
    }
    // And the pruned answer is the filtered one.
    let pruned = s.query_rows(&format!(
        "SELECT count(*) FROM payments WHERE event_date = DATE '{}'",
        days[0]
    ));
    let filtered = s.query_rows(&format!(
        "SELECT count(*) FROM payments WHERE CAST(event_date AS VARCHAR) = '{}'",
        days[0]
    ));
    assert_eq!(pruned, filtered);
}

/// `N total → M matched` of one pruning metric in an `EXPLAIN ANALYZE` text.
fn pruned(plan: &str, metric: &str) -> (u64, u64) {
    let at = plan
        .find(&format!("{metric}="))
        .unwrap_or_else(|| panic!("no {metric} in {plan}"));
    let text = &plan[at + metric.len() + 1..];
    let mut numbers = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn a_lookup_by_id_reads_only_the_row_groups_whose_bloom_filter_may_hold_it() {
    let s = Scenario::new("query-bloom", Lake::Local);
    // Several days of event time, so several files and row groups.
    s.fill_lake(6_000, 43, &["--rate", "0.05"]);
    let id = s.query_rows("SELECT payment_id FROM payments ORDER BY event_time, event_id LIMIT 1");
    let id = id.trim();
    assert!(id.starts_with("pay_"), "{id:?}");
    let lookup = format!(
        "SELECT event_id, amount_minor FROM payments WHERE payment_id = '{id}' ORDER BY event_id"
    );
    let plan = s.query_rows(&format!("EXPLAIN ANALYZE {lookup}"));
    let (total, matched) = pruned(&plan, "row_groups_pruned_bloom_filter");
    assert!(total >= 2, "{plan}");
    assert!(
        matched >= 1 && matched < total,
        "{matched} of {total}: {plan}"
    );
    // The same rows as through a filter no bloom filter can answer (the plain scan).
    let rows = s.query_rows(&lookup);
    assert!(!rows.is_empty());
    let plain = s.query_rows(&format!(
        "SELECT event_id, amount_minor FROM payments WHERE concat(payment_id, '') = '{id}' \
         ORDER BY event_id"
    ));
    assert_eq!(rows, plain);
}

#[test]
fn string_equality_filters_answer_as_duckdb_does() {
    let s = Scenario::new("query-streq", Lake::Local);
    s.fill_lake(6_000, 47, &[]);
    // Long constants (decided from the view and the remembered views), a short one (the whole
    // view), `<>`, and FILTER clauses, beside nulls.
    let queries = [
        "SELECT currency, count(*) AS n, sum(amount_minor) AS total FROM payments \
         WHERE event_type = 'PaymentCaptured' GROUP BY currency ORDER BY currency",
        "SELECT event_type, count(*) AS n FROM payments WHERE event_type <> 'PaymentAuthorized' \
         GROUP BY event_type ORDER BY event_type",
        "SELECT rejection_reason, count(*) FILTER (WHERE event_type = 'PaymentRejected') AS r, \
         count(*) FILTER (WHERE 'PaymentAuthorized' = event_type) AS a, count(*) AS n \
         FROM payments GROUP BY rejection_reason ORDER BY rejection_reason NULLS FIRST",
        "SELECT count(*) AS n, sum(amount_minor) AS total FROM payments WHERE currency = 'EUR'",
    ];
    for sql in queries {
        let ours = s.query_rows(sql);
        assert!(!ours.is_empty() && ours != "0,", "{sql}: {ours:?}");
        assert_eq!(ours, s.lake_sql(sql), "{sql}");
    }
}
