//! One lake table: its Delta handle, its streaming Parquet writer, and the Kafka offsets it
//! has committed. Rows the table already holds (by partition and offset) are filtered out
//! before they are written, which is what makes a replay after a crash harmless.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, BooleanArray};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, StructType, Transaction};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use paystream_core::schema::PARTITION_COLUMN;

use super::offsets::{app_id, PartitionKey};
use super::{LakeLocation, OffsetRange};
use crate::{Error, Result};

/// What one table's commit did.
#[derive(Debug, Clone)]
pub struct CommitOutcome {
    pub table: String,
    pub version: u64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
}

/// A Delta table being appended to.
pub struct LakeTable {
    name: String,
    table: DeltaTable,
    writer: RecordBatchWriter,
    /// The schema rows are stored with: dictionary columns decoded to plain strings, since
    /// Delta has no dictionary type (Parquet dictionary-encodes them on disk anyway).
    lake_schema: SchemaRef,
    /// Next offset per partition as this table's log records it (`None`: never recorded).
    committed: HashMap<PartitionKey, Option<i64>>,
    /// Table version of our last commit: if the log has not moved past it, nobody else
    /// committed and the offsets need no re-reading.
    last_version: Option<u64>,
    pending_rows: u64,
}

fn lake_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) => f.as_ref().clone().with_data_type(v.as_ref().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Open the Delta table `name` under `location`, or create it with `schema` (partitioned by
/// `partition`, if any); says whether it existed.
pub(super) async fn open_or_create_table(
    location: &LakeLocation,
    name: &str,
    schema: &SchemaRef,
    partition: Option<&str>,
) -> Result<(DeltaTable, bool)> {
    let delta_err = |source| Error::Delta {
        table: name.to_string(),
        source,
    };
    let url = location.table(name)?;
    let mut table = DeltaTableBuilder::from_url(url.clone())
        .map_err(delta_err)?
        .with_storage_options(location.options().clone())
        .build()
        .map_err(delta_err)?;
    if table
        .verify_deltatable_existence()
        .await
        .map_err(delta_err)?
    {
        table.load().await.map_err(delta_err)?;
        return Ok((table, true));
    }
    let kernel: StructType = schema
        .clone()
        .try_into_kernel()
        .map_err(|e| delta_err(DeltaTableError::from(e)))?;
    let table = deltalake::operations::create::CreateBuilder::new()
        .with_location(url.as_str())
        .with_storage_options(location.options().clone())
        .with_table_name(name)
        .with_columns(kernel.fields().cloned())
        .with_partition_columns(partition)
        .with_save_mode(SaveMode::Ignore)
        .await
        .map_err(delta_err)?;
    Ok((table, false))
}

/// Commit `actions` (data files and `txn`s) to `table` as one append, and move the handle to
/// the version written.
pub(super) async fn commit_append(
    table: &mut DeltaTable,
    actions: Vec<Action>,
    partition: Option<&str>,
) -> Result<u64, DeltaTableError> {
    let snapshot = table.snapshot()?;
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: partition.map(|p| vec![p.to_string()]),
        predicate: None,
    };
    let finalized = CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    let version = finalized.version();
    table.update_incremental(Some(version)).await?;
    Ok(version)
}

/// Columns that repeat few values whatever their Arrow type: worth a Parquet dictionary.
const LOW_CARDINALITY: &[&str] = &[
    "kafka_topic",
    "kafka_partition",
    "source",
    "schema_version",
    "error_kind",
    "kind",
    "status_code",
    "service_name",
    "scope_name",
];

/// Rows per Parquet row group: the unit that statistics and bloom filters skip.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// False-positive rate of the id columns' bloom filters: a lookup reads about one row group in
/// a hundred that does not hold the id.
const ID_BLOOM_FPP: f64 = 0.01;

/// Whether the string column `name` holds ids and so gets a bloom filter in the lake's files
/// (readers use this to know which lookups the filters can answer).
pub fn is_id_column(name: &str) -> bool {
    name.ends_with("_id")
}

/// zstd Parquet with dictionary encoding only where values repeat: the Arrow dictionary
/// columns of the schema (`dict` and `currency` in the mapping) and [`LOW_CARDINALITY`].
/// Dictionary-encoding ids, amounts and JSON costs a hash lookup per value for nothing (the
/// writer falls back to plain once the dictionary is full), and was the biggest single cost
/// of the sink.
///
/// String columns named `…_id`, dictionary-encoded or not, get a bloom filter per row group:
/// ids are random, so min/max statistics never prune them, and a lookup by payment or trace id
/// would read every row group of the table. parquet-rs sizes the filter for a full row group
/// and folds it down to the values actually written, so a small file carries a small filter.
fn writer_properties(schema: &Schema) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(false);
    for f in schema.fields() {
        let name = f.name().as_str();
        let path = ColumnPath::from(name);
        let stored = match f.data_type() {
            DataType::Dictionary(_, values) => values.as_ref(),
            other => other,
        };
        if stored != f.data_type() || LOW_CARDINALITY.contains(&name) {
            builder = builder.set_column_dictionary_enabled(path.clone(), true);
        }
        if stored == &DataType::Utf8 && is_id_column(name) {
            builder = builder
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path.clone(), ID_BLOOM_FPP)
                .set_column_bloom_filter_max_ndv(path, ROW_GROUP_ROWS as u64);
        }
    }
    builder.build()
}

impl LakeTable {
    /// Open the table named `name` under `location`, creating it with `schema` (partitioned by
    /// `event_date`) when it does not exist yet.
    pub async fn open_or_create(
        location: &LakeLocation,
        name: &str,
        schema: SchemaRef,
        target_file_size: u64,
    ) -> Result<Self> {
        let delta_err = |source| Error::Delta {
            table: name.to_string(),
            source,
        };
        let lake_schema = lake_schema(&schema);
        let (table, _) =
            open_or_create_table(location, name, &lake_schema, Some(PARTITION_COLUMN)).await?;
        let writer = RecordBatchWriter::for_table(&table)
            .map_err(delta_err)?
            .with_target_file_size(target_file_size)
            .with_writer_properties(writer_properties(&schema));
        let last_version = table.version();
        Ok(Self {
            name: name.to_string(),
            table,
            writer,
            lake_schema,
            committed: HashMap::new(),
            last_version,
            pending_rows: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Delta table itself, for reads.
    pub fn delta(&self) -> &DeltaTable {
        &self.table
    }

    /// `source` as this table's error.
    pub fn delta_error(&self, source: DeltaTableError) -> Error {
        self.delta_err(source)
    }

    fn delta_err(&self, source: DeltaTableError) -> Error {
        Error::Delta {
            table: self.name.clone(),
            source,
        }
    }

    /// Read this table's recorded next offset for each partition (refreshing the log first).
    pub async fn load_offsets(
        &mut self,
        pipeline: &str,
        partitions: &[PartitionKey],
    ) -> Result<BTreeMap<PartitionKey, Option<i64>>> {
        self.table
            .update_incremental(None)
            .await
            .map_err(|e| self.delta_err(e))?;
        self.last_version = self.table.version();
        let mut out = BTreeMap::new();
        for p in partitions {
            let v = self.read_offset(pipeline, p).await?;
            self.committed.insert(p.clone(), v);
            out.insert(p.clone(), v);
        }
        Ok(out)
    }

    async fn read_offset(&self, pipeline: &str, p: &PartitionKey) -> Result<Option<i64>> {
        let snapshot = self.table.snapshot().map_err(|e| self.delta_err(e))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id(pipeline, p))
            .await
            .map_err(|e| self.delta_err(e))
    }

    /// Bytes streamed to data files since the last commit.
    pub fn pending_bytes(&self) -> usize {
        self.writer.buffer_len()
    }

    /// Stream `batch` into the table's open files, minus the rows the table already holds;
    /// returns the rows kept (in the table's schema).
    pub async fn write(
        &mut self,
        batch: RecordBatch,
        ranges: &[OffsetRange],
    ) -> Result<RecordBatch> {
        let batch = self.conform(batch)?;
        let batch = self.drop_committed(batch, ranges)?;
        let rows = batch.num_rows() as u64;
        if rows > 0 {
            self.writer
                .write(batch.clone())
                .await
                .map_err(|e| self.delta_err(e))?;
            self.pending_rows += rows;
        }
        Ok(batch)
    }

    fn conform(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if batch.schema().fields().len() != self.lake_schema.fields().len() {
            return Err(Error::Schema {
                table: self.name.clone(),
                message: format!(
                    "batch has {} columns, table has {}",
                    batch.num_columns(),
                    self.lake_schema.fields().len()
                ),
            });
        }
        let columns = batch
            .columns()
            .iter()
            .zip(self.lake_schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.lake_schema.clone(), columns)?)
    }

    /// Filter out rows whose offset is below what this table already committed for their
    /// partition. Only needed right after a resume, so the common case is one map lookup per
    /// range and no copy.
    fn drop_committed(&self, batch: RecordBatch, ranges: &[OffsetRange]) -> Result<RecordBatch> {
        let replayed = ranges
            .iter()
            .any(|r| matches!(self.committed.get(&r.partition), Some(Some(c)) if *c > r.first));
        if !replayed || batch.num_rows() == 0 {
            return Ok(batch);
        }
        let col = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| Error::Schema {
                table: self.name.clone(),
                message: format!("missing column {name}"),
            })
        };
        let topics = col("kafka_topic")?.as_string::<i32>().clone();
        let parts = col("kafka_partition")?.as_primitive::<Int32Type>().clone();
        let offsets = col("kafka_offset")?.as_primitive::<Int64Type>().clone();
        let mut key = PartitionKey::new(String::new(), 0);
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                if topics.is_null(i) {
                    return Some(true);
                }
                key.topic.clear();
                key.topic.push_str(topics.value(i));
                key.partition = parts.value(i);
                let floor = self
                    .committed
                    .get(&key)
                    .copied()
                    .flatten()
                    .unwrap_or(i64::MIN);
                Some(offsets.value(i) >= floor)
            })
            .collect();
        Ok(filter_record_batch(&batch, &keep)?)
    }

    /// Commit the files written since the last commit, with `txn` actions moving every
    /// partition in `pending` to its next offset, in one atomic log entry.
    pub async fn commit(
        &mut self,
        pipeline: &str,
        pending: &BTreeMap<PartitionKey, i64>,
    ) -> Result<CommitOutcome> {
        self.fence(pipeline, pending).await?;
        let adds = self.writer.flush().await.map_err(|e| self.delta_err(e))?;
        let files = adds.len() as u64;
        let bytes = adds.iter().map(|a| a.size.max(0) as u64).sum();
        let now = chrono::Utc::now().timestamp_millis();
        // A partition's offset never moves back: after a rewind the first batches end below
        // what the table already holds, and recording that would make the next restart write
        // the rows in between a second time.
        let versions: BTreeMap<PartitionKey, i64> = pending
            .iter()
            .map(|(p, next)| {
                let held = self.committed.get(p).copied().flatten().unwrap_or(i64::MIN);
                (p.clone(), (*next).max(held))
            })
            .collect();
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        actions.extend(versions.iter().map(|(p, next)| {
            Action::Txn(Transaction::new_with_last_update(
                app_id(pipeline, p),
                *next,
                Some(now),
            ))
        }));
        let version = commit_append(&mut self.table, actions, Some(PARTITION_COLUMN))
            .await
            .map_err(|e| self.delta_err(e))?;
        self.last_version = Some(version);
        for (p, next) in versions {
            self.committed.insert(p, Some(next));
        }
        let rows = std::mem::take(&mut self.pending_rows);
        Ok(CommitOutcome {
            table: self.name.clone(),
            version,
            rows,
            files,
            bytes,
        })
    }

    /// Make sure nobody else moved our partitions' offsets since we last looked: if the log
    /// moved, re-read the offsets of the partitions we are about to commit.
    async fn fence(&mut self, pipeline: &str, pending: &BTreeMap<PartitionKey, i64>) -> Result<()> {
        self.table
            .update_incremental(None)
            .await
            .map_err(|e| self.delta_err(e))?;
        if self.table.version() == self.last_version {
            return Ok(());
        }
        for p in pending.keys() {
            let found = self.read_offset(pipeline, p).await?;
            let expected = self.committed.get(p).copied();
            if let Some(expected) = expected.filter(|e| *e != found) {
                self.discard();
                return Err(Error::Fenced {
                    table: self.name.clone(),
                    app_id: app_id(pipeline, p),
                    expected,
                    found,
                });
            }
        }
        self.last_version = self.table.version();
        Ok(())
    }

    /// Forget rows written since the last commit.
    pub fn discard(&mut self) {
        self.writer.reset();
        self.pending_rows = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_columns_get_bloom_filters_and_repeated_values_dictionaries() {
        let schema = Schema::new(vec![
            Field::new("payment_id", DataType::Utf8, false),
            Field::new("merchant_id", DataType::Utf8, false),
            Field::new(
                "store_id",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new("kafka_topic", DataType::Utf8, false),
            Field::new(
                "currency",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false,
            ),
            Field::new("amount_minor", DataType::Int64, false),
            Field::new("extra", DataType::Utf8, true),
        ]);
        let props = writer_properties(&schema);
        let path = |n: &str| ColumnPath::from(n);
        for id in ["payment_id", "merchant_id"] {
            let bloom = props.bloom_filter_properties(&path(id));
            assert_eq!(bloom.map(|b| b.fpp()), Some(ID_BLOOM_FPP), "{id}");
            assert!(!props.dictionary_enabled(&path(id)), "{id}");
        }
        for other in ["kafka_topic", "currency", "amount_minor", "extra"] {
            assert!(
                props.bloom_filter_properties(&path(other)).is_none(),
                "{other}"
            );
        }
        // A dictionary column of ids keeps both.
        let store = props.bloom_filter_properties(&path("store_id"));
        assert_eq!(store.map(|b| b.fpp()), Some(ID_BLOOM_FPP));
        assert!(props.dictionary_enabled(&path("store_id")));
        assert!(props.dictionary_enabled(&path("kafka_topic")));
        assert!(props.dictionary_enabled(&path("currency")));
        assert!(!props.dictionary_enabled(&path("extra")));
        assert_eq!(props.max_row_group_row_count(), Some(ROW_GROUP_ROWS));
    }
}
