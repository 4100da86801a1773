//! A Delta table of window results: appended to once per closed window batch, each commit
//! carrying how far the windows are final (a `txn` action whose app id names the pipeline and
//! the transform, and whose version is the end, in µs, up to which windows are closed). A
//! restart reads that version back and never writes those windows again.

use std::sync::Arc;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::{Action, Transaction};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};

use super::table::{commit_append, open_or_create_table};
use super::LakeLocation;
use crate::{Error, Result};

/// The results table of one window transform.
pub struct ResultsTable {
    name: String,
    table: DeltaTable,
    schema: SchemaRef,
    app_id: String,
}

impl ResultsTable {
    /// Open `name` under `location`, creating it with `schema` if needed; `app_id` identifies
    /// the writer (pipeline and transform) in the table's `txn` actions.
    pub async fn open_or_create(
        location: &LakeLocation,
        name: &str,
        schema: SchemaRef,
        app_id: String,
    ) -> Result<Self> {
        let (table, existed) = open_or_create_table(location, name, &schema, None).await?;
        if existed {
            let existing: Vec<String> = table
                .snapshot()
                .map_err(|source| Error::Delta {
                    table: name.to_string(),
                    source,
                })?
                .schema()
                .fields()
                .map(|f| f.name().clone())
                .collect();
            let wanted: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            if existing != wanted {
                return Err(Error::Schema {
                    table: name.to_string(),
                    message: format!(
                        "holds columns {existing:?}, but the window's SQL now produces \
                         {wanted:?}; write the results to a new table (the transform's `table` \
                         key)"
                    ),
                });
            }
        }
        Ok(Self {
            name: name.to_string(),
            table,
            schema,
            app_id,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn delta_err(&self, source: DeltaTableError) -> Error {
        Error::Delta {
            table: self.name.clone(),
            source,
        }
    }

    /// Up to where (µs) windows are final in this table: the version of our `txn`.
    pub async fn closed_until(&mut self) -> Result<Option<i64>> {
        self.table
            .update_incremental(None)
            .await
            .map_err(|e| self.delta_err(e))?;
        let snapshot = self.table.snapshot().map_err(|e| self.delta_err(e))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), self.app_id.clone())
            .await
            .map_err(|e| self.delta_err(e))
    }

    /// Append `batches` and record windows up to `closed_until` (µs) as final, in one commit.
    pub async fn append(&mut self, batches: Vec<RecordBatch>, closed_until: i64) -> Result<u64> {
        let mut writer =
            RecordBatchWriter::for_table(&self.table).map_err(|e| self.delta_err(e))?;
        let mut rows = 0;
        for b in batches {
            if b.num_rows() == 0 {
                continue;
            }
            rows += b.num_rows() as u64;
            let b = RecordBatch::try_new(Arc::clone(&self.schema), b.columns().to_vec())?;
            writer.write(b).await.map_err(|e| self.delta_err(e))?;
        }
        let adds = writer.flush().await.map_err(|e| self.delta_err(e))?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        actions.push(Action::Txn(Transaction::new_with_last_update(
            self.app_id.clone(),
            closed_until,
            Some(now),
        )));
        commit_append(&mut self.table, actions, None)
            .await
            .map_err(|e| self.delta_err(e))?;
        Ok(rows)
    }
}
