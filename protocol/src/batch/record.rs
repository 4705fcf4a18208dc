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

use std::ops::Range;

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

/// Reads the length of a byte string at `pos` of `buf` and steps over the
/// string, checking it ends by `end`; returns where it lies, `None` for
/// null (-1). No `Bytes` is made: a slice costs an atomic increment and
/// decrement, and validation needs only the bounds.
#[inline(always)]
fn read_nullable_range(
    buf: &[u8],
    pos: &mut usize,
    end: usize,
    field: &'static str,
) -> Result<Option<Range<usize>>> {
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
    let range = *pos..*pos + length as usize;
    *pos = range.end;
    Ok(Some(range))
}

/// Reads one header at `pos`: where its key and value lie (a header key is
/// never null).
#[inline(always)]
fn read_header_ranges(
    buf: &[u8],
    pos: &mut usize,
    end: usize,
) -> Result<(Range<usize>, Option<Range<usize>>)> {
    let key =
        read_nullable_range(buf, pos, end, "header_key")?.ok_or(DecodeError::InvalidLength {
            field: "header_key",
            length: -1,
            offset: *pos,
        })?;
    let value = read_nullable_range(buf, pos, end, "header_value")?;
    Ok((key, value))
}

/// Steps over `count` headers starting at `pos`, checking their structure.
#[inline(always)]
fn skip_headers(buf: &[u8], pos: &mut usize, end: usize, count: i32) -> Result<()> {
    for _ in 0..count {
        read_header_ranges(buf, pos, end)?;
    }
    Ok(())
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
        let (key, value) = read_header_ranges(&self.buf, &mut self.pos, self.buf.len())?;
        Ok(Header {
            key: self.buf.slice(key),
            value: value.map(|range| self.buf.slice(range)),
        })
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

/// Where an iteration over a records block stands: shared by the owning
/// and the borrowing iterator, so both check records alike.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    pos: usize,
    remaining: i32,
    base_offset: i64,
    base_timestamp: i64,
    /// Set for LogAppendTime batches: every record's timestamp is the batch's
    /// `max_timestamp`, whatever its delta says (Kafka's `DefaultRecord.readFrom`).
    log_append_time: Option<i64>,
    failed: bool,
}

impl Cursor {
    /// The next record's shape, keeping the count, the end-of-block check
    /// and the stop after the first error in one place.
    #[inline(always)]
    fn next_shape(&mut self, buf: &[u8]) -> Option<Result<RecordShape>> {
        if self.failed {
            return None;
        }
        if self.remaining <= 0 {
            if self.pos != buf.len() {
                self.failed = true;
                return Some(Err(DecodeError::Malformed {
                    what: "records block",
                    reason: format!(
                        "{} bytes left after the declared records",
                        buf.len() - self.pos
                    ),
                }));
            }
            return None;
        }
        self.remaining -= 1;
        let shape = parse_record(buf, &mut self.pos);
        if shape.is_err() {
            self.failed = true;
        }
        Some(shape)
    }

    fn offset(&self, shape: &RecordShape) -> i64 {
        self.base_offset.wrapping_add(i64::from(shape.offset_delta))
    }

    fn timestamp(&self, shape: &RecordShape) -> i64 {
        self.log_append_time
            .unwrap_or(self.base_timestamp.wrapping_add(shape.timestamp_delta))
    }
}

/// Iterates the records of a decompressed records block.
///
/// Yields `records_count` records, then checks that the block is used up.
/// After the first error it yields nothing more.
#[derive(Debug, Clone)]
pub struct RecordIter {
    buf: Bytes,
    cursor: Cursor,
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
            cursor: Cursor {
                pos: 0,
                remaining: records_count,
                base_offset,
                base_timestamp,
                log_append_time,
                failed: false,
            },
        }
    }

    fn record(&self, shape: RecordShape) -> Record {
        let headers = if shape.header_count == 0 {
            HeaderIter::default()
        } else {
            HeaderIter {
                buf: self.buf.slice(shape.headers.clone()),
                pos: 0,
                remaining: shape.header_count,
            }
        };
        Record {
            offset: self.cursor.offset(&shape),
            timestamp: self.cursor.timestamp(&shape),
            offset_delta: shape.offset_delta,
            timestamp_delta: shape.timestamp_delta,
            attributes: shape.attributes,
            key: shape.key.map(|range| self.buf.slice(range)),
            value: shape.value.map(|range| self.buf.slice(range)),
            headers,
        }
    }

    /// The next record's shape, checked exactly as [`Iterator::next`] checks
    /// a record but without slicing its parts out of the block: for callers
    /// that only validate (a broker on produce).
    pub fn next_shape(&mut self) -> Option<Result<RecordShape>> {
        self.cursor.next_shape(&self.buf)
    }

    /// The records not yet yielded, borrowed from the block: checked as
    /// [`Iterator::next`] checks them, but with key, value and headers as
    /// slices rather than `Bytes`, so that reading a record costs no
    /// reference count (two atomic operations per part otherwise).
    pub fn borrowed(&self) -> RecordRefIter<'_> {
        RecordRefIter {
            buf: &self.buf,
            cursor: self.cursor,
        }
    }
}

/// One record borrowed from its records block (see [`RecordIter::borrowed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: HeaderRefs<'a>,
}

/// The records of a block, borrowed from it.
#[derive(Debug, Clone)]
pub struct RecordRefIter<'a> {
    buf: &'a [u8],
    cursor: Cursor,
}

impl<'a> Iterator for RecordRefIter<'a> {
    type Item = Result<RecordRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.buf;
        Some(self.cursor.next_shape(buf)?.map(|shape| RecordRef {
            offset: self.cursor.offset(&shape),
            timestamp: self.cursor.timestamp(&shape),
            key: shape.key.map(|range| &buf[range]),
            value: shape.value.map(|range| &buf[range]),
            headers: HeaderRefs {
                buf: &buf[shape.headers],
                pos: 0,
                remaining: shape.header_count,
            },
        }))
    }
}

/// A borrowed record's headers as `(key, value)` pairs. Their structure was
/// checked with the record, so iterating them cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderRefs<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: i32,
}

impl HeaderRefs<'_> {
    /// Number of headers not yet yielded.
    pub fn len(&self) -> usize {
        self.remaining.max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.remaining <= 0
    }
}

impl<'a> Iterator for HeaderRefs<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let buf = self.buf;
        match read_header_ranges(buf, &mut self.pos, buf.len()) {
            Ok((key, value)) => Some((&buf[key], value.map(|range| &buf[range]))),
            // Checked when the record was read: unreachable, but a stop
            // is the safe answer.
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }
}

/// Where a record's parts lie in its records block: checked, not sliced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordShape {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
    /// The encoded headers (`header_count` of them).
    pub headers: Range<usize>,
    pub header_count: i32,
}

/// Parses the record at `pos` of a records block and steps past it. Every
/// length is checked against the record's own, the headers are walked, and
/// the record must end exactly where its length says.
///
/// Always inlined, like the readers it calls: returned out of line, its
/// `Result` went through the stack and reloading it cost more than the
/// parsing (half of a 1000-record walk).
#[inline(always)]
fn parse_record(buf: &[u8], pos: &mut usize) -> Result<RecordShape> {
    let (length, read) = read_varint(buf, *pos)?;
    *pos += read;
    if length < 0 || length as usize > buf.len() - *pos {
        return Err(DecodeError::InvalidLength {
            field: "record_length",
            length: i64::from(length),
            offset: *pos,
        });
    }
    let end = *pos + length as usize;
    let body = &buf[..end];
    let attributes = *body.get(*pos).ok_or(DecodeError::UnexpectedEof {
        offset: *pos,
        need: 1,
        have: 0,
    })? as i8;
    *pos += 1;
    let (timestamp_delta, read) = read_varlong(body, *pos)?;
    *pos += read;
    let (offset_delta, read) = read_varint(body, *pos)?;
    *pos += read;
    let key = read_nullable_range(buf, pos, end, "key")?;
    let value = read_nullable_range(buf, pos, end, "value")?;
    let (header_count, read) = read_varint(body, *pos)?;
    *pos += read;
    if header_count < 0 {
        return Err(DecodeError::InvalidLength {
            field: "header_count",
            length: i64::from(header_count),
            offset: *pos,
        });
    }
    let headers_start = *pos;
    skip_headers(buf, pos, end, header_count)?;
    if *pos != end {
        return Err(DecodeError::Malformed {
            what: "record",
            reason: format!(
                "{} unread bytes at the end of the record ending at byte {end}",
                end - *pos
            ),
        });
    }
    Ok(RecordShape {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers: headers_start..end,
        header_count,
    })
}

impl Iterator for RecordIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        let shape = self.cursor.next_shape(&self.buf)?;
        Some(shape.map(|shape| self.record(shape)))
    }
}
