//! The next segment, prepared ahead. While a busy partition's active
//! segment fills, the background pass creates the next segment's file and
//! reserves its whole capacity on disk; the roll renames it into place.
//! Neither the roll nor the appends after it then allocate disk space while
//! the partition's producers and consumers wait: on ext4 an allocation can
//! read block bitmaps from disk and issue discards, and perf showed appends
//! held 10-20 ms by `fallocate` several times a second at 250 MB/s.
//!
//! Only partitions that filled half a segment within [`PREPARE_WITHIN_MS`]
//! get one, so an idle partition keeps only the data and a chunk of
//! preallocation on disk; a busy one reserves up to two segments.

use std::sync::atomic::Ordering;

use super::error::Result;
use super::log::{lock, Shared};
use super::segment::PreparedFile;

/// A partition is busy enough for a prepared segment if its active
/// segment reached half of its size within this long (about 1 MB/s at
/// the default 128 MiB segments).
pub const PREPARE_WITHIN_MS: i64 = 60_000;

impl Shared {
    /// Prepares the next segment's file if the active segment is busy and
    /// half full, and none is prepared yet.
    pub fn prepare_next_segment(&self, now_ms: i64) -> Result<()> {
        let _maintenance = lock(&self.maintenance);
        if self.closed.load(Ordering::Acquire) || lock(&self.prepared).is_some() {
            return Ok(());
        }
        let active = self
            .segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last()
            .cloned();
        let Some(active) = active else {
            return Ok(());
        };
        let config = self.config();
        let roll_at = config.segment_bytes.min(active.capacity_bytes());
        let half_full = active.size_bytes().saturating_mul(2) >= roll_at;
        if !half_full || now_ms.saturating_sub(active.created_ms()) > PREPARE_WITHIN_MS {
            return Ok(());
        }
        let capacity = config
            .segment_bytes
            .max(u64::from(config.max_message_bytes));
        // A new name each time: a roll may still be renaming the last one.
        let sequence = self.prepared_count.fetch_add(1, Ordering::Relaxed);
        let prepared = PreparedFile::create(&self.dir, sequence, capacity)?;
        *lock(&self.prepared) = Some(prepared);
        Ok(())
    }

    /// The prepared file, if one fits a segment of `capacity_bytes`; one
    /// that does not (the config changed, or a batch is larger) is deleted.
    pub(super) fn take_prepared(&self, capacity_bytes: u64) -> Option<PreparedFile> {
        let prepared = lock(&self.prepared).take()?;
        if prepared.capacity_bytes() == capacity_bytes {
            Some(prepared)
        } else {
            prepared.delete();
            None
        }
    }

    /// Deletes the prepared file, if any (the log is closed). The
    /// maintenance lock waits out a preparation begun before the close.
    pub(super) fn discard_prepared(&self) {
        let _maintenance = lock(&self.maintenance);
        if let Some(prepared) = lock(&self.prepared).take() {
            prepared.delete();
        }
    }
}
