//! Tests of appends, reads, rolls, indexes, retention and group commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use skiff_protocol::batch::{BatchReader, RecordBatchView};

use super::test_util::{batch, small_config, without_offset, ManualClock};
use super::*;

fn open(
    dir: &std::path::Path,
    config: LogConfig,
    clock: &ManualClock,
) -> (Arc<LogManager>, Arc<PartitionLog>) {
    let manager = LogManager::open_with_clock(dir, config.clone(), clock.clock()).unwrap();
    let log = manager.create_partition("t", 0, config).unwrap();
    (manager, log)
}

/// Batches of a read, as (base offset, last offset, bytes without offset).
fn batches_of(bytes: Bytes) -> Vec<(i64, i64, Vec<u8>)> {
    let mut reader = BatchReader::new(bytes);
    let out = reader
        .by_ref()
        .map(|view| {
            let view = view.unwrap();
            view.validate().unwrap();
            (
                view.header().base_offset,
                view.header().last_offset(),
                without_offset(view.bytes()),
            )
        })
        .collect();
    assert_eq!(
        reader.partial_tail_bytes(),
        0,
        "a read returns whole batches only"
    );
    out
}

/// Appended batches come back byte-identical with sequential offsets, and every
/// boundary read (first, last, inside a batch, at and past the end) behaves as Kafka's.
#[test]
fn append_and_read_every_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(1_000);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    let mut appended = Vec::new();
    for i in 0..40 {
        let b = batch(1 + i % 4, 100 + i * 7, 1_000 + i as i64, i as u8);
        let info = log.append(&b).unwrap();
        assert_eq!(
            info.base_offset,
            appended.last().map_or(0, |(_, last, _)| last + 1)
        );
        appended.push((info.base_offset, info.last_offset, without_offset(&b)));
    }
    assert!(log.segment_count() > 1, "small segments rolled");
    let log_end = log.log_end_offset();
    assert_eq!(log_end, appended.last().unwrap().1 + 1);
    for (i, (base, last, bytes)) in appended.iter().enumerate() {
        for offset in *base..=*last {
            let read = batches_of(log.read(offset, 1).unwrap());
            assert_eq!(read.len(), 1, "max_bytes=1 still returns one whole batch");
            assert_eq!(read[0], (*base, *last, bytes.clone()), "offset {offset}");
        }
        let all = batches_of(log.read(*base, usize::MAX).unwrap());
        assert_eq!(all[0].0, *base);
        assert_eq!(all[0].2, *bytes);
        let _ = i;
    }
    assert!(log.read(log_end, 1 << 20).unwrap().is_empty());
    assert!(matches!(
        log.read(log_end + 1, 1 << 20),
        Err(StorageError::OffsetOutOfRange { requested, log_end: end, .. }) if requested == log_end + 1 && end == log_end
    ));
    assert!(matches!(
        log.read(-1, 1),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

/// `max_bytes` bounds a read to whole batches that fit, and a full sequential
/// read from offset 0 returns every batch exactly once.
#[test]
fn max_bytes_and_sequential_read() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    let b = batch(2, 300, 5, 1);
    for _ in 0..30 {
        log.append(&b).unwrap();
    }
    let two = log.read(0, b.len() * 2 + 10).unwrap();
    assert_eq!(two.len(), b.len() * 2);
    let mut offset = 0;
    let mut count = 0;
    while offset < log.log_end_offset() {
        let read = batches_of(log.read(offset, 1000).unwrap());
        assert!(!read.is_empty());
        for (base, last, bytes) in read {
            assert_eq!(base, offset);
            assert_eq!(bytes, without_offset(&b));
            offset = last + 1;
            count += 1;
        }
    }
    assert_eq!(count, 30);
}

/// Malformed input gets a typed error and changes nothing.
#[test]
fn bad_appends_are_rejected_whole() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    let good = batch(1, 10, 0, 0);
    log.append(&good).unwrap();
    let mut two = good.to_vec();
    two.extend_from_slice(&good[..good.len() - 1]);
    assert!(
        matches!(log.append(&two), Err(StorageError::InvalidBatch { position, .. }) if position == good.len())
    );
    let mut bad_magic = good.to_vec();
    bad_magic[16] = 1;
    assert!(matches!(
        log.append(&bad_magic),
        Err(StorageError::InvalidBatch { .. })
    ));
    assert!(matches!(
        log.append(&[]),
        Err(StorageError::InvalidBatch { .. })
    ));
    assert!(matches!(
        log.append(&[0u8; 100]),
        Err(StorageError::InvalidBatch { .. })
    ));
    let big = batch(1, 70 * 1024, 0, 0);
    assert!(matches!(
        log.append(&big),
        Err(StorageError::BatchTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(batches_of(log.read(0, usize::MAX).unwrap()).len(), 1);
}

/// Several batches in one append get consecutive offsets and land contiguously.
#[test]
fn multi_batch_append() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    let (a, b) = (batch(3, 20, 0, 1), batch(2, 20, 0, 2));
    let mut both = a.to_vec();
    both.extend_from_slice(&b);
    let info = log.append_with_leader_epoch(&both, 7).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 4));
    let read = log.read(0, usize::MAX).unwrap();
    let views: Vec<RecordBatchView> = BatchReader::new(read).map(Result::unwrap).collect();
    assert_eq!(views[1].header().base_offset, 3);
    assert_eq!(views[1].header().partition_leader_epoch, 7);
}

/// A segment rolls when it is older than `segment_ms`, judged by the injected clock.
#[test]
fn roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let config = LogConfig {
        segment_ms: 1_000,
        ..small_config()
    };
    let (_manager, log) = open(dir.path(), config, &clock);
    log.append(&batch(1, 10, 0, 0)).unwrap();
    clock.set(999);
    log.append(&batch(1, 10, 0, 0)).unwrap();
    assert_eq!(log.segment_count(), 1);
    clock.set(1_000);
    log.append(&batch(1, 10, 0, 0)).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
}

/// `wait_for` returns at once for an offset already present and wakes on append otherwise.
#[tokio::test]
async fn wait_for_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    log.append(&batch(1, 10, 0, 0)).unwrap();
    log.wait_for(0).await;
    let waiter = {
        let log = log.clone();
        tokio::spawn(async move { log.wait_for(1).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    log.append(&batch(1, 10, 0, 0)).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
}

/// Concurrent waiters share one fdatasync: 50 waiters on 50 appended offsets cost one flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    let b = batch(1, 10, 0, 0);
    let offsets: Vec<i64> = (0..50)
        .map(|_| log.append(&b).unwrap().base_offset)
        .collect();
    let before = log.flush_count();
    let waiters: Vec<_> = offsets
        .into_iter()
        .map(|offset| {
            let log = log.clone();
            tokio::spawn(async move { log.wait_durable(offset).await })
        })
        .collect();
    for waiter in waiters {
        waiter.await.unwrap().unwrap();
    }
    assert_eq!(log.flush_count() - before, 1);
    // Already durable: no further sync.
    log.wait_durable(49).await.unwrap();
    assert_eq!(log.flush_count() - before, 1);
    assert!(matches!(
        log.wait_durable(50).await,
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

/// Periodic mode acknowledges without syncing; the background pass flushes when due.
#[tokio::test]
async fn periodic_flush_policy() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let config = LogConfig {
        flush: FlushPolicy::Periodic {
            flush_ms: 1_000,
            flush_messages: 1_000,
        },
        ..small_config()
    };
    let (manager, log) = open(dir.path(), config, &clock);
    log.append(&batch(1, 10, 0, 0)).unwrap();
    log.wait_durable(0).await.unwrap();
    let before = log.flush_count();
    manager.background_pass(500, false);
    assert_eq!(log.flush_count(), before);
    manager.background_pass(1_000, false);
    assert_eq!(log.flush_count(), before + 1);
    // A roll makes the next pass trim and sync the rolled segment, due or not.
    let segments = log.segment_base_offsets().len();
    while log.segment_base_offsets().len() == segments {
        log.append(&batch(1, 500, 0, 0)).unwrap();
    }
    manager.background_pass(1_100, false);
    assert_eq!(log.flush_count(), before + 2);
    assert!(!log.shared().has_pending_closed());
}

/// Whether `path` is on tmpfs, which has no disk to drop pages to.
fn on_tmpfs(path: &std::path::Path) -> bool {
    // SAFETY: statfs on a valid path into a zeroed struct.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        libc::statfs(path.as_ptr(), &mut stat) == 0 && stat.f_type == libc::TMPFS_MAGIC
    }
}

/// Segments of `segment_bytes`, a page-cache window, and flushes only when asked.
fn window_config(segment_bytes: u64, window_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        flush: FlushPolicy::Periodic {
            flush_ms: 1_000_000,
            flush_messages: 1_000_000,
        },
        cache_window_bytes: Some(window_bytes),
        ..small_config()
    }
}

/// Appends `count` batches of `records` records of 1 000 bytes; returns them without offsets.
fn append_batches(log: &PartitionLog, count: i64, records: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let b = batch(records, 1_000, i, i as u8);
            log.append(&b).unwrap();
            without_offset(&b)
        })
        .collect()
}

/// Every batch of the log, read from the start, without offsets.
fn read_all(log: &PartitionLog) -> Vec<Vec<u8>> {
    let mut offset = 0;
    let mut read_back = Vec::new();
    while offset < log.log_end_offset() {
        let chunk = batches_of(log.read(offset, usize::MAX).unwrap());
        offset = chunk.last().unwrap().1 + 1;
        read_back.extend(chunk.into_iter().map(|(_, _, bytes)| bytes));
    }
    read_back
}

/// With a page-cache window, a background pass drops what lies further
/// behind the log end than the window (rolled segments wholly), writing it
/// back first, and every batch still reads back intact (from disk).
#[test]
fn cache_window_drops_pages_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let window_bytes = 40 * 1024;
    let config = window_config(16 * 1024, window_bytes);
    let (manager, log) = open(dir.path(), config, &clock);
    let appended = append_batches(&log, 60, 3);
    let segments = log.shared().segments_snapshot();
    assert!(segments.len() > 5, "{} segments", segments.len());
    assert!(
        segments.iter().all(|s| s.uncached_bytes() == 0),
        "appends alone drop nothing"
    );

    manager.background_pass(0, false);
    // Bytes after each segment's end, newest segment first.
    let mut behind = 0;
    let mut dropped_whole = 0;
    for segment in segments.iter().rev() {
        let size = segment.size_bytes();
        if behind >= window_bytes {
            assert_eq!(segment.uncached_bytes(), size, "{behind} bytes behind");
            dropped_whole += 1;
        } else {
            // Inside the window, or straddling it: the active segment drops
            // in 4 MiB steps only, a straddling rolled one keeps all.
            assert_eq!(segment.uncached_bytes(), 0, "{behind} bytes behind");
        }
        behind += size;
    }
    assert!(dropped_whole >= 3, "{dropped_whole} segments dropped");
    let tmpfs = on_tmpfs(dir.path());
    if !tmpfs {
        let oldest = &segments[0];
        assert_eq!(oldest.resident_pages(0, oldest.size_bytes()), 0);
        let active = &segments[segments.len() - 1];
        assert!(active.resident_pages(0, active.size_bytes()) > 0);
    }

    assert_eq!(read_all(&log), appended);
}

/// The consumed window drops only what reads have returned and what lies
/// further behind the log end than the window, and only when appends want
/// pages; unread data keeps its cache.
#[test]
fn consumed_cache_window_drops_only_read_data() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let window_bytes = 40 * 1024;
    let config = LogConfig {
        cache_window_bytes: None,
        consumed_cache_window_bytes: Some(window_bytes),
        ..window_config(16 * 1024, 0)
    };
    let (manager, log) = open(dir.path(), config, &clock);
    let appended = append_batches(&log, 60, 3);
    let segments = log.shared().segments_snapshot();
    assert!(segments.len() > 5, "{} segments", segments.len());

    manager.background_pass(0, false);
    assert!(
        segments.iter().all(|s| s.uncached_bytes() == 0),
        "nothing was read"
    );

    // Read the oldest half of the log.
    let half = log.log_end_offset() / 2;
    let mut offset = 0;
    while offset < half {
        offset = batches_of(log.read(offset, 1).unwrap()).last().unwrap().1 + 1;
    }
    manager.background_pass(0, false);
    assert!(
        segments.iter().all(|s| s.uncached_bytes() == 0),
        "nothing was appended since the last pass: no page to recycle"
    );
    let mut appended = appended;
    appended.extend(append_batches(&log, 1, 3));
    let segments = log.shared().segments_snapshot();
    manager.background_pass(0, false);
    let mut behind = 0;
    let mut dropped_whole = 0;
    for segment in segments.iter().rev() {
        let size = segment.size_bytes();
        let wholly_read = segment.read_high_bytes() == size;
        if behind >= window_bytes && wholly_read {
            assert_eq!(segment.uncached_bytes(), size, "{behind} bytes behind");
            dropped_whole += 1;
        } else {
            assert_eq!(segment.uncached_bytes(), 0, "{behind} bytes behind");
        }
        behind += size;
    }
    assert!(dropped_whole >= 2, "{dropped_whole} segments dropped");
    assert!(
        segments.last().unwrap().read_high_bytes() == 0,
        "the newest data was not read"
    );
    if !on_tmpfs(dir.path()) {
        let oldest = &segments[0];
        assert_eq!(oldest.resident_pages(0, oldest.size_bytes()), 0);
        let newest_rolled = &segments[segments.len() - 2];
        assert!(newest_rolled.resident_pages(0, newest_rolled.size_bytes()) > 0);
    }
    assert_eq!(read_all(&log), appended);
}

/// Ranges longer than one background step are written back and dropped
/// step by step, to their whole length.
#[test]
fn cache_window_steps_cover_whole_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let window_bytes = 64 * 1024;
    let config = LogConfig {
        max_message_bytes: 1024 * 1024,
        ..window_config(64 * 1024 * 1024, window_bytes)
    };
    let (manager, log) = open(dir.path(), config, &clock);
    let appended = append_batches(&log, 230, 60);
    let segments = log.shared().segments_snapshot();
    assert_eq!(segments.len(), 1);
    let active = &segments[0];
    let size = active.size_bytes();
    assert!(size > 3 * BACKGROUND_STEP_BYTES, "{size} bytes appended");

    manager.background_pass(0, false);
    let page_bytes = super::segment::page_bytes();
    assert_eq!(active.writeback_started_bytes(), size - size % page_bytes);
    let expected_drop = (size - window_bytes) / CACHE_DROP_STEP_BYTES * CACHE_DROP_STEP_BYTES;
    assert!(expected_drop > BACKGROUND_STEP_BYTES);
    assert_eq!(active.uncached_bytes(), expected_drop);
    let tmpfs = on_tmpfs(dir.path());
    if !tmpfs {
        assert_eq!(active.resident_pages(0, expected_drop), 0);
        assert!(active.resident_pages(expected_drop, size) > 0);
    }
    assert_eq!(read_all(&log), appended);
}

/// A failed writeback while dropping pages poisons the partition as a failed
/// flush does (the kernel reports the error once, to that call).
#[test]
fn cache_window_writeback_failure_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let config = LogConfig {
        segment_bytes: 16 * 1024,
        cache_window_bytes: Some(0),
        ..small_config()
    };
    let (manager, log) = open(dir.path(), config, &clock);
    for i in 0..20 {
        log.append(&batch(3, 1_000, i, i as u8)).unwrap();
    }
    // Nothing is left for the pass to flush, so the failure is the drop's.
    log.flush().unwrap();
    log.shared()
        .fail_next_sync
        .store(true, std::sync::atomic::Ordering::SeqCst);
    manager.background_pass(0, false);
    assert!(matches!(
        log.append(&batch(1, 10, 0, 0)),
        Err(StorageError::Poisoned { .. })
    ));
}

/// Lookup by timestamp returns the first record at or after the timestamp, across segments.
#[test]
fn offset_for_timestamp_finds_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    // Batch i holds 3 records with timestamps 100*i, 100*i+1, 100*i+2.
    for i in 0..60 {
        log.append(&batch(3, 200, 100 * i, 0)).unwrap();
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.offset_for_timestamp(-5).unwrap(), Some((0, 0)));
    for i in 0..60i64 {
        assert_eq!(
            log.offset_for_timestamp(100 * i).unwrap(),
            Some((3 * i, 100 * i))
        );
        assert_eq!(
            log.offset_for_timestamp(100 * i + 2).unwrap(),
            Some((3 * i + 2, 100 * i + 2))
        );
        if i < 59 {
            assert_eq!(
                log.offset_for_timestamp(100 * i + 50).unwrap(),
                Some((3 * i + 3, 100 * i + 100))
            );
        }
    }
    assert_eq!(log.offset_for_timestamp(5_903).unwrap(), None);
}

/// `scan_headers` yields every batch header from the batch holding the offset.
#[test]
fn scan_headers_from_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    for _ in 0..30 {
        log.append(&batch(2, 300, 0, 0)).unwrap();
    }
    let headers = log.scan_headers(5).unwrap();
    assert_eq!(headers.first().unwrap().base_offset, 4);
    assert_eq!(headers.len(), 28);
    assert!(headers
        .windows(2)
        .all(|w| w[1].base_offset == w[0].last_offset() + 1));
}

/// Retention deletes whole old segments by size and by age, advances the log
/// start, and readers holding bytes of a deleted segment keep valid memory.
#[test]
fn retention_by_size_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    for i in 0..60 {
        log.append(&batch(1, 500, i * 10, 0)).unwrap();
    }
    log.flush().unwrap();
    let held = log.read(0, usize::MAX).unwrap();
    let held_copy = held.to_vec();
    let segments = log.segment_count();
    assert!(segments >= 4);
    let limit = 3 * 8 * 1024;
    log.set_config(LogConfig {
        retention_bytes: limit,
        retention_ms: -1,
        ..small_config()
    })
    .unwrap();
    let deleted = log.apply_retention(0).unwrap();
    assert!(deleted > 0);
    assert!(log.size_bytes() <= limit as u64 + 8 * 1024);
    let start = log.log_start_offset();
    assert_eq!(start, log.segment_base_offsets()[0]);
    assert!(matches!(
        log.read(start - 1, 1),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(batches_of(log.read(start, 1).unwrap())[0].0, start);
    assert_eq!(
        held.to_vec(),
        held_copy,
        "bytes of a deleted segment stay readable"
    );
    assert!(
        !format::segment_path(log.dir(), 0, "log").exists(),
        "the oldest segment file is gone"
    );

    log.set_config(LogConfig {
        retention_ms: 100,
        ..small_config()
    })
    .unwrap();
    let before = log.segment_count();
    assert_eq!(
        log.apply_retention(0).unwrap(),
        0,
        "nothing older than 100 ms at t=0"
    );
    log.apply_retention(10_000).unwrap();
    assert_eq!(
        log.segment_count(),
        1,
        "all closed segments expired; the active one stays"
    );
    assert!(before > 1);
}

/// Deleting a topic removes its files; a later create starts empty.
#[test]
fn delete_topic_and_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (manager, log) = open(dir.path(), small_config(), &clock);
    log.append(&batch(1, 10, 0, 0)).unwrap();
    let held = log.read(0, 100).unwrap();
    manager.delete_topic("t").unwrap();
    assert!(manager.get("t", 0).is_none());
    assert!(!log.dir().exists());
    assert!(matches!(
        log.append(&batch(1, 10, 0, 0)),
        Err(StorageError::Closed)
    ));
    assert_eq!(batches_of(held).len(), 1);
    let again = manager.create_partition("t", 0, small_config()).unwrap();
    assert_eq!(again.log_end_offset(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// For random batch shapes, segment sizes and index intervals, a read at
    /// every offset returns the batch holding it, and a reopen changes nothing.
    #[test]
    fn every_offset_reads_back(
        shapes in proptest::collection::vec((1usize..6, 0usize..700), 1..60),
        segment_kib in 2u64..16,
        interval in prop_oneof![Just(1u32), Just(128), Just(4096)],
        clean in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(0);
        let config = LogConfig { segment_bytes: segment_kib * 1024, index_interval_bytes: interval, ..small_config() };
        let mut model = Vec::new();
        {
            let (manager, log) = open(dir.path(), config.clone(), &clock);
            for (i, (records, value)) in shapes.iter().enumerate() {
                let b = batch(*records, *value, i as i64, i as u8);
                let info = log.append(&b).unwrap();
                model.push((info.base_offset, info.last_offset, without_offset(&b)));
            }
            if clean { manager.shutdown().unwrap(); }
        }
        let (manager, log) = open(dir.path(), config, &clock);
        let report = manager.recovery_report("t", 0).unwrap();
        prop_assert_eq!(report.bytes_truncated, 0);
        prop_assert_eq!(log.log_end_offset(), model.last().unwrap().1 + 1);
        for (base, last, bytes) in &model {
            for offset in *base..=*last {
                let read = batches_of(log.read(offset, 1).unwrap());
                prop_assert_eq!(&read[0], &(*base, *last, bytes.clone()));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Size-based retention deletes exactly the oldest closed segments Kafka's
    /// rule selects (delete while the rest still holds `retention_bytes`), and
    /// everything left reads back.
    #[test]
    fn retention_by_bytes_matches_model(count in 5usize..80, value_bytes in 50usize..2_000, retention_kib in 0i64..48) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(0);
        let (_manager, log) = open(dir.path(), small_config(), &clock);
        for i in 0..count {
            log.append(&batch(1, value_bytes, i as i64, 0)).unwrap();
        }
        log.flush().unwrap();
        let segments: Vec<(i64, u64)> = log.shared().segments_snapshot().iter().map(|s| (s.base_offset(), s.size_bytes())).collect();
        let retention_bytes = retention_kib * 1024;
        let mut total: u64 = segments.iter().map(|s| s.1).sum();
        let mut expected = segments.clone();
        while expected.len() > 1 && total - expected[0].1 >= retention_bytes as u64 {
            total -= expected[0].1;
            expected.remove(0);
        }
        log.set_config(LogConfig { retention_bytes, retention_ms: -1, ..small_config() }).unwrap();
        log.apply_retention(0).unwrap();
        let left: Vec<i64> = log.segment_base_offsets();
        prop_assert_eq!(left, expected.iter().map(|s| s.0).collect::<Vec<_>>());
        prop_assert_eq!(log.log_start_offset(), expected[0].0);
        for offset in log.log_start_offset()..log.log_end_offset() {
            let read = batches_of(log.read(offset, 1).unwrap());
            prop_assert_eq!(read[0].0, offset);
        }
    }
}

/// A failed fdatasync poisons the partition: the waiting producer gets the
/// error, later appends and syncs are refused (never retried into a false
/// acknowledgement), and reads keep working.
#[tokio::test]
async fn failed_sync_poisons_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (_manager, log) = open(dir.path(), small_config(), &clock);
    let b = batch(1, 10, 0, 0);
    log.append(&b).unwrap();
    log.wait_durable(0).await.unwrap();
    log.append(&b).unwrap();
    log.shared()
        .fail_next_sync
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        log.wait_durable(1).await,
        Err(StorageError::Io { .. })
    ));
    assert!(matches!(
        log.wait_durable(1).await,
        Err(StorageError::Poisoned { .. })
    ));
    assert!(matches!(
        log.append(&b),
        Err(StorageError::Poisoned { partition: 0, .. })
    ));
    assert!(matches!(log.flush(), Err(StorageError::Poisoned { .. })));
    assert_eq!(batches_of(log.read(0, usize::MAX).unwrap()).len(), 2);
}

/// Invalid configurations and partition names are refused with a typed error and create nothing.
#[test]
fn invalid_config_and_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let (manager, log) = open(dir.path(), small_config(), &clock);
    let bad_configs = [
        LogConfig {
            segment_bytes: 0,
            ..small_config()
        },
        LogConfig {
            segment_bytes: SEGMENT_BYTES_MAX + 1,
            ..small_config()
        },
        LogConfig {
            index_interval_bytes: 0,
            ..small_config()
        },
        LogConfig {
            max_message_bytes: 10,
            ..small_config()
        },
        LogConfig {
            flush: FlushPolicy::Periodic {
                flush_ms: 0,
                flush_messages: 1,
            },
            ..small_config()
        },
    ];
    for config in bad_configs {
        assert!(matches!(
            manager.create_partition("u", 0, config.clone()),
            Err(StorageError::InvalidConfig { .. })
        ));
        assert!(matches!(
            log.set_config(config),
            Err(StorageError::InvalidConfig { .. })
        ));
    }
    for (topic, partition) in [("", 0), ("a/b", 0), ("..", 0), ("x", -1)] {
        assert!(matches!(
            manager.create_partition(topic, partition, small_config()),
            Err(StorageError::InvalidConfig { .. })
        ));
    }
    assert_eq!(manager.partitions().len(), 1);
    assert!(!dir.path().join("u-0").exists());
    assert!(matches!(
        LogManager::open(
            dir.path(),
            LogConfig {
                segment_bytes: 1,
                ..small_config()
            }
        ),
        Err(StorageError::InvalidConfig { .. })
    ));
}

/// A busy partition's next segment is prepared ahead (created and reserved
/// in full by the background pass) and the roll renames it into place; a
/// partition that filled its segment slowly gets none, and neither a close
/// nor a restart leaves one behind.
#[test]
fn next_segment_is_prepared_for_busy_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let config = small_config();
    let capacity = config
        .segment_bytes
        .max(u64::from(config.max_message_bytes));
    let (manager, log) = open(dir.path(), config.clone(), &clock);
    let prepared_files = || {
        std::fs::read_dir(log.dir())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".log.tmp")
            })
            .count()
    };
    let active = || log.shared().segments_snapshot().last().cloned().unwrap();
    let fill_to_half = || {
        while active().size_bytes() * 2 < config.segment_bytes {
            log.append(&batch(1, 300, 0, 1)).unwrap();
        }
    };
    let roll = || {
        let segments = log.segment_base_offsets().len();
        while log.segment_base_offsets().len() == segments {
            log.append(&batch(1, 300, 0, 2)).unwrap();
        }
    };

    log.append(&batch(1, 300, 0, 0)).unwrap();
    manager.background_pass(0, false);
    assert_eq!(prepared_files(), 0, "less than half full");
    fill_to_half();
    manager.background_pass(0, false);
    assert_eq!(prepared_files(), 1);
    roll();
    assert_eq!(prepared_files(), 0, "the roll renamed it");
    let renamed = active();
    assert_eq!(
        std::fs::metadata(renamed.log_path()).unwrap().len(),
        capacity,
        "reserved in full"
    );
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let read = batches_of(log.read(offset, usize::MAX).unwrap());
        offset = read.last().unwrap().1 + 1;
    }

    // Half a segment in more than PREPARE_WITHIN_MS: not busy.
    clock.set(prepare::PREPARE_WITHIN_MS + 1);
    fill_to_half();
    manager.background_pass(prepare::PREPARE_WITHIN_MS + 1, false);
    assert_eq!(prepared_files(), 0, "filled too slowly");

    roll();
    fill_to_half();
    manager.background_pass(prepare::PREPARE_WITHIN_MS + 1, false);
    assert_eq!(prepared_files(), 1);
    // One that no longer fits a segment (the config changed) is deleted,
    // and the roll creates the segment as before.
    log.set_config(LogConfig {
        max_message_bytes: config.max_message_bytes * 2,
        ..config.clone()
    })
    .unwrap();
    roll();
    assert_eq!(prepared_files(), 0, "the misfit is deleted");
    assert!(std::fs::metadata(active().log_path()).unwrap().len() > capacity);
    log.set_config(config.clone()).unwrap();
    roll();
    fill_to_half();
    manager.background_pass(prepare::PREPARE_WITHIN_MS + 1, false);
    assert_eq!(prepared_files(), 1);
    manager.shutdown().unwrap();
    assert_eq!(prepared_files(), 0, "a close deletes it");

    // One left by a crash is deleted when the partition is opened.
    std::fs::write(log.dir().join("next-3.log.tmp"), b"").unwrap();
    let dir_path = log.dir().to_path_buf();
    drop((log, manager));
    let manager = LogManager::open_with_clock(dir.path(), config, clock.clock()).unwrap();
    assert!(manager.get("t", 0).is_some());
    assert!(!dir_path.join("next-3.log.tmp").exists());
}
