//! Helpers shared by the storage tests: real batches, real temp dirs, a hand-driven clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use skiff_protocol::batch::{RecordBatchBuilder, RecordBatchBuilderConfig};

use super::{Clock, LogConfig};

/// A batch of `records` records, each with a distinct value of `value_bytes`
/// bytes and timestamp `timestamp_ms + i`.
pub fn batch(records: usize, value_bytes: usize, timestamp_ms: i64, seed: u8) -> Bytes {
    let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig::default());
    let mut value = vec![seed; value_bytes];
    for i in 0..records {
        if let Some(first) = value.first_mut() {
            *first = i as u8;
        }
        builder.append(
            timestamp_ms + i as i64,
            Some(format!("k{i}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    builder
        .build()
        .unwrap_or_else(|e| panic!("building a test batch: {e}"))
}

/// A batch of keyed records `(key, value)`; `None` values are tombstones.
pub fn keyed_batch(records: &[(&str, Option<&str>)], timestamp_ms: i64) -> Bytes {
    let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig::default());
    for (key, value) in records {
        builder.append(
            timestamp_ms,
            Some(key.as_bytes()),
            value.map(str::as_bytes),
            &[],
        );
    }
    builder
        .build()
        .unwrap_or_else(|e| panic!("building a test batch: {e}"))
}

/// Bytes of `stored` with base offset and leader epoch cleared, to compare
/// a batch read back with the one appended.
pub fn without_offset(stored: &[u8]) -> Vec<u8> {
    let mut copy = stored.to_vec();
    copy[0..8].copy_from_slice(&0i64.to_be_bytes());
    copy[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    copy
}

/// A clock the test moves by hand.
#[derive(Clone, Default)]
pub struct ManualClock(pub Arc<AtomicI64>);

impl ManualClock {
    pub fn at(ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(ms)))
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn clock(&self) -> Clock {
        let inner = self.0.clone();
        Arc::new(move || inner.load(Ordering::SeqCst))
    }
}

/// Small segments and dense indexes so tests cross every boundary.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 256,
        max_message_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}
