//! The `spans` table: rows from an `otlp` source, appended with no Kafka offsets to carry.
//!
//! OTLP has no offsets to commit with the rows, so exactly-once rests on two things instead.
//! The receiver answers a request only after the commit holding its spans (so "OK" means
//! stored, and a client retries only what may be missing), and this sink drops a span whose
//! `(trace_id, span_id)` it has already committed. The second covers the one gap left: a
//! commit that succeeded but whose answer never reached the client (a crash, a timeout), so
//! the client sends the same spans again. The keys of recent commits are kept in memory and,
//! on start, reloaded from the table for the last `dedupe_window`, which outlasts any OTLP
//! exporter's retry schedule (the SDKs give up after about a minute).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::{col, lit, SessionContext};
use deltalake::datafusion::scalar::ScalarValue;
use paystream_core::schema::{spans_schema, SPANS_TABLE};

use crate::delta::{CommitOutcome, LakeLocation, LakeTable};
use crate::{Error, Result};

/// A span's identity.
type Key = (u128, u64);

/// Most span keys remembered for de-duplication (about 40 MB).
const MAX_REMEMBERED: usize = 1_000_000;

/// The `spans` table being appended to.
pub struct SpanSink {
    table: LakeTable,
    remembered: Remembered,
    /// Keys written since the last commit (also de-duplicates within a flush).
    pending: Vec<Key>,
    pending_set: HashSet<Key>,
    first_pending_at: Option<Instant>,
}

struct Remembered {
    set: HashSet<Key>,
    order: VecDeque<Key>,
}

impl Remembered {
    fn insert(&mut self, k: Key) {
        if self.set.insert(k) {
            self.order.push_back(k);
            if self.order.len() > MAX_REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

fn parse_key(trace: &str, span: &str) -> Option<Key> {
    Some((
        u128::from_str_radix(trace, 16).ok()?,
        u64::from_str_radix(span, 16).ok()?,
    ))
}

fn keys_of(batch: &RecordBatch) -> Result<Vec<Option<Key>>> {
    // Read back through DataFusion, strings may come as views: compare them as plain UTF-8.
    let col = |name: &str| -> Result<ArrayRef> {
        let c = batch.column_by_name(name).ok_or_else(|| Error::Schema {
            table: SPANS_TABLE.into(),
            message: format!("missing column {name}"),
        })?;
        Ok(cast(c, &DataType::Utf8)?)
    };
    let (traces, spans) = (col("trace_id")?, col("span_id")?);
    let (traces, spans) = (traces.as_string::<i32>(), spans.as_string::<i32>());
    Ok((0..batch.num_rows())
        .map(|i| {
            if traces.is_null(i) || spans.is_null(i) {
                return None;
            }
            parse_key(traces.value(i), spans.value(i))
        })
        .collect())
}

impl SpanSink {
    /// Open (creating when missing) `spans` under `location` and remember the keys it
    /// received during the last `dedupe_window`.
    pub async fn open(
        location: &LakeLocation,
        target_file_size: u64,
        dedupe_window: Duration,
    ) -> Result<Self> {
        let table =
            LakeTable::open_or_create(location, SPANS_TABLE, spans_schema(), target_file_size)
                .await?;
        let mut remembered = Remembered {
            set: HashSet::new(),
            order: VecDeque::new(),
        };
        for key in recent_keys(&table, dedupe_window).await? {
            remembered.insert(key);
        }
        Ok(Self {
            table,
            remembered,
            pending: Vec::new(),
            pending_set: HashSet::new(),
            first_pending_at: None,
        })
    }

    /// Spans remembered as committed (for logs and tests).
    pub fn remembered(&self) -> usize {
        self.remembered.set.len()
    }

    /// Buffer `batch` (rows of [`spans_schema`]) minus spans already committed or buffered.
    /// Returns the rows kept.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<u64> {
        let keys = keys_of(&batch)?;
        let mut kept = Vec::with_capacity(keys.len());
        let keep: BooleanArray = keys
            .iter()
            .map(|k| {
                let fresh = match k {
                    Some(k) => !self.remembered.set.contains(k) && self.pending_set.insert(*k),
                    None => true,
                };
                if let (true, Some(k)) = (fresh, k) {
                    kept.push(*k);
                }
                Some(fresh)
            })
            .collect();
        let batch = if keep.true_count() == batch.num_rows() {
            batch
        } else {
            filter_record_batch(&batch, &keep)?
        };
        let rows = self.table.write(batch, &[]).await?.num_rows() as u64;
        self.pending.extend(kept);
        self.first_pending_at.get_or_insert_with(Instant::now);
        Ok(rows)
    }

    /// When the oldest uncommitted row was buffered, if any.
    pub fn pending_since(&self) -> Option<Instant> {
        self.first_pending_at
    }

    /// Bytes streamed to data files since the last commit.
    pub fn pending_bytes(&self) -> usize {
        self.table.pending_bytes()
    }

    /// Commit what is buffered (a no-op with nothing buffered).
    pub async fn commit(&mut self, pipeline: &str) -> Result<Option<CommitOutcome>> {
        if self.first_pending_at.is_none() {
            return Ok(None);
        }
        let outcome = self.table.commit(pipeline, &Default::default()).await?;
        for k in self.pending.drain(..) {
            self.remembered.insert(k);
        }
        self.pending_set.clear();
        self.first_pending_at = None;
        Ok(Some(outcome))
    }

    /// Forget what is buffered (its commit failed; the clients will send it again).
    pub fn discard(&mut self) {
        self.table.discard();
        self.pending.clear();
        self.pending_set.clear();
        self.first_pending_at = None;
    }
}

/// Keys of the spans received during the last `window`, read back with DataFusion (file
/// statistics on `received_at` skip everything older).
async fn recent_keys(table: &LakeTable, window: Duration) -> Result<Vec<Key>> {
    let delta = table.delta();
    if delta.version().unwrap_or(0) == 0 {
        return Ok(Vec::new());
    }
    let df_err = |e: deltalake::datafusion::error::DataFusionError| Error::Schema {
        table: SPANS_TABLE.into(),
        message: format!("reading recent span ids: {e}"),
    };
    let since = chrono::Utc::now().timestamp_micros()
        - i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    let ctx = SessionContext::new();
    delta
        .update_datafusion_session(&ctx.state())
        .map_err(|e| table.delta_error(e))?;
    let provider = delta.table_provider().await.map_err(df_err)?;
    let batches = ctx
        .read_table(provider)
        .map_err(df_err)?
        .filter(
            col("received_at").gt_eq(lit(ScalarValue::TimestampMicrosecond(
                Some(since),
                Some("UTC".into()),
            ))),
        )
        .map_err(df_err)?
        .select_columns(&["trace_id", "span_id"])
        .map_err(df_err)?
        .collect()
        .await
        .map_err(df_err)?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(keys_of(b)?.into_iter().flatten());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use deltalake::arrow::array::{
        Date32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };

    use super::*;

    /// Spans `ids` (span id = trace id = i) in the `spans` schema, received now.
    fn spans(ids: &[u64]) -> RecordBatch {
        let schema = spans_schema();
        let now = chrono::Utc::now().timestamp_micros();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match (f.name().as_str(), f.data_type()) {
                    ("trace_id", _) => Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| format!("{i:032x}")),
                    )),
                    ("span_id", _) => Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| format!("{i:016x}")),
                    )),
                    (_, DataType::Utf8) => {
                        Arc::new(StringArray::from_iter_values(ids.iter().map(|_| "x")))
                    }
                    (_, DataType::Int64) => {
                        Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| *i as i64)))
                    }
                    (_, DataType::Date32) => {
                        Arc::new(Date32Array::from_iter_values(ids.iter().map(|_| 20_454)))
                    }
                    _ => Arc::new(
                        TimestampMicrosecondArray::from_iter_values(ids.iter().map(|_| now))
                            .with_timezone("UTC"),
                    ),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    async fn count(location: &LakeLocation) -> usize {
        let t = LakeTable::open_or_create(location, SPANS_TABLE, spans_schema(), 1 << 20)
            .await
            .unwrap();
        let ctx = SessionContext::new();
        t.delta().update_datafusion_session(&ctx.state()).unwrap();
        let provider = t.delta().table_provider().await.unwrap();
        ctx.read_table(provider)
            .unwrap()
            .collect()
            .await
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn retried_spans_are_written_once_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let location = LakeLocation::resolve(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        let window = Duration::from_secs(900);

        let mut sink = SpanSink::open(&location, 1 << 20, window).await.unwrap();
        assert_eq!(
            sink.write(spans(&[1, 2, 3, 3])).await.unwrap(),
            3,
            "a repeat inside a request"
        );
        assert_eq!(
            sink.write(spans(&[3, 4])).await.unwrap(),
            1,
            "a repeat across requests"
        );
        assert_eq!(sink.commit("p").await.unwrap().unwrap().rows, 4);
        assert_eq!(
            sink.write(spans(&[4, 5])).await.unwrap(),
            1,
            "a retry after the commit"
        );
        sink.discard();
        assert_eq!(
            sink.write(spans(&[5])).await.unwrap(),
            1,
            "a discarded span may come again"
        );
        sink.commit("p").await.unwrap();
        drop(sink);

        let mut again = SpanSink::open(&location, 1 << 20, window).await.unwrap();
        assert_eq!(again.remembered(), 5);
        assert_eq!(again.write(spans(&[1, 5, 6])).await.unwrap(), 1);
        again.commit("p").await.unwrap();
        assert_eq!(count(&location).await, 6);
    }
}
