//! Durability: group commit for `FlushPolicy::Sync`, flushes for the
//! periodic policy and shutdown, and the recovery checkpoint that a flush
//! of rolled segments advances.
//!
//! One flush at a time runs (`flush_lock`); producers waiting in
//! [`PartitionLog::wait_durable`] queue on an async gate while it runs and,
//! when it ends, most find their offset covered without a sync of their own.
//! A failed fsync poisons the partition: after it, the page cache may have
//! dropped the dirty pages, so neither a retry nor a later append may be
//! acknowledged.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::error::{Result, StorageError};
use super::format::{encode_checkpoint, RECOVERY_CHECKPOINT_FILE};
use super::log::{lock, PartitionLog, Shared};
use super::segment::{sync_dir, write_file_atomically, Segment};
use super::FlushPolicy;

impl PartitionLog {
    pub async fn wait_durable(&self, offset: i64) -> Result<()> {
        let shared = self.shared();
        if shared.config().flush != FlushPolicy::Sync {
            return shared.check_writable();
        }
        if shared.durable_end.load(Ordering::Acquire) > offset {
            return Ok(());
        }
        let log_end = self.log_end_offset();
        if offset >= log_end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start_offset(),
                log_end,
            });
        }
        // Waiters queue here while one sync runs; when it finishes, most of
        // them find their offset covered and return without a sync of their own.
        let _gate = shared.sync_gate.lock().await;
        if shared.durable_end.load(Ordering::Acquire) > offset {
            return Ok(());
        }
        let worker = shared.clone();
        tokio::task::spawn_blocking(move || worker.flush())
            .await
            .map_err(|e| StorageError::Io {
                path: shared.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        Ok(())
    }

    /// Makes everything appended so far durable (blocking). Returns the offset below which all is durable.
    pub fn flush(&self) -> Result<i64> {
        self.shared().flush()
    }
}

impl Shared {
    /// Trims and syncs rolled segments (with their index files and a new recovery
    /// checkpoint) and the active segment. A failure poisons the partition.
    pub fn flush(&self) -> Result<i64> {
        self.check_writable_or_closed()?;
        let _flush = lock(&self.flush_lock);
        let target = self.log_end.load(Ordering::Acquire);
        // The active segment is taken before the pending list: a roll pushes
        // the old segment to the list before it publishes the new one.
        let active = self.segments_snapshot().last().cloned();
        let pending = std::mem::take(&mut *lock(&self.pending_closed));
        self.flush_count.fetch_add(1, Ordering::Relaxed);
        let result = self.flush_segments(active.as_ref(), &pending);
        if let Err(error) = result {
            self.poisoned.store(true, Ordering::Release);
            tracing::error!(topic = %self.topic, partition = self.partition, %error, "sync failed; partition poisoned");
            return Err(error);
        }
        self.durable_end.fetch_max(target, Ordering::AcqRel);
        self.batches_since_flush.store(0, Ordering::Relaxed);
        self.last_flush_ms.store((self.clock)(), Ordering::Relaxed);
        Ok(target)
    }

    /// Starts the writeback of what was appended to the active segment
    /// since the last call, in steps that yield the CPU (background pass
    /// only). A failure here is only logged: the fdatasync that follows, or
    /// the cache window's drop, reports it.
    pub(crate) fn start_active_writeback(&self) {
        if let Some(active) = self.segments_snapshot().last() {
            if let Err(error) = active.start_writeback() {
                tracing::warn!(topic = %self.topic, partition = self.partition, %error, "starting writeback failed");
            }
        }
    }

    fn check_writable_or_closed(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned {
                topic: self.topic.clone(),
                partition: self.partition,
            });
        }
        Ok(())
    }

    fn flush_segments(
        &self,
        active: Option<&Arc<Segment>>,
        pending: &[Arc<Segment>],
    ) -> Result<()> {
        #[cfg(test)]
        if self.fail_next_sync.swap(false, Ordering::AcqRel) {
            return Err(StorageError::io(
                &self.dir,
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        for segment in pending {
            segment.truncate_to_size()?;
            segment.write_index_files()?;
            segment.sync(true)?;
        }
        if let Some(active) = active {
            active.sync(false)?;
        }
        if !pending.is_empty() {
            // Creating the new segment files and the index renames must
            // persist before the checkpoint vouches for them.
            sync_dir(&self.dir)?;
            if let Some(active) = active {
                self.write_checkpoint(active.base_offset())?;
            }
        }
        Ok(())
    }

    pub fn has_pending_closed(&self) -> bool {
        !lock(&self.pending_closed).is_empty()
    }

    pub fn is_pending_closed(&self, segment: &Arc<Segment>) -> bool {
        lock(&self.pending_closed)
            .iter()
            .any(|s| Arc::ptr_eq(s, segment))
    }

    pub fn write_checkpoint(&self, offset: i64) -> Result<()> {
        let path = self.dir.join(RECOVERY_CHECKPOINT_FILE);
        write_file_atomically(&path, &encode_checkpoint(offset))?;
        sync_dir(&self.dir)
    }

    pub(super) fn close(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.flush()?;
        let writer = lock(&self.writer);
        self.closed.store(true, Ordering::Release);
        let active = writer.active.clone();
        active.close()?;
        active.write_index_files()?;
        active.sync(true)?;
        sync_dir(&self.dir)?;
        self.write_checkpoint(active.next_offset())?;
        drop(writer);
        self.end_tx.send_replace(i64::MAX);
        self.discard_prepared();
        Ok(())
    }
}
