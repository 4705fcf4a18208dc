//! A producer batch: the records of one partition sent in one RecordBatch,
//! and the shared outcome every record's [`DeliveryFuture`] waits on.
//!
//! One outcome per batch (not one channel per record) keeps `send` free of
//! per-record allocations: a record's future is the batch's `Arc` plus the
//! record's index in the batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use skiff_protocol::batch::{RecordBatchBuilder, CRC_COVERED_FROM, CRC_OFFSET};

use crate::error::{Error, Result};

/// Where a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition the record went to.
    pub partition: i32,
    /// Its offset in the partition; -1 when unknown (acks=0, or a
    /// duplicate the broker recognised without reporting the offset).
    pub offset: i64,
    /// Its timestamp: the producer's create time, or the broker's append
    /// time for topics configured with LogAppendTime.
    pub timestamp: i64,
}

/// What the broker answered for a whole batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchAck {
    pub base_offset: i64,
    pub log_append_time_ms: i64,
}

impl BatchAck {
    /// The metadata of the batch's record at `index`, created at `timestamp`.
    pub(crate) fn record(&self, partition: i32, index: i32, timestamp: i64) -> RecordMetadata {
        RecordMetadata {
            partition,
            offset: if self.base_offset >= 0 {
                self.base_offset + i64::from(index)
            } else {
                -1
            },
            timestamp: if self.log_append_time_ms >= 0 {
                self.log_append_time_ms
            } else {
                timestamp
            },
        }
    }
}

#[derive(Default)]
struct OutcomeState {
    result: Option<Result<BatchAck>>,
    wakers: Vec<Waker>,
}

/// The result of a batch, shared by the futures of its records.
#[derive(Default)]
pub(crate) struct BatchOutcome {
    state: Mutex<OutcomeState>,
}

impl BatchOutcome {
    pub(crate) fn complete(&self, result: Result<BatchAck>) {
        let wakers = match self.state.lock() {
            Ok(mut state) => {
                if state.result.is_some() {
                    return;
                }
                state.result = Some(result);
                std::mem::take(&mut state.wakers)
            }
            Err(_) => return,
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// The batch's result once it has completed. Until then the waker is
    /// registered, in `waker_slot`: a waiter's first poll takes a slot and
    /// later polls reuse it, so re-polling does not grow the list.
    pub(crate) fn poll_result(
        &self,
        cx: &mut Context<'_>,
        waker_slot: &mut Option<usize>,
    ) -> Poll<Result<BatchAck>> {
        let Ok(mut state) = self.state.lock() else {
            return Poll::Ready(Err(Error::Closed("producer")));
        };
        if let Some(result) = &state.result {
            return Poll::Ready(result.clone());
        }
        match *waker_slot {
            Some(slot) if slot < state.wakers.len() => state.wakers[slot].clone_from(cx.waker()),
            _ => {
                *waker_slot = Some(state.wakers.len());
                state.wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// Resolves to the [`RecordMetadata`] of one sent record once the broker
/// acknowledged its batch, or to the error that made delivery fail.
/// Dropping it does not cancel the send.
#[must_use = "dropping the future does not cancel the send, but its result is the only delivery report"]
pub struct DeliveryFuture {
    outcome: Arc<BatchOutcome>,
    partition: i32,
    index: i32,
    timestamp: i64,
    waker_slot: Option<usize>,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("partition", &self.partition)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl DeliveryFuture {
    pub(crate) fn new(
        outcome: Arc<BatchOutcome>,
        partition: i32,
        index: i32,
        timestamp: i64,
    ) -> Self {
        DeliveryFuture {
            outcome,
            partition,
            index,
            timestamp,
            waker_slot: None,
        }
    }

    /// The partition the record was assigned to (known before delivery).
    pub fn partition(&self) -> i32 {
        self.partition
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.outcome
            .poll_result(cx, &mut this.waker_slot)
            .map(|result| result.map(|ack| ack.record(this.partition, this.index, this.timestamp)))
    }
}

/// A batch still accepting records.
pub(crate) struct OpenBatch {
    pub id: u64,
    pub builder: RecordBatchBuilder,
    pub outcome: Arc<BatchOutcome>,
    pub created: Instant,
    pub reserved_bytes: usize,
}

/// A built batch, waiting to be sent, in flight, or waiting to be retried.
pub(crate) struct ProducerBatch {
    /// Creation order within the producer; retries are re-queued by it.
    pub id: u64,
    pub topic: Arc<str>,
    pub partition: i32,
    pub bytes: Bytes,
    pub records: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub outcome: Arc<BatchOutcome>,
    pub created: Instant,
    pub reserved_bytes: usize,
    pub attempts: u32,
    /// Whether an earlier batch of the partition was still unanswered when
    /// this one was last sent: then an OUT_OF_ORDER_SEQUENCE_NUMBER answer
    /// means the broker saw this one first, not that it lost our state.
    pub sent_behind_others: bool,
    pub retry_at: Option<Instant>,
    pub last_error: Option<Error>,
}

impl ProducerBatch {
    /// The sequence number of the batch's last record.
    pub fn last_sequence(&self) -> i32 {
        add_sequence(self.base_sequence, self.records - 1)
    }

    /// Rewrites the producer id, epoch and base sequence after an epoch
    /// bump. These fields are covered by the CRC, so it is recomputed. The
    /// buffer is reused when no one else holds it (the usual case: a batch
    /// waiting in the queue).
    pub fn restamp(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        let bytes = std::mem::take(&mut self.bytes);
        self.bytes = restamp(bytes, producer_id, producer_epoch, base_sequence);
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }
}

/// Sequence numbers wrap from `i32::MAX` to 0, as Kafka's do.
pub(crate) fn add_sequence(sequence: i32, delta: i32) -> i32 {
    ((i64::from(sequence) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32
}

// Byte offsets of the producer fields in a RecordBatch v2 header; see
// skiff_protocol::batch for the layout.
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const _: () = assert!(BASE_SEQUENCE_AT + 4 == 57 && CRC_OFFSET + 4 == CRC_COVERED_FROM);

/// Rewrites a built batch's producer id, epoch and base sequence.
pub(crate) fn restamp(
    bytes: Bytes,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Bytes {
    let mut buf = bytes
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    assert!(
        buf.len() >= skiff_protocol::batch::BATCH_HEADER_BYTES,
        "restamp of a batch shorter than its header"
    );
    buf[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    buf[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    buf[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = skiff_protocol::batch::crc32c(&buf[CRC_COVERED_FROM..]);
    buf[CRC_OFFSET..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use skiff_protocol::batch::{RecordBatchBuilderConfig, RecordBatchView};

    /// A restamped batch carries the new producer fields and a valid CRC,
    /// and its records are untouched.
    #[test]
    fn restamp_rewrites_producer_fields_and_crc() {
        let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig {
            producer_id: 5,
            producer_epoch: 0,
            base_sequence: 10,
            ..Default::default()
        });
        builder.append(1, Some(b"k"), Some(b"v"), &[]);
        builder.append(2, None, Some(b"w"), &[]);
        let built = builder.build().unwrap();
        let stamped = restamp(built, 9, 3, 0);
        let view = RecordBatchView::new(stamped).unwrap();
        view.validate().unwrap();
        let header = view.header();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (9, 3, 0)
        );
        let values: Vec<_> = view.records().unwrap().map(|r| r.unwrap().value).collect();
        assert_eq!(values[1].as_deref(), Some(&b"w"[..]));
    }

    /// Sequences wrap to zero after i32::MAX.
    #[test]
    fn sequences_wrap() {
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(add_sequence(4, 5), 9);
    }

    /// Every record's future resolves with its own offset once the batch
    /// completes, whether it was polled before or after completion.
    #[tokio::test]
    async fn futures_resolve_per_record() {
        let outcome = Arc::new(BatchOutcome::default());
        let first = DeliveryFuture::new(Arc::clone(&outcome), 2, 0, 100);
        let second = DeliveryFuture::new(Arc::clone(&outcome), 2, 1, 101);
        let waiting = tokio::spawn(first);
        tokio::task::yield_now().await;
        outcome.complete(Ok(BatchAck {
            base_offset: 40,
            log_append_time_ms: -1,
        }));
        let first = waiting.await.unwrap().unwrap();
        let second = second.await.unwrap();
        assert_eq!((first.offset, first.timestamp), (40, 100));
        assert_eq!(
            (second.partition, second.offset, second.timestamp),
            (2, 41, 101)
        );
    }

    proptest::proptest! {
        /// Restamping any batch, in any codec, gives a batch that validates,
        /// carries the new producer fields, and holds the same records.
        #[test]
        fn restamp_keeps_records_and_validates(
            values in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 1..20),
            codec in 0usize..5,
            producer_id in 0i64..i64::MAX,
            producer_epoch in 0i16..i16::MAX,
            base_sequence in 0i32..i32::MAX,
        ) {
            let compression = skiff_protocol::batch::Compression::ALL[codec];
            let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig { compression, ..Default::default() });
            for (i, value) in values.iter().enumerate() {
                builder.append(i as i64, None, Some(value), &[]);
            }
            let stamped = restamp(builder.build().unwrap(), producer_id, producer_epoch, base_sequence);
            let view = RecordBatchView::new(stamped).unwrap();
            view.validate().unwrap();
            let header = view.header();
            proptest::prop_assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (producer_id, producer_epoch, base_sequence));
            let read: Vec<Vec<u8>> = view.records().unwrap().map(|r| r.unwrap().value.unwrap().to_vec()).collect();
            proptest::prop_assert_eq!(read, values);
        }
    }
}
