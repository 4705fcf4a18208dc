//! Kafka RecordBatch v2, byte for byte.
//!
//! Layout (all integers big-endian; KIP-98, Kafka's `DefaultRecordBatch`):
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset
//!      8     4  batch_length            bytes that follow this field
//!     12     4  partition_leader_epoch
//!     16     1  magic                   = 2
//!     17     4  crc                     CRC-32C of bytes 21..end
//!     21     2  attributes              bits 0-2 compression, 3 timestamp type,
//!                                       4 transactional, 5 control, 6 delete horizon
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  records_count
//!     61     …  records                 possibly compressed as one block
//! ```
//!
//! The CRC starts at the attributes, so a broker can rewrite `base_offset`
//! and `partition_leader_epoch` in place without recomputing it.

mod attributes;
mod builder;
pub mod compression;
mod crc;
mod reader;
mod record;
pub mod varint;
mod view;

pub use attributes::{Attributes, Compression, TimestampType};
pub use builder::{RecordBatchBuilder, RecordBatchBuilderConfig};
pub use crc::crc32c;
pub use reader::BatchReader;
pub use record::{
    Header, HeaderIter, HeaderRefs, Record, RecordIter, RecordRef, RecordRefIter, RecordShape,
};
pub use view::{
    set_base_offset, set_log_append_time, set_partition_leader_epoch, BatchHeader, RecordBatchView,
    RecordsChecked,
};

/// Size of the fixed batch header that precedes the records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before (and including) `batch_length`: a batch is `LOG_OVERHEAD_BYTES + batch_length` long.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only record batch format we read and write.
pub const MAGIC_V2: i8 = 2;
/// Offset of the CRC field, and of the first byte the CRC covers.
pub const CRC_OFFSET: usize = 17;
pub const CRC_COVERED_FROM: usize = 21;
/// No producer id (non-idempotent producer).
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// Largest batch we accept anywhere (Kafka's `message.max.bytes` tops out
/// far below this; this is a sanity cap for corrupt length fields).
pub const BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Largest decompressed records block we agree to inflate.
pub const DECOMPRESSED_BYTES_MAX: usize = 256 * 1024 * 1024;

const _: () = assert!(BATCH_HEADER_BYTES == 61);
const _: () = assert!(CRC_COVERED_FROM == CRC_OFFSET + 4);

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A built batch parses back with the same header fields and records, and its CRC holds.
    #[test]
    fn builder_output_reads_back() {
        for compression in Compression::ALL {
            let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig {
                compression,
                producer_id: 7,
                producer_epoch: 1,
                base_sequence: 40,
                ..Default::default()
            });
            builder.append(1_000, Some(b"k1"), Some(b"v1"), &[(b"h", Some(b"x"))]);
            builder.append(1_005, None, None, &[]);
            let bytes = builder.build().unwrap();
            let view = RecordBatchView::new(bytes.clone()).unwrap();
            view.validate().unwrap();
            view.validate_records().unwrap();
            let header = view.header();
            assert_eq!(header.records_count, 2);
            assert_eq!(header.last_offset_delta, 1);
            assert_eq!(header.base_timestamp, 1_000);
            assert_eq!(header.max_timestamp, 1_005);
            assert_eq!(header.producer_id, 7);
            assert_eq!(header.last_sequence(), 41);
            let records: Vec<Record> = view.records().unwrap().map(Result::unwrap).collect();
            assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(records[0].value.as_deref(), Some(&b"v1"[..]));
            let headers: Vec<Header> = records[0].headers.clone().map(Result::unwrap).collect();
            assert_eq!(
                headers,
                vec![Header {
                    key: Bytes::from_static(b"h"),
                    value: Some(Bytes::from_static(b"x"))
                }]
            );
            assert_eq!(records[1].offset, 1);
            assert_eq!(records[1].timestamp, 1_005);
            assert_eq!(records[1].key, None);

            let mut copy = bytes.to_vec();
            set_base_offset(&mut copy, 500);
            set_partition_leader_epoch(&mut copy, 3);
            let moved = RecordBatchView::new(Bytes::from(copy)).unwrap();
            moved.validate().unwrap();
            assert_eq!(moved.header().base_offset, 500);
            assert_eq!(moved.header().last_offset(), 501);
        }
    }
}
