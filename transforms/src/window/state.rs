//! The open windows' aggregation state: one group per (window start, group keys), with
//! DataFusion's own accumulators behind it.
//!
//! Rows are folded into the accumulators as they arrive, so memory grows with open windows ×
//! groups, never with events. To read a result without losing the state, or to drop the
//! groups of closed windows, the state is taken out as partial-state rows (what DataFusion
//! exchanges between partial and final aggregations) and merged back: merging is exact, so
//! the answer does not depend on how the events were split into batches.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, TimestampMicrosecondArray};
use arrow::compute::filter;
use arrow::datatypes::SchemaRef;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use crate::{Error, Result};

/// Groups and their accumulators.
pub(crate) struct GroupState {
    group_schema: SchemaRef,
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    groups: Box<dyn GroupValues>,
    accs: Vec<Box<dyn GroupsAccumulator>>,
    ids: Vec<usize>,
}

/// The state taken out of a [`GroupState`]: group keys (window start first) and, per
/// aggregate, its partial-state columns; one row per group.
pub(crate) struct StateRows {
    pub keys: Vec<ArrayRef>,
    pub states: Vec<Vec<ArrayRef>>,
}

impl StateRows {
    pub fn len(&self) -> usize {
        self.keys.first().map_or(0, |k| k.len())
    }

    /// Window starts (µs) of the rows.
    pub fn window_starts(&self) -> Result<&TimestampMicrosecondArray> {
        self.keys
            .first()
            .and_then(|k| k.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .ok_or_else(|| Error::Invalid("internal: window key is not a timestamp".into()))
    }

    /// The rows where `mask` is true.
    pub fn filter(&self, mask: &BooleanArray) -> Result<StateRows> {
        let f = |a: &ArrayRef| filter(a.as_ref(), mask);
        Ok(StateRows {
            keys: self.keys.iter().map(f).collect::<Result<_, _>>()?,
            states: self
                .states
                .iter()
                .map(|s| s.iter().map(f).collect::<Result<_, _>>())
                .collect::<Result<_, _>>()?,
        })
    }
}

fn accumulator(agg: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if agg.groups_accumulator_supported() {
        Ok(agg.create_groups_accumulator()?)
    } else {
        let agg = agg.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            agg.create_accumulator()
        })))
    }
}

impl GroupState {
    pub fn new(group_schema: SchemaRef, aggs: Vec<Arc<AggregateFunctionExpr>>) -> Result<Self> {
        let groups = new_group_values(group_schema.clone(), &GroupOrdering::None)?;
        let accs = aggs.iter().map(accumulator).collect::<Result<_>>()?;
        Ok(Self {
            group_schema,
            aggs,
            groups,
            accs,
            ids: Vec::new(),
        })
    }

    /// Number of groups held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Bytes held by the groups and accumulators.
    pub fn size(&self) -> usize {
        self.groups.size() + self.accs.iter().map(|a| a.size()).sum::<usize>()
    }

    /// Fold rows into their groups: `keys` are the group-key columns, `args[i]` the arguments
    /// of aggregate `i`, `filters[i]` its `FILTER (WHERE …)` mask.
    pub fn update(
        &mut self,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        self.groups.intern(keys, &mut self.ids)?;
        let total = self.groups.len();
        for ((acc, values), mask) in self.accs.iter_mut().zip(args).zip(filters) {
            acc.update_batch(values, &self.ids, mask.as_ref(), total)?;
        }
        Ok(())
    }

    /// Fold partial-state rows into their groups.
    pub fn merge(&mut self, rows: &StateRows) -> Result<()> {
        if rows.len() == 0 {
            return Ok(());
        }
        self.groups.intern(&rows.keys, &mut self.ids)?;
        let total = self.groups.len();
        for (acc, states) in self.accs.iter_mut().zip(&rows.states) {
            acc.merge_batch(states, &self.ids, total)?;
        }
        Ok(())
    }

    /// Take every group out as partial-state rows, leaving this empty.
    pub fn take(&mut self) -> Result<StateRows> {
        let states = self
            .accs
            .iter_mut()
            .map(|a| a.state(EmitTo::All))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = self.groups.emit(EmitTo::All)?;
        *self = Self::new(self.group_schema.clone(), self.aggs.clone())?;
        Ok(StateRows { keys, states })
    }

    /// The final values of `rows`: group keys followed by one column per aggregate.
    pub fn evaluate(&self, rows: &StateRows) -> Result<Vec<ArrayRef>> {
        let mut scratch = Self::new(self.group_schema.clone(), self.aggs.clone())?;
        scratch.merge(rows)?;
        let mut columns = scratch.groups.emit(EmitTo::All)?;
        for acc in &mut scratch.accs {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        Ok(columns)
    }
}
