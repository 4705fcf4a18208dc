//! The on-disk format of a partition log, reader and writer side by side.
//!
//! ```text
//! <data_dir>/
//!   .clean-shutdown                     present only between a clean shutdown and the next start
//!   <topic>-<partition>/
//!     recovery-checkpoint               offset below which every segment and index is durable
//!     00000000000000000000.log          record batches (Kafka RecordBatch v2), back to back
//!     00000000000000000000.index        sparse offset index of that segment
//!     00000000000000000000.timeindex    sparse time index of that segment
//!     00000000000000041234.log          next segment: its name is its base offset
//!     ...
//! ```
//!
//! A `.log` file is a plain concatenation of batches exactly as Kafka puts them on
//! the wire, with broker-assigned base offsets. The active segment is
//! preallocated, so after an unclean stop its file may end with zeros; a zero
//! `batch_length` is below the minimum and so never decodes as a batch.
//!
//! Index files (both kinds) are a 48-byte header followed by fixed-size entries:
//!
//! ```text
//! offset size field
//!      0    4 magic          "SKOI" (offset index) or "SKTI" (time index)
//!      4    2 version        1
//!      6    2 entry_bytes    8 (offset index) or 12 (time index)
//!      8    8 base_offset    the segment's base offset
//!     16    8 log_bytes      size of the .log this index was built from
//!     24    8 next_offset    one past the segment's last offset
//!     32    8 max_timestamp  largest batch max_timestamp in the segment (-1 if none)
//!     40    4 entry_count
//!     44    4 crc            crc32fast of bytes 0..44 followed by the entries
//!
//! offset index entry: relative_offset u32 | position u32        (base offset of an indexed batch)
//! time index entry:   timestamp i64 | relative_offset u32       (max timestamp of every batch
//!                                                                before that batch)
//! ```
//!
//! An index is derived from the log and never evidence about it: a checksum
//! mismatch, a `log_bytes` different from the log's size, or any other doubt
//! makes the index stale, and it is rebuilt from the log.
//!
//! The recovery checkpoint is 24 bytes: magic "SKRC", version u16, 2 zero bytes,
//! offset i64, 4 zero bytes, crc32fast of bytes 0..20. All integers big-endian.

use std::path::{Path, PathBuf};

pub const LOG_SUFFIX: &str = "log";
pub const OFFSET_INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Suffix of files being written before an atomic rename into place.
pub const TEMP_SUFFIX: &str = "tmp";
/// Suffix of a compacted segment before it replaces the original.
pub const CLEANED_SUFFIX: &str = "cleaned";
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
pub const RECOVERY_CHECKPOINT_FILE: &str = "recovery-checkpoint";

pub const INDEX_HEADER_BYTES: usize = 48;
pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;
pub const INDEX_VERSION: u16 = 1;
pub const CHECKPOINT_BYTES: usize = 24;
const CHECKPOINT_VERSION: u16 = 1;
const CHECKPOINT_MAGIC: [u8; 4] = *b"SKRC";

const _: () = assert!(OFFSET_ENTRY_BYTES == 8);
const _: () = assert!(TIME_ENTRY_BYTES == 12);
const _: () = assert!(INDEX_HEADER_BYTES == 48);
const _: () = assert!(CHECKPOINT_BYTES == 24);

/// `{base_offset:020}.{suffix}`.
pub fn segment_file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

pub fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(segment_file_name(base_offset, suffix))
}

/// The base offset of a `.log` file name, or `None` for any other file.
pub fn parse_log_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// `<topic>-<partition>`; topics may themselves contain '-'.
pub fn parse_partition_dir_name(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if topic.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_string(), partition.parse().ok()?))
}

/// Which of the two index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Offset,
    Time,
}

impl IndexKind {
    pub fn magic(self) -> [u8; 4] {
        match self {
            IndexKind::Offset => *b"SKOI",
            IndexKind::Time => *b"SKTI",
        }
    }
    pub fn entry_bytes(self) -> usize {
        match self {
            IndexKind::Offset => OFFSET_ENTRY_BYTES,
            IndexKind::Time => TIME_ENTRY_BYTES,
        }
    }
    pub fn suffix(self) -> &'static str {
        match self {
            IndexKind::Offset => OFFSET_INDEX_SUFFIX,
            IndexKind::Time => TIME_INDEX_SUFFIX,
        }
    }
}

pub fn encode_offset_entry(out: &mut Vec<u8>, relative_offset: u32, position: u32) {
    out.extend_from_slice(&relative_offset.to_be_bytes());
    out.extend_from_slice(&position.to_be_bytes());
}

/// `(relative_offset, position)` of entry `i`.
pub fn decode_offset_entry(entries: &[u8], i: usize) -> (u32, u32) {
    let at = i * OFFSET_ENTRY_BYTES;
    (be_u32(entries, at), be_u32(entries, at + 4))
}

pub fn encode_time_entry(out: &mut Vec<u8>, timestamp_ms: i64, relative_offset: u32) {
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&relative_offset.to_be_bytes());
}

/// `(timestamp_ms, relative_offset)` of entry `i`.
pub fn decode_time_entry(entries: &[u8], i: usize) -> (i64, u32) {
    let at = i * TIME_ENTRY_BYTES;
    (be_i64(entries, at), be_u32(entries, at + 8))
}

/// What an index file says about the segment it was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub kind: IndexKind,
    pub base_offset: i64,
    pub log_bytes: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub entry_count: u32,
}

/// The whole index file: header (with checksum) and entries.
pub fn encode_index_file(header: &IndexHeader, entries: &[u8]) -> Vec<u8> {
    assert_eq!(
        entries.len(),
        header.entry_count as usize * header.kind.entry_bytes()
    );
    let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + entries.len());
    out.extend_from_slice(&header.kind.magic());
    out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
    out.extend_from_slice(&(header.kind.entry_bytes() as u16).to_be_bytes());
    out.extend_from_slice(&header.base_offset.to_be_bytes());
    out.extend_from_slice(&header.log_bytes.to_be_bytes());
    out.extend_from_slice(&header.next_offset.to_be_bytes());
    out.extend_from_slice(&header.max_timestamp.to_be_bytes());
    out.extend_from_slice(&header.entry_count.to_be_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out);
    hasher.update(entries);
    out.extend_from_slice(&hasher.finalize().to_be_bytes());
    out.extend_from_slice(entries);
    out
}

/// Why an index file was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexFileError {
    #[error(
        "index file of {have} bytes is shorter than its header or its {need} bytes of entries"
    )]
    Truncated { need: usize, have: usize },
    #[error("bad magic, version or entry size")]
    BadHeader,
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
}

/// Parses and checks an index file; returns the header and the byte range of the entries.
pub fn decode_index_file(
    bytes: &[u8],
    kind: IndexKind,
) -> Result<(IndexHeader, std::ops::Range<usize>), IndexFileError> {
    if bytes.len() < INDEX_HEADER_BYTES {
        return Err(IndexFileError::Truncated {
            need: INDEX_HEADER_BYTES,
            have: bytes.len(),
        });
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    let entry_bytes = usize::from(u16::from_be_bytes([bytes[6], bytes[7]]));
    if bytes[0..4] != kind.magic() || version != INDEX_VERSION || entry_bytes != kind.entry_bytes()
    {
        return Err(IndexFileError::BadHeader);
    }
    let entry_count = be_u32(bytes, 40);
    let entries_len = (entry_count as usize).saturating_mul(entry_bytes);
    let need = INDEX_HEADER_BYTES.saturating_add(entries_len);
    if bytes.len() != need {
        return Err(IndexFileError::Truncated {
            need,
            have: bytes.len(),
        });
    }
    let stored = be_u32(bytes, 44);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..44]);
    hasher.update(&bytes[INDEX_HEADER_BYTES..]);
    let computed = hasher.finalize();
    if stored != computed {
        return Err(IndexFileError::Checksum { stored, computed });
    }
    let header = IndexHeader {
        kind,
        base_offset: be_i64(bytes, 8),
        log_bytes: be_i64(bytes, 16) as u64,
        next_offset: be_i64(bytes, 24),
        max_timestamp: be_i64(bytes, 32),
        entry_count,
    };
    Ok((header, INDEX_HEADER_BYTES..bytes.len()))
}

pub fn encode_checkpoint(offset: i64) -> [u8; CHECKPOINT_BYTES] {
    let mut out = [0u8; CHECKPOINT_BYTES];
    out[0..4].copy_from_slice(&CHECKPOINT_MAGIC);
    out[4..6].copy_from_slice(&CHECKPOINT_VERSION.to_be_bytes());
    out[8..16].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32fast::hash(&out[..20]);
    out[20..24].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The checkpointed offset, or `None` if the file is not a valid checkpoint.
pub fn decode_checkpoint(bytes: &[u8]) -> Option<i64> {
    if bytes.len() != CHECKPOINT_BYTES
        || bytes[0..4] != CHECKPOINT_MAGIC
        || u16::from_be_bytes([bytes[4], bytes[5]]) != CHECKPOINT_VERSION
        || crc32fast::hash(&bytes[..20]) != be_u32(bytes, 20)
    {
        return None;
    }
    let offset = be_i64(bytes, 8);
    (offset >= 0).then_some(offset)
}

fn be_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// File names round-trip, and names that are not ours are ignored.
    #[test]
    fn names_round_trip() {
        assert_eq!(
            segment_file_name(42, LOG_SUFFIX),
            "00000000000000000042.log"
        );
        assert_eq!(parse_log_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(
            parse_partition_dir_name("my-topic-7"),
            Some(("my-topic".to_string(), 7))
        );
        assert_eq!(parse_partition_dir_name("-7"), None);
        assert_eq!(parse_partition_dir_name("topic-x"), None);
    }

    proptest! {
        /// Any index file round-trips, and any single flipped bit is detected.
        #[test]
        fn index_file_round_trip_and_bit_flip(
            base in 0i64..1 << 40, log_bytes in 0u64..1 << 31, entries in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..40),
            flip in any::<proptest::sample::Index>(),
        ) {
            let mut encoded = Vec::new();
            for (rel, pos) in &entries {
                encode_offset_entry(&mut encoded, *rel, *pos);
            }
            let header = IndexHeader {
                kind: IndexKind::Offset, base_offset: base, log_bytes, next_offset: base + 1,
                max_timestamp: -1, entry_count: entries.len() as u32,
            };
            let file = encode_index_file(&header, &encoded);
            let (decoded, range) = decode_index_file(&file, IndexKind::Offset).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded, header);
            prop_assert_eq!(&file[range], &encoded[..]);
            prop_assert!(decode_index_file(&file, IndexKind::Time).is_err());
            let mut corrupt = file.clone();
            let bit = flip.index(corrupt.len() * 8);
            corrupt[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_index_file(&corrupt, IndexKind::Offset).is_err());
        }

        /// Checkpoints round-trip; a flipped bit or a page of zeros is rejected.
        #[test]
        fn checkpoint_round_trip(offset in 0i64..i64::MAX, flip in 0usize..CHECKPOINT_BYTES * 8) {
            let bytes = encode_checkpoint(offset);
            prop_assert_eq!(decode_checkpoint(&bytes), Some(offset));
            let mut corrupt = bytes;
            corrupt[flip / 8] ^= 1 << (flip % 8);
            prop_assert_eq!(decode_checkpoint(&corrupt), None);
            prop_assert_eq!(decode_checkpoint(&[0u8; CHECKPOINT_BYTES]), None);
        }
    }
}
