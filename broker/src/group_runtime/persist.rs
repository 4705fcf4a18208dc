//! Writing coordinator records to `__consumer_offsets` and reading them
//! back at start.

use std::sync::Arc;

use skiff_protocol::batch::{BatchReader, RecordBatchBuilder, RecordBatchBuilderConfig};
use skiff_protocol::ErrorCode;

use crate::coordinator::{GroupCoordinator, OffsetsRecord};
use crate::handlers::storage_error_code;
use crate::storage::StorageError;
use crate::topics::{Partition, Topic};

/// Bytes read from the log per step of a load.
const LOAD_READ_BYTES: usize = 1 << 20;

/// Records appended to one partition, waiting to become durable.
pub struct Appended {
    pub partition: Arc<Partition>,
    pub last_offset: i64,
}

/// Appends `records` as one batch to partition `index` of the offsets
/// topic. The error is the Kafka code the failure maps to.
pub fn append(
    topic: &Topic,
    index: i32,
    records: &[OffsetsRecord],
    now_ms: i64,
) -> Result<Option<Appended>, ErrorCode> {
    if records.is_empty() {
        return Ok(None);
    }
    let partition = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig::default());
    for record in records {
        let key = record.key_bytes();
        let value = record.value_bytes();
        builder.append(now_ms, Some(&key), value.as_deref(), &[]);
    }
    let batch = builder.build().map_err(|error| {
        tracing::error!(%error, "cannot encode __consumer_offsets batch");
        ErrorCode::UnknownServerError
    })?;
    match partition.log.append(&batch) {
        Ok(info) => Ok(Some(Appended {
            partition: Arc::clone(partition),
            last_offset: info.last_offset,
        })),
        Err(error) => {
            tracing::warn!(partition = index, %error, "__consumer_offsets append failed");
            Err(append_error_code(&error))
        }
    }
}

/// Kafka's mapping of append failures for group writes
/// (`GroupMetadataManager`): too large → INVALID_COMMIT_OFFSET_SIZE for
/// commits, anything else → COORDINATOR_NOT_AVAILABLE, which clients retry.
pub fn append_error_code(error: &StorageError) -> ErrorCode {
    match storage_error_code(error) {
        ErrorCode::MessageTooLarge => ErrorCode::InvalidCommitOffsetSize,
        _ => ErrorCode::CoordinatorNotAvailable,
    }
}

/// Waits until `appended` is durable per the topic's flush policy.
pub async fn wait_durable(appended: &Appended) -> Result<(), ErrorCode> {
    appended
        .partition
        .log
        .wait_durable(appended.last_offset)
        .await
        .map_err(|error| {
            tracing::error!(
                partition = appended.partition.index,
                %error,
                "__consumer_offsets flush failed"
            );
            append_error_code(&error)
        })
}

/// Replays every record of `partition` into the coordinator, one read at a
/// time so requests for other partitions' groups are not held up long.
pub(crate) fn load_partition(
    coordinator: &std::sync::Mutex<super::Inner>,
    partition: &Partition,
    now_ms: impl Fn() -> i64,
) -> Result<u64, StorageError> {
    let log = &partition.log;
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let mut records = 0u64;
    while offset < end {
        let bytes = log.read(offset, LOAD_READ_BYTES)?;
        if bytes.is_empty() {
            break;
        }
        let mut reader = BatchReader::new(bytes);
        let mut advanced = false;
        let mut inner = super::lock(coordinator);
        for view in reader.by_ref() {
            let view =
                view.map_err(|e| StorageError::corrupt(partition.log.dir(), 0, e.to_string()))?;
            let header = *view.header();
            let next = header.last_offset() + 1;
            if next <= offset {
                continue;
            }
            replay_batch(
                &mut inner.coordinator,
                &view,
                offset,
                now_ms(),
                &mut records,
            );
            offset = next;
            advanced = true;
        }
        drop(inner);
        if !advanced {
            return Err(StorageError::corrupt(
                partition.log.dir(),
                0,
                format!("no whole batch readable at offset {offset}"),
            ));
        }
    }
    Ok(records)
}

fn replay_batch(
    coordinator: &mut GroupCoordinator,
    view: &skiff_protocol::batch::RecordBatchView,
    from_offset: i64,
    now_ms: i64,
    records: &mut u64,
) {
    let iter = match view.records() {
        Ok(iter) => iter,
        Err(error) => {
            tracing::warn!(%error, "skipping undecodable __consumer_offsets batch");
            return;
        }
    };
    for record in iter {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(%error, "skipping undecodable __consumer_offsets record");
                break;
            }
        };
        if record.offset < from_offset {
            continue;
        }
        let Some(key) = record.key.as_ref() else {
            continue;
        };
        match coordinator.replay_raw(now_ms, key, record.value.as_ref()) {
            Ok(()) => *records += 1,
            Err(error) => {
                tracing::warn!(offset = record.offset, %error, "skipping unknown __consumer_offsets record");
            }
        }
    }
}
