//! Records inside a batch and a zero-allocation iterator over them.
//!
//! Record layout (varints are zig-zag, see [`super::varint`]):
//!
//! ```text
//! length          varint   bytes after this field
//! attributes      int8     unused, 0
//! timestamp_delta varlong  from the batch's base_timestamp
//! offset_delta    varint   from the batch's base_offset
//! key_length      varint   -1 for a null key
//! key             bytes
//! value_length    varint   -1 for a null value (a tombstone)
//! value           bytes
//! header_count    varint
//! headers         [header_key_length varint, header_key, header_value_length varint, header_value]
//! ```

use bytes::Bytes;

use super::varint::{read_varint, read_varlong};
use crate::error::{DecodeError, Result};

/// One record. Key, value and headers are slices of the batch's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub attributes: i8,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: HeaderIter,
}

/// One record header; the value may be null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// Reads a length-prefixed byte string at `pos` of `buf`; -1 means null.
fn read_nullable_bytes(
    buf: &Bytes,
    pos: &mut usize,
    end: usize,
    field: &'static str,
) -> Result<Option<Bytes>> {
    let (length, read) = read_varint(&buf[..end], *pos)?;
    *pos += read;
    if length == -1 {
        return Ok(None);
    }
    if length < 0 || length as usize > end - *pos {
        return Err(DecodeError::InvalidLength {
            field,
            length: i64::from(length),
            offset: *pos,
        });
    }
    let slice = buf.slice(*pos..*pos + length as usize);
    *pos += length as usize;
    Ok(Some(slice))
}

/// Iterates a record's headers lazily; holds only a slice of the batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderIter {
    buf: Bytes,
    pos: usize,
    remaining: i32,
}

impl HeaderIter {
    /// Number of headers not yet yielded.
    pub fn len(&self) -> usize {
        self.remaining as usize
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    fn next_header(&mut self) -> Result<Header> {
        let end = self.buf.len();
        let key = read_nullable_bytes(&self.buf, &mut self.pos, end, "header_key")?.ok_or(
            DecodeError::InvalidLength {
                field: "header_key",
                length: -1,
                offset: self.pos,
            },
        )?;
        let value = read_nullable_bytes(&self.buf, &mut self.pos, end, "header_value")?;
        Ok(Header { key, value })
    }
}

impl Iterator for HeaderIter {
    type Item = Result<Header>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let header = self.next_header();
        if header.is_err() {
            self.remaining = 0;
        }
        Some(header)
    }
}

/// Iterates the records of a decompressed records block.
///
/// Yields `records_count` records, then checks that the block is used up.
/// After the first error it yields nothing more.
#[derive(Debug, Clone)]
pub struct RecordIter {
    buf: Bytes,
    pos: usize,
    remaining: i32,
    base_offset: i64,
    base_timestamp: i64,
    /// Set for LogAppendTime batches: every record's timestamp is the batch's
    /// `max_timestamp`, whatever its delta says (Kafka's `DefaultRecord.readFrom`).
    log_append_time: Option<i64>,
    failed: bool,
}

impl RecordIter {
    pub(crate) fn new(
        buf: Bytes,
        records_count: i32,
        base_offset: i64,
        base_timestamp: i64,
        log_append_time: Option<i64>,
    ) -> Self {
        RecordIter {
            buf,
            pos: 0,
            remaining: records_count,
            base_offset,
            base_timestamp,
            log_append_time,
            failed: false,
        }
    }

    fn next_record(&mut self) -> Result<Record> {
        let (length, read) = read_varint(&self.buf, self.pos)?;
        self.pos += read;
        if length < 0 || length as usize > self.buf.len() - self.pos {
            return Err(DecodeError::InvalidLength {
                field: "record_length",
                length: i64::from(length),
                offset: self.pos,
            });
        }
        let end = self.pos + length as usize;
        let body = &self.buf[..end];
        let attributes = *body.get(self.pos).ok_or(DecodeError::UnexpectedEof {
            offset: self.pos,
            need: 1,
            have: 0,
        })? as i8;
        self.pos += 1;
        let (timestamp_delta, read) = read_varlong(body, self.pos)?;
        self.pos += read;
        let (offset_delta, read) = read_varint(body, self.pos)?;
        self.pos += read;
        let key = read_nullable_bytes(&self.buf, &mut self.pos, end, "key")?;
        let value = read_nullable_bytes(&self.buf, &mut self.pos, end, "value")?;
        let (header_count, read) = read_varint(body, self.pos)?;
        self.pos += read;
        if header_count < 0 {
            return Err(DecodeError::InvalidLength {
                field: "header_count",
                length: i64::from(header_count),
                offset: self.pos,
            });
        }
        let mut headers = HeaderIter {
            buf: self.buf.slice(self.pos..end),
            pos: 0,
            remaining: header_count,
        };
        // Walk the headers once so that a malformed record is reported here,
        // at the record, and so that the record's length is proven exact.
        let mut probe = headers.clone();
        for header in probe.by_ref() {
            header?;
        }
        if probe.pos != probe.buf.len() {
            return Err(DecodeError::Malformed {
                what: "record",
                reason: format!(
                    "{} unread bytes at the end of the record ending at byte {end}",
                    probe.buf.len() - probe.pos
                ),
            });
        }
        headers.remaining = header_count;
        self.pos = end;
        Ok(Record {
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp: self
                .log_append_time
                .unwrap_or(self.base_timestamp.wrapping_add(timestamp_delta)),
            offset_delta,
            timestamp_delta,
            attributes,
            key,
            value,
            headers,
        })
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining <= 0 {
            if self.pos != self.buf.len() {
                self.failed = true;
                return Some(Err(DecodeError::Malformed {
                    what: "records block",
                    reason: format!(
                        "{} bytes left after the declared records",
                        self.buf.len() - self.pos
                    ),
                }));
            }
            return None;
        }
        self.remaining -= 1;
        let record = self.next_record();
        if record.is_err() {
            self.failed = true;
        }
        Some(record)
    }
}
