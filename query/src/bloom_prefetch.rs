//! Bloom filters of a lookup fetched per file and column, not per row group.
//!
//! DataFusion's Parquet opener reads the bloom filter of each row group with its own awaited
//! read, one after the other. A lookup by id on the benchmark lake makes 100 such reads of
//! 128 KiB, each a blocking-pool hand-off and an `open` on a local lake, and they were half of
//! its time (`docs/BENCHMARKS.md`, session 15). [`BloomPrefetch`] wraps the scan's reader
//! factory: the first time a file's reader is asked for the bloom filter of a column, it
//! fetches that column's filters of every row group in one vectored read, and answers the
//! later requests from memory. Any other read passes through unchanged.
//!
//! The cost: filters of row groups that statistics have already pruned are fetched too, and
//! held until the file's reader is dropped. For a lookup, where min/max prune little, that is
//! a few bytes more for one read instead of a hundred.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::Result as DfResult;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileScanConfig, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;
use futures::FutureExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::Result as PqResult;
use parquet::file::metadata::ParquetMetaData;

/// Give every Parquet scan in `plan` a reader that prefetches bloom filters per column, and
/// row-level evaluation of the filters pushed into it.
pub(crate) fn with_bloom_prefetch(
    plan: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        let Some(source) = config.file_source.downcast_ref::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        // delta-rs always sets its factory (the footer cache); without one there is
        // nothing to wrap, and the scan is left as it is.
        let Some(inner) = source.parquet_file_reader_factory() else {
            return Ok(Transformed::no(node));
        };
        let factory = Arc::new(BloomPrefetch {
            inner: Arc::clone(inner),
        });
        // delta-rs turns row-level pushdown on only when it is given a predicate, and a
        // lookup's is kept from it (see `scan`): the filter the optimizer pushes down later
        // is then evaluated while decoding, not by a filter over decoded batches.
        let source = source
            .clone()
            .with_parquet_file_reader_factory(factory)
            .with_pushdown_filters(true);
        let config = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(source))
            .build();
        let plan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        Ok(Transformed::yes(plan))
    })
    .data()
}

/// A reader factory whose readers prefetch bloom filters; see the module documentation.
#[derive(Debug)]
struct BloomPrefetch {
    inner: Arc<dyn ParquetFileReaderFactory>,
}

impl ParquetFileReaderFactory for BloomPrefetch {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn AsyncFileReader + Send>> {
        let inner = self.inner.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(PrefetchingReader::new(inner)))
    }
}

/// Where each column chunk's bloom filter lies in one file.
#[derive(Debug, Default)]
struct BloomLayout {
    /// Bloom filter range → its column's index.
    column_of: HashMap<Range<u64>, usize>,
    /// Column index → the bloom filter ranges of all its row groups, in row-group order.
    ranges_of: HashMap<usize, Vec<Range<u64>>>,
}

impl BloomLayout {
    /// Only filters whose length the footer records: parquet-rs reads those in one request
    /// of exactly that range, which is what [`PrefetchingReader::get_bytes`] recognises.
    fn of(metadata: &ParquetMetaData) -> Self {
        let mut layout = Self::default();
        for row_group in metadata.row_groups() {
            for (column, chunk) in row_group.columns().iter().enumerate() {
                let (Some(offset), Some(length)) =
                    (chunk.bloom_filter_offset(), chunk.bloom_filter_length())
                else {
                    continue;
                };
                let (Ok(offset), Ok(length)) = (u64::try_from(offset), u64::try_from(length))
                else {
                    continue;
                };
                let range = offset..offset + length;
                layout.column_of.insert(range.clone(), column);
                layout.ranges_of.entry(column).or_default().push(range);
            }
        }
        layout
    }
}

/// One file's reader: footer and data reads pass through, bloom filters come per column.
struct PrefetchingReader {
    inner: Box<dyn AsyncFileReader + Send>,
    layout: Option<BloomLayout>,
    fetched: HashMap<Range<u64>, Bytes>,
    /// Columns whose filters were fetched: a filter asked for again is read alone.
    prefetched: HashSet<usize>,
}

impl PrefetchingReader {
    fn new(inner: Box<dyn AsyncFileReader + Send>) -> Self {
        Self {
            inner,
            layout: None,
            fetched: HashMap::new(),
            prefetched: HashSet::new(),
        }
    }

    async fn read(&mut self, range: Range<u64>) -> PqResult<Bytes> {
        if let Some(bytes) = self.fetched.remove(&range) {
            return Ok(bytes);
        }
        let siblings = self.layout.as_ref().and_then(|l| {
            let column = *l.column_of.get(&range)?;
            let ranges = l.ranges_of.get(&column).filter(|r| r.len() > 1)?;
            Some((column, ranges.clone()))
        });
        let Some((column, siblings)) = siblings else {
            return self.inner.get_bytes(range).await;
        };
        if !self.prefetched.insert(column) {
            return self.inner.get_bytes(range).await;
        }
        let parts = self.inner.get_byte_ranges(siblings.clone()).await?;
        let mut wanted = None;
        for (r, bytes) in siblings.into_iter().zip(parts) {
            if r == range {
                wanted = Some(bytes);
            } else {
                self.fetched.insert(r, bytes);
            }
        }
        match wanted {
            Some(bytes) => Ok(bytes),
            // A store answered fewer ranges than asked: read this one on its own.
            None => self.inner.get_bytes(range).await,
        }
    }
}

impl AsyncFileReader for PrefetchingReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, PqResult<Bytes>> {
        self.read(range).boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, PqResult<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, PqResult<Arc<ParquetMetaData>>> {
        async move {
            let metadata = self.inner.get_metadata(options).await?;
            self.layout = Some(BloomLayout::of(&metadata));
            Ok(metadata)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::ParquetMetaDataReader;
    use parquet::file::properties::WriterProperties;
    use parquet::schema::types::ColumnPath;
    use std::sync::Mutex;

    /// An in-memory file that records every request it is sent.
    struct Recording {
        data: Bytes,
        requests: Requests,
    }

    impl Recording {
        fn slice(&self, r: &Range<u64>) -> Bytes {
            self.data.slice(r.start as usize..r.end as usize)
        }
        fn record(&self, ranges: &[Range<u64>]) {
            if let Ok(mut requests) = self.requests.lock() {
                requests.push(ranges.to_vec());
            }
        }
    }

    impl AsyncFileReader for Recording {
        fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, PqResult<Bytes>> {
            self.record(std::slice::from_ref(&range));
            let bytes = self.slice(&range);
            async move { Ok(bytes) }.boxed()
        }

        fn get_byte_ranges(
            &mut self,
            ranges: Vec<Range<u64>>,
        ) -> BoxFuture<'_, PqResult<Vec<Bytes>>> {
            self.record(&ranges);
            let parts = ranges.iter().map(|r| self.slice(r)).collect();
            async move { Ok(parts) }.boxed()
        }

        fn get_metadata<'a>(
            &'a mut self,
            _options: Option<&'a ArrowReaderOptions>,
        ) -> BoxFuture<'a, PqResult<Arc<ParquetMetaData>>> {
            let parsed = ParquetMetaDataReader::new().parse_and_finish(&self.data);
            async move { parsed.map(Arc::new) }.boxed()
        }
    }

    /// Three row groups of four rows; `id` carries bloom filters, `n` does not.
    fn file() -> Bytes {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let ids: Vec<String> = (0..12).map(|i| format!("pay_{i:04}")).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Int64Array::from_iter_values(0..12)),
            ],
        )
        .expect("a batch of the schema");
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(4))
            .set_column_bloom_filter_enabled(ColumnPath::from("id"), true)
            .build();
        let mut out = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut out, schema, Some(props)).expect("a writer in memory");
        writer.write(&batch).expect("written");
        writer.close().expect("closed");
        Bytes::from(out)
    }

    type Requests = Arc<Mutex<Vec<Vec<Range<u64>>>>>;

    /// A prefetching reader over `data`, and what it sent to the file.
    fn recorded(data: &Bytes) -> (PrefetchingReader, Requests) {
        let requests = Requests::default();
        let inner = Recording {
            data: data.clone(),
            requests: Arc::clone(&requests),
        };
        (PrefetchingReader::new(Box::new(inner)), requests)
    }

    #[tokio::test]
    async fn a_columns_bloom_filters_come_in_one_request_and_equal_the_files_bytes() {
        let data = file();
        let (mut reader, requests) = recorded(&data);
        let metadata = reader.get_metadata(None).await.expect("footer");
        let blooms: Vec<Range<u64>> = metadata
            .row_groups()
            .iter()
            .map(|rg| {
                let c = rg.column(0);
                let start = c.bloom_filter_offset().expect("offset") as u64;
                start..start + c.bloom_filter_length().expect("length") as u64
            })
            .collect();
        assert_eq!(blooms.len(), 3);
        requests.lock().expect("requests").clear();

        // Asked in any order, each filter is the file's bytes; one request served all three.
        for i in [1, 0, 2] {
            let got = reader.get_bytes(blooms[i].clone()).await.expect("bloom");
            assert_eq!(
                got,
                data.slice(blooms[i].start as usize..blooms[i].end as usize)
            );
        }
        assert_eq!(*requests.lock().expect("requests"), vec![blooms.clone()]);

        // A second ask for a filter already handed out goes to the file again, alone.
        reader.get_bytes(blooms[0].clone()).await.expect("bloom");
        // Any other read passes through unchanged.
        let magic: Range<u64> = 0..4;
        reader.get_bytes(magic.clone()).await.expect("magic");
        let requests = requests.lock().expect("requests");
        assert_eq!(requests[1..], [vec![blooms[0].clone()], vec![magic]]);
    }

    #[tokio::test]
    async fn without_a_footer_every_read_passes_through() {
        let data = file();
        let (mut reader, requests) = recorded(&data);
        let range: Range<u64> = 4..20;
        let got = reader.get_bytes(range.clone()).await.expect("bytes");
        assert_eq!(got, data.slice(4..20));
        assert_eq!(*requests.lock().expect("requests"), vec![vec![range]]);
    }
}
