//! Decoding errors shared by every decoder in this crate.
//!
//! A decoder distinguishes *incomplete* input (the caller should wait for
//! more bytes; expressed as `Ok(None)` by the functions that can see a
//! partial stream) from *malformed* input (one of these errors).

use thiserror::Error;

/// What went wrong while reading bytes from the network or from disk.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("unexpected end of input at byte {offset}: need {need} bytes, have {have}")]
    UnexpectedEof {
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { size: usize, max: usize },
    #[error("negative frame size {size}")]
    NegativeFrameSize { size: i32 },
    #[error("invalid {field} length {length} at byte {offset}")]
    InvalidLength {
        field: &'static str,
        length: i64,
        offset: usize,
    },
    #[error("varint at byte {offset} is longer than {max_bytes} bytes")]
    VarintOverflow { offset: usize, max_bytes: usize },
    #[error("unsupported record batch magic {magic} (only v2 is supported)")]
    UnsupportedMagic { magic: i8 },
    #[error(
        "record batch CRC-32C mismatch: header says {expected:#010x}, computed {actual:#010x}"
    )]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch declares {declared} records but {found} were decoded")]
    RecordCountMismatch { declared: i32, found: i32 },
    #[error("unknown compression codec {codec}")]
    UnknownCompression { codec: u8 },
    #[error("compression codec {codec} is not compiled into this build")]
    CompressionUnavailable { codec: &'static str },
    #[error("{codec} decompression failed: {reason}")]
    Decompression { codec: &'static str, reason: String },
    #[error("decompressed records exceed the limit of {max} bytes")]
    DecompressedTooLarge { max: usize },
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16 },
    #[error("unsupported version {api_version} of API {api_key}")]
    UnsupportedVersion { api_key: i16, api_version: i16 },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// Result type of this crate's decoders.
pub type Result<T, E = DecodeError> = std::result::Result<T, E>;
