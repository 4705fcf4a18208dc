//! The delivery of the records of one [`Producer::send_many`] call.
//!
//! Records of a call that went into the same producer batch, at
//! consecutive places in it and with the same timestamp, form a *run*; the
//! future keeps one batch `Arc` per run and each record only the number of
//! its run, and the report derives each record's metadata from its run on
//! demand. A record extends the last run of its partition, not only the
//! run just before it: keyed records change partition nearly every record,
//! and a run (a reference count and 40 bytes) per record was the largest
//! share of a keyed producer's time. Sending many records per call is thus
//! free of per-record futures, wake-ups and reference counts.
//!
//! [`Producer::send_many`]: super::Producer::send_many

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::accumulator::Placed;
use super::batch::{BatchAck, BatchOutcome, RecordMetadata};
use crate::error::{Error, Result};

/// Records of one call that share a producer batch and a timestamp.
struct Run {
    outcome: Arc<BatchOutcome>,
    partition: i32,
    /// Index of the run's first record in its batch.
    first_index: i32,
    records: i32,
    timestamp: i64,
}

impl Run {
    fn extends(&self, placed: &Placed<'_>, timestamp: i64) -> bool {
        Arc::ptr_eq(&self.outcome, placed.outcome)
            && self.first_index + self.records == placed.index
            && self.timestamp == timestamp
    }
}

/// How many partitions' last runs a call remembers (direct-mapped by
/// partition): a record whose run is forgotten starts a new one.
const RECENT_RUNS: usize = 64;

/// No run yet in a `recent` slot.
const NO_RUN: u32 = u32::MAX;

/// Resolves to the [`DeliveryReport`] of the records of one
/// [`Producer::send_many`](super::Producer::send_many) call once the
/// broker has answered for all of them (or they failed). Dropping it does
/// not cancel the send.
#[must_use = "dropping the future does not cancel the send, but its result is the only delivery report"]
pub struct Deliveries {
    runs: Vec<Run>,
    /// Each record's run, in call order.
    record_runs: Vec<u32>,
    /// The run each partition (modulo `RECENT_RUNS`) last extended; boxed
    /// to keep the future small to move.
    recent: Box<[u32; RECENT_RUNS]>,
    /// Results of `runs[..results.len()]`, collected as their batches complete.
    results: Vec<Result<BatchAck>>,
    waker_slot: Option<usize>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("records", &self.record_runs.len())
            .field("runs", &self.runs.len())
            .field("completed_runs", &self.results.len())
            .finish_non_exhaustive()
    }
}

impl Deliveries {
    pub(crate) fn with_capacity(records: usize) -> Self {
        Deliveries {
            // A call fills a batch or two per partition it writes.
            runs: Vec::with_capacity(records.min(RECENT_RUNS)),
            record_runs: Vec::with_capacity(records),
            recent: Box::new([NO_RUN; RECENT_RUNS]),
            results: Vec::new(),
            waker_slot: None,
        }
    }

    /// Adds the next record of the call.
    pub(crate) fn push(&mut self, placed: Placed<'_>, timestamp: i64) {
        let slot = placed.partition.unsigned_abs() as usize % RECENT_RUNS;
        let last = self.recent[slot];
        if let Some(run) = self.runs.get_mut(last as usize) {
            if run.extends(&placed, timestamp) {
                run.records += 1;
                self.record_runs.push(last);
                return;
            }
        }
        // Fewer runs than records, and a call's records fit a Vec.
        let at = u32::try_from(self.runs.len()).unwrap_or(NO_RUN - 1);
        self.runs.push(Run {
            outcome: Arc::clone(placed.outcome),
            partition: placed.partition,
            first_index: placed.index,
            records: 1,
            timestamp,
        });
        self.recent[slot] = at;
        self.record_runs.push(at);
    }

    /// How many records the call queued.
    pub fn len(&self) -> usize {
        self.record_runs.len()
    }

    /// Whether the call queued no records.
    pub fn is_empty(&self) -> bool {
        self.record_runs.is_empty()
    }
}

impl Future for Deliveries {
    type Output = DeliveryReport;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DeliveryReport> {
        let this = self.get_mut();
        while let Some(run) = this.runs.get(this.results.len()) {
            let previous = this.results.len().checked_sub(1);
            // Runs split only by a timestamp share their batch's result.
            let shared = previous
                .filter(|&at| Arc::ptr_eq(&this.runs[at].outcome, &run.outcome))
                .and_then(|at| this.results.get(at).cloned());
            let result = match shared {
                Some(result) => result,
                None => match run.outcome.poll_result(cx, &mut this.waker_slot) {
                    Poll::Ready(result) => {
                        this.waker_slot = None;
                        result
                    }
                    Poll::Pending => return Poll::Pending,
                },
            };
            this.results.push(result);
        }
        let results = std::mem::take(&mut this.results);
        let runs = std::mem::take(&mut this.runs)
            .into_iter()
            .zip(results)
            .map(|(run, result)| DeliveredRun {
                partition: run.partition,
                first_index: run.first_index,
                records: run.records,
                timestamp: run.timestamp,
                result,
            })
            .collect();
        Poll::Ready(DeliveryReport::new(
            runs,
            std::mem::take(&mut this.record_runs),
        ))
    }
}

struct DeliveredRun {
    partition: i32,
    first_index: i32,
    records: i32,
    timestamp: i64,
    result: Result<BatchAck>,
}

/// What became of each record of one
/// [`Producer::send_many`](super::Producer::send_many) call, in the order
/// the records were given.
pub struct DeliveryReport {
    runs: Vec<DeliveredRun>,
    record_runs: Vec<u32>,
    failed_records: usize,
}

impl std::fmt::Debug for DeliveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryReport")
            .field("records", &self.record_runs.len())
            .field("failed_records", &self.failed_records)
            .field("runs", &self.runs)
            .finish()
    }
}

impl std::fmt::Debug for DeliveredRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveredRun")
            .field("partition", &self.partition)
            .field("records", &self.records)
            .field("delivered", &self.result.is_ok())
            .finish()
    }
}

impl DeliveryReport {
    fn new(runs: Vec<DeliveredRun>, record_runs: Vec<u32>) -> Self {
        let failed_records = runs
            .iter()
            .filter(|run| run.result.is_err())
            .map(|run| run.records as usize)
            .sum();
        DeliveryReport {
            runs,
            record_runs,
            failed_records,
        }
    }

    /// How many records the report covers.
    pub fn len(&self) -> usize {
        self.record_runs.len()
    }

    /// Whether the call sent no records.
    pub fn is_empty(&self) -> bool {
        self.record_runs.is_empty()
    }

    /// How many of the records were not delivered.
    pub fn failed_records(&self) -> usize {
        self.failed_records
    }

    /// The error of the first record that was not delivered.
    pub fn first_error(&self) -> Option<&Error> {
        self.runs.iter().find_map(|run| run.result.as_ref().err())
    }

    /// Each record's metadata, or the error that failed it, in send order.
    pub fn iter(&self) -> impl Iterator<Item = std::result::Result<RecordMetadata, &Error>> + '_ {
        // How many records of each run were yielded: the next one's place.
        let mut taken = vec![0i32; self.runs.len()];
        self.record_runs.iter().filter_map(move |&at| {
            let at = at as usize;
            let run = self.runs.get(at)?;
            let index = run.first_index + taken[at];
            taken[at] += 1;
            Some(match &run.result {
                Ok(ack) => Ok(ack.record(run.partition, index, run.timestamp)),
                Err(error) => Err(error),
            })
        })
    }

    /// Records per partition, as `(partition, records, delivered)` for each
    /// run of the call's records that went to one batch (in the order of
    /// their first records): a per-partition tally without a per-record loop.
    pub fn partition_runs(&self) -> impl Iterator<Item = (i32, usize, bool)> + '_ {
        self.runs
            .iter()
            .map(|run| (run.partition, run.records as usize, run.result.is_ok()))
    }

    /// The report if every record was delivered, else
    /// [`Error::Undelivered`] with the count and the first error.
    pub fn into_result(self) -> Result<DeliveryReport> {
        match self.first_error() {
            None => Ok(self),
            Some(error) => Err(Error::Undelivered {
                failed_records: self.failed_records as u64,
                first_error: Box::new(error.clone()),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn placed(outcome: &Arc<BatchOutcome>, partition: i32, index: i32) -> Placed<'_> {
        Placed {
            outcome,
            partition,
            index,
        }
    }

    /// Records that share a batch and a timestamp fold into one run; the
    /// report gives every record its own offset, in send order, and a
    /// failed batch fails exactly its records.
    #[tokio::test]
    async fn runs_fold_and_report_each_record() {
        let first = Arc::new(BatchOutcome::default());
        let second = Arc::new(BatchOutcome::default());
        let mut deliveries = Deliveries::with_capacity(6);
        deliveries.push(placed(&first, 0, 0), 10);
        deliveries.push(placed(&first, 0, 1), 10);
        deliveries.push(placed(&second, 1, 0), 10);
        deliveries.push(placed(&first, 0, 2), 11);
        deliveries.push(placed(&first, 0, 3), 11);
        deliveries.push(placed(&second, 1, 1), 11);
        assert_eq!((deliveries.len(), deliveries.runs.len()), (6, 4));
        let waiting = tokio::spawn(deliveries);
        tokio::task::yield_now().await;
        first.complete(Ok(BatchAck {
            base_offset: 100,
            log_append_time_ms: -1,
        }));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        second.complete(Err(Error::Closed("test")));
        let report = waiting.await.unwrap();
        assert_eq!((report.len(), report.failed_records()), (6, 2));
        let offsets: Vec<_> = report
            .iter()
            .map(|r| r.map(|m| (m.partition, m.offset, m.timestamp)).ok())
            .collect();
        assert_eq!(
            offsets,
            [
                Some((0, 100, 10)),
                Some((0, 101, 10)),
                None,
                Some((0, 102, 11)),
                Some((0, 103, 11)),
                None
            ]
        );
        let runs: Vec<_> = report.partition_runs().collect();
        assert_eq!(
            runs,
            [(0, 2, true), (1, 1, false), (0, 2, true), (1, 1, false)]
        );
        assert!(matches!(
            report.into_result(),
            Err(Error::Undelivered {
                failed_records: 2,
                ..
            })
        ));
    }

    /// Keyed records alternate partitions: each record extends its own
    /// partition's run, so two batches make two runs, and every record
    /// still gets its place in its batch, in call order.
    #[tokio::test]
    async fn alternating_partitions_fold_per_partition() {
        let first = Arc::new(BatchOutcome::default());
        let second = Arc::new(BatchOutcome::default());
        let mut deliveries = Deliveries::with_capacity(6);
        for index in 0..3 {
            deliveries.push(placed(&first, 0, 10 + index), 7);
            deliveries.push(placed(&second, 65, index), 7);
        }
        assert_eq!((deliveries.len(), deliveries.runs.len()), (6, 2));
        for (outcome, base_offset) in [(&first, 100), (&second, 500)] {
            outcome.complete(Ok(BatchAck {
                base_offset,
                log_append_time_ms: -1,
            }));
        }
        let report = deliveries.await;
        let offsets: Vec<_> = report
            .iter()
            .map(|r| r.ok().map(|m| (m.partition, m.offset)))
            .collect();
        assert_eq!(
            offsets,
            [
                Some((0, 110)),
                Some((65, 500)),
                Some((0, 111)),
                Some((65, 501)),
                Some((0, 112)),
                Some((65, 502))
            ]
        );
        let runs: Vec<_> = report.partition_runs().collect();
        assert_eq!(runs, [(0, 3, true), (65, 3, true)]);
    }

    /// An empty call resolves at once to an empty report.
    #[tokio::test]
    async fn nothing_sent_resolves_at_once() {
        let report = Deliveries::with_capacity(0).await;
        assert!(report.is_empty());
        assert!(report.into_result().is_ok());
    }
}
