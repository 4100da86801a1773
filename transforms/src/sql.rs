//! Per-batch SQL: filter, project or enrich each batch with a DataFusion query. The query is
//! planned once against the input schema, so a statement that cannot run is refused when the
//! pipeline is built, not on the first event.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;

use crate::{Error, Result};

/// A SQL statement applied to every batch of one input.
pub struct SqlTransform {
    input: String,
    sql: String,
    schema: SchemaRef,
    options: SQLOptions,
    output: SchemaRef,
}

impl SqlTransform {
    /// Plan `sql` over a table named `input` with `schema`; fails if the statement does not
    /// plan (unknown column, syntax error, a write).
    pub async fn try_new(input: &str, schema: SchemaRef, sql: &str) -> Result<Self> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let mut t = Self {
            input: input.to_string(),
            sql: sql.to_string(),
            schema: schema.clone(),
            options,
            output: schema,
        };
        let ctx = t.context(Vec::new())?;
        let df = ctx.sql_with_options(&t.sql, t.options).await?;
        t.output = Arc::new(df.schema().as_arrow().clone());
        Ok(t)
    }

    /// Plan `sql` over whichever one of `tables` (name, schema) it reads; fails if it reads
    /// none or several, or does not plan.
    pub async fn try_new_over(tables: &[(String, SchemaRef)], sql: &str) -> Result<Self> {
        let ctx = SessionContext::new();
        for (name, schema) in tables {
            let table = MemTable::try_new(schema.clone(), vec![Vec::new()])?;
            ctx.register_table(name.as_str(), Arc::new(table))?;
        }
        let plan = ctx.state().create_logical_plan(sql).await?;
        let input = crate::scanned_table(&plan)?;
        let schema = tables
            .iter()
            .find(|(n, _)| *n == input)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| Error::Invalid(format!("table {input} is not an input")))?;
        Self::try_new(&input, schema, sql).await
    }

    /// The schema of the table the statement reads.
    pub fn input_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The table the statement reads.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The schema of what [`Self::apply`] returns.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn context(&self, batches: Vec<RecordBatch>) -> Result<SessionContext> {
        let ctx = SessionContext::new();
        let table = MemTable::try_new(self.schema.clone(), vec![batches])?;
        ctx.register_table(self.input.as_str(), Arc::new(table))?;
        Ok(ctx)
    }

    /// Run the statement over one batch.
    pub async fn apply(&self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        // Same columns, whatever the field metadata says; types the lake reads differently
        // (string views for strings) are cast back.
        let batch = crate::conform(batch.columns().to_vec(), &self.schema).map_err(|e| {
            Error::Invalid(format!(
                "batch does not fit the schema {} was planned with: {e}",
                self.input
            ))
        })?;
        let ctx = self.context(vec![batch])?;
        Ok(ctx
            .sql_with_options(&self.sql, self.options)
            .await?
            .collect()
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("currency", DataType::Utf8, false),
            Field::new("amount_minor", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["EUR", "EUR", "JPY"])),
                Arc::new(Int64Array::from(vec![100, 250, 7])),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn filters_and_aggregates_each_batch() {
        let b = batch();
        let t = SqlTransform::try_new(
            "payments",
            b.schema(),
            "SELECT currency, sum(amount_minor) AS total FROM payments WHERE currency = 'EUR' GROUP BY currency",
        )
        .await
        .unwrap();
        let out = t.apply(b).await.unwrap();
        let total = out[0]
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(total, 350);
    }

    #[tokio::test]
    async fn refuses_statements_that_do_not_plan_or_write() {
        let schema = batch().schema();
        assert!(
            SqlTransform::try_new("payments", schema.clone(), "SELECT nope FROM payments")
                .await
                .is_err()
        );
        assert!(
            SqlTransform::try_new("payments", schema, "DROP TABLE payments")
                .await
                .is_err()
        );
    }
}
