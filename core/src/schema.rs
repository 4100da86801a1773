//! The canonical lake schemas: which event types go to which table, how JSON fields map to
//! columns, and the Arrow schemas that follow from it.
//!
//! The mapping is data, not code: the built-in preset (`preset.toml`, the contract of
//! `shared/EVENTS.md`) can be replaced or extended table by table from `pipelines.toml`.
//! Every event table starts with the same envelope columns ([`COMMON_COLUMNS`]) so that the
//! sink can filter rows by Kafka partition and offset for exactly-once commits, whatever the
//! table.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use crate::{Error, Result};

/// The preset shipped with paystream, as TOML.
pub const PRESET_TOML: &str = include_str!("preset.toml");

/// The table bad records go to.
pub const DLQ_TABLE: &str = "dlq";

/// Type of a mapped column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTF-8 string.
    String,
    /// Dictionary-encoded UTF-8 string (low-cardinality values such as a country).
    Dict,
    Int32,
    Int64,
    Float64,
    Bool,
    /// UTC timestamp in microseconds; JSON as RFC 3339 with an offset or epoch milliseconds.
    Timestamp,
    /// Exact amount in integer minor units. A JSON integer under a field whose name ends in
    /// `_minor` is taken as minor units; any other number or decimal string is scaled by the
    /// currency's ISO 4217 exponent and must be exact.
    Money,
    /// ISO 4217 alphabetic code, validated against the known list; dictionary-encoded.
    Currency,
}

/// One mapped column of an event table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name in the table.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// JSON paths tried in order (dots reach into nested objects); defaults to `[name]`.
    #[serde(default)]
    pub fields: Vec<String>,
    /// For `money` columns: the JSON path of the currency code.
    #[serde(default)]
    pub currency: Option<String>,
    /// An event lacking this column is a bad record.
    #[serde(default)]
    pub required: bool,
}

impl ColumnSpec {
    /// The JSON paths to look the value up under, in order.
    pub fn paths(&self) -> Vec<&str> {
        if self.fields.is_empty() {
            vec![self.name.as_str()]
        } else {
            self.fields.iter().map(String::as_str).collect()
        }
    }
}

/// One event table: the event types routed to it and its mapped columns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Table name (filled in from the map key).
    #[serde(skip)]
    pub name: String,
    /// Event types (`event_type` / CloudEvents `type`) routed to this table.
    pub event_types: Vec<String>,
    /// Mapped columns, after the common envelope columns.
    pub columns: Vec<ColumnSpec>,
}

/// The whole mapping: every event table by name.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SchemaSpec {
    #[serde(default)]
    pub tables: BTreeMap<String, TableSpec>,
}

impl SchemaSpec {
    /// The built-in preset.
    pub fn preset() -> Result<Self> {
        let mut spec: SchemaSpec =
            toml::from_str(PRESET_TOML).map_err(|e| Error::Preset(e.to_string()))?;
        spec.fill_names();
        Ok(spec)
    }

    /// The preset with `overrides` applied: a table named in `overrides` replaces the
    /// preset's table of that name whole; new names add tables.
    pub fn preset_with(overrides: &SchemaSpec) -> Result<Self> {
        let mut spec = Self::preset()?;
        for (name, table) in &overrides.tables {
            let mut t = table.clone();
            t.name = name.clone();
            spec.tables.insert(name.clone(), t);
        }
        Ok(spec)
    }

    fn fill_names(&mut self) {
        for (name, t) in self.tables.iter_mut() {
            t.name = name.clone();
        }
    }

    /// Tables in a stable order (by name).
    pub fn tables(&self) -> impl Iterator<Item = &TableSpec> {
        self.tables.values()
    }
}

/// Envelope columns that start every event table, in order.
pub const COMMON_COLUMNS: &[&str] = &[
    "event_id",
    "event_type",
    "event_time",
    "ingest_time",
    "source",
    "schema_version",
    "trace_id",
    "span_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "event_date",
];

/// Column that holds unmapped JSON fields of an event, as a JSON object.
pub const EXTRA_COLUMN: &str = "extra";

/// The partition column of every table.
pub const PARTITION_COLUMN: &str = "event_date";

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn common_fields() -> Vec<Field> {
    vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("event_type", dict(), false),
        Field::new("event_time", ts(), false),
        Field::new("ingest_time", ts(), false),
        Field::new("source", DataType::Utf8, true),
        Field::new("schema_version", DataType::Utf8, true),
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("kafka_timestamp", ts(), true),
        Field::new("event_date", DataType::Date32, false),
    ]
}

impl ColumnType {
    /// The Arrow type this column is stored as.
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Dict | ColumnType::Currency => dict(),
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 | ColumnType::Money => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => ts(),
        }
    }
}

impl TableSpec {
    /// The Arrow schema of this table: envelope, mapped columns, then `extra`.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields = common_fields();
        for c in &self.columns {
            fields.push(Field::new(&c.name, c.kind.data_type(), !c.required));
        }
        fields.push(Field::new(EXTRA_COLUMN, DataType::Utf8, true));
        Arc::new(Schema::new(fields))
    }
}

/// The table spans received by an `otlp` source go to.
pub const SPANS_TABLE: &str = "spans";

/// The Arrow schema of the `spans` table: one row per OTLP span. Ids are lowercase hex, as in
/// the event tables' `trace_id`/`span_id`, so the two join on `trace_id`. Times are UTC
/// microseconds (Delta's precision); `duration_ns` keeps the span's exact length.
/// Attributes, events and links are JSON text, readable by every engine.
pub fn spans_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("parent_span_id", DataType::Utf8, true),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, false),
        // unspecified, internal, server, client, producer, consumer.
        Field::new("kind", DataType::Utf8, false),
        Field::new("service_name", DataType::Utf8, true),
        Field::new("scope_name", DataType::Utf8, true),
        Field::new("start_time", ts(), false),
        Field::new("end_time", ts(), false),
        Field::new("duration_ns", DataType::Int64, false),
        // unset, ok, error.
        Field::new("status_code", DataType::Utf8, false),
        Field::new("status_message", DataType::Utf8, true),
        Field::new("attributes", DataType::Utf8, false),
        Field::new("resource_attributes", DataType::Utf8, false),
        Field::new("events", DataType::Utf8, false),
        Field::new("links", DataType::Utf8, false),
        Field::new("received_at", ts(), false),
        Field::new("event_date", DataType::Date32, false),
    ]))
}

/// The table of events that reached a window transform after their windows had closed.
pub const LATE_EVENTS_TABLE: &str = "late_events";

/// The Arrow schema of the `late_events` table: one row per late event and window transform,
/// pointing at the event (which is in its own table as usual) and saying how late it was.
pub fn late_events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("transform", DataType::Utf8, false),
        Field::new("source_table", DataType::Utf8, false),
        Field::new("event_id", DataType::Utf8, true),
        Field::new("event_type", DataType::Utf8, true),
        Field::new("event_time", ts(), true),
        // Windows ending at or before this were closed when the event arrived.
        Field::new("closed_until", ts(), false),
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("kafka_timestamp", ts(), true),
        Field::new("received_at", ts(), false),
        Field::new("event_date", DataType::Date32, false),
    ]))
}

/// The Arrow schema of the `dlq` table.
pub fn dlq_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("raw", DataType::Binary, true),
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("kafka_timestamp", ts(), true),
        Field::new("key", DataType::Binary, true),
        // Headers as a JSON object of name -> value (UTF-8, or base64 prefixed `b64:`).
        Field::new("headers", DataType::Utf8, true),
        Field::new("error_kind", dict(), false),
        Field::new("error", DataType::Utf8, false),
        Field::new("received_at", ts(), false),
        Field::new("event_date", DataType::Date32, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_parses_and_builds_schemas() {
        let spec = SchemaSpec::preset().unwrap();
        let names: Vec<_> = spec.tables().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["orders", "payments", "refunds"]);
        let payments = &spec.tables["payments"];
        let schema = payments.arrow_schema();
        assert_eq!(schema.field(0).name(), "event_id");
        assert_eq!(
            schema.field_with_name("amount_minor").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(schema.fields().last().unwrap().name(), EXTRA_COLUMN);
    }

    #[test]
    fn override_replaces_a_table_and_adds_one() {
        let over: SchemaSpec = toml::from_str(
            r#"
            [tables.orders]
            event_types = ["OrderPlaced"]
            columns = [{ name = "order_id", type = "string", required = true }]
            [tables.chargebacks]
            event_types = ["ChargebackOpened"]
            columns = [{ name = "payment_id", type = "string" }]
            "#,
        )
        .unwrap();
        let spec = SchemaSpec::preset_with(&over).unwrap();
        assert_eq!(spec.tables["orders"].event_types, ["OrderPlaced"]);
        assert_eq!(spec.tables["chargebacks"].name, "chargebacks");
        assert_eq!(spec.tables.len(), 4);
    }
}
