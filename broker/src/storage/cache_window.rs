//! The page-cache window (`LogConfig::cache_window_bytes`).
//!
//! By default the page cache is the kernel's business, as in Kafka. With a
//! window, every background pass drops the page cache of what lies more
//! than the window behind the end of the log (writing back whatever is still
//! dirty first), and starts the writeback of what was appended since the
//! last pass so that the drop rarely waits for the disk. Appends then write
//! into just-freed pages instead of growing the page cache into memory the
//! machine has not touched: on virtual machines whose host takes back free
//! guest memory (free page reporting, ballooning), a fresh page costs a
//! fault in the host, and a broker writing 5 GB ran at half the speed and
//! three to four times the CPU of one recycling its pages (BENCHMARKS.md).
//! The price is that consumers further behind than the window read from
//! disk. Durability is untouched: dropping clean pages is what the kernel's
//! own reclaim does; the flush still decides what is fdatasync'ed. Segments
//! found on disk at start-up are left as the kernel has them.

use std::sync::atomic::Ordering;

use super::log::Shared;
use super::CACHE_DROP_STEP_BYTES;

impl Shared {
    /// Drops the page cache more than `window_bytes` behind the end of the
    /// log, newest segment first, stopping at the first rolled segment
    /// already wholly dropped (the ones before it are too), then starts the
    /// writeback of the active segment's new pages. A failed writeback
    /// poisons the partition as a failed flush does: the kernel reports it
    /// once, here, and the next fdatasync would not see it.
    pub(crate) fn trim_page_cache(&self, window_bytes: u64) {
        if self.poisoned.load(Ordering::Acquire) {
            return;
        }
        let segments = self.segments_snapshot();
        let mut keep_bytes = window_bytes;
        for (newest_first, segment) in segments.iter().rev().enumerate() {
            let size = segment.size_bytes();
            let rolled = newest_first > 0;
            if rolled && segment.uncached_bytes() >= size {
                break;
            }
            if keep_bytes >= size {
                keep_bytes -= size;
                continue;
            }
            let drop_below = size - keep_bytes;
            keep_bytes = 0;
            // A rolled segment goes whole; the active one in steps.
            let drop_below = if rolled && drop_below == size {
                size
            } else {
                drop_below - drop_below % CACHE_DROP_STEP_BYTES
            };
            let result = segment.drop_cache_below(drop_below);
            #[cfg(test)]
            let result = match self.fail_next_sync.swap(false, Ordering::AcqRel) {
                true => Err(super::StorageError::io(
                    &self.dir,
                    std::io::Error::from_raw_os_error(libc::EIO),
                )),
                false => result,
            };
            if let Err(error) = result {
                self.poisoned.store(true, Ordering::Release);
                tracing::error!(topic = %self.topic, partition = self.partition, %error, "writeback failed; partition poisoned");
                return;
            }
        }
        self.start_active_writeback();
    }
}
