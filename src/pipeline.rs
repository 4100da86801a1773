//! Wiring of a running pipeline: each Kafka source feeds the Delta sink that lists it as input.
//! The source runs on its own thread; the sink is an async task that buffers decoded batches,
//! commits them with their offsets at the sink's `max_latency` (or sooner when its buffer is
//! full), and answers the source's rebalance questions in stream order.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender as StdSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use paystream_core::config::{
    Config, DeltaSinkConfig, KafkaSourceConfig, SinkConfig, SourceConfig, StartFrom,
};
use paystream_ingest::kafka::{self, SourceEvent, SourceOptions, SourceStats};
use paystream_sinks::delta::{storage_options, Lake, LakeLocation, OffsetRange, PartitionKey};
use tokio::sync::mpsc::Receiver;
use tracing::{info, warn};

/// Settings of `paystream run` that are not part of the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop once no message arrived for this long and everything is committed.
    pub stop_when_idle: Option<Duration>,
    /// Print a progress line this often.
    pub progress_every: Option<Duration>,
    /// Stop (committing everything) after this long.
    pub stop_after: Option<Duration>,
}

/// Totals of a finished run.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub rows: BTreeMap<String, u64>,
    pub commits: u64,
    pub files: u64,
    /// Messages consumed.
    pub messages: u64,
    /// From the first batch received to the last commit that carried data: the drain time
    /// `scripts/bench` reports, free of group-join and idle waits.
    pub busy: Option<Duration>,
}

impl Totals {
    /// Messages per second over the busy time.
    pub fn rate(&self) -> Option<f64> {
        self.busy
            .map(|d| self.messages as f64 / d.as_secs_f64().max(1e-6))
    }
}

/// The lake location a delta sink writes to, with its S3 options.
pub fn lake_location(sink: &DeltaSinkConfig) -> Result<LakeLocation> {
    let s3 = &sink.s3;
    let opts = storage_options(
        s3.endpoint.as_deref(),
        s3.region.as_deref(),
        s3.access_key_id.as_ref().map(|s| s.expose()),
        s3.secret_access_key.as_ref().map(|s| s.expose()),
        s3.session_token.as_ref().map(|s| s.expose()),
        s3.allow_http,
    );
    Ok(LakeLocation::resolve(&sink.uri, opts)?)
}

/// Source options from a `[sources.<id>]` of type kafka.
pub fn source_options(k: &KafkaSourceConfig, run: &RunOptions) -> SourceOptions {
    SourceOptions {
        brokers: k.brokers.clone(),
        topics: k.topics.clone(),
        group_id: k.group_id.clone(),
        start_from_end: matches!(k.start_from, StartFrom::Latest),
        batch_max_events: k.batch_max_events,
        batch_max_wait: k.batch_max_wait,
        max_message_bytes: usize::try_from(k.max_message_bytes).unwrap_or(usize::MAX),
        fetch_wait_max: k.fetch_wait_max,
        properties: k
            .librdkafka
            .iter()
            .map(|(key, v)| (key.clone(), v.expose().to_string()))
            .collect(),
        stop_when_idle: run.stop_when_idle,
        resume_rewind: i64::try_from(k.resume_rewind).unwrap_or(i64::MAX),
    }
}

/// The one source -> sink pair this version runs.
fn plan(cfg: &Config) -> Result<(&KafkaSourceConfig, &DeltaSinkConfig)> {
    if !cfg.transforms.is_empty() {
        bail!(
            "{}: transforms are declared, but this version of `paystream run` only wires sources \
             straight into delta sinks; remove [transforms.*] or run them in a later version",
            cfg.file
        );
    }
    let (sink_id, sink) = match cfg.sinks.iter().next() {
        Some((id, SinkConfig::Delta(d))) if cfg.sinks.len() == 1 => (id, d),
        _ => bail!(
            "{}: exactly one delta sink is supported per pipeline",
            cfg.file
        ),
    };
    let [input] = sink.inputs.as_slice() else {
        bail!(
            "{}: sinks.{sink_id}.inputs: exactly one kafka source is supported",
            cfg.file
        );
    };
    let Some(SourceConfig::Kafka(k)) = cfg.sources.get(input) else {
        bail!(
            "{}: sinks.{sink_id}.inputs: {input} is not a kafka source",
            cfg.file
        );
    };
    Ok((k, sink))
}

/// Run the pipeline until SIGINT/SIGTERM (or idle, when asked).
pub async fn run(cfg: &Config, run: RunOptions) -> Result<Totals> {
    let (kafka_cfg, sink_cfg) = plan(cfg)?;
    let location = lake_location(sink_cfg)?;
    let lake = Lake::open(
        &location,
        &cfg.pipeline.name,
        &cfg.schema,
        sink_cfg.target_file_size,
    )
    .await
    .with_context(|| format!("opening the lake at {}", location.root()))?;
    info!(lake = %location.root(), tables = ?lake.table_names().collect::<Vec<_>>(), "lake open");

    // A few batches in flight: enough to overlap decoding with Parquet encoding, small enough
    // that a stalled sink pauses the consumer quickly.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let source = kafka::spawn(source_options(kafka_cfg, &run), &cfg.schema, tx)?;
    let stop = source.stop_handle();
    let stats = source.stats.clone();
    let committed = source.committed_sender();

    let signals = tokio::spawn({
        let stop = stop.clone();
        async move {
            wait_for_signal().await;
            info!("signal received: committing and stopping");
            stop.store(true, Ordering::SeqCst);
        }
    });
    let timer = run.stop_after.map(|after| {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            stop.store(true, Ordering::SeqCst);
        })
    });
    let progress = run
        .progress_every
        .map(|every| tokio::spawn(progress(stats.clone(), every)));

    let sink = SinkLoop {
        lake,
        max_latency: sink_cfg.max_latency,
        max_buffer_bytes: usize::try_from(sink_cfg.max_buffer_bytes).unwrap_or(usize::MAX),
        committed,
        totals: Totals::default(),
        first_batch: None,
    };
    let sink_result = sink.run(rx).await;
    if sink_result.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    let source_result = tokio::task::spawn_blocking(move || source.join()).await?;
    signals.abort();
    if let Some(t) = timer {
        t.abort();
    }
    if let Some(p) = progress {
        p.abort();
    }
    let totals = sink_result?;
    source_result?;
    Ok(totals)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn progress(stats: Arc<SourceStats>, every: Duration) {
    let mut last = (0u64, Instant::now());
    loop {
        tokio::time::sleep(every).await;
        let n = stats.messages.load(Ordering::Relaxed);
        let rate = (n - last.0) as f64 / last.1.elapsed().as_secs_f64().max(1e-3);
        info!(
            consumed = n,
            per_sec = rate.round(),
            batches = stats.batches.load(Ordering::Relaxed),
            "progress"
        );
        last = (n, Instant::now());
    }
}

struct SinkLoop {
    lake: Lake,
    max_latency: Duration,
    max_buffer_bytes: usize,
    committed: StdSender<BTreeMap<(String, i32), i64>>,
    totals: Totals,
    first_batch: Option<Instant>,
}

fn keys(partitions: &[(String, i32)]) -> Vec<PartitionKey> {
    partitions
        .iter()
        .map(|(t, p)| PartitionKey::new(t.clone(), *p))
        .collect()
}

impl SinkLoop {
    async fn run(mut self, mut rx: Receiver<SourceEvent>) -> Result<Totals> {
        loop {
            let deadline = self
                .lake
                .pending_since()
                .map(|t| tokio::time::Instant::from_std(t + self.max_latency));
            let event = match deadline {
                Some(d) => tokio::select! {
                    ev = rx.recv() => ev,
                    _ = tokio::time::sleep_until(d) => {
                        self.commit().await?;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            match event {
                None => {
                    self.commit().await?;
                    return Ok(self.totals);
                }
                Some(SourceEvent::Batch(b)) => {
                    self.first_batch.get_or_insert_with(Instant::now);
                    self.totals.messages += b.messages;
                    let ranges: Vec<OffsetRange> = b
                        .ranges
                        .iter()
                        .map(|r| OffsetRange {
                            partition: PartitionKey::new(r.topic.clone(), r.partition),
                            first: r.first,
                            next: r.next,
                        })
                        .collect();
                    self.lake.write(b.data.tables, b.data.dlq, &ranges).await?;
                    let late = self
                        .lake
                        .pending_since()
                        .is_some_and(|t| t.elapsed() >= self.max_latency);
                    if late || self.lake.pending_bytes() >= self.max_buffer_bytes {
                        self.commit().await?;
                    }
                }
                Some(SourceEvent::Resume { partitions, reply }) => {
                    let res = self.lake.resume(&keys(&partitions)).await;
                    let answer = res
                        .map(|m| {
                            keys(&partitions)
                                .iter()
                                .map(|k| m.get(k).copied().flatten())
                                .collect()
                        })
                        .map_err(|e| e.to_string());
                    let _ = reply.send(answer);
                }
                Some(SourceEvent::Revoke { partitions, reply }) => {
                    // Everything buffered is committed before the partitions go, so whoever
                    // gets them next resumes exactly after it.
                    let res = self.commit().await;
                    let _ = reply.send(res.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    res?;
                    info!(partitions = partitions.len(), "committed before revoke");
                }
                Some(SourceEvent::Stop { reply }) => {
                    let res = self.commit().await;
                    let _ = reply.send(res.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    res?;
                    return Ok(self.totals);
                }
            }
        }
    }

    async fn commit(&mut self) -> Result<()> {
        let started = Instant::now();
        let stats = match self.lake.commit().await {
            Ok(s) => s,
            Err(e) => {
                // The files written are not referenced by any commit: dropping them loses
                // nothing, since the source will re-read from the lake's offsets on restart.
                self.lake.discard();
                return Err(e).context("committing to the lake");
            }
        };
        if stats.offsets.is_empty() {
            return Ok(());
        }
        self.totals.commits += 1;
        self.totals.busy = self.first_batch.map(|t| t.elapsed());
        self.totals.files += stats.files;
        for (t, n) in &stats.rows {
            *self.totals.rows.entry(t.clone()).or_default() += n;
        }
        tracing::debug!(rows = ?stats.rows, files = stats.files, bytes = stats.bytes, took = ?started.elapsed(), "committed");
        let offsets = stats
            .offsets
            .into_iter()
            .map(|(k, v)| ((k.topic, k.partition), v))
            .collect();
        if self.committed.send(offsets).is_err() {
            warn!("source gone; group offsets not updated");
        }
        Ok(())
    }
}
