//! Results out: the current values of open windows (early results) and the final values
//! of closed ones, evaluated from the partial states and run through the SQL above the
//! aggregation, with each row's window bounds put first.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};

use super::plan::{window_time_type, WINDOW_END, WINDOW_START};
use super::state::StateRows;
use super::{WindowResults, WindowTransform};
use crate::{Error, Result};

impl WindowTransform {
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
    pub(super) async fn results(&self, rows: &StateRows) -> Result<Vec<RecordBatch>> {
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
pub(super) fn output_schema(post: &Schema) -> Result<SchemaRef> {
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
