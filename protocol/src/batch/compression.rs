//! Compression codecs for a batch's records block, each behind a cargo feature.
//!
//! - gzip: a gzip member (RFC 1952), as Java's `GZIPOutputStream` writes.
//! - snappy: xerial-snappy framing, as the Java client writes: a 16-byte
//!   header (`\x82SNAPPY\0`, version 1, compatible version 1) then blocks of
//!   at most 32 KiB, each a big-endian u32 length and a raw snappy block.
//!   Reading also accepts an unframed raw snappy block, as Java does.
//! - lz4: the LZ4 frame format.
//! - zstd: a zstd frame.
//!
//! Decompression is bounded by a caller-given limit so that a small hostile
//! block cannot inflate without bound.

use bytes::Bytes;

use super::attributes::Compression;
use crate::error::{DecodeError, Result};

#[cfg(feature = "snappy")]
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
#[cfg(feature = "snappy")]
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

#[allow(dead_code)]
fn unavailable(codec: Compression) -> DecodeError {
    DecodeError::CompressionUnavailable {
        codec: codec.name(),
    }
}

#[allow(dead_code)]
fn failed(codec: Compression, reason: impl std::fmt::Display) -> DecodeError {
    DecodeError::Decompression {
        codec: codec.name(),
        reason: reason.to_string(),
    }
}

/// Compresses `input` with `codec`, appending to `out`.
///
/// Fails only when the codec is not compiled in (or, for zstd, when the C
/// library reports an error).
pub fn compress(codec: Compression, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    match codec {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        Compression::Gzip => compress_gzip(input, out),
        Compression::Snappy => compress_snappy(input, out),
        Compression::Lz4 => compress_lz4(input, out),
        Compression::Zstd => compress_zstd(input, out),
    }
}

/// Decompresses `input`, refusing to produce more than `max_bytes`.
pub fn decompress(codec: Compression, input: &[u8], max_bytes: usize) -> Result<Bytes> {
    let out = match codec {
        Compression::None => {
            if input.len() > max_bytes {
                return Err(DecodeError::DecompressedTooLarge { max: max_bytes });
            }
            input.to_vec()
        }
        Compression::Gzip => decompress_gzip(input, max_bytes)?,
        Compression::Snappy => decompress_snappy(input, max_bytes)?,
        Compression::Lz4 => decompress_lz4(input, max_bytes)?,
        Compression::Zstd => decompress_zstd(input, max_bytes)?,
    };
    Ok(Bytes::from(out))
}

/// Reads all of `reader` into a Vec, failing once it passes `max_bytes`.
#[allow(dead_code)]
fn read_bounded(
    codec: Compression,
    reader: impl std::io::Read,
    max_bytes: usize,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = max_bytes as u64 + 1;
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| failed(codec, e))?;
    if out.len() > max_bytes {
        return Err(DecodeError::DecompressedTooLarge { max: max_bytes });
    }
    Ok(out)
}

#[cfg(feature = "gzip")]
fn compress_gzip(input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    // Writing into a Vec cannot fail.
    encoder
        .write_all(input)
        .and_then(|()| encoder.try_finish())
        .map_err(|e| failed(Compression::Gzip, e))
}
#[cfg(not(feature = "gzip"))]
fn compress_gzip(_: &[u8], _: &mut Vec<u8>) -> Result<()> {
    Err(unavailable(Compression::Gzip))
}
#[cfg(feature = "gzip")]
fn decompress_gzip(input: &[u8], max_bytes: usize) -> Result<Vec<u8>> {
    read_bounded(
        Compression::Gzip,
        flate2::read::MultiGzDecoder::new(input),
        max_bytes,
    )
}
#[cfg(not(feature = "gzip"))]
fn decompress_gzip(_: &[u8], _: usize) -> Result<Vec<u8>> {
    Err(unavailable(Compression::Gzip))
}

#[cfg(feature = "snappy")]
fn compress_snappy(input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut encoder = snap::raw::Encoder::new();
    out.extend_from_slice(XERIAL_MAGIC);
    for block in input.chunks(XERIAL_BLOCK_BYTES) {
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let block_at = out.len();
        out.resize(block_at + snap::raw::max_compress_len(block.len()), 0);
        let written = encoder
            .compress(block, &mut out[block_at..])
            .map_err(|e| failed(Compression::Snappy, e))?;
        out.truncate(block_at + written);
        out[length_at..block_at].copy_from_slice(&(written as u32).to_be_bytes());
    }
    Ok(())
}
#[cfg(not(feature = "snappy"))]
fn compress_snappy(_: &[u8], _: &mut Vec<u8>) -> Result<()> {
    Err(unavailable(Compression::Snappy))
}
#[cfg(feature = "snappy")]
fn decompress_snappy_block(block: &[u8], max_bytes: usize, out: &mut Vec<u8>) -> Result<()> {
    let codec = Compression::Snappy;
    let length = snap::raw::decompress_len(block).map_err(|e| failed(codec, e))?;
    if out.len() + length > max_bytes {
        return Err(DecodeError::DecompressedTooLarge { max: max_bytes });
    }
    let at = out.len();
    out.resize(at + length, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[at..])
        .map_err(|e| failed(codec, e))?;
    Ok(())
}
#[cfg(feature = "snappy")]
fn decompress_snappy(input: &[u8], max_bytes: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let Some(mut rest) = input.strip_prefix(&XERIAL_MAGIC[..]) else {
        decompress_snappy_block(input, max_bytes, &mut out)?;
        return Ok(out);
    };
    while !rest.is_empty() {
        let Some((length, tail)) = rest.split_first_chunk::<4>() else {
            return Err(failed(Compression::Snappy, "truncated xerial block length"));
        };
        let length = u32::from_be_bytes(*length) as usize;
        if length > tail.len() {
            return Err(failed(
                Compression::Snappy,
                format!("xerial block of {length} bytes but {} remain", tail.len()),
            ));
        }
        decompress_snappy_block(&tail[..length], max_bytes, &mut out)?;
        rest = &tail[length..];
    }
    Ok(out)
}
#[cfg(not(feature = "snappy"))]
fn decompress_snappy(_: &[u8], _: usize) -> Result<Vec<u8>> {
    Err(unavailable(Compression::Snappy))
}

#[cfg(feature = "lz4")]
fn compress_lz4(input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    use std::io::Write;
    let mut encoder = lz4_flex::frame::FrameEncoder::new(out);
    encoder
        .write_all(input)
        .map_err(|e| failed(Compression::Lz4, e))?;
    encoder
        .finish()
        .map(|_| ())
        .map_err(|e| failed(Compression::Lz4, e))
}
#[cfg(not(feature = "lz4"))]
fn compress_lz4(_: &[u8], _: &mut Vec<u8>) -> Result<()> {
    Err(unavailable(Compression::Lz4))
}
#[cfg(feature = "lz4")]
fn decompress_lz4(input: &[u8], max_bytes: usize) -> Result<Vec<u8>> {
    read_bounded(
        Compression::Lz4,
        lz4_flex::frame::FrameDecoder::new(input),
        max_bytes,
    )
}
#[cfg(not(feature = "lz4"))]
fn decompress_lz4(_: &[u8], _: usize) -> Result<Vec<u8>> {
    Err(unavailable(Compression::Lz4))
}

#[cfg(feature = "zstd")]
fn compress_zstd(input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let compressed = zstd::bulk::compress(input, zstd::DEFAULT_COMPRESSION_LEVEL)
        .map_err(|e| failed(Compression::Zstd, e))?;
    out.extend_from_slice(&compressed);
    Ok(())
}
#[cfg(not(feature = "zstd"))]
fn compress_zstd(_: &[u8], _: &mut Vec<u8>) -> Result<()> {
    Err(unavailable(Compression::Zstd))
}
#[cfg(feature = "zstd")]
fn decompress_zstd(input: &[u8], max_bytes: usize) -> Result<Vec<u8>> {
    let decoder =
        zstd::stream::read::Decoder::new(input).map_err(|e| failed(Compression::Zstd, e))?;
    read_bounded(Compression::Zstd, decoder, max_bytes)
}
#[cfg(not(feature = "zstd"))]
fn decompress_zstd(_: &[u8], _: usize) -> Result<Vec<u8>> {
    Err(unavailable(Compression::Zstd))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each codec inflates what it deflated, and the limit stops a larger output.
    #[test]
    fn every_codec_round_trips_and_honours_the_limit() {
        let input: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in Compression::ALL {
            let mut packed = Vec::new();
            compress(codec, &input, &mut packed).unwrap();
            assert_eq!(
                decompress(codec, &packed, input.len()).unwrap(),
                input,
                "{codec:?}"
            );
            assert_eq!(
                decompress(codec, &packed, input.len() - 1),
                Err(DecodeError::DecompressedTooLarge {
                    max: input.len() - 1
                }),
                "{codec:?}"
            );
        }
    }

    /// Garbage is a typed decompression error for every real codec, never a panic.
    #[test]
    fn garbage_is_a_decompression_error() {
        let garbage = [0x13u8, 0x37, 0xde, 0xad, 0xbe, 0xef, 0x00, 0xff];
        for codec in Compression::ALL.into_iter().skip(1) {
            assert!(
                matches!(
                    decompress(codec, &garbage, 1 << 20),
                    Err(DecodeError::Decompression { .. })
                ),
                "{codec:?} accepted garbage"
            );
        }
    }

    /// Java reads unframed snappy too; so do we.
    #[test]
    fn raw_snappy_without_xerial_framing_is_accepted() {
        let raw = snap::raw::Encoder::new()
            .compress_vec(b"hello hello hello")
            .unwrap();
        assert_eq!(
            &decompress(Compression::Snappy, &raw, 1024).unwrap()[..],
            b"hello hello hello"
        );
    }
}
