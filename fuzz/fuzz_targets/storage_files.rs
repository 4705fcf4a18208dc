//! The storage engine's decoders of disk bytes: index files, the recovery
//! checkpoint, and a segment `.log` opened by recovery and read back.
//!
//! First input byte: 0 = index/checkpoint decoders on the rest; 1 = the rest
//! is a segment file recovered after an unclean stop; 2 = the same after a
//! "clean" shutdown (trusted, so reads must catch what recovery skipped).
//! Whatever the bytes, nothing may panic and a read may only return whole
//! batches whose CRC holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_broker::storage::format::{
    decode_checkpoint, decode_index_file, IndexKind, CLEAN_SHUTDOWN_FILE,
};
use skiff_broker::storage::{LogConfig, LogManager};
use skiff_protocol::batch::BatchReader;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode {
        0 => {
            for kind in [IndexKind::Offset, IndexKind::Time] {
                if let Ok((header, range)) = decode_index_file(rest, kind) {
                    assert_eq!(range.len(), header.entry_count as usize * kind.entry_bytes());
                }
            }
            let _ = decode_checkpoint(rest);
        }
        1 | 2 => recover_and_read(rest, mode == 2),
        _ => {}
    }
});

fn recover_and_read(segment: &[u8], clean: bool) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let partition = dir.path().join("t-0");
    if std::fs::create_dir(&partition).is_err()
        || std::fs::write(partition.join("00000000000000000000.log"), segment).is_err()
        || (clean && std::fs::write(dir.path().join(CLEAN_SHUTDOWN_FILE), b"").is_err())
    {
        return;
    }
    let config = LogConfig { segment_bytes: 64 * 1024, index_interval_bytes: 64, ..LogConfig::default() };
    let Ok(manager) = LogManager::open(dir.path(), config) else { return };
    let Some(log) = manager.get("t", 0) else { return };
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    assert!(start <= end);
    let mut offset = start;
    // Bounded walk: each step moves past at least one batch or stops.
    for _ in 0..10_000 {
        if offset >= end {
            break;
        }
        let Ok(bytes) = log.read(offset, 1 << 20) else { break };
        if bytes.is_empty() {
            break;
        }
        let mut reader = BatchReader::new(bytes);
        let mut last = None;
        for view in reader.by_ref() {
            let view = view.expect("a read returns only well-formed batches");
            view.validate().expect("a read returns only batches whose CRC holds");
            last = Some(view.header().last_offset());
        }
        assert_eq!(reader.partial_tail_bytes(), 0, "a read returns whole batches");
        match last {
            Some(last) if last >= offset => offset = last + 1,
            _ => break,
        }
    }
    let _ = log.offset_for_timestamp(0);
    let _ = log.scan_headers(0);
}
