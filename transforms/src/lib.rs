//! paystream transforms: DataFusion SQL over the batches flowing through a pipeline.
//!
//! Layout:
//! - [`sql`]: a per-batch SQL transform; the batch is visible as a table named after the
//!   transform's input.
//! - [`window`]: windowed aggregations on event time, with mergeable state, watermarks and
//!   allowed lateness.

pub mod sql;
pub mod window;

/// Errors of the transforms crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sql(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Invalid(String),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Result of the transforms crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one table the plan scans.
pub(crate) fn scanned_table(plan: &datafusion::logical_expr::LogicalPlan) -> Result<String> {
    use datafusion::common::tree_node::TreeNode as _;
    let mut names = std::collections::BTreeSet::new();
    plan.apply(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
            names.insert(scan.table_name.table().to_string());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    let mut it = names.into_iter();
    match (it.next(), it.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(Error::Invalid(
            "the SQL reads no table; it must read one input table".into(),
        )),
        (Some(a), Some(b)) => Err(Error::Invalid(format!(
            "the SQL reads several tables ({a}, {b}, …); it must read exactly one"
        ))),
    }
}

/// `columns` as a batch of `schema`, each cast to its field's type where it differs (the lake
/// reads strings as string views, the decoder writes dictionaries).
pub(crate) fn conform(
    columns: Vec<arrow::array::ArrayRef>,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<arrow::record_batch::RecordBatch> {
    let conformed = columns
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        conformed,
    )?)
}
