//! Feeding rows in: each row of the input table is given its window(s) by event time, run
//! through the SQL below the aggregation, and folded into the per-group state. This is
//! where a row is found late, and where session ids replace event times as the window key
//! (merging the state of sessions a row bridged).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, PrimitiveArray, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};

use super::{LateRows, WindowTransform};
use crate::{Error, Result};

impl WindowTransform {
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
                append_window(&take_rows(batch, rows)?, starts, &self.planned.input_schema)?
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
        times: &PrimitiveArray<TimestampMicrosecondType>,
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
    fn times(&self, batch: &RecordBatch) -> Result<PrimitiveArray<TimestampMicrosecondType>> {
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
}

/// The start of the earliest window of length `size` (every `slide`) holding time `t`, if all
/// of that time's windows fit in i64 microseconds.
fn first_window(t: i64, size: i64, slide: i64) -> Option<i64> {
    let last = t.div_euclid(slide).checked_mul(slide)?;
    let first = last.checked_sub(size)?.checked_add(slide)?;
    last.checked_add(size)?;
    Some(first)
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
