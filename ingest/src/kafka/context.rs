//! The consumer context: rebalances resume each assigned partition from the lake, never from
//! the group's committed offsets (those trail behind and only serve lag monitoring).

use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc::Sender;
use tracing::{debug, error, info, warn};

use super::worker::{Part, Shared};
use super::SourceEvent;

pub struct SourceContext {
    pub(super) tx: Sender<SourceEvent>,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) start_from_end: bool,
    pub(super) rewind: i64,
    pub(super) stats: Arc<super::SourceStats>,
}

impl ClientContext for SourceContext {
    /// Lag per partition this consumer fetches, replacing the previous figures whole: a
    /// partition that went to another consumer disappears rather than going stale. Lag is
    /// unknown (left out) until the group has a committed offset for the partition.
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        let mut lag = Vec::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || p.fetch_state == "none" || p.fetch_state == "stopped" {
                    continue;
                }
                if p.hi_offset >= 0 && p.committed_offset >= 0 {
                    lag.push((
                        (topic.clone(), *partition),
                        (p.hi_offset - p.committed_offset).max(0),
                    ));
                }
            }
        }
        lag.sort();
        *self
            .stats
            .lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = lag;
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl SourceContext {
    fn ask<T>(&self, make: impl FnOnce(super::Reply<T>) -> SourceEvent) -> Result<T, String> {
        let (reply, rx) = sync_channel(1);
        self.tx
            .blocking_send(make(reply))
            .map_err(|_| "the sink has stopped".to_string())?;
        rx.recv().map_err(|_| "the sink has stopped".to_string())?
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions = partitions_of(tpl);
        let resumed = self.ask(|reply| SourceEvent::Resume {
            partitions: partitions.clone(),
            reply,
        });
        let offsets = match resumed {
            Ok(o) => o,
            Err(e) => {
                error!(error = %e, "cannot read offsets from the lake; not consuming");
                self.lock().fatal = Some(format!("reading offsets from the lake: {e}"));
                return;
            }
        };
        let default = if self.start_from_end {
            Offset::End
        } else {
            Offset::Beginning
        };
        let mut parts = Vec::with_capacity(partitions.len());
        for ((topic, partition), offset) in partitions.iter().zip(offsets) {
            // Rows below the lake's offset that a rewind re-reads are dropped by the sink's
            // per-table offset filter; the guard below only stops true redeliveries.
            let o = offset.map_or(default, |o| Offset::Offset((o - self.rewind).max(0)));
            parts.push(Part {
                topic: topic.clone(),
                partition: *partition,
                next: 0,
                range: None,
                batch_messages: 0,
                batch_bytes: 0,
            });
            if let Err(e) = tpl.set_partition_offset(topic, *partition, o) {
                self.lock().fatal = Some(format!("setting offset of {topic}/{partition}: {e}"));
                return;
            }
            info!(topic, partition, offset = ?o, "partition assigned, resuming from the lake");
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = assigned {
            self.lock().fatal = Some(format!("assigning partitions: {e}"));
            return;
        }
        let mut shared = self.lock();
        shared.assigned.extend(partitions);
        shared.assigned.sort();
        shared.assigned.dedup();
        for p in parts {
            shared
                .parts
                .retain(|q| !(q.partition == p.partition && q.topic == p.topic));
            shared.parts.push(p);
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions = partitions_of(tpl);
        {
            // Rows decoded but not yet handed over are dropped: the next owner (maybe us)
            // reads them again from the lake's offsets.
            let mut shared = self.lock();
            shared.drop_unsent();
            shared.assigned.retain(|p| !partitions.contains(p));
            shared.parts.retain(|q| {
                !partitions
                    .iter()
                    .any(|(t, n)| *n == q.partition && *t == q.topic)
            });
        }
        if self.lock().stopping {
            // Leaving the group on shutdown revokes after the sink has committed and stopped:
            // there is nothing left to commit, so this is the normal path, not a warning.
            debug!("partitions revoked after the sink stopped");
        } else if let Err(e) = self.ask(|reply| SourceEvent::Revoke {
            partitions: partitions.clone(),
            reply,
        }) {
            warn!(error = %e, "revoking partitions while the sink is stopped");
        }
        let res = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = res {
            warn!(error = %e, "unassigning partitions");
        }
        info!(count = partitions.len(), "partitions revoked");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer, tpl),
            other => {
                error!(error = ?other, "rebalance failed; dropping the assignment");
                self.lock().drop_unsent();
                if let Err(e) = consumer.unassign() {
                    warn!(error = %e, "unassigning partitions");
                }
            }
        }
    }
}
