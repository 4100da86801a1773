//! Exactly-once into the lake: every good event once in its table, every bad record once in
//! the DLQ, sums per currency exact; on a local folder and on S3. And a self-test of the
//! checker that judges all of it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{
    event_count, unique, Lake, Proc, Scenario, Services, Topics, S3_KEY_ID, S3_REGION, S3_SECRET,
};

const TOPICS: Topics = Topics {
    payments: 6,
    orders: 3,
    refunds: 3,
};

/// Generate, run to idle, check: the plain path.
fn generate_run_check(tag: &str, lake: Lake, events: u64, seed: u64) {
    let s = Scenario::new(tag, lake);
    s.ingest(TOPICS, events, seed);
    s.check_lake(None);
}

#[test]
fn lake_exactly_once_local() {
    generate_run_check("once-local", Lake::Local, event_count(200_000), 11);
}

#[test]
fn lake_exactly_once_s3() {
    generate_run_check("once-s3", Lake::S3, event_count(50_000), 12);
}

/// The checker passes a correct lake and fails each kind of defect, on a folder and on S3:
/// without this, a checker that accepts anything would make every lake test pass.
#[test]
fn lake_checker_self_test() {
    let services = Services::get();
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/check_lake_selftest.py");
    let s3_root = format!("s3://{}/{}", services.s3_bucket, unique("checker"));
    for root in [dir.path().display().to_string(), s3_root] {
        let mut cmd = Command::new(&services.python);
        cmd.arg(&script)
            .args(["--root", &root])
            .env("AWS_ENDPOINT_URL", &services.s3_endpoint)
            .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("AWS_REGION", S3_REGION)
            .env("AWS_ALLOW_HTTP", "true");
        let done = Proc::spawn("check_lake_selftest", cmd, dir.path())
            .expect_success(Duration::from_secs(120));
        assert!(
            done.stdout.contains("self-test OK"),
            "unexpected output: {}",
            done.stdout
        );
    }
}
