//! Session windows: per group key, events closer than the gap to one another in event time
//! form one session, which ends a gap after its last event.
//!
//! A session is known by an id that never changes while it grows, so the aggregation state is
//! keyed by (session id, group keys) and an event extending a session touches only its own
//! group. An event that arrives out of order can bridge two sessions of a key; they merge
//! into the older one, and the caller re-keys the state of the absorbed ones (rare: it takes
//! an event landing in a silent stretch longer than the gap).
//!
//! Like Flink's event-time sessions, an event at `t` stands for the interval `[t, t + gap)`
//! and sessions are the unions of overlapping intervals; `start` is the first event's time and
//! `end` the last one's plus the gap.

use arrow::array::{Array, ArrayRef, TimestampMicrosecondArray};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
// DataFusion's hash map (hashbrown, foldhash): every row looks up its key and its session,
// and SipHash made those lookups a third of the cost of session windows.
use datafusion::common::HashMap;

use crate::{Error, Result};

/// One open session.
#[derive(Debug, Clone)]
struct Session {
    /// Time of its first event (µs).
    start: i64,
    /// Time of its last event (µs).
    last: i64,
    /// Its group key, in the row format.
    key: Box<[u8]>,
}

/// The open sessions of every group key.
pub(crate) struct Sessions {
    gap: i64,
    next_id: i64,
    converter: RowConverter,
    /// Open session ids per group key (almost always one).
    by_key: HashMap<Box<[u8]>, Vec<i64>>,
    sessions: HashMap<i64, Session>,
    /// No open session ends before this (a lower bound: extensions only raise it).
    min_end: Option<i64>,
}

/// What [`Sessions::assign`] decided for a batch.
pub(crate) struct Assigned {
    /// Per row, the session it belongs to.
    pub ids: Vec<i64>,
    /// Sessions absorbed by another (absorbed id, surviving id): state held under the first
    /// must move to the second.
    pub merged: HashMap<i64, i64>,
}

impl Sessions {
    /// Sessions closed by `gap` (µs) over group keys of `key_schema` (the keys after the
    /// window key).
    pub fn try_new(gap: i64, key_schema: &SchemaRef) -> Result<Self> {
        let fields = key_schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            gap: gap.max(1),
            next_id: 0,
            converter: RowConverter::new(fields)?,
            by_key: HashMap::default(),
            sessions: HashMap::default(),
            min_end: None,
        })
    }

    fn end(&self, s: &Session) -> i64 {
        s.last.saturating_add(self.gap)
    }

    /// The number of open sessions.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Put each row (event time `times[i]`, group keys `keys[..][i]`) in its session,
    /// creating, extending and merging sessions as needed.
    pub fn assign(
        &mut self,
        times: &TimestampMicrosecondArray,
        keys: &[ArrayRef],
    ) -> Result<Assigned> {
        let n = times.len();
        let rows = if keys.is_empty() {
            None
        } else {
            Some(self.converter.convert_columns(keys)?)
        };
        let mut ids = Vec::with_capacity(n);
        let mut merged: HashMap<i64, i64> = HashMap::default();
        for i in 0..n {
            if times.is_null(i) {
                return Err(Error::Invalid(
                    "internal: a session row has no event time".into(),
                ));
            }
            let t = times.value(i);
            let key: &[u8] = rows.as_ref().map_or(&[], |r| r.row(i).data());
            let gap = self.gap;
            let open = self.by_key.get(key).map(Vec::as_slice).unwrap_or(&[]);
            // [t, t + gap) overlaps [start, last + gap) when start - gap < t < last + gap.
            // The first session touched survives; `rest` (which only a bridging event fills,
            // so it rarely allocates) are absorbed.
            let mut first = None;
            let mut rest: Vec<i64> = Vec::new();
            for id in open {
                let touches = self.sessions.get(id).is_some_and(|s| {
                    s.start.saturating_sub(gap) < t && t < s.last.saturating_add(gap)
                });
                if touches {
                    match first {
                        None => first = Some(*id),
                        Some(_) => rest.push(*id),
                    }
                }
            }
            let id = match first {
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let key: Box<[u8]> = key.into();
                    self.sessions.insert(
                        id,
                        Session {
                            start: t,
                            last: t,
                            key: key.clone(),
                        },
                    );
                    self.by_key.entry(key).or_default().push(id);
                    let end = t.saturating_add(gap);
                    self.min_end = Some(self.min_end.map_or(end, |m| m.min(end)));
                    id
                }
                Some(survivor) => {
                    let (mut start, mut last) = (t, t);
                    for other in &rest {
                        if let Some(s) = self.sessions.remove(other) {
                            start = start.min(s.start);
                            last = last.max(s.last);
                        }
                        merged.insert(*other, survivor);
                    }
                    if let Some(s) = self.sessions.get_mut(&survivor) {
                        s.start = s.start.min(start);
                        s.last = s.last.max(last);
                    }
                    if !rest.is_empty() {
                        if let Some(list) = self.by_key.get_mut(key) {
                            list.retain(|id| !rest.contains(id));
                        }
                    }
                    survivor
                }
            };
            ids.push(id);
        }
        // A row assigned before its session was absorbed by a later row of the batch moves
        // with it (chains resolved: a survivor may itself have been absorbed afterwards).
        if !merged.is_empty() {
            let resolve = |mut id: i64| {
                while let Some(next) = merged.get(&id) {
                    id = *next;
                }
                id
            };
            let resolved: HashMap<i64, i64> = merged.keys().map(|&k| (k, resolve(k))).collect();
            for id in &mut ids {
                *id = resolve(*id);
            }
            merged = resolved;
        }
        Ok(Assigned { ids, merged })
    }

    /// (start, end) of open session `id`.
    pub fn bounds(&self, id: i64) -> Option<(i64, i64)> {
        self.sessions.get(&id).map(|s| (s.start, self.end(s)))
    }

    /// Whether session `id` ends at or before `until`.
    pub fn ends_by(&self, id: i64, until: i64) -> bool {
        self.sessions.get(&id).is_some_and(|s| self.end(s) <= until)
    }

    /// Whether some open session may end at or before `until` (it may be a false yes until
    /// [`Self::close`] has recomputed the bound).
    pub fn may_close(&self, until: i64) -> bool {
        self.min_end.is_some_and(|m| m <= until)
    }

    /// Forget the sessions ending at or before `until` (their results are taken by the
    /// caller before) and recompute the earliest end of those left.
    pub fn close(&mut self, until: i64) {
        let gap = self.gap;
        let closing: Vec<i64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.last.saturating_add(gap) <= until)
            .map(|(id, _)| *id)
            .collect();
        for id in closing {
            if let Some(s) = self.sessions.remove(&id) {
                if let Some(list) = self.by_key.get_mut(&s.key) {
                    list.retain(|x| *x != id);
                    if list.is_empty() {
                        self.by_key.remove(&s.key);
                    }
                }
            }
        }
        self.min_end = self.sessions.values().map(|s| self.end(s)).min();
    }

    /// The earliest start among the sessions ending after `until`, if any.
    pub fn earliest_open_start(&self, until: i64) -> Option<i64> {
        self.sessions
            .values()
            .filter(|s| self.end(s) > until)
            .map(|s| s.start)
            .min()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn sessions(gap: i64) -> Sessions {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        Sessions::try_new(gap, &schema).unwrap()
    }

    fn assign(s: &mut Sessions, rows: &[(&str, i64)]) -> Assigned {
        let times = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1));
        let keys: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0)));
        s.assign(&times, &[keys]).unwrap()
    }

    #[test]
    fn events_closer_than_the_gap_share_a_session_per_key() {
        let mut s = sessions(10);
        let a = assign(
            &mut s,
            &[("a", 0), ("a", 9), ("b", 5), ("a", 19), ("a", 28)],
        );
        // 19 - 9 = 10 is not closer than the gap: a new session.
        assert_eq!(a.ids[0], a.ids[1]);
        assert_ne!(a.ids[0], a.ids[2]);
        assert_ne!(a.ids[1], a.ids[3]);
        assert_eq!(a.ids[3], a.ids[4]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.bounds(a.ids[0]), Some((0, 19)));
        assert_eq!(s.bounds(a.ids[3]), Some((19, 38)));
        assert!(a.merged.is_empty());
    }

    #[test]
    fn a_bridging_event_merges_sessions_even_within_one_batch() {
        let mut s = sessions(10);
        let first = assign(&mut s, &[("a", 0), ("a", 30)]);
        let (x, y) = (first.ids[0], first.ids[1]);
        assert_ne!(x, y);
        // 15 touches neither ([0,10) and [30,40) vs [15,25)); 22 then bridges 15's session and 30's,
        // and 8 bridges 0's and the merged one.
        let second = assign(&mut s, &[("a", 15), ("a", 22), ("a", 8)]);
        assert_eq!(s.len(), 1);
        let survivor = second.ids[2];
        assert!(second.ids.iter().all(|id| *id == survivor));
        assert_eq!(s.bounds(survivor), Some((0, 40)));
        for absorbed in [x, y] {
            if absorbed != survivor {
                assert_eq!(second.merged.get(&absorbed), Some(&survivor));
            }
        }
        assert!(second.merged.values().all(|v| *v == survivor));
    }

    #[test]
    fn closing_forgets_sessions_and_keeps_a_true_bound() {
        let mut s = sessions(10);
        let a = assign(&mut s, &[("a", 0), ("b", 100)]);
        assert!(s.may_close(10));
        assert!(s.ends_by(a.ids[0], 10));
        assert!(!s.ends_by(a.ids[1], 10));
        assert_eq!(s.earliest_open_start(10), Some(100));
        s.close(10);
        assert_eq!(s.len(), 1);
        assert!(!s.may_close(109));
        assert!(s.may_close(110));
        // A new session for a key whose sessions all closed.
        let b = assign(&mut s, &[("a", 50)]);
        assert_ne!(b.ids[0], a.ids[0]);
        assert_eq!(s.bounds(b.ids[0]), Some((50, 60)));
    }
}
