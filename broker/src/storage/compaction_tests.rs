//! Tests of compaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use skiff_protocol::batch::{
    BatchReader, Compression, RecordBatchBuilder, RecordBatchBuilderConfig,
};

use super::test_util::{keyed_batch, small_config, ManualClock};
use super::*;

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 1_000,
        ..small_config()
    }
}

fn open(dir: &std::path::Path) -> (Arc<LogManager>, Arc<PartitionLog>) {
    let manager =
        LogManager::open_with_clock(dir, compact_config(), ManualClock::at(0).clock()).unwrap();
    let log = manager.create_partition("c", 0, compact_config()).unwrap();
    (manager, log)
}

/// Every record in the log as (offset, key, value), reading from the start.
fn records(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, usize::MAX).unwrap();
        if bytes.is_empty() {
            break;
        }
        for view in BatchReader::new(bytes) {
            let view = view.unwrap();
            view.validate().unwrap();
            view.validate_records().unwrap();
            for record in view.records().unwrap() {
                let record = record.unwrap();
                let text = |b: bytes::Bytes| String::from_utf8(b.to_vec()).unwrap();
                out.push((
                    record.offset,
                    text(record.key.unwrap()),
                    record.value.map(text),
                ));
            }
            offset = view.header().last_offset() + 1;
        }
    }
    out
}

/// After compaction each key's newest record survives at its original
/// offset, older ones are gone, young tombstones stay and old ones go, the
/// active segment is untouched, and a reader's earlier bytes stay valid.
#[test]
fn keeps_newest_per_key_and_expires_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let (_manager, log) = open(dir.path());
    let value = "v".repeat(300);
    let mut expected: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for round in 0..20 {
        for key in ["a", "b", "c", "d"] {
            let v = format!("{key}{round}{value}");
            let is_tombstone = key == "b" && round == 15;
            let record = if is_tombstone { None } else { Some(v.as_str()) };
            let info = log.append(&keyed_batch(&[(key, record)], 100)).unwrap();
            expected.insert(
                key.to_string(),
                (info.base_offset, record.map(str::to_string)),
            );
        }
    }
    // "b" gets a tombstone at round 15, then new values: only its newest value remains in the end.
    log.flush().unwrap();
    let before = records(&log);
    let held = log.read(0, usize::MAX).unwrap();
    let held_copy = held.to_vec();
    let end = log.log_end_offset();
    let active_base = *log.segment_base_offsets().last().unwrap();

    let rewritten = log.compact(500).unwrap();
    assert!(rewritten > 0);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(held.to_vec(), held_copy);
    let after = records(&log);
    // Records of the active segment are all still there.
    let active_before: Vec<_> = before
        .iter()
        .filter(|r| r.0 >= active_base)
        .cloned()
        .collect();
    let active_after: Vec<_> = after
        .iter()
        .filter(|r| r.0 >= active_base)
        .cloned()
        .collect();
    assert_eq!(active_before, active_after);
    // In the closed part, each key appears at most once: its newest offset there.
    let closed: Vec<_> = after
        .iter()
        .filter(|r| r.0 < active_base)
        .cloned()
        .collect();
    let mut newest_closed: BTreeMap<String, i64> = BTreeMap::new();
    for r in before.iter().filter(|r| r.0 < active_base) {
        newest_closed.insert(r.1.clone(), r.0);
    }
    let closed_keys: Vec<(String, i64)> = closed.iter().map(|r| (r.1.clone(), r.0)).collect();
    let mut want: Vec<(String, i64)> = newest_closed.into_iter().collect();
    want.sort_by_key(|(_, offset)| *offset);
    assert_eq!(closed_keys, want);
    // Every surviving record is byte-for-byte what was there before, at the same offset.
    for r in &after {
        assert!(before.contains(r));
    }
    // Each key's newest record overall is present.
    for (key, (offset, value)) in &expected {
        assert!(
            after.contains(&(*offset, key.clone(), value.clone())),
            "{key}"
        );
    }
    // Reading an offset that compaction removed returns the next surviving batch.
    let gap = (0..end).find(|o| !after.iter().any(|r| r.0 == *o)).unwrap();
    let next = BatchReader::new(log.read(gap, 1).unwrap())
        .next()
        .unwrap()
        .unwrap();
    assert!(next.header().base_offset > gap);
}

/// Tombstones survive while young and are dropped once older than delete_retention_ms.
#[test]
fn tombstones_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (_manager, log) = open(dir.path());
    let filler = "x".repeat(2_000);
    log.append(&keyed_batch(&[("gone", Some("v"))], 100))
        .unwrap();
    log.append(&keyed_batch(&[("gone", None)], 100)).unwrap();
    for i in 0..12 {
        log.append(&keyed_batch(
            &[(&format!("f{i}"), Some(filler.as_str()))],
            100,
        ))
        .unwrap();
    }
    log.flush().unwrap();
    log.compact(600).unwrap();
    let after = records(&log);
    assert!(!after.contains(&(0, "gone".into(), Some("v".into()))));
    assert!(
        after.contains(&(1, "gone".into(), None)),
        "young tombstone kept"
    );
    log.compact(1_101).unwrap();
    assert!(
        !records(&log).iter().any(|r| r.1 == "gone"),
        "old tombstone dropped"
    );
}

/// Compressed batches that keep only some records are rebuilt with the same
/// codec and a valid CRC; the log reopens cleanly after compaction.
#[test]
fn compressed_batches_partially_kept_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expected_after;
    {
        let (_manager, log) = open(dir.path());
        for round in 0..200 {
            let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig {
                compression: Compression::Gzip,
                ..Default::default()
            });
            for key in 0..5 {
                // Key 0 is rewritten every round; the others only once.
                let key_name = if key == 0 {
                    "hot".to_string()
                } else {
                    format!("k{round}-{key}")
                };
                builder.append(
                    round,
                    Some(key_name.as_bytes()),
                    Some(format!("{round}-{}", "z".repeat(400)).as_bytes()),
                    &[],
                );
            }
            log.append(&builder.build().unwrap()).unwrap();
        }
        log.flush().unwrap();
        let before = records(&log);
        assert!(log.compact(0).unwrap() > 0);
        expected_after = records(&log);
        assert!(expected_after.len() < before.len());
        let active_base = *log.segment_base_offsets().last().unwrap();
        let hot_closed = expected_after
            .iter()
            .filter(|r| r.1 == "hot" && r.0 < active_base)
            .count();
        assert_eq!(hot_closed, 1, "one hot record left in the closed segments");
        for r in &expected_after {
            assert!(before.contains(r));
        }
    }
    let manager =
        LogManager::open_with_clock(dir.path(), compact_config(), ManualClock::at(0).clock())
            .unwrap();
    let log = manager.get("c", 0).unwrap();
    assert_eq!(manager.recovery_report("c", 0).unwrap().bytes_truncated, 0);
    assert_eq!(records(&log), expected_after);
}

/// A delete-policy log is never compacted.
#[test]
fn delete_policy_is_not_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let manager =
        LogManager::open_with_clock(dir.path(), small_config(), ManualClock::at(0).clock())
            .unwrap();
    let log = manager.create_partition("d", 0, small_config()).unwrap();
    for _ in 0..40 {
        log.append(&keyed_batch(&[("same", Some(&"v".repeat(300)))], 0))
            .unwrap();
    }
    log.flush().unwrap();
    assert_eq!(log.compact(0).unwrap(), 0);
    assert_eq!(records(&log).len(), 40);
}

/// Records with their timestamps.
fn records_with_time(log: &PartitionLog) -> Vec<(i64, String, Option<String>, i64)> {
    let mut out = Vec::new();
    for segment in log.shared().segments_snapshot() {
        for view in BatchReader::new(segment.data()) {
            for record in view.unwrap().records().unwrap() {
                let record = record.unwrap();
                let text = |b: bytes::Bytes| String::from_utf8(b.to_vec()).unwrap();
                out.push((
                    record.offset,
                    text(record.key.unwrap()),
                    record.value.map(text),
                    record.timestamp,
                ));
            }
        }
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// For random keys, values, tombstones and clock, compaction leaves in the
    /// closed segments exactly the newest record per key (minus tombstones
    /// older than delete_retention_ms) and leaves the active segment alone.
    #[test]
    fn compaction_matches_model(
        ops in proptest::collection::vec((0u8..6, proptest::prelude::any::<bool>(), 0usize..900), 1..120),
        now_ms in 0i64..4_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (_manager, log) = open(dir.path());
        for (i, (key, tombstone, size)) in ops.iter().enumerate() {
            let key = format!("key{key}");
            let value = "v".repeat(*size);
            let value = if *tombstone { None } else { Some(value.as_str()) };
            log.append(&keyed_batch(&[(key.as_str(), value)], i as i64 * 20)).unwrap();
        }
        log.flush().unwrap();
        let before = records_with_time(&log);
        let active_base = *log.segment_base_offsets().last().unwrap();
        log.compact(now_ms).unwrap();
        let mut newest = BTreeMap::new();
        for r in before.iter().filter(|r| r.0 < active_base) {
            newest.insert(r.1.clone(), r.0);
        }
        let expected: Vec<_> = before
            .iter()
            .filter(|r| {
                r.0 >= active_base
                    || (newest[&r.1] == r.0 && !(r.2.is_none() && r.3 < now_ms - 1_000))
            })
            .cloned()
            .collect();
        proptest::prop_assert_eq!(records_with_time(&log), expected);
    }
}

/// `start_background` compacts on its own: with the clock moved past the
/// maintenance interval, the background task rewrites the closed segments
/// while the log keeps taking appends and serving reads.
#[tokio::test]
async fn background_task_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(0);
    let manager = LogManager::open_with_clock(dir.path(), compact_config(), clock.clock()).unwrap();
    let log = manager.create_partition("c", 0, compact_config()).unwrap();
    let value = "v".repeat(500);
    for _ in 0..60 {
        log.append(&keyed_batch(&[("same", Some(value.as_str()))], 0))
            .unwrap();
    }
    log.flush().unwrap();
    let before = log.size_bytes();
    manager.start_background();
    clock.set(manager::MAINTENANCE_INTERVAL_MS + 1);
    let mut compacted = false;
    for _ in 0..600 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        log.append(&keyed_batch(&[("other", Some("x"))], 0))
            .unwrap();
        if log.size_bytes() < before {
            compacted = true;
            break;
        }
    }
    assert!(compacted, "the background task never compacted");
    let same = records(&log).iter().filter(|r| r.1 == "same").count();
    assert!(same < 60, "superseded records were removed ({same} left)");
    manager.shutdown().unwrap();
}

/// Under concurrent appends (with rolls), compaction and reads, every read
/// returns whole, CRC-valid batches at or after the requested offset: the
/// background rewrite never exposes a half-written segment.
#[test]
fn concurrent_appends_reads_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (_manager, log) = open(dir.path());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let value = "p".repeat(200);
            let mut i = 0u64;
            // Bounded so that a fast machine does not fill the disk.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 50_000 {
                let key = format!("k{}", i % 7);
                log.append(&keyed_batch(&[(key.as_str(), Some(value.as_str()))], 0))
                    .unwrap();
                i += 1;
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|seed| {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let end = log.log_end_offset();
                    if end == 0 {
                        continue;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let offset = log.log_start_offset() + (x % end as u64) as i64;
                    let bytes = log.read(offset, 4096).unwrap();
                    let mut reader = BatchReader::new(bytes);
                    let mut first = true;
                    for view in reader.by_ref() {
                        let view = view.unwrap();
                        view.validate().unwrap();
                        if first {
                            assert!(view.header().last_offset() >= offset);
                            first = false;
                        }
                    }
                    assert_eq!(reader.partial_tail_bytes(), 0);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut compactions = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(1500) {
        log.flush().unwrap();
        compactions += log.compact(0).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    appender.join().unwrap();
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(
        compactions > 0 && reads > 0,
        "compactions {compactions}, reads {reads}"
    );
}
