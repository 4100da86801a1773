//! The Delta Lake sink.
//!
//! Exactly-once works the way kafka-delta-ingest does it: every commit to a table carries, for
//! each Kafka partition the commit covers, a `txn` action whose app id is
//! `<pipeline>/<topic>/<partition>` and whose version is the next offset to read. Data files and
//! offsets land in one atomic log entry. Events of one partition fan out to several tables
//! (payments, dlq, ...), and each table is committed on its own, so a crash can fall between two
//! tables' commits; every table therefore keeps its own offsets, the consumer resumes each
//! partition from the smallest of them, and rows a table already holds are filtered out again
//! by their `kafka_offset`. Every flush commits to every table (a commit without data still
//! moves the table's offsets), which bounds what a restart re-reads to one flush.

mod location;
mod offsets;
mod results;
mod table;

pub use location::{storage_options, table_url, LakeLocation};
pub use offsets::{app_id, PartitionKey};
pub use results::ResultsTable;
pub use table::{is_id_column, CommitOutcome, LakeTable};

use std::collections::BTreeMap;
use std::time::Instant;

use deltalake::arrow::record_batch::RecordBatch;
use futures::future::try_join_all;
use paystream_core::schema::{dlq_schema, SchemaSpec, DLQ_TABLE};

use crate::Result;

/// What one flush of the sink committed.
#[derive(Debug, Default, Clone)]
pub struct FlushStats {
    /// Rows committed per table (after exactly-once filtering).
    pub rows: BTreeMap<String, u64>,
    /// Data files added.
    pub files: u64,
    /// Bytes of data files added.
    pub bytes: u64,
    /// Next offset per partition now in the lake.
    pub offsets: BTreeMap<PartitionKey, i64>,
}

/// One range of offsets a batch covers: `[first, next)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRange {
    pub partition: PartitionKey,
    pub first: i64,
    pub next: i64,
}

/// All tables of the lake, written together.
pub struct Lake {
    pipeline: String,
    tables: BTreeMap<String, LakeTable>,
    /// Next offset per partition over everything written since the last commit.
    pending: BTreeMap<PartitionKey, i64>,
    first_pending_at: Option<Instant>,
    pending_rows: u64,
}

impl Lake {
    /// Open (creating when missing) the tables of `schema` plus `dlq` under `location`.
    pub async fn open(
        location: &LakeLocation,
        pipeline: &str,
        schema: &SchemaSpec,
        target_file_size: u64,
    ) -> Result<Self> {
        let mut specs: Vec<(String, _)> = schema
            .tables()
            .map(|t| (t.name.clone(), t.arrow_schema()))
            .collect();
        specs.push((DLQ_TABLE.to_string(), dlq_schema()));
        let opened = try_join_all(specs.into_iter().map(|(name, arrow_schema)| async move {
            LakeTable::open_or_create(location, &name, arrow_schema, target_file_size).await
        }))
        .await?;
        let tables = opened
            .into_iter()
            .map(|t| (t.name().to_string(), t))
            .collect();
        Ok(Self {
            pipeline: pipeline.to_string(),
            tables,
            pending: BTreeMap::new(),
            first_pending_at: None,
            pending_rows: 0,
        })
    }

    /// Names of the tables, in order.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// Where each partition must resume: the smallest next offset over all tables, or `None`
    /// when some table has never recorded the partition (start from the source's policy).
    /// Also arms each table's filter so rows it already holds are not written twice.
    pub async fn resume(
        &mut self,
        partitions: &[PartitionKey],
    ) -> Result<BTreeMap<PartitionKey, Option<i64>>> {
        let pipeline = self.pipeline.clone();
        let per_table = try_join_all(
            self.tables
                .values_mut()
                .map(|t| t.load_offsets(&pipeline, partitions)),
        )
        .await?;
        let mut out = BTreeMap::new();
        for p in partitions {
            let mut min: Option<Option<i64>> = None;
            for offsets in &per_table {
                let v = offsets.get(p).copied().flatten();
                min = Some(match (min, v) {
                    (None, v) => v,
                    (Some(None), _) | (Some(_), None) => None,
                    (Some(Some(a)), Some(b)) => Some(a.min(b)),
                });
            }
            out.insert(p.clone(), min.flatten());
        }
        Ok(out)
    }

    /// Buffer one decoded batch: rows per table plus the offset ranges it covers. Returns the
    /// event tables' rows that were new to their table (not already committed), which is what
    /// downstream consumers of the lake's rows, such as windows, must see exactly once.
    pub async fn write(
        &mut self,
        tables: Vec<(String, RecordBatch)>,
        dlq: Option<RecordBatch>,
        ranges: &[OffsetRange],
    ) -> Result<Vec<(String, RecordBatch)>> {
        let mut accepted = Vec::new();
        let all = tables
            .into_iter()
            .chain(dlq.map(|b| (DLQ_TABLE.to_string(), b)));
        for (name, batch) in all {
            let Some(table) = self.tables.get_mut(&name) else {
                return Err(crate::Error::Schema {
                    table: name,
                    message: "no such table in the lake".into(),
                });
            };
            let written = table.write(batch, ranges).await?;
            self.pending_rows += written.num_rows() as u64;
            if name != DLQ_TABLE && written.num_rows() > 0 {
                accepted.push((name, written));
            }
        }
        for r in ranges {
            let e = self.pending.entry(r.partition.clone()).or_insert(r.next);
            *e = (*e).max(r.next);
        }
        if !ranges.is_empty() && self.first_pending_at.is_none() {
            self.first_pending_at = Some(Instant::now());
        }
        Ok(accepted)
    }

    /// When the oldest uncommitted row was buffered, if any.
    pub fn pending_since(&self) -> Option<Instant> {
        self.first_pending_at
    }

    /// The next offset per partition that the next commit will record.
    pub fn pending_offsets(&self) -> &BTreeMap<PartitionKey, i64> {
        &self.pending
    }

    /// Bytes written to data files since the last commit, over all tables.
    pub fn pending_bytes(&self) -> usize {
        self.tables.values().map(LakeTable::pending_bytes).sum()
    }

    /// Commit everything buffered, to every table, with the offsets it covers.
    pub async fn commit(&mut self) -> Result<FlushStats> {
        if self.pending.is_empty() {
            return Ok(FlushStats::default());
        }
        let pipeline = self.pipeline.clone();
        let pending = self.pending.clone();
        let outcomes = try_join_all(
            self.tables
                .values_mut()
                .map(|t| t.commit(&pipeline, &pending)),
        )
        .await?;
        let mut stats = FlushStats {
            offsets: pending,
            ..Default::default()
        };
        for o in outcomes {
            stats.files += o.files;
            stats.bytes += o.bytes;
            stats.rows.insert(o.table, o.rows);
        }
        self.pending.clear();
        self.first_pending_at = None;
        self.pending_rows = 0;
        Ok(stats)
    }

    /// Drop what is buffered and not committed (the partitions went to another consumer, or
    /// a commit failed for good); files already uploaded stay unreferenced until VACUUM.
    pub fn discard(&mut self) {
        for t in self.tables.values_mut() {
            t.discard();
        }
        self.pending.clear();
        self.first_pending_at = None;
        self.pending_rows = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use deltalake::arrow::array::{
        ArrayRef, Date32Array, Int32Array, Int64Array, StringArray, StringDictionaryBuilder,
        TimestampMicrosecondArray,
    };
    use deltalake::arrow::datatypes::Int32Type;
    use paystream_core::schema::TableSpec;

    use super::*;

    /// A one-table mapping with no mapped columns: envelope plus `extra`.
    fn spec() -> SchemaSpec {
        let mut s = SchemaSpec::default();
        s.tables.insert(
            "events".into(),
            TableSpec {
                name: "events".into(),
                event_types: vec!["E".into()],
                columns: vec![],
            },
        );
        s
    }

    /// Rows for `offsets` of partition 0 of topic `t`, in the table's schema.
    fn rows(offsets: std::ops::Range<i64>) -> RecordBatch {
        let n = (offsets.end - offsets.start) as usize;
        let schema = spec().tables["events"].arrow_schema();
        let ts = || {
            Arc::new(
                TimestampMicrosecondArray::from(vec![1_700_000_000_000_000; n])
                    .with_timezone("UTC"),
            ) as ArrayRef
        };
        let text = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
        let mut kind = StringDictionaryBuilder::<Int32Type>::new();
        for _ in 0..n {
            kind.append_value("E");
        }
        let ids: Vec<String> = offsets.clone().map(|o| format!("id-{o}")).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(kind.finish()),
            ts(),
            ts(),
            text("svc"),
            text("1"),
            text("t"),
            text("s"),
            text("t"),
            Arc::new(Int32Array::from(vec![0; n])),
            Arc::new(Int64Array::from(offsets.collect::<Vec<_>>())),
            ts(),
            Arc::new(Date32Array::from(vec![19_675; n])),
            text("{}"),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn range(first: i64, next: i64) -> OffsetRange {
        OffsetRange {
            partition: PartitionKey::new("t", 0),
            first,
            next,
        }
    }

    async fn offsets_in(lake: &LakeLocation) -> Vec<i64> {
        let t = deltalake::open_table(lake.table("events").unwrap())
            .await
            .unwrap();
        let ctx = deltalake::datafusion::prelude::SessionContext::new();
        t.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("events", t.table_provider().await.unwrap())
            .unwrap();
        let batches = ctx
            .sql("SELECT kafka_offset FROM events ORDER BY 1")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[tokio::test]
    async fn offsets_commit_with_rows_and_replays_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let loc = LakeLocation::resolve(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        let p = PartitionKey::new("t", 0);

        let mut lake = Lake::open(&loc, "pipe", &spec(), 1 << 20).await.unwrap();
        assert_eq!(
            lake.resume(std::slice::from_ref(&p)).await.unwrap()[&p],
            None
        );
        lake.write(vec![("events".into(), rows(0..10))], None, &[range(0, 10)])
            .await
            .unwrap();
        let stats = lake.commit().await.unwrap();
        assert_eq!(stats.rows["events"], 10);
        assert_eq!(stats.offsets[&p], 10);

        // Rows written but never committed (a crash) are not in the lake.
        lake.write(
            vec![("events".into(), rows(10..15))],
            None,
            &[range(10, 15)],
        )
        .await
        .unwrap();
        drop(lake);

        // A restart resumes from the lake. A replay that ends below the lake's offset (the
        // first batch after a rewind) adds nothing and must not move the offset back.
        let mut lake = Lake::open(&loc, "pipe", &spec(), 1 << 20).await.unwrap();
        lake.resume(std::slice::from_ref(&p)).await.unwrap();
        lake.write(vec![("events".into(), rows(2..6))], None, &[range(2, 6)])
            .await
            .unwrap();
        assert_eq!(lake.commit().await.unwrap().rows["events"], 0);
        drop(lake);

        // A replay from before the lake's offset only adds what the table does not hold yet.
        let mut lake = Lake::open(&loc, "pipe", &spec(), 1 << 20).await.unwrap();
        assert_eq!(
            lake.resume(std::slice::from_ref(&p)).await.unwrap()[&p],
            Some(10)
        );
        lake.write(vec![("events".into(), rows(5..20))], None, &[range(5, 20)])
            .await
            .unwrap();
        let stats = lake.commit().await.unwrap();
        assert_eq!(stats.rows["events"], 10);
        assert_eq!(offsets_in(&loc).await, (0..20).collect::<Vec<_>>());
        // The dlq table had no rows, and still moved its offsets with the others.
        assert_eq!(
            lake.resume(std::slice::from_ref(&p)).await.unwrap()[&p],
            Some(20)
        );
    }

    #[tokio::test]
    async fn another_writer_moving_our_offsets_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let loc = LakeLocation::resolve(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        let p = PartitionKey::new("t", 0);
        let mut a = Lake::open(&loc, "pipe", &spec(), 1 << 20).await.unwrap();
        let mut b = Lake::open(&loc, "pipe", &spec(), 1 << 20).await.unwrap();
        a.resume(std::slice::from_ref(&p)).await.unwrap();
        b.resume(std::slice::from_ref(&p)).await.unwrap();
        b.write(vec![("events".into(), rows(0..5))], None, &[range(0, 5)])
            .await
            .unwrap();
        b.commit().await.unwrap();
        a.write(vec![("events".into(), rows(0..5))], None, &[range(0, 5)])
            .await
            .unwrap();
        let err = a.commit().await.unwrap_err();
        assert!(matches!(err, crate::Error::Fenced { .. }), "{err}");
        assert_eq!(offsets_in(&loc).await, (0..5).collect::<Vec<_>>());
    }
}
