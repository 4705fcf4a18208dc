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

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values from Apache Kafka's own test of `Utils.murmur2`:
    /// clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
    /// `testMurmur2` (the keys are ASCII, so `getBytes()` is the same in any
    /// default charset).
    const KAFKA_MURMUR2_GOLDEN: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];

    /// murmur2 returns exactly what the Java client's `Utils.murmur2` returns.
    #[test]
    fn murmur2_matches_kafka_utils_test() {
        for (key, expected) in KAFKA_MURMUR2_GOLDEN {
            assert_eq!(
                murmur2(key),
                expected,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    /// partition_for_key is `toPositive(murmur2(key)) % partitions`, as in the Java
    /// client's `BuiltInPartitioner.partitionForKey`. Expected partitions were
    /// worked out by hand from the UtilsTest hashes above (toPositive is
    /// `h & 0x7fffffff`), e.g. "21": -973932308 & 0x7fffffff = 1173551340,
    /// 1173551340 % 100 = 40.
    #[test]
    fn partition_for_key_matches_the_java_partitioner() {
        let expected: [(&[u8], [i32; 5]); 6] = [
            (b"21", [0, 0, 3, 0, 40]),
            (b"foobar", [0, 0, 0, 6, 66]),
            (b"a-little-bit-long-string", [0, 2, 1, 8, 12]),
            (b"a-little-bit-longer-string", [0, 2, 0, 11, 19]),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                [0, 2, 3, 5, 77],
            ),
            (b"abc", [0, 0, 4, 3, 7]),
        ];
        for (key, partitions) in expected {
            for (count, want) in [1, 3, 7, 12, 100].into_iter().zip(partitions) {
                assert_eq!(partition_for_key(key, count), want, "{key:?} over {count}");
            }
        }
    }

    /// Every key lands in 0..partitions: negative hashes are masked, never negated.
    #[test]
    fn partition_is_always_in_range() {
        for i in 0u32..10_000 {
            let p = partition_for_key(&i.to_le_bytes(), 7);
            assert!((0..7).contains(&p));
        }
    }
}
