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
mod table;

pub use location::{storage_options, table_url, LakeLocation};
pub use offsets::{app_id, PartitionKey};
pub use table::{CommitOutcome, LakeTable};

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

    /// Buffer one decoded batch: rows per table plus the offset ranges it covers.
    pub async fn write(
        &mut self,
        tables: Vec<(String, RecordBatch)>,
        dlq: Option<RecordBatch>,
        ranges: &[OffsetRange],
    ) -> Result<()> {
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
            self.pending_rows += table.write(batch, ranges).await?;
        }
        for r in ranges {
            let e = self.pending.entry(r.partition.clone()).or_insert(r.next);
            *e = (*e).max(r.next);
        }
        if !ranges.is_empty() && self.first_pending_at.is_none() {
            self.first_pending_at = Some(Instant::now());
        }
        Ok(())
    }

    /// When the oldest uncommitted row was buffered, if any.
    pub fn pending_since(&self) -> Option<Instant> {
        self.first_pending_at
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
