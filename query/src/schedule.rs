//! Scheduled exports (`[exports.<id>]`): each export owns fixed periods of wall-clock time,
//! aligned on the Unix epoch (`every = "1h"` gives 10:00–11:00, 11:00–12:00, …). When a period
//! has ended, its query runs once and the result is written atomically to
//! `<to>/<id>-<start>-<end>.<ext>`.
//!
//! Naming the file after its period is what makes re-runs safe: a period already exported is
//! skipped, and one exported twice (a crash between the upload and noticing it) replaces the
//! same file with the same content instead of adding a second one. The SQL may use
//! `$period_start` and `$period_end`, replaced by the period's bounds as UTC timestamp
//! literals, to export exactly the rows of that period.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use paystream_core::config::{ExportConfig, ExportFileFormat};
use tracing::{info, warn};

use crate::export::{export, ExportFormat, ExportStats, ExportTarget};
use crate::{Error, LakeQuery, Result};

/// Time left after a period ends before it is exported, so that rows buffered by the pipeline
/// at the boundary are committed first (the pipeline adds its sink's `max_latency`).
pub const SETTLE: Duration = Duration::from_secs(5);

/// Periods looked at on each wake-up, the latest first: a period missed because an export
/// failed or the pipeline was down for less than this many periods is still exported.
pub const CATCH_UP_PERIODS: u32 = 3;

/// One period of an export: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    /// The last period of length `every` that ended at or before `now`.
    pub fn last_completed(now: DateTime<Utc>, every: Duration) -> Option<Self> {
        let every_ms = i64::try_from(every.as_millis()).ok().filter(|m| *m > 0)?;
        let end_ms = now.timestamp_millis().div_euclid(every_ms) * every_ms;
        Some(Self {
            start: Utc.timestamp_millis_opt(end_ms - every_ms).single()?,
            end: Utc.timestamp_millis_opt(end_ms).single()?,
        })
    }

    /// The period just before this one.
    pub fn before(self) -> Option<Self> {
        let len = self.end - self.start;
        Some(Self {
            start: self.start.checked_sub_signed(len)?,
            end: self.start,
        })
    }

    /// The file of `export` for this period.
    pub fn file_name(&self, export: &ExportConfig) -> String {
        let f = "%Y%m%dT%H%M%SZ";
        format!(
            "{}-{}-{}.{}",
            export.id,
            self.start.format(f),
            self.end.format(f),
            format_of(export).extension()
        )
    }

    /// `sql` with `$period_start` / `$period_end` replaced by timestamp literals.
    pub fn bind(&self, sql: &str) -> String {
        let lit = |t: DateTime<Utc>| format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%S%.fZ"));
        sql.replace("$period_start", &lit(self.start))
            .replace("$period_end", &lit(self.end))
    }
}

/// The export format of a configured export.
pub fn format_of(export: &ExportConfig) -> ExportFormat {
    match export.format {
        ExportFileFormat::Csv => ExportFormat::Csv,
        ExportFileFormat::Json => ExportFormat::Json,
        ExportFileFormat::Parquet => ExportFormat::Parquet,
    }
}

/// What one run of an export did.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    Written { file: String, stats: ExportStats },
    AlreadyThere { file: String },
}

/// Exports `period` of `export` unless its file exists.
pub async fn run_once(
    lake: &LakeQuery,
    export_cfg: &ExportConfig,
    period: Period,
    options: &HashMap<String, String>,
) -> Result<RunOutcome> {
    let name = period.file_name(export_cfg);
    let target = ExportTarget::in_folder(&export_cfg.to, &name, options)?;
    let file = target.to_string();
    if target.exists().await? {
        return Ok(RunOutcome::AlreadyThere { file });
    }
    let sql = period.bind(&export_cfg.sql);
    let stats = export(lake, &sql, format_of(export_cfg), &target, &mut |_| {})
        .await
        .map_err(|e| Error::Export {
            to: file.clone(),
            message: format!("exports.{} ({}): {e}", export_cfg.id, export_cfg.defined_at),
        })?;
    Ok(RunOutcome::Written { file, stats })
}

/// Checks that every export's SQL plans against the lake, so a typo stops the pipeline at
/// start with the export's file and line rather than failing every period.
pub async fn check(lake: &LakeQuery, exports: &[ExportConfig]) -> Result<()> {
    let now = Utc::now();
    for e in exports {
        let Some(period) = Period::last_completed(now, e.every) else {
            continue;
        };
        if let Err(err) = lake.plan(&period.bind(&e.sql)).await {
            return Err(Error::Export {
                to: e.to.clone(),
                message: format!("exports.{}.sql ({}): {err}", e.id, e.defined_at),
            });
        }
    }
    Ok(())
}

/// Runs every export at the end of each of its periods until `stop` turns true. A failed run
/// is logged and retried at the next wake-up; it never stops the pipeline. An export under way
/// when `stop` turns is finished first, so a clean shutdown leaves no staging file behind.
pub async fn run_scheduled(
    mut lake: LakeQuery,
    exports: Vec<ExportConfig>,
    options: HashMap<String, String>,
    settle: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let settle_c = chrono::Duration::from_std(settle).unwrap_or_default();
    'wake: while !*stop.borrow() {
        let now = Utc::now();
        let mut next_wake = Duration::from_secs(30);
        // Exporting an old snapshot would write a short file that is never rewritten.
        if let Err(e) = lake.refresh().await {
            warn!(error = %e, "exports: cannot refresh the lake; retrying");
            next_wake = Duration::from_secs(5);
        } else {
            for e in &exports {
                // A period is exported once `settle` has passed after its end.
                let Some(latest) = Period::last_completed(now - settle_c, e.every) else {
                    continue;
                };
                let mut period = latest;
                for _ in 0..CATCH_UP_PERIODS {
                    if *stop.borrow() {
                        break 'wake;
                    }
                    match run_once(&lake, e, period, &options).await {
                        Ok(RunOutcome::Written { file, stats }) => {
                            info!(export = %e.id, file, rows = stats.rows, bytes = stats.bytes, "export written");
                        }
                        Ok(RunOutcome::AlreadyThere { .. }) => {}
                        Err(err) => {
                            warn!(export = %e.id, error = %err, "export failed; retrying");
                            next_wake = next_wake.min(Duration::from_secs(5));
                        }
                    }
                    let Some(earlier) = Period::before(period) else {
                        break;
                    };
                    period = earlier;
                }
                let next_end = latest.end + e.every + settle;
                let wait = (next_end - Utc::now()).to_std().unwrap_or_default();
                next_wake = next_wake.min(wait.max(Duration::from_millis(200)));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(next_wake) => {}
            // A dropped sender also means stop.
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(every: Duration) -> ExportConfig {
        ExportConfig {
            id: "daily_revenue".into(),
            sql: "SELECT * FROM payments WHERE event_time >= $period_start AND event_time < $period_end".into(),
            every,
            to: "/tmp/x".into(),
            format: ExportFileFormat::Csv,
            defined_at: "pipelines.toml:3".into(),
        }
    }

    #[test]
    fn periods_are_aligned_on_the_epoch() {
        let now: DateTime<Utc> = "2026-11-22T10:17:03Z".parse().unwrap();
        let p = Period::last_completed(now, Duration::from_secs(3600)).unwrap();
        assert_eq!(p.start.to_rfc3339(), "2026-11-22T09:00:00+00:00");
        assert_eq!(p.end.to_rfc3339(), "2026-11-22T10:00:00+00:00");
        // Exactly on a boundary, the period that just ended is complete.
        let p = Period::last_completed(p.end, Duration::from_secs(3600)).unwrap();
        assert_eq!(p.end.to_rfc3339(), "2026-11-22T10:00:00+00:00");
    }

    #[test]
    fn the_file_says_what_and_when() {
        let now: DateTime<Utc> = "2026-11-22T00:00:10Z".parse().unwrap();
        let day = Duration::from_secs(86_400);
        let p = Period::last_completed(now, day).unwrap();
        assert_eq!(
            p.file_name(&cfg(day)),
            "daily_revenue-20261121T000000Z-20261122T000000Z.csv"
        );
    }

    #[test]
    fn placeholders_become_timestamp_literals() {
        let now: DateTime<Utc> = "2026-11-22T00:00:10Z".parse().unwrap();
        let day = Duration::from_secs(86_400);
        let p = Period::last_completed(now, day).unwrap();
        assert_eq!(
            p.bind(&cfg(day).sql),
            "SELECT * FROM payments WHERE event_time >= TIMESTAMP '2026-11-21T00:00:00Z' AND event_time < TIMESTAMP '2026-11-22T00:00:00Z'"
        );
    }

    #[test]
    fn a_zero_period_has_no_periods() {
        assert!(Period::last_completed(Utc::now(), Duration::ZERO).is_none());
    }
}
