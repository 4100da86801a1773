//! Windowed aggregations on event time: tumbling, hopping and session windows whose
//! aggregation is written in SQL.
//!
//! [`WindowTransform`] is fed the rows of its input table as they are committed, assigns each
//! row to its window(s) by event time, and folds it into mergeable per-group state
//! ([`state`]). The caller drives time: [`WindowTransform::advance`] closes the windows that
//! the watermark ([`watermark`]) has passed by more than the allowed lateness and returns their
//! final results; [`WindowTransform::snapshot`] returns the current values of the open ones (the
//! early results). A row whose windows are all closed already is handed back as late instead of
//! being counted.
//!
//! Results are exact whatever the batch boundaries and the order of rows within the
//! lateness, because only DataFusion's accumulator states are kept and merging them is exact.
//!
//! Session windows ([`session`]) differ in two ways: a session's bounds are known only once it
//! closes (it grows with each event of its key and may merge with another), and a row is late
//! when its event time is before the closed horizon, since only then can it touch a session
//! already closed.

mod plan;
mod session;
mod state;
pub mod watermark;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};

use plan::Planned;
pub use plan::{window_time_type, WINDOW_END, WINDOW_START};
use session::Sessions;
use state::{GroupState, StateRows};

use crate::{Error, Result};

/// How events are grouped in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back windows of `size`.
    Tumbling { size: Duration },
    /// Windows of `size` starting every `slide`; an event is in `size / slide` of them.
    Hopping { size: Duration, slide: Duration },
    /// Per group key, events less than `gap` apart form one window, which ends `gap` after
    /// its last event.
    Session { gap: Duration },
}

impl WindowKind {
    /// (size, slide) in µs of fixed windows; `None` for sessions.
    fn fixed(self) -> Option<(i64, i64)> {
        match self {
            WindowKind::Tumbling { size } => Some((micros(size), micros(size))),
            WindowKind::Hopping { size, slide } => Some((micros(size), micros(slide))),
            WindowKind::Session { .. } => None,
        }
    }
}

/// The start of the earliest window of length `size` (every `slide`) holding time `t`, if all
/// of that time's windows fit in i64 microseconds.
fn first_window(t: i64, size: i64, slide: i64) -> Option<i64> {
    let last = t.div_euclid(slide).checked_mul(slide)?;
    let first = last.checked_sub(size)?.checked_add(slide)?;
    last.checked_add(size)?;
    Some(first)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

/// What a window transform needs besides its SQL.
#[derive(Debug, Clone)]
pub struct WindowOptions {
    pub kind: WindowKind,
    /// The input column holding event time (a timestamp).
    pub time_column: String,
    /// How long after the watermark passes a window's end it still takes late events.
    pub allowed_lateness: Duration,
}

/// Results of one or more windows, with [`WINDOW_START`] and [`WINDOW_END`] first.
#[derive(Debug, Clone)]
pub struct WindowResults {
    /// True for the results of windows that just closed (they will not change again).
    pub final_results: bool,
    pub batches: Vec<RecordBatch>,
}

/// Rows that arrived after some of their windows had closed (they were counted in the
/// others, if any).
#[derive(Debug, Clone)]
pub struct LateRows {
    /// The rows, as they were given to [`WindowTransform::push`].
    pub rows: RecordBatch,
    /// Every window ending at or before this (µs) was closed when they arrived.
    pub closed_until: i64,
}

/// One windowed aggregation.
pub struct WindowTransform {
    planned: Planned,
    options: WindowOptions,
    state: GroupState,
    /// Windows ending at or before this time (µs) are closed: their results are final.
    closed_until: i64,
    /// The earliest start among the open windows holding groups.
    min_open_start: Option<i64>,
    /// The open sessions, for session windows.
    sessions: Option<Sessions>,
    output_schema: SchemaRef,
}

impl WindowTransform {
    /// Plan `sql` over the `tables` it may read (name and schema; it must read one).
    pub async fn try_new(
        tables: &[(String, SchemaRef)],
        sql: &str,
        options: WindowOptions,
    ) -> Result<Self> {
        let planned = Planned::try_new(tables, sql).await?;
        let input = planned.input_schema.clone();
        match input.field_with_name(&options.time_column) {
            Ok(f) if matches!(f.data_type(), DataType::Timestamp(_, _)) => {}
            Ok(f) => {
                return Err(Error::Invalid(format!(
                    "time column {} of table {} is a {}, not a timestamp",
                    options.time_column,
                    planned.table,
                    f.data_type()
                )))
            }
            Err(_) => {
                return Err(Error::Invalid(format!(
                    "table {} has no time column {}",
                    planned.table, options.time_column
                )))
            }
        }
        if let WindowKind::Hopping { size, slide } = options.kind {
            if slide.is_zero() || slide > size || micros(size) % micros(slide) != 0 {
                return Err(Error::Invalid(format!(
                    "a hopping window's size ({size:?}) must be a whole multiple of its slide \
                     ({slide:?})"
                )));
            }
        }
        let output_schema = output_schema(&planned.post_schema())?;
        let state = GroupState::new(planned.group_schema.clone(), planned.aggs.clone())?;
        let sessions = new_sessions(&options, &planned)?;
        Ok(Self {
            planned,
            options,
            state,
            closed_until: i64::MIN,
            min_open_start: None,
            sessions,
            output_schema,
        })
    }

    /// Forget every open window and the closed horizon, as if just created.
    pub fn reset(&mut self) -> Result<()> {
        self.state = GroupState::new(self.planned.group_schema.clone(), self.planned.aggs.clone())?;
        self.sessions = new_sessions(&self.options, &self.planned)?;
        self.closed_until = i64::MIN;
        self.min_open_start = None;
        Ok(())
    }

    /// Whether these are session windows (whose bounds grow with their events).
    pub fn is_session(&self) -> bool {
        self.sessions.is_some()
    }

    /// For session windows, the earliest start (µs) among the sessions ending after `until`:
    /// what a rebuild from the lake checks to know it read back far enough.
    pub fn earliest_session_start(&self, until: i64) -> Option<i64> {
        self.sessions.as_ref()?.earliest_open_start(until)
    }

    /// The table the SQL reads.
    pub fn input_table(&self) -> &str {
        &self.planned.table
    }

    /// The schema rows are expected in: the input table's, plus [`WINDOW_START`] at the end
    /// (which [`Self::push`] adds itself).
    pub fn input_schema(&self) -> SchemaRef {
        self.planned.input_schema.clone()
    }

    /// The results' schema: [`WINDOW_START`], [`WINDOW_END`], then the SQL's columns.
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    /// Windows ending at or before this (µs) are closed.
    pub fn closed_until(&self) -> i64 {
        self.closed_until
    }

    /// Treat windows ending at or before `until` (µs) as closed already, e.g. because their
    /// final results were written before a restart: their state, if any, is dropped without
    /// results.
    pub fn set_closed_until(&mut self, until: i64) -> Result<()> {
        if until <= self.closed_until {
            return Ok(());
        }
        self.closed_until = until;
        self.split_closed(until)?;
        if let Some(s) = &mut self.sessions {
            s.close(until);
        }
        Ok(())
    }

    /// Groups held over all open windows.
    pub fn groups(&self) -> usize {
        self.state.len()
    }

    /// Bytes of aggregation state held.
    pub fn state_bytes(&self) -> usize {
        self.state.size()
    }

    /// Fold `batch` (rows of the input table) into its windows. Rows that missed a closed
    /// window, or that have no event time, are returned as late.
    pub async fn push(&mut self, batch: &RecordBatch) -> Result<Option<LateRows>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let times = self.times(batch)?;
        let Some((size, slide)) = self.options.kind.fixed() else {
            return self.push_sessions(batch, &times).await;
        };
        let mut rows: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut starts: Vec<i64> = Vec::with_capacity(batch.num_rows());
        let mut late: Vec<u32> = Vec::new();
        for (i, t) in times.iter().enumerate() {
            let row = u32::try_from(i).map_err(|_| Error::Invalid("batch too large".into()))?;
            let Some(t) = t else {
                late.push(row);
                continue;
            };
            // A time whose windows cannot be represented (within a window of the i64 range,
            // i.e. hundreds of thousands of years away) is reported late, never wrapped.
            let Some(first) = first_window(t, size, slide) else {
                late.push(row);
                continue;
            };
            // A row that misses any of its windows (hopping) is reported late, so that every
            // row is either in all its windows or in the late rows.
            let mut missed = false;
            for k in 0..size / slide {
                let start = first + k * slide;
                if start + size > self.closed_until {
                    rows.push(row);
                    starts.push(start);
                } else {
                    missed = true;
                }
            }
            if missed {
                late.push(row);
            }
        }
        if let Some(&earliest) = starts.iter().min() {
            self.min_open_start = Some(self.min_open_start.map_or(earliest, |m| m.min(earliest)));
        }
        if !rows.is_empty() {
            let expanded = if rows.len() == batch.num_rows() && size == slide {
                append_window(batch, starts, &self.planned.input_schema)?
            } else {
                let idx = UInt32Array::from(rows);
                let columns = batch
                    .columns()
                    .iter()
                    .map(|c| take(c.as_ref(), &idx, None))
                    .collect::<Result<Vec<_>, _>>()?;
                let taken = RecordBatch::try_new(batch.schema(), columns)?;
                append_window(&taken, starts, &self.planned.input_schema)?
            };
            for pre in self.planned.run_pre(expanded).await? {
                self.fold(&pre)?;
            }
        }
        self.late_rows(batch, late)
    }

    /// [`Self::push`] for sessions: a row is late when its time is before the closed horizon
    /// (only then can it touch a closed session); the others get their own time as window
    /// start until [`Self::fold`] puts them in their sessions.
    async fn push_sessions(
        &mut self,
        batch: &RecordBatch,
        times: &arrow::array::PrimitiveArray<TimestampMicrosecondType>,
    ) -> Result<Option<LateRows>> {
        let mut rows: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut late: Vec<u32> = Vec::new();
        for (i, t) in times.iter().enumerate() {
            let row = u32::try_from(i).map_err(|_| Error::Invalid("batch too large".into()))?;
            match t {
                Some(t) if t >= self.closed_until => rows.push(row),
                _ => late.push(row),
            }
        }
        if !rows.is_empty() {
            let taken = if late.is_empty() {
                batch.clone()
            } else {
                take_rows(batch, rows)?
            };
            let starts = self.times(&taken)?.values().to_vec();
            let expanded = append_window(&taken, starts, &self.planned.input_schema)?;
            for pre in self.planned.run_pre(expanded).await? {
                self.fold(&pre)?;
            }
        }
        self.late_rows(batch, late)
    }

    /// The rows `late` of `batch`, as [`LateRows`].
    fn late_rows(&self, batch: &RecordBatch, late: Vec<u32>) -> Result<Option<LateRows>> {
        if late.is_empty() {
            return Ok(None);
        }
        Ok(Some(LateRows {
            rows: take_rows(batch, late)?,
            closed_until: self.closed_until,
        }))
    }

    /// Event times of `batch` in µs.
    fn times(
        &self,
        batch: &RecordBatch,
    ) -> Result<arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
        let col = batch
            .column_by_name(&self.options.time_column)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "batch has no time column {}",
                    self.options.time_column
                ))
            })?;
        let col = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        Ok(col.as_primitive::<TimestampMicrosecondType>().clone())
    }

    /// Evaluate the group keys, arguments and filters over one batch of the pre-aggregation
    /// output and fold it into the state.
    fn fold(&mut self, pre: &RecordBatch) -> Result<()> {
        if pre.num_rows() == 0 {
            return Ok(());
        }
        let n = pre.num_rows();
        let mut keys = self
            .planned
            .group_exprs
            .iter()
            .map(|e| e.evaluate(pre)?.into_array(n))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let mut merged = None;
        if let Some(sessions) = &mut self.sessions {
            // The window key holds each row's event time; it becomes the row's session id.
            let times = cast(&keys[0], &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let assigned = sessions.assign(times.as_primitive(), &keys[1..])?;
            keys[0] = Arc::new(TimestampMicrosecondArray::from(assigned.ids).with_timezone("UTC"));
            merged = Some(assigned.merged).filter(|m| !m.is_empty());
        }
        let args = self
            .planned
            .aggs
            .iter()
            .map(|a| {
                a.expressions()
                    .iter()
                    .map(|e| e.evaluate(pre)?.into_array(n))
                    .collect::<datafusion::common::Result<Vec<_>>>()
            })
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let filters = self
            .planned
            .filters
            .iter()
            .map(|f| match f {
                None => Ok(None),
                Some(f) => {
                    let mask = f.evaluate(pre)?.into_array(n)?;
                    Ok(Some(mask.as_boolean().clone()))
                }
            })
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        self.state.update(&keys, &args, &filters)?;
        if let Some(merged) = merged {
            // Sessions that merged: their groups move to the surviving session's id, where
            // merging the partial states adds them up.
            let mut rows = self.state.take()?;
            let ids: TimestampMicrosecondArray = rows
                .window_starts()?
                .iter()
                .map(|id| id.map(|id| merged.get(&id).copied().unwrap_or(id)))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC");
            rows.keys[0] = Arc::new(ids);
            self.state.merge(&rows)?;
        }
        Ok(())
    }

    /// Close every window whose end plus the allowed lateness is at or before `watermark`
    /// (µs) and return their final results; `None` when none closed.
    pub async fn advance(&mut self, watermark: i64) -> Result<Option<WindowResults>> {
        let until = self.closable_until(watermark);
        if until <= self.closed_until {
            return Ok(None);
        }
        if self.sessions.as_ref().is_some_and(|s| !s.may_close(until)) {
            return Ok(None);
        }
        let closed = self.split_closed(until)?;
        let Some(s) = &mut self.sessions else {
            self.closed_until = until;
            let Some(closed) = closed else {
                return Ok(None);
            };
            return Ok(Some(WindowResults {
                final_results: true,
                batches: self.results(&closed).await?,
            }));
        };
        let Some(closed) = closed else {
            // Nothing ended after all (the sessions' bound was low): the horizon stays, since
            // it is also what makes rows late and each move is a commit of results.
            s.close(until);
            return Ok(None);
        };
        self.closed_until = until;
        // The results need the closing sessions' bounds: forget them only afterwards.
        let batches = self.results(&closed).await?;
        if let Some(s) = &mut self.sessions {
            s.close(until);
        }
        Ok(Some(WindowResults {
            final_results: true,
            batches,
        }))
    }

    /// Take the groups of windows ending at or before `until` out of the state, keeping the
    /// others; `None` when there are none. Sessions stay known (their bounds are needed for
    /// the results): the caller forgets them.
    fn split_closed(&mut self, until: i64) -> Result<Option<StateRows>> {
        let rows = self.state.take()?;
        if rows.len() == 0 {
            self.min_open_start = None;
            return Ok(None);
        }
        let ids = rows.window_starts()?;
        let closing: BooleanArray = match (&self.sessions, self.options.kind.fixed()) {
            (Some(s), _) => ids
                .iter()
                .map(|id| id.map(|id| s.ends_by(id, until)))
                .collect(),
            (None, Some((size, _))) => ids
                .iter()
                .map(|s| s.map(|s| s.saturating_add(size) <= until))
                .collect(),
            (None, None) => {
                return Err(Error::Invalid(
                    "internal: session windows without sessions".into(),
                ))
            }
        };
        let open = arrow::compute::not(&closing)?;
        let still_open = rows.filter(&open)?;
        if self.sessions.is_none() {
            self.min_open_start = still_open.window_starts()?.iter().flatten().min();
        }
        self.state.merge(&still_open)?;
        let closed = rows.filter(&closing)?;
        Ok((closed.len() > 0).then_some(closed))
    }

    /// Up to where windows may close at `watermark`: the watermark less the allowed lateness,
    /// for fixed windows down to a window end, so that the closed horizon only moves when a
    /// window can close.
    fn closable_until(&self, watermark: i64) -> i64 {
        let lateness = i64::try_from(self.options.allowed_lateness.as_micros()).unwrap_or(i64::MAX);
        let until = watermark.saturating_sub(lateness);
        match self.options.kind.fixed() {
            // Window ends are whole multiples of the slide (the size is one).
            Some((_, slide)) => until.div_euclid(slide).saturating_mul(slide),
            None => until,
        }
    }

    /// Whether [`Self::advance`] at `watermark` would close a window holding groups.
    pub fn would_close(&self, watermark: i64) -> bool {
        let until = self.closable_until(watermark);
        match (&self.sessions, self.options.kind.fixed()) {
            (Some(s), _) => until > self.closed_until && s.may_close(until),
            (None, Some((size, _))) => self
                .min_open_start
                .is_some_and(|s| s.saturating_add(size) <= until),
            (None, None) => false,
        }
    }

    /// The names of the group keys (after the window start), as the aggregation names them:
    /// the result columns of that name are keys even when numeric.
    pub fn key_columns(&self) -> Vec<String> {
        self.planned
            .group_schema
            .fields()
            .iter()
            .skip(1)
            .map(|f| f.name().clone())
            .collect()
    }

    /// The current results of every open window (early results); empty when none is open.
    pub async fn snapshot(&mut self) -> Result<WindowResults> {
        let rows = self.state.take()?;
        self.state.merge(&rows)?;
        Ok(WindowResults {
            final_results: false,
            batches: self.results(&rows).await?,
        })
    }

    /// Final values of `rows`, run through the SQL above the aggregation window by window
    /// (so that `ORDER BY … LIMIT` and `HAVING` apply per window). Sessions, one per key and
    /// each its own window, go through it together.
    async fn results(&self, rows: &StateRows) -> Result<Vec<RecordBatch>> {
        if rows.len() == 0 {
            return Ok(Vec::new());
        }
        let columns = self.state.evaluate(rows)?;
        let groups = RecordBatch::try_new(self.planned.agg_schema.clone(), columns)?;
        let mut out = Vec::new();
        if self.sessions.is_some() {
            for b in self.planned.run_post(groups).await? {
                if b.num_rows() > 0 {
                    out.push(self.finish(&b)?);
                }
            }
            return Ok(out);
        }
        let starts = groups
            .column(0)
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let mut distinct: Vec<i64> = starts.iter().flatten().collect();
        distinct.sort_unstable();
        distinct.dedup();
        for start in distinct {
            let mask: BooleanArray = starts.iter().map(|s| Some(s == Some(start))).collect();
            let one = arrow::compute::filter_record_batch(&groups, &mask)?;
            for b in self.planned.run_post(one).await? {
                if b.num_rows() > 0 {
                    out.push(self.finish(&b)?);
                }
            }
        }
        Ok(out)
    }

    /// Put [`WINDOW_START`] first and [`WINDOW_END`] after it (for sessions, the window key
    /// is the session's id until here).
    fn finish(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let at = schema.index_of(WINDOW_START)?;
        let keys = cast(batch.column(at), &window_time_type())?;
        let keys = keys.as_primitive::<TimestampMicrosecondType>();
        let bounds: Vec<Option<(i64, i64)>> = match (&self.sessions, self.options.kind.fixed()) {
            (Some(s), _) => keys
                .iter()
                .map(|id| id.and_then(|id| s.bounds(id)))
                .collect(),
            (None, Some((size, _))) => keys
                .iter()
                .map(|s| s.map(|s| (s, s.saturating_add(size))))
                .collect(),
            (None, None) => Vec::new(),
        };
        if bounds.len() != keys.len() || bounds.iter().any(Option::is_none) {
            return Err(Error::Invalid(
                "internal: a result row has no window bounds".into(),
            ));
        }
        let start: TimestampMicrosecondArray = bounds
            .iter()
            .map(|b| b.map(|b| b.0))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC");
        let end: TimestampMicrosecondArray = bounds
            .iter()
            .map(|b| b.map(|b| b.1))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC");
        let mut columns: Vec<ArrayRef> = vec![Arc::new(start), Arc::new(end)];
        for (i, c) in batch.columns().iter().enumerate() {
            if i != at {
                columns.push(match c.data_type() {
                    DataType::Dictionary(_, values) => cast(c, values)?,
                    _ => c.clone(),
                });
            }
        }
        Ok(RecordBatch::try_new(self.output_schema.clone(), columns)?)
    }
}

/// `post` (the SQL's own output, with [`WINDOW_START`] somewhere) reordered as the results are.
fn output_schema(post: &Schema) -> Result<SchemaRef> {
    let at = post.index_of(WINDOW_START)?;
    let mut fields = vec![
        Field::new(WINDOW_START, window_time_type(), false),
        Field::new(WINDOW_END, window_time_type(), false),
    ];
    for (i, f) in post.fields().iter().enumerate() {
        if i != at {
            if f.name() == WINDOW_END {
                return Err(Error::Invalid(format!(
                    "the window's SQL must not produce a column named {WINDOW_END}; it is added"
                )));
            }
            // Dictionaries become their values: results are few rows, and Delta has no
            // dictionary type.
            fields.push(match f.data_type() {
                DataType::Dictionary(_, values) => {
                    f.as_ref().clone().with_data_type(values.as_ref().clone())
                }
                _ => f.as_ref().clone(),
            });
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The rows `idx` of `batch`.
fn take_rows(batch: &RecordBatch, idx: Vec<u32>) -> Result<RecordBatch> {
    let idx = UInt32Array::from(idx);
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &idx, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// The open sessions for `options`, when its windows are sessions.
fn new_sessions(options: &WindowOptions, planned: &Planned) -> Result<Option<Sessions>> {
    let WindowKind::Session { gap } = options.kind else {
        return Ok(None);
    };
    let keys: Vec<Field> = planned
        .group_schema
        .fields()
        .iter()
        .skip(1)
        .map(|f| f.as_ref().clone())
        .collect();
    Ok(Some(Sessions::try_new(
        micros(gap),
        &Arc::new(Schema::new(keys)),
    )?))
}

/// `batch` with the window-start column appended, as `schema` (the input schema plus it).
fn append_window(batch: &RecordBatch, starts: Vec<i64>, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(starts).with_timezone("UTC"),
    ));
    crate::conform(columns, schema)
}

#[cfg(test)]
mod tests {
    use super::first_window;

    #[test]
    fn windows_of_extreme_times_are_refused_not_wrapped() {
        assert_eq!(first_window(125, 60, 60), Some(120));
        assert_eq!(first_window(-1, 60, 60), Some(-60));
        assert_eq!(first_window(125, 60, 20), Some(80));
        // The window holding i64::MAX would end past it; the one holding i64::MIN would
        // start before it.
        assert_eq!(first_window(i64::MAX, 60, 60), None);
        assert_eq!(first_window(i64::MIN, 60, 60), None);
    }
}
