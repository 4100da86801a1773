//! `paystream generate --lake`: synthetic traffic decoded and committed straight into a lake,
//! with no Kafka in between. It fills a lake of tens of millions of rows in minutes, for trying
//! queries, for BI exports and for the query benchmark.
//!
//! The messages go through the same normaliser as the pipeline's, so the tables are exactly
//! what a pipeline would have written. They are committed as one pseudo-partition whose
//! "offsets" are the generator's sequence numbers, under a transaction id naming everything
//! that shapes the stream (seed, rate, ratios, and the day its event time is anchored to):
//! running the same command twice adds nothing the second time, a larger `--count` the same day
//! adds only the missing tail, and different settings never continue another stream.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use paystream_core::record::RawRecord;
use paystream_core::schema::SchemaSpec;
use paystream_ingest::decode::{NormaliseOptions, Normaliser};
use paystream_ingest::generator::{Generator, GeneratorOptions};
use paystream_sinks::delta::{Lake, LakeLocation, OffsetRange, PartitionKey};

use crate::cli::GenerateArgs;

/// Messages decoded per commit: large files, bounded memory.
const MESSAGES_PER_COMMIT: u64 = 1_000_000;

/// How far back event time starts.
const ANCHOR_DAYS: u64 = 30;

/// Event time, when no rate is given: a day of traffic per million events.
const DEFAULT_EVENTS_PER_SEC: f64 = 1_000_000.0 / 86_400.0;

pub async fn generate_into_lake(args: GenerateArgs, uri: &str) -> Result<ExitCode> {
    let Some(count) = args.count else {
        anyhow::bail!("--lake needs --count: a lake is filled with a known number of events");
    };
    let rate = args.rate.unwrap_or(DEFAULT_EVENTS_PER_SEC);
    // Event time starts at midnight UTC ANCHOR_DAYS ago, whatever the count, so that a larger
    // count continues the same timeline: the lake looks like the last weeks of real traffic.
    let today = chrono::Utc::now().date_naive();
    let anchor = today - chrono::Days::new(ANCHOR_DAYS);
    let start_time_ms = anchor
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .context("computing the start of event time")?;
    let options = GeneratorOptions {
        seed: args.seed,
        bad_ratio: args.bad_ratio,
        late_ratio: args.late_ratio,
        rate_per_sec: Some(rate),
        start_time_ms,
        ..GeneratorOptions::default()
    };
    options.validate()?;
    let location = LakeLocation::resolve(uri, crate::sql::env_storage_options())?;
    let schema = SchemaSpec::preset()?;
    let mut lake = Lake::open(
        &location,
        "generate",
        &schema,
        paystream_core::config::DEFAULT_TARGET_FILE_SIZE,
    )
    .await
    .with_context(|| format!("opening the lake at {}", location.root()))?;
    let stream = format!(
        "seed{}.rate{rate}.bad{}.late{}.from{}",
        args.seed,
        args.bad_ratio,
        args.late_ratio,
        anchor.format("%Y%m%d")
    );
    let partition = PartitionKey::new(stream, 0);
    let resume = lake.resume(std::slice::from_ref(&partition)).await?;
    let done = resume.get(&partition).copied().flatten().unwrap_or(0);
    let done = u64::try_from(done).unwrap_or(0);

    let mut generator = Generator::new(options);
    // The generator is deterministic: replaying the committed prefix puts it where it stopped.
    for _ in 0..done.min(count) {
        generator.next_message();
    }
    if done >= count {
        eprintln!(
            "{}: already holds the first {done} events of this stream ({}); nothing to add",
            location.root(),
            partition.topic
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut normaliser = Normaliser::try_new(&schema, NormaliseOptions::default())?;
    let started = Instant::now();
    let mut seq = done;
    let (mut good, mut bad) = (0u64, 0u64);
    while seq < count {
        let first = seq;
        let end = count.min(seq + MESSAGES_PER_COMMIT);
        let ingest_us = chrono::Utc::now().timestamp_micros();
        while seq < end {
            let m = generator.next_message();
            let headers: Vec<(&str, Option<&[u8]>)> = m
                .headers
                .iter()
                .map(|(k, v)| (*k, Some(v.as_ref())))
                .collect();
            let offset = i64::try_from(seq).context("more events than offsets")?;
            normaliser.push(
                &RawRecord {
                    topic: &m.topic,
                    partition: 0,
                    offset,
                    timestamp_ms: None,
                    key: Some(&m.key),
                    payload: Some(&m.payload),
                    headers: &headers,
                },
                ingest_us,
            );
            seq += 1;
        }
        let batch = normaliser.finish()?;
        good += batch.good;
        bad += batch.bad.values().sum::<u64>();
        let range = OffsetRange {
            partition: partition.clone(),
            first: i64::try_from(first)?,
            next: i64::try_from(seq)?,
        };
        lake.write(batch.tables, batch.dlq, &[range]).await?;
        lake.commit().await?;
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "committed {seq}/{count} events ({:.0} events/s)",
            (seq - done) as f64 / secs
        );
    }
    eprintln!(
        "{}: added {good} rows and {bad} bad records in {:.1}s",
        location.root(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
