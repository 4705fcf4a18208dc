//! Retention: deleting whole old segments by age (`retention_ms`, judged by
//! a segment's largest timestamp, as Kafka does) and by total size
//! (`retention_bytes`). The active segment is never deleted, nor a rolled
//! segment whose final sync is still pending. Readers holding `Bytes` of a
//! deleted segment keep valid memory: unlinking a mapped file leaves the
//! mapping intact.

use std::sync::Arc;

use super::error::Result;
use super::log::{lock, PartitionLog};
use super::segment::{sync_dir, Segment};
use super::CleanupPolicy;

impl PartitionLog {
    /// Deletes the segments retention no longer keeps; returns how many.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let config = self.config();
        if config.cleanup_policy != CleanupPolicy::Delete {
            return Ok(0);
        }
        let shared = self.shared();
        let _maintenance = lock(&shared.maintenance);
        let segments = shared.segments_snapshot();
        let Some((_active, closed)) = segments.split_last() else {
            return Ok(0);
        };
        let mut total_bytes: u64 = segments.iter().map(|s| s.size_bytes()).sum();
        let mut doomed: Vec<Arc<Segment>> = Vec::new();
        for segment in closed {
            let expired = config.retention_ms >= 0
                && segment.max_timestamp() < now_ms.saturating_sub(config.retention_ms);
            let oversize = config.retention_bytes >= 0
                && total_bytes - segment.size_bytes() >= config.retention_bytes as u64;
            if !(expired || oversize) || shared.is_pending_closed(segment) {
                break;
            }
            total_bytes -= segment.size_bytes();
            doomed.push(segment.clone());
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        {
            let mut list = shared
                .segments
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Only this function (under the maintenance lock) removes from the front.
            assert!(doomed
                .iter()
                .zip(list.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b)));
            list.drain(..doomed.len());
        }
        for segment in &doomed {
            tracing::info!(file = %segment.log_path().display(), "retention: deleting segment");
            segment.delete_files()?;
        }
        sync_dir(self.dir())?;
        Ok(doomed.len())
    }
}
