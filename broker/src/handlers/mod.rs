//! Request handlers, one module per API family.
//!
//! [`SERVED`] is the single list of what the broker answers; ApiVersions
//! advertises exactly this list, and the dispatcher refuses anything else
//! with UNSUPPORTED_VERSION before a handler runs. Versions are capped where
//! a newer version needs something the broker does not have: Produce v12+
//! and Fetch v13+ address topics by topic id, ListOffsets v7+ adds the
//! max-timestamp query, CreateTopics v7 returns topic ids.
//!
//! Consumer group APIs live in [`groups`], answered by the coordinator in
//! [`crate::group_runtime`]. They stop below the KIP-848 versions
//! (OffsetCommit/OffsetFetch v9+), ListGroups v5 (type filter),
//! DescribeGroups v6 and FindCoordinator v5+ (transaction and share
//! coordinators), which need things this broker does not have.

use std::sync::Arc;

use futures::future::BoxFuture;

use skiff_protocol::api::{ApiKey, RequestKind, ResponseKind, StrBytes};
use skiff_protocol::frame::RequestHeader;
use skiff_protocol::ErrorCode;

use crate::broker::Broker;
use crate::storage::StorageError;
use crate::topics::TopicError;

pub mod api_versions;
pub mod describe_configs;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod producer_id;
pub mod topics;

/// Every API the broker serves, with its version range.
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 6),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
];

/// Whether `(api_key, api_version)` is served, by raw numbers from the wire.
pub fn is_served(api_key: i16, api_version: i16) -> bool {
    SERVED
        .iter()
        .any(|&(key, min, max)| key as i16 == api_key && (min..=max).contains(&api_version))
}

/// `SERVED` as raw numbers, for the KIP-511 fallback response.
pub fn served_raw() -> Vec<(i16, i16, i16)> {
    SERVED
        .iter()
        .map(|&(key, min, max)| (key as i16, min, max))
        .collect()
}

/// A failure that ends the connection instead of producing a response.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("request {api_key}v{api_version} is not served")]
    NotServed { api_key: i16, api_version: i16 },
    /// Kafka closes the connection when an acks=0 produce fails: the client
    /// gets no response, so this is how it learns to refresh its metadata.
    #[error("acks=0 produce failed: {reason}")]
    UnacknowledgedProduceFailed { reason: String },
}

/// A handler's answer: ready now, or after waiting (durability, long poll).
#[allow(clippy::large_enum_variant)] // built once per request and consumed at once
pub enum Started {
    /// `None` means the protocol wants no response (Produce with acks=0).
    Done(Option<ResponseKind>),
    Later(BoxFuture<'static, Option<ResponseKind>>),
}

/// Runs the synchronous part of a request's handler: everything with side
/// effects (topic changes, appends) happens here, in the order the
/// connection received the requests; only waiting is left for later.
pub fn start(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    request: RequestKind,
    client: std::net::IpAddr,
) -> Result<Started, HandlerError> {
    let version = header.api_version;
    let response = match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(version, &r)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(broker, version, r)),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(topics::create(broker, version, r))
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(topics::delete(broker, version, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(broker, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(producer_id::handle(broker, r))
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, version, r))
        }
        RequestKind::Produce(r) => {
            let pending = produce::append_all(broker, version, r);
            if let Some(reason) = pending.unacknowledged_failure() {
                return Err(HandlerError::UnacknowledgedProduceFailed { reason });
            }
            return Ok(Started::Later(Box::pin(async move {
                produce::respond(pending).await.map(ResponseKind::Produce)
            })));
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(broker, version, r))
        }
        RequestKind::JoinGroup(r) => {
            let client_id = header.client_id.as_deref().unwrap_or_default();
            // Kafka reports the host as `InetAddress.toString()` gives it.
            let client_host = format!("/{client}");
            let answer = groups::membership::join(broker, version, client_id, client_host, r);
            return Ok(later(async move { ResponseKind::JoinGroup(answer.await) }));
        }
        RequestKind::SyncGroup(r) => {
            let answer = groups::membership::sync(broker, version, r);
            return Ok(later(async move { ResponseKind::SyncGroup(answer.await) }));
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(groups::membership::heartbeat(broker, r))
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::membership::leave(broker, version, r))
        }
        RequestKind::OffsetCommit(r) => {
            let answer = groups::offsets::commit(broker, version, r);
            return Ok(later(
                async move { ResponseKind::OffsetCommit(answer.await) },
            ));
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offsets::fetch(broker, version, r))
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::admin::list(broker, version, r))
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::admin::describe(broker, version, r))
        }
        RequestKind::DeleteGroups(r) => {
            let answer = groups::admin::delete(broker, r);
            return Ok(later(
                async move { ResponseKind::DeleteGroups(answer.await) },
            ));
        }
        RequestKind::Fetch(r) => {
            let broker = Arc::clone(broker);
            return Ok(Started::Later(Box::pin(async move {
                Some(ResponseKind::Fetch(fetch::handle(broker, version, r).await))
            })));
        }
        _ => {
            return Err(HandlerError::NotServed {
                api_key: header.api_key,
                api_version: version,
            })
        }
    };
    Ok(Started::Done(Some(response)))
}

/// A response that is ready once `answer` is.
fn later(answer: impl std::future::Future<Output = ResponseKind> + Send + 'static) -> Started {
    Started::Later(Box::pin(async move { Some(answer.await) }))
}

/// The Kafka error code for a topic administration error.
pub fn topic_error_code(error: &TopicError) -> ErrorCode {
    match error {
        TopicError::InvalidName { .. } => ErrorCode::InvalidTopicException,
        TopicError::AlreadyExists { .. } => ErrorCode::TopicAlreadyExists,
        TopicError::Unknown { .. } => ErrorCode::UnknownTopicOrPartition,
        TopicError::InvalidPartitions { .. } => ErrorCode::InvalidPartitions,
        TopicError::InvalidConfig { .. } => ErrorCode::InvalidConfig,
        TopicError::Storage(e) => storage_error_code(e),
        TopicError::Registry { .. } | TopicError::RegistryCorrupt { .. } => {
            ErrorCode::KafkaStorageError
        }
    }
}

/// The Kafka error code for a storage error.
pub fn storage_error_code(error: &StorageError) -> ErrorCode {
    match error {
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        _ => ErrorCode::KafkaStorageError,
    }
}

/// A `StrBytes` from an owned string.
pub fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything advertised can be decoded and encoded by the codec.
    #[test]
    fn served_versions_are_within_the_codec() {
        for &(key, min, max) in SERVED {
            let codec = skiff_protocol::api::codec_versions(key);
            assert!(
                codec.is_some_and(|range| range.min <= min && max <= range.max),
                "{key:?} {min}..={max} outside the codec's {codec:?}"
            );
        }
        assert!(is_served(18, 4) && !is_served(18, 5) && !is_served(17, 0));
        assert!(is_served(10, 4) && !is_served(10, 5) && !is_served(8, 9) && !is_served(8, 1));
    }
}
