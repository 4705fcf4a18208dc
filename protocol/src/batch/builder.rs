//! Builds one RecordBatch v2 from records.
//!
//! Records are encoded straight into one growing buffer that already holds
//! room for the 61-byte header, so an uncompressed batch is finished in
//! place: no per-record allocation and no copy at `build`.

use bytes::Bytes;

use super::attributes::{Attributes, Compression, TimestampType};
use super::compression;
use super::crc::{crc32c_combine, Crc32cDigest};
use super::varint::{put_varint, put_varlong, varint_len, varlong_len};
use super::{
    BATCH_HEADER_BYTES, CRC_COVERED_FROM, CRC_OFFSET, LOG_OVERHEAD_BYTES, MAGIC_V2,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};
use crate::error::Result;

/// Batch-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBatchBuilderConfig {
    pub compression: Compression,
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
    pub timestamp_type: TimestampType,
}

impl Default for RecordBatchBuilderConfig {
    fn default() -> Self {
        RecordBatchBuilderConfig {
            compression: Compression::None,
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            timestamp_type: TimestampType::CreateTime,
        }
    }
}

/// Accumulates records and encodes them into one batch.
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    config: RecordBatchBuilderConfig,
    /// Header room (zeros) followed by the encoded records.
    buf: Vec<u8>,
    records_count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    /// With [`Self::checksum_while_appending`]: the CRC-32C of
    /// `buf[BATCH_HEADER_BYTES..records_crc_upto]`, taken in steps while
    /// the records are still in the cache, which `build` combines with the
    /// header's.
    records_crc: Option<Crc32cDigest>,
    records_crc_upto: usize,
}

/// With checksumming while appending, records are checksummed once this
/// many bytes are pending: a keyed producer appends a few records to a
/// batch at a time, and these are still in the L1 cache. (16 KiB steps
/// reached back into the previous call's records and saved half as much.)
const RECORDS_CRC_STEP_BYTES: usize = 4096;

impl RecordBatchBuilder {
    pub fn new(config: RecordBatchBuilderConfig) -> Self {
        Self::with_capacity(config, 0)
    }

    /// Reserves room for about `capacity_bytes` of encoded records up front.
    pub fn with_capacity(config: RecordBatchBuilderConfig, capacity_bytes: usize) -> Self {
        Self::with_buffer(
            config,
            Vec::with_capacity(BATCH_HEADER_BYTES + capacity_bytes),
        )
    }

    /// As [`Self::with_capacity`], reusing `buf`'s allocation (its contents
    /// are discarded): a producer recycles the buffers of completed batches
    /// instead of touching fresh memory for every batch.
    pub fn with_buffer(config: RecordBatchBuilderConfig, mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.resize(BATCH_HEADER_BYTES, 0);
        RecordBatchBuilder {
            config,
            buf,
            records_count: 0,
            base_timestamp: 0,
            max_timestamp: -1,
            records_crc: None,
            records_crc_upto: BATCH_HEADER_BYTES,
        }
    }

    pub fn config(&self) -> &RecordBatchBuilderConfig {
        &self.config
    }

    pub fn records_count(&self) -> i32 {
        self.records_count
    }

    pub fn is_empty(&self) -> bool {
        self.records_count == 0
    }

    /// Size of the batch if built now, before compression.
    pub fn estimated_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Encoded size a record would add, so a caller can decide to start a
    /// new batch before appending.
    pub fn record_bytes(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> usize {
        let body = self.record_body_len(timestamp, key, value, headers);
        varint_len(body as i32) + body
    }

    /// Asks the CPU to bring the next `bytes` of the buffer (as far as it
    /// has room) into cache, ahead of an append there. A producer filling
    /// many batches writes each record to lines of a batch it last touched
    /// records ago; started while the record before is copied, their loads
    /// overlap that copy instead of stalling this one's stores.
    pub fn prefetch_append(&self, bytes: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            const CACHE_LINE_BYTES: usize = 64;
            let room = self.buf.capacity() - self.buf.len();
            let start = self.buf.as_ptr().wrapping_add(self.buf.len());
            for offset in (0..bytes.min(room)).step_by(CACHE_LINE_BYTES) {
                // SAFETY: SSE is part of x86-64; a prefetch only hints and
                // never faults, and the address lies inside the allocation.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset).cast()) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bytes;
    }

    fn record_body_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> usize {
        let base_timestamp = if self.records_count == 0 {
            timestamp
        } else {
            self.base_timestamp
        };
        let bytes_len = |b: Option<&[u8]>| match b {
            Some(b) => varint_len(b.len() as i32) + b.len(),
            None => varint_len(-1),
        };
        let mut len = 1
            + varlong_len(timestamp.wrapping_sub(base_timestamp))
            + varint_len(self.records_count)
            + bytes_len(key)
            + bytes_len(value)
            + varint_len(headers.len() as i32);
        for (header_key, header_value) in headers {
            len += bytes_len(Some(header_key)) + bytes_len(*header_value);
        }
        len
    }

    /// Appends one record; its offset delta is the number of records before it.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let body_len = self.record_body_len(timestamp, key, value, headers);
        self.append_body(body_len, timestamp, key, value, headers);
    }

    /// Appends one record unless the batch already holds records and would
    /// then exceed `limit_bytes` (as [`Self::estimated_bytes`] counts);
    /// returns whether it did. The record's size is worked out once for
    /// the check and the encoding: a producer asks this for every record.
    pub fn try_append(
        &mut self,
        limit_bytes: usize,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> bool {
        let body_len = self.record_body_len(timestamp, key, value, headers);
        let record_bytes = varint_len(body_len as i32) + body_len;
        if !self.is_empty() && self.estimated_bytes() + record_bytes > limit_bytes {
            return false;
        }
        self.append_body(body_len, timestamp, key, value, headers);
        true
    }

    /// Encodes a record whose body (everything after its length) is
    /// `body_len` bytes, as `record_body_len` gives for this batch now.
    fn append_body(
        &mut self,
        body_len: usize,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        debug_assert_eq!(
            body_len,
            self.record_body_len(timestamp, key, value, headers)
        );
        if self.records_count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let buf = &mut self.buf;
        put_varint(buf, body_len as i32);
        buf.push(0); // record attributes: unused
        put_varlong(buf, timestamp.wrapping_sub(self.base_timestamp));
        put_varint(buf, self.records_count);
        put_bytes(buf, key);
        put_bytes(buf, value);
        put_varint(buf, headers.len() as i32);
        for (header_key, header_value) in headers {
            put_bytes(buf, Some(header_key));
            put_bytes(buf, *header_value);
        }
        self.records_count += 1;
        if let Some(records_crc) = &mut self.records_crc {
            if buf.len() - self.records_crc_upto >= RECORDS_CRC_STEP_BYTES {
                records_crc.update(&buf[self.records_crc_upto..]);
                self.records_crc_upto = buf.len();
            }
        }
    }

    /// Whether [`Self::checksum_while_appending`] is in effect.
    pub fn checksums_while_appending(&self) -> bool {
        self.records_crc.is_some()
    }

    /// Checksums records in steps as they are appended rather than in one
    /// pass when the batch is built, for a caller that fills many batches
    /// at once: by the time one of them is built, its start has left the
    /// cache, and the single pass then cost a producer writing 64
    /// partitions four times what it costs for one (BENCHMARKS.md, tenth
    /// session). With one batch filling at a time the single pass, over
    /// data still cached, is cheaper. Uncompressed batches only (the CRC
    /// covers the compressed records); call before the first append.
    pub fn checksum_while_appending(&mut self) {
        assert_eq!(self.records_count, 0, "called before the first append");
        if self.config.compression == Compression::None {
            self.records_crc = Some(Crc32cDigest::new());
        }
    }

    /// Finishes the batch: compresses the records if configured, writes the
    /// header and the CRC-32C.
    pub fn build(self) -> Result<Bytes> {
        let mut out = match self.config.compression {
            Compression::None => self.buf,
            codec => {
                let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + self.buf.len() / 2);
                out.resize(BATCH_HEADER_BYTES, 0);
                compression::compress(codec, &self.buf[BATCH_HEADER_BYTES..], &mut out)?;
                out
            }
        };
        let config = &self.config;
        let last_offset_delta = (self.records_count - 1).max(0);
        let max_timestamp = if self.records_count == 0 {
            -1
        } else {
            self.max_timestamp
        };
        let attributes = Attributes::new(
            config.compression,
            config.timestamp_type,
            config.transactional,
            config.control,
        );
        let batch_length = (out.len() - LOG_OVERHEAD_BYTES) as i32;
        let header = &mut out[..BATCH_HEADER_BYTES];
        header[0..8].copy_from_slice(&config.base_offset.to_be_bytes());
        header[8..12].copy_from_slice(&batch_length.to_be_bytes());
        header[12..16].copy_from_slice(&config.partition_leader_epoch.to_be_bytes());
        header[16] = MAGIC_V2 as u8;
        header[21..23].copy_from_slice(&attributes.0.to_be_bytes());
        header[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
        header[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        header[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        header[43..51].copy_from_slice(&config.producer_id.to_be_bytes());
        header[51..53].copy_from_slice(&config.producer_epoch.to_be_bytes());
        header[53..57].copy_from_slice(&config.base_sequence.to_be_bytes());
        header[57..61].copy_from_slice(&self.records_count.to_be_bytes());
        // `records_crc` is only kept for uncompressed batches.
        let crc = match self.records_crc {
            Some(mut records_crc) => {
                records_crc.update(&out[self.records_crc_upto..]);
                crc32c_combine(
                    super::crc32c(&out[CRC_COVERED_FROM..BATCH_HEADER_BYTES]),
                    records_crc.finalize(),
                    out.len() - BATCH_HEADER_BYTES,
                )
            }
            None => super::crc32c(&out[CRC_COVERED_FROM..]),
        };
        out[CRC_OFFSET..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
        Ok(Bytes::from(out))
    }
}

fn put_bytes(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            put_varint(buf, bytes.len() as i32);
            buf.extend_from_slice(bytes);
        }
        None => put_varint(buf, -1),
    }
}
