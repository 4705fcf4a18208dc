//! A zero-copy view over one encoded record batch.

use bytes::Bytes;

use super::attributes::{Attributes, Compression, TimestampType};
use super::record::RecordIter;
use super::{
    compression, BATCH_BYTES_MAX, BATCH_HEADER_BYTES, CRC_COVERED_FROM, CRC_OFFSET,
    DECOMPRESSED_BYTES_MAX, LOG_OVERHEAD_BYTES, MAGIC_V2,
};
use crate::error::{DecodeError, Result};

/// The fixed 61-byte header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: Attributes,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}
fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}
fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(word)
}

impl BatchHeader {
    /// Reads the total size of the batch starting at `buf[0]` from its first
    /// 12 bytes. `Ok(None)` when fewer than 12 bytes are present.
    pub fn peek_total_bytes(buf: &[u8]) -> Result<Option<usize>> {
        if buf.len() < LOG_OVERHEAD_BYTES {
            return Ok(None);
        }
        let batch_length = be_i32(buf, 8);
        let min = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
        if batch_length < min || batch_length as usize > BATCH_BYTES_MAX {
            return Err(DecodeError::InvalidLength {
                field: "batch_length",
                length: i64::from(batch_length),
                offset: 8,
            });
        }
        Ok(Some(LOG_OVERHEAD_BYTES + batch_length as usize))
    }

    /// Decodes the header at the start of `buf`, checking the magic byte and
    /// that the counts are not negative. Does not check the CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(DecodeError::UnexpectedEof {
                offset: 0,
                need: BATCH_HEADER_BYTES,
                have: buf.len(),
            });
        }
        let magic = buf[16] as i8;
        if magic != MAGIC_V2 {
            return Err(DecodeError::UnsupportedMagic { magic });
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: be_i32(buf, CRC_OFFSET) as u32,
            attributes: Attributes(be_i16(buf, 21)),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        BatchHeader::peek_total_bytes(buf)?;
        if header.records_count < 0 {
            return Err(DecodeError::InvalidLength {
                field: "records_count",
                length: i64::from(header.records_count),
                offset: 57,
            });
        }
        if header.last_offset_delta < 0 {
            return Err(DecodeError::InvalidLength {
                field: "last_offset_delta",
                length: i64::from(header.last_offset_delta),
                offset: 23,
            });
        }
        Ok(header)
    }

    /// Total encoded size of the batch, including `base_offset` and `batch_length`.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length as usize
    }

    /// Offset of the batch's last record. Wraps rather than panics on a
    /// hostile `base_offset` near `i64::MAX`; brokers assign real offsets.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// Number of offsets the batch spans (compaction can leave fewer records).
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Sequence number of the batch's last record, wrapping as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

/// One encoded batch, borrowed from a `Bytes` (a network frame or a segment
/// mapping) without copying. Construction checks the header and that the
/// buffer holds exactly one whole batch; [`validate`](Self::validate) checks the CRC.
#[derive(Debug, Clone)]
pub struct RecordBatchView {
    bytes: Bytes,
    header: BatchHeader,
}

impl RecordBatchView {
    /// Wraps `bytes`, which must hold exactly one batch.
    pub fn new(bytes: Bytes) -> Result<Self> {
        let header = BatchHeader::parse(&bytes)?;
        let total = header.total_bytes();
        if bytes.len() != total {
            return Err(if bytes.len() < total {
                DecodeError::UnexpectedEof {
                    offset: bytes.len(),
                    need: total,
                    have: bytes.len(),
                }
            } else {
                DecodeError::InvalidLength {
                    field: "batch_length",
                    length: i64::from(header.batch_length),
                    offset: 8,
                }
            });
        }
        Ok(RecordBatchView { bytes, header })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn compression(&self) -> Result<Compression> {
        self.header.attributes.compression()
    }

    /// CRC-32C over attributes..end, as the header's `crc` field should hold.
    pub fn compute_crc(&self) -> u32 {
        super::crc32c(&self.bytes[CRC_COVERED_FROM..])
    }

    /// Checks the CRC-32C and the compression codec id. Does not decode records.
    pub fn validate(&self) -> Result<()> {
        let actual = self.compute_crc();
        if actual != self.header.crc {
            return Err(DecodeError::CrcMismatch {
                expected: self.header.crc,
                actual,
            });
        }
        self.compression()?;
        Ok(())
    }

    /// The records block as stored: compressed if the batch is compressed.
    pub fn raw_records(&self) -> Bytes {
        self.bytes.slice(BATCH_HEADER_BYTES..)
    }

    /// Iterates the records, decompressing the block first if needed (one
    /// allocation per batch; none per record).
    pub fn records(&self) -> Result<RecordIter> {
        self.records_with_limit(DECOMPRESSED_BYTES_MAX)
    }

    /// Like [`records`](Self::records), but refuses to inflate a compressed
    /// block beyond `decompressed_bytes_max` (a broker passes its
    /// `max.message.bytes`-derived limit so one small hostile batch cannot
    /// claim hundreds of megabytes).
    pub fn records_with_limit(&self, decompressed_bytes_max: usize) -> Result<RecordIter> {
        let raw = self.raw_records();
        let block = match self.compression()? {
            Compression::None => raw,
            codec => compression::decompress(codec, &raw, decompressed_bytes_max)?,
        };
        Ok(RecordIter::new(
            block,
            self.header.records_count,
            self.header.base_offset,
            self.header.base_timestamp,
            self.log_append_time(),
        ))
    }

    /// The broker-assigned append time of a LogAppendTime batch (its
    /// `max_timestamp`), which Kafka reports as every record's timestamp.
    pub fn log_append_time(&self) -> Option<i64> {
        (self.header.attributes.timestamp_type() == TimestampType::LogAppendTime)
            .then_some(self.header.max_timestamp)
    }

    /// Decodes every record once to prove the batch is well formed and that it
    /// holds `records_count` records whose offset deltas stay within
    /// `last_offset_delta`. Brokers call this on produce for compressed
    /// batches, whose inner structure the CRC alone does not vouch for.
    pub fn validate_records(&self) -> Result<()> {
        self.validate_records_with_limit(DECOMPRESSED_BYTES_MAX)
            .map(drop)
    }

    /// [`validate_records`](Self::validate_records) inflating a compressed
    /// block no further than `decompressed_bytes_max`; returns how many
    /// records have no key. Walks record shapes: nothing is sliced out.
    pub fn validate_records_with_limit(
        &self,
        decompressed_bytes_max: usize,
    ) -> Result<RecordsChecked> {
        let mut found = 0i32;
        let mut keyless = 0usize;
        let mut records = self.records_with_limit(decompressed_bytes_max)?;
        while let Some(shape) = records.next_shape() {
            let shape = shape?;
            if shape.offset_delta < 0 || shape.offset_delta > self.header.last_offset_delta {
                return Err(DecodeError::Malformed {
                    what: "record",
                    reason: format!(
                        "offset delta {} outside 0..={}",
                        shape.offset_delta, self.header.last_offset_delta
                    ),
                });
            }
            if shape.key.is_none() {
                keyless += 1;
            }
            found += 1;
        }
        if found != self.header.records_count {
            return Err(DecodeError::RecordCountMismatch {
                declared: self.header.records_count,
                found,
            });
        }
        Ok(RecordsChecked { keyless })
    }
}

/// What validating a batch's records found out on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsChecked {
    /// Records without a key (refused on compacted topics).
    pub keyless: usize,
}

/// Rewrites `base_offset` of the batch starting at `buf[0]` (not covered by the CRC).
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites `partition_leader_epoch` of the batch starting at `buf[0]` (not covered by the CRC).
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps a broker-side `LogAppendTime` on the batch starting at `buf[0]`:
/// sets the timestamp-type bit and `max_timestamp`, then recomputes the CRC
/// (both fields are covered by it). Readers then report `timestamp_ms` as
/// every record's timestamp, as Kafka does.
///
/// `buf` may extend past the batch (a slice of many batches); only this
/// batch's bytes are covered by the new CRC.
///
/// # Panics
/// If `buf` does not hold the whole batch its header announces: callers pass
/// batches they already validated.
pub fn set_log_append_time(buf: &mut [u8], timestamp_ms: i64) {
    let batch_length = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let total = LOG_OVERHEAD_BYTES + usize::try_from(batch_length).unwrap_or(0);
    assert!(
        total >= BATCH_HEADER_BYTES && total <= buf.len(),
        "set_log_append_time on a batch of {total} bytes in a buffer of {}",
        buf.len()
    );
    let attributes = i16::from_be_bytes([buf[21], buf[22]]) | 0x08;
    buf[21..23].copy_from_slice(&attributes.to_be_bytes());
    buf[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = super::crc32c(&buf[CRC_COVERED_FROM..total]);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}
