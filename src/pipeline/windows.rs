//! The window transforms of a running pipeline: fed the rows each lake table accepted, closing
//! windows at commits, publishing results on `/metrics` and in their Delta tables, and
//! rebuilding their open windows from the lake on start.
//!
//! Exactly-once, across crashes: a row reaches the windows only once its table has accepted it
//! (rows the table already held are filtered out before), and a commit goes in four steps:
//! close the windows the watermark passed, commit late events, then the event tables, then
//! each window's final results with the window end up to which they are final. After a crash, the results table says which windows were
//! written; every later window is rebuilt from the rows already in the lake, and Kafka
//! resumes right after them. See docs/DESIGN-NOTES.md, "Windows".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use paystream_core::config::{
    Config, TransformConfig, WindowKind as ConfigKind, WindowTransformConfig,
};
use paystream_core::schema::{late_events_schema, LATE_EVENTS_TABLE};
use paystream_sinks::delta::{LakeLocation, LakeTable, OffsetRange, PartitionKey, ResultsTable};
use paystream_transforms::window::watermark::Watermarks;
use paystream_transforms::window::{WindowKind, WindowOptions, WindowTransform};

mod rebuild;

use super::sql_stages::SqlStages;
use super::window_metrics::{self, Shown};
use crate::metrics::{PipelineMetrics, TransformLabels};

/// A partition silent this long stops holding the watermark back.
const IDLE_PARTITION: Duration = Duration::from_secs(10);

/// How often windows are looked at when no early results are asked for.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Event times further than this ahead of the wall clock do not move the watermark.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Wall clock plus [`MAX_CLOCK_SKEW`], µs.
fn horizon() -> i64 {
    let skew = i64::try_from(MAX_CLOCK_SKEW.as_micros()).unwrap_or(i64::MAX);
    chrono::Utc::now().timestamp_micros().saturating_add(skew)
}

struct Item {
    id: String,
    cfg: WindowTransformConfig,
    transform: WindowTransform,
    results: ResultsTable,
    /// Final results closed since the last commit.
    pending_final: Vec<RecordBatch>,
    /// The last closed window's final results, and the newest open window's current ones.
    last: Vec<RecordBatch>,
    current: Vec<RecordBatch>,
    /// Up to where the results table holds final results.
    committed_until: Option<i64>,
    /// Rows not to count: decided late by a run whose results did not commit.
    skip: rebuild::Skip,
    /// The result columns that are group keys.
    keys: Vec<String>,
}

/// Every window transform of the pipeline.
pub(super) struct Windows {
    pipeline: String,
    /// The sql transforms windows may read.
    stages: SqlStages,
    items: Vec<Item>,
    /// One watermark per time column the windows use: a window on `ingest_time` must not be
    /// closed by `event_time`'s progress.
    watermarks: BTreeMap<String, Watermarks>,
    late: LakeTable,
    metrics: Arc<PipelineMetrics>,
    emit_every: Option<Duration>,
    last_emit: Instant,
    /// Per batch pushed since the last emission, its oldest on-time event time (µs), for the
    /// freshness histogram.
    pushed_times: Vec<i64>,
}

fn kind_of(cfg: &WindowTransformConfig) -> WindowKind {
    match cfg.window {
        ConfigKind::Tumbling { size } => WindowKind::Tumbling { size },
        ConfigKind::Hopping { size, slide } => WindowKind::Hopping { size, slide },
        ConfigKind::Session { gap } => WindowKind::Session { gap },
    }
}

/// The event tables as the lake stores them (dictionaries as plain strings): what accepted
/// rows look like.
fn lake_tables(cfg: &Config) -> Vec<(String, SchemaRef)> {
    cfg.schema
        .tables()
        .map(|t| {
            let schema = t.arrow_schema();
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Dictionary(_, v) => {
                        f.as_ref().clone().with_data_type(v.as_ref().clone())
                    }
                    _ => f.as_ref().clone(),
                })
                .collect();
            (t.name.clone(), Arc::new(Schema::new(fields)))
        })
        .collect()
}

/// Plan every window transform's SQL against the pipeline's tables, as `paystream run` would:
/// one message per transform that cannot run (`validate` reports them).
pub async fn check(cfg: &Config) -> Vec<String> {
    let source = cfg
        .sources
        .iter()
        .find(|(_, s)| matches!(s, paystream_core::config::SourceConfig::Kafka(_)))
        .map(|(id, _)| id.as_str())
        .unwrap_or("kafka");
    let mut tables = lake_tables(cfg);
    let (stages, mut problems) = SqlStages::plan(cfg, source, &tables).await;
    problems.extend(table_clashes(cfg));
    tables.extend(stages.outputs());
    for (id, t) in &cfg.transforms {
        let TransformConfig::Window(w) = t else {
            continue;
        };
        if let Err(e) = plan_window(w, source, &stages, &tables).await {
            problems.push(format!("{}: transforms.{id}: {e:#}", cfg.file));
        }
    }
    problems
}

/// Window results tables that would land in an event table (`[schema.tables]` may add
/// names the config parser cannot know) or in another window's table.
fn table_clashes(cfg: &Config) -> Vec<String> {
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    let mut problems = Vec::new();
    for (id, t) in &cfg.transforms {
        let TransformConfig::Window(w) = t else {
            continue;
        };
        if cfg.schema.tables().any(|e| e.name == w.table) {
            problems.push(format!(
                "{}: transforms.{id}.table: `{}` is an event table; pick another name",
                cfg.file, w.table
            ));
        } else if let Some(other) = owners.insert(w.table.as_str(), id.as_str()) {
            problems.push(format!(
                "{}: transforms.{id}.table: `{}` is already the table of transforms.{other}; \
                 each window needs its own",
                cfg.file, w.table
            ));
        }
    }
    problems
}

/// Plan one window transform over `tables` (the source's and the sql transforms' outputs).
async fn plan_window(
    w: &WindowTransformConfig,
    source: &str,
    stages: &SqlStages,
    tables: &[(String, SchemaRef)],
) -> Result<WindowTransform> {
    let options = WindowOptions {
        kind: kind_of(w),
        time_column: w.time_column.clone(),
        allowed_lateness: w.allowed_lateness,
    };
    let transform = WindowTransform::try_new(tables, &w.sql, options)
        .await
        .context("sql")?;
    let read = transform.input_table();
    for input in &w.inputs {
        if input == source {
            if stages.get(read).is_some() {
                bail!("sql: reads `{read}`, a sql transform, so `inputs` must name it");
            }
        } else if stages.get(input).is_some() {
            if read != input {
                bail!("sql: reads `{read}`, but its input is the sql transform `{input}`: write FROM {input}");
            }
        } else {
            bail!(
                "inputs: a window reads the kafka source `{source}` (its tables by name in FROM) \
                 or a sql transform reading it"
            );
        }
    }
    Ok(transform)
}

impl Windows {
    /// Open the window transforms reading `source` (the kafka source's id), if any, and
    /// rebuild their open windows from the lake.
    pub(super) async fn open(
        cfg: &Config,
        source: &str,
        location: &LakeLocation,
        target_file_size: u64,
        metrics: Arc<PipelineMetrics>,
    ) -> Result<Option<Self>> {
        let mut tables = lake_tables(cfg);
        let (stages, mut problems) = SqlStages::plan(cfg, source, &tables).await;
        problems.extend(table_clashes(cfg));
        if let Some(p) = problems.first() {
            bail!("{p}");
        }
        tables.extend(stages.outputs());
        let mut items = Vec::new();
        for (id, t) in &cfg.transforms {
            let TransformConfig::Window(w) = t else {
                continue;
            };
            let transform = plan_window(w, source, &stages, &tables)
                .await
                .map_err(|e| anyhow::anyhow!("{}: transforms.{id}: {e:#}", cfg.file))?;
            let app_id = format!("{}/window/{id}", cfg.pipeline.name);
            let mut results =
                ResultsTable::open_or_create(location, &w.table, transform.output_schema(), app_id)
                    .await
                    .with_context(|| format!("transforms.{id}: opening table {}", w.table))?;
            let committed_until = results.closed_until().await?;
            let keys = transform.key_columns();
            items.push(Item {
                id: id.clone(),
                cfg: w.clone(),
                transform,
                results,
                pending_final: Vec::new(),
                last: Vec::new(),
                current: Vec::new(),
                committed_until,
                keys,
                skip: rebuild::Skip::new(),
            });
        }
        if items.is_empty() {
            if !stages.is_empty() {
                bail!(
                    "{}: sql transforms are declared but no window reads them; in `paystream \
                     run` a sql transform's output feeds window transforms only",
                    cfg.file
                );
            }
            return Ok(None);
        }
        let late = LakeTable::open_or_create(
            location,
            LATE_EVENTS_TABLE,
            late_events_schema(),
            target_file_size,
        )
        .await
        .context("opening the late_events table")?;
        let emit_every = items.iter().filter_map(|i| i.cfg.emit_every).min();
        let watermarks = items
            .iter()
            .map(|i| (i.cfg.time_column.clone(), Watermarks::new(IDLE_PARTITION)))
            .collect();
        let mut w = Self {
            pipeline: cfg.pipeline.name.clone(),
            stages,
            items,
            watermarks,
            late,
            metrics,
            emit_every,
            last_emit: Instant::now(),
            pushed_times: Vec::new(),
        };
        w.rebuild(location).await?;
        Ok(Some(w))
    }

    /// The partitions a resume covers: arm the late_events table's filter, and let them hold
    /// the watermark back until they deliver.
    pub(super) async fn resume(&mut self, partitions: &[PartitionKey]) -> Result<()> {
        self.late.load_offsets(&self.pipeline, partitions).await?;
        let now = Instant::now();
        for w in self.watermarks.values_mut() {
            for p in partitions {
                w.assign(&p.topic, p.partition, now);
            }
        }
        Ok(())
    }

    /// Forget revoked partitions in the watermark.
    pub(super) fn revoke(&mut self, partitions: &[(String, i32)]) {
        for w in self.watermarks.values_mut() {
            for (t, p) in partitions {
                w.remove(t, *p);
            }
        }
    }

    /// Rows newly accepted by their lake tables.
    pub(super) async fn push(
        &mut self,
        accepted: &[(String, RecordBatch)],
        ranges: &[OffsetRange],
    ) -> Result<()> {
        let now = Instant::now();
        // Every table's rows move their partition's watermarks, whichever windows read them:
        // the watermark is the pipeline's, one per time column.
        let horizon = horizon();
        for (_, batch) in accepted {
            for (column, w) in &mut self.watermarks {
                w.observe(batch, column, now, horizon);
            }
        }
        let routed = if self.stages.is_empty() {
            accepted.to_vec()
        } else {
            self.stages.route(accepted).await?
        };
        for item in &mut self.items {
            // Rows decided late before a restart stay out of this transform's windows.
            let own;
            let routed = if item.skip.is_empty() {
                &routed
            } else {
                let mut kept = Vec::with_capacity(accepted.len());
                for (table, batch) in accepted {
                    kept.push((table.clone(), item.without_skipped(batch)?));
                }
                own = if self.stages.is_empty() {
                    kept
                } else {
                    self.stages.route(&kept).await?
                };
                &own
            };
            for (table, batch) in routed {
                if item.transform.input_table() != table {
                    continue;
                }
                if let Some(late) = item.transform.push(batch).await? {
                    let n = late.rows.num_rows() as u64;
                    let rows = late_rows(
                        &item.id,
                        table,
                        &item.cfg.time_column,
                        &late.rows,
                        late.closed_until,
                    )?;
                    self.late.write(rows, ranges).await?;
                    self.metrics
                        .late_events
                        .get_or_create(&TransformLabels {
                            transform: item.id.clone(),
                        })
                        .inc_by(n);
                }
                if let Some(t) = oldest_on_time(batch, &item.cfg.time_column, &item.cfg) {
                    self.pushed_times.push(t);
                }
            }
        }
        Ok(())
    }

    /// Whether a commit now would close some window (the watermark moved far enough).
    pub(super) fn would_close(&self) -> bool {
        let now = Instant::now();
        self.items.iter().any(|i| {
            self.watermarks
                .get(&i.cfg.time_column)
                .and_then(|w| w.current(now))
                .is_some_and(|wm| i.transform.would_close(wm))
        })
    }

    /// When the sink loop should next wake for the windows: early results are due, or (when
    /// they are off) a periodic look at whether idle partitions let windows close.
    pub(super) fn next_emit(&self) -> Option<Instant> {
        Some(self.last_emit + self.emit_every.unwrap_or(IDLE_CHECK))
    }

    /// Publish the open windows' current values (early results) on `/metrics`.
    pub(super) async fn emit(&mut self) -> Result<()> {
        self.last_emit = Instant::now();
        for item in &mut self.items {
            if item.cfg.emit_every.is_none() {
                continue;
            }
            let snapshot = item.transform.snapshot().await?;
            item.current = shown(&item.transform, &item.keys, snapshot.batches)?;
        }
        self.publish();
        Ok(())
    }

    /// Close windows the watermark passed (step 1 of a commit).
    pub(super) async fn advance(&mut self) -> Result<()> {
        let now = Instant::now();
        let wall = chrono::Utc::now().timestamp_micros();
        let mut closed = false;
        let mut delay: Option<i64> = None;
        for item in &mut self.items {
            let Some(wm) = self
                .watermarks
                .get(&item.cfg.time_column)
                .and_then(|w| w.current(now))
            else {
                continue;
            };
            let behind = wall.saturating_sub(wm);
            delay = Some(delay.map_or(behind, |d| d.max(behind)));
            if let Some(r) = item.transform.advance(wm).await? {
                item.last = shown(&item.transform, &item.keys, r.batches.clone())?;
                item.pending_final.extend(r.batches);
                closed = true;
            }
        }
        if let Some(d) = delay {
            self.metrics
                .watermark_delay_seconds
                .set(d.max(0) as f64 / 1e6);
        }
        if closed {
            self.publish();
        }
        Ok(())
    }

    /// Commit late events with the offsets the lake is about to commit (step 2).
    pub(super) async fn commit_late(
        &mut self,
        pending: &BTreeMap<PartitionKey, i64>,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        self.late.commit(&self.pipeline, pending).await?;
        Ok(())
    }

    /// Commit each window's final results with how far they are final (step 4).
    pub(super) async fn commit_results(&mut self) -> Result<()> {
        for item in &mut self.items {
            let until = item.transform.closed_until();
            if item.committed_until.is_some_and(|c| c >= until) && item.pending_final.is_empty() {
                continue;
            }
            if until == i64::MIN {
                continue;
            }
            let batches = std::mem::take(&mut item.pending_final);
            let rows = item
                .results
                .append(batches, until)
                .await
                .with_context(|| format!("committing the results of transforms.{}", item.id))?;
            item.committed_until = Some(until);
            tracing::debug!(transform = %item.id, rows, until, "window results committed");
        }
        Ok(())
    }

    /// Forget what was closed but not committed (a failed commit; the restart rebuilds it).
    pub(super) fn discard(&mut self) {
        self.late.discard();
    }

    fn publish(&mut self) {
        let now_us = chrono::Utc::now().timestamp_micros();
        for t in self.pushed_times.drain(..) {
            self.metrics
                .event_to_metric_seconds
                .observe((now_us.saturating_sub(t).max(0) as f64) / 1e6);
        }
        let shown: Vec<Shown<'_>> = self
            .items
            .iter()
            .filter(|i| i.cfg.metrics)
            .map(|i| Shown {
                id: &i.id,
                max_series: i.cfg.max_series,
                keys: &i.keys,
                windows: vec![("current", &i.current[..]), ("last", &i.last[..])],
            })
            .collect();
        let (text, dropped) = window_metrics::render(&shown);
        for (id, n) in dropped {
            self.metrics
                .window_series_dropped
                .get_or_create(&TransformLabels { transform: id })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.metrics.set_window_text(text);
    }
}

/// What `/metrics` shows of `batches`: the newest window, or for sessions (each key has its
/// own) the newest session of each key.
fn shown(
    transform: &WindowTransform,
    keys: &[String],
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    if transform.is_session() {
        newest_per_key(batches, keys)
    } else {
        newest_window(batches)
    }
}

/// Per value of the `keys` columns, the row with the largest window start.
fn newest_per_key(batches: Vec<RecordBatch>, keys: &[String]) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let all = concat_batches(&first.schema(), &batches)?;
    let columns: Vec<ArrayRef> = keys
        .iter()
        .filter_map(|k| all.column_by_name(k).cloned())
        .collect();
    let converter = arrow::row::RowConverter::new(
        columns
            .iter()
            .map(|c| arrow::row::SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&columns)?;
    let starts = all.column(0).as_primitive::<TimestampMicrosecondType>();
    let mut newest: std::collections::HashMap<arrow::row::Row<'_>, (i64, u32)> =
        std::collections::HashMap::new();
    for i in 0..all.num_rows() {
        if starts.is_null(i) {
            continue;
        }
        let (start, idx) = (starts.value(i), u32::try_from(i)?);
        let e = newest.entry(rows.row(i)).or_insert((start, idx));
        if start > e.0 {
            *e = (start, idx);
        }
    }
    let mut idx: Vec<u32> = newest.into_values().map(|(_, i)| i).collect();
    idx.sort_unstable();
    let idx = arrow::array::UInt32Array::from(idx);
    let columns = all
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![RecordBatch::try_new(all.schema(), columns)?])
}

/// The rows of the newest window (largest start) in `batches`.
fn newest_window(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let newest = batches
        .iter()
        .filter_map(|b| {
            b.column(0)
                .as_primitive_opt::<TimestampMicrosecondType>()
                .and_then(|a| a.iter().flatten().max())
        })
        .max();
    let Some(newest) = newest else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for b in batches {
        let starts = b.column(0).as_primitive::<TimestampMicrosecondType>();
        let mask: arrow::array::BooleanArray =
            starts.iter().map(|s| Some(s == Some(newest))).collect();
        let kept = arrow::compute::filter_record_batch(&b, &mask)?;
        if kept.num_rows() > 0 {
            out.push(kept);
        }
    }
    Ok(out)
}

/// For freshness: the oldest event time of `batch` that is within the allowed lateness of its
/// newest (late events would measure how late they were, not how fresh the metrics are).
fn oldest_on_time(batch: &RecordBatch, column: &str, cfg: &WindowTransformConfig) -> Option<i64> {
    let times = batch
        .column_by_name(column)?
        .as_primitive_opt::<TimestampMicrosecondType>()?;
    let newest = times.iter().flatten().max()?;
    let lateness = i64::try_from(cfg.allowed_lateness.as_micros()).unwrap_or(i64::MAX);
    let floor = newest.saturating_sub(lateness);
    times.iter().flatten().filter(|t| *t >= floor).min()
}

/// `late_events` rows for `rows` (rows of `table` that were late for `transform`).
fn late_rows(
    transform: &str,
    table: &str,
    time_column: &str,
    rows: &RecordBatch,
    closed_until: i64,
) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let col = |name: &str, t: &DataType| -> Result<ArrayRef> {
        match rows.column_by_name(name) {
            Some(c) => Ok(cast(c, t)?),
            None => Ok(arrow::array::new_null_array(t, n)),
        }
    };
    let ts = paystream_transforms::window::window_time_type();
    let now = chrono::Utc::now().timestamp_micros();
    let event_time = col(time_column, &ts)?;
    let dates: Date32Array = event_time
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .map(|t| {
            let us = t.unwrap_or(now);
            Some(i32::try_from(us.div_euclid(86_400_000_000)).unwrap_or(0))
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![transform; n])),
        Arc::new(StringArray::from(vec![table; n])),
        col("event_id", &DataType::Utf8)?,
        col("event_type", &DataType::Utf8)?,
        event_time,
        Arc::new(TimestampMicrosecondArray::from(vec![closed_until; n]).with_timezone("UTC")),
        col("kafka_topic", &DataType::Utf8)?,
        col("kafka_partition", &DataType::Int32)?,
        col("kafka_offset", &DataType::Int64)?,
        col("kafka_timestamp", &ts)?,
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        Arc::new(dates),
    ];
    let schema = late_events_schema();
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .context("building late_events rows (the input table lacks kafka columns?)")?;
    Ok(concat_batches(&schema, [&batch])?)
}
