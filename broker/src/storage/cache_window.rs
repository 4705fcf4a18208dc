//! The page-cache windows (`LogConfig::cache_window_bytes` and
//! `LogConfig::consumed_cache_window_bytes`).
//!
//! Appends grow the page cache. On virtual machines whose host takes back
//! free guest memory (free page reporting, ballooning), every page the cache
//! grows into costs a fault in the host: a broker writing 5 GB ran at half
//! the speed and three to four times the CPU of one recycling its pages,
//! and a broker fed at a steady rate spent most of a core on it
//! (BENCHMARKS.md). Dropping the cache of old data lets appends write into
//! just-freed pages instead.
//!
//! - The consumed window (on by default, 256 MiB) drops only what a fetch
//!   has already returned and what lies more than the window behind the end
//!   of the log, and no faster than data is appended (a budget that appends
//!   fill, capped at the window): the cache stops growing while consumers
//!   keep up, and is left alone while nobody appends (a consumer reading a
//!   backlog gains nothing from drops) or nobody reads (data not yet
//!   consumed keeps its cache). The price: a consumer that trails another
//!   consumer of the partition by more than the window reads from disk.
//! - The window (off by default) drops whatever lies further behind the end
//!   than it, read or not: a producer writing far more than memory recycles
//!   its pages too, and consumers further behind read from disk.
//!
//! Dirty pages are written back before they are dropped, so durability is
//! untouched: dropping clean pages is what the kernel's own reclaim does,
//! and the flush still decides what is fdatasync'ed. Segments found on disk
//! at start-up are left as the kernel has them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::log::Shared;
use super::CACHE_DROP_STEP_BYTES;

/// The default consumed window: more than a second of the fastest single
/// partition's appends here (so consumers of several groups at the tail
/// share the cache), small next to the memory of any machine running a
/// broker.
pub const CONSUMED_CACHE_WINDOW_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

/// What a trim needs to know of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentCache {
    pub size_bytes: u64,
    /// The prefix already dropped.
    pub uncached_bytes: u64,
    /// The end of the furthest read from the segment.
    pub read_high_bytes: u64,
    /// The segment appends go to; its cache is dropped in whole steps.
    pub active: bool,
}

/// The partition's windows; `None` is a window that is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Windows {
    pub all_bytes: Option<u64>,
    pub consumed_bytes: Option<u64>,
}

/// Where to drop each segment's cache below (oldest segment first; a value
/// not above the segment's `uncached_bytes` drops nothing). Consumed-window
/// drops spend `budget_bytes`; drops of the full window are free.
pub(crate) fn plan_drops(
    segments: &[SegmentCache],
    windows: Windows,
    budget_bytes: &mut u64,
) -> Vec<u64> {
    // Per segment, the positions below which its data lies more than each
    // window behind the end of the log.
    let mut floors = vec![(0u64, 0u64); segments.len()];
    let mut newer_bytes = 0u64;
    for (segment, floor) in segments.iter().zip(floors.iter_mut()).rev() {
        let behind = |window_bytes: u64| {
            segment
                .size_bytes
                .saturating_sub(window_bytes.saturating_sub(newer_bytes))
        };
        *floor = (
            windows.all_bytes.map_or(0, behind),
            windows
                .consumed_bytes
                .map_or(0, |window| behind(window).min(segment.read_high_bytes)),
        );
        newer_bytes += segment.size_bytes;
    }
    segments
        .iter()
        .zip(floors)
        .map(|(segment, (all, consumed))| {
            let free = all.max(segment.uncached_bytes);
            let wanted = free.max(consumed.min(free.saturating_add(*budget_bytes)));
            // A rolled segment goes whole; otherwise whole steps, so that a
            // slow partition is not visited with a syscall per pass.
            let target = if !segment.active && wanted >= segment.size_bytes {
                segment.size_bytes
            } else {
                wanted - wanted % CACHE_DROP_STEP_BYTES
            };
            *budget_bytes -= target.saturating_sub(free).min(*budget_bytes);
            target
        })
        .collect()
}

/// The trim's state between passes (only the background pass touches it).
#[derive(Debug, Default)]
pub(crate) struct TrimState {
    /// `Shared::appended_bytes` at the last pass.
    pub seen_appended_bytes: u64,
    /// What consumed-window drops may still free.
    pub budget_bytes: u64,
}

impl Shared {
    /// Drops the page cache as the windows say (see the module docs), then
    /// starts the writeback of the active segment's new pages when a drop
    /// will want them clean. A failed writeback poisons the partition as a
    /// failed flush does: the kernel reports it once, here, and the next
    /// fdatasync would not see it.
    pub(crate) fn trim_page_cache(&self, windows: Windows) {
        if self.poisoned.load(Ordering::Acquire) {
            return;
        }
        // Only the background pass takes this lock.
        let mut state = super::log::lock(&self.trim);
        let appended_bytes = self.appended_bytes.load(Ordering::Relaxed);
        let new_bytes = appended_bytes.saturating_sub(state.seen_appended_bytes);
        // Nothing appended: no page to recycle, and an idle partition costs
        // the pass no more than this.
        if new_bytes == 0 && windows.all_bytes.is_none() {
            return;
        }
        state.seen_appended_bytes = appended_bytes;
        // Saved budget is capped: after a long stretch of appends with nobody
        // reading, the first reader does not set off a burst.
        let budget_max = windows
            .consumed_bytes
            .unwrap_or(0)
            .max(2 * CACHE_DROP_STEP_BYTES);
        state.budget_bytes = state.budget_bytes.saturating_add(new_bytes).min(budget_max);
        let segments = self.segments_snapshot();
        let Some(active) = segments.last() else {
            return;
        };
        let caches: Vec<SegmentCache> = segments
            .iter()
            .map(|segment| SegmentCache {
                size_bytes: segment.size_bytes(),
                uncached_bytes: segment.uncached_bytes(),
                read_high_bytes: segment.read_high_bytes(),
                active: Arc::ptr_eq(segment, active),
            })
            .collect();
        let targets = plan_drops(&caches, windows, &mut state.budget_bytes);
        drop(state);
        for ((segment, cache), target) in segments.iter().zip(&caches).zip(targets) {
            if target <= cache.uncached_bytes {
                continue;
            }
            let result = segment.drop_cache_below(target);
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
        let active_read = active.read_high_bytes() > active.uncached_bytes();
        if windows.all_bytes.is_some() || (windows.consumed_bytes.is_some() && active_read) {
            self.start_active_writeback();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn segment(size_mib: u64, read_high_mib: u64, active: bool) -> SegmentCache {
        SegmentCache {
            size_bytes: size_mib * MIB,
            uncached_bytes: 0,
            read_high_bytes: read_high_mib * MIB,
            active,
        }
    }

    fn consumed(window_mib: u64) -> Windows {
        Windows {
            all_bytes: None,
            consumed_bytes: Some(window_mib * MIB),
        }
    }

    /// Only what was read and lies beyond the window goes, oldest first.
    #[test]
    fn consumed_window_drops_read_data_behind_it() {
        let segments = [
            segment(100, 100, false),
            segment(100, 60, false),
            segment(100, 0, true),
        ];
        let mut budget = u64::MAX;
        let targets = plan_drops(&segments, consumed(150), &mut budget);
        // 150 MiB behind the end reaches 50 MiB into the second segment,
        // read up to 60: the first goes whole, the second to a step below 50.
        assert_eq!(targets, vec![100 * MIB, 48 * MIB, 0]);
        assert_eq!(budget, u64::MAX - 148 * MIB);
    }

    /// Nothing read, nothing dropped; a reader at the tail lets all beyond
    /// the window go.
    #[test]
    fn consumed_window_keeps_unread_data() {
        let unread = [segment(100, 0, false), segment(100, 0, true)];
        let mut budget = u64::MAX;
        assert_eq!(plan_drops(&unread, consumed(10), &mut budget), vec![0, 0]);
        let at_tail = [segment(100, 100, false), segment(100, 100, true)];
        assert_eq!(
            plan_drops(&at_tail, consumed(10), &mut budget),
            vec![100 * MIB, 88 * MIB]
        );
    }

    /// Consumed drops stop when the budget does; the full window ignores it.
    #[test]
    fn budget_bounds_consumed_drops_only() {
        let segments = [segment(100, 100, false), segment(100, 100, true)];
        let mut budget = 30 * MIB;
        assert_eq!(
            plan_drops(&segments, consumed(10), &mut budget),
            vec![28 * MIB, 0]
        );
        assert_eq!(budget, 2 * MIB, "what the step rounding left");
        let both = Windows {
            all_bytes: Some(150 * MIB),
            consumed_bytes: Some(10 * MIB),
        };
        let mut budget = 0;
        assert_eq!(plan_drops(&segments, both, &mut budget), vec![48 * MIB, 0]);
        let mut budget = 100 * MIB;
        assert_eq!(
            plan_drops(&segments, both, &mut budget),
            vec![100 * MIB, 48 * MIB]
        );
        assert_eq!(budget, 2 * MIB, "50 + 48 MiB beyond what the window freed");
    }

    /// Already dropped prefixes are neither dropped again nor paid for.
    #[test]
    fn dropped_prefixes_cost_nothing() {
        let mut rolled = segment(100, 100, false);
        rolled.uncached_bytes = 100 * MIB;
        let mut active = segment(100, 100, true);
        active.uncached_bytes = 40 * MIB;
        let mut budget = 8 * MIB;
        let targets = plan_drops(&[rolled, active], consumed(10), &mut budget);
        assert_eq!(targets, vec![100 * MIB, 48 * MIB]);
        assert_eq!(budget, 0);
    }

    /// Off windows drop nothing.
    #[test]
    fn no_windows_no_drops() {
        let segments = [segment(100, 100, false), segment(100, 100, true)];
        let off = Windows {
            all_bytes: None,
            consumed_bytes: None,
        };
        let mut budget = u64::MAX;
        assert_eq!(plan_drops(&segments, off, &mut budget), vec![0, 0]);
    }
}
