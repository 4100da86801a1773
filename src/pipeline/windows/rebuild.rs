//! Rebuilding the open windows from the lake on start, so that a window open at a crash ends
//! with the values it would have had without one.
//!
//! The results table says up to where results are final (`H`). Fixed windows need the rows
//! from `H` less one window size. A session may have started any time before `H`, so the rows
//! are read from `H` less two gaps, and the read goes back further (doubling) until every
//! session still open starts at least a gap after the first row read: only then can no
//! earlier row belong to it.
//!
//! Rows recorded in `late_events` for a transform after `H` were decided late by a run whose
//! results never committed; they are never counted by that transform (neither in the rebuild
//! nor when Kafka delivers them again), so a row is either in `late_events` or in a result.

use std::collections::HashSet;

use anyhow::{Context, Result};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef, TimestampMicrosecondType};
use paystream_core::config::WindowKind as ConfigKind;
use paystream_core::schema::LATE_EVENTS_TABLE;
use paystream_query::LakeQuery;
use paystream_sinks::delta::LakeLocation;
use tracing::info;

use super::{horizon, Item, Windows};
use crate::pipeline::sql_stages::SqlStages;

/// (topic, partition, offset) of rows a transform must not count.
pub(super) type Skip = HashSet<(String, i32, i64)>;

/// The window size (fixed windows) or gap (sessions), µs.
fn span_us(item: &Item) -> i64 {
    let d = match item.cfg.window {
        ConfigKind::Tumbling { size } | ConfigKind::Hopping { size, .. } => size,
        ConfigKind::Session { gap } => gap,
    };
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

/// `id` as a SQL string literal.
fn literal(id: &str) -> String {
    format!("'{}'", id.replace('\'', "''"))
}

impl Windows {
    /// Feed every window the rows already in the lake that belong to windows not yet final in
    /// its results table.
    pub(super) async fn rebuild(&mut self, location: &LakeLocation) -> Result<()> {
        // Each window's rows come from a table of the lake, through its sql transform if any.
        let sources: Vec<(String, SchemaRef)> = self
            .items
            .iter()
            .map(|i| {
                let read = i.transform.input_table();
                match self.stages.get(read) {
                    Some(s) => (s.transform.input().to_string(), s.transform.input_schema()),
                    None => (read.to_string(), i.transform.input_schema()),
                }
            })
            .collect();
        let mut names: Vec<String> = sources.iter().map(|(t, _)| t.clone()).collect();
        names.push(LATE_EVENTS_TABLE.to_string());
        let lake = match LakeQuery::open(location, &names).await {
            Ok(l) => l,
            // A brand-new lake has nothing to replay.
            Err(paystream_query::Error::EmptyLake(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let present = lake.tables();
        for (item, (table, schema)) in self.items.iter_mut().zip(sources) {
            let has_late = present.iter().any(|t| t == LATE_EVENTS_TABLE);
            if has_late {
                item.skip = late_for(&lake, item, None).await?;
            }
            if !present.contains(&table) {
                continue;
            }
            let reader = Reader {
                lake: &lake,
                table: &table,
                schema: &schema,
                item_id: item.id.clone(),
                time: item.cfg.time_column.clone(),
            };
            let batches = match item.committed_until {
                None => {
                    let batches = reader.read(None).await?;
                    feed(item, &self.stages, &batches).await?;
                    batches
                }
                Some(until) if !item.transform.is_session() => {
                    item.transform.set_closed_until(until)?;
                    let batches = reader
                        .read(Some(until.saturating_sub(span_us(item))))
                        .await?;
                    feed(item, &self.stages, &batches).await?;
                    batches
                }
                Some(until) => {
                    let late = has_late.then_some(&lake);
                    rebuild_sessions(item, &self.stages, &reader, late, until).await?
                }
            };
            let now = std::time::Instant::now();
            let horizon = horizon();
            if let Some(w) = self.watermarks.get_mut(&item.cfg.time_column) {
                for b in &batches {
                    w.observe(b, &item.cfg.time_column, now, horizon);
                }
            }
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            info!(transform = %item.id, rows, skipped_late = item.skip.len(),
                closed_until = ?item.committed_until, "windows rebuilt from the lake");
        }
        Ok(())
    }
}

/// Reads one table's rows for one transform.
struct Reader<'a> {
    lake: &'a LakeQuery,
    table: &'a str,
    schema: &'a SchemaRef,
    item_id: String,
    time: String,
}

impl Reader<'_> {
    /// Whether rows can be selected by the time column (through a sql transform it may not
    /// exist in the table as such: then everything is read).
    fn by_time(&self) -> bool {
        self.schema.field_with_name(&self.time).is_ok()
    }

    /// The rows with time at or after `from` (µs), or all.
    async fn read(&self, from: Option<i64>) -> Result<Vec<RecordBatch>> {
        let columns: Vec<String> = self
            .schema
            .fields()
            .iter()
            .filter(|f| f.name() != paystream_transforms::window::WINDOW_START)
            .map(|f| format!("\"{}\"", f.name()))
            .collect();
        let mut sql = format!("SELECT {} FROM \"{}\"", columns.join(", "), self.table);
        if let (Some(from), true) = (from, self.by_time()) {
            let time = &self.time;
            sql.push_str(&format!(" WHERE \"{time}\" >= to_timestamp_micros({from})"));
            // event_date is the day of event_time: it prunes only for that column.
            if time == "event_time" && self.schema.field_with_name("event_date").is_ok() {
                sql.push_str(&format!(
                    " AND event_date >= CAST(to_timestamp_micros({from}) AS DATE)"
                ));
            }
        }
        self.lake.sql(&sql).await.with_context(|| {
            format!(
                "transforms.{}: reading {} to rebuild its windows",
                self.item_id, self.table
            )
        })
    }

    /// The earliest time in the table (µs), if it has rows.
    async fn min_time(&self) -> Result<Option<i64>> {
        let sql = format!("SELECT min(\"{}\") FROM \"{}\"", self.time, self.table);
        let batches = self
            .lake
            .sql(&sql)
            .await
            .with_context(|| format!("transforms.{}: reading {}", self.item_id, self.table))?;
        let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let col = cast(
            b.column(0),
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
        )?;
        let col = col.as_primitive::<TimestampMicrosecondType>();
        Ok((!col.is_null(0)).then(|| col.value(0)))
    }
}

/// Rebuild sessions open past `until`: read further back until none of them may have begun
/// before the first row read.
async fn rebuild_sessions(
    item: &mut Item,
    stages: &SqlStages,
    reader: &Reader<'_>,
    late: Option<&LakeQuery>,
    until: i64,
) -> Result<Vec<RecordBatch>> {
    let gap = span_us(item);
    let floor = if reader.by_time() {
        reader.min_time().await?
    } else {
        None
    };
    let mut back = gap.saturating_mul(2);
    loop {
        let from = until.saturating_sub(back);
        // Without a usable floor (no rows, or no time column to select by) one read of
        // everything is the answer.
        let whole = floor.is_none_or(|f| from <= f);
        item.transform.reset()?;
        if let Some(lake) = late {
            // Every late row read back must stay out: a late row could bridge into a session
            // still open, as it did not when it was decided late.
            item.skip = late_for(lake, item, Some(from)).await?;
        }
        let batches = reader.read((!whole).then_some(from)).await?;
        feed(item, stages, &batches).await?;
        let complete = item
            .transform
            .earliest_session_start(until)
            .is_none_or(|start| start >= from.saturating_add(gap));
        if whole || complete {
            item.transform.set_closed_until(until)?;
            return Ok(batches);
        }
        back = back.saturating_mul(2);
    }
}

/// Push `batches` (rows of the lake table) into `item`'s windows, less its skipped rows.
/// Rows of windows already final are handed back as late and dropped: they were counted or
/// recorded as late before.
async fn feed(item: &mut Item, stages: &SqlStages, batches: &[RecordBatch]) -> Result<()> {
    for b in batches {
        let b = item.without_skipped(b)?;
        let fed = match stages.get(item.transform.input_table()) {
            Some(s) => s.transform.apply(b).await?,
            None => vec![b],
        };
        for f in &fed {
            item.transform.push(f).await?;
        }
    }
    Ok(())
}

/// The rows `late_events` holds for `item` that were decided late past its committed
/// results, and (for sessions, whose rebuild reads rows regardless of the horizon) those at or
/// after `from` (µs).
async fn late_for(lake: &LakeQuery, item: &Item, from: Option<i64>) -> Result<Skip> {
    let mut sql = format!(
        "SELECT kafka_topic, kafka_partition, kafka_offset FROM \"{LATE_EVENTS_TABLE}\" \
         WHERE transform = {}",
        literal(&item.id)
    );
    if let Some(until) = item.committed_until {
        let mut cond = format!("closed_until > to_timestamp_micros({until})");
        if let Some(from) = from {
            cond.push_str(&format!(" OR event_time >= to_timestamp_micros({from})"));
        }
        sql.push_str(&format!(" AND ({cond})"));
    }
    let batches = lake
        .sql(&sql)
        .await
        .with_context(|| format!("transforms.{}: reading {LATE_EVENTS_TABLE}", item.id))?;
    let mut skip = Skip::new();
    for b in &batches {
        let topics = cast(b.column(0), &DataType::Utf8)?;
        let topics = topics.as_string::<i32>();
        let partitions = b.column(1).as_primitive::<Int32Type>();
        let offsets = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            skip.insert((
                topics.value(i).to_string(),
                partitions.value(i),
                offsets.value(i),
            ));
        }
    }
    Ok(skip)
}

impl Item {
    /// `batch` less the rows in [`Item::skip`], which are forgotten as they are met (each
    /// offset is delivered once more at most).
    pub(super) fn without_skipped(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        if self.skip.is_empty() {
            return Ok(batch.clone());
        }
        let (Some(t), Some(p), Some(o)) = (
            batch.column_by_name("kafka_topic"),
            batch.column_by_name("kafka_partition"),
            batch.column_by_name("kafka_offset"),
        ) else {
            return Ok(batch.clone());
        };
        let t = cast(t, &DataType::Utf8)?;
        let (t, p, o) = (
            t.as_string::<i32>(),
            cast(p, &DataType::Int32)?,
            cast(o, &DataType::Int64)?,
        );
        let (p, o) = (p.as_primitive::<Int32Type>(), o.as_primitive::<Int64Type>());
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                if t.is_null(i) || p.is_null(i) || o.is_null(i) {
                    return Some(true);
                }
                let key = (t.value(i).to_string(), p.value(i), o.value(i));
                Some(!self.skip.remove(&key))
            })
            .collect();
        Ok(arrow::compute::filter_record_batch(batch, &keep)?)
    }
}

#[cfg(test)]
mod tests {
    use super::literal;

    #[test]
    fn ids_are_quoted_as_sql_strings() {
        assert_eq!(literal("auth_rate"), "'auth_rate'");
        assert_eq!(literal("o'neil"), "'o''neil'");
    }
}
