//! A faster `column = 'constant'` for the lake's strings, as a physical plan rewrite.
//!
//! The lake's low-cardinality strings (`event_type`, `currency`, `rejection_reason`, …) are
//! dictionary-encoded in Parquet and reach DataFusion as string views that all point into the
//! dictionary: every row holding `PaymentAuthorized` carries the very same 16-byte view. Arrow's
//! comparison kernel does not know that, and compares the bytes of every row whose length and
//! 4-byte prefix match the constant: on the payments table, where every event type starts with
//! `Paym`, that is a `memcmp` per row, and filters like `event_type = 'PaymentCaptured'` were a
//! fifth of the analyst queries' time.
//!
//! [`ViewEquality`] replaces `expr = 'text'` and `expr <> 'text'` on string views, in filters
//! and in aggregates' `FILTER (WHERE …)`, with [`ViewEqLiteral`]: it decides most rows from
//! the view alone (length, prefix, or the whole of a short string) and remembers, per array,
//! the last view found equal and the last found different, since two equal views point at the
//! same bytes. Other types, other operators and other plans are left as they were.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::builder::make_view;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringViewArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::ExecutionPlan;

/// `expr = needle` (or `<>` when `negated`) where `expr` yields strings.
#[derive(Debug, Clone)]
pub struct ViewEqLiteral {
    expr: Arc<dyn PhysicalExpr>,
    needle: String,
    negated: bool,
}

// By hand: the derive cannot compare `Arc<dyn PhysicalExpr>` fields.
impl PartialEq for ViewEqLiteral {
    fn eq(&self, other: &Self) -> bool {
        self.expr.as_ref() == other.expr.as_ref()
            && self.needle == other.needle
            && self.negated == other.negated
    }
}

impl Eq for ViewEqLiteral {}

impl Hash for ViewEqLiteral {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.expr.as_ref().hash(state);
        self.needle.hash(state);
        self.negated.hash(state);
    }
}

impl ViewEqLiteral {
    pub fn new(expr: Arc<dyn PhysicalExpr>, needle: String, negated: bool) -> Self {
        Self {
            expr,
            needle,
            negated,
        }
    }

    fn op(&self) -> &'static str {
        if self.negated {
            "!="
        } else {
            "="
        }
    }
}

impl fmt::Display for ViewEqLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.expr, self.op(), self.needle)
    }
}

impl PhysicalExpr for ViewEqLiteral {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.expr.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        match self.expr.evaluate(batch)? {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(self.compare(array)?)),
            ColumnarValue::Scalar(value) => {
                let equal = match value {
                    ScalarValue::Utf8(v) | ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v) => {
                        v.map(|v| (v == self.needle) != self.negated)
                    }
                    other => {
                        // Not a string after all: compare as DataFusion would, as an array.
                        let array = other.to_array()?;
                        let result = self.compare(array)?;
                        return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                            &result, 0,
                        )?));
                    }
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(equal)))
            }
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.expr]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [expr] = <[_; 1]>::try_from(children).map_err(|c| {
            datafusion::error::DataFusionError::Internal(format!(
                "ViewEqLiteral takes one child, got {}",
                c.len()
            ))
        })?;
        Ok(Arc::new(Self::new(expr, self.needle.clone(), self.negated)))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt_sql(f)?;
        write!(f, " {} '{}'", self.op(), self.needle.replace('\'', "''"))
    }
}

impl ViewEqLiteral {
    fn compare(&self, array: ArrayRef) -> Result<ArrayRef> {
        if let Some(views) = array.as_any().downcast_ref::<StringViewArray>() {
            return Ok(Arc::new(eq_views(views, &self.needle, self.negated)));
        }
        // Any other string type: Arrow's kernel, with the constant in the array's type.
        let needle = ScalarValue::Utf8(Some(self.needle.clone()))
            .cast_to(array.data_type())?
            .to_scalar()?;
        let result = if self.negated {
            cmp::neq(&array, &needle)?
        } else {
            cmp::eq(&array, &needle)?
        };
        Ok(Arc::new(result))
    }
}

/// `array[i] = needle` (or `<>`), null where `array[i]` is null.
///
/// Rows of different values interleave at random, so the per-row work is written without
/// branches on the row's value; the only branch taken on data is the byte comparison of a view
/// not seen before, once or twice per array.
pub fn eq_views(array: &StringViewArray, needle: &str, negated: bool) -> BooleanArray {
    let needle_bytes = needle.as_bytes();
    // Length and prefix in the low 64 bits; for a short string the whole view is the string.
    let needle_view = make_view(needle_bytes, 0, 0);
    let views = array.views();
    let bits = if needle_bytes.len() <= 12 {
        BooleanBuffer::collect_bool(views.len(), |i| (views[i] == needle_view) != negated)
    } else {
        // The last views found equal and different. `u128::MAX` would be a view of length
        // u32::MAX, which never passes the length check, so it stands for "none yet".
        let (mut same, mut different) = (u128::MAX, u128::MAX);
        BooleanBuffer::collect_bool(views.len(), |i| {
            let view = views[i];
            let candidate = view as u64 == needle_view as u64;
            let is_same = view == same;
            let equal = if !candidate | is_same | (view == different) {
                candidate & is_same
            } else if array.value(i).as_bytes() == needle_bytes {
                same = view;
                true
            } else {
                different = view;
                false
            };
            equal != negated
        })
    };
    BooleanArray::new(bits, array.nulls().cloned())
}

/// The plan rewrite; see the module documentation.
#[derive(Debug, Default)]
pub struct ViewEquality;

impl PhysicalOptimizerRule for ViewEquality {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                let rewritten = rewrite(filter.predicate(), &filter.input().schema())?;
                if let Some(predicate) = rewritten {
                    let exec = FilterExecBuilder::from(filter)
                        .with_predicate(predicate)
                        .build()?;
                    return Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>));
                }
            } else if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
                // Only the stages that read input rows evaluate the FILTER clauses.
                if matches!(
                    aggregate.mode(),
                    AggregateMode::Partial
                        | AggregateMode::Single
                        | AggregateMode::SinglePartitioned
                ) {
                    if let Some(exec) = rewrite_aggregate(aggregate)? {
                        return Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>));
                    }
                }
            }
            Ok(Transformed::no(node))
        })
        .data()
    }

    fn name(&self) -> &str {
        "paystream_view_equality"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn rewrite_aggregate(aggregate: &AggregateExec) -> Result<Option<AggregateExec>> {
    let schema = aggregate.input().schema();
    let mut changed = false;
    let mut filters = Vec::with_capacity(aggregate.filter_expr().len());
    for filter in aggregate.filter_expr() {
        let new = match filter {
            Some(f) => match rewrite(f, &schema)? {
                Some(r) => {
                    changed = true;
                    Some(r)
                }
                None => Some(Arc::clone(f)),
            },
            None => None,
        };
        filters.push(new);
    }
    if !changed {
        return Ok(None);
    }
    let exec = AggregateExec::try_new(
        *aggregate.mode(),
        aggregate.group_expr().clone(),
        aggregate.aggr_expr().to_vec(),
        filters,
        Arc::clone(aggregate.input()),
        aggregate.input_schema(),
    )?
    .with_limit_options(aggregate.limit_options());
    Ok(Some(exec))
}

/// `expr` with every string-view comparison to a constant replaced, or `None` if it has none.
fn rewrite(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let result = Arc::clone(expr).transform_up(|e| {
        let Some(binary) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        let negated = match binary.op() {
            Operator::Eq => false,
            Operator::NotEq => true,
            _ => return Ok(Transformed::no(e)),
        };
        let (column, literal) = match (
            binary.left().downcast_ref::<Literal>(),
            binary.right().downcast_ref::<Literal>(),
        ) {
            (None, Some(l)) => (binary.left(), l),
            (Some(l), None) => (binary.right(), l),
            _ => return Ok(Transformed::no(e)),
        };
        let needle = match literal.value() {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => s.clone(),
            _ => return Ok(Transformed::no(e)),
        };
        if column.data_type(schema)? != DataType::Utf8View {
            return Ok(Transformed::no(e));
        }
        let replaced: Arc<dyn PhysicalExpr> =
            Arc::new(ViewEqLiteral::new(Arc::clone(column), needle, negated));
        Ok(Transformed::yes(replaced))
    })?;
    Ok(result.transformed.then_some(result.data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringViewBuilder;
    use datafusion::common::tree_node::TreeNode;
    use proptest::prelude::*;

    /// A view array as the Parquet reader makes it from a dictionary page: long values stored
    /// once, every row's view pointing at the same bytes.
    fn dictionary_like(values: &[Option<&str>]) -> StringViewArray {
        let mut builder = StringViewBuilder::new().with_deduplicate_strings();
        for v in values {
            builder.append_option(*v);
        }
        builder.finish()
    }

    fn reference(array: &StringViewArray, needle: &str, negated: bool) -> BooleanArray {
        let needle = StringViewArray::new_scalar(needle);
        if negated {
            cmp::neq(array, &needle).unwrap()
        } else {
            cmp::eq(array, &needle).unwrap()
        }
    }

    #[test]
    fn agrees_with_arrow_on_the_event_types() {
        let values = [
            Some("PaymentAuthorized"),
            Some("PaymentRejected"),
            None,
            Some("PaymentCaptured"),
            Some("PaymentRejected"),
            Some("Paym"),
            Some(""),
            Some("PaymentAuthorizeX"),
            Some("PaymentAuthorized"),
        ];
        for array in [
            dictionary_like(&values),
            StringViewArray::from(values.to_vec()),
        ] {
            for needle in ["PaymentAuthorized", "PaymentRejected", "Paym", "", "nope"] {
                for negated in [false, true] {
                    assert_eq!(
                        eq_views(&array, needle, negated),
                        reference(&array, needle, negated),
                        "{needle:?} negated={negated}"
                    );
                }
            }
        }
        let got = eq_views(&dictionary_like(&values), "PaymentRejected", false);
        let expected: BooleanArray = [false, true, false, false, true, false, false, false, false]
            .into_iter()
            .enumerate()
            .map(|(i, b)| (i != 2).then_some(b))
            .collect();
        assert_eq!(got, expected);
    }

    mod plans {
        use super::*;
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::Field;
        use datafusion::arrow::util::pretty::pretty_format_batches;
        use datafusion::datasource::MemTable;
        use datafusion::execution::SessionStateBuilder;
        use datafusion::physical_plan::collect;
        use datafusion::prelude::SessionContext;

        /// Event types as views (some rows null) and an amount, in two batches.
        fn table() -> MemTable {
            let schema = Arc::new(Schema::new(vec![
                Field::new("event_type", DataType::Utf8View, true),
                Field::new("amount", DataType::Int64, false),
            ]));
            let kinds = [
                "PaymentAuthorized",
                "PaymentRejected",
                "PaymentCaptured",
                "Refund",
            ];
            let batch = |offset: usize| {
                let types: Vec<Option<&str>> = (0..500)
                    .map(|i| (i % 17 != 0).then(|| kinds[(i * 7 + offset) % kinds.len()]))
                    .collect();
                let amounts: Vec<i64> = (0..500).map(|i| (i + offset) as i64).collect();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(dictionary_like(&types)),
                        Arc::new(Int64Array::from(amounts)),
                    ],
                )
                .unwrap()
            };
            MemTable::try_new(Arc::clone(&schema), vec![vec![batch(0), batch(3)]]).unwrap()
        }

        fn context(with_rule: bool) -> SessionContext {
            let mut builder = SessionStateBuilder::new().with_default_features();
            if with_rule {
                builder = builder.with_physical_optimizer_rule(Arc::new(ViewEquality));
            }
            let ctx = SessionContext::new_with_state(builder.build());
            ctx.register_table("events", Arc::new(table())).unwrap();
            ctx
        }

        /// How many `ViewEqLiteral`s the plan of `sql` holds, and its answer.
        async fn run(ctx: &SessionContext, sql: &str) -> (usize, String) {
            let plan = ctx
                .sql(sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            let mut found = 0;
            plan.apply(|node| {
                let mut exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
                if let Some(f) = node.downcast_ref::<FilterExec>() {
                    exprs.push(Arc::clone(f.predicate()));
                }
                if let Some(a) = node.downcast_ref::<AggregateExec>() {
                    exprs.extend(a.filter_expr().iter().flatten().cloned());
                }
                for e in exprs {
                    e.apply(|e| {
                        found += usize::from(e.downcast_ref::<ViewEqLiteral>().is_some());
                        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                    })?;
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
            .unwrap();
            let batches = collect(plan, ctx.task_ctx()).await.unwrap();
            (found, pretty_format_batches(&batches).unwrap().to_string())
        }

        #[tokio::test]
        async fn rewritten_plans_give_the_same_answers() {
            let cases = [
                ("SELECT count(*), sum(amount) FROM events WHERE event_type = 'PaymentAuthorized'", 1),
                ("SELECT count(*) FROM events WHERE event_type <> 'PaymentRejected'", 1),
                (
                    "SELECT event_type, count(*) FROM events \
                     WHERE event_type IN ('PaymentAuthorized', 'PaymentRejected') \
                     GROUP BY event_type ORDER BY event_type",
                    2,
                ),
                (
                    "SELECT count(*) FILTER (WHERE event_type = 'PaymentCaptured'), \
                     sum(amount) FILTER (WHERE 'Refund' = event_type) FROM events",
                    2,
                ),
                ("SELECT count(*) FROM events WHERE event_type = 'Refund'", 1),
                // Not a comparison with a constant: left alone.
                ("SELECT count(*) FROM events WHERE event_type > 'PaymentB'", 0),
            ];
            for (sql, rewritten) in cases {
                let (plain_found, plain) = run(&context(false), sql).await;
                let (found, answer) = run(&context(true), sql).await;
                assert_eq!(plain_found, 0, "{sql}");
                assert_eq!(found, rewritten, "{sql}");
                assert_eq!(answer, plain, "{sql}");
            }
        }
    }

    proptest! {
        // Short and long strings over a tiny alphabet, so equal lengths, equal prefixes and
        // equal values are all common; both with shared views and with copies.
        #[test]
        fn agrees_with_arrow(
            rows in prop::collection::vec(prop::option::of("[ab]{0,16}"), 0..200),
            needle in "[ab]{0,16}",
            negated: bool,
            dedup: bool,
        ) {
            let refs: Vec<Option<&str>> = rows.iter().map(|r| r.as_deref()).collect();
            let array = if dedup {
                dictionary_like(&refs)
            } else {
                StringViewArray::from(refs)
            };
            prop_assert_eq!(eq_views(&array, &needle, negated), reference(&array, &needle, negated));
        }
    }
}
