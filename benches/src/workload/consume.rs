//! One consumer task: counts every record, per partition, and times stamped
//! records end to end (intended send time → delivery to the application).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::driver::BenchConsumer;
use super::produce::read_stamp;
use super::{Clock, Live};
use crate::stats::{Latency, PartitionCounts};

/// Longest single poll; the stop conditions are checked between polls.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Everything one consumer task needs.
pub struct ConsumerJob {
    pub topics: usize,
    pub partitions: u32,
    /// Records count toward throughput from this instant on.
    pub measure_start: Instant,
    /// Time stamped records end to end (those sent after the producers'
    /// warm-up, `Live::measure_from_unix_ns`).
    pub time_end_to_end: bool,
    pub clock: Clock,
    pub live: Arc<Live>,
}

/// What one consumer task measured.
#[derive(Debug)]
pub struct ConsumerOutcome {
    pub consumed: u64,
    pub consumed_bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub measured_records: u64,
    pub measured_bytes: u64,
    pub first_measured: Option<Instant>,
    pub last_measured: Option<Instant>,
    pub e2e: Latency,
    pub partitions: PartitionCounts,
}

/// Consumes until every consumer together has seen `live.consume_target`
/// records (or the run is aborted), then closes the consumer.
pub async fn run<C: BenchConsumer>(mut consumer: C, job: ConsumerJob) -> ConsumerOutcome {
    let mut outcome = ConsumerOutcome {
        consumed: 0,
        consumed_bytes: 0,
        errors: 0,
        first_error: None,
        measured_records: 0,
        measured_bytes: 0,
        first_measured: None,
        last_measured: None,
        e2e: Latency::new(),
        partitions: PartitionCounts::new(job.topics, job.partitions),
    };
    let live = Arc::clone(&job.live);
    while !live.abort.load(Relaxed)
        && live.consumed.load(Relaxed) < live.consume_target.load(Relaxed)
    {
        let mut stray = 0u64;
        let mut poll_bytes = 0u64;
        // One clock read per poll unless records are timed end to end: a
        // read per record was 4 % of the consumer's CPU. The poll's last
        // record is timed after the poll returns.
        let mut poll_started: Option<Instant> = None;
        let mut measured_in_poll = false;
        let result = consumer
            .poll(POLL_WAIT, |record| {
                let now = if job.time_end_to_end {
                    Instant::now()
                } else {
                    *poll_started.get_or_insert_with(Instant::now)
                };
                let bytes = record.value.len() as u64;
                outcome.consumed += 1;
                outcome.consumed_bytes += bytes;
                poll_bytes += bytes;
                if !outcome
                    .partitions
                    .add(record.topic_index, record.partition, 1)
                {
                    stray += 1;
                }
                if now >= job.measure_start {
                    outcome.measured_records += 1;
                    outcome.measured_bytes += bytes;
                    outcome.first_measured.get_or_insert(now);
                    outcome.last_measured = Some(now);
                    measured_in_poll = true;
                }
                if let Some(stamp_ns) = read_stamp(record.value).filter(|_| job.time_end_to_end) {
                    if stamp_ns >= live.measure_from_unix_ns.load(Relaxed) {
                        let delivered_ns = job.clock.unix_ns(now);
                        outcome
                            .e2e
                            .record(Duration::from_nanos(delivered_ns.saturating_sub(stamp_ns)));
                    }
                }
            })
            .await;
        if measured_in_poll && !job.time_end_to_end {
            outcome.last_measured = Some(Instant::now());
        }
        match result {
            Ok(count) => {
                live.consumed.fetch_add(count as u64, Relaxed);
                live.consumed_bytes.fetch_add(poll_bytes, Relaxed);
            }
            Err(error) => {
                outcome.errors += 1;
                live.errors.fetch_add(1, Relaxed);
                outcome
                    .first_error
                    .get_or_insert(format!("poll failed: {error:#}"));
                break;
            }
        }
        if stray > 0 {
            outcome.errors += stray;
            live.errors.fetch_add(stray, Relaxed);
            outcome.first_error.get_or_insert_with(|| {
                "a record came from a partition outside the run".to_string()
            });
        }
    }
    if let Err(error) = consumer.close().await {
        outcome.errors += 1;
        outcome
            .first_error
            .get_or_insert(format!("close failed: {error:#}"));
    }
    outcome
}
