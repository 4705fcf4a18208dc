//! The partition log storage engine. It knows nothing of the network: it
//! takes and gives `Bytes` holding Kafka RecordBatch v2 data.
//!
//! - [`format`]: every on-disk byte layout (file names, index files, checkpoint).
//! - [`segment`]: one `.log` file with its indexes; `pwritev` in, mapping out.
//! - [`index`]: sparse offset and time indexes.
//! - [`log`]: [`PartitionLog`], appends, reads, rolls.
//! - [`prepare`]: the next segment's file, created and reserved ahead of the roll.
//! - [`durability`]: group commit, flushes, the recovery checkpoint.
//! - [`cache_window`]: bounds on the page cache a partition keeps.
//! - [`recovery`]: opening a partition directory, validating what a crash may have torn.
//! - [`retention`] and [`compaction`]: background removal of old data.
//! - [`manager`]: [`LogManager`], all partitions of a data directory.
//! - [`background`]: the thread of the background pass, below request handling.
//!
//! # Durability
//!
//! The default [`FlushPolicy`] is [`FlushPolicy::Sync`]: [`PartitionLog::wait_durable`]
//! resolves only after an `fdatasync` that covers the offset, so a produce
//! acknowledged by the broker survives a crash of the process or of the
//! machine. Concurrent waiters share one `fdatasync` (group commit): while one
//! sync runs, later appends queue, and the next sync covers all of them.
//! `FlushPolicy::Periodic` trades that guarantee for throughput the way Kafka's
//! `flush.ms`/`flush.messages` do (Kafka's own default relies on replication,
//! which a single node does not have). A failed fsync poisons the partition:
//! it takes no more writes until a restart re-validates the log.
//!
//! # Recovery
//!
//! A clean shutdown leaves `.clean-shutdown` in the data directory and a
//! recovery checkpoint in each partition. After an unclean stop, every batch
//! of every segment not wholly below the checkpoint is re-validated (length,
//! magic, CRC-32C, offsets increasing); the log is truncated at the first
//! invalid batch (with a warning naming file and position) and later segments
//! are deleted, as Kafka does, because data after a hole cannot be trusted to
//! be what was acknowledged. A zero-filled tail is the unused preallocation,
//! not corruption. Corruption inside a segment below the checkpoint is found
//! when a read reaches it (reads check the CRC of every batch not yet
//! verified in this process) and is reported as [`StorageError::Corrupt`];
//! such bytes are never served, and the log is not cut, since the data after
//! them was acknowledged and is intact.

pub mod background;
pub mod cache_window;
pub mod compaction;
pub mod durability;
pub mod error;
pub mod format;
pub mod index;
pub mod log;
pub mod manager;
pub mod prepare;
pub mod recovery;
pub mod retention;
pub mod segment;

pub use error::{Result, StorageError};
pub use log::{AppendInfo, PartitionLog};
pub use manager::LogManager;

use std::sync::Arc;

/// When appended data is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Acknowledge only after an fdatasync covering the data (group commit).
    Sync,
    /// Acknowledge once in the page cache; fdatasync every `flush_ms`, or
    /// once `flush_messages` batches have accumulated, whichever is first.
    Periodic { flush_ms: u64, flush_messages: u64 },
}

/// Kafka's `cleanup.policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
}

impl CleanupPolicy {
    /// Parses Kafka's `cleanup.policy` value.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "delete" => Some(CleanupPolicy::Delete),
            "compact" => Some(CleanupPolicy::Compact),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

/// Settings of one partition log (topic overrides are applied by the broker).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Roll to a new segment past this size. 128 MiB: large enough that
    /// per-segment costs vanish, small enough that crash recovery (which
    /// re-validates the active segment) stays well under a second.
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// -1 = unlimited.
    pub retention_bytes: i64,
    /// -1 = unlimited.
    pub retention_ms: i64,
    pub index_interval_bytes: u32,
    /// Largest batch accepted by `append`.
    pub max_message_bytes: u32,
    pub cleanup_policy: CleanupPolicy,
    /// How long tombstones survive compaction.
    pub delete_retention_ms: u64,
    pub flush: FlushPolicy,
    /// Keep at most this many bytes behind the end of the log in the page
    /// cache once they are on disk; `None` leaves the page cache to the
    /// kernel (Kafka's behaviour). See [`cache_window`].
    pub cache_window_bytes: Option<u64>,
    /// As `cache_window_bytes`, but only for data a fetch has returned, and
    /// no faster than appends come in. See [`cache_window`].
    pub consumed_cache_window_bytes: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
            flush: FlushPolicy::Sync,
            cache_window_bytes: None,
            consumed_cache_window_bytes: Some(cache_window::CONSUMED_CACHE_WINDOW_BYTES_DEFAULT),
        }
    }
}

/// Largest `segment_bytes`: index entries hold 32-bit positions, and Kafka
/// caps `segment.bytes` at `i32::MAX` too.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Disk space reserved ahead of the write position of the active segment at
/// a time. Reserving the whole segment at once would tie up
/// `segment_bytes` of disk per partition even for idle partitions.
pub const PREALLOCATE_CHUNK_BYTES: u64 = 16 * 1024 * 1024;
/// The page cache of the active segment is dropped in steps of this many
/// bytes, so a slow partition is not visited with a syscall per pass.
pub const CACHE_DROP_STEP_BYTES: u64 = 4 * 1024 * 1024;
/// The background pass writes back and drops pages in syscalls of at most
/// this many bytes and yields the CPU between them: the kernel work of one
/// call (about 0.15 ms per MiB here) cannot be preempted on kernels built
/// without preemption, and a request thread woken meanwhile would wait
/// for all of it (see [`background`]). Smaller steps cost more than they
/// save: each drop drains the per-CPU page lists and flushes TLBs, and at
/// 1 MiB a 5 GB produce with a cache window lost a sixth of its speed.
pub const BACKGROUND_STEP_BYTES: u64 = 4 * 1024 * 1024;

impl LogConfig {
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: String| Err(StorageError::InvalidConfig { reason });
        if self.segment_bytes < 1024 || self.segment_bytes > SEGMENT_BYTES_MAX {
            return fail(format!(
                "segment_bytes {} outside 1024..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        if u64::from(self.max_message_bytes) > SEGMENT_BYTES_MAX || self.max_message_bytes < 61 {
            return fail(format!(
                "max_message_bytes {} out of range",
                self.max_message_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return fail("index_interval_bytes must be positive".to_string());
        }
        if let FlushPolicy::Periodic { flush_ms: 0, .. } = self.flush {
            return fail("flush_ms must be positive".to_string());
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, as the log sees time. Tests inject their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
pub(crate) mod test_util;
