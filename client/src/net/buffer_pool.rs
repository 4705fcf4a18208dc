//! Allocations for large response frames gathered from QUIC stream chunks,
//! reused once the application has dropped every record of the frame that
//! used them.
//!
//! A fetch response of several MiB gathered into a fresh allocation is new
//! memory from the kernel each time (glibc maps an allocation that large on
//! its own), faulted in page by page as the gather writes it. A retired
//! allocation is only a handle here, so a frame still in use is never
//! touched: `try_reclaim` succeeds only when the handle is the last one.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

/// Frames smaller than this are allocated as they come: reusing a large
/// allocation for them would pin it for a small frame.
pub(crate) const POOLED_FRAME_BYTES_MIN: usize = 256 * 1024;

/// Retired allocations kept; the oldest goes when a newer one is retired.
/// Two serve a consumer (one frame decoded while the next arrives) and
/// bound what an idle connection keeps to twice its largest frames.
const RETIRED_MAX: usize = 2;

/// A new allocation is this much larger than asked, so that it can serve a
/// somewhat larger frame later.
const HEADROOM_DIVISOR: usize = 8;

#[derive(Default)]
pub(crate) struct BufferPool {
    retired: Mutex<Vec<BytesMut>>,
}

impl BufferPool {
    /// An empty buffer with room for `size` bytes: a retired allocation
    /// nobody uses any more, or a new one.
    pub(crate) fn take(&self, size: usize) -> BytesMut {
        if let Ok(mut retired) = self.retired.lock() {
            if let Some(index) = retired.iter_mut().position(|buf| buf.try_reclaim(size)) {
                return retired.remove(index);
            }
        }
        BytesMut::with_capacity(size + size / HEADROOM_DIVISOR)
    }

    /// Turns a filled buffer into a frame, keeping a handle to its
    /// allocation for reuse once the frame is dropped.
    pub(crate) fn freeze(&self, mut buf: BytesMut) -> Bytes {
        let frame = buf.split().freeze();
        if let Ok(mut retired) = self.retired.lock() {
            if retired.len() == RETIRED_MAX {
                retired.remove(0);
            }
            retired.push(buf);
        }
        frame
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn filled(pool: &BufferPool, size: usize, fill: u8) -> Bytes {
        let mut buf = pool.take(size);
        assert!(buf.capacity() >= size);
        buf.resize(size, fill);
        pool.freeze(buf)
    }

    /// An allocation comes back once its frame is dropped, not before.
    #[test]
    fn allocations_are_reused_only_after_their_frame_is_dropped() {
        let pool = BufferPool::default();
        let first = filled(&pool, 1 << 20, 1);
        let second = filled(&pool, 1 << 20, 2);
        assert_ne!(first.as_ptr(), second.as_ptr());
        assert!(
            first.iter().all(|&b| b == 1),
            "a live frame was overwritten"
        );
        let address = first.as_ptr();
        drop(first);
        let third = filled(&pool, 1 << 20, 3);
        assert_eq!(
            third.as_ptr(),
            address,
            "the freed allocation was not reused"
        );
        assert!(
            second.iter().all(|&b| b == 2),
            "a live frame was overwritten"
        );
    }

    /// A retired allocation too small for a frame is not used for it.
    #[test]
    fn a_larger_frame_gets_a_large_enough_buffer() {
        let pool = BufferPool::default();
        drop(filled(&pool, 1 << 20, 1));
        let larger = filled(&pool, 4 << 20, 2);
        assert_eq!(larger.len(), 4 << 20);
        assert!(larger.iter().all(|&b| b == 2));
    }
}
