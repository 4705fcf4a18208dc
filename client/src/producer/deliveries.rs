//! The delivery of the records of one [`Producer::send_many`] call.
//!
//! Consecutive records of a call that went into the same producer batch
//! with the same timestamp form a *run*; the future keeps one batch `Arc`
//! per run, not one future per record, and the report it resolves to
//! derives each record's metadata from its run on demand. Sending many
//! records per call is thus free of per-record futures and wakeups, which
//! are most of a one-record `send` beyond the copy of its bytes.
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

/// Resolves to the [`DeliveryReport`] of the records of one
/// [`Producer::send_many`](super::Producer::send_many) call once the
/// broker has answered for all of them (or they failed). Dropping it does
/// not cancel the send.
#[must_use = "dropping the future does not cancel the send, but its result is the only delivery report"]
pub struct Deliveries {
    runs: Vec<Run>,
    /// Results of `runs[..results.len()]`, collected as their batches complete.
    results: Vec<Result<BatchAck>>,
    waker_slot: Option<usize>,
    records: usize,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("records", &self.records)
            .field("runs", &self.runs.len())
            .field("completed_runs", &self.results.len())
            .finish_non_exhaustive()
    }
}

impl Deliveries {
    pub(crate) fn with_capacity(records: usize) -> Self {
        Deliveries {
            // Keyless records of a call fill a batch or two; keyed ones may
            // change partition with every record. Start small either way.
            runs: Vec::with_capacity(records.min(16)),
            results: Vec::new(),
            waker_slot: None,
            records: 0,
        }
    }

    /// Adds the next record of the call.
    pub(crate) fn push(&mut self, placed: Placed<'_>, timestamp: i64) {
        self.records += 1;
        if let Some(last) = self.runs.last_mut() {
            if last.extends(&placed, timestamp) {
                last.records += 1;
                return;
            }
        }
        self.runs.push(Run {
            outcome: Arc::clone(placed.outcome),
            partition: placed.partition,
            first_index: placed.index,
            records: 1,
            timestamp,
        });
    }

    /// How many records the call queued.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the call queued no records.
    pub fn is_empty(&self) -> bool {
        self.records == 0
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
        Poll::Ready(DeliveryReport::new(runs, this.records))
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
#[derive(Debug)]
pub struct DeliveryReport {
    runs: Vec<DeliveredRun>,
    records: usize,
    failed_records: usize,
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
    fn new(runs: Vec<DeliveredRun>, records: usize) -> Self {
        let failed_records = runs
            .iter()
            .filter(|run| run.result.is_err())
            .map(|run| run.records as usize)
            .sum();
        DeliveryReport {
            runs,
            records,
            failed_records,
        }
    }

    /// How many records the report covers.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the call sent no records.
    pub fn is_empty(&self) -> bool {
        self.records == 0
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
        self.runs.iter().flat_map(|run| {
            (0..run.records).map(move |offset| match &run.result {
                Ok(ack) => Ok(ack.record(run.partition, run.first_index + offset, run.timestamp)),
                Err(error) => Err(error),
            })
        })
    }

    /// Records per partition in send order, as `(partition, records,
    /// delivered)` for each stretch of consecutive records that went to one
    /// partition in one batch: a per-partition tally without a per-record loop.
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

    /// An empty call resolves at once to an empty report.
    #[tokio::test]
    async fn nothing_sent_resolves_at_once() {
        let report = Deliveries::with_capacity(0).await;
        assert!(report.is_empty());
        assert!(report.into_result().is_ok());
    }
}
