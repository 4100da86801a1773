//! Planning a window's SQL once, and taking the plan apart around its aggregation.
//!
//! The user writes an ordinary aggregation (`SELECT … FROM payments WHERE … GROUP BY …`). The
//! window engine needs three things from it: the part below the aggregation (scan, filter,
//! projection), run on every batch; the aggregation's group keys, aggregate functions and
//! `FILTER (WHERE …)` clauses, whose accumulators it drives itself so that their state outlives
//! a batch; and the part above (projection, `HAVING`), run on the finished groups. A hidden
//! `window_start` column is added to the input tables and made the first group key, so every
//! aggregate is per window without the SQL having to say so.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Column;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::{Error, Result};

/// The hidden column holding each row's window start, and the first group key.
pub const WINDOW_START: &str = "window_start";
/// The column added to the results beside [`WINDOW_START`].
pub const WINDOW_END: &str = "window_end";

/// The type of [`WINDOW_START`] and [`WINDOW_END`]: microseconds, UTC, like the lake's times.
pub fn window_time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A window's SQL, planned and split around its aggregation.
pub(crate) struct Planned {
    /// The input table the SQL reads.
    pub table: String,
    /// That table's schema with [`WINDOW_START`] appended: what `pre` is fed.
    pub input_schema: SchemaRef,
    /// Everything below the aggregation, over a memory scan that [`Planned::run_pre`] swaps.
    pre: Arc<dyn ExecutionPlan>,
    /// Group keys over `pre`'s output; the first is the window start.
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The schema of the group keys (what the group table stores).
    pub group_schema: SchemaRef,
    pub aggs: Vec<Arc<AggregateFunctionExpr>>,
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The aggregation's output: group keys then one column per aggregate.
    pub agg_schema: SchemaRef,
    /// The whole plan; the aggregation in it is replaced by the finished groups to run what
    /// lies above.
    root: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
}

/// Aggregates whose result depends on the order rows arrive in cannot be exact across batch
/// boundaries and replays, so they are refused.
fn check_aggregate(agg: &Arc<AggregateFunctionExpr>) -> Result<()> {
    let name = agg.fun().name();
    // For percentiles, WITHIN GROUP (ORDER BY x) names the value, not an arrival order.
    let within_group = name.contains("percentile");
    let order = agg.order_sensitivity();
    if !within_group && !order.is_insensitive() && !order.is_beneficial() {
        return Err(Error::Invalid(format!(
            "{}: ordered aggregates (… ORDER BY inside the call) depend on arrival order and \
             are not supported in windows",
            agg.name()
        )));
    }
    if matches!(
        name,
        "first_value" | "last_value" | "nth_value" | "array_agg" | "string_agg"
    ) {
        return Err(Error::Invalid(format!(
            "{name}: depends on the order events arrive in, which differs between runs; windows \
             support order-free aggregates (count, sum, min, max, avg, count(DISTINCT), \
             approx_distinct, approx_percentile_cont, …)"
        )));
    }
    Ok(())
}

impl Planned {
    /// Plan `sql` over `tables` (name, schema). The SQL must read exactly one of them and be a
    /// single aggregation.
    pub async fn try_new(tables: &[(String, SchemaRef)], sql: &str) -> Result<Self> {
        // One partition: the engine feeds one batch at a time and wants one aggregation node,
        // not a partial/final pair split by a repartition.
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        // It would turn count(DISTINCT x) into two aggregations; one with a mergeable
        // distinct-set state is what a window needs.
        ctx.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
        for (name, schema) in tables {
            if schema.field_with_name(WINDOW_START).is_ok() {
                return Err(Error::Invalid(format!(
                    "input table {name} already has a column named {WINDOW_START}; windows add \
                     that column themselves"
                )));
            }
            let with_window = with_window_column(schema);
            let table = MemTable::try_new(with_window, vec![Vec::new()])?;
            ctx.register_table(name.as_str(), Arc::new(table))?;
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let logical = ctx
            .sql_with_options(sql, options)
            .await?
            .into_unoptimized_plan();
        let table = crate::scanned_table(&logical)?;
        let logical = add_window_key(logical)?;
        let root = ctx.state().create_physical_plan(&logical).await?;

        let agg = find_aggregate(&root)?;
        let (grouping, aggs, filters, below) = match agg.mode() {
            AggregateMode::Single | AggregateMode::SinglePartitioned => (
                agg.group_expr().clone(),
                agg.aggr_expr().to_vec(),
                agg.filter_expr().to_vec(),
                agg.input().clone(),
            ),
            _ => {
                let partial = agg
                    .input()
                    .downcast_ref::<AggregateExec>()
                    .ok_or_else(|| Error::Invalid("unexpected aggregation plan".into()))?;
                (
                    partial.group_expr().clone(),
                    partial.aggr_expr().to_vec(),
                    partial.filter_expr().to_vec(),
                    partial.input().clone(),
                )
            }
        };
        if !grouping.is_single() {
            return Err(Error::Invalid(
                "GROUPING SETS, CUBE and ROLLUP are not supported in windows".into(),
            ));
        }
        for a in &aggs {
            check_aggregate(a)?;
        }
        let pre_schema = below.schema();
        let group_exprs: Vec<Arc<dyn PhysicalExpr>> =
            grouping.expr().iter().map(|(e, _)| e.clone()).collect();
        let group_fields = grouping
            .expr()
            .iter()
            .map(|(e, name)| {
                Ok(Field::new(
                    name,
                    e.data_type(&pre_schema)?,
                    e.nullable(&pre_schema)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let first_is_window = grouping
            .expr()
            .first()
            .is_some_and(|(_, name)| name == WINDOW_START);
        if !first_is_window {
            return Err(Error::Invalid(
                "internal: the window key is not the aggregation's first group key".into(),
            ));
        }
        let input_schema = tables
            .iter()
            .find(|(n, _)| *n == table)
            .map(|(_, s)| with_window_column(s))
            .ok_or_else(|| Error::Invalid(format!("table {table} is not an input")))?;
        Ok(Self {
            table,
            input_schema,
            pre: below,
            group_exprs,
            group_schema: Arc::new(Schema::new(group_fields)),
            aggs,
            filters,
            agg_schema: agg.schema(),
            root,
            task: ctx.task_ctx(),
        })
    }

    /// Run the part below the aggregation over `batch` (which has [`Self::input_schema`]).
    pub async fn run_pre(&self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let plan = replace_scan(self.pre.clone(), batch)?;
        Ok(collect(plan, self.task.clone()).await?)
    }

    /// Run the part above the aggregation over finished groups (with [`Self::agg_schema`]).
    pub async fn run_post(&self, groups: RecordBatch) -> Result<Vec<RecordBatch>> {
        let schema = self.agg_schema.clone();
        let plan = self
            .root
            .clone()
            .transform_down(|node| {
                if node.is::<AggregateExec>() {
                    let exec = MemorySourceConfig::try_new_exec(
                        &[vec![groups.clone()]],
                        schema.clone(),
                        None,
                    )?;
                    let exec: Arc<dyn ExecutionPlan> = exec;
                    return Ok(Transformed::new(exec, true, TreeNodeRecursion::Jump));
                }
                Ok(Transformed::no(node))
            })?
            .data;
        Ok(collect(plan, self.task.clone()).await?)
    }

    /// The schema of what [`Self::run_post`] returns.
    pub fn post_schema(&self) -> SchemaRef {
        self.root.schema()
    }
}

fn with_window_column(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        WINDOW_START,
        window_time_type(),
        false,
    )));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Make the window start the first group key of the (single) aggregation and carry it through
/// every projection above.
fn add_window_key(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut aggregations = 0;
    let rewritten = plan
        .transform_up(|node| {
            let window = Expr::Column(Column::from_name(WINDOW_START));
            match node {
                LogicalPlan::Aggregate(a) => {
                    aggregations += 1;
                    let mut group = a.group_expr.clone();
                    if !group.iter().any(is_window_column) {
                        group.insert(0, window);
                    } else if !group.first().is_some_and(is_window_column) {
                        group.retain(|e| !is_window_column(e));
                        group.insert(0, window);
                    }
                    let agg = Aggregate::try_new(a.input.clone(), group, a.aggr_expr.clone())?;
                    Ok(Transformed::yes(LogicalPlan::Aggregate(agg)))
                }
                LogicalPlan::Projection(p)
                    if p.input
                        .schema()
                        .has_column_with_unqualified_name(WINDOW_START)
                        && !p.expr.iter().any(is_window_column) =>
                {
                    let mut exprs = p.expr.clone();
                    exprs.insert(0, window);
                    let proj = Projection::try_new(exprs, p.input.clone())?;
                    Ok(Transformed::yes(LogicalPlan::Projection(proj)))
                }
                other => Ok(Transformed::yes(other.recompute_schema()?)),
            }
        })?
        .data;
    match aggregations {
        1 => Ok(rewritten),
        0 => Err(Error::Invalid(
            "the window's SQL does not aggregate; write an aggregation such as \
             SELECT merchant_id, count(*) AS n FROM payments GROUP BY merchant_id"
                .into(),
        )),
        n => Err(Error::Invalid(format!(
            "the window's SQL has {n} aggregations (subqueries, DISTINCT over an aggregate, …); \
             a window runs exactly one"
        ))),
    }
}

fn is_window_column(e: &Expr) -> bool {
    matches!(e, Expr::Column(c) if c.name == WINDOW_START)
}

/// The topmost aggregation of the physical plan.
fn find_aggregate(root: &Arc<dyn ExecutionPlan>) -> Result<&AggregateExec> {
    let mut node = root;
    loop {
        if let Some(agg) = node.downcast_ref::<AggregateExec>() {
            return Ok(agg);
        }
        match node.children().as_slice() {
            [only] => node = only,
            _ => {
                return Err(Error::Invalid(
                    "the window's SQL must be one aggregation over one table (no joins or \
                     unions)"
                        .into(),
                ))
            }
        }
    }
}

/// `plan` with its memory scan reading `batch` instead, keeping the scan's projection.
fn replace_scan(
    plan: Arc<dyn ExecutionPlan>,
    batch: RecordBatch,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(source) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(mem) = source.data_source().downcast_ref::<MemorySourceConfig>() else {
                return Ok(Transformed::no(node));
            };
            let exec = MemorySourceConfig::try_new_exec(
                &[vec![batch.clone()]],
                mem.original_schema(),
                mem.projection().clone(),
            )?;
            let exec: Arc<dyn ExecutionPlan> = exec;
            Ok(Transformed::yes(exec))
        })?
        .data)
}
