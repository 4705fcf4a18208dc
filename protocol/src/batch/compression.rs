//! Compression codecs for a batch's records block, each behind a cargo feature.
//!
//! - gzip: a gzip member (RFC 1952), as Java's `GZIPOutputStream` writes.
//! - snappy: xerial-snappy framing, as the Java client writes: a 16-byte
//!   header (`\x82SNAPPY\0`, version 1, compatible version 1) then blocks of
//!   at most 32 KiB, each a big-endian u32 length and a raw snappy block.
//!   Reading follows xerial's `SnappyInputStream`: only the 8-byte magic
//!   decides framing (any version ≥ 1 is read), a stream may be several
//!   framed streams concatenated, and input without the magic is one raw
//!   snappy block.
//! - lz4: the LZ4 frame format as Kafka's `KafkaLZ4BlockOutputStream` writes
//!   it (KIP-57): independent 64 KiB blocks, no block or content checksum,
//!   no content size. Kafka's reader rejects block sizes above 4 MiB, so
//!   letting the encoder pick its own would break Java consumers.
//! - zstd: a zstd frame.
//!
//! Decompression is bounded by a caller-given limit so that a small hostile
//! block cannot inflate without bound.

use bytes::Bytes;

use super::attributes::Compression;
use crate::error::{DecodeError, Result};

/// xerial header: 8-byte magic, then big-endian version and compatible version.
#[cfg(feature = "snappy")]
const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
#[cfg(feature = "snappy")]
const XERIAL_MAGIC_PREFIX_BYTES: usize = 8;
#[cfg(feature = "snappy")]
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
/// Upper bound on a raw snappy block's decompressed/compressed ratio (the real
/// maximum is 64/3), used to refuse lying length headers before allocating.
#[cfg(feature = "snappy")]
const SNAPPY_EXPANSION_MAX: usize = 32;

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
    // The length is a claim read from the input and we zero that much before
    // decompressing, so bound it by what the block could really expand to:
    // the densest snappy element (a 3-byte copy of 64 bytes) expands 21.3x.
    if length > block.len().saturating_mul(SNAPPY_EXPANSION_MAX) {
        return Err(failed(
            codec,
            format!(
                "block of {} bytes claims {length} bytes decompressed",
                block.len()
            ),
        ));
    }
    let at = out.len();
    out.resize(at + length, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[at..])
        .map_err(|e| failed(codec, e))?;
    Ok(())
}
/// If `input` starts with a xerial header, returns what follows it.
#[cfg(feature = "snappy")]
fn strip_xerial_header(input: &[u8]) -> Result<Option<&[u8]>> {
    if !input.starts_with(&XERIAL_MAGIC[..XERIAL_MAGIC_PREFIX_BYTES]) {
        return Ok(None);
    }
    let Some(rest) = input.get(XERIAL_MAGIC.len()..) else {
        return Err(failed(Compression::Snappy, "truncated xerial header"));
    };
    let version = i32::from_be_bytes([input[8], input[9], input[10], input[11]]);
    if version < 1 {
        return Err(failed(
            Compression::Snappy,
            format!("xerial stream version {version} is not supported"),
        ));
    }
    Ok(Some(rest))
}

#[cfg(feature = "snappy")]
fn decompress_snappy(input: &[u8], max_bytes: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let Some(mut rest) = strip_xerial_header(input)? else {
        decompress_snappy_block(input, max_bytes, &mut out)?;
        return Ok(out);
    };
    while !rest.is_empty() {
        // Concatenated xerial streams: a new header where a block length would be.
        if let Some(after_header) = strip_xerial_header(rest)? {
            rest = after_header;
            continue;
        }
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
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    use std::io::Write;
    let frame_info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent)
        .block_checksums(false)
        .content_checksum(false);
    let mut encoder = FrameEncoder::with_frame_info(frame_info, out);
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

    /// Our LZ4 frames carry exactly the descriptor Kafka's KafkaLZ4BlockOutputStream
    /// writes: FLG 0x60 (version 01, independent blocks, no checksums, no content
    /// size) and BD 0x40 (64 KiB blocks), whatever the input size.
    #[test]
    fn lz4_frames_use_kafkas_descriptor() {
        for input_bytes in [0usize, 10, 1 << 20] {
            let input = vec![7u8; input_bytes];
            let mut packed = Vec::new();
            compress(Compression::Lz4, &input, &mut packed).unwrap();
            assert_eq!(&packed[..4], &[0x04, 0x22, 0x4d, 0x18], "LZ4 frame magic");
            assert_eq!(packed[4], 0x60, "FLG for {input_bytes} bytes");
            assert_eq!(packed[5], 0x40, "BD for {input_bytes} bytes");
            assert_eq!(
                decompress(Compression::Lz4, &packed, 1 << 21).unwrap(),
                input
            );
        }
    }

    fn xerial_stream(version: i32, blocks: &[&[u8]]) -> Vec<u8> {
        let mut out = b"\x82SNAPPY\x00".to_vec();
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for block in blocks {
            let raw = snap::raw::Encoder::new().compress_vec(block).unwrap();
            out.extend_from_slice(&(raw.len() as u32).to_be_bytes());
            out.extend_from_slice(&raw);
        }
        out
    }

    /// xerial streams are recognised by their 8-byte magic alone (any version >= 1),
    /// and concatenated streams decode as one, as xerial's SnappyInputStream reads them.
    #[test]
    fn xerial_versions_and_concatenated_streams_are_read() {
        let mut input = xerial_stream(2, &[b"abc", b"def"]);
        input.extend(xerial_stream(1, &[b"ghi"]));
        assert_eq!(
            &decompress(Compression::Snappy, &input, 1024).unwrap()[..],
            b"abcdefghi"
        );
        let bad_version = xerial_stream(0, &[b"abc"]);
        assert!(matches!(
            decompress(Compression::Snappy, &bad_version, 1024),
            Err(DecodeError::Decompression { .. })
        ));
        let truncated_header = &xerial_stream(1, &[])[..12];
        assert!(matches!(
            decompress(Compression::Snappy, truncated_header, 1024),
            Err(DecodeError::Decompression { .. })
        ));
        let mut truncated_block = xerial_stream(1, &[b"hello hello hello"]);
        truncated_block.pop();
        assert!(matches!(
            decompress(Compression::Snappy, &truncated_block, 1024),
            Err(DecodeError::Decompression { .. })
        ));
    }

    /// A 6-byte snappy block claiming 200 MiB of output is refused before
    /// anything is allocated for it (no valid block expands more than 64/3x).
    #[test]
    fn snappy_length_claims_are_bounded_by_the_input() {
        // Varint 200 MiB, then a single literal tag: far too short for the claim.
        let mut lying = Vec::new();
        let mut claim = 200u32 * 1024 * 1024;
        while claim >= 0x80 {
            lying.push((claim as u8) | 0x80);
            claim >>= 7;
        }
        lying.push(claim as u8);
        lying.extend_from_slice(&[0x00, b'x']);
        assert!(matches!(
            decompress(Compression::Snappy, &lying, 256 << 20),
            Err(DecodeError::Decompression { .. })
        ));
        // The densest real input still decodes: 1 MiB of one repeated byte.
        let zeros = vec![0u8; 1 << 20];
        let packed = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &packed, 1 << 21)
                .unwrap()
                .len(),
            1 << 20
        );
    }
}
