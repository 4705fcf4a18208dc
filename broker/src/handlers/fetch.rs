//! Fetch (key 1), versions 4–12, with long polling.
//!
//! Copy-free: each partition's `records` is a `Bytes` slice of the mapped
//! segment returned by `PartitionLog::read`; the response encoder
//! (`skiff_protocol::api::encode_response`) references those slices as
//! chunks of the frame instead of copying them, and the connection writes
//! the chunks with one vectored write.
//!
//! Long poll: when fewer than `min_bytes` are available, the request waits
//! for an append to any fetched partition (`PartitionLog::wait_for`, woken
//! by the appender, no polling), for `max_wait_ms`, or for shutdown,
//! whichever comes first, then reads again.
//!
//! Incremental fetch sessions (KIP-227) are declined: the response carries
//! session id 0, which tells the client to keep sending full requests; an
//! incremental request for a session is FETCH_SESSION_ID_NOT_FOUND.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{select_all, FutureExt};
use skiff_protocol::api::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use skiff_protocol::api::messages::{FetchRequest, FetchResponse, TopicName};
use skiff_protocol::batch::BatchHeader;
use skiff_protocol::ErrorCode;

use super::storage_error_code;
use crate::broker::Broker;
use crate::topics::Partition;

/// Longest a fetch may wait, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(300);

struct Target {
    partition_index: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
    partition: Result<Arc<Partition>, ErrorCode>,
}

pub async fn handle(broker: Arc<Broker>, _version: i16, request: FetchRequest) -> FetchResponse {
    let mut response = FetchResponse::default();
    response.session_id = 0;
    if request.session_id != 0 {
        response.error_code = ErrorCode::FetchSessionIdNotFound.code();
        return response;
    }
    let topics: Vec<(TopicName, Vec<Target>)> = request
        .topics
        .into_iter()
        .map(|topic| {
            let found = broker.topics.get(topic.topic.as_str());
            let targets = topic
                .partitions
                .into_iter()
                .map(|p| Target {
                    partition_index: p.partition,
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    partition: found
                        .as_ref()
                        .and_then(|t| {
                            usize::try_from(p.partition)
                                .ok()
                                .and_then(|i| t.partitions.get(i))
                        })
                        .cloned()
                        .ok_or(ErrorCode::UnknownTopicOrPartition),
                })
                .collect();
            (topic.topic, targets)
        })
        .collect();

    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + max_wait;
    let mut shutdown = broker.shutdown.clone();
    loop {
        // End offsets before reading: an append after this point wakes the wait below.
        let ends: Vec<Vec<Option<i64>>> = topics
            .iter()
            .map(|(_, targets)| {
                targets
                    .iter()
                    .map(|t| t.partition.as_ref().ok().map(|p| p.log.log_end_offset()))
                    .collect()
            })
            .collect();
        let (responses, bytes, errors) = read_all(&topics, max_bytes);
        let done = bytes >= min_bytes
            || errors
            || tokio::time::Instant::now() >= deadline
            || *shutdown.borrow();
        if done {
            response.responses = responses;
            return response;
        }
        let mut waits = Vec::new();
        for ((_, targets), ends) in topics.iter().zip(&ends) {
            for (target, end) in targets.iter().zip(ends) {
                if let (Ok(partition), Some(end)) = (&target.partition, end) {
                    let log = Arc::clone(&partition.log);
                    let end = *end;
                    waits.push(async move { log.wait_for(end).await }.boxed());
                }
            }
        }
        let any_append = async move {
            if waits.is_empty() {
                std::future::pending::<()>().await;
            }
            select_all(waits).await;
        };
        tokio::select! {
            _ = any_append => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Reads every partition once. Returns the topics, the record bytes
/// gathered, and whether any partition has an error (which ends a long poll).
fn read_all(
    topics: &[(TopicName, Vec<Target>)],
    max_bytes: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut used = 0usize;
    let mut errors = false;
    let mut out = Vec::with_capacity(topics.len());
    for (name, targets) in topics {
        let mut topic = FetchableTopicResponse::default();
        topic.topic = name.clone();
        for target in targets {
            let mut data = PartitionData::default();
            data.partition_index = target.partition_index;
            data.aborted_transactions = None;
            match &target.partition {
                Err(code) => {
                    data.error_code = code.code();
                    data.high_watermark = -1;
                    errors = true;
                }
                Ok(partition) => {
                    let log = &partition.log;
                    let remaining = max_bytes.saturating_sub(used);
                    // Kafka returns the first batch of the first non-empty partition
                    // even when it exceeds the limits, so that a consumer can always
                    // make progress; after that both limits are strict.
                    let limit = target.partition_max_bytes.min(remaining);
                    let records = if used > 0 && limit == 0 {
                        Ok(Bytes::new())
                    } else {
                        log.read(target.fetch_offset, limit)
                    };
                    data.high_watermark = log.log_end_offset();
                    data.last_stable_offset = data.high_watermark;
                    data.log_start_offset = log.log_start_offset();
                    match records {
                        Ok(records) if used > 0 && records.len() > limit => {
                            data.records = Some(Bytes::new())
                        }
                        Ok(records) => {
                            used += records.len();
                            count_out(partition, &records);
                            data.records = Some(records);
                        }
                        Err(error) => {
                            data.error_code = storage_error_code(&error).code();
                            errors = true;
                        }
                    }
                }
            }
            topic.partitions.push(data);
        }
        out.push(topic);
    }
    (out, used, errors)
}

/// Adds served bytes and records to the partition's metrics, reading only batch headers.
fn count_out(partition: &Partition, records: &[u8]) {
    if records.is_empty() {
        return;
    }
    let mut count = 0u64;
    let mut position = 0usize;
    while let Ok(header) = BatchHeader::parse(&records[position..]) {
        count += u64::try_from(header.records_count).unwrap_or(0);
        position += header.total_bytes();
        if position >= records.len() {
            break;
        }
    }
    partition
        .metrics
        .bytes_out
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    partition
        .metrics
        .records_out
        .fetch_add(count, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use skiff_protocol::api::{encode_response, ApiKey, ResponseKind};

    /// The records of a fetch response reach the frame by reference: the
    /// encoded frame holds the very bytes (same address) the log returned.
    #[test]
    fn fetch_response_references_record_bytes() {
        let records = Bytes::from(vec![7u8; 256 * 1024]);
        let mut partition = PartitionData::default();
        partition.records = Some(records.clone());
        let mut topic = FetchableTopicResponse::default();
        topic.partitions = vec![partition];
        let mut response = FetchResponse::default();
        response.responses = vec![topic];
        for version in [4, 11, 12] {
            let frame = encode_response(
                1,
                ApiKey::Fetch,
                version,
                &ResponseKind::Fetch(response.clone()),
            )
            .unwrap();
            let referenced = frame
                .chunks
                .iter()
                .any(|chunk| chunk.as_ptr() == records.as_ptr() && chunk.len() == records.len());
            assert!(referenced, "v{version}: records were copied into the frame");
            let copied: usize = frame
                .chunks
                .iter()
                .filter(|c| c.as_ptr() != records.as_ptr())
                .map(Bytes::len)
                .sum();
            assert!(
                copied < 200,
                "v{version}: {copied} bytes besides the records"
            );
        }
    }
}
