//! Frames and headers.
//!
//! Every Kafka request and response is a frame: a 4-byte big-endian size
//! followed by that many bytes. A request frame starts with a request header:
//!
//! ```text
//! v0: api_key int16, api_version int16, correlation_id int32
//! v1: v0 + client_id nullable string (int16 length, -1 = null)
//! v2: v1 + tagged fields (unsigned varint count, then tag/size/bytes)
//! ```
//!
//! A response header is `correlation_id int32` (v0), plus tagged fields (v1).
//! Which header version a message uses depends on its API key and version
//! (flexible versions use the newer header), see [`crate::api`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, Result};

/// Bytes of the size prefix.
pub const FRAME_SIZE_PREFIX_BYTES: usize = 4;
/// Default largest frame we accept (Kafka's `socket.request.max.bytes` is 100 MiB).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;
/// Largest number of tagged fields we skip in a header.
const TAGGED_FIELDS_MAX: u32 = 1024;
/// Most we reserve ahead for a partial frame: a peer that sends a size
/// prefix and then nothing should not pin `max_bytes` of memory.
const FRAME_RESERVE_BYTES_MAX: usize = 1024 * 1024;

/// Takes one whole frame's payload (without the size prefix) off the front of
/// `buf`, or returns `Ok(None)` if `buf` does not yet hold a whole frame.
///
/// The size is checked against `max_bytes` as soon as the 4-byte prefix is
/// readable, before anything is allocated or buffered for the frame.
pub fn read_frame(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Bytes>> {
    let Some(size) = peek_frame_size(buf, max_bytes)? else {
        return Ok(None);
    };
    if buf.len() < FRAME_SIZE_PREFIX_BYTES + size {
        // Make room for (a bounded part of) the rest of the frame.
        let missing = FRAME_SIZE_PREFIX_BYTES + size - buf.len();
        buf.reserve(missing.min(FRAME_RESERVE_BYTES_MAX));
        return Ok(None);
    }
    buf.advance(FRAME_SIZE_PREFIX_BYTES);
    Ok(Some(buf.split_to(size).freeze()))
}

/// Reads and checks the size prefix; `Ok(None)` if fewer than 4 bytes are present.
pub fn peek_frame_size(buf: &[u8], max_bytes: usize) -> Result<Option<usize>> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let size = i32::from_be_bytes(*prefix);
    if size < 0 {
        return Err(DecodeError::NegativeFrameSize { size });
    }
    let size = size as usize;
    if size > max_bytes {
        return Err(DecodeError::FrameTooLarge {
            size,
            max: max_bytes,
        });
    }
    Ok(Some(size))
}

/// A decoded request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// The first 8 bytes of a request header, readable whatever the API.
/// A broker needs the correlation id to answer even a request it cannot parse.
pub fn peek_request_ids(frame: &[u8]) -> Result<(i16, i16, i32)> {
    if frame.len() < 8 {
        return Err(DecodeError::UnexpectedEof {
            offset: 0,
            need: 8,
            have: frame.len(),
        });
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok((api_key, api_version, correlation_id))
}

fn eof(offset: usize, need: usize, have: usize) -> DecodeError {
    DecodeError::UnexpectedEof { offset, need, have }
}

/// Reads an unsigned varint (at most 5 bytes) from the front of `buf`.
pub(crate) fn get_unsigned_varint(buf: &mut Bytes, offset: usize) -> Result<u32> {
    let mut value = 0u32;
    for i in 0..5 {
        if !buf.has_remaining() {
            return Err(eof(offset + i, 1, 0));
        }
        let byte = buf.get_u8();
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarintOverflow {
        offset,
        max_bytes: 5,
    })
}

/// Decodes a request header of `header_version` (0, 1 or 2) from the front of
/// `frame`, leaving `frame` at the start of the request body.
pub fn decode_request_header(frame: &mut Bytes, header_version: i16) -> Result<RequestHeader> {
    let total = frame.len();
    let (api_key, api_version, correlation_id) = peek_request_ids(frame)?;
    frame.advance(8);
    let mut client_id = None;
    if header_version >= 1 {
        if frame.remaining() < 2 {
            return Err(eof(total - frame.remaining(), 2, frame.remaining()));
        }
        let length = frame.get_i16();
        if length >= 0 {
            let length = length as usize;
            if frame.remaining() < length {
                return Err(eof(total - frame.remaining(), length, frame.remaining()));
            }
            let raw = frame.split_to(length);
            client_id = Some(String::from_utf8_lossy(&raw).into_owned());
        } else if length != -1 {
            return Err(DecodeError::InvalidLength {
                field: "client_id",
                length: i64::from(length),
                offset: 8,
            });
        }
    }
    if header_version >= 2 {
        skip_tagged_fields(frame, total)?;
    }
    Ok(RequestHeader {
        api_key,
        api_version,
        correlation_id,
        client_id,
    })
}

/// Skips a tagged-fields section (KIP-482) at the front of `buf`.
pub(crate) fn skip_tagged_fields(buf: &mut Bytes, total: usize) -> Result<()> {
    let count = get_unsigned_varint(buf, total - buf.remaining())?;
    if count > TAGGED_FIELDS_MAX {
        return Err(DecodeError::InvalidLength {
            field: "tagged_fields",
            length: i64::from(count),
            offset: total - buf.remaining(),
        });
    }
    for _ in 0..count {
        let _tag = get_unsigned_varint(buf, total - buf.remaining())?;
        let size = get_unsigned_varint(buf, total - buf.remaining())? as usize;
        if buf.remaining() < size {
            return Err(eof(total - buf.remaining(), size, buf.remaining()));
        }
        buf.advance(size);
    }
    Ok(())
}

/// Writes a request header of `header_version` (0, 1 or 2).
pub fn encode_request_header(out: &mut BytesMut, header: &RequestHeader, header_version: i16) {
    out.put_i16(header.api_key);
    out.put_i16(header.api_version);
    out.put_i32(header.correlation_id);
    if header_version >= 1 {
        match &header.client_id {
            Some(id) => {
                let id = &id.as_bytes()[..id.len().min(i16::MAX as usize)];
                out.put_i16(id.len() as i16);
                out.put_slice(id);
            }
            None => out.put_i16(-1),
        }
    }
    if header_version >= 2 {
        out.put_u8(0); // no tagged fields
    }
}

/// Writes a response header of `header_version` (0 or 1).
pub fn encode_response_header(out: &mut BytesMut, correlation_id: i32, header_version: i16) {
    out.put_i32(correlation_id);
    if header_version >= 1 {
        out.put_u8(0); // no tagged fields
    }
}

/// Decodes a response header of `header_version`, returning the correlation id.
pub fn decode_response_header(frame: &mut Bytes, header_version: i16) -> Result<i32> {
    let total = frame.len();
    if frame.remaining() < 4 {
        return Err(eof(0, 4, frame.remaining()));
    }
    let correlation_id = frame.get_i32();
    if header_version >= 1 {
        skip_tagged_fields(frame, total)?;
    }
    Ok(correlation_id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// A frame is returned only once whole; the bytes after it stay in the buffer.
    #[test]
    fn frames_come_out_whole_and_in_order() {
        let mut stream = framed(b"first");
        stream.extend(framed(b""));
        stream.extend(framed(b"third"));
        for cut in 0..stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut seen = Vec::new();
            while let Some(frame) = read_frame(&mut buf, 64).unwrap() {
                seen.push(frame);
            }
            let whole = [9usize, 13, 22].iter().filter(|&&end| end <= cut).count();
            assert_eq!(seen.len(), whole, "cut at {cut}");
        }
        let mut buf = BytesMut::from(&stream[..]);
        assert_eq!(&read_frame(&mut buf, 64).unwrap().unwrap()[..], b"first");
        assert_eq!(&read_frame(&mut buf, 64).unwrap().unwrap()[..], b"");
        assert_eq!(&read_frame(&mut buf, 64).unwrap().unwrap()[..], b"third");
        assert!(buf.is_empty());
    }

    /// A size above the maximum is rejected from the 4-byte prefix alone,
    /// before the buffer grows; a negative size is its own error.
    #[test]
    fn oversized_and_negative_frames_are_rejected_before_allocating() {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&(1_000_001i32).to_be_bytes());
        let capacity = buf.capacity();
        assert_eq!(
            read_frame(&mut buf, 1_000_000),
            Err(DecodeError::FrameTooLarge {
                size: 1_000_001,
                max: 1_000_000
            })
        );
        assert_eq!(buf.capacity(), capacity, "buffer grew for a rejected frame");
        let mut buf = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert_eq!(
            read_frame(&mut buf, 100),
            Err(DecodeError::NegativeFrameSize { size: -5 })
        );
    }

    /// A prefix announcing a large (allowed) frame reserves at most 1 MiB ahead.
    #[test]
    fn partial_frames_reserve_a_bounded_amount() {
        let mut buf = BytesMut::from(&(90_000_000i32).to_be_bytes()[..]);
        assert_eq!(read_frame(&mut buf, FRAME_BYTES_MAX_DEFAULT), Ok(None));
        assert!(
            buf.capacity() <= 2 * FRAME_RESERVE_BYTES_MAX,
            "reserved {}",
            buf.capacity()
        );
    }

    proptest! {
        /// Request headers v0-v2 round-trip every field the version carries.
        #[test]
        fn request_headers_round_trip(
            api_key in any::<i16>(),
            api_version in any::<i16>(),
            correlation_id in any::<i32>(),
            client_id in prop::option::of("[ -~]{0,40}"),
            header_version in 0i16..=2,
            body in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            let header = RequestHeader { api_key, api_version, correlation_id, client_id };
            let mut out = BytesMut::new();
            encode_request_header(&mut out, &header, header_version);
            out.extend_from_slice(&body);
            let mut frame = out.freeze();
            let decoded = decode_request_header(&mut frame, header_version).unwrap();
            let mut expected = header.clone();
            if header_version == 0 {
                expected.client_id = None;
            }
            prop_assert_eq!(decoded, expected);
            prop_assert_eq!(&frame[..], &body[..]);
        }

        /// Response headers v0-v1 round-trip the correlation id and leave the body.
        #[test]
        fn response_headers_round_trip(correlation_id in any::<i32>(), header_version in 0i16..=1) {
            let mut out = BytesMut::new();
            encode_response_header(&mut out, correlation_id, header_version);
            out.extend_from_slice(b"body");
            let mut frame = out.freeze();
            prop_assert_eq!(decode_response_header(&mut frame, header_version), Ok(correlation_id));
            prop_assert_eq!(&frame[..], b"body");
        }

        /// No byte string panics the header decoders.
        #[test]
        fn arbitrary_headers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            for version in 0..=2 {
                let _ = decode_request_header(&mut Bytes::from(bytes.clone()), version);
                let _ = decode_response_header(&mut Bytes::from(bytes.clone()), version.min(1));
            }
        }
    }

    fn v2_header(client_id: &[u8], tagged: &[u8]) -> Bytes {
        let mut out = vec![0, 3, 0, 9, 0, 0, 0, 42];
        out.extend_from_slice(client_id);
        out.extend_from_slice(tagged);
        Bytes::from(out)
    }

    /// Tagged fields in a v2 header are skipped; their malformations are typed errors.
    #[test]
    fn header_tagged_fields_and_client_ids() {
        let no_client = [0xffu8, 0xff];
        // Two tagged fields: tag 0 with 3 bytes, tag 5 with 0 bytes.
        let mut frame = v2_header(&no_client, &[2, 0, 3, 1, 2, 3, 5, 0, 0xaa]);
        let header = decode_request_header(&mut frame, 2).unwrap();
        assert_eq!(
            (header.api_key, header.api_version, header.correlation_id),
            (3, 9, 42)
        );
        assert_eq!(header.client_id, None);
        assert_eq!(&frame[..], &[0xaa]);

        let mut frame = v2_header(&no_client, &[1, 0, 9, 1]);
        assert!(matches!(
            decode_request_header(&mut frame, 2),
            Err(DecodeError::UnexpectedEof { .. })
        ));
        let mut frame = v2_header(&no_client, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(
            decode_request_header(&mut frame, 2),
            Err(DecodeError::VarintOverflow { .. })
        ));
        let mut frame = v2_header(&no_client, &[0x81, 0x10]);
        assert!(matches!(
            decode_request_header(&mut frame, 2),
            Err(DecodeError::InvalidLength {
                field: "tagged_fields",
                ..
            })
        ));
        let mut frame = v2_header(&[0xff, 0xfe], &[0]);
        assert!(matches!(
            decode_request_header(&mut frame, 2),
            Err(DecodeError::InvalidLength {
                field: "client_id",
                ..
            })
        ));
        let mut frame = v2_header(&[0x00, 0x10, b'a'], &[]);
        assert!(matches!(
            decode_request_header(&mut frame, 1),
            Err(DecodeError::UnexpectedEof { .. })
        ));
        let mut frame = Bytes::from_static(&[0, 3, 0]);
        assert!(matches!(
            decode_request_header(&mut frame, 0),
            Err(DecodeError::UnexpectedEof { .. })
        ));
    }
}
