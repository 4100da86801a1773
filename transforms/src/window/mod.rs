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
//!
//! Rows go in through [`push`], results come out through [`output`]; this file holds the
//! transform's time: what is closed, and when a window may close.

mod output;
mod plan;
mod push;
mod session;
mod state;
pub mod watermark;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use output::output_schema;
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
