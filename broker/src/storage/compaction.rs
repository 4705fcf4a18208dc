//! Compaction for `cleanup.policy=compact`: in the closed segments, keep only
//! the newest record of each key; drop tombstones (null values) older than
//! `delete_retention_ms`; keep every surviving record's offset (gaps allowed).
//!
//! As in Kafka, only closed segments are cleaned and the key map is built
//! from them alone (the active segment is still changing). A batch that keeps
//! all its records is copied verbatim; one that keeps some is rebuilt from
//! the kept records' encoded bytes, unchanged, so their offset and timestamp
//! deltas still hold: the header keeps `base_offset`, `last_offset_delta` (so
//! producer state survives) and the timestamps, and gets a new
//! `batch_length`, `records_count` and CRC. A batch left empty is dropped;
//! control batches are kept as they are.
//!
//! The work runs without the append lock or any read lock: a segment is
//! rewritten to `<base>.log.cleaned`, fsynced, renamed over the original
//! (atomic), and swapped into the segment list under a brief write lock.
//! Readers holding the old segment's bytes keep its mapping.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use skiff_protocol::batch::compression::{compress, decompress};
use skiff_protocol::batch::varint::read_varint;
use skiff_protocol::batch::{
    BatchReader, Compression, RecordBatchView, BATCH_HEADER_BYTES, CRC_COVERED_FROM, CRC_OFFSET,
    DECOMPRESSED_BYTES_MAX, LOG_OVERHEAD_BYTES,
};

use super::error::{Result, StorageError};
use super::format::{segment_path, CLEANED_SUFFIX, LOG_SUFFIX};
use super::log::{lock, PartitionLog};
use super::segment::{sync_dir, Segment};
use super::CleanupPolicy;

impl PartitionLog {
    /// Compacts the closed segments; returns how many were rewritten.
    pub fn compact(&self, now_ms: i64) -> Result<usize> {
        let config = self.config();
        if config.cleanup_policy != CleanupPolicy::Compact {
            return Ok(0);
        }
        let shared = self.shared();
        let _maintenance = lock(&shared.maintenance);
        let segments = shared.segments_snapshot();
        let Some((_active, closed)) = segments.split_last() else {
            return Ok(0);
        };
        // Segments whose final sync is pending are left for the next pass.
        let closed: Vec<Arc<Segment>> = closed
            .iter()
            .take_while(|s| !shared.is_pending_closed(s))
            .cloned()
            .collect();
        let mut newest: HashMap<Bytes, i64> = HashMap::new();
        for segment in &closed {
            for_each_record(segment, |_, offset, key, _, _| {
                if let Some(key) = key {
                    newest.insert(key, offset);
                }
            })?;
        }
        let tombstone_horizon_ms = now_ms.saturating_sub(config.delete_retention_ms as i64);
        let mut rewritten = 0;
        for segment in &closed {
            let keep =
                |offset: i64, key: &Option<Bytes>, is_tombstone: bool, timestamp: i64| match key {
                    None => true,
                    Some(key) => {
                        newest.get(key) == Some(&offset)
                            && !(is_tombstone && timestamp < tombstone_horizon_ms)
                    }
                };
            if let Some(cleaned) = clean_segment(segment, keep)? {
                self.swap_in(segment, &cleaned)?;
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }

    /// Replaces `old` on disk and in the segment list by the cleaned bytes.
    fn swap_in(&self, old: &Arc<Segment>, cleaned: &[u8]) -> Result<()> {
        let dir = self.dir();
        let base = old.base_offset();
        let temp = dir.join(format!("{:020}.{LOG_SUFFIX}.{CLEANED_SUFFIX}", base));
        let mut file = std::fs::File::create(&temp).map_err(|e| StorageError::io(&temp, e))?;
        file.write_all(cleaned)
            .map_err(|e| StorageError::io(&temp, e))?;
        file.sync_data().map_err(|e| StorageError::io(&temp, e))?;
        let log_path = segment_path(dir, base, LOG_SUFFIX);
        std::fs::rename(&temp, &log_path).map_err(|e| StorageError::io(&log_path, e))?;
        sync_dir(dir)?;
        let clock = &self.shared().clock;
        let fresh = Segment::open(dir, base, 0, clock())?;
        let config = self.config();
        let scan = fresh.scan(cleaned.len() as u64, false, config.index_interval_bytes);
        if let Some(stop) = scan.stop {
            return Err(StorageError::corrupt(&log_path, stop.position, stop.reason));
        }
        fresh.install(
            scan.valid_bytes,
            scan.next_offset.max(base),
            scan.builder.max_timestamp(),
            scan.offset_index,
            scan.time_index,
            scan.valid_bytes,
        );
        fresh.mark_closed();
        fresh.write_index_files()?;
        sync_dir(dir)?;
        let fresh = Arc::new(fresh);
        let mut list = self
            .shared()
            .segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = list.iter().position(|s| Arc::ptr_eq(s, old));
        // Only compaction and retention replace closed segments, and both hold the maintenance lock.
        assert!(slot.is_some(), "compacted segment vanished from the list");
        if let Some(slot) = slot {
            list[slot] = fresh;
        }
        Ok(())
    }
}

/// Calls `f(batch, offset, key, is_tombstone, timestamp)` for every record of
/// the segment's non-control batches.
fn for_each_record(
    segment: &Segment,
    mut f: impl FnMut(&RecordBatchView, i64, Option<Bytes>, bool, i64),
) -> Result<()> {
    let data = segment.data();
    let mut reader = BatchReader::new(data);
    loop {
        let position = reader.position() as u64;
        let Some(view) = reader.next() else { break };
        let corrupt = |reason: String| StorageError::corrupt(segment.log_path(), position, reason);
        let view = view.map_err(|e| corrupt(e.to_string()))?;
        view.validate().map_err(|e| corrupt(e.to_string()))?;
        if view.header().attributes.is_control() {
            continue;
        }
        for record in view.records().map_err(|e| corrupt(e.to_string()))? {
            let record = record.map_err(|e| corrupt(e.to_string()))?;
            f(
                &view,
                record.offset,
                record.key,
                record.value.is_none(),
                record.timestamp,
            );
        }
    }
    Ok(())
}

/// The segment's bytes with only the records `keep` accepts, or `None` if
/// nothing would change.
fn clean_segment(
    segment: &Segment,
    keep: impl Fn(i64, &Option<Bytes>, bool, i64) -> bool,
) -> Result<Option<Vec<u8>>> {
    let data = segment.data();
    let mut out = Vec::with_capacity(data.len());
    let mut changed = false;
    let mut position = 0usize;
    for view in BatchReader::new(data.clone()) {
        let batch_position = position as u64;
        let corrupt =
            |reason: String| StorageError::corrupt(segment.log_path(), batch_position, reason);
        let view = view.map_err(|e| corrupt(e.to_string()))?;
        let total = view.bytes().len();
        if view.header().attributes.is_control() {
            out.extend_from_slice(view.bytes());
            position += total;
            continue;
        }
        let codec = view.compression().map_err(|e| corrupt(e.to_string()))?;
        let block = match codec {
            Compression::None => view.raw_records(),
            // Decompressed once more here (records() did it too) to get at the raw record bytes.
            _ => decompress(codec, &view.raw_records(), DECOMPRESSED_BYTES_MAX)
                .map_err(|e| corrupt(e.to_string()))?,
        };
        let mut kept: Vec<std::ops::Range<usize>> = Vec::new();
        let mut count = 0usize;
        let mut at = 0usize;
        for record in view.records().map_err(|e| corrupt(e.to_string()))? {
            let record = record.map_err(|e| corrupt(e.to_string()))?;
            let (length, read) = read_varint(&block, at).map_err(|e| corrupt(e.to_string()))?;
            let range = at..at + read + length as usize;
            at = range.end;
            count += 1;
            if keep(
                record.offset,
                &record.key,
                record.value.is_none(),
                record.timestamp,
            ) {
                kept.push(range);
            }
        }
        position += total;
        if kept.len() == count {
            out.extend_from_slice(view.bytes());
            continue;
        }
        changed = true;
        if kept.is_empty() {
            continue;
        }
        let start = out.len();
        out.extend_from_slice(&view.bytes()[..BATCH_HEADER_BYTES]);
        let mut records = Vec::new();
        for range in &kept {
            records.extend_from_slice(&block[range.clone()]);
        }
        compress(codec, &records, &mut out).map_err(|e| corrupt(e.to_string()))?;
        let batch = &mut out[start..];
        let batch_length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
        batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
        batch[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
        let crc = skiff_protocol::batch::crc32c(&batch[CRC_COVERED_FROM..]);
        batch[CRC_OFFSET..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(changed.then_some(out))
}
