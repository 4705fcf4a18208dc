//! Keeping freed heap memory in the process, for bulk transfers.
//!
//! quinn copies every batch of received datagrams into a fresh allocation
//! (up to 64 KiB each) and frees it once the application has read the
//! stream data in it. glibc's malloc hands the top of a heap back to the
//! kernel as soon as more than 128 KiB of it is free (`M_TRIM_THRESHOLD`),
//! so a QUIC consumer at 1 GB/s gave memory back and faulted it in again
//! thousands of times a second: page faults were 8 % of its samples.
//! Applications that move bulk data can change that once at start; the
//! library does not change process-wide settings by itself.
//!
//! Setting the trim threshold also stops glibc from raising its mmap
//! threshold as it sees large blocks freed (it starts at 128 KiB), after
//! which every fetch's record list and receive buffer would be a fresh
//! `mmap`: over TCP that cost more than the trimming saved. So the mmap
//! threshold is set too, to glibc's largest, with the trim threshold at
//! twice it as glibc's own adjustment would leave it.

/// Blocks below this size come from the heap, not from their own `mmap`
/// (glibc's largest allowed value on 64-bit targets).
pub const MMAP_THRESHOLD_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of free memory glibc may keep at the top of each heap.
pub const RETAINED_FREE_BYTES: usize = 2 * MMAP_THRESHOLD_BYTES;

/// Lets glibc serve blocks below [`MMAP_THRESHOLD_BYTES`] from its heaps
/// and keep up to [`RETAINED_FREE_BYTES`] freed at the top of each.
/// Returns whether the allocator took both settings: `false` on targets
/// without glibc's malloc.
pub fn retain_freed_memory() -> bool {
    set(MMAP_THRESHOLD_BYTES, RETAINED_FREE_BYTES)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set(mmap_threshold_bytes: usize, trim_threshold_bytes: usize) -> bool {
    let int = |bytes: usize| libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets tunables of glibc's allocator, under its
    // own lock; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, int(mmap_threshold_bytes)) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, int(trim_threshold_bytes)) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_mmap_threshold_bytes: usize, _trim_threshold_bytes: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_threshold() {
        assert!(super::retain_freed_memory());
    }
}
