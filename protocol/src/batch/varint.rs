//! Zig-zag varints as used inside records (protobuf style, Kafka's `ByteUtils`).
//!
//! Decoders take a slice and a position and return the value with the number
//! of bytes read; they never read past the slice and reject encodings longer
//! than the type allows (5 bytes for 32-bit, 10 for 64-bit).

use crate::error::{DecodeError, Result};

pub const VARINT_BYTES_MAX: usize = 5;
pub const VARLONG_BYTES_MAX: usize = 10;

/// Reads an unsigned LEB128 value of at most `max_bytes` bytes at `buf[pos..]`.
#[inline(always)]
fn read_unsigned(buf: &[u8], pos: usize, max_bytes: usize) -> Result<(u64, usize)> {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    for i in 0..max_bytes {
        let Some(&byte) = buf.get(pos + i) else {
            return Err(DecodeError::UnexpectedEof {
                offset: pos + i,
                need: 1,
                have: 0,
            });
        };
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
        shift += 7;
    }
    Err(DecodeError::VarintOverflow {
        offset: pos,
        max_bytes,
    })
}

/// Reads a zig-zag encoded i32 at `buf[pos..]`; returns (value, bytes read).
#[inline(always)]
pub fn read_varint(buf: &[u8], pos: usize) -> Result<(i32, usize)> {
    let (raw, len) = read_unsigned(buf, pos, VARINT_BYTES_MAX)?;
    if raw > u64::from(u32::MAX) {
        return Err(DecodeError::VarintOverflow {
            offset: pos,
            max_bytes: VARINT_BYTES_MAX,
        });
    }
    let raw = raw as u32;
    Ok((((raw >> 1) as i32) ^ -((raw & 1) as i32), len))
}

/// Reads a zig-zag encoded i64 at `buf[pos..]`; returns (value, bytes read).
#[inline(always)]
pub fn read_varlong(buf: &[u8], pos: usize) -> Result<(i64, usize)> {
    let (raw, len) = read_unsigned(buf, pos, VARLONG_BYTES_MAX)?;
    Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), len))
}

/// Appends `value` zig-zag encoded.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

/// Appends `value` zig-zag encoded.
#[inline]
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

#[inline]
fn put_unsigned(out: &mut Vec<u8>, mut raw: u64) {
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Bytes `put_varint(value)` would write.
#[inline]
pub fn varint_len(value: i32) -> usize {
    unsigned_len(((value << 1) ^ (value >> 31)) as u32 as u64)
}

/// Bytes `put_varlong(value)` would write.
#[inline]
pub fn varlong_len(value: i64) -> usize {
    unsigned_len(((value << 1) ^ (value >> 63)) as u64)
}

#[inline]
fn unsigned_len(raw: u64) -> usize {
    let bits = 64 - (raw | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Known encodings from the protobuf zig-zag table: 0→00, -1→01, 1→02, -64→7f, 64→80 01.
    #[test]
    fn zigzag_golden_values() {
        for (value, bytes) in [
            (0i32, &[0x00u8][..]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(read_varint(bytes, 0), Ok((value, bytes.len())));
            assert_eq!(varint_len(value), bytes.len());
        }
    }

    /// A varint whose continuation bit never clears is an overflow error, not a panic or a loop.
    #[test]
    fn overlong_varints_are_rejected() {
        let endless = [0xffu8; 12];
        assert_eq!(
            read_varint(&endless, 0),
            Err(DecodeError::VarintOverflow {
                offset: 0,
                max_bytes: 5
            })
        );
        assert_eq!(
            read_varlong(&endless, 0),
            Err(DecodeError::VarintOverflow {
                offset: 0,
                max_bytes: 10
            })
        );
        // Five bytes, but the value needs 35 bits: too big for an i32.
        assert!(matches!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x7f], 0),
            Err(DecodeError::VarintOverflow { .. })
        ));
        assert!(matches!(
            read_varint(&[0x80], 0),
            Err(DecodeError::UnexpectedEof { .. })
        ));
    }

    proptest! {
        /// Every i32 and i64 survives encode → decode with the predicted length.
        #[test]
        fn varint_round_trip(a in any::<i32>(), b in any::<i64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, a);
            prop_assert_eq!(out.len(), varint_len(a));
            let split = out.len();
            put_varlong(&mut out, b);
            prop_assert_eq!(out.len() - split, varlong_len(b));
            prop_assert_eq!(read_varint(&out, 0), Ok((a, split)));
            prop_assert_eq!(read_varlong(&out, split), Ok((b, out.len() - split)));
        }
    }
}
