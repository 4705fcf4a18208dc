//! Produce (key 0), versions 3–11, acks 0, 1 and -1.
//!
//! Copy-free: the batch bytes the client sent are validated in place (size,
//! one whole batch, CRC-32C, every record decodable, producer sequence) and
//! handed to the log as they are; the log writes them into the mapped
//! segment and stamps the base offset there. Nothing is re-encoded and
//! nothing is allocated per record.
//!
//! As Kafka requires for v3+, each partition carries exactly one batch.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use skiff_protocol::api::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use skiff_protocol::api::messages::{ProduceRequest, ProduceResponse};
use skiff_protocol::batch::{BatchReader, RecordBatchView};
use skiff_protocol::ErrorCode;

use super::{storage_error_code, str_bytes, topic_error_code};
use crate::broker::Broker;
use crate::config::{Cleanup, TopicDefaults};
use crate::producer_state::{SequenceCheck, SequenceError};
use crate::topics::Partition;

/// Partition index, the partition if it exists, and what happened.
type PartitionOutcome = (i32, Option<Arc<Partition>>, Appended);

/// A partition's outcome before the durability wait.
struct Appended {
    error: ErrorCode,
    message: Option<String>,
    base_offset: i64,
    /// Last offset to wait on for durability, when something was appended.
    durable_offset: Option<i64>,
    log_start_offset: i64,
}

impl Appended {
    fn failed(error: ErrorCode, message: impl Into<String>) -> Appended {
        Appended {
            error,
            message: Some(message.into()),
            base_offset: -1,
            durable_offset: None,
            log_start_offset: -1,
        }
    }
}

/// A produce request whose batches are appended, awaiting durability.
pub struct PendingProduce {
    acks: i16,
    timeout_ms: i32,
    results: Vec<(String, Vec<PartitionOutcome>)>,
}

/// Validates and appends every partition's batch. Synchronous, so that the
/// connection loop can run it in request order: a client pipelining produce
/// requests (idempotent or not) sees its batches appended in the order it
/// sent them, as with Kafka.
pub fn append_all(broker: &Arc<Broker>, _version: i16, request: ProduceRequest) -> PendingProduce {
    let acks = request.acks;
    let mut results: Vec<(String, Vec<PartitionOutcome>)> = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.as_str().to_string();
        // As in Kafka, only Metadata auto-creates topics; a Produce to an
        // unknown topic answers UNKNOWN_TOPIC_OR_PARTITION, and the client
        // retries after a metadata refresh (which creates it if allowed).
        let found = broker.topic_or_create(&name, false);
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let outcome = if request.transactional_id.is_some() {
                (
                    None,
                    Appended::failed(
                        ErrorCode::TransactionalIdAuthorizationFailed,
                        "transactions are not supported",
                    ),
                )
            } else if name == crate::coordinator::OFFSETS_TOPIC {
                // Kafka refuses client writes to internal topics.
                (
                    None,
                    Appended::failed(
                        ErrorCode::InvalidTopicException,
                        "cannot append to internal topic __consumer_offsets",
                    ),
                )
            } else if !matches!(acks, -1..=1) {
                (
                    None,
                    Appended::failed(ErrorCode::InvalidRequiredAcks, format!("acks={acks}")),
                )
            } else {
                match &found {
                    Err(error) => (
                        None,
                        Appended::failed(topic_error_code(error), error.to_string()),
                    ),
                    Ok(topic) => match usize::try_from(data.index)
                        .ok()
                        .and_then(|i| topic.partitions.get(i))
                    {
                        None => (
                            None,
                            Appended::failed(
                                ErrorCode::UnknownTopicOrPartition,
                                "no such partition",
                            ),
                        ),
                        Some(partition) => {
                            let records = data.records.unwrap_or_default();
                            (
                                Some(Arc::clone(partition)),
                                append(partition, records, &topic.settings),
                            )
                        }
                    },
                }
            };
            partitions.push((data.index, outcome.0, outcome.1));
        }
        results.push((name, partitions));
    }
    PendingProduce {
        acks,
        timeout_ms: request.timeout_ms,
        results,
    }
}

impl PendingProduce {
    /// For acks=0, the first partition error, if any.
    pub fn unacknowledged_failure(&self) -> Option<String> {
        if self.acks != 0 {
            return None;
        }
        self.results.iter().find_map(|(topic, partitions)| {
            partitions
                .iter()
                .find(|(_, _, appended)| !appended.error.is_ok())
                .map(|(index, _, appended)| {
                    format!(
                        "{topic}-{index}: {}",
                        appended.message.as_deref().unwrap_or(appended.error.name())
                    )
                })
        })
    }
}

/// Waits until the appended batches are durable per the flush policy and
/// builds the response (none for acks=0).
pub async fn respond(pending: PendingProduce) -> Option<ProduceResponse> {
    let PendingProduce {
        acks,
        timeout_ms,
        results,
    } = pending;
    if acks == 0 {
        return None;
    }
    // Durability waits run concurrently, so one fsync can cover many partitions' appends.
    // `timeout_ms` bounds them for acks=-1, as it bounds replication in Kafka;
    // acks=1 answers when the flush policy is met, however long that takes.
    let timeout = if acks == -1 {
        Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0).max(1))
    } else {
        Duration::MAX
    };
    let topics = results.into_iter().map(|(name, partitions)| async move {
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = skiff_protocol::api::messages::TopicName(str_bytes(name));
        let waits = partitions.into_iter().map(|(index, partition, mut appended)| async move {
            if let (Some(partition), Some(offset)) = (partition, appended.durable_offset) {
                match tokio::time::timeout(timeout, partition.log.wait_durable(offset)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::error!(topic = partition.topic, partition = index, %error, "flush failed");
                        appended.error = ErrorCode::KafkaStorageError;
                        appended.message = Some(error.to_string());
                    }
                    Err(_) => {
                        appended.error = ErrorCode::RequestTimedOut;
                        appended.message = Some("not durable within timeout_ms".to_string());
                    }
                }
            }
            let mut out = PartitionProduceResponse::default();
            out.index = index;
            out.error_code = appended.error.code();
            out.error_message = appended.message.map(str_bytes);
            out.base_offset = appended.base_offset;
            out.log_append_time_ms = -1;
            out.log_start_offset = appended.log_start_offset;
            out
        });
        topic_response.partition_responses = futures::future::join_all(waits).await;
        topic_response
    });
    let mut response = ProduceResponse::default();
    response.responses = futures::future::join_all(topics).await;
    Some(response)
}

/// Validates `records` (one batch) and appends it, unless it is a retry.
fn append(partition: &Partition, records: Bytes, settings: &TopicDefaults) -> Appended {
    let keys_required = settings.cleanup_policy == Cleanup::Compact;
    let view = match validate(records, settings.max_message_bytes, keys_required) {
        Ok(view) => view,
        Err((code, message)) => {
            tracing::debug!(topic = partition.topic, partition = partition.index, %message, "batch refused");
            return Appended::failed(code, message);
        }
    };
    let header = *view.header();
    let log = &partition.log;
    let mut producers = partition
        .producers
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    match producers.check(&header) {
        Ok(SequenceCheck::Append) => {}
        Ok(SequenceCheck::Duplicate { base_offset }) => {
            return Appended {
                error: ErrorCode::None,
                message: None,
                base_offset,
                durable_offset: Some(base_offset + i64::from(header.last_offset_delta)),
                log_start_offset: log.log_start_offset(),
            }
        }
        Err(error @ SequenceError::Fenced { .. }) => {
            return Appended::failed(ErrorCode::InvalidProducerEpoch, error.to_string())
        }
        Err(error @ SequenceError::OutOfOrder { .. }) => {
            return Appended::failed(ErrorCode::OutOfOrderSequenceNumber, error.to_string())
        }
    }
    match log.append(view.bytes()) {
        Ok(info) => {
            let mut appended_header = header;
            appended_header.base_offset = info.base_offset;
            producers.record(&appended_header);
            drop(producers);
            let metrics = &partition.metrics;
            metrics.bytes_in.fetch_add(
                view.bytes().len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            metrics.records_in.fetch_add(
                u64::try_from(header.records_count).unwrap_or(0),
                std::sync::atomic::Ordering::Relaxed,
            );
            Appended {
                error: ErrorCode::None,
                message: None,
                base_offset: info.base_offset,
                durable_offset: Some(info.last_offset),
                log_start_offset: info.log_start_offset,
            }
        }
        Err(error) => {
            tracing::warn!(topic = partition.topic, partition = partition.index, %error, "append failed");
            Appended::failed(storage_error_code(&error), error.to_string())
        }
    }
}

/// Largest block a compressed batch may inflate to: far above real
/// compression ratios, far below what a hostile batch could claim.
fn decompressed_bytes_max(max_message_bytes: u32) -> usize {
    (max_message_bytes as usize)
        .saturating_mul(64)
        .max(64 << 20)
}

/// Checks that `records` is exactly one well-formed batch of at most
/// `max_message_bytes`, whose records all have keys if `keys_required`.
pub fn validate(
    records: Bytes,
    max_message_bytes: u32,
    keys_required: bool,
) -> Result<RecordBatchView, (ErrorCode, String)> {
    if records.len() > max_message_bytes as usize {
        return Err((
            ErrorCode::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds max.message.bytes {max_message_bytes}",
                records.len()
            ),
        ));
    }
    let corrupt = |e: skiff_protocol::DecodeError| (ErrorCode::CorruptMessage, e.to_string());
    let mut reader = BatchReader::new(records);
    let view = match reader.next() {
        Some(view) => view.map_err(corrupt)?,
        None => {
            return Err((
                ErrorCode::CorruptMessage,
                "no whole record batch".to_string(),
            ))
        }
    };
    if reader.next().is_some() || reader.partial_tail_bytes() != 0 {
        return Err((
            ErrorCode::InvalidRecord,
            "a partition must carry exactly one record batch".to_string(),
        ));
    }
    view.validate().map_err(corrupt)?;
    let keyless = view
        .validate_records_with_limit(decompressed_bytes_max(max_message_bytes))
        .map_err(corrupt)?
        .keyless;
    if keys_required && keyless > 0 {
        return Err((
            ErrorCode::InvalidRecord,
            format!("{keyless} records without a key for a compacted topic"),
        ));
    }
    let header = view.header();
    if header.attributes.is_transactional() || header.attributes.is_control() {
        return Err((
            ErrorCode::InvalidRecord,
            "transactional and control batches are not accepted".to_string(),
        ));
    }
    if header.producer_id >= 0 && header.base_sequence < 0 {
        return Err((
            ErrorCode::InvalidRecord,
            "idempotent batch without a sequence".to_string(),
        ));
    }
    Ok(view)
}
