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
