//! RecordBatch view + validate + record iteration (owned and borrowed) +
//! decompression.
//!
//! The input is read as a buffer of concatenated batches (a produce request's
//! records, a segment slice). The CRC is checked but a mismatch does not stop
//! the walk, so that the fuzzer reaches record decoding without having to
//! forge CRC-32C values.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use skiff_protocol::batch::{BatchReader, RecordBatchView};

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let mut reader = BatchReader::new(buf.clone());
    for view in reader.by_ref() {
        let Ok(view) = view else { break };
        exercise(&view);
    }
    assert!(reader.position() <= buf.len());
    if let Ok(view) = RecordBatchView::new(buf) {
        exercise(&view);
    }
});

fn exercise(view: &RecordBatchView) {
    let _ = view.validate();
    let _ = view.validate_records();
    let header = *view.header();
    let _ = (header.last_offset(), header.offset_count(), header.last_sequence());
    let Ok(records) = view.records() else { return };
    // The borrowed walk checks what the owned one checks.
    for record in records.borrowed() {
        let Ok(record) = record else { break };
        let _ = (record.key, record.value, record.headers.count());
    }
    for record in records {
        let Ok(record) = record else { break };
        for header in record.headers {
            if header.is_err() {
                break;
            }
        }
    }
}
