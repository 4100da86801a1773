//! Event-time watermarks: how far event time has surely progressed.
//!
//! Each source partition's watermark is the largest event time seen on it; the pipeline's is
//! the smallest over the partitions that are active. A partition that has been silent for the
//! idle timeout stops holding the others back; when every partition is idle the largest time
//! seen anywhere is used, so the last windows close once traffic stops.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, TimestampMicrosecondType};

/// Per-partition maxima of event time (µs) and when each partition last advanced.
#[derive(Debug, Default)]
pub struct Watermarks {
    partitions: HashMap<(String, i32), (i64, Instant)>,
    idle: Duration,
}

impl Watermarks {
    /// A partition silent for `idle` no longer holds the watermark back.
    pub fn new(idle: Duration) -> Self {
        Self {
            partitions: HashMap::new(),
            idle,
        }
    }

    /// Record the event times of `batch` (its `time_column`, per `kafka_topic` /
    /// `kafka_partition` when it has them, else as one partition), seen at `now`.
    ///
    /// Times beyond `horizon` (µs; the wall clock plus the skew tolerated) are left out: one
    /// event stamped decades ahead would otherwise close every window for good.
    pub fn observe(&mut self, batch: &RecordBatch, time_column: &str, now: Instant, horizon: i64) {
        let Some(times) = batch
            .column_by_name(time_column)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        else {
            return;
        };
        let topics = batch
            .column_by_name("kafka_topic")
            .and_then(|c| c.as_string_opt::<i32>());
        let parts = batch
            .column_by_name("kafka_partition")
            .and_then(|c| c.as_primitive_opt::<Int32Type>());
        let mut local: HashMap<(&str, i32), i64> = HashMap::new();
        for i in 0..batch.num_rows() {
            if times.is_null(i) || times.value(i) > horizon {
                continue;
            }
            let key = match (topics, parts) {
                (Some(t), Some(p)) if t.is_valid(i) && p.is_valid(i) => (t.value(i), p.value(i)),
                _ => ("", 0),
            };
            let t = times.value(i);
            local
                .entry(key)
                .and_modify(|m| *m = (*m).max(t))
                .or_insert(t);
        }
        for ((topic, partition), max) in local {
            let e = self
                .partitions
                .entry((topic.to_string(), partition))
                .or_insert((i64::MIN, now));
            e.0 = e.0.max(max);
            e.1 = now;
        }
    }

    /// A partition was assigned to this consumer: until it delivers an event or goes idle, it
    /// holds the watermark back (its first events may be older than what others delivered).
    pub fn assign(&mut self, topic: &str, partition: i32, now: Instant) {
        self.partitions
            .entry((topic.to_string(), partition))
            .or_insert((i64::MIN, now));
    }

    /// Forget a partition (revoked from this consumer).
    pub fn remove(&mut self, topic: &str, partition: i32) {
        self.partitions
            .retain(|(t, p), _| !(t == topic && *p == partition));
    }

    /// The watermark at `now`, µs; `None` before any event, or while an assigned partition
    /// that has not delivered yet holds it back.
    pub fn current(&self, now: Instant) -> Option<i64> {
        let active = self
            .partitions
            .values()
            .filter(|(_, seen)| now.saturating_duration_since(*seen) < self.idle)
            .map(|(t, _)| *t)
            .min();
        active
            .or_else(|| self.partitions.values().map(|(t, _)| *t).max())
            .filter(|t| *t != i64::MIN)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use arrow::array::{Int32Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn batch(rows: &[(&str, i32, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("kafka_topic", DataType::Utf8, true),
            Field::new("kafka_partition", DataType::Int32, true),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn slowest_active_partition_holds_the_watermark_and_idle_ones_do_not() {
        let mut w = Watermarks::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.current(t0), None);
        w.observe(
            &batch(&[("p", 0, 500), ("p", 1, 100), ("p", 0, 300)]),
            "event_time",
            t0,
            i64::MAX,
        );
        assert_eq!(w.current(t0), Some(100));
        // Partition 0 moves on; partition 1 stays silent past the idle timeout.
        let t1 = t0 + Duration::from_secs(11);
        w.observe(&batch(&[("p", 0, 900)]), "event_time", t1, i64::MAX);
        assert_eq!(w.current(t1), Some(900));
        // Everyone idle: the largest time seen.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(w.current(t2), Some(900));
        // A revoked partition no longer counts; times never go backwards per partition.
        w.observe(&batch(&[("p", 1, 50)]), "event_time", t2, i64::MAX);
        assert_eq!(w.current(t2), Some(100));
        w.remove("p", 1);
        assert_eq!(w.current(t2), Some(900));
        // A newly assigned partition holds it back until it delivers or idles.
        w.assign("p", 2, t2);
        assert_eq!(w.current(t2), None);
        w.observe(&batch(&[("p", 2, 950)]), "event_time", t2, i64::MAX);
        assert_eq!(w.current(t2), Some(950));
        w.assign("p", 3, t2);
        assert_eq!(w.current(t2 + Duration::from_secs(11)), Some(950));
        // Beyond the horizon: not counted (once p3 idles, p2's 950 is the newest).
        w.observe(&batch(&[("p", 2, 5_000)]), "event_time", t2, 1_000);
        assert_eq!(w.current(t2 + Duration::from_secs(11)), Some(950));
    }
}
