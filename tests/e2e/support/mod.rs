//! What every end-to-end test needs: where the services are, unique names, child processes
//! with deadlines, and a [`Scenario`] (topics, generator, pipeline config, lake, checker).

mod process;
mod scenario;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use process::{Finished, Proc};
pub use scenario::{budget, Lake, Scenario, Topics, E2E_WINDOW};

/// Where the services that `scripts/test` started are, from its environment.
#[derive(Debug, Clone)]
pub struct Services {
    /// Kafka bootstrap address, `127.0.0.1:P` (`PAYSTREAM_TEST_KAFKA`).
    pub kafka: String,
    /// The tansu binary, for `tansu topic create` (`PAYSTREAM_TANSU`).
    pub tansu: PathBuf,
    /// S3 endpoint, `http://127.0.0.1:Q` (`PAYSTREAM_TEST_S3_ENDPOINT`).
    pub s3_endpoint: String,
    /// A bucket that exists (`PAYSTREAM_TEST_S3_BUCKET`).
    pub s3_bucket: String,
    /// Python with deltalake, pyarrow, duckdb, polars (`PAYSTREAM_PYTHON`).
    pub python: PathBuf,
}

/// Credentials the S3 stand-in accepts.
pub const S3_KEY_ID: &str = "test";
pub const S3_SECRET: &str = "test";
pub const S3_REGION: &str = "us-east-1";

impl Services {
    /// The services, or a panic that says how to get them: a test that needs them must not
    /// pass without having run.
    pub fn get() -> Services {
        if std::env::var_os("PAYSTREAM_TEST_KAFKA").is_none() {
            panic!(
                "PAYSTREAM_TEST_KAFKA is not set: run scripts/test, which starts the services \
                 (or `scripts/test --services-only` in another shell and eval the lines it prints)"
            );
        }
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run scripts/test, which starts the services")
            })
        };
        Services {
            kafka: var("PAYSTREAM_TEST_KAFKA"),
            tansu: var("PAYSTREAM_TANSU").into(),
            s3_endpoint: var("PAYSTREAM_TEST_S3_ENDPOINT"),
            s3_bucket: var("PAYSTREAM_TEST_S3_BUCKET"),
            python: var("PAYSTREAM_PYTHON").into(),
        }
    }
}

/// A name no other test (nor an earlier run against the same broker) uses: `tag`, the
/// process id, the clock and a counter. Only `[a-z0-9-]`, valid for topics, groups and S3.
pub fn unique(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "{tag}-{}-{nanos:08x}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Events for the big tests: `default`, unless `PAYSTREAM_E2E_EVENTS` says otherwise (for
/// quicker local runs).
pub fn event_count(default: u64) -> u64 {
    match std::env::var("PAYSTREAM_E2E_EVENTS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("PAYSTREAM_E2E_EVENTS must be a number, found {v:?}")),
        Err(_) => default,
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// `s` as a TOML basic string (JSON's string escapes are valid TOML).
pub fn toml_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`: (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}
