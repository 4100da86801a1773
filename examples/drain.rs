//! The broker's own ceiling for `scripts/bench`: a bare librdkafka consumer that drains topics
//! from the beginning to their current end, touching each payload once and doing nothing else.
//!
//! Usage: `drain BROKERS TOPIC[,TOPIC...] COUNT [FETCH_WAIT_MS]`; prints
//! `drained N messages in S s: R msg/s`, the same line `paystream run` prints. The count is
//! given rather than read from the watermarks because tansu 0.6 reports low high-watermarks.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(brokers), Some(topics), Some(count)) = (args.get(1), args.get(2), args.get(3)) else {
        bail!("usage: drain BROKERS TOPIC[,TOPIC...] COUNT [FETCH_WAIT_MS]");
    };
    let mut remaining: i64 = count.parse().context("COUNT must be a number")?;
    let fetch_wait = args.get(4).map_or("10", String::as_str);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "paystream-bench-drain")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait)
        .set("queued.min.messages", "200000")
        .set("fetch.message.max.bytes", "8388608")
        .create()
        .context("creating the consumer")?;
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    for topic in topics.split(',') {
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let total = remaining;
    let mut bytes = 0u64;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while remaining > 0 {
        if Instant::now() > deadline {
            bail!("gave up with {remaining} messages left");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Instant::now);
                bytes += m.payload_len() as u64;
                remaining -= 1;
            }
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None => {}
        }
    }
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64()).max(1e-6);
    println!(
        "drained {total} messages in {secs:.3}s: {:.0} msg/s ({bytes} bytes)",
        total as f64 / secs
    );
    Ok(())
}
