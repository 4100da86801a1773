//! Command-line interface: what each subcommand takes, with the help users read.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// paystream: payment events from Kafka into an exactly-once Delta lake, queryable with SQL.
#[derive(Debug, Parser)]
#[command(name = "paystream", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: consume Kafka, normalise, commit to the lake exactly once.
    ///
    /// Stops on SIGINT/SIGTERM after committing what it has. Safe to kill at any instant:
    /// on restart every partition resumes from the offsets stored in the lake.
    Run(RunArgs),
    /// Check a pipeline file: parse and validate everything, report every error at once.
    ///
    /// Exits 0 when valid, 1 otherwise; each error names file:line:column and the key.
    Validate(ConfigArg),
    /// Produce realistic synthetic payment traffic into Kafka.
    Generate(GenerateArgs),
    /// Run SQL over the lake's tables (payments, orders, refunds, dlq, spans).
    ///
    /// Without SQL, opens an interactive shell (history in ~/.paystream_history). A table as
    /// it was: "payments@v12" (a version) or "payments@2026-11-22T10:00:00Z" (an instant),
    /// quoted, e.g. SELECT count(*) FROM "payments@v3".
    Query(QueryArgs),
    /// Write a query's result to a CSV, JSON-lines or Parquet file, locally or on S3.
    ///
    /// The file appears whole or not at all (written under a staging name, or as one S3
    /// upload). With --config and --id, runs an [exports.<id>] of the pipeline file for its
    /// last completed period.
    Export(ExportArgs),
    /// Serve the lake over the Postgres wire protocol (psql, Grafana, Metabase, Superset).
    ///
    /// Read-only: statements that write or change engine settings are refused. Users come from
    /// PAYSTREAM_SERVE_USERS ("name:password[,name:password]"); without users the server
    /// refuses to start unless --allow-anonymous is given. Tables follow new commits.
    Serve(ServeArgs),
    /// Everything in one process with nothing installed: an embedded Kafka, synthetic
    /// traffic and the default pipeline writing ./lake.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Pipeline file.
    #[arg(
        short,
        long,
        default_value = "pipelines.toml",
        env = "PAYSTREAM_CONFIG"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Stop by itself once no message has arrived for this long and everything is committed
    /// (for batch back-fills and tests), e.g. "5s".
    #[arg(long, value_parser = parse_duration)]
    pub stop_when_idle: Option<Duration>,
    /// Log a progress line this often, e.g. "10s" ("0s" turns it off).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub progress: Duration,
    /// Also serve the lake to Postgres clients here, in this process (see `paystream serve`).
    #[arg(long)]
    pub serve: Option<std::net::SocketAddr>,
    /// Also answer `POST /sql` over HTTP here, in this process.
    #[arg(long)]
    pub serve_http: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub limits: ServeLimits,
}

/// What every SQL endpoint allows.
#[derive(Debug, Args)]
pub struct ServeLimits {
    /// Longest a statement may run, rows included, e.g. "30s".
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub query_timeout: Duration,
    /// Memory all running queries may hold together, in MiB; a query that needs more fails
    /// alone.
    #[arg(long, default_value_t = 1024)]
    pub memory_limit_mib: usize,
    /// Statements that may run at once; more wait for a slot (within their timeout).
    #[arg(long, default_value_t = 4)]
    pub max_concurrent_queries: usize,
    /// Serve without authentication when PAYSTREAM_SERVE_USERS is not set.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// PEM certificate (chain) for TLS on the Postgres and HTTP endpoints; with it, plain-text
    /// connections are refused (the HTTP endpoint then speaks HTTPS only).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,
    /// Number of messages to produce (default: until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Messages per second (default: as fast as the broker takes them).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Share of bad records (0..1), spread over every kind the DLQ knows.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub bad_ratio: f64,
    /// Share of late, out-of-order events (0..1): event time 1 to 30 minutes in the past.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub late_ratio: f64,
    /// Random seed: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of the topics (payments, orders, refunds).
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// Write what was produced (counts, sums per currency, event ids, bad kinds) as JSON.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Extra librdkafka producer property, KEY=VALUE (repeatable).
    #[arg(short = 'X', value_parser = parse_kv)]
    pub property: Vec<(String, String)>,
    /// Skip Kafka: decode the events and commit them straight into the lake at this folder or
    /// s3:// URI (needs --count; --rate is then events per second of event time from 30 days
    /// ago, default a day per million). The same command run twice adds nothing the second
    /// time; a larger --count (same seed, rate, ratios, same day) adds only the tail.
    #[arg(long, requires = "count")]
    pub lake: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// SQL to run, e.g. "SELECT currency, sum(amount_minor) FROM payments GROUP BY 1".
    /// Without it, an interactive shell reads statements ending with ';'.
    pub sql: Option<String>,
    /// Lake location (local folder or s3://bucket/prefix); S3 settings come from the AWS_*
    /// environment variables. Default: the delta sink's uri in --config, else ./lake.
    #[arg(long, env = "LAKE_URI")]
    pub lake: Option<String>,
    /// Pipeline file whose lake and table names to use.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Output format (parquet needs --output).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the result to this file instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print on stderr how long planning and execution took ("timing: 12.3 ms").
    #[arg(long)]
    pub timing: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The query whose result is exported.
    #[arg(long, required_unless_present = "id", conflicts_with = "id")]
    pub sql: Option<String>,
    /// Where: a file path or s3://bucket/key (S3 settings from the AWS_* variables).
    #[arg(long, required_unless_present = "id", conflicts_with = "id")]
    pub to: Option<String>,
    /// File format (default: from the extension of --to, else csv).
    #[arg(long, value_enum)]
    pub format: Option<ExportFormatArg>,
    /// Run the [exports.<ID>] of --config for its last completed period.
    #[arg(long, requires = "config")]
    pub id: Option<String>,
    /// Lake location (local folder or s3://bucket/prefix). Default: the delta sink's uri in
    /// --config, else ./lake.
    #[arg(long, env = "LAKE_URI")]
    pub lake: Option<String>,
    /// Pipeline file whose lake, table names and exports to use.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormatArg {
    Csv,
    Json,
    Parquet,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Lake location (local folder or s3://bucket/prefix); S3 settings come from the AWS_*
    /// environment variables. Default: the delta sink's uri in --config, else ./lake.
    #[arg(long, env = "LAKE_URI")]
    pub lake: Option<String>,
    /// Pipeline file whose lake and table names to use.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Address for Postgres clients.
    #[arg(long, default_value = "127.0.0.1:5432")]
    pub listen: std::net::SocketAddr,
    /// Also answer `POST /sql` over HTTP here (JSON lines, or Arrow IPC with
    /// `Accept: application/vnd.apache.arrow.stream`), with the same users (HTTP Basic).
    #[arg(long)]
    pub http_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub limits: ServeLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the lake.
    #[arg(long, default_value = "./lake")]
    pub lake: String,
    /// Synthetic events per second.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Stop after this long (default: until Ctrl-C), e.g. "60s".
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Share of bad records, to see the DLQ at work.
    #[arg(long, default_value_t = 0.01, value_parser = parse_ratio)]
    pub bad_ratio: f64,
}

/// "250ms", "2s", "1m", "1h", or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let err = || format!("expected a duration like \"250ms\", \"5s\" or \"1m\", found {s:?}");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err())
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a share between 0 and 1, found {s:?}")),
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, found {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn ratios_and_properties() {
        assert_eq!(parse_ratio("0.01"), Ok(0.01));
        assert!(parse_ratio("1.5").is_err());
        assert_eq!(
            parse_kv("linger.ms=5"),
            Ok(("linger.ms".to_string(), "5".to_string()))
        );
        assert!(parse_kv("=x").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
