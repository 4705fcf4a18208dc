//! [`PartitionLog`]: one partition's segments, appends, reads, and group commit.
//!
//! Concurrency: appends are serialised by one mutex around the active
//! segment's writer state; reads take no lock held by an append for longer
//! than cloning an `Arc` from the segment list. An append publishes its bytes
//! (segment size, then log end offset, both release stores) only after they
//! are in the page cache, so a reader that sees an offset below the log end
//! finds all of its bytes.

use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use skiff_protocol::batch::{BatchHeader, RecordBatchView, TimestampType, BATCH_BYTES_MAX};
use tokio::sync::watch;

use super::error::{Result, StorageError};
use super::index::IndexBuilder;
use super::segment::{PreparedFile, Segment};
use super::{Clock, LogConfig, PREALLOCATE_CHUNK_BYTES};

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1: batches keep the producer's CreateTime.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// The writer's state for the active segment.
pub(crate) struct Writer {
    pub active: Arc<Segment>,
    /// The file is reserved on disk up to here.
    pub preallocated_to: u64,
    pub builder: IndexBuilder,
}

/// One batch of an append, checked and given its offset.
struct Planned {
    start: usize,
    total: usize,
    prefix: [u8; 16],
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
}

pub(crate) struct Shared {
    pub topic: String,
    pub partition: i32,
    pub dir: PathBuf,
    pub config: RwLock<LogConfig>,
    pub clock: Clock,
    pub segments: RwLock<Vec<Arc<Segment>>>,
    pub writer: Mutex<Writer>,
    pub log_end: AtomicI64,
    pub(super) end_tx: watch::Sender<i64>,
    /// Every offset below this is on disk.
    pub(super) durable_end: AtomicI64,
    pub(super) sync_gate: tokio::sync::Mutex<()>,
    pub(super) flush_lock: Mutex<()>,
    /// Rolled segments whose trim, index files and final fdatasync are still due.
    pub(super) pending_closed: Mutex<Vec<Arc<Segment>>>,
    /// The next segment's file, created ahead by the background pass.
    pub(super) prepared: Mutex<Option<PreparedFile>>,
    pub(super) prepared_count: AtomicU64,
    pub(super) poisoned: AtomicBool,
    pub(super) closed: AtomicBool,
    /// Serialises retention and compaction of this partition.
    pub maintenance: Mutex<()>,
    pub batches_since_flush: AtomicU64,
    /// Bytes appended since the log was opened (the consumed cache window
    /// drops as much as is appended).
    pub(super) appended_bytes: AtomicU64,
    pub(super) trim: Mutex<super::cache_window::TrimState>,
    pub last_flush_ms: AtomicI64,
    /// Flushes performed, for observing group commit.
    pub(super) flush_count: AtomicU64,
    /// Fault injection: the next flush fails as an fdatasync would with EIO.
    #[cfg(test)]
    pub fail_next_sync: AtomicBool,
}

/// One partition's log. Cheap to share: everything lives behind an `Arc`.
pub struct PartitionLog {
    shared: Arc<Shared>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Writer state is updated only after the I/O it describes succeeded, so
    // a panic in between leaves it describing what is on disk.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PartitionLog {
    pub(crate) fn from_recovered(
        topic: &str,
        partition: i32,
        dir: &Path,
        config: LogConfig,
        clock: Clock,
        segments: Vec<Arc<Segment>>,
        builder: IndexBuilder,
    ) -> PartitionLog {
        assert!(!segments.is_empty());
        let active = segments[segments.len() - 1].clone();
        let log_end = active.next_offset();
        let (end_tx, _) = watch::channel(log_end);
        let now = clock();
        PartitionLog {
            shared: Arc::new(Shared {
                topic: topic.to_string(),
                partition,
                dir: dir.to_path_buf(),
                config: RwLock::new(config),
                clock,
                writer: Mutex::new(Writer {
                    preallocated_to: active.size_bytes(),
                    active,
                    builder,
                }),
                segments: RwLock::new(segments),
                log_end: AtomicI64::new(log_end),
                end_tx,
                durable_end: AtomicI64::new(log_end),
                sync_gate: tokio::sync::Mutex::new(()),
                flush_lock: Mutex::new(()),
                pending_closed: Mutex::new(Vec::new()),
                prepared: Mutex::new(None),
                prepared_count: AtomicU64::new(0),
                poisoned: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                maintenance: Mutex::new(()),
                batches_since_flush: AtomicU64::new(0),
                appended_bytes: AtomicU64::new(0),
                trim: Mutex::new(Default::default()),
                last_flush_ms: AtomicI64::new(now),
                flush_count: AtomicU64::new(0),
                #[cfg(test)]
                fail_next_sync: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn topic(&self) -> &str {
        &self.shared.topic
    }
    pub fn partition(&self) -> i32 {
        self.shared.partition
    }
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
    pub fn config(&self) -> LogConfig {
        self.shared.config()
    }
    /// Replaces the configuration (topic config changes); takes effect at the next append.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        Ok(())
    }
    pub fn log_start_offset(&self) -> i64 {
        self.shared.log_start_offset()
    }
    pub fn log_end_offset(&self) -> i64 {
        self.shared.log_end.load(Ordering::Acquire)
    }
    pub fn size_bytes(&self) -> u64 {
        self.shared
            .segments_snapshot()
            .iter()
            .map(|s| s.size_bytes())
            .sum()
    }
    pub fn segment_count(&self) -> usize {
        self.shared.segments_snapshot().len()
    }
    /// Number of flushes (each one fdatasync round) so far.
    pub fn flush_count(&self) -> u64 {
        self.shared.flush_count.load(Ordering::Relaxed)
    }
    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.shared
            .segments_snapshot()
            .iter()
            .map(|s| s.base_offset())
            .collect()
    }

    /// Appends whole RecordBatch v2 batches (validated by the caller),
    /// assigning offsets and stamping leader epoch 0.
    pub fn append(&self, batches: &[u8]) -> Result<AppendInfo> {
        self.append_with_leader_epoch(batches, 0)
    }

    /// [`append`](Self::append) with an explicit partition leader epoch.
    pub fn append_with_leader_epoch(
        &self,
        batches: &[u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        self.shared.append(batches, leader_epoch)
    }

    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        self.shared.read(offset, max_bytes)
    }

    pub async fn wait_for(&self, offset: i64) {
        let mut rx = self.shared.end_tx.subscribe();
        // An error means the sender is gone: nothing more will arrive.
        let _ = rx.wait_for(|end| *end > offset).await;
    }

    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        self.shared.offset_for_timestamp(timestamp_ms)
    }

    pub fn scan_headers(&self, from_offset: i64) -> Result<Vec<BatchHeader>> {
        let mut out = Vec::new();
        for segment in self.shared.segments_snapshot() {
            if segment.next_offset() <= from_offset {
                continue;
            }
            let Some(start) = segment.find_batch(from_offset, segment.size_bytes())? else {
                continue;
            };
            out.extend(segment.headers_from(start)?.into_iter().map(|(_, h)| h));
        }
        Ok(out)
    }

    /// Flushes, trims the active segment and writes its indexes and a
    /// checkpoint at the log end; the log takes no more appends.
    pub fn close(&self) -> Result<()> {
        self.shared.close()
    }

    /// Marks the log closed without flushing (its directory is being deleted).
    pub(crate) fn abandon(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.end_tx.send_replace(i64::MAX);
    }
}

impl Shared {
    pub fn config(&self) -> LogConfig {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn segments_snapshot(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn log_start_offset(&self) -> i64 {
        let segments = self
            .segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        segments.first().map_or(0, |s| s.base_offset())
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned {
                topic: self.topic.clone(),
                partition: self.partition,
            });
        }
        Ok(())
    }

    /// Checks the framing of every batch before anything is written, so that
    /// an append is all or nothing.
    fn plan(&self, batches: &[u8], config: &LogConfig) -> Result<(Vec<Planned>, usize)> {
        let invalid =
            |position: usize, reason: String| StorageError::InvalidBatch { position, reason };
        let max = config.max_message_bytes as usize;
        let mut planned = Vec::new();
        let mut position = 0;
        while position < batches.len() {
            let rest = &batches[position..];
            let total = match BatchHeader::peek_total_bytes(rest) {
                Ok(Some(total)) if total <= rest.len() => total,
                Ok(_) => return Err(invalid(position, "partial batch".to_string())),
                Err(error) => return Err(invalid(position, error.to_string())),
            };
            if total > max {
                return Err(StorageError::BatchTooLarge { size: total, max });
            }
            let header = BatchHeader::parse(rest).map_err(|e| invalid(position, e.to_string()))?;
            let mut prefix = [0u8; 16];
            prefix.copy_from_slice(&rest[..16]);
            planned.push(Planned {
                start: position,
                total,
                prefix,
                base_offset: 0,
                last_offset: i64::from(header.last_offset_delta),
                max_timestamp: header.max_timestamp,
            });
            position += total;
        }
        if planned.is_empty() {
            return Err(invalid(0, "no record batch".to_string()));
        }
        if position > BATCH_BYTES_MAX.min(i32::MAX as usize) {
            return Err(StorageError::BatchTooLarge {
                size: position,
                max: BATCH_BYTES_MAX,
            });
        }
        Ok((planned, position))
    }

    fn append(&self, batches: &[u8], leader_epoch: i32) -> Result<AppendInfo> {
        self.check_writable()?;
        let config = self.config();
        let (mut planned, total_bytes) = self.plan(batches, &config)?;
        let mut writer = lock(&self.writer);
        self.check_writable()?;
        let now_ms = (self.clock)();
        let first_offset = self.log_end.load(Ordering::Acquire);
        let mut next = first_offset;
        for batch in &mut planned {
            batch.base_offset = next;
            batch.last_offset += next;
            next = batch.last_offset + 1;
            batch.prefix[0..8].copy_from_slice(&batch.base_offset.to_be_bytes());
            batch.prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        }
        self.roll_if_needed(&mut writer, &config, total_bytes as u64, next, now_ms)?;

        let segment = writer.active.clone();
        let start = segment.size_bytes();
        let end = start + total_bytes as u64;
        if end > writer.preallocated_to {
            let to = (writer.preallocated_to + PREALLOCATE_CHUNK_BYTES)
                .max(end)
                .min(segment.capacity_bytes());
            segment.preallocate(writer.preallocated_to, to)?;
            writer.preallocated_to = to;
        }
        let mut slices = Vec::with_capacity(planned.len() * 2);
        for batch in &planned {
            slices.push(IoSlice::new(&batch.prefix));
            slices.push(IoSlice::new(
                &batches[batch.start + 16..batch.start + batch.total],
            ));
        }
        segment.write_at(&mut slices, start)?;

        let mut max_timestamp = -1;
        {
            let (mut offsets, mut times) = segment.indexes_mut();
            let mut position = start;
            for batch in &planned {
                writer.builder.on_batch(
                    &mut offsets,
                    &mut times,
                    position as u32,
                    segment.relative(batch.base_offset),
                    batch.total as u64,
                    batch.max_timestamp,
                );
                position += batch.total as u64;
                max_timestamp = max_timestamp.max(batch.max_timestamp);
            }
        }
        segment.publish(end, next, max_timestamp);
        self.log_end.store(next, Ordering::Release);
        self.batches_since_flush
            .fetch_add(planned.len() as u64, Ordering::Relaxed);
        self.appended_bytes
            .fetch_add(total_bytes as u64, Ordering::Relaxed);
        drop(writer);
        self.end_tx.send_replace(next);
        Ok(AppendInfo {
            base_offset: first_offset,
            last_offset: next - 1,
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset(),
        })
    }

    /// Starts a new segment if the append does not belong in the active one.
    fn roll_if_needed(
        &self,
        writer: &mut Writer,
        config: &LogConfig,
        append_bytes: u64,
        next_offset: i64,
        now_ms: i64,
    ) -> Result<()> {
        let active = &writer.active;
        let size = active.size_bytes();
        let full = size + append_bytes > config.segment_bytes.min(active.capacity_bytes());
        let old = now_ms.saturating_sub(active.created_ms()) >= config.segment_ms as i64;
        let offsets_overflow = next_offset - 1 - active.base_offset() > i64::from(u32::MAX);
        let capacity = config
            .segment_bytes
            .max(u64::from(config.max_message_bytes))
            .max(append_bytes);
        if active.is_empty() {
            if append_bytes <= active.capacity_bytes() {
                return Ok(());
            }
            // An empty segment too small for this append is remade bigger, in place.
            let bigger = Arc::new(Segment::create(
                &self.dir,
                active.base_offset(),
                capacity,
                PREALLOCATE_CHUNK_BYTES.max(append_bytes),
                now_ms,
            )?);
            self.replace_active(writer, bigger, append_bytes);
            return Ok(());
        }
        if !(full || old || offsets_overflow) {
            return Ok(());
        }
        let base_offset = self.log_end.load(Ordering::Acquire);
        let chunk_bytes = PREALLOCATE_CHUNK_BYTES.max(append_bytes).min(capacity);
        let prepared = self.take_prepared(capacity).and_then(|prepared| {
            Segment::from_prepared(&self.dir, base_offset, prepared, now_ms)
                .inspect_err(|error| {
                    tracing::warn!(topic = %self.topic, partition = self.partition, %error, "prepared segment unusable; creating one");
                })
                .ok()
        });
        let (fresh, preallocated_to) = match prepared {
            Some(segment) => (segment, capacity),
            None => (
                Segment::create(&self.dir, base_offset, capacity, chunk_bytes, now_ms)?,
                chunk_bytes,
            ),
        };
        let fresh = Arc::new(fresh);
        // The old file keeps its preallocated tail until the next flush
        // trims it: a truncate frees blocks, which can wait on the disk
        // (block bitmaps, discards) for tens of milliseconds, and this runs
        // with the partition's appends held.
        writer.active.mark_closed();
        lock(&self.pending_closed).push(writer.active.clone());
        self.segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(fresh.clone());
        writer.active = fresh;
        writer.preallocated_to = preallocated_to;
        writer.builder = IndexBuilder::new(config.index_interval_bytes);
        Ok(())
    }

    fn replace_active(&self, writer: &mut Writer, segment: Arc<Segment>, append_bytes: u64) {
        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = segments.len() - 1;
        assert_eq!(segments[last].base_offset(), segment.base_offset());
        segments[last] = segment.clone();
        writer.preallocated_to = PREALLOCATE_CHUNK_BYTES
            .max(append_bytes)
            .min(segment.capacity_bytes());
        writer.active = segment;
    }

    /// The segment that holds `offset` or, past it, the next one; by index in the list.
    fn segment_at(&self, offset: i64, skip: usize) -> Option<Arc<Segment>> {
        let segments = self
            .segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let floor = segments.partition_point(|s| s.base_offset() <= offset);
        let index = floor.checked_sub(1)? + skip;
        segments.get(index).cloned()
    }

    fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        let log_end = self.log_end.load(Ordering::Acquire);
        let log_start = self.log_start_offset();
        let out_of_range = || StorageError::OffsetOutOfRange {
            requested: offset,
            log_start,
            log_end,
        };
        if offset == log_end {
            return Ok(Bytes::new());
        }
        if offset < log_start || offset > log_end {
            return Err(out_of_range());
        }
        // Compaction can leave a segment with no batch at or after `offset`:
        // the answer is then the first batch of a later segment.
        for skip in 0.. {
            let Some(segment) = self.segment_at(offset, skip) else {
                return if skip == 0 {
                    Err(out_of_range())
                } else {
                    Ok(Bytes::new())
                };
            };
            if let Some(bytes) = segment.read(offset, max_bytes)? {
                return Ok(bytes);
            }
        }
        Ok(Bytes::new())
    }

    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        for segment in self.segments_snapshot() {
            if segment.max_timestamp() < timestamp_ms {
                continue;
            }
            let start = segment.time_scan_start(timestamp_ms)?;
            for (position, header) in segment.headers_from(start)? {
                if header.max_timestamp < timestamp_ms {
                    continue;
                }
                if header.attributes.timestamp_type() == TimestampType::LogAppendTime {
                    return Ok(Some((header.base_offset, header.max_timestamp)));
                }
                let bytes = segment
                    .data()
                    .slice(position as usize..position as usize + header.total_bytes());
                let corrupt =
                    |reason: String| StorageError::corrupt(segment.log_path(), position, reason);
                let view = RecordBatchView::new(bytes).map_err(|e| corrupt(e.to_string()))?;
                for record in view.records().map_err(|e| corrupt(e.to_string()))? {
                    let record = record.map_err(|e| corrupt(e.to_string()))?;
                    if record.timestamp >= timestamp_ms {
                        return Ok(Some((record.offset, record.timestamp)));
                    }
                }
            }
        }
        Ok(None)
    }
}
