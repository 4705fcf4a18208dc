//! Idempotent producer state of one partition (KIP-98).
//!
//! For each producer id the partition remembers the producer's epoch and the
//! last [`BATCH_METADATA_KEPT`] batches it appended (first and last sequence,
//! offsets), as Kafka's `ProducerStateManager` does. That is enough to answer
//! a retried batch with its original offset instead of appending it twice,
//! to refuse a gap in the sequence, and to fence a producer whose epoch is
//! older than one already seen.
//!
//! The table is derived from the log: on start the broker replays every
//! batch header (`PartitionLog::scan_headers`) through [`ProducerTable::record`].
//! A pure state machine with no I/O, so the rules are unit-tested here.

use std::collections::{HashMap, VecDeque};

use skiff_protocol::batch::BatchHeader;

/// Batches remembered per producer (Kafka's client keeps at most 5 in flight).
pub const BATCH_METADATA_KEPT: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMetadata {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data: append it, then [`ProducerTable::record`] it.
    Append,
    /// A retry of a batch already in the log at `base_offset`: answer with
    /// that offset and append nothing.
    Duplicate { base_offset: i64 },
}

/// Why a batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// Kafka's INVALID_PRODUCER_EPOCH: a newer epoch of this producer id has written here.
    #[error(
        "producer {producer_id} epoch {epoch} is older than the current epoch {current_epoch}"
    )]
    Fenced {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
    /// Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER: a gap (or a reordering) in the sequence.
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
}

/// Sequence numbers wrap from `i32::MAX` to 0, as in Kafka.
fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

/// Producer states of one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerTable {
    pub fn new() -> Self {
        ProducerTable::default()
    }

    /// Number of producer ids with state here.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Largest producer id seen (for the id allocator after a restart).
    pub fn max_producer_id(&self) -> Option<i64> {
        self.producers.keys().copied().max()
    }

    /// Decides whether the batch described by `header` may be appended.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if header.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // No state (a new producer, or its batches were all deleted by
            // retention): Kafka accepts any sequence here.
            return Ok(SequenceCheck::Append);
        };
        let epoch = header.producer_epoch;
        if epoch < entry.epoch {
            return Err(SequenceError::Fenced {
                producer_id: header.producer_id,
                epoch,
                current_epoch: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            // A bumped epoch restarts the sequence at zero.
            if header.base_sequence != 0 {
                return Err(SequenceError::OutOfOrder {
                    producer_id: header.producer_id,
                    expected: 0,
                    got: header.base_sequence,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        let last_sequence = header.last_sequence();
        if let Some(previous) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: previous.base_offset,
            });
        }
        let Some(last) = entry.batches.back() else {
            return Ok(SequenceCheck::Append);
        };
        let expected = next_sequence(last.last_sequence);
        if header.base_sequence != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id: header.producer_id,
                expected,
                got: header.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Remembers an appended batch; `header.base_offset` is its assigned offset.
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if header.base_sequence < 0 {
            return;
        }
        if entry.batches.len() == BATCH_METADATA_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMetadata {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use skiff_protocol::batch::Attributes;

    fn batch(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        records: i32,
        base_offset: i64,
    ) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: Attributes(0),
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: records,
        }
    }

    /// A retry of any of the last five batches is a duplicate answered with its first offset.
    #[test]
    fn retry_is_duplicate_with_original_offset() {
        let mut table = ProducerTable::new();
        for i in 0..6 {
            let header = batch(7, 0, i * 2, 2, 100 + i64::from(i) * 2);
            assert_eq!(table.check(&header), Ok(SequenceCheck::Append));
            table.record(&header);
        }
        assert_eq!(
            table.check(&batch(7, 0, 10, 2, -1)),
            Ok(SequenceCheck::Duplicate { base_offset: 110 })
        );
        assert_eq!(
            table.check(&batch(7, 0, 2, 2, -1)),
            Ok(SequenceCheck::Duplicate { base_offset: 102 })
        );
        // The first batch fell out of the window: it is no longer recognised.
        assert!(matches!(
            table.check(&batch(7, 0, 0, 2, -1)),
            Err(SequenceError::OutOfOrder { expected: 12, .. })
        ));
        assert_eq!(
            table.check(&batch(7, 0, 12, 1, -1)),
            Ok(SequenceCheck::Append)
        );
    }

    /// A gap in the sequence is refused.
    #[test]
    fn gap_is_out_of_order() {
        let mut table = ProducerTable::new();
        table.record(&batch(1, 0, 0, 3, 0));
        assert_eq!(
            table.check(&batch(1, 0, 5, 1, -1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 1,
                expected: 3,
                got: 5
            })
        );
    }

    /// Once a newer epoch wrote, the old epoch is fenced; a new epoch must restart at zero.
    #[test]
    fn old_epoch_is_fenced() {
        let mut table = ProducerTable::new();
        table.record(&batch(1, 0, 0, 1, 0));
        assert!(matches!(
            table.check(&batch(1, 1, 4, 1, -1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        table.record(&batch(1, 1, 0, 1, 1));
        assert_eq!(
            table.check(&batch(1, 0, 1, 1, -1)),
            Err(SequenceError::Fenced {
                producer_id: 1,
                epoch: 0,
                current_epoch: 1
            })
        );
    }

    /// Non-idempotent batches and unknown producers are always accepted; sequences wrap.
    #[test]
    fn unknown_producer_and_wraparound() {
        let mut table = ProducerTable::new();
        assert_eq!(
            table.check(&batch(-1, -1, -1, 1, -1)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(
            table.check(&batch(9, 0, 42, 1, -1)),
            Ok(SequenceCheck::Append)
        );
        table.record(&batch(9, 0, i32::MAX, 1, 0));
        assert_eq!(
            table.check(&batch(9, 0, 0, 1, -1)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(table.max_producer_id(), Some(9));
    }
}
