//! Opening a partition directory: which segments to trust, which to
//! re-validate, and where to cut a torn tail. See the module docs of
//! [`super`] for the policy.

use std::path::Path;
use std::sync::Arc;

use super::error::{Result, StorageError};
use super::format::{
    decode_checkpoint, parse_log_file_name, IndexKind, CLEANED_SUFFIX, RECOVERY_CHECKPOINT_FILE,
    TEMP_SUFFIX,
};
use super::index::{IndexBuilder, SparseIndex};
use super::log::PartitionLog;
use super::segment::{remove_if_exists, sync_dir, Segment};
use super::{Clock, LogConfig};

/// What happened while opening a partition, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments whose every batch was re-validated.
    pub segments_validated: usize,
    /// Segments whose indexes were rebuilt from the log.
    pub indexes_rebuilt: usize,
    /// Bytes cut from torn or corrupt tails (not counting zero-filled preallocation).
    pub bytes_truncated: u64,
    /// Segments deleted because they followed a truncation point.
    pub segments_deleted: usize,
}

/// Opens (or creates) the partition log in `dir`. With `clean`, the previous
/// run shut down cleanly and every segment is trusted as written.
pub fn open_partition(
    dir: &Path,
    topic: &str,
    partition: i32,
    config: LogConfig,
    clock: Clock,
    clean: bool,
) -> Result<(PartitionLog, RecoveryReport)> {
    config.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(&format!(".{TEMP_SUFFIX}"))
            || name.ends_with(&format!(".{CLEANED_SUFFIX}"))
        {
            // An interrupted atomic write or compaction: the original is intact.
            remove_if_exists(&entry.path())?;
        } else if let Some(base) = parse_log_file_name(&name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let checkpoint = std::fs::read(dir.join(RECOVERY_CHECKPOINT_FILE))
        .ok()
        .and_then(|bytes| decode_checkpoint(&bytes))
        .unwrap_or(0);
    let now_ms = clock();
    let active_capacity = config
        .segment_bytes
        .max(u64::from(config.max_message_bytes));
    let mut report = RecoveryReport::default();
    let mut segments: Vec<Arc<Segment>> = Vec::new();
    let mut builder = IndexBuilder::new(config.index_interval_bytes);
    let mut i = 0;
    while i < bases.len() {
        let base = bases[i];
        let is_last = i + 1 == bases.len();
        let previous_end = segments.last().map(|s| s.next_offset());
        if previous_end.is_some_and(|end| base < end) {
            tracing::warn!(dir = %dir.display(), base, "segment overlaps its predecessor; deleting it and all later segments");
            delete_from(dir, &bases[i..], &mut report)?;
            break;
        }
        let capacity = if is_last { active_capacity } else { 0 };
        let segment = Segment::open(dir, base, capacity, now_ms)?;
        let file_len = segment.file_len()?;
        let trusted = clean || (!is_last && bases[i + 1] <= checkpoint);
        let loaded = if trusted {
            load_indexes(dir, base, file_len)
        } else {
            None
        };
        let indexes_loaded = loaded.is_some();
        let cut = match loaded {
            Some((next_offset, max_timestamp, offsets, times, bytes_since_entry)) => {
                segment.install(file_len, next_offset, max_timestamp, offsets, times, 0);
                builder = IndexBuilder::resume(
                    config.index_interval_bytes,
                    bytes_since_entry,
                    max_timestamp,
                );
                false
            }
            None => {
                let scan = segment.scan(file_len, !trusted, config.index_interval_bytes);
                report.indexes_rebuilt += 1;
                if !trusted {
                    report.segments_validated += 1;
                }
                let mut cut = false;
                if let Some(stop) = &scan.stop {
                    let data = segment.data_upto(file_len);
                    let zero_tail = data[stop.position as usize..].iter().all(|b| *b == 0);
                    if !zero_tail {
                        tracing::warn!(
                            file = %segment.log_path().display(), position = stop.position, reason = %stop.reason,
                            "invalid batch; truncating the log here"
                        );
                        report.bytes_truncated += file_len - stop.position;
                        cut = true;
                    }
                }
                let verified = if trusted { 0 } else { scan.valid_bytes };
                let max_timestamp = scan.builder.max_timestamp();
                segment.install(
                    scan.valid_bytes,
                    scan.next_offset,
                    max_timestamp,
                    scan.offset_index,
                    scan.time_index,
                    verified,
                );
                builder = scan.builder;
                cut
            }
        };
        let becomes_last = is_last || cut;
        if becomes_last {
            // Discard the zero tail and anything torn past the data, so that
            // stale bytes can never line up with new appends after a crash.
            segment.truncate_to_size()?;
        } else if segment.file_len()? != segment.size_bytes() || !indexes_loaded {
            segment.close()?;
            segment.sync(true)?;
            segment.write_index_files()?;
        } else {
            segment.mark_closed();
        }
        segments.push(Arc::new(segment));
        if cut {
            delete_from(dir, &bases[i + 1..], &mut report)?;
            break;
        }
        i += 1;
    }
    if segments.is_empty() {
        segments.push(Arc::new(Segment::create(
            dir,
            0,
            active_capacity,
            0,
            now_ms,
        )?));
    }
    let last = segments[segments.len() - 1].clone();
    if last.capacity_bytes() < active_capacity {
        // Reopened after a clean shutdown that trimmed it: map room to grow.
        let reopened = Segment::open(dir, last.base_offset(), active_capacity, now_ms)?;
        let offsets = std::mem::replace(
            &mut *last.indexes_mut().0,
            SparseIndex::new(IndexKind::Offset),
        );
        let times = std::mem::replace(
            &mut *last.indexes_mut().1,
            SparseIndex::new(IndexKind::Time),
        );
        reopened.install(
            last.size_bytes(),
            last.next_offset(),
            last.max_timestamp(),
            offsets,
            times,
            last.verified_bytes(),
        );
        let n = segments.len();
        segments[n - 1] = Arc::new(reopened);
    }
    let log = PartitionLog::from_recovered(topic, partition, dir, config, clock, segments, builder);
    sync_dir(dir)?;
    // From now on the active segment is re-validated after a crash.
    let active_base = log.segment_base_offsets().last().copied().unwrap_or(0);
    log.shared().write_checkpoint(active_base)?;
    Ok((log, report))
}

/// Loads both index files if they are intact and describe a log of `file_len` bytes.
#[allow(clippy::type_complexity)]
fn load_indexes(
    dir: &Path,
    base: i64,
    file_len: u64,
) -> Option<(i64, i64, SparseIndex, SparseIndex, u64)> {
    let path = |kind: IndexKind| super::format::segment_path(dir, base, kind.suffix());
    let (offset_header, offsets) =
        SparseIndex::load(&path(IndexKind::Offset), IndexKind::Offset).ok()??;
    let (time_header, times) =
        SparseIndex::load(&path(IndexKind::Time), IndexKind::Time).ok()??;
    let consistent = offset_header.base_offset == base
        && time_header.base_offset == base
        && offset_header.log_bytes == file_len
        && time_header.log_bytes == file_len
        && offset_header.next_offset == time_header.next_offset
        && offset_header.next_offset >= base
        && offsets
            .last_offset_entry()
            .is_none_or(|(_, position)| u64::from(position) < file_len);
    if !consistent {
        return None;
    }
    let bytes_since_entry = file_len - offsets.last_offset_entry().map_or(0, |(_, p)| u64::from(p));
    Some((
        offset_header.next_offset,
        offset_header.max_timestamp,
        offsets,
        times,
        bytes_since_entry,
    ))
}

fn delete_from(dir: &Path, bases: &[i64], report: &mut RecoveryReport) -> Result<()> {
    for &base in bases {
        tracing::warn!(dir = %dir.display(), base, "deleting segment after the truncation point");
        for suffix in [
            super::format::LOG_SUFFIX,
            IndexKind::Offset.suffix(),
            IndexKind::Time.suffix(),
        ] {
            remove_if_exists(&super::format::segment_path(dir, base, suffix))?;
        }
        report.segments_deleted += 1;
    }
    Ok(())
}
