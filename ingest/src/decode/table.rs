//! Arrow builders for one event table: envelope columns, mapped columns, `extra`.
//!
//! A good event is appended in one go, after every column was read and checked, so a table
//! never holds half a row. The builders' types follow `TableSpec::arrow_schema()` exactly
//! (dictionary strings, UTC microsecond timestamps), and `finish` checks the batch against
//! that schema, so what leaves here is what the Delta sink expects.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder,
    Int64Builder, PrimitiveBuilder, StringBuilder, StringDictionaryBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{ArrowPrimitiveType, Int32Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use paystream_core::record::RawRecord;
use paystream_core::schema::ColumnType;

use super::envelope::Envelope;
use super::plan::{TablePlan, Val};
use super::time::{date_of, millis_to_micros};

pub(crate) type DictBuilder = StringDictionaryBuilder<Int32Type>;

pub(crate) fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// The builder of one mapped column.
enum ColBuilder {
    Str(StringBuilder),
    Dict(DictBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMicrosecondBuilder),
}

impl ColBuilder {
    fn new(kind: ColumnType) -> Self {
        match kind {
            ColumnType::String => ColBuilder::Str(StringBuilder::new()),
            ColumnType::Dict | ColumnType::Currency => ColBuilder::Dict(DictBuilder::new()),
            ColumnType::Int32 => ColBuilder::I32(Int32Builder::new()),
            ColumnType::Int64 | ColumnType::Money => ColBuilder::I64(Int64Builder::new()),
            ColumnType::Float64 => ColBuilder::F64(Float64Builder::new()),
            ColumnType::Bool => ColBuilder::Bool(BooleanBuilder::new()),
            ColumnType::Timestamp => ColBuilder::Ts(ts_builder()),
        }
    }

    /// Appends `v`; the plan guarantees its variant matches the builder, and a mismatch (a
    /// defect) appends null rather than shifting the column.
    fn append(&mut self, v: &Val<'_>) -> Result<(), ArrowError> {
        match (self, v) {
            (ColBuilder::Str(b), Val::Str(s)) => b.append_value(s),
            (ColBuilder::Dict(b), Val::Str(s)) => {
                b.append(&**s)?;
            }
            (ColBuilder::I32(b), Val::I32(x)) => b.append_value(*x),
            (ColBuilder::I64(b), Val::I64(x)) => b.append_value(*x),
            (ColBuilder::F64(b), Val::F64(x)) => b.append_value(*x),
            (ColBuilder::Bool(b), Val::Bool(x)) => b.append_value(*x),
            (ColBuilder::Ts(b), Val::I64(x)) => b.append_value(*x),
            (b, _) => b.append_null(),
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            ColBuilder::Str(b) => b.append_null(),
            ColBuilder::Dict(b) => b.append_null(),
            ColBuilder::I32(b) => b.append_null(),
            ColBuilder::I64(b) => b.append_null(),
            ColBuilder::F64(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::Ts(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Str(b) => take_str(b),
            ColBuilder::Dict(b) => take_dict(b),
            ColBuilder::I32(b) => take_primitive(b),
            ColBuilder::I64(b) => take_primitive(b),
            ColBuilder::F64(b) => take_primitive(b),
            ColBuilder::Bool(b) => {
                let a = b.finish();
                *b = BooleanBuilder::with_capacity(a.len());
                Arc::new(a)
            }
            ColBuilder::Ts(b) => take_primitive(b),
        }
    }
}

// The `take_*` helpers finish a builder and leave in its place one sized like what it held:
// the next batch is usually about as large, and growing from empty again would cost copies
// and fresh pages on every batch.

fn take_str(b: &mut StringBuilder) -> ArrayRef {
    let a = b.finish();
    *b = StringBuilder::with_capacity(a.len(), a.value_data().len());
    Arc::new(a)
}

fn take_dict(b: &mut DictBuilder) -> ArrayRef {
    let a = b.finish();
    let (distinct, bytes) = a
        .values()
        .as_string_opt::<i32>()
        .map_or((0, 0), |v| (v.len(), v.value_data().len()));
    *b = DictBuilder::with_capacity(a.len(), distinct, bytes);
    Arc::new(a)
}

fn take_primitive<T: ArrowPrimitiveType>(b: &mut PrimitiveBuilder<T>) -> ArrayRef {
    let a = b.finish();
    *b = PrimitiveBuilder::<T>::with_capacity(a.len()).with_data_type(a.data_type().clone());
    Arc::new(a)
}

/// Buffered rows of one event table.
pub(crate) struct TableBuilders {
    event_id: StringBuilder,
    event_type: DictBuilder,
    event_time: TimestampMicrosecondBuilder,
    ingest_time: TimestampMicrosecondBuilder,
    source: StringBuilder,
    schema_version: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    kafka_topic: StringBuilder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    kafka_timestamp: TimestampMicrosecondBuilder,
    event_date: Date32Builder,
    columns: Vec<ColBuilder>,
    extra: StringBuilder,
    pub rows: usize,
}

impl TableBuilders {
    pub fn new(plan: &TablePlan) -> Self {
        TableBuilders {
            event_id: StringBuilder::new(),
            event_type: DictBuilder::new(),
            event_time: ts_builder(),
            ingest_time: ts_builder(),
            source: StringBuilder::new(),
            schema_version: StringBuilder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            kafka_topic: StringBuilder::new(),
            kafka_partition: Int32Builder::new(),
            kafka_offset: Int64Builder::new(),
            kafka_timestamp: ts_builder(),
            event_date: Date32Builder::new(),
            columns: plan
                .columns
                .iter()
                .map(|c| ColBuilder::new(c.kind))
                .collect(),
            extra: StringBuilder::new(),
            rows: 0,
        }
    }

    /// Appends one good event.
    pub fn append(
        &mut self,
        env: &Envelope<'_>,
        rec: &RawRecord<'_>,
        ingest_time_us: i64,
        values: &[Val<'_>],
        extra: Option<&str>,
    ) -> Result<(), ArrowError> {
        // The fallible appends (dictionary key overflow) come first, before any column of the
        // row is written.
        self.event_type.append(&*env.event_type)?;
        self.event_id.append_value(&env.id);
        self.event_time.append_value(env.time_us);
        self.ingest_time.append_value(ingest_time_us);
        self.source.append_option(env.source.as_deref());
        self.schema_version
            .append_option(env.schema_version.as_deref());
        self.trace_id.append_option(env.trace.map(|t| t.0));
        self.span_id.append_option(env.trace.map(|t| t.1));
        self.kafka_topic.append_value(rec.topic);
        self.kafka_partition.append_value(rec.partition);
        self.kafka_offset.append_value(rec.offset);
        self.kafka_timestamp
            .append_option(rec.timestamp_ms.and_then(millis_to_micros));
        self.event_date.append_value(date_of(env.time_us));
        for (b, v) in self.columns.iter_mut().zip(values) {
            match v {
                Val::Null => b.append_null(),
                v => b.append(v)?,
            }
        }
        self.extra.append_option(extra);
        self.rows += 1;
        Ok(())
    }

    /// Takes the buffered rows as a batch of `plan`'s schema and resets.
    pub fn finish(&mut self, plan: &TablePlan) -> Result<RecordBatch, ArrowError> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(plan.schema.fields().len());
        arrays.push(take_str(&mut self.event_id));
        arrays.push(take_dict(&mut self.event_type));
        arrays.push(take_primitive(&mut self.event_time));
        arrays.push(take_primitive(&mut self.ingest_time));
        arrays.push(take_str(&mut self.source));
        arrays.push(take_str(&mut self.schema_version));
        arrays.push(take_str(&mut self.trace_id));
        arrays.push(take_str(&mut self.span_id));
        arrays.push(take_str(&mut self.kafka_topic));
        arrays.push(take_primitive(&mut self.kafka_partition));
        arrays.push(take_primitive(&mut self.kafka_offset));
        arrays.push(take_primitive(&mut self.kafka_timestamp));
        arrays.push(take_primitive(&mut self.event_date));
        arrays.extend(self.columns.iter_mut().map(ColBuilder::finish));
        arrays.push(take_str(&mut self.extra));
        self.rows = 0;
        RecordBatch::try_new(plan.schema.clone(), arrays)
    }
}
