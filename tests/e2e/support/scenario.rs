//! One end-to-end scenario: its own topics (`<prefix>payments`, `<prefix>orders`,
//! `<prefix>refunds`), folder, lake (a local folder or an S3 prefix) and consumer groups, and
//! the steps the tests combine: create topics, generate traffic, write a pipeline config, run
//! the pipeline, check the lake with `check_lake.py`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tempfile::TempDir;

use super::{toml_str, unique, Proc, Services, S3_KEY_ID, S3_REGION, S3_SECRET};

/// The event families and the topic each is produced to.
pub const FAMILIES: [&str; 3] = ["payments", "orders", "refunds"];

/// How long `--stop-when-idle` waits for more messages before the pipeline exits.
pub const IDLE: &str = "3s";

/// Partitions per topic.
#[derive(Debug, Clone, Copy)]
pub struct Topics {
    pub payments: i32,
    pub orders: i32,
    pub refunds: i32,
}

/// Where a scenario's lake lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lake {
    Local,
    S3,
}

pub struct Scenario {
    pub services: Services,
    /// Unique id of the scenario; also its S3 prefix.
    pub id: String,
    /// Prefix of the scenario's topics.
    pub prefix: String,
    /// The lake root: a folder or `s3://bucket/<id>`.
    pub lake_uri: String,
    lake: Lake,
    /// Removes the folder when the scenario ends (None when kept).
    dir: Option<TempDir>,
    path: PathBuf,
}

impl Scenario {
    /// A fresh scenario; needs the services (panics with a pointer to `scripts/test` if absent).
    pub fn new(tag: &str, lake: Lake) -> Scenario {
        let services = Services::get();
        let id = unique(tag);
        let dir = tempfile::Builder::new()
            .prefix(&format!("paystream-e2e-{tag}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary folder: {e}"));
        let path = dir.path().to_path_buf();
        let lake_uri = match lake {
            Lake::Local => path.join("lake").display().to_string(),
            Lake::S3 => format!("s3://{}/{id}", services.s3_bucket),
        };
        let keep = std::env::var_os("PAYSTREAM_E2E_KEEP").is_some();
        eprintln!(
            "[{id}] folder {}{}, lake {lake_uri}",
            path.display(),
            if keep { " (kept)" } else { "" }
        );
        Scenario {
            prefix: format!("{id}."),
            services,
            id,
            lake_uri,
            lake,
            dir: if keep {
                let _ = dir.keep();
                None
            } else {
                Some(dir)
            },
            path,
        }
    }

    /// The scenario's folder (logs, configs, summary).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    pub fn topic(&self, family: &str) -> String {
        format!("{}{family}", self.prefix)
    }

    pub fn summary_path(&self) -> PathBuf {
        self.dir().join("summary.json")
    }

    /// Creates the scenario's topics with `tansu topic create` and waits until the broker's
    /// metadata shows each with its partitions.
    pub fn create_topics(&self, topics: Topics) {
        let wanted = [
            ("payments", topics.payments),
            ("orders", topics.orders),
            ("refunds", topics.refunds),
        ];
        for (family, partitions) in wanted {
            let topic = self.topic(family);
            let mut cmd = Command::new(&self.services.tansu);
            cmd.args([
                "topic",
                "create",
                &topic,
                "--partitions",
                &partitions.to_string(),
            ])
            .arg("--broker")
            .arg(format!("tcp://{}", self.services.kafka));
            Proc::spawn("tansu-topic-create", cmd, self.dir())
                .expect_success(Duration::from_secs(30));
            wait_for_topic(
                &self.services.kafka,
                &topic,
                partitions,
                Duration::from_secs(30),
            );
        }
    }

    /// A `paystream` command with the S3 environment the lake needs (for `query`, which
    /// takes S3 settings from the environment only).
    pub fn paystream(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_paystream"));
        cmd.env("RUST_BACKTRACE", "1");
        cmd.envs(self.s3_env());
        cmd
    }

    /// `paystream query --format csv` of `sql` over the scenario's lake, without the header.
    pub fn query_rows(&self, sql: &str) -> String {
        let mut cmd = self.paystream();
        cmd.args(["query", "--lake", &self.lake_uri, "--format", "csv", sql]);
        let out = Proc::spawn("query", cmd, self.dir())
            .expect_success(Duration::from_secs(120))
            .stdout;
        out.lines().skip(1).collect::<Vec<_>>().join("\n")
    }

    /// `paystream generate --lake` of the first `count` events of `seed` (1% bad), with
    /// `extra` arguments; returns what it said on stderr.
    pub fn fill_lake(&self, count: u64, seed: u64, extra: &[&str]) -> String {
        let mut cmd = self.paystream();
        cmd.args(["generate", "--lake", &self.lake_uri])
            .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
            .args(["--bad-ratio", "0.01"])
            .args(extra);
        Proc::spawn("generate-lake", cmd, self.dir())
            .expect_success(Duration::from_secs(300))
            .stderr
    }

    /// Topics, `events` generated with `seed`, the pipeline run to idle: a lake to work on.
    /// Returns the pipeline file, for tests that run it again.
    pub fn ingest(&self, topics: Topics, events: u64, seed: u64) -> PathBuf {
        self.create_topics(topics);
        self.generate(events, seed);
        let config = self.write_config(&unique("group"));
        self.run_to_idle(&config, events);
        config
    }

    /// The S3 settings of an S3 scenario as `AWS_*` variables (none for a local lake), for
    /// other clients of the same lake.
    pub fn s3_env(&self) -> Vec<(&'static str, String)> {
        if self.lake != Lake::S3 {
            return Vec::new();
        }
        vec![
            ("AWS_ENDPOINT_URL", self.services.s3_endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", S3_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
            ("AWS_REGION", S3_REGION.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// `paystream generate` of `count` events (1% bad, 2% late) with `seed`, writing the
    /// summary to [`Scenario::summary_path`]; `rate` in events per second, unlimited if None;
    /// `producer` as librdkafka producer properties (`-X key=value`).
    pub fn generate_cmd(
        &self,
        count: u64,
        seed: u64,
        rate: Option<u64>,
        producer: &[(&str, &str)],
    ) -> Command {
        let mut cmd = self.paystream();
        cmd.arg("generate")
            .args(["--brokers", &self.services.kafka])
            .args(["--count", &count.to_string()])
            .args(["--bad-ratio", "0.01", "--late-ratio", "0.02"])
            .args(["--seed", &seed.to_string()])
            .args(["--topic-prefix", &self.prefix])
            .arg("--summary")
            .arg(self.summary_path());
        if let Some(rate) = rate {
            cmd.args(["--rate", &rate.to_string()]);
        }
        for (key, value) in producer {
            cmd.arg("-X").arg(format!("{key}={value}"));
        }
        cmd
    }

    /// Generates `count` events and waits for the generator to finish.
    pub fn generate(&self, count: u64, seed: u64) {
        let started = Instant::now();
        Proc::spawn(
            "generate",
            self.generate_cmd(count, seed, None, &[]),
            self.dir(),
        )
        .expect_success(budget(count));
        eprintln!(
            "[{}] generated {count} events in {:?}",
            self.id,
            started.elapsed()
        );
    }

    /// Writes a pipeline config consuming the scenario's topics in consumer group `group`
    /// into its lake, and returns its path.
    pub fn write_config(&self, group: &str) -> PathBuf {
        let topics: Vec<String> = FAMILIES.iter().map(|f| toml_str(&self.topic(f))).collect();
        let mut toml = format!(
            r#"[pipeline]
name = "e2e"

[sources.kafka]
type = "kafka"
brokers = {brokers}
topics = [{topics}]
group_id = {group}
fetch_wait_max = "10ms"
# tansu 0.6 cannot fetch from inside a record batch: start a little earlier and let the lake's
# per-table offsets drop what it already holds (docs/DESIGN-NOTES.md).
resume_rewind = 1000

[sinks.lake]
type = "delta"
inputs = ["kafka"]
uri = {uri}
max_latency = "500ms"

# A consumer killed without leaving its group holds its partitions until its session times
# out (45 s by default), and a restart in the same group waits that long: keep it short.
[sources.kafka.librdkafka]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
"#,
            brokers = toml_str(&self.services.kafka),
            topics = topics.join(", "),
            group = toml_str(group),
            uri = toml_str(&self.lake_uri),
        );
        if self.lake == Lake::S3 {
            toml.push_str(&format!(
                r#"
[sinks.lake.s3]
endpoint = {endpoint}
region = {region}
access_key_id = {key}
secret_access_key = {secret}
allow_http = true
"#,
                endpoint = toml_str(&self.services.s3_endpoint),
                region = toml_str(S3_REGION),
                key = toml_str(S3_KEY_ID),
                secret = toml_str(S3_SECRET),
            ));
        }
        let path = self.dir().join(format!("{group}.toml"));
        std::fs::write(&path, toml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// As [`Scenario::write_config`], with `extra` TOML appended (transforms, `[metrics]`).
    pub fn write_config_with(&self, group: &str, extra: &str) -> PathBuf {
        let path = self.write_config(group);
        let mut text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.push_str(extra);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// `paystream run -c config`, with `--stop-when-idle` when `idle` is given.
    pub fn run_cmd(&self, config: &Path, idle: Option<&str>) -> Command {
        let mut cmd = self.paystream();
        cmd.arg("run")
            .arg("-c")
            .arg(config)
            .args(["--progress", "2s"]);
        if let Some(idle) = idle {
            cmd.args(["--stop-when-idle", idle]);
        }
        cmd
    }

    /// Runs the pipeline until it has been idle for [`IDLE`] and has committed everything.
    pub fn run_to_idle(&self, config: &Path, events: u64) {
        let started = Instant::now();
        Proc::spawn("run", self.run_cmd(config, Some(IDLE)), self.dir())
            .expect_success(budget(events));
        eprintln!(
            "[{}] pipeline ran to idle in {:?}",
            self.id,
            started.elapsed()
        );
    }

    /// Checks the lake against the generator's summary with `check_lake.py` (deltalake,
    /// pyarrow, duckdb, polars); panics with the checker's list of differences. With
    /// `sums_out`, the checker also writes the per-table sums per currency there.
    pub fn check_lake(&self, sums_out: Option<&Path>) {
        let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/check_lake.py");
        let mut cmd = Command::new(&self.services.python);
        cmd.arg(checker)
            .args(["--lake", &self.lake_uri])
            .arg("--summary")
            .arg(self.summary_path());
        if let Some(out) = sums_out {
            cmd.arg("--sums-out").arg(out);
        }
        cmd.envs(self.s3_env());
        let done =
            Proc::spawn("check_lake", cmd, self.dir()).expect_success(Duration::from_secs(300));
        eprint!("[{}] {}", self.id, done.stdout);
    }
}

impl Drop for Scenario {
    /// A failed test keeps its folder (logs, configs, summary, a local lake) for inspection.
    fn drop(&mut self) {
        if thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "[{}] test failed: keeping {}",
                    self.id,
                    dir.keep().display()
                );
            }
        }
    }
}

/// Time allowed for a step that handles `events` events in a debug build on a shared 2-core
/// machine: generous, but bounded.
pub fn budget(events: u64) -> Duration {
    Duration::from_secs(60 + events / 400)
}

/// Polls the broker's metadata until `topic` exists with `partitions` partitions.
fn wait_for_topic(brokers: &str, topic: &str, partitions: i32, timeout: Duration) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap_or_else(|e| panic!("cannot create a Kafka client for {brokers}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
            Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && t.partitions().len() == partitions as usize => {
                    return
                }
                Some(t) => {
                    last = format!("{} partitions, error {:?}", t.partitions().len(), t.error())
                }
                None => last = "not in metadata".into(),
            },
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("topic {topic} not ready with {partitions} partitions within {timeout:?}: {last}");
}

/// A window transform for end-to-end checks: 5 s tumbling windows over payments, small enough
/// that a run of a few tens of seconds of event time closes several of them.
pub const E2E_WINDOW: &str = r#"
[transforms.e2e_decisions]
type = "window"
inputs = ["kafka"]
window = "tumbling"
size = "5s"
allowed_lateness = "1s"
emit_every = "200ms"
sql = """
SELECT currency,
       count(*) FILTER (WHERE event_type = 'PaymentAuthorized') AS authorized,
       count(*) FILTER (WHERE event_type = 'PaymentRejected') AS rejected,
       sum(amount_minor) AS amount_minor
FROM payments
GROUP BY currency
"""

[transforms.e2e_sessions]
type = "window"
inputs = ["kafka"]
window = "session"
gap = "500ms"
allowed_lateness = "1s"
sql = "SELECT merchant_id, count(*) AS payments, sum(amount_minor) AS amount_minor FROM payments GROUP BY merchant_id"
"#;

/// The gap of the `e2e_sessions` window of [`E2E_WINDOW`], µs.
const E2E_SESSION_GAP_US: i64 = 500_000;

impl Scenario {
    /// Checks the [`E2E_WINDOW`] results in the lake with duckdb over `deltalake`: every closed
    /// window holds exactly what a plain GROUP BY over the `payments` table gives for that
    /// window, leaving out the events `late_events` lists for it; no window is missing or
    /// written twice. Returns the number of closed windows and of late events.
    pub fn check_windows(&self) -> (usize, usize) {
        let sessions = self.check_sessions("e2e_sessions", E2E_SESSION_GAP_US);
        assert!(sessions >= 10, "only {sessions} sessions closed");
        eprintln!("[{}] {sessions} closed sessions exact", self.id);
        self.check_window(
            "e2e_decisions",
            "authorized, rejected, amount_minor",
            "count(*) FILTER (WHERE event_type = 'PaymentAuthorized'), \
             count(*) FILTER (WHERE event_type = 'PaymentRejected'), sum(amount_minor)",
            "TRUE",
        )
    }

    /// As [`Scenario::check_windows`] for the 5 s tumbling window transform `id` grouped by
    /// currency: its `columns` must equal `aggregates` over the payments rows matching
    /// `filter`, window by window.
    pub fn check_window(
        &self,
        id: &str,
        columns: &str,
        aggregates: &str,
        filter: &str,
    ) -> (usize, usize) {
        assert_eq!(self.lake, Lake::Local, "check_window reads a local lake");
        let results = self.lake_sql(&format!(
            "SELECT epoch_us(window_start), epoch_us(window_end), currency, {columns} \
             FROM {id} ORDER BY 1, 3"
        ));
        let expected = self.lake_sql(&format!(
            "SELECT (epoch_us(event_time) // 5000000) * 5000000 AS ws, \
                    (epoch_us(event_time) // 5000000) * 5000000 + 5000000, currency, {aggregates} \
             FROM payments \
             WHERE ({filter}) \
               AND event_id NOT IN (SELECT event_id FROM late_events WHERE transform = '{id}') \
             GROUP BY 1, 2, 3 \
             HAVING ws <= (SELECT max(epoch_us(window_start)) FROM {id}) \
             ORDER BY 1, 3"
        ));
        let windows: std::collections::BTreeSet<&str> = results
            .lines()
            .filter_map(|l| l.split(',').next())
            .collect();
        assert_same_rows(id, "a GROUP BY of payments", &results, &expected);
        let late = self
            .lake_sql(&format!(
                "SELECT count(*) FROM late_events WHERE transform = '{id}'"
            ))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("late_events count: {e}"));
        (windows.len(), late)
    }

    /// Checks the session window `id` (per merchant, `gap_us` apart) against a sessionization
    /// of the `payments` table in duckdb (`LAG` and a running `SUM`), less the events
    /// `late_events` lists for it: every session ending by the last one written is in the
    /// results exactly once, with the same bounds, count and sum. Returns how many.
    pub fn check_sessions(&self, id: &str, gap_us: i64) -> usize {
        assert_eq!(self.lake, Lake::Local, "check_sessions reads a local lake");
        let results = self.lake_sql(&format!(
            "SELECT epoch_us(window_start), epoch_us(window_end), merchant_id, payments, \
                    amount_minor FROM {id} ORDER BY 1, 3"
        ));
        let expected = self.lake_sql(&format!(
            "WITH p AS ( \
               SELECT merchant_id, epoch_us(event_time) AS t, amount_minor FROM payments \
               WHERE event_id NOT IN (SELECT event_id FROM late_events WHERE transform = '{id}')), \
             marked AS ( \
               SELECT *, CASE WHEN t - lag(t) OVER (PARTITION BY merchant_id ORDER BY t) < {gap_us} \
                   THEN 0 ELSE 1 END AS starts FROM p), \
             numbered AS ( \
               SELECT *, sum(starts) OVER (PARTITION BY merchant_id ORDER BY t, starts DESC \
                   ROWS UNBOUNDED PRECEDING) AS sid FROM marked) \
             SELECT min(t) AS ws, max(t) + {gap_us} AS we, merchant_id, count(*), sum(amount_minor) \
             FROM numbered GROUP BY merchant_id, sid \
             HAVING max(t) + {gap_us} <= (SELECT max(epoch_us(window_end)) FROM {id}) \
             ORDER BY 1, 3"
        ));
        assert_same_rows(id, "a sessionization of payments", &results, &expected);
        results.lines().count()
    }

    /// `sql` answered by duckdb over the local lake's Delta tables as the `deltalake` package
    /// reads them (`lake_sql.py`): CSV rows without a header, trailing newline trimmed.
    pub fn lake_sql(&self, sql: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/lake_sql.py");
        let mut cmd = Command::new(&self.services.python);
        cmd.arg(script).args([self.lake_uri.as_str(), sql]);
        let out = Proc::spawn("lake_sql", cmd, self.dir())
            .expect_success(Duration::from_secs(120))
            .stdout;
        out.trim_end().to_owned()
    }
}

/// Panics, naming up to ten rows found on only one side, unless `results` (CSV lines of the
/// window table `id`) equal `expected` (the same computed from `source`).
fn assert_same_rows(id: &str, source: &str, results: &str, expected: &str) {
    if results == expected {
        return;
    }
    let a: Vec<&str> = results.lines().collect();
    let b: Vec<&str> = expected.lines().collect();
    let only_a: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).take(10).collect();
    let only_b: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).take(10).collect();
    panic!(
        "{id}: window results differ from the lake ({} rows against {}):\n only in results: {only_a:?}\n only in {source}: {only_b:?}",
        a.len(),
        b.len()
    );
}
