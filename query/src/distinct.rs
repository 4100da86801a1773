//! A plan rewrite for the distinct counts analysts write beside plain aggregates, such as
//! `SELECT merchant_id, count(*), count(DISTINCT payment_id), sum(amount_minor) ... GROUP BY 1`.
//!
//! DataFusion evaluates `count(DISTINCT x)` with a hash set per group, row by row, and its own
//! rewrite into two group-bys gives up as soon as a plain `count` sits beside the distinct
//! aggregate. This rule does the rewrite in that case too: the inner aggregate groups by the
//! keys plus `x` and computes the plain aggregates, the outer one groups by the keys, counts the
//! `x` values and re-aggregates the partials (`count` becomes a sum of counts, `sum`, `min` and
//! `max` stay themselves). Both group-bys run on DataFusion's vectorised group tables.
//!
//! It applies only when it is exact: every distinct aggregate is `count`, `sum`, `min` or `max`
//! of one and the same expression, every other aggregate is `count`, `sum`, `min` or `max`,
//! none has a `FILTER` or `ORDER BY`, and there are no grouping sets.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::Result;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{col, lit, Aggregate, Expr, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct DistinctAsGroupBy;

const REAGGREGATED: [&str; 4] = ["count", "sum", "min", "max"];

/// The one expression all distinct aggregates take, when the rewrite is exact.
fn distinct_argument(aggr: &[Expr]) -> Option<Expr> {
    let mut argument: Option<&Expr> = None;
    let mut plain_count = false;
    for e in aggr {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
            return None;
        };
        let name = func.name().to_ascii_lowercase();
        if params.filter.is_some()
            || !params.order_by.is_empty()
            || !REAGGREGATED.contains(&name.as_str())
        {
            return None;
        }
        if params.distinct {
            let [arg] = params.args.as_slice() else {
                return None;
            };
            match argument {
                Some(a) if a != arg => return None,
                _ => argument = Some(arg),
            }
        } else if name == "count" {
            plain_count = true;
        }
    }
    // Without a plain count DataFusion's own rule already does this rewrite.
    argument.filter(|_| plain_count).cloned()
}

fn aggregate(func: &Arc<datafusion::logical_expr::AggregateUDF>, args: Vec<Expr>) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::clone(func),
        args,
        false,
        None,
        Vec::new(),
        None,
    ))
}

impl OptimizerRule for DistinctAsGroupBy {
    fn name(&self) -> &str {
        "paystream_distinct_as_group_by"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if matches!(agg.group_expr.first(), Some(Expr::GroupingSet(_))) {
            return Ok(Transformed::no(plan));
        }
        let Some(argument) = distinct_argument(&agg.aggr_expr) else {
            return Ok(Transformed::no(plan));
        };
        let schema = Arc::clone(&agg.schema);
        let keys = agg.group_expr.len();

        // Inner: the keys (complex ones under a name the outer can refer to) and the distinct
        // argument as grouping columns, the plain aggregates as partials.
        let mut inner_group = Vec::with_capacity(keys + 1);
        let mut outer_group = Vec::with_capacity(keys);
        for (i, g) in agg.group_expr.iter().enumerate() {
            if let Expr::Column(_) = g {
                inner_group.push(g.clone());
                outer_group.push(g.clone());
            } else {
                let name = format!("__ps_key{i}");
                inner_group.push(g.clone().alias(&name));
                outer_group.push(col(name));
            }
        }
        inner_group.push(argument.alias("__ps_distinct"));
        let mut inner_aggr = Vec::new();
        let mut outer_aggr = Vec::with_capacity(agg.aggr_expr.len());
        // Whether each output is a count re-aggregated as a sum (NULL over no rows: 0).
        let mut summed_count = Vec::with_capacity(agg.aggr_expr.len());
        for (j, e) in agg.aggr_expr.iter().enumerate() {
            let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
                return Ok(Transformed::no(plan));
            };
            let AggregateFunctionParams { args, distinct, .. } = params;
            let out = format!("__ps_out{j}");
            if *distinct {
                outer_aggr.push(aggregate(func, vec![col("__ps_distinct")]).alias(out));
                summed_count.push(false);
            } else {
                let partial = format!("__ps_part{j}");
                inner_aggr.push(aggregate(func, args.clone()).alias(&partial));
                let is_count = func.name().eq_ignore_ascii_case("count");
                let outer_func = if is_count {
                    sum_udaf()
                } else {
                    Arc::clone(func)
                };
                outer_aggr.push(aggregate(&outer_func, vec![col(partial)]).alias(out));
                summed_count.push(is_count);
            }
        }
        let inner = LogicalPlan::Aggregate(Aggregate::try_new(
            Arc::clone(&agg.input),
            inner_group,
            inner_aggr,
        )?);
        let outer = LogicalPlan::Aggregate(Aggregate::try_new(
            Arc::new(inner),
            outer_group.clone(),
            outer_aggr,
        )?);

        // The names (and qualifiers) the plan above refers to.
        let mut exprs = Vec::with_capacity(schema.fields().len());
        for (i, g) in outer_group.into_iter().enumerate() {
            let (qualifier, field) = schema.qualified_field(i);
            exprs.push(g.alias_qualified(qualifier.cloned(), field.name()));
        }
        for (j, summed) in summed_count.into_iter().enumerate() {
            let (qualifier, field) = schema.qualified_field(keys + j);
            let value = if summed {
                coalesce(vec![col(format!("__ps_out{j}")), lit(0i64)])
            } else {
                col(format!("__ps_out{j}"))
            };
            exprs.push(value.alias_qualified(qualifier.cloned(), field.name()));
        }
        let projection = Projection::try_new(exprs, Arc::new(outer))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn refunds(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("merchant_id", DataType::Utf8, false),
            Field::new("currency", DataType::Utf8, false),
            Field::new("payment_id", DataType::Utf8, true),
            Field::new("amount_minor", DataType::Int64, true),
        ]));
        let merchant: Vec<String> = (0..rows).map(|i| format!("m{}", i % 7)).collect();
        let currency: Vec<&str> = (0..rows).map(|i| ["EUR", "USD"][i % 2]).collect();
        // Repeated ids (i / 3), and some nulls, which count(DISTINCT) must not count.
        let payment: Vec<Option<String>> = (0..rows)
            .map(|i| (i % 11 != 0).then(|| format!("p{}", i / 3)))
            .collect();
        let amount: Vec<Option<i64>> = (0..rows)
            .map(|i| (i % 13 != 0).then_some(i as i64 * 7))
            .collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(merchant)),
                Arc::new(StringArray::from(currency)),
                Arc::new(StringArray::from(payment)),
                Arc::new(Int64Array::from(amount)),
            ],
        )
        .unwrap()
    }

    fn context(with_rule: bool, batch: RecordBatch) -> SessionContext {
        let mut builder = SessionStateBuilder::new().with_default_features();
        if with_rule {
            builder = builder.with_optimizer_rule(Arc::new(DistinctAsGroupBy));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("refunds", Arc::new(table)).unwrap();
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn same_answers_with_and_without_the_rewrite() {
        let queries = [
            "SELECT merchant_id, currency, count(*) AS n, count(DISTINCT payment_id) AS d, \
             sum(amount_minor) AS s, min(amount_minor) AS lo, max(amount_minor) AS hi \
             FROM refunds GROUP BY merchant_id, currency ORDER BY merchant_id, currency",
            "SELECT upper(merchant_id) AS m, count(amount_minor), count(DISTINCT payment_id) \
             FROM refunds GROUP BY upper(merchant_id) ORDER BY 1",
            "SELECT count(*), count(DISTINCT payment_id), sum(amount_minor) FROM refunds",
            "SELECT count(*), count(DISTINCT payment_id) FROM refunds WHERE merchant_id = 'none'",
        ];
        for rows in [0, 1, 500] {
            for sql in queries {
                let plain = run(&context(false, refunds(rows)), sql).await;
                let rewritten = context(true, refunds(rows));
                assert_eq!(run(&rewritten, sql).await, plain, "{rows} rows: {sql}");
            }
        }
    }

    #[tokio::test]
    async fn the_rewrite_applies_only_where_it_is_exact() {
        let ctx = context(true, refunds(10));
        let plan = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let df = ctx.sql(sql).await.unwrap();
                format!("{}", df.into_optimized_plan().unwrap().display_indent())
            }
        };
        let p = plan(
            "SELECT merchant_id, count(*), count(DISTINCT payment_id) FROM refunds GROUP BY 1",
        )
        .await;
        assert!(p.contains("__ps_distinct"), "{p}");
        // Two different distinct arguments, or a FILTER: left as it is.
        for sql in [
            "SELECT count(*), count(DISTINCT payment_id), count(DISTINCT currency) FROM refunds",
            "SELECT count(*) FILTER (WHERE amount_minor > 0), count(DISTINCT payment_id) FROM refunds",
            "SELECT avg(amount_minor), count(*), count(DISTINCT payment_id) FROM refunds",
        ] {
            let p = plan(sql).await;
            assert!(!p.contains("__ps_distinct"), "{sql}: {p}");
        }
    }
}
