//! Time travel: a lake table as it was at a version or an instant, named in SQL as a quoted
//! identifier, `"payments@v12"` or `"payments@2026-11-22T10:00:00Z"`.
//!
//! A quoted name keeps every SQL client and parser unchanged (no dialect extension), and a
//! query can join two versions of a table to diff them. The snapshot is loaded when a
//! statement first names it and stays registered under that name: a version never changes.

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::common::TableReference;
use deltalake::DeltaTableBuilder;

use crate::{table_error, Error, LakeQuery, Result};

/// Which snapshot of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    Time(DateTime<Utc>),
}

/// Splits `name@spec` into the table and the snapshot; `None` when `name` has no `@`.
pub fn parse(name: &str) -> Option<Result<(&str, AsOf)>> {
    let (table, spec) = name.split_once('@')?;
    let bad = || {
        Error::AsOf {
        name: name.to_owned(),
        message: "expected TABLE@vN (a version), TABLE@2026-11-22T10:00:00Z or TABLE@2026-11-22 (UTC midnight)"
            .to_owned(),
    }
    };
    let as_of = if let Some(v) = spec.strip_prefix('v') {
        match v.parse::<u64>() {
            Ok(v) => AsOf::Version(v),
            _ => return Some(Err(bad())),
        }
    } else if let Ok(t) = DateTime::parse_from_rfc3339(spec) {
        AsOf::Time(t.with_timezone(&Utc))
    } else if let Ok(d) = NaiveDate::parse_from_str(spec, "%Y-%m-%d") {
        match d.and_hms_opt(0, 0, 0) {
            Some(t) => AsOf::Time(t.and_utc()),
            None => return Some(Err(bad())),
        }
    } else {
        return Some(Err(bad()));
    };
    Some(Ok((table, as_of)))
}

impl LakeQuery {
    /// Registers every `table@…` snapshot that `sql` names and the session does not hold yet.
    pub(crate) async fn register_snapshots(&self, sql: &str) -> Result<()> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        for reference in state.resolve_table_references(&statement)? {
            let name = reference.table();
            let Some(parsed) = parse(name) else {
                continue;
            };
            let (table, as_of) = parsed?;
            if self.ctx.table_exist(TableReference::bare(name))? {
                // A version never changes; an instant may still be ahead of the last commit,
                // so it is looked up again each time.
                if matches!(as_of, AsOf::Version(_)) {
                    continue;
                }
                self.ctx.deregister_table(TableReference::bare(name))?;
            }
            if !self.tables.iter().any(|(t, _)| t == table) {
                return Err(Error::AsOf {
                    name: name.to_owned(),
                    message: format!(
                        "no lake table {table:?} (tables: {})",
                        self.tables().join(", ")
                    ),
                });
            }
            let url = self.location.table(table)?;
            let builder = DeltaTableBuilder::from_url(url)
                .map_err(|e| table_error(name, e))?
                .with_storage_options(self.location.options().clone());
            let builder = match as_of {
                AsOf::Version(v) => builder.with_version(v),
                AsOf::Time(t) => builder.with_timestamp(t),
            };
            let snapshot = builder.load().await.map_err(|e| table_error(name, e))?;
            snapshot
                .update_datafusion_session(&state)
                .map_err(|e| table_error(name, e))?;
            let provider = crate::scan::table_provider(&snapshot, &self.ctx).await?;
            self.ctx
                .register_table(TableReference::bare(name), provider)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_at_are_plain_tables() {
        assert!(parse("payments").is_none());
    }

    #[test]
    fn versions_instants_and_dates() {
        let (t, a) = parse("payments@v12").unwrap().unwrap();
        assert_eq!((t, a), ("payments", AsOf::Version(12)));
        let (_, a) = parse("orders@2026-11-22T10:00:00+01:00").unwrap().unwrap();
        assert_eq!(
            a,
            AsOf::Time("2026-11-22T09:00:00Z".parse::<DateTime<Utc>>().unwrap())
        );
        let (_, a) = parse("refunds@2026-11-22").unwrap().unwrap();
        assert_eq!(
            a,
            AsOf::Time("2026-11-22T00:00:00Z".parse::<DateTime<Utc>>().unwrap())
        );
    }

    #[test]
    fn malformed_specs_say_what_is_expected() {
        for bad in [
            "payments@",
            "payments@v",
            "payments@v-1",
            "payments@yesterday",
        ] {
            let e = parse(bad).unwrap().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("TABLE@vN"), "{e}");
        }
    }
}
