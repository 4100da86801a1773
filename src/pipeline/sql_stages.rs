//! `sql` transforms inside `paystream run`: a statement over one of the kafka source's tables,
//! run on the rows that table accepted, whose output window transforms read by the
//! transform's id. They keep the Kafka position columns, so a window fed by one can still
//! record its late events exactly once.

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use paystream_core::config::{Config, TransformConfig};
use paystream_transforms::sql::SqlTransform;

/// Columns a sql transform's output must keep.
const POSITION_COLUMNS: [&str; 3] = ["kafka_topic", "kafka_partition", "kafka_offset"];

pub(super) struct Stage {
    pub id: String,
    pub transform: SqlTransform,
}

/// The pipeline's sql transforms.
#[derive(Default)]
pub(super) struct SqlStages {
    stages: Vec<Stage>,
}

impl SqlStages {
    /// Plan every sql transform of `cfg` over `tables` (the source's tables). Each must read
    /// the kafka source `source`. Errors are one message per transform.
    pub async fn plan(
        cfg: &Config,
        source: &str,
        tables: &[(String, SchemaRef)],
    ) -> (Self, Vec<String>) {
        let mut out = Self::default();
        let mut problems = Vec::new();
        for (id, t) in &cfg.transforms {
            let TransformConfig::Sql(s) = t else {
                continue;
            };
            match plan_one(&s.inputs, &s.sql, source, tables).await {
                Ok(transform) => out.stages.push(Stage {
                    id: id.clone(),
                    transform,
                }),
                Err(e) => problems.push(format!("{}: transforms.{id}: {e:#}", cfg.file)),
            }
        }
        (out, problems)
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The output tables, by transform id, for planning what reads them.
    pub fn outputs(&self) -> Vec<(String, SchemaRef)> {
        self.stages
            .iter()
            .map(|s| (s.id.clone(), s.transform.output_schema()))
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// `accepted` (table, rows) followed by what each sql transform makes of them, under its
    /// id.
    pub async fn route(
        &self,
        accepted: &[(String, RecordBatch)],
    ) -> Result<Vec<(String, RecordBatch)>> {
        let mut out: Vec<(String, RecordBatch)> = accepted.to_vec();
        for (table, batch) in accepted {
            for s in self.stages.iter().filter(|s| s.transform.input() == table) {
                let batches = s
                    .transform
                    .apply(batch.clone())
                    .await
                    .with_context(|| format!("transforms.{}", s.id))?;
                out.extend(batches.into_iter().map(|b| (s.id.clone(), b)));
            }
        }
        Ok(out)
    }
}

async fn plan_one(
    inputs: &[String],
    sql: &str,
    source: &str,
    tables: &[(String, SchemaRef)],
) -> Result<SqlTransform> {
    if inputs.iter().any(|i| i != source) {
        bail!(
            "inputs: a sql transform reads the kafka source `{source}` (its tables by name in \
             FROM); chains of sql transforms are not supported yet"
        );
    }
    let transform = SqlTransform::try_new_over(tables, sql)
        .await
        .context("sql")?;
    let output = transform.output_schema();
    let missing: Vec<&str> = POSITION_COLUMNS
        .into_iter()
        .filter(|c| output.field_with_name(c).is_err())
        .collect();
    if !missing.is_empty() {
        bail!(
            "sql: the output must keep {} (select them, or `*`): windows record late events \
             by their Kafka position",
            missing.join(", ")
        );
    }
    Ok(transform)
}
