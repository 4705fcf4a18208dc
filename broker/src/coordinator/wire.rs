//! A bounds-checked reader for the Kafka primitive types in
//! `__consumer_offsets` records, classic and flexible (KIP-482) encodings.
//! Every length is checked against the bytes left before anything is
//! allocated, so a corrupt record cannot make replay allocate gigabytes.

use bytes::Bytes;

/// A `__consumer_offsets` record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{field}: need {need} bytes at offset {offset}, have {have}")]
    UnexpectedEof {
        field: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("{field}: invalid length {length} at offset {offset}")]
    InvalidLength {
        field: &'static str,
        offset: usize,
        length: i64,
    },
    #[error("{field}: not UTF-8 at offset {offset}")]
    InvalidUtf8 { field: &'static str, offset: usize },
    #[error("{field}: null where a value is required at offset {offset}")]
    UnexpectedNull { field: &'static str, offset: usize },
    #[error("{what}: unknown version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    flexible: bool,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], flexible: bool) -> Reader<'a> {
        Reader {
            bytes,
            offset: 0,
            flexible,
        }
    }

    fn take(&mut self, field: &'static str, need: usize) -> Result<&'a [u8], RecordError> {
        let have = self.bytes.len() - self.offset;
        if need > have {
            return Err(RecordError::UnexpectedEof {
                field,
                offset: self.offset,
                need,
                have,
            });
        }
        let slice = &self.bytes[self.offset..self.offset + need];
        self.offset += need;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    pub fn i16(&mut self, field: &'static str) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    pub fn i32(&mut self, field: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub fn i64(&mut self, field: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    fn unsigned_varint(&mut self, field: &'static str) -> Result<u64, RecordError> {
        let start = self.offset;
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.array::<1>(field)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::InvalidLength {
            field,
            offset: start,
            length: -1,
        })
    }

    /// A length prefix: `None` for null. Classic encodings use a signed
    /// int16/int32 with -1 for null; flexible ones a varint of length+1.
    fn length(&mut self, field: &'static str, wide: bool) -> Result<Option<usize>, RecordError> {
        let offset = self.offset;
        let length: i64 = if self.flexible {
            self.unsigned_varint(field)? as i64 - 1
        } else if wide {
            i64::from(self.i32(field)?)
        } else {
            i64::from(self.i16(field)?)
        };
        match length {
            -1 => Ok(None),
            n if n < 0 => Err(RecordError::InvalidLength {
                field,
                offset,
                length: n,
            }),
            n => Ok(Some(n as usize)),
        }
    }

    pub fn nullable_string(&mut self, field: &'static str) -> Result<Option<String>, RecordError> {
        let Some(len) = self.length(field, false)? else {
            return Ok(None);
        };
        let offset = self.offset;
        let raw = self.take(field, len)?;
        std::str::from_utf8(raw)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| RecordError::InvalidUtf8 { field, offset })
    }

    pub fn string(&mut self, field: &'static str) -> Result<String, RecordError> {
        let offset = self.offset;
        self.nullable_string(field)?
            .ok_or(RecordError::UnexpectedNull { field, offset })
    }

    /// Bytes fields are copied out: records are replayed once at load, and
    /// the copy keeps no reference to the segment they came from.
    pub fn bytes(&mut self, field: &'static str) -> Result<Bytes, RecordError> {
        let offset = self.offset;
        let Some(len) = self.length(field, true)? else {
            return Err(RecordError::UnexpectedNull { field, offset });
        };
        Ok(Bytes::copy_from_slice(self.take(field, len)?))
    }

    /// An array count, checked against the bytes left given each element's
    /// smallest encoding.
    pub fn array_len(
        &mut self,
        field: &'static str,
        element_bytes_min: usize,
    ) -> Result<usize, RecordError> {
        let offset = self.offset;
        let Some(count) = self.length(field, true)? else {
            return Err(RecordError::UnexpectedNull { field, offset });
        };
        let left = self.bytes.len() - self.offset;
        if count.saturating_mul(element_bytes_min) > left {
            return Err(RecordError::InvalidLength {
                field,
                offset,
                length: count as i64,
            });
        }
        Ok(count)
    }

    /// Skips a flexible struct's tagged fields; nothing in classic versions.
    pub fn tagged_fields(&mut self) -> Result<(), RecordError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.unsigned_varint("tagged fields")?;
        for _ in 0..count {
            self.unsigned_varint("tag")?;
            let size = self.unsigned_varint("tag size")?;
            self.take("tagged field", size as usize)?;
        }
        Ok(())
    }
}
