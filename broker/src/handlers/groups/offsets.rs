//! OffsetCommit (v2–8) and OffsetFetch (v1–8, batched groups from v8).
//!
//! OffsetCommit v9+ and OffsetFetch v9+ belong to the KIP-848 consumer
//! protocol (member epochs), which this broker does not speak.

use std::sync::Arc;

use futures::future::BoxFuture;
use skiff_protocol::api::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use skiff_protocol::api::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use skiff_protocol::api::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    TopicName,
};
use skiff_protocol::ErrorCode;

use super::opt_string;
use crate::broker::Broker;
use crate::coordinator::{CommitPartition, CommitRequest, CommittedOffset};
use crate::handlers::str_bytes;

/// Per topic, per partition: an error decided here, or `None` to ask the
/// coordinator.
type Screened = Vec<(String, Vec<(i32, Option<ErrorCode>)>)>;

fn commit_response(results: Vec<(String, Vec<(i32, ErrorCode)>)>) -> OffsetCommitResponse {
    let mut response = OffsetCommitResponse::default();
    response.topics = results
        .into_iter()
        .map(|(name, partitions)| {
            let mut topic = OffsetCommitResponseTopic::default();
            topic.name = TopicName(str_bytes(name));
            topic.partitions = partitions
                .into_iter()
                .map(|(index, error)| {
                    let mut p = OffsetCommitResponsePartition::default();
                    p.partition_index = index;
                    p.error_code = error.code();
                    p
                })
                .collect();
            topic
        })
        .collect();
    response
}

/// OffsetCommit. Partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION
/// and are not stored, as in Kafka; the rest go to the coordinator. The
/// per-request `retention_time_ms` of v2–4 is ignored: offsets expire by
/// the broker's `offsets_retention_ms`, as in Kafka since KIP-211.
pub fn commit(
    broker: &Arc<Broker>,
    version: i16,
    request: OffsetCommitRequest,
) -> BoxFuture<'static, OffsetCommitResponse> {
    let mut screened: Screened = Vec::new();
    let mut known = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.as_str().to_owned();
        let partition_count = broker.topics.get(&name).map_or(0, |t| t.partitions.len());
        let mut marks = Vec::with_capacity(topic.partitions.len());
        let mut accepted = Vec::new();
        for p in topic.partitions {
            let exists = usize::try_from(p.partition_index).is_ok_and(|i| i < partition_count);
            if exists {
                marks.push((p.partition_index, None));
                accepted.push(CommitPartition {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: opt_string(p.committed_metadata),
                });
            } else {
                marks.push((p.partition_index, Some(ErrorCode::UnknownTopicOrPartition)));
            }
        }
        if !accepted.is_empty() {
            known.push((name.clone(), accepted));
        }
        screened.push((name, marks));
    }
    let commit = CommitRequest {
        group_id: request.group_id.0.as_str().to_owned(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.as_str().to_owned(),
        group_instance_id: if version >= 7 {
            opt_string(request.group_instance_id)
        } else {
            None
        },
        topics: known,
    };
    let pending = if commit.topics.is_empty() {
        None
    } else if let Err(error) = broker.groups.ensure_topic(&broker.topics) {
        return Box::pin(async move { commit_response(fill(screened, &[], Some(error))) });
    } else {
        Some(broker.groups.commit(&commit))
    };
    Box::pin(async move {
        let results = match pending {
            None => Vec::new(),
            Some(rx) => match rx.await {
                Ok(results) => results,
                Err(_) => {
                    return commit_response(fill(
                        screened,
                        &[],
                        Some(ErrorCode::CoordinatorNotAvailable),
                    ))
                }
            },
        };
        commit_response(fill(screened, &results, None))
    })
}

/// Merges the coordinator's answers into the request's order.
fn fill(
    screened: Screened,
    results: &[(String, Vec<(i32, ErrorCode)>)],
    all: Option<ErrorCode>,
) -> Vec<(String, Vec<(i32, ErrorCode)>)> {
    screened
        .into_iter()
        .map(|(topic, partitions)| {
            let decided = partitions
                .into_iter()
                .map(|(index, early)| {
                    let error = early.or(all).unwrap_or_else(|| {
                        results
                            .iter()
                            .filter(|(t, _)| *t == topic)
                            .flat_map(|(_, ps)| ps.iter())
                            .find(|(i, _)| *i == index)
                            .map_or(ErrorCode::UnknownServerError, |(_, e)| *e)
                    });
                    (index, error)
                })
                .collect();
            (topic, decided)
        })
        .collect()
}

/// One group's fetched offsets, or a group-level error.
type Fetched = Result<Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>, ErrorCode>;

fn fetch_group(
    broker: &Arc<Broker>,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Fetched {
    broker.groups.ensure_topic(&broker.topics)?;
    broker
        .groups
        .with(|c| c.offset_fetch(group_id, topics.as_deref()))
}

/// (offset, leader epoch, metadata) as OffsetFetch reports them.
fn reported(offset: Option<CommittedOffset>, version: i16) -> (i64, i32, String) {
    match offset {
        Some(o) => (
            o.offset,
            if version >= 5 { o.leader_epoch } else { -1 },
            o.metadata,
        ),
        None => (-1, -1, String::new()),
    }
}

/// OffsetFetch. Partitions without a commit answer offset -1. In v1 a
/// group-level error is reported in every partition; v2+ has a top-level
/// code; v8+ batches groups (KIP-709). `require_stable` (v7+) needs no
/// wait here: without transactions no offset is ever pending.
pub fn fetch(
    broker: &Arc<Broker>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        response.groups = request
            .groups
            .into_iter()
            .map(|group| {
                let topics = group.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes))
                        .collect()
                });
                let mut out = OffsetFetchResponseGroup::default();
                match fetch_group(broker, group.group_id.0.as_str(), topics) {
                    Ok(found) => {
                        out.topics = found
                            .into_iter()
                            .map(|(name, partitions)| {
                                let mut topic = OffsetFetchResponseTopics::default();
                                topic.name = TopicName(str_bytes(name));
                                topic.partitions = partitions
                                    .into_iter()
                                    .map(|(index, offset)| {
                                        let (offset, epoch, metadata) = reported(offset, version);
                                        let mut p = OffsetFetchResponsePartitions::default();
                                        p.partition_index = index;
                                        p.committed_offset = offset;
                                        p.committed_leader_epoch = epoch;
                                        p.metadata = Some(str_bytes(metadata));
                                        p
                                    })
                                    .collect();
                                topic
                            })
                            .collect();
                    }
                    Err(error) => out.error_code = error.code(),
                }
                out.group_id = GroupId(group.group_id.0);
                out
            })
            .collect();
        return response;
    }
    let requested: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes))
            .collect()
    });
    let fetched = fetch_group(broker, request.group_id.0.as_str(), requested.clone());
    let (found, error) = match fetched {
        Ok(found) => (found, ErrorCode::None),
        // v1 has no top-level code: every requested partition carries it.
        Err(error) => (
            requested
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, None)).collect()))
                .collect(),
            error,
        ),
    };
    if version >= 2 {
        response.error_code = error.code();
    }
    response.topics = found
        .into_iter()
        .map(|(name, partitions)| {
            let mut topic = OffsetFetchResponseTopic::default();
            topic.name = TopicName(str_bytes(name));
            topic.partitions = partitions
                .into_iter()
                .map(|(index, offset)| {
                    let (offset, epoch, metadata) = reported(offset, version);
                    let mut p = OffsetFetchResponsePartition::default();
                    p.partition_index = index;
                    p.committed_offset = offset;
                    p.committed_leader_epoch = epoch;
                    p.metadata = Some(str_bytes(metadata));
                    p.error_code = error.code();
                    p
                })
                .collect();
            topic
        })
        .collect();
    response
}
