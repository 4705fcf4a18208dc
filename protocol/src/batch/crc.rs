//! CRC-32C (Castagnoli), the checksum of every RecordBatch v2.
//!
//! Every produced batch is checksummed twice (client build, broker check)
//! and every fetched one once more, so this is on both hot paths. crc-fast
//! folds 64 bytes at a time with carry-less multiplies (VPCLMULQDQ on
//! AVX-512 machines, PCLMULQDQ or ARM PMULL elsewhere) next to the `crc32`
//! instruction; the `crc32c` crate uses that instruction alone. On this
//! project's 2-vCPU VM, from cache: 16 KiB 68.9 against 17.3 GB/s, 1 MiB
//! 76.8 against 20.6 GB/s, 1 KiB 30.1 against 13.1 GB/s.

/// CRC-32C of `bytes`, as RecordBatch v2 stores it (attributes to the end).
pub fn crc32c(bytes: &[u8]) -> u32 {
    // A CRC-32 fits in the low 32 bits of crc-fast's u64 result.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn check_value_of_the_catalogue() {
        // The CRC-32/ISCSI check value: CRC of the ASCII digits 1 to 9.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    proptest! {
        /// Agrees with the `crc32c` crate for every length and alignment,
        /// so the SIMD paths' tails and heads are covered.
        #[test]
        fn agrees_with_the_reference(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            skip in 0usize..64,
        ) {
            let slice = &data[skip.min(data.len())..];
            prop_assert_eq!(crc32c(slice), ::crc32c::crc32c(slice));
        }
    }
}
