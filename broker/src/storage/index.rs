//! Sparse offset and time indexes of one segment.
//!
//! Entries are kept in their on-disk encoding (see [`super::format`]) so that
//! one binary search serves both an index being built in memory for the
//! active segment and an index file mapped read-only for a closed one.

use std::fs::File;
use std::path::Path;

use bytes::Bytes;

use super::format::{
    decode_index_file, decode_offset_entry, decode_time_entry, encode_index_file,
    encode_offset_entry, encode_time_entry, IndexFileError, IndexHeader, IndexKind,
};

#[derive(Debug)]
enum Entries {
    /// Growing: the active segment's index, or one rebuilt from the log.
    Owned(Vec<u8>),
    /// A slice of a read-only mapping of the index file.
    Mapped(Bytes),
}

/// One sparse index: offset → position, or timestamp → offset.
#[derive(Debug)]
pub struct SparseIndex {
    kind: IndexKind,
    entries: Entries,
}

impl SparseIndex {
    pub fn new(kind: IndexKind) -> Self {
        SparseIndex {
            kind,
            entries: Entries::Owned(Vec::new()),
        }
    }

    pub fn from_entries(kind: IndexKind, entries: Vec<u8>) -> Self {
        assert_eq!(entries.len() % kind.entry_bytes(), 0);
        SparseIndex {
            kind,
            entries: Entries::Owned(entries),
        }
    }

    /// Maps an index file and checks it. `Ok(None)` if it does not exist;
    /// `Err` describes why an existing file is not usable.
    pub fn load(path: &Path, kind: IndexKind) -> std::io::Result<Option<(IndexHeader, Self)>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let len = file.metadata()?.len();
        if len == 0 {
            return Err(invalid(IndexFileError::Truncated { need: 1, have: 0 }));
        }
        // SAFETY: index files are written whole to a temporary name and renamed
        // into place, never modified afterwards; the mapping is read-only.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }?;
        let bytes = Bytes::from_owner(map);
        let (header, range) = decode_index_file(&bytes, kind).map_err(invalid)?;
        let entries = Entries::Mapped(bytes.slice(range));
        Ok(Some((header, SparseIndex { kind, entries })))
    }

    fn bytes(&self) -> &[u8] {
        match &self.entries {
            Entries::Owned(vec) => vec,
            Entries::Mapped(bytes) => bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes().len() / self.kind.entry_bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn owned(&mut self) -> &mut Vec<u8> {
        if let Entries::Mapped(bytes) = &self.entries {
            self.entries = Entries::Owned(bytes.to_vec());
        }
        match &mut self.entries {
            Entries::Owned(vec) => vec,
            Entries::Mapped(_) => unreachable!("converted to owned above"),
        }
    }

    pub fn push_offset(&mut self, relative_offset: u32, position: u32) {
        assert_eq!(self.kind, IndexKind::Offset);
        if let Some((last_rel, last_pos)) = self.last_offset_entry() {
            assert!(relative_offset > last_rel && position > last_pos);
        }
        encode_offset_entry(self.owned(), relative_offset, position);
    }

    pub fn push_time(&mut self, timestamp_ms: i64, relative_offset: u32) {
        assert_eq!(self.kind, IndexKind::Time);
        encode_time_entry(self.owned(), timestamp_ms, relative_offset);
    }

    pub fn last_offset_entry(&self) -> Option<(u32, u32)> {
        let n = self.len();
        (n > 0).then(|| decode_offset_entry(self.bytes(), n - 1))
    }

    pub fn last_time_entry(&self) -> Option<(i64, u32)> {
        let n = self.len();
        (n > 0).then(|| decode_time_entry(self.bytes(), n - 1))
    }

    /// Position of the last indexed batch whose base offset is `<= relative_offset`.
    pub fn lookup_offset(&self, relative_offset: u32) -> Option<u32> {
        assert_eq!(self.kind, IndexKind::Offset);
        let bytes = self.bytes();
        let count = partition_point(self.len(), |i| {
            decode_offset_entry(bytes, i).0 <= relative_offset
        });
        (count > 0).then(|| decode_offset_entry(bytes, count - 1).1)
    }

    /// Relative offset of the last entry whose timestamp is `< timestamp_ms`:
    /// every batch before that offset has a max timestamp below `timestamp_ms`.
    pub fn lookup_time(&self, timestamp_ms: i64) -> Option<u32> {
        assert_eq!(self.kind, IndexKind::Time);
        let bytes = self.bytes();
        let count = partition_point(self.len(), |i| decode_time_entry(bytes, i).0 < timestamp_ms);
        (count > 0).then(|| decode_time_entry(bytes, count - 1).1)
    }

    /// The index file's full contents for a segment described by `header`.
    pub fn encode_file(&self, header: &IndexHeader) -> Vec<u8> {
        assert_eq!(header.kind, self.kind);
        assert_eq!(header.entry_count as usize, self.len());
        encode_index_file(header, self.bytes())
    }
}

fn invalid(error: IndexFileError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error)
}

/// Number of leading indices in `0..len` for which `pred` holds (`pred` must be
/// true for a prefix and false after it).
fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let mid = low + (high - low) / 2;
        if pred(mid) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Offset lookup returns exactly the last entry at or below the target, for every target.
        #[test]
        fn offset_lookup_is_floor(gaps in proptest::collection::vec((1u32..50, 1u32..5000), 0..60), probe in 0u32..4000) {
            let mut index = SparseIndex::new(IndexKind::Offset);
            let mut model = Vec::new();
            let (mut rel, mut pos) = (0u32, 0u32);
            for (i, (drel, dpos)) in gaps.iter().enumerate() {
                if i > 0 { rel += drel; pos += dpos; }
                index.push_offset(rel, pos);
                model.push((rel, pos));
            }
            let expected = model.iter().rev().find(|(r, _)| *r <= probe).map(|(_, p)| *p);
            prop_assert_eq!(index.lookup_offset(probe), expected);
        }

        /// Time lookup returns the last entry strictly below the timestamp.
        #[test]
        fn time_lookup_is_strict_floor(steps in proptest::collection::vec(1i64..100, 0..60), probe in -10i64..3000) {
            let mut index = SparseIndex::new(IndexKind::Time);
            let mut model = Vec::new();
            let mut ts = 0i64;
            for (i, step) in steps.iter().enumerate() {
                ts += step;
                index.push_time(ts, i as u32 * 3);
                model.push((ts, i as u32 * 3));
            }
            let expected = model.iter().rev().find(|(t, _)| *t < probe).map(|(_, r)| *r);
            prop_assert_eq!(index.lookup_time(probe), expected);
        }
    }
}

/// Decides, batch by batch, when the indexes get an entry. Appends and
/// recovery scans use the same builder so that a rebuilt index equals the
/// one built while appending.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    interval_bytes: u64,
    bytes_since_entry: u64,
    max_timestamp_so_far: i64,
}

impl IndexBuilder {
    pub fn new(interval_bytes: u32) -> Self {
        IndexBuilder {
            interval_bytes: u64::from(interval_bytes.max(1)),
            bytes_since_entry: 0,
            max_timestamp_so_far: -1,
        }
    }

    /// Resumes after a segment whose indexes were loaded from disk.
    pub fn resume(interval_bytes: u32, bytes_since_entry: u64, max_timestamp_so_far: i64) -> Self {
        IndexBuilder {
            interval_bytes: u64::from(interval_bytes.max(1)),
            bytes_since_entry,
            max_timestamp_so_far,
        }
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp_so_far
    }

    /// Accounts for one batch at `position` with relative base offset
    /// `relative_offset`, adding index entries to `offsets`/`times` if due.
    pub fn on_batch(
        &mut self,
        offsets: &mut SparseIndex,
        times: &mut SparseIndex,
        position: u32,
        relative_offset: u32,
        total_bytes: u64,
        max_timestamp: i64,
    ) {
        if self.bytes_since_entry >= self.interval_bytes && position > 0 {
            offsets.push_offset(relative_offset, position);
            let last_time = times.last_time_entry().map_or(i64::MIN, |(ts, _)| ts);
            if self.max_timestamp_so_far > last_time {
                times.push_time(self.max_timestamp_so_far, relative_offset);
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += total_bytes;
        self.max_timestamp_so_far = self.max_timestamp_so_far.max(max_timestamp);
    }
}
