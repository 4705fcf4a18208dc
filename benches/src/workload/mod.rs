//! The workload engine: produce, consume and end-to-end phases over any
//! client that implements [`driver`]'s traits.
//!
//! A phase first connects every producer and consumer, then starts the clock,
//! so connection setup is never part of a measurement. Records intended before
//! the end of the warm-up are sent and counted (sent = acked = consumed holds
//! over the whole run) but not measured.

pub mod consume;
pub mod driver;
pub mod produce;
pub mod skiff;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;

use crate::cli::{Amount, ConsumerMode};
use crate::keys::KeySpace;
use crate::stats::{Latency, PartitionCounts};
use consume::{ConsumerJob, ConsumerOutcome};
use driver::{Assignment, Connector, ProducerSettings};
use produce::{ProducerJob, ProducerOutcome, StopRule};

/// Consumers that deliver nothing for this long, while records are still
/// owed, fail the run instead of hanging it.
const CONSUMER_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Monotonic instants mapped onto Unix time, so a record's timestamp and the
/// delivery time are comparable without a wall-clock step in between.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    anchor: Instant,
    anchor_unix_ns: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let anchor = Instant::now();
        let anchor_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            anchor,
            anchor_unix_ns,
        }
    }

    pub fn unix_ns(&self, instant: Instant) -> u64 {
        if instant >= self.anchor {
            self.anchor_unix_ns + (instant - self.anchor).as_nanos() as u64
        } else {
            self.anchor_unix_ns
                .saturating_sub((self.anchor - instant).as_nanos() as u64)
        }
    }

    pub fn unix_ms(&self, instant: Instant) -> i64 {
        (self.unix_ns(instant) / 1_000_000) as i64
    }
}

/// Counters shared by all tasks of a run, read by the progress line.
#[derive(Debug)]
pub struct Live {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub consumed: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Consumers stop once this many records were consumed in total.
    pub consume_target: AtomicU64,
    /// Set to stop every task early (a failed run).
    pub abort: AtomicBool,
    /// Unix ns of the producers' warm-up end: consumers time stamped records
    /// sent from then on (u64::MAX until the producers start).
    pub measure_from_unix_ns: AtomicU64,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            consume_target: AtomicU64::new(u64::MAX),
            abort: AtomicBool::new(false),
            measure_from_unix_ns: AtomicU64::new(u64::MAX),
        }
    }
}

/// What the producers of a phase are asked to do.
#[derive(Clone, Debug)]
pub struct ProducePlan {
    pub topics: Vec<String>,
    pub partitions: u32,
    pub producers: usize,
    pub settings: ProducerSettings,
    pub keys: KeySpace,
    pub seed: u64,
    pub message_size: u64,
    /// Records per send call.
    pub records_per_send: usize,
    /// Total records/s over all producers; `None` = saturate.
    pub rate_per_s: Option<f64>,
    pub amount: Amount,
    pub warmup: Duration,
    /// Stamp values with the send time for end-to-end latency.
    pub stamp: bool,
}

/// What the consumers of a phase are asked to do.
#[derive(Clone, Debug)]
pub struct ConsumePlan {
    pub topics: Vec<String>,
    pub partitions: u32,
    pub consumers: usize,
    pub mode: ConsumerMode,
    pub group_id: String,
}

/// A phase's merged producer measurements and its clock.
#[derive(Debug)]
pub struct ProducePhase {
    pub outcome: ProducerOutcome,
    pub started: Instant,
    pub measure_start: Instant,
}

impl ProducePhase {
    /// The measured interval: warm-up end → last measured ack.
    pub fn measured_elapsed(&self) -> Duration {
        self.outcome
            .last_measured_ack
            .map(|last| last.saturating_duration_since(self.measure_start))
            .unwrap_or_default()
    }
}

/// A phase's merged consumer measurements.
#[derive(Debug)]
pub struct ConsumePhase {
    pub outcome: ConsumerOutcome,
    pub started: Instant,
}

impl ConsumePhase {
    /// The measured interval: first record delivered → last record
    /// delivered. Not from the phase's start: consumers in a group get no
    /// partitions until the group's first rebalance completes (after
    /// Kafka's 3 s initial rebalance delay by default), which says nothing
    /// about the broker's read path.
    pub fn measured_elapsed(&self) -> Duration {
        match (self.outcome.first_measured, self.outcome.last_measured) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        }
    }
}

/// A value of `message_size` bytes that compresses about as well as real
/// payloads would not: a fixed pseudo-random pattern.
pub fn payload(message_size: u64) -> Bytes {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..message_size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    Bytes::from(bytes)
}

/// Each producer's share of `total` records (the first ones take the remainder).
pub fn shares(total: u64, producers: usize) -> Vec<u64> {
    let producers = producers.max(1) as u64;
    (0..producers)
        .map(|index| total / producers + u64::from(index < total % producers))
        .collect()
}

/// Connects the producers, runs them to their stop rule and merges what they measured.
pub async fn produce_phase<C: Connector>(
    connector: &C,
    plan: &ProducePlan,
    clock: Clock,
    live: &Arc<Live>,
) -> Result<ProducePhase> {
    let mut producers = Vec::with_capacity(plan.producers);
    for _ in 0..plan.producers {
        producers.push(
            connector
                .producer(&plan.topics, &plan.settings)
                .await
                .context("connecting a producer")?,
        );
    }
    let started = Instant::now();
    let measure_start = started + plan.warmup;
    live.measure_from_unix_ns
        .store(clock.unix_ns(measure_start), Relaxed);
    let record_shares = match plan.amount {
        Amount::Duration(_) => None,
        Amount::Messages(messages) => Some(shares(messages, plan.producers)),
        Amount::TotalBytes(bytes) => Some(shares(
            bytes.div_ceil(plan.message_size.max(1)),
            plan.producers,
        )),
    };
    let base_payload = payload(plan.message_size);
    let mut tasks = Vec::with_capacity(plan.producers);
    for (index, producer) in producers.into_iter().enumerate() {
        let stop = match (&record_shares, plan.amount) {
            (Some(shares), _) => StopRule::Records(shares[index]),
            (None, Amount::Duration(duration)) => StopRule::Until(measure_start + duration),
            (None, _) => return Err(anyhow!("record shares exist for every counted amount")),
        };
        let job = ProducerJob {
            topics: plan.topics.len(),
            partitions: plan.partitions,
            start: started,
            measure_start,
            stop,
            rate_per_s: plan.rate_per_s.map(|rate| rate / plan.producers as f64),
            keys: plan.keys.generator(plan.seed.wrapping_add(index as u64)),
            payload: base_payload.clone(),
            records_per_send: plan.records_per_send,
            stamp: plan.stamp,
            clock,
            live: Arc::clone(live),
        };
        tasks.push(tokio::spawn(produce::run(producer, job)));
    }
    let mut merged: Option<ProducerOutcome> = None;
    for task in tasks {
        let outcome = task.await.context("a producer task panicked")?;
        merged = Some(match merged {
            None => outcome,
            Some(total) => merge_producers(total, outcome),
        });
    }
    let outcome = merged.ok_or_else(|| anyhow!("a produce phase needs at least one producer"))?;
    Ok(ProducePhase {
        outcome,
        started,
        measure_start,
    })
}

fn merge_producers(mut total: ProducerOutcome, other: ProducerOutcome) -> ProducerOutcome {
    total.sent += other.sent;
    total.acked += other.acked;
    total.errors += other.errors;
    total.first_error = total.first_error.or(other.first_error);
    total.measured_records += other.measured_records;
    total.measured_bytes += other.measured_bytes;
    total.last_measured_ack = total.last_measured_ack.max(other.last_measured_ack);
    total.latency.merge(&other.latency);
    total.partitions.merge(&other.partitions);
    total
}

/// Running consumers of a phase; [`ConsumersRunning::finish`] waits for them.
pub struct ConsumersRunning {
    tasks: Vec<tokio::task::JoinHandle<ConsumerOutcome>>,
    started: Instant,
    topics: usize,
    partitions: u32,
}

/// Connects the consumers and starts them; they run until `live.consume_target`.
pub async fn start_consumers<C: Connector>(
    connector: &C,
    plan: &ConsumePlan,
    time_end_to_end: bool,
    clock: Clock,
    live: &Arc<Live>,
) -> Result<ConsumersRunning> {
    let assignments: Vec<Assignment> = match plan.mode {
        ConsumerMode::Group => (0..plan.consumers)
            .map(|_| Assignment::Group {
                group_id: plan.group_id.clone(),
            })
            .collect(),
        ConsumerMode::Assigned => {
            let mut dealt: Vec<Vec<(usize, i32)>> = vec![Vec::new(); plan.consumers.max(1)];
            let pairs = (0..plan.topics.len()).flat_map(|topic| {
                (0..plan.partitions as i32).map(move |partition| (topic, partition))
            });
            for (index, pair) in pairs.enumerate() {
                dealt[index % plan.consumers.max(1)].push(pair);
            }
            // More consumers than partitions: the extra ones would have nothing to read.
            dealt
                .into_iter()
                .filter(|pairs| !pairs.is_empty())
                .map(Assignment::Manual)
                .collect()
        }
    };
    let mut consumers = Vec::with_capacity(assignments.len());
    for assignment in &assignments {
        consumers.push(
            connector
                .consumer(&plan.topics, assignment)
                .await
                .context("connecting a consumer")?,
        );
    }
    let started = Instant::now();
    let tasks = consumers
        .into_iter()
        .map(|consumer| {
            let job = ConsumerJob {
                topics: plan.topics.len(),
                partitions: plan.partitions,
                measure_start: started,
                time_end_to_end,
                clock,
                live: Arc::clone(live),
            };
            tokio::spawn(consume::run(consumer, job))
        })
        .collect();
    Ok(ConsumersRunning {
        tasks,
        started,
        topics: plan.topics.len(),
        partitions: plan.partitions,
    })
}

impl ConsumersRunning {
    /// Waits for the consumers to reach the target; if they deliver nothing
    /// for [`CONSUMER_IDLE_TIMEOUT`] the run is aborted and the shortfall reported.
    pub async fn finish(self, live: &Arc<Live>) -> Result<ConsumePhase> {
        let mut all = futures::future::join_all(self.tasks);
        let mut last_count = live.consumed.load(Relaxed);
        let mut last_progress = Instant::now();
        let mut stalled: Option<String> = None;
        let results = loop {
            tokio::select! {
                results = &mut all => break results,
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    let count = live.consumed.load(Relaxed);
                    if count != last_count {
                        last_count = count;
                        last_progress = Instant::now();
                    } else if last_progress.elapsed() > CONSUMER_IDLE_TIMEOUT && stalled.is_none() {
                        stalled = Some(format!(
                            "consumers delivered nothing for {CONSUMER_IDLE_TIMEOUT:?}: consumed {count} of {} records",
                            live.consume_target.load(Relaxed)
                        ));
                        live.abort.store(true, Relaxed);
                    }
                }
            }
        };
        let mut outcome = ConsumerOutcome {
            consumed: 0,
            consumed_bytes: 0,
            errors: 0,
            first_error: stalled.clone(),
            measured_records: 0,
            measured_bytes: 0,
            first_measured: None,
            last_measured: None,
            e2e: Latency::new(),
            partitions: PartitionCounts::new(self.topics, self.partitions),
        };
        if stalled.is_some() {
            outcome.errors += 1;
        }
        for result in results {
            let other = result.context("a consumer task panicked")?;
            outcome.consumed += other.consumed;
            outcome.consumed_bytes += other.consumed_bytes;
            outcome.errors += other.errors;
            outcome.first_error = outcome.first_error.or(other.first_error);
            outcome.measured_records += other.measured_records;
            outcome.measured_bytes += other.measured_bytes;
            outcome.first_measured = match (outcome.first_measured, other.first_measured) {
                (Some(mine), Some(theirs)) => Some(mine.min(theirs)),
                (mine, theirs) => mine.or(theirs),
            };
            outcome.last_measured = outcome.last_measured.max(other.last_measured);
            outcome.e2e.merge(&other.e2e);
            outcome.partitions.merge(&other.partitions);
        }
        Ok(ConsumePhase {
            outcome,
            started: self.started,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shares add up to the total and differ by at most one.
    #[test]
    fn shares_split_evenly() {
        assert_eq!(shares(10, 3), vec![4, 3, 3]);
        assert_eq!(shares(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(shares(0, 1), vec![0]);
        assert_eq!(shares(1_000_001, 2).iter().sum::<u64>(), 1_000_001);
    }

    /// The clock maps instants to Unix time monotonically, in both directions of the anchor.
    #[test]
    fn clock_is_monotonic() {
        let clock = Clock::new();
        let now = Instant::now();
        let later = now + Duration::from_millis(5);
        assert_eq!(clock.unix_ns(later) - clock.unix_ns(now), 5_000_000);
        assert!(
            clock.unix_ms(now) > 1_600_000_000_000,
            "a plausible Unix time in ms"
        );
        let earlier = clock.anchor.checked_sub(Duration::from_millis(1));
        if let Some(earlier) = earlier {
            assert_eq!(clock.anchor_unix_ns - clock.unix_ns(earlier), 1_000_000);
        }
    }

    /// The payload has the requested size and is not trivially compressible.
    #[test]
    fn payload_is_sized_and_varied() {
        let value = payload(1000);
        assert_eq!(value.len(), 1000);
        let distinct: std::collections::HashSet<u8> = value.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "only {} distinct byte values",
            distinct.len()
        );
    }
}
