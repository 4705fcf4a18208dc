//! Tests of recovery: torn and corrupt tails, corruption in the middle,
//! stale indexes, and the read-side check of unverified batches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use skiff_protocol::batch::BatchReader;

use super::format::{segment_path, RECOVERY_CHECKPOINT_FILE};
use super::recovery::RecoveryReport;
use super::segment::Segment;
use super::test_util::{batch, small_config, without_offset, ManualClock};
use super::*;

type Model = Vec<(i64, i64, Vec<u8>)>;

/// Appends `count` batches and returns the model of what was appended.
fn fill(log: &PartitionLog, count: usize) -> Model {
    (0..count)
        .map(|i| {
            let b = batch(1 + i % 3, 200 + 13 * i, i as i64, i as u8);
            let info = log.append(&b).unwrap();
            (info.base_offset, info.last_offset, without_offset(&b))
        })
        .collect()
}

fn reopen(dir: &Path) -> (Arc<LogManager>, Arc<PartitionLog>, RecoveryReport) {
    let manager =
        LogManager::open_with_clock(dir, small_config(), ManualClock::at(0).clock()).unwrap();
    let log = manager.get("t", 0).unwrap();
    let report = manager.recovery_report("t", 0).unwrap();
    (manager, log, report)
}

/// Every batch of `model` reads back byte-identical, and the log ends right after the last.
fn assert_log_is(log: &PartitionLog, model: &[(i64, i64, Vec<u8>)]) {
    assert_eq!(log.log_end_offset(), model.last().map_or(0, |m| m.1 + 1));
    let mut offset = log.log_start_offset();
    let mut got = Vec::new();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, usize::MAX).unwrap();
        let mut reader = BatchReader::new(bytes);
        for view in reader.by_ref() {
            let view = view.unwrap();
            view.validate().unwrap();
            got.push((
                view.header().base_offset,
                view.header().last_offset(),
                without_offset(view.bytes()),
            ));
            offset = view.header().last_offset() + 1;
        }
        assert_eq!(reader.partial_tail_bytes(), 0);
    }
    assert_eq!(got, model);
}

fn log_files(log: &PartitionLog) -> Vec<PathBuf> {
    log.segment_base_offsets()
        .iter()
        .map(|b| segment_path(log.dir(), *b, "log"))
        .collect()
}

fn open_fresh(dir: &Path) -> (Arc<LogManager>, Arc<PartitionLog>) {
    let manager =
        LogManager::open_with_clock(dir, small_config(), ManualClock::at(0).clock()).unwrap();
    let log = manager.create_partition("t", 0, small_config()).unwrap();
    (manager, log)
}

fn flip_bit(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// An unclean stop (no shutdown) loses nothing, and the zero-filled
/// preallocated tail is not mistaken for corruption.
#[test]
fn unclean_stop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (_manager, log) = open_fresh(dir.path());
        fill(&log, 50)
    };
    let (_manager, log, report) = reopen(dir.path());
    assert_eq!(report.bytes_truncated, 0);
    assert_eq!(report.segments_deleted, 0);
    assert!(report.segments_validated >= 1);
    assert_log_is(&log, &model);
    // Appending after recovery continues the offsets.
    let info = log.append(&batch(1, 5, 0, 0)).unwrap();
    assert_eq!(info.base_offset, model.last().unwrap().1 + 1);
}

/// A clean shutdown is trusted: nothing is re-validated or rebuilt on the next start.
#[test]
fn clean_shutdown_skips_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (manager, log) = open_fresh(dir.path());
        let model = fill(&log, 50);
        manager.shutdown().unwrap();
        assert!(matches!(
            log.append(&batch(1, 5, 0, 0)),
            Err(StorageError::Closed)
        ));
        model
    };
    let (manager, log, report) = reopen(dir.path());
    assert_eq!(report, RecoveryReport::default());
    assert_log_is(&log, &model);
    // The marker is consumed: a crash now is treated as unclean.
    drop((manager, log));
    let (_m, log, report) = reopen(dir.path());
    assert!(report.segments_validated >= 1);
    assert_log_is(&log, &model);
}

/// Cutting the active segment at every byte of its last batch loses exactly
/// that batch, and the log ends on the previous batch boundary.
#[test]
fn cut_tail_at_every_byte_of_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (model, active, last_start, last_end) = {
        let (_manager, log) = open_fresh(dir.path());
        let model = fill(&log, 12);
        let active = log_files(&log).pop().unwrap();
        let segment_bytes = log
            .shared()
            .segments_snapshot()
            .last()
            .unwrap()
            .size_bytes();
        let last_len = model.last().unwrap().2.len() as u64;
        (model, active, segment_bytes - last_len, segment_bytes)
    };
    let pristine = std::fs::read(&active).unwrap();
    let checkpoint = std::fs::read(dir.path().join("t-0").join(RECOVERY_CHECKPOINT_FILE)).unwrap();
    for cut in last_start..last_end {
        std::fs::write(&active, &pristine[..cut as usize]).unwrap();
        std::fs::write(
            dir.path().join("t-0").join(RECOVERY_CHECKPOINT_FILE),
            &checkpoint,
        )
        .unwrap();
        let (_manager, log, report) = reopen(dir.path());
        // A torn tail that happens to be all zeros looks like unused preallocation.
        assert!(report.bytes_truncated <= cut - last_start, "cut at {cut}");
        assert_log_is(&log, &model[..model.len() - 1]);
    }
}

/// A flipped bit in the last batch, or a zeroed page inside the active
/// segment, truncates the log at that batch.
#[test]
fn corrupt_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (model, active, positions) = {
        let (_manager, log) = open_fresh(dir.path());
        let model = fill(&log, 12);
        let segment = log.shared().segments_snapshot().last().unwrap().clone();
        let positions: Vec<u64> = segment
            .headers_from(0)
            .unwrap()
            .iter()
            .map(|(p, _)| *p)
            .collect();
        (model, log_files(&log).pop().unwrap(), positions)
    };
    let in_active = positions.len();
    let last_position = *positions.last().unwrap();
    flip_bit(&active, last_position + 70);
    let (manager, log, report) = reopen(dir.path());
    assert!(report.bytes_truncated > 0);
    assert_log_is(&log, &model[..model.len() - 1]);
    drop((manager, log));

    // Zero the bytes of the second batch of the active segment: the log ends before it.
    if in_active >= 3 {
        let mut bytes = std::fs::read(&active).unwrap();
        for b in &mut bytes[positions[1] as usize..positions[2] as usize] {
            *b = 0;
        }
        std::fs::write(&active, bytes).unwrap();
        let (_manager, log, _) = reopen(dir.path());
        let kept = model.len() - in_active + 1;
        assert_log_is(&log, &model[..kept]);
    }
}

/// Corruption in the middle of a closed segment below the checkpoint is not
/// cut at start (the data after it was acknowledged); a read reaching it gets
/// a typed error, never the bytes, and every other batch stays readable.
#[test]
fn corruption_below_checkpoint_is_refused_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (model, first_segment) = {
        let (manager, log) = open_fresh(dir.path());
        let model = fill(&log, 60);
        manager.shutdown().unwrap();
        (model, log_files(&log)[0].clone())
    };
    // Corrupt the value of the second batch of the first segment.
    let second_position = model[0].2.len() as u64;
    flip_bit(&first_segment, second_position + 70);
    let (_manager, log, report) = reopen(dir.path());
    assert_eq!(report.bytes_truncated, 0);
    assert_eq!(log.log_end_offset(), model.last().unwrap().1 + 1);
    let (bad_base, bad_last, _) = model[1];
    for offset in bad_base..=bad_last {
        assert!(matches!(
            log.read(offset, usize::MAX),
            Err(StorageError::Corrupt { position, .. }) if position == second_position
        ));
    }
    // A read starting before the corrupt batch stops short of it.
    let first = log.read(0, usize::MAX).unwrap();
    assert_eq!(first.len(), model[0].2.len());
    assert_log_is_from(&log, bad_last + 1, &model[2..]);
}

fn assert_log_is_from(log: &PartitionLog, from: i64, model: &[(i64, i64, Vec<u8>)]) {
    let mut offset = from;
    let mut got = Vec::new();
    while offset < log.log_end_offset() {
        for view in BatchReader::new(log.read(offset, usize::MAX).unwrap()) {
            let view = view.unwrap();
            got.push((
                view.header().base_offset,
                view.header().last_offset(),
                without_offset(view.bytes()),
            ));
            offset = view.header().last_offset() + 1;
        }
    }
    assert_eq!(got, model);
}

/// Without a valid checkpoint every segment is re-validated, and corruption
/// in the middle truncates there and deletes the later segments (Kafka's rule).
#[test]
fn corruption_past_checkpoint_truncates_and_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (model, files) = {
        let (_manager, log) = open_fresh(dir.path());
        let model = fill(&log, 60);
        (model, log_files(&log))
    };
    assert!(files.len() >= 3);
    std::fs::remove_file(dir.path().join("t-0").join(RECOVERY_CHECKPOINT_FILE)).unwrap();
    let second_position = model[0].2.len() as u64;
    flip_bit(&files[0], second_position + 70);
    let (_manager, log, report) = reopen(dir.path());
    assert_eq!(report.segments_deleted, files.len() - 1);
    assert_log_is(&log, &model[..1]);
    assert!(!files[1].exists());
}

/// A damaged index file, or one that describes a log of another size, is
/// detected by its checksum/header and rebuilt from the log.
#[test]
fn stale_or_damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (model, base) = {
        let (manager, log) = open_fresh(dir.path());
        let model = fill(&log, 60);
        let base = log.segment_base_offsets()[1];
        manager.shutdown().unwrap();
        (model, base)
    };
    let partition_dir = dir.path().join("t-0");
    flip_bit(&segment_path(&partition_dir, base, "index"), 50);
    let (manager, log, report) = reopen(dir.path());
    assert_eq!(report.indexes_rebuilt, 1);
    assert_log_is(&log, &model);
    manager.shutdown().unwrap();
    drop((manager, log));

    // Swap in the index of another segment: checksum fine, header wrong.
    let other = segment_path(&partition_dir, 0, "timeindex");
    std::fs::copy(other, segment_path(&partition_dir, base, "timeindex")).unwrap();
    let (_manager, log, report) = reopen(dir.path());
    assert_eq!(report.indexes_rebuilt, 1);
    assert_log_is(&log, &model);
    for (b, l, _) in &model {
        assert_eq!(
            log.read(*l, 1).unwrap().len(),
            model.iter().find(|m| m.0 == *b).unwrap().2.len()
        );
    }
}

/// A roll leaves the old segment's preallocated tail for the next flush to
/// trim (a truncate can wait on the disk, and a roll holds the partition's
/// appends); after a crash before that flush, recovery trims it.
#[test]
fn rolled_segments_are_trimmed_by_the_flush_or_by_recovery() {
    let file_len = |segment: &Segment| std::fs::metadata(segment.log_path()).unwrap().len();
    let untrimmed = |log: &PartitionLog| {
        let mut rolled = log.shared().segments_snapshot();
        rolled.pop();
        assert!(rolled.len() >= 2, "the fill rolls");
        rolled
            .iter()
            .filter(|s| file_len(s) != s.size_bytes())
            .count()
    };

    let flushed = tempfile::tempdir().unwrap();
    let (_manager, log) = open_fresh(flushed.path());
    fill(&log, 50);
    assert!(untrimmed(&log) > 0, "rolls leave the tails");
    log.flush().unwrap();
    assert_eq!(untrimmed(&log), 0, "the flush trims them");

    let crashed = tempfile::tempdir().unwrap();
    let model = {
        let (_manager, log) = open_fresh(crashed.path());
        let model = fill(&log, 50);
        assert!(untrimmed(&log) > 0);
        model
    };
    let (_manager, log, report) = reopen(crashed.path());
    assert_eq!(report.bytes_truncated, 0, "a zero tail is not a torn one");
    assert_eq!(untrimmed(&log), 0);
    assert_log_is(&log, &model);
}
