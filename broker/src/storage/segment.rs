//! One segment: a `.log` file of record batches and its two sparse indexes.
//!
//! Writes go through `pwritev` at the end of the data (with the batch header's
//! base offset and leader epoch patched in a 16-byte iovec, so the caller's
//! bytes are copied exactly once, into the page cache). Reads go through one
//! read-only shared mapping of the file, which sees those pages directly: a
//! read is a `Bytes` slice of the mapping that keeps the mapping alive after
//! the segment is rolled, compacted or deleted. Writing with `pwritev`
//! rather than `memcpy` into the mapping avoids a page fault per 4 KiB page
//! and turns a full disk into an error return instead of SIGBUS.
//!
//! The active segment's file is preallocated (`posix_fallocate`) ahead of the
//! write position, so running out of disk is reported when space is reserved,
//! before any byte of an append is written; a busy partition's next segment
//! is a [`PreparedFile`] reserved in full ahead of time. The mapping covers the segment's
//! whole capacity from the start; only bytes below `size_bytes` are ever
//! touched, so the part of the mapping past the end of the file is never read.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use skiff_protocol::batch::{BatchHeader, RecordBatchView};

use super::error::{Result, StorageError};
use super::format::{segment_path, IndexHeader, IndexKind, LOG_SUFFIX, TEMP_SUFFIX};
use super::index::{IndexBuilder, SparseIndex};
use super::BACKGROUND_STEP_BYTES;

/// Where the first invalid batch of a scan was found, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStop {
    pub position: u64,
    pub reason: String,
}

/// What a scan of a segment's bytes found.
#[derive(Debug)]
pub struct Scan {
    pub valid_bytes: u64,
    pub next_offset: i64,
    pub offset_index: SparseIndex,
    pub time_index: SparseIndex,
    pub builder: IndexBuilder,
    pub stop: Option<ScanStop>,
}

#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    file: File,
    /// The read-only mapping, covering at least `size_bytes`.
    map: Bytes,
    capacity_bytes: u64,
    size_bytes: AtomicU64,
    next_offset: AtomicI64,
    max_timestamp: AtomicI64,
    /// Prefix of the data whose CRCs were checked (on append by the caller,
    /// at recovery, or on a previous read); reads check batches past it.
    verified_bytes: AtomicU64,
    /// Bytes known to be on disk (fdatasync'ed).
    synced_bytes: AtomicU64,
    /// Prefix whose page cache this process dropped (or never wrote: a
    /// segment found on disk starts fully counted).
    uncached_bytes: AtomicU64,
    /// The end of the furthest read (the consumed cache window drops only
    /// what was read).
    read_high_bytes: AtomicU64,
    /// Prefix whose writeback `start_writeback` has started.
    writeback_started_bytes: AtomicU64,
    offset_index: RwLock<SparseIndex>,
    time_index: RwLock<SparseIndex>,
    created_ms: i64,
    closed: AtomicBool,
}

impl Segment {
    /// Creates an empty active segment file, replacing any leftover with the
    /// same name, and reserves its first `preallocate_bytes`.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        capacity_bytes: u64,
        preallocate_bytes: u64,
        now_ms: i64,
    ) -> Result<Segment> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        remove_index_files(dir, base_offset)?;
        let file = create_empty(&log_path)?;
        preallocate(&file, &log_path, 0, preallocate_bytes.min(capacity_bytes))?;
        Segment::new_active(base_offset, log_path, file, capacity_bytes, now_ms)
    }

    /// Makes an empty active segment of a file created and preallocated
    /// ahead of time (see [`PreparedFile`]): one rename instead of a create
    /// and an allocation of disk space while appends wait.
    pub fn from_prepared(
        dir: &Path,
        base_offset: i64,
        prepared: PreparedFile,
        now_ms: i64,
    ) -> Result<Segment> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        remove_index_files(dir, base_offset)?;
        std::fs::rename(&prepared.path, &log_path).map_err(|e| StorageError::io(&log_path, e))?;
        Segment::new_active(
            base_offset,
            log_path,
            prepared.file,
            prepared.capacity_bytes,
            now_ms,
        )
    }

    fn new_active(
        base_offset: i64,
        log_path: PathBuf,
        file: File,
        capacity_bytes: u64,
        now_ms: i64,
    ) -> Result<Segment> {
        let map = map_file(&file, &log_path, capacity_bytes)?;
        Ok(Segment {
            base_offset,
            log_path,
            file,
            map,
            capacity_bytes,
            size_bytes: AtomicU64::new(0),
            next_offset: AtomicI64::new(base_offset),
            max_timestamp: AtomicI64::new(-1),
            verified_bytes: AtomicU64::new(0),
            synced_bytes: AtomicU64::new(0),
            uncached_bytes: AtomicU64::new(0),
            read_high_bytes: AtomicU64::new(0),
            writeback_started_bytes: AtomicU64::new(0),
            offset_index: RwLock::new(SparseIndex::new(IndexKind::Offset)),
            time_index: RwLock::new(SparseIndex::new(IndexKind::Time)),
            created_ms: now_ms,
            closed: AtomicBool::new(false),
        })
    }

    /// Opens an existing segment file for recovery; the caller scans it or
    /// installs loaded indexes with [`install`](Self::install). The mapping
    /// covers `max(file length, capacity_bytes)`.
    pub fn open(dir: &Path, base_offset: i64, capacity_bytes: u64, now_ms: i64) -> Result<Segment> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| StorageError::io(&log_path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| StorageError::io(&log_path, e))?
            .len();
        let map = map_file(&file, &log_path, file_len.max(capacity_bytes))?;
        Ok(Segment {
            base_offset,
            log_path,
            file,
            map,
            capacity_bytes: file_len.max(capacity_bytes),
            size_bytes: AtomicU64::new(file_len),
            next_offset: AtomicI64::new(base_offset),
            max_timestamp: AtomicI64::new(-1),
            verified_bytes: AtomicU64::new(0),
            synced_bytes: AtomicU64::new(file_len),
            uncached_bytes: AtomicU64::new(file_len),
            read_high_bytes: AtomicU64::new(0),
            writeback_started_bytes: AtomicU64::new(file_len),
            offset_index: RwLock::new(SparseIndex::new(IndexKind::Offset)),
            time_index: RwLock::new(SparseIndex::new(IndexKind::Time)),
            created_ms: now_ms,
            closed: AtomicBool::new(false),
        })
    }

    /// Sets the segment's state after recovery: its real size, offsets,
    /// indexes, and how much of it was CRC-checked.
    pub fn install(
        &self,
        size_bytes: u64,
        next_offset: i64,
        max_timestamp: i64,
        offset_index: SparseIndex,
        time_index: SparseIndex,
        verified_bytes: u64,
    ) {
        assert!(size_bytes <= self.capacity_bytes);
        self.size_bytes.store(size_bytes, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
        self.max_timestamp.store(max_timestamp, Ordering::Release);
        self.verified_bytes.store(verified_bytes, Ordering::Release);
        self.synced_bytes.store(size_bytes, Ordering::Release);
        *write(&self.offset_index) = offset_index;
        *write(&self.time_index) = time_index;
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub fn file_len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| StorageError::io(&self.log_path, e))?
            .len())
    }
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Acquire)
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }
    pub fn is_empty(&self) -> bool {
        self.size_bytes() == 0
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
    pub fn offset_index(&self) -> RwLockReadGuard<'_, SparseIndex> {
        read(&self.offset_index)
    }

    pub fn verified_bytes(&self) -> u64 {
        self.verified_bytes.load(Ordering::Acquire)
    }

    /// The first `len` mapped bytes, which must lie within the file.
    pub fn data_upto(&self, len: u64) -> &[u8] {
        &self.map[..(len as usize).min(self.map.len())]
    }

    /// Cuts the file to the installed size (used at recovery on the segment
    /// that becomes active).
    pub fn truncate_to_size(&self) -> Result<()> {
        self.file
            .set_len(self.size_bytes())
            .map_err(|e| StorageError::io(&self.log_path, e))
    }

    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// The whole mapped data, for scans and compaction.
    pub fn data(&self) -> Bytes {
        self.map.slice(..self.size_bytes() as usize)
    }

    /// Scans the data from the start, optionally checking every CRC, and
    /// rebuilds both indexes. Stops at the first batch that fails a check.
    pub fn scan(&self, limit_bytes: u64, check_crc: bool, index_interval_bytes: u32) -> Scan {
        let mut scan = Scan {
            valid_bytes: 0,
            next_offset: self.base_offset,
            offset_index: SparseIndex::new(IndexKind::Offset),
            time_index: SparseIndex::new(IndexKind::Time),
            builder: IndexBuilder::new(index_interval_bytes),
            stop: None,
        };
        let limit = limit_bytes.min(self.map.len() as u64);
        let mut position = 0u64;
        while position < limit {
            let header = match self.header_at(position, limit) {
                Ok(header) => header,
                Err(reason) => {
                    scan.stop = Some(ScanStop { position, reason });
                    break;
                }
            };
            let total = header.total_bytes() as u64;
            if check_crc {
                if let Err(reason) = self.check_crc(position, total) {
                    scan.stop = Some(ScanStop { position, reason });
                    break;
                }
            }
            if header.base_offset < scan.next_offset {
                scan.stop = Some(ScanStop {
                    position,
                    reason: format!(
                        "base offset {} goes backwards (expected at least {})",
                        header.base_offset, scan.next_offset
                    ),
                });
                break;
            }
            scan.builder.on_batch(
                &mut scan.offset_index,
                &mut scan.time_index,
                position as u32,
                self.relative(header.base_offset),
                total,
                header.max_timestamp,
            );
            position += total;
            scan.next_offset = header.last_offset() + 1;
        }
        scan.valid_bytes = position;
        scan
    }

    /// Relative offset of `offset` in this segment, asserting it fits the index.
    pub fn relative(&self, offset: i64) -> u32 {
        let relative = offset - self.base_offset;
        assert!((0..=i64::from(u32::MAX)).contains(&relative));
        relative as u32
    }

    /// Decodes the header of the batch at `position`, which must lie whole
    /// below `limit`, and checks it belongs in this segment.
    fn header_at(&self, position: u64, limit: u64) -> Result<BatchHeader, String> {
        let rest = &self.map[position as usize..limit as usize];
        let total = match BatchHeader::peek_total_bytes(rest) {
            Ok(Some(total)) => total,
            Ok(None) => {
                return Err(format!(
                    "{} trailing bytes are not a whole batch header",
                    rest.len()
                ))
            }
            Err(error) => return Err(error.to_string()),
        };
        if total > rest.len() {
            return Err(format!(
                "batch of {total} bytes runs past the end ({} bytes left)",
                rest.len()
            ));
        }
        let header = BatchHeader::parse(rest).map_err(|e| e.to_string())?;
        let relative_last = header.last_offset() - self.base_offset;
        if header.base_offset < self.base_offset || relative_last > i64::from(u32::MAX) {
            return Err(format!(
                "batch offsets {}..={} do not belong in segment {}",
                header.base_offset,
                header.last_offset(),
                self.base_offset
            ));
        }
        Ok(header)
    }

    fn check_crc(&self, position: u64, total: u64) -> Result<(), String> {
        let bytes = self
            .map
            .slice(position as usize..(position + total) as usize);
        let view = RecordBatchView::new(bytes).map_err(|e| e.to_string())?;
        view.validate().map_err(|e| e.to_string())
    }

    /// Checks the CRC of a batch about to be served unless it lies in the
    /// verified prefix; extends the prefix when the batch is contiguous with it.
    fn verify_for_read(&self, position: u64, total: u64) -> Result<()> {
        let verified = self.verified_bytes.load(Ordering::Acquire);
        if position + total <= verified {
            return Ok(());
        }
        self.check_crc(position, total)
            .map_err(|reason| StorageError::corrupt(&self.log_path, position, reason))?;
        if position <= verified {
            self.verified_bytes
                .fetch_max(position + total, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Whole batches from the one holding `offset` (or the first after it),
    /// up to `max_bytes` but at least one. `Ok(None)` if no batch of this
    /// segment ends at or after `offset`.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>> {
        let size = self.size_bytes();
        let Some(start) = self.find_batch(offset, size)? else {
            return Ok(None);
        };
        let mut end = start;
        while end < size {
            let header = match self.header_at(end, size) {
                Ok(header) => header,
                Err(reason) if end == start => {
                    return Err(StorageError::corrupt(&self.log_path, end, reason))
                }
                // Serve what precedes the bad batch; the next read starts at it and fails.
                Err(_) => break,
            };
            let total = header.total_bytes() as u64;
            if end > start && (end + total - start) as usize > max_bytes {
                break;
            }
            match self.verify_for_read(end, total) {
                Ok(()) => end += total,
                Err(error) if end == start => return Err(error),
                Err(_) => break,
            }
        }
        self.read_high_bytes.fetch_max(end, Ordering::Relaxed);
        Ok(Some(self.map.slice(start as usize..end as usize)))
    }

    /// The end of the furthest read from this segment.
    pub fn read_high_bytes(&self) -> u64 {
        self.read_high_bytes.load(Ordering::Relaxed)
    }

    /// Position of the first batch whose last offset is `>= offset`.
    pub fn find_batch(&self, offset: i64, size: u64) -> Result<Option<u64>> {
        let target = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let mut position = u64::from(self.offset_index().lookup_offset(target).unwrap_or(0));
        while position < size {
            let header = self
                .header_at(position, size)
                .map_err(|reason| StorageError::corrupt(&self.log_path, position, reason))?;
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Headers of the batches from `position` to the end, in order.
    pub fn headers_from(&self, mut position: u64) -> Result<Vec<(u64, BatchHeader)>> {
        let size = self.size_bytes();
        let mut out = Vec::new();
        while position < size {
            let header = self
                .header_at(position, size)
                .map_err(|reason| StorageError::corrupt(&self.log_path, position, reason))?;
            out.push((position, header));
            position += header.total_bytes() as u64;
        }
        Ok(out)
    }

    /// Position from which to scan for the first batch with max timestamp
    /// `>= timestamp_ms`: every batch before it has a smaller max timestamp.
    pub fn time_scan_start(&self, timestamp_ms: i64) -> Result<u64> {
        let relative = read(&self.time_index).lookup_time(timestamp_ms);
        let Some(relative) = relative else {
            return Ok(0);
        };
        let offset = self.base_offset + i64::from(relative);
        Ok(self.find_batch(offset, self.size_bytes())?.unwrap_or(0))
    }

    // ---- writer side: called only by the holder of the log's append lock ----

    /// Reserves disk space for bytes `from..to` of the file.
    pub fn preallocate(&self, from: u64, to: u64) -> Result<()> {
        assert!(to <= self.capacity_bytes);
        preallocate(&self.file, &self.log_path, from, to)
    }

    /// Writes all of `slices` at `position`, looping over short writes.
    pub fn write_at(&self, slices: &mut [IoSlice<'_>], mut position: u64) -> Result<()> {
        let mut slices = slices;
        while !slices.is_empty() {
            let count = slices.len().min(1024);
            // SAFETY: IoSlice is guaranteed ABI-compatible with `struct iovec`
            // on Unix, and the slices stay borrowed for the call.
            let written = unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
                    slices.as_ptr().cast::<libc::iovec>(),
                    count as libc::c_int,
                    position as libc::off_t,
                )
            };
            if written < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(StorageError::io(&self.log_path, error));
            }
            if written == 0 {
                return Err(StorageError::io(
                    &self.log_path,
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "pwritev wrote nothing"),
                ));
            }
            position += written as u64;
            IoSlice::advance_slices(&mut slices, written as usize);
        }
        Ok(())
    }

    /// Makes bytes up to `size_bytes` visible to readers after they were
    /// written; the caller trusts their CRCs (validated before the append).
    pub fn publish(&self, size_bytes: u64, next_offset: i64, max_timestamp: i64) {
        assert!(size_bytes >= self.size_bytes() && size_bytes <= self.capacity_bytes);
        self.max_timestamp
            .fetch_max(max_timestamp, Ordering::AcqRel);
        self.next_offset.store(next_offset, Ordering::Release);
        self.verified_bytes.store(size_bytes, Ordering::Release);
        self.size_bytes.store(size_bytes, Ordering::Release);
    }

    pub fn indexes_mut(
        &self,
    ) -> (
        RwLockWriteGuard<'_, SparseIndex>,
        RwLockWriteGuard<'_, SparseIndex>,
    ) {
        (write(&self.offset_index), write(&self.time_index))
    }

    /// Trims the preallocated tail so the file holds exactly the data; the
    /// segment takes no more appends.
    pub fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.file
            .set_len(self.size_bytes())
            .map_err(|e| StorageError::io(&self.log_path, e))
    }

    /// fdatasync of the log file unless nothing changed since the last one
    /// (`force` also covers a change of the file's length); returns the size now durable.
    pub fn sync(&self, force: bool) -> Result<u64> {
        let size = self.size_bytes();
        if self.synced_bytes.load(Ordering::Acquire) >= size && !force {
            return Ok(size);
        }
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(&self.log_path, e))?;
        self.synced_bytes.fetch_max(size, Ordering::AcqRel);
        Ok(size)
    }

    /// Bytes at the start of the file whose page cache was dropped.
    pub fn uncached_bytes(&self) -> u64 {
        self.uncached_bytes.load(Ordering::Acquire)
    }

    /// Drops the page cache of the bytes below `position`, writing back any
    /// still dirty first: the pages are then clean copies of the file, so
    /// nothing is lost, and a later read of them goes to the disk. Freed
    /// pages are what the kernel hands out next, so appends keep writing into
    /// recycled memory instead of growing the page cache. Durability is not
    /// touched: this waits for the writeback of the range only, the flush
    /// still decides what is fdatasync'ed. Called by the background pass,
    /// one caller at a time.
    ///
    /// An error is a failed writeback, which this call reports in place of
    /// the next fdatasync (the kernel reports a writeback error once per
    /// open file): the caller must treat it as a failed flush. Failing to
    /// drop pages only costs memory and is logged.
    pub fn drop_cache_below(&self, position: u64) -> Result<()> {
        let start = self.uncached_bytes();
        let end = position.min(self.size_bytes());
        if end <= start {
            return Ok(());
        }
        assert!(end <= self.map.len() as u64, "drop past the mapping");
        let page_bytes = page_bytes();
        let mut step_start = start;
        while step_start < end {
            let step_end = end.min(step_start + BACKGROUND_STEP_BYTES);
            self.sync_range(
                step_start,
                step_end,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )?;
            let map_start = step_start - step_start % page_bytes;
            // SAFETY: `map_start..step_end` lies inside the mapping (`end` is
            // asserted above; `map_start` is page-aligned as madvise
            // requires). The mapping is a read-only shared file mapping, so
            // MADV_DONTNEED only unmaps its pages: a reader touching them
            // again maps them back from the page cache or the file, seeing
            // the same bytes.
            let rc = unsafe {
                libc::madvise(
                    self.map.as_ptr().add(map_start as usize) as *mut libc::c_void,
                    (step_end - map_start) as usize,
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 {
                let error = std::io::Error::last_os_error();
                tracing::warn!(path = %self.log_path.display(), %error, "madvise(DONTNEED) failed");
                return Ok(());
            }
            // SAFETY: plain syscall on an open descriptor.
            let rc = unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    step_start as libc::off_t,
                    (step_end - step_start) as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
            if rc != 0 {
                let error = std::io::Error::from_raw_os_error(rc);
                tracing::warn!(path = %self.log_path.display(), %error, "posix_fadvise(DONTNEED) failed");
                return Ok(());
            }
            self.uncached_bytes.store(step_end, Ordering::Release);
            step_start = step_end;
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Starts (without waiting for) the writeback of whole pages appended
    /// since the last call, so that by the time they leave the cache window
    /// or a periodic flush syncs them they are clean, and neither the drop
    /// nor the fdatasync submits them in one long call. Called by the
    /// background pass, one caller at a time.
    pub fn start_writeback(&self) -> Result<()> {
        let from = self.writeback_started_bytes.load(Ordering::Acquire);
        let size = self.size_bytes();
        let to = size - size % page_bytes();
        let mut step_start = from;
        while step_start < to {
            let step_end = to.min(step_start + BACKGROUND_STEP_BYTES);
            self.sync_range(step_start, step_end, libc::SYNC_FILE_RANGE_WRITE)?;
            self.writeback_started_bytes
                .store(step_end, Ordering::Release);
            step_start = step_end;
            std::thread::yield_now();
        }
        Ok(())
    }

    fn sync_range(&self, from: u64, to: u64, flags: libc::c_uint) -> Result<()> {
        loop {
            // SAFETY: plain syscall on an open descriptor.
            let rc = unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    from as libc::off64_t,
                    (to - from) as libc::off64_t,
                    flags,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(StorageError::io(&self.log_path, error));
            }
        }
    }

    /// Prefix whose writeback `start_writeback` has started, for tests.
    #[cfg(test)]
    pub fn writeback_started_bytes(&self) -> u64 {
        self.writeback_started_bytes.load(Ordering::Acquire)
    }

    /// Pages of bytes `from..to` in the page cache (mincore), for tests.
    #[cfg(test)]
    pub fn resident_pages(&self, from: u64, to: u64) -> usize {
        let page_bytes = page_bytes();
        let from = from - from % page_bytes;
        assert!(from <= to && to <= self.map.len() as u64);
        let mut resident = vec![0u8; (to - from).div_ceil(page_bytes) as usize];
        // SAFETY: the range lies inside the mapping (asserted) and starts on a
        // page; `resident` has one byte per page of it.
        let rc = unsafe {
            libc::mincore(
                self.map.as_ptr().add(from as usize) as *mut libc::c_void,
                (to - from) as usize,
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        resident.iter().filter(|&&page| page & 1 == 1).count()
    }

    pub fn needs_sync(&self) -> bool {
        self.synced_bytes.load(Ordering::Acquire) < self.size_bytes()
    }

    /// Writes both index files (temporary name, fsync, rename). The caller
    /// fsyncs the directory.
    pub fn write_index_files(&self) -> Result<()> {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        for (kind, index) in [
            (IndexKind::Offset, &self.offset_index),
            (IndexKind::Time, &self.time_index),
        ] {
            let index = read(index);
            let header = IndexHeader {
                kind,
                base_offset: self.base_offset,
                log_bytes: self.size_bytes(),
                next_offset: self.next_offset(),
                max_timestamp: self.max_timestamp(),
                entry_count: index.len() as u32,
            };
            let bytes = index.encode_file(&header);
            let path = segment_path(dir, self.base_offset, kind.suffix());
            write_file_atomically(&path, &bytes)?;
        }
        Ok(())
    }

    /// Deletes the segment's files; mappings held by readers stay valid.
    pub fn delete_files(&self) -> Result<()> {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        for suffix in [
            LOG_SUFFIX,
            IndexKind::Offset.suffix(),
            IndexKind::Time.suffix(),
        ] {
            remove_if_exists(&segment_path(dir, self.base_offset, suffix))?;
        }
        Ok(())
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding an index lock leaves the index as consistent as
    // before the panicking push (entries are appended whole), so poisoning
    // is not a reason to stop serving reads.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn map_file(file: &File, path: &Path, len: u64) -> Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only and shared. Bytes below the published
    // size are never rewritten in place (appends go past it; compaction writes
    // a new file), and readers never touch bytes at or past that size, so no
    // access can reach a page beyond the end of the file (which would SIGBUS).
    let map = unsafe { memmap2::MmapOptions::new().len(len as usize).map(file) }
        .map_err(|e| StorageError::io(path, e))?;
    Ok(Bytes::from_owner(map))
}

pub(crate) fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(bytes).unwrap_or(4096).max(1)
}

fn preallocate(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe {
        libc::posix_fallocate(
            file.as_raw_fd(),
            from as libc::off_t,
            (to - from) as libc::off_t,
        )
    };
    if rc != 0 {
        return Err(StorageError::io(
            path,
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

/// Creates `path` for reading and writing, emptying any leftover.
fn create_empty(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))
}

fn remove_index_files(dir: &Path, base_offset: i64) -> Result<()> {
    for kind in [IndexKind::Offset, IndexKind::Time] {
        remove_if_exists(&segment_path(dir, base_offset, kind.suffix()))?;
    }
    Ok(())
}

/// A file for the next segment, created and preallocated in full by the
/// background pass while the active segment fills. Its name ends in
/// `.tmp`, so a restart deletes it.
#[derive(Debug)]
pub struct PreparedFile {
    path: PathBuf,
    file: File,
    capacity_bytes: u64,
}

impl PreparedFile {
    /// Creates `dir/next-<sequence>.log.tmp` with `capacity_bytes` reserved on disk.
    pub fn create(dir: &Path, sequence: u64, capacity_bytes: u64) -> Result<PreparedFile> {
        let path = dir.join(format!("next-{sequence}.{LOG_SUFFIX}.{TEMP_SUFFIX}"));
        let file = create_empty(&path)?;
        let prepared = PreparedFile {
            path,
            file,
            capacity_bytes,
        };
        if let Err(error) = preallocate(&prepared.file, &prepared.path, 0, capacity_bytes) {
            prepared.delete();
            return Err(error);
        }
        Ok(prepared)
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Removes the file (best effort: a restart removes it too).
    pub fn delete(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StorageError::io(path, error)),
    }
}

/// Writes `path` so that after a crash it holds either its old or its new
/// contents: write a temporary file, fsync it, rename it into place.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".");
    temp.push(TEMP_SUFFIX);
    let temp = PathBuf::from(temp);
    let mut file = File::create(&temp).map_err(|e| StorageError::io(&temp, e))?;
    file.write_all(bytes)
        .map_err(|e| StorageError::io(&temp, e))?;
    file.sync_data().map_err(|e| StorageError::io(&temp, e))?;
    std::fs::rename(&temp, path).map_err(|e| StorageError::io(path, e))
}

/// fsync of a directory, so that created, renamed and deleted names persist.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}
