//! Choosing a record's partition.
//!
//! The default follows the Java client: a keyed record goes to
//! `murmur2(key) % partitions` (see `skiff_protocol::partition`), so the
//! same key lands on the same partition whichever Kafka client wrote it;
//! a record without a key is left to the producer's *uniform sticky*
//! choice (KIP-480): all keyless records of a topic go to one partition
//! until that partition's batch is closed, then the producer picks another
//! at random. Sticking fills batches instead of spreading tiny ones.

/// Picks partitions for records. `None` leaves the record to the
/// producer's sticky choice.
///
/// The producer asks once per record, in the order the records are sent,
/// also when a send waits for buffer memory and places the record later;
/// `send_many` asks about a record one record early (to prefetch where it
/// will go), so an answer must not depend on the records before it having
/// been placed yet.
pub trait Partitioner: Send + Sync + std::fmt::Debug {
    /// The partition for a record of `topic`, which has `partitions`
    /// partitions (at least one). Must return a value in `0..partitions`, or `None`.
    fn partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partitions: i32,
    ) -> Option<i32>;
}

/// Java's default: murmur2 for keys, sticky for keyless records.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPartitioner;

impl Partitioner for DefaultPartitioner {
    fn partition(
        &self,
        _topic: &str,
        key: Option<&[u8]>,
        _value: Option<&[u8]>,
        partitions: i32,
    ) -> Option<i32> {
        key.map(|key| skiff_protocol::partition::partition_for_key(key, partitions))
    }
}

/// Picks the next sticky partition: uniformly at random, avoiding the
/// previous one when there is a choice.
pub(crate) fn next_sticky(previous: Option<i32>, partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    if partitions == 1 {
        return 0;
    }
    match previous {
        Some(previous) if (0..partitions).contains(&previous) => {
            let step = rand::random_range(1..partitions);
            (previous + step) % partitions
        }
        _ => rand::random_range(0..partitions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys map to the Java client's partitions (golden values from
    /// Kafka's `Utils.murmur2`), and keyless records are left to stickiness.
    #[test]
    fn default_partitioner_uses_murmur2_for_keys() {
        let partitioner = DefaultPartitioner;
        // Java: Utils.toPositive(Utils.murmur2("21".getBytes())) % 3 == 1
        // (murmur2("21") = -973932308).
        assert_eq!(
            partitioner.partition("t", Some(b"21"), None, 3),
            Some(((-973_932_308i32) & 0x7fff_ffff) % 3)
        );
        assert_eq!(partitioner.partition("t", None, Some(b"v"), 3), None);
    }

    /// The next sticky partition is always in range and never the previous one.
    #[test]
    fn sticky_switch_moves_on() {
        for _ in 0..200 {
            let next = next_sticky(Some(2), 4);
            assert!((0..4).contains(&next) && next != 2);
        }
        assert_eq!(next_sticky(Some(0), 1), 0);
        let mut seen = [false; 4];
        for _ in 0..400 {
            seen[next_sticky(None, 4) as usize] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "uniform choice reaches every partition"
        );
    }
}
