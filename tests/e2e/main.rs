//! End-to-end tests: the `paystream` binary against real services, checked by readers we did
//! not write.
//!
//! `scripts/test` installs and starts the services (tansu for the Kafka API, moto for S3) on
//! free loopback ports and exports where they are (see [`support::Services`]); a test that needs
//! them fails with a pointer to `scripts/test` when they are not there, rather than passing
//! without having run. Every test makes its own topics, consumer group, lake folder and S3
//! prefix, so tests run in parallel; every wait has a deadline.
//!
//! Layout:
//! - [`support`]: the services' env, child processes with deadlines, topics, pipeline configs,
//!   the generator and the Python lake checker (`check_lake.py`);
//! - [`lake`]: exactly-once into a local and an S3 lake, and the checker's own self-test;
//! - [`crash`]: exactly-once across SIGKILLs at random moments;
//! - [`cli`]: `paystream query` and `paystream validate`;
//! - [`export`]: `paystream query` time travel, file output and shell; `paystream export` and
//!   `[exports.<id>]`, read back with pyarrow and duckdb;
//! - [`serve`]: `paystream serve` with psql and psycopg, passwords, read-only, timeouts;
//! - [`metrics`]: `/metrics` scraped by a real Prometheus, every "Pipeline health" and
//!   "Payments overview" panel query answered (the latter on the shipped window transforms),
//!   totals equal to what was produced; `promtool` on the shipped config and rules;
//! - [`traces`]: the otlp source fed by the OpenTelemetry SDK, bad OTLP input, and the
//!   pipeline's own spans linked to the producers' traces;
//! - [`windows`]: a window transform's results on `/metrics` and in its Delta table, equal to
//!   a GROUP BY of the lake less its late events, across a restart (and, in [`crash`], across
//!   SIGKILLs).
//!
//! Knobs for local runs: `PAYSTREAM_E2E_EVENTS` overrides the event count of the big tests,
//! `PAYSTREAM_E2E_SEED` replays a crash test, `PAYSTREAM_E2E_KEEP=1` keeps each test's folder.

// Tests may unwrap: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod crash;
mod export;
mod lake;
mod metrics;
mod serve;
mod support;
mod traces;
mod windows;
