//! The partitioning contract: a key lands on the same partition whichever
//! client produced it.
//!
//! Kafka's Java client (`BuiltInPartitioner.partitionForKey`) computes
//! `toPositive(murmur2(key)) % numPartitions`, where `murmur2` is the 32-bit
//! MurmurHash2 with seed `0x9747b28c` reading little-endian words, and
//! `toPositive(n) = n & 0x7fffffff`.

/// Kafka's murmur2 of `key`, as the Java client's `Utils.murmur2` returns it.
pub fn murmur2(key: &[u8]) -> i32 {
    murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32
}

/// The partition the Java client's default partitioner picks for `key`.
///
/// # Panics
/// If `partitions` is not positive: a topic always has at least one
/// partition, so a caller passing zero has a bug.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(
        partitions > 0,
        "a topic has at least one partition, got {partitions}"
    );
    (murmur2(key) & 0x7fff_ffff) % partitions
}
