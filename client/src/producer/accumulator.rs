//! Per-partition record accumulators.
//!
//! Each partition has at most one *open* batch, a RecordBatchBuilder that
//! records are encoded into as they are sent (their one copy), and a queue
//! of *sealed* batches, built and waiting for the sender. A batch is sealed
//! when it reaches `batch_size`, when its `linger` expires, or on flush.
//!
//! With idempotence, a batch's base sequence is the partition's next
//! sequence when it is sealed; since a partition's batches are sealed in
//! order and sent in order, the sequences the broker sees are contiguous.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use skiff_protocol::batch::{
    Compression, RecordBatchBuilder, RecordBatchBuilderConfig, BATCH_HEADER_BYTES,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

use super::batch::{add_sequence, BatchOutcome, OpenBatch, ProducerBatch};
use super::partitioner::next_sticky;
use crate::error::Error;

/// The producer id and epoch in use (or none without idempotence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerIdentity {
    pub id: i64,
    pub epoch: i16,
}

impl ProducerIdentity {
    pub const NONE: ProducerIdentity = ProducerIdentity {
        id: NO_PRODUCER_ID,
        epoch: NO_PRODUCER_EPOCH,
    };

    pub fn is_idempotent(&self) -> bool {
        self.id >= 0
    }
}

/// One partition's batches.
#[derive(Default)]
pub(crate) struct PartitionQueue {
    pub open: Option<OpenBatch>,
    /// Sealed batches in creation order (retries are put back in order).
    pub ready: VecDeque<ProducerBatch>,
    pub in_flight: usize,
    pub next_sequence: i32,
    /// Sequence of the last record the broker acknowledged, -1 if none yet.
    pub last_acked_sequence: i32,
    /// Set by a failed batch, cleared by the next success: while set, one
    /// batch at a time is in flight (see [`PartitionQueue::may_pipeline`]).
    pub recovering: bool,
}

impl PartitionQueue {
    fn new() -> Self {
        PartitionQueue {
            last_acked_sequence: -1,
            ..Default::default()
        }
    }

    /// Whether another batch may be sent while `in_flight` are out.
    ///
    /// Pipelining relies on the broker refusing a batch that skips a
    /// sequence. A broker does not do that for a producer it does not know
    /// yet (it accepts any first sequence, as Kafka does after retention
    /// removed a producer's state), nor can we rely on it right after a
    /// failure (the broker may have restarted). So until the broker has
    /// acknowledged a batch of the current producer id, and after any
    /// failure until the next success, a partition has one batch in flight.
    pub fn may_pipeline(&self, idempotent: bool, max_in_flight: usize) -> bool {
        if self.in_flight == 0 {
            return true;
        }
        if idempotent && (self.last_acked_sequence < 0 || self.recovering) {
            return false;
        }
        self.in_flight < max_in_flight
    }

    /// Puts a batch back for a retry, keeping creation order.
    pub fn requeue(&mut self, batch: ProducerBatch) {
        let at = self
            .ready
            .iter()
            .position(|b| b.id > batch.id)
            .unwrap_or(self.ready.len());
        self.ready.insert(at, batch);
    }
}

pub(crate) struct TopicQueues {
    pub name: Arc<str>,
    pub partitions: Vec<PartitionQueue>,
    sticky: Option<i32>,
    previous_sticky: Option<i32>,
}

/// Where a topic's queues are in the [`Accumulator`]: valid for its whole
/// life (topics are never removed), so a caller placing many records of one
/// topic looks its name up once rather than per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicSlot(usize);

/// All partitions' accumulators, guarded by the producer's lock.
pub(crate) struct Accumulator {
    /// Per topic, in order of first use.
    pub topics: Vec<TopicQueues>,
    /// Index into `topics` by name. The rest of `append` works on the index.
    topic_slots: HashMap<Arc<str>, usize>,
    /// The slot of the last topic looked up: producers mostly send runs of
    /// records to one topic, and a string compare is cheaper than a SipHash.
    last_slot: usize,
    pub identity: ProducerIdentity,
    compression: Compression,
    batch_size: usize,
    next_batch_id: u64,
    /// Ids of batches not yet completed (open, queued, or in flight).
    outstanding: BTreeSet<u64>,
    /// Batches that failed to build (a codec error): already failed,
    /// waiting for the sender to release their buffer and count them.
    pub seal_failures: Vec<SealFailure>,
    /// Buffers of completed batches, reused for new ones (as Kafka's
    /// BufferPool): a fresh batch-sized allocation comes from the allocator
    /// as untouched pages, and faulting and zeroing them cost more than
    /// filling them (11 % of all CPU with 64 partitions, in perf).
    spare_buffers: Vec<Vec<u8>>,
    /// The capacity of `spare_buffers`, in bytes.
    spare_bytes: usize,
    /// At most this much capacity is kept spare.
    spare_bytes_max: usize,
    /// Batches being filled, over all partitions.
    open_batches: usize,
}

/// With this many batches already filling, a new one checksums its records
/// as they are appended: the batches together outgrow the caches, and a
/// keyed producer over 64 partitions spent four times as long on the
/// checksum of cold batches as one filling a single batch (BENCHMARKS.md,
/// tenth session).
const CHECKSUM_WHILE_APPENDING_OPEN_BATCHES: usize = 4;

/// A record needs a new batch, and `buffer_memory` has not got the bytes
/// the batch would hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryNeeded {
    pub bytes: usize,
}

/// A batch that could not be built.
pub(crate) struct SealFailure {
    pub reserved_bytes: usize,
    pub records: i32,
    pub error: Error,
}

/// Where a record went: its batch's outcome, partition and index in the batch.
pub(crate) struct Placed<'a> {
    pub outcome: &'a Arc<BatchOutcome>,
    pub partition: i32,
    pub index: i32,
}

/// A record appended: what the caller's `placed` made of its placement.
pub(crate) struct Appended<R> {
    pub placed: R,
    /// A batch was sealed (or a new one opened): the sender should look.
    pub wake_sender: bool,
    /// A batch was sealed: it is ready to go whatever the linger.
    pub sealed: bool,
}

/// One record's fields, borrowed.
pub(crate) struct RecordParts<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    /// The record's size estimate, what a batch of its own reserves.
    pub estimated_bytes: usize,
}

impl Accumulator {
    /// `spare_bytes_max` bounds the memory held in spare batch buffers.
    pub fn new(
        identity: ProducerIdentity,
        compression: Compression,
        batch_size: usize,
        spare_bytes_max: usize,
    ) -> Self {
        Accumulator {
            spare_buffers: Vec::new(),
            spare_bytes: 0,
            spare_bytes_max,
            open_batches: 0,
            topics: Vec::new(),
            topic_slots: HashMap::new(),
            last_slot: 0,
            identity,
            compression,
            batch_size,
            next_batch_id: 0,
            outstanding: BTreeSet::new(),
            seal_failures: Vec::new(),
        }
    }

    /// The queues of `topic`, if it has any.
    #[cfg(test)]
    pub fn queues(&self, topic: &str) -> Option<&TopicQueues> {
        self.topic_slots.get(topic).map(|&slot| &self.topics[slot])
    }

    /// The queues of `topic`, if it has any.
    pub fn queues_mut(&mut self, topic: &str) -> Option<&mut TopicQueues> {
        self.topic_slots
            .get(topic)
            .map(|&slot| &mut self.topics[slot])
    }

    /// Where `topic`'s queues are, created if needed, with at least
    /// `partitions` partitions.
    pub fn topic_slot(&mut self, topic: &str, partitions: i32) -> TopicSlot {
        let slot = self.slot_of(topic);
        self.grow(slot, partitions);
        TopicSlot(slot)
    }

    /// The index of `topic`'s queues, created if needed.
    fn slot_of(&mut self, topic: &str) -> usize {
        let last = self.topics.get(self.last_slot);
        let found = if last.is_some_and(|queues| &*queues.name == topic) {
            Some(self.last_slot)
        } else {
            self.topic_slots.get(topic).copied()
        };
        let slot = match found {
            Some(slot) => slot,
            None => {
                let name: Arc<str> = Arc::from(topic);
                self.topics.push(TopicQueues {
                    name: Arc::clone(&name),
                    partitions: Vec::new(),
                    sticky: None,
                    previous_sticky: None,
                });
                self.topic_slots.insert(name, self.topics.len() - 1);
                self.topics.len() - 1
            }
        };
        self.last_slot = slot;
        slot
    }

    /// Makes room for `partitions` partitions in the queues at `slot`.
    fn grow(&mut self, slot: usize, partitions: i32) {
        let queues = &mut self.topics[slot];
        // Partitions can be added to a topic, never removed.
        while queues.partitions.len() < partitions as usize {
            queues.partitions.push(PartitionQueue::new());
        }
    }

    /// The sticky partition for keyless records of `topic`.
    #[cfg(test)]
    pub fn sticky_partition(&mut self, topic: &str, partitions: i32) -> i32 {
        let slot = self.topic_slot(topic, partitions);
        self.sticky_partition_at(slot, partitions)
    }

    /// The sticky partition for keyless records of the topic at `slot`.
    pub fn sticky_partition_at(&mut self, slot: TopicSlot, partitions: i32) -> i32 {
        let queues = &mut self.topics[slot.0];
        match queues.sticky {
            Some(partition) if partition < partitions => partition,
            _ => {
                let partition = next_sticky(queues.previous_sticky, partitions);
                queues.sticky = Some(partition);
                partition
            }
        }
    }

    /// Prefetches where a record of `bytes` would go in the open batch of
    /// `slot`'s topic and `partition` (see [`RecordBatchBuilder::prefetch_append`]);
    /// nothing if none is open.
    pub fn prefetch_append(&self, slot: TopicSlot, partition: i32, bytes: usize) {
        let Ok(partition) = usize::try_from(partition) else {
            return;
        };
        let queue = self.topics[slot.0].partitions.get(partition);
        if let Some(open) = queue.and_then(|queue| queue.open.as_ref()) {
            open.builder.prefetch_append(bytes);
        }
    }

    /// [`Self::append_at`] by the topic's name.
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub fn append<R>(
        &mut self,
        topic: &str,
        partition: i32,
        partitions: i32,
        record: &RecordParts<'_>,
        reserve: impl FnOnce(usize) -> Option<usize>,
        now: impl FnOnce() -> Instant,
        placed: impl FnOnce(Placed<'_>) -> R,
    ) -> Result<Appended<R>, MemoryNeeded> {
        let slot = self.topic_slot(topic, partitions);
        self.append_at(slot, partition, partitions, record, reserve, now, placed)
    }

    /// Appends a record to the open batch of `partition` of the topic at
    /// `slot`, sealing the open batch first if the record would overflow it.
    ///
    /// A new batch holds `batch_size` bytes of `buffer_memory` (or the
    /// `estimated_bytes` of a larger record) from when it opens until
    /// it completes, as Kafka's BufferPool does: the memory a batch buffer
    /// takes, however few records it ends up with. `reserve` is asked for
    /// them and answers how many it took, or `None` if they are not free
    /// now; then nothing changes and the caller waits for `MemoryNeeded`
    /// bytes. Records that join an open batch take nothing.
    ///
    /// `placed` is shown where the record went, before its batch may be
    /// sealed: a caller keeping runs of records of one batch takes a
    /// reference to the batch's outcome once per run, not per record (an
    /// atomic increment per record stalls on the record copy before it).
    #[allow(clippy::too_many_arguments)]
    pub fn append_at<R>(
        &mut self,
        slot: TopicSlot,
        partition: i32,
        partitions: i32,
        record: &RecordParts<'_>,
        reserve: impl FnOnce(usize) -> Option<usize>,
        // Only read when a batch is opened: a clock read per record is a
        // measurable share of the producer's time.
        now: impl FnOnce() -> Instant,
        placed: impl FnOnce(Placed<'_>) -> R,
    ) -> Result<Appended<R>, MemoryNeeded> {
        assert!(
            (0..partitions).contains(&partition),
            "partition checked by the caller"
        );
        let batch_size = self.batch_size;
        let mut wake_sender = false;
        let mut sealed = false;
        let slot = slot.0;
        self.grow(slot, partitions);
        let joined_open = match &mut self.topics[slot].partitions[partition as usize].open {
            Some(open) => open.builder.try_append(
                batch_size,
                record.timestamp,
                record.key,
                record.value,
                record.headers,
            ),
            None => false,
        };
        if !joined_open {
            let wanted = record.estimated_bytes.max(batch_size);
            let Some(reserved_bytes) = reserve(wanted) else {
                return Err(MemoryNeeded { bytes: wanted });
            };
            sealed = self.topics[slot].partitions[partition as usize]
                .open
                .is_some();
            self.seal_at(slot, partition);
            let identity = self.identity;
            let compression = self.compression;
            let queue = &mut self.topics[slot].partitions[partition as usize];
            // The sequence this batch will get when sealed, unless an epoch
            // bump intervenes (then `seal` restamps it).
            let config = RecordBatchBuilderConfig {
                compression,
                producer_id: identity.id,
                producer_epoch: identity.epoch,
                base_sequence: if identity.is_idempotent() {
                    queue.next_sequence
                } else {
                    NO_SEQUENCE
                },
                ..Default::default()
            };
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            self.outstanding.insert(id);
            let mut builder = match self.spare_buffers.pop() {
                Some(buffer) => {
                    self.spare_bytes -= buffer.capacity();
                    RecordBatchBuilder::with_buffer(config, buffer)
                }
                None => RecordBatchBuilder::with_capacity(config, batch_size),
            };
            if self.open_batches >= CHECKSUM_WHILE_APPENDING_OPEN_BATCHES {
                builder.checksum_while_appending();
            }
            self.open_batches += 1;
            let queue = &mut self.topics[slot].partitions[partition as usize];
            builder.append(record.timestamp, record.key, record.value, record.headers);
            queue.open = Some(OpenBatch {
                id,
                builder,
                outcome: Arc::new(BatchOutcome::default()),
                created: now(),
                reserved_bytes,
            });
            wake_sender = true;
        }
        let queue = &mut self.topics[slot].partitions[partition as usize];
        let open = queue
            .open
            .as_mut()
            .unwrap_or_else(|| unreachable!("joined or opened above"));
        let placed = placed(Placed {
            outcome: &open.outcome,
            partition,
            index: open.builder.records_count() - 1,
        });
        if open.builder.estimated_bytes() >= batch_size {
            self.seal_at(slot, partition);
            wake_sender = true;
            sealed = true;
        }
        Ok(Appended {
            placed,
            wake_sender,
            sealed,
        })
    }

    /// Builds the open batch of a partition and queues it. A batch that
    /// fails to build (a codec error) is failed at once and recorded in
    /// `seal_failures`.
    pub fn seal(&mut self, topic: &str, partition: i32) {
        if let Some(&slot) = self.topic_slots.get(topic) {
            self.seal_at(slot, partition);
        }
    }

    fn seal_at(&mut self, slot: usize, partition: i32) {
        let _ = self.try_seal(slot, partition);
    }

    fn try_seal(&mut self, slot: usize, partition: i32) -> Option<()> {
        let identity = self.identity;
        let queues = &mut self.topics[slot];
        let queue = queues.partitions.get_mut(partition as usize)?;
        let open = queue.open.take()?;
        self.open_batches -= 1;
        if queues.sticky == Some(partition) {
            queues.previous_sticky = Some(partition);
            queues.sticky = None;
        }
        let records = open.builder.records_count();
        let stamped = *open.builder.config();
        let bytes = match open.builder.build() {
            Ok(bytes) => bytes,
            Err(error) => {
                let error = Error::Encode(error);
                open.outcome.complete(Err(error.clone()));
                self.outstanding.remove(&open.id);
                self.seal_failures.push(SealFailure {
                    reserved_bytes: open.reserved_bytes,
                    records,
                    error,
                });
                return Some(());
            }
        };
        let id = open.id;
        let base_sequence = if identity.is_idempotent() {
            queue.next_sequence
        } else {
            NO_SEQUENCE
        };
        let mut batch = ProducerBatch {
            id,
            topic: Arc::clone(&queues.name),
            partition,
            bytes,
            records,
            producer_id: stamped.producer_id,
            producer_epoch: stamped.producer_epoch,
            base_sequence: stamped.base_sequence,
            outcome: open.outcome,
            created: open.created,
            reserved_bytes: open.reserved_bytes,
            attempts: 0,
            sent_behind_others: false,
            retry_at: None,
            last_error: None,
        };
        if identity.is_idempotent() {
            let current = (identity.id, identity.epoch, base_sequence);
            if (batch.producer_id, batch.producer_epoch, batch.base_sequence) != current {
                batch.restamp(identity.id, identity.epoch, base_sequence);
            }
            queue.next_sequence = add_sequence(base_sequence, records);
        }
        queue.ready.push_back(batch);
        Some(())
    }

    /// Batches not yet completed (open, queued, or in flight).
    pub fn incomplete_batches(&self) -> usize {
        self.outstanding.len()
    }

    /// The id the next batch will get: batches created so far have smaller ids.
    pub fn next_batch_id(&self) -> u64 {
        self.next_batch_id
    }

    /// Whether every batch with an id below `id` has completed.
    pub fn completed_before(&self, id: u64) -> bool {
        self.outstanding.first().is_none_or(|first| *first >= id)
    }

    /// Marks a batch completed.
    /// Keeps the buffer of a completed batch for a later one, if nothing
    /// else holds it and it is big enough for a full batch.
    pub fn recycle(&mut self, batch_bytes: Bytes) {
        let Ok(buffer) = batch_bytes.try_into_mut() else {
            return;
        };
        let buffer = Vec::from(buffer);
        let capacity = buffer.capacity();
        if capacity >= BATCH_HEADER_BYTES + self.batch_size
            && self.spare_bytes + capacity <= self.spare_bytes_max
        {
            self.spare_bytes += capacity;
            self.spare_buffers.push(buffer);
        }
    }

    pub fn complete(&mut self, id: u64) {
        self.outstanding.remove(&id);
    }

    /// After an epoch bump: every queued batch gets the new identity and
    /// sequences from zero, in order, and acknowledged state is forgotten.
    pub fn resequence(&mut self, identity: ProducerIdentity) {
        self.identity = identity;
        for queues in &mut self.topics {
            for queue in &mut queues.partitions {
                let mut sequence = 0;
                for batch in &mut queue.ready {
                    batch.restamp(identity.id, identity.epoch, sequence);
                    sequence = add_sequence(sequence, batch.records);
                }
                queue.next_sequence = sequence;
                queue.last_acked_sequence = -1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use skiff_protocol::batch::RecordBatchView;

    fn record(value: &[u8]) -> RecordParts<'_> {
        RecordParts {
            timestamp: 1,
            key: None,
            value: Some(value),
            headers: &[],
            estimated_bytes: value.len() + 30,
        }
    }

    /// A completed batch's buffer is reused by the next batch opened, and
    /// its bytes are the new batch's; shared, small or surplus buffers are
    /// dropped.
    #[test]
    fn completed_batch_buffers_are_reused() {
        let mut acc = Accumulator::new(ProducerIdentity::NONE, Compression::None, 200, 400);
        let now = Instant::now();
        acc.append("t", 0, 1, &record(b"first"), Some, || now, |_| ())
            .unwrap();
        acc.seal("t", 0);
        let first = acc.topics[0].partitions[0].ready.pop_front().unwrap();
        let first_address = first.bytes.as_ptr();
        let shared = first.bytes.clone();
        acc.recycle(first.bytes);
        assert!(
            acc.spare_buffers.is_empty(),
            "a buffer still shared is not reused"
        );
        acc.recycle(shared);
        assert_eq!(acc.spare_buffers.len(), 1);

        acc.append("t", 0, 1, &record(b"second"), Some, || now, |_| ())
            .unwrap();
        assert!(acc.spare_buffers.is_empty());
        acc.seal("t", 0);
        let second = acc.topics[0].partitions[0].ready.pop_front().unwrap();
        assert_eq!(second.bytes.as_ptr(), first_address);
        let view = RecordBatchView::new(second.bytes.clone()).unwrap();
        view.validate().unwrap();
        let values: Vec<_> = view.records().unwrap().map(|r| r.unwrap().value).collect();
        assert_eq!(values, vec![Some(Bytes::from_static(b"second"))]);

        acc.recycle(Bytes::from(vec![0u8; 10]));
        assert!(acc.spare_buffers.is_empty(), "too small for a batch");
        for _ in 0..3 {
            acc.recycle(Bytes::from(Vec::with_capacity(300)));
        }
        assert_eq!(acc.spare_buffers.len(), 1, "at most 400 spare bytes");
        acc.append("t", 0, 1, &record(b"third"), Some, || now, |_| ())
            .unwrap();
        assert_eq!(acc.spare_bytes, 0, "the spare taken is no longer counted");
    }

    /// Once four batches are filling, further ones checksum their records
    /// as they are appended; every batch still carries a valid CRC.
    #[test]
    fn many_open_batches_checksum_while_appending() {
        let mut acc = Accumulator::new(ProducerIdentity::NONE, Compression::None, 64 * 1024, 0);
        let now = Instant::now();
        let value = [3u8; 5_000];
        for partition in 0..6 {
            for _ in 0..4 {
                acc.append("t", partition, 8, &record(&value), Some, || now, |_| ())
                    .unwrap();
            }
        }
        let checksumming: Vec<bool> = acc.topics[0].partitions[..6]
            .iter()
            .map(|queue| {
                queue
                    .open
                    .as_ref()
                    .unwrap()
                    .builder
                    .checksums_while_appending()
            })
            .collect();
        assert_eq!(checksumming, [false, false, false, false, true, true]);
        for partition in 0..6 {
            acc.seal("t", partition);
            let batch = acc.topics[0].partitions[partition as usize]
                .ready
                .pop_front()
                .unwrap();
            let view = RecordBatchView::new(batch.bytes).unwrap();
            view.validate().unwrap();
            assert_eq!(view.records().unwrap().count(), 4);
        }
        assert_eq!(acc.open_batches, 0);
        acc.append("t", 7, 8, &record(&value), Some, || now, |_| ())
            .unwrap();
        assert!(!acc.topics[0].partitions[7]
            .open
            .as_ref()
            .unwrap()
            .builder
            .checksums_while_appending());
    }

    /// Batches seal at batch_size and get contiguous sequences per partition.
    #[test]
    fn batches_seal_at_size_with_contiguous_sequences() {
        let identity = ProducerIdentity { id: 3, epoch: 1 };
        let mut acc = Accumulator::new(identity, Compression::None, 200, 0);
        let now = Instant::now();
        let value = [7u8; 50];
        for _ in 0..7 {
            acc.append("t", 0, 2, &record(&value), Some, || now, |_| ())
                .unwrap();
        }
        acc.seal("t", 0);
        let queue = &acc.queues("t").unwrap().partitions[0];
        let mut expected_sequence = 0;
        let mut total = 0;
        for batch in &queue.ready {
            let view = RecordBatchView::new(batch.bytes.clone()).unwrap();
            view.validate().unwrap();
            let header = view.header();
            assert_eq!((header.producer_id, header.producer_epoch), (3, 1));
            assert_eq!(header.base_sequence, expected_sequence);
            assert!(batch.bytes.len() <= 200 || header.records_count == 1);
            expected_sequence += header.records_count;
            total += header.records_count;
        }
        assert!(
            queue.ready.len() >= 2,
            "7 records of 50 bytes do not fit one 200-byte batch"
        );
        assert_eq!(total, 7);
        assert_eq!(queue.next_sequence, 7);
        assert_eq!(acc.incomplete_batches(), queue.ready.len());
    }

    /// An append reports a sealed batch when it sealed one (the open batch
    /// it did not fit, or its own batch, now full), and a batch it only
    /// opened as a wake-up without a seal.
    #[test]
    fn appends_report_seals_apart_from_opens() {
        let mut acc = Accumulator::new(ProducerIdentity::NONE, Compression::None, 200, 0);
        let now = Instant::now();
        let mut append = |value: &[u8]| {
            let appended = acc
                .append("t", 0, 1, &record(value), Some, || now, |_| ())
                .unwrap();
            (appended.wake_sender, appended.sealed)
        };
        assert_eq!(append(&[1; 50]), (true, false), "opened, nothing sealed");
        assert_eq!(append(&[2; 50]), (false, false));
        assert_eq!(
            append(&[3; 150]),
            (true, true),
            "did not fit: sealed, opened"
        );
        assert_eq!(
            append(&[4; 200]),
            (true, true),
            "did not fit, and full at once"
        );
        assert_eq!(append(&[5; 10]), (true, false), "opened after a seal");
    }

    /// A batch holds batch_size of buffer_memory from when it opens, and
    /// records that join it take nothing; a record that needs a new batch
    /// while the memory is not free changes nothing.
    #[test]
    fn each_batch_reserves_batch_size_once() {
        let mut acc = Accumulator::new(ProducerIdentity::NONE, Compression::None, 200, 0);
        let now = Instant::now();
        let mut asked = Vec::new();
        let mut take = |wanted| {
            asked.push(wanted);
            Some(wanted)
        };
        for _ in 0..3 {
            acc.append("t", 0, 1, &record(b"abc"), &mut take, || now, |_| ())
                .unwrap();
        }
        let refused = acc.append("t", 1, 2, &record(b"abc"), |_| None, || now, |_| ());
        assert_eq!(refused.err(), Some(MemoryNeeded { bytes: 200 }));
        assert!(acc.queues("t").unwrap().partitions[1].open.is_none());
        let big = [0u8; 500];
        acc.append("t", 0, 1, &record(&big), &mut take, || now, |_| ())
            .unwrap();
        assert_eq!(
            asked,
            [200, 530],
            "one reservation per batch, a larger record its own size"
        );
        let reserved: Vec<usize> = acc.queues("t").unwrap().partitions[0]
            .ready
            .iter()
            .map(|b| b.reserved_bytes)
            .collect();
        assert_eq!(
            reserved,
            [200, 530],
            "sealed batches carry their reservation"
        );
    }

    /// Keyless records stick to one partition until its batch is sealed.
    #[test]
    fn sticky_partition_changes_when_its_batch_seals() {
        let mut acc = Accumulator::new(ProducerIdentity::NONE, Compression::None, 1 << 20, 0);
        let first = acc.sticky_partition("t", 8);
        assert_eq!(acc.sticky_partition("t", 8), first);
        acc.append("t", first, 8, &record(b"x"), Some, Instant::now, |_| ())
            .unwrap();
        assert_eq!(acc.sticky_partition("t", 8), first);
        acc.seal("t", first);
        let second = acc.sticky_partition("t", 8);
        assert_ne!(first, second);
    }

    /// Resequencing after an epoch bump renumbers queued batches from zero.
    #[test]
    fn resequence_restarts_at_zero() {
        let mut acc = Accumulator::new(
            ProducerIdentity { id: 1, epoch: 0 },
            Compression::None,
            1,
            0,
        );
        let now = Instant::now();
        for _ in 0..3 {
            acc.append("t", 0, 1, &record(b"abc"), Some, || now, |_| ())
                .unwrap();
        }
        acc.queues_mut("t").unwrap().partitions[0].ready.pop_front();
        acc.resequence(ProducerIdentity { id: 1, epoch: 1 });
        let queue = &acc.queues("t").unwrap().partitions[0];
        let sequences: Vec<i32> = queue.ready.iter().map(|b| b.base_sequence).collect();
        assert_eq!(sequences, vec![0, 1]);
        for batch in &queue.ready {
            let view = RecordBatchView::new(batch.bytes.clone()).unwrap();
            view.validate().unwrap();
            assert_eq!(view.header().producer_epoch, 1);
        }
        assert_eq!(queue.next_sequence, 2);
    }

    /// Until the broker has acknowledged the producer on a partition, and
    /// after a failure until the next success, a partition has one batch in flight.
    #[test]
    fn pipelining_waits_for_a_known_producer() {
        let mut queue = PartitionQueue::new();
        assert!(queue.may_pipeline(true, 5));
        queue.in_flight = 1;
        assert!(!queue.may_pipeline(true, 5), "no ack yet");
        assert!(
            queue.may_pipeline(false, 5),
            "without idempotence only max_in_flight counts"
        );
        queue.last_acked_sequence = 9;
        assert!(queue.may_pipeline(true, 5));
        queue.recovering = true;
        assert!(!queue.may_pipeline(true, 5), "recovering from a failure");
        queue.recovering = false;
        queue.in_flight = 5;
        assert!(!queue.may_pipeline(true, 5));
    }
}
