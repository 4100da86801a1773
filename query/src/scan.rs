//! How a lake table is scanned: whether filters are evaluated inside the Parquet decoder.
//!
//! delta-rs offers two scans. With Parquet pushdown, the filters prune row groups and pages
//! (statistics, page index, bloom filters) and are then evaluated row by row while decoding;
//! without it, only whole files are skipped (Delta's per-file statistics) and DataFusion
//! filters the decoded batches. Which one is faster depends on the filter:
//!
//! - A lookup by id (`payment_id = '…'`) keeps a row in a million. The bloom filters the lake
//!   writes on id columns skip all row groups but one, so pushdown wins by far: 28 ms against
//!   430 ms on the 10M-event benchmark lake (`scripts/bench-query`).
//! - An analyst's filter (`event_type IN ('PaymentAuthorized', 'PaymentRejected')`) keeps most
//!   rows. Row-level pushdown then decodes the filter's columns twice and evaluates the
//!   predicate row by row: 265 ms against 170 ms with a filter above the scan, on that lake.
//!
//! [`LakeScan`] holds both and picks per query: pushdown when a filter compares an id column
//! to constants (its bloom filters then fetched per file and column, see `bloom_prefetch`),
//! the plain scan otherwise. `DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS=true`
//! asks for pushdown on every query.
//!
//! A lookup's id comparisons are not handed to delta-rs. Given one, it parses every file's
//! statistics JSON to skip files by the id's min/max, which cannot skip anything when ids are
//! random, and that was 7 of the 12 ms it took to plan a lookup on the benchmark lake. The
//! comparison stays in DataFusion's filter above the scan (every filter on a non-partition
//! column is inexact to DataFusion), and the physical optimizer pushes that filter through
//! delta-rs's `DeltaScanExec` into the Parquet scan, where the bloom filters and the row
//! filter use it as before. Where delta-rs cannot take it (deletion vectors, column
//! mapping), the filter stays above the scan: slower, never wrong.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, Statistics};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use paystream_sinks::delta::is_id_column;

use crate::{bloom_prefetch, Result};

/// The provider of one table snapshot; see the module documentation.
pub(crate) async fn table_provider(
    table: &DeltaTable,
    ctx: &SessionContext,
) -> Result<Arc<dyn TableProvider>> {
    let state = ctx.state();
    let pushdown_everywhere = state.config().options().execution.parquet.pushdown_filters;
    let session = |pushdown: bool| {
        let mut s = state.clone();
        s.config_mut()
            .options_mut()
            .execution
            .parquet
            .pushdown_filters = pushdown;
        Arc::new(s)
    };
    let selective = table.table_provider().with_session(session(true)).await?;
    if pushdown_everywhere {
        return Ok(selective);
    }
    let broad = table.table_provider().with_session(session(false)).await?;
    let id_columns = broad
        .schema()
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            ) && is_id_column(f.name())
        })
        .map(|f| f.name().clone())
        .collect();
    Ok(Arc::new(LakeScan {
        broad,
        selective,
        id_columns,
    }))
}

/// One table snapshot, scanned with or without Parquet pushdown depending on the filters.
#[derive(Debug)]
pub(crate) struct LakeScan {
    broad: Arc<dyn TableProvider>,
    selective: Arc<dyn TableProvider>,
    /// String columns named `…_id`: those the lake's files carry bloom filters for.
    id_columns: Vec<String>,
}

impl LakeScan {
    /// `id = 'x'`, `'x' = id` or `id IN ('x', 'y')` on an id column.
    fn is_lookup(&self, filter: &Expr) -> bool {
        let is_id = |e: &Expr| matches!(e, Expr::Column(c) if self.id_columns.contains(&c.name));
        let is_constant = |e: &Expr| matches!(e, Expr::Literal(..));
        match filter {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => (is_id(left) && is_constant(right)) || (is_constant(left) && is_id(right)),
            Expr::InList(list) => {
                !list.negated && is_id(&list.expr) && list.list.iter().all(is_constant)
            }
            _ => false,
        }
    }
}

#[async_trait]
impl TableProvider for LakeScan {
    fn schema(&self) -> SchemaRef {
        self.broad.schema()
    }

    fn table_type(&self) -> TableType {
        self.broad.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Both scans classify filters alike (exact on partition columns, inexact otherwise);
        // they differ only in what they do with them.
        self.broad.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if filters.iter().any(|f| self.is_lookup(f)) {
            // See the module documentation: delta-rs gets every filter but the id comparisons.
            let rest: Vec<Expr> = filters
                .iter()
                .filter(|f| !self.is_lookup(f))
                .cloned()
                .collect();
            let plan = self.selective.scan(state, projection, &rest, limit).await?;
            return bloom_prefetch::with_bloom_prefetch(plan);
        }
        self.broad.scan(state, projection, filters, limit).await
    }

    fn statistics(&self) -> Option<Statistics> {
        self.broad.statistics()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::empty::EmptyTable;
    use datafusion::logical_expr::{col, in_list, lit};
    use datafusion::physical_plan::empty::EmptyExec;
    use std::sync::Mutex;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("payment_id", DataType::Utf8View, false),
            Field::new("event_type", DataType::Utf8View, false),
        ]))
    }

    fn scan() -> LakeScan {
        let table: Arc<dyn TableProvider> = Arc::new(EmptyTable::new(schema()));
        LakeScan {
            broad: Arc::clone(&table),
            selective: table,
            id_columns: vec!["payment_id".into()],
        }
    }

    /// A table that records the filters each scan is given.
    #[derive(Debug, Default)]
    struct Recording {
        scans: Mutex<Vec<Vec<Expr>>>,
    }

    impl Recording {
        fn scans(&self) -> Vec<Vec<Expr>> {
            self.scans.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    #[async_trait]
    impl TableProvider for Recording {
        fn schema(&self) -> SchemaRef {
            schema()
        }

        fn table_type(&self) -> TableType {
            TableType::Base
        }

        async fn scan(
            &self,
            _state: &dyn Session,
            _projection: Option<&Vec<usize>>,
            filters: &[Expr],
            _limit: Option<usize>,
        ) -> DfResult<Arc<dyn ExecutionPlan>> {
            if let Ok(mut scans) = self.scans.lock() {
                scans.push(filters.to_vec());
            }
            Ok(Arc::new(EmptyExec::new(schema())))
        }
    }

    #[tokio::test]
    async fn a_lookup_goes_to_the_pushdown_scan_without_its_id_comparison() {
        let broad = Arc::new(Recording::default());
        let selective = Arc::new(Recording::default());
        let s = LakeScan {
            broad: Arc::clone(&broad) as Arc<dyn TableProvider>,
            selective: Arc::clone(&selective) as Arc<dyn TableProvider>,
            id_columns: vec!["payment_id".into()],
        };
        let state = SessionContext::new().state();
        let other = col("event_type").eq(lit("PaymentAuthorized"));
        let lookup = col("payment_id").eq(lit("pay_1"));

        s.scan(&state, None, &[lookup, other.clone()], None)
            .await
            .expect("planned");
        assert_eq!(selective.scans(), vec![vec![other.clone()]]);
        assert!(broad.scans().is_empty());

        // Without a lookup, the plain scan gets every filter.
        s.scan(&state, None, std::slice::from_ref(&other), None)
            .await
            .expect("planned");
        assert_eq!(broad.scans(), vec![vec![other]]);
        assert_eq!(selective.scans().len(), 1);
    }

    #[test]
    fn lookups_are_comparisons_of_an_id_with_constants() {
        let s = scan();
        assert!(s.is_lookup(&col("payment_id").eq(lit("pay_1"))));
        assert!(s.is_lookup(&lit("pay_1").eq(col("payment_id"))));
        assert!(s.is_lookup(&in_list(col("payment_id"), vec![lit("a"), lit("b")], false)));
        // Not lookups: another column, a negation, a range, a non-constant.
        assert!(!s.is_lookup(&col("event_type").eq(lit("PaymentAuthorized"))));
        assert!(!s.is_lookup(&in_list(col("payment_id"), vec![lit("a")], true)));
        assert!(!s.is_lookup(&col("payment_id").gt(lit("pay_1"))));
        assert!(!s.is_lookup(&col("payment_id").eq(col("event_type"))));
    }
}
