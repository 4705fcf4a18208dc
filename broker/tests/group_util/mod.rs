//! Consumer-group requests over the test [`Client`]: one function per API,
//! built with the skiff-protocol codec and sent on the wire.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use skiff_protocol::api::messages::{self, GroupId, TopicName};
use skiff_protocol::api::{ApiKey, RequestKind, ResponseKind, StrBytes};

use crate::common::Client;

/// (topic, partition, offset, metadata) as OffsetFetch reports it.
pub type Committed = (String, i32, i64, String);
/// (group id, protocol type, state) as ListGroups reports it.
pub type Listed = (String, String, String);

pub fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// Broker flags that keep group tests fast: short sessions allowed, no
/// initial rebalance delay, few offsets partitions.
pub const FAST_GROUPS: &[&str] = &[
    "--group-min-session-timeout-ms",
    "500",
    "--group-initial-rebalance-delay-ms",
    "0",
    "--offsets-topic-partitions",
    "4",
];

pub fn find_coordinator(
    client: &mut Client,
    version: i16,
    key_type: i8,
    keys: &[&str],
) -> Result<messages::FindCoordinatorResponse> {
    let mut request = messages::FindCoordinatorRequest::default();
    request.key_type = key_type;
    if version >= 4 {
        request.coordinator_keys = keys.iter().map(|k| s(k)).collect();
    } else {
        request.key = s(keys[0]);
    }
    match client.call(
        ApiKey::FindCoordinator,
        version,
        RequestKind::FindCoordinator(request),
    )? {
        ResponseKind::FindCoordinator(r) => Ok(r),
        other => bail!("unexpected {other:?}"),
    }
}

/// JoinGroup v5 of a consumer with one protocol "range".
pub fn join(
    client: &mut Client,
    group: &str,
    member_id: &str,
    session_timeout_ms: i32,
) -> Result<messages::JoinGroupResponse> {
    let id = send_join(client, group, member_id, session_timeout_ms)?;
    receive_join(client, id)
}

/// A consumer's JoinGroup with one protocol "range".
pub fn join_request(
    group: &str,
    member_id: &str,
    session_timeout_ms: i32,
    instance: Option<&str>,
) -> messages::JoinGroupRequest {
    let mut protocol = messages::join_group_request::JoinGroupRequestProtocol::default();
    protocol.name = s("range");
    protocol.metadata = Bytes::from_static(b"subscription");
    let mut request = messages::JoinGroupRequest::default();
    request.group_id = GroupId(s(group));
    request.session_timeout_ms = session_timeout_ms;
    request.rebalance_timeout_ms = session_timeout_ms;
    request.member_id = s(member_id);
    request.group_instance_id = instance.map(s);
    request.protocol_type = s("consumer");
    request.protocols = vec![protocol];
    request
}

pub fn send_join(
    client: &mut Client,
    group: &str,
    member_id: &str,
    session_timeout_ms: i32,
) -> Result<i32> {
    let request = join_request(group, member_id, session_timeout_ms, None);
    client.send(ApiKey::JoinGroup, 5, &RequestKind::JoinGroup(request))
}

pub fn receive_join(client: &mut Client, id: i32) -> Result<messages::JoinGroupResponse> {
    match client.receive(ApiKey::JoinGroup, 5, id)? {
        ResponseKind::JoinGroup(r) => Ok(r),
        other => bail!("unexpected {other:?}"),
    }
}

/// Joins a new member the KIP-394 way (MEMBER_ID_REQUIRED, then again).
pub fn join_new(
    client: &mut Client,
    group: &str,
    session_timeout_ms: i32,
) -> Result<messages::JoinGroupResponse> {
    let first = join(client, group, "", session_timeout_ms)?;
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED first");
    join(client, group, first.member_id.as_str(), session_timeout_ms)
}

pub fn send_sync(
    client: &mut Client,
    group: &str,
    member_id: &str,
    generation: i32,
    assignments: &[(&str, &[u8])],
) -> Result<i32> {
    let mut request = messages::SyncGroupRequest::default();
    request.group_id = GroupId(s(group));
    request.member_id = s(member_id);
    request.generation_id = generation;
    request.assignments = assignments
        .iter()
        .map(|(member, assignment)| {
            let mut a = messages::sync_group_request::SyncGroupRequestAssignment::default();
            a.member_id = s(member);
            a.assignment = Bytes::copy_from_slice(assignment);
            a
        })
        .collect();
    client.send(ApiKey::SyncGroup, 3, &RequestKind::SyncGroup(request))
}

pub fn receive_sync(client: &mut Client, id: i32) -> Result<messages::SyncGroupResponse> {
    match client.receive(ApiKey::SyncGroup, 3, id)? {
        ResponseKind::SyncGroup(r) => Ok(r),
        other => bail!("unexpected {other:?}"),
    }
}

pub fn sync(
    client: &mut Client,
    group: &str,
    member_id: &str,
    generation: i32,
    assignments: &[(&str, &[u8])],
) -> Result<messages::SyncGroupResponse> {
    let id = send_sync(client, group, member_id, generation, assignments)?;
    receive_sync(client, id)
}

pub fn heartbeat(
    client: &mut Client,
    group: &str,
    member_id: &str,
    generation: i32,
) -> Result<i16> {
    let mut request = messages::HeartbeatRequest::default();
    request.group_id = GroupId(s(group));
    request.member_id = s(member_id);
    request.generation_id = generation;
    match client.call(ApiKey::Heartbeat, 4, RequestKind::Heartbeat(request))? {
        ResponseKind::Heartbeat(r) => Ok(r.error_code),
        other => bail!("unexpected {other:?}"),
    }
}

/// LeaveGroup v4 of several members: (top-level error, per-member errors).
pub fn leave(client: &mut Client, group: &str, members: &[&str]) -> Result<(i16, Vec<i16>)> {
    let mut request = messages::LeaveGroupRequest::default();
    request.group_id = GroupId(s(group));
    request.members = members
        .iter()
        .map(|m| {
            let mut member = messages::leave_group_request::MemberIdentity::default();
            member.member_id = s(m);
            member
        })
        .collect();
    match client.call(ApiKey::LeaveGroup, 4, RequestKind::LeaveGroup(request))? {
        ResponseKind::LeaveGroup(r) => Ok((
            r.error_code,
            r.members.iter().map(|m| m.error_code).collect(),
        )),
        other => bail!("unexpected {other:?}"),
    }
}

/// OffsetCommit v8: per (topic, partition) error codes in request order.
pub fn commit(
    client: &mut Client,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: &[(&str, i32, i64)],
) -> Result<Vec<(String, i32, i16)>> {
    let mut request = messages::OffsetCommitRequest::default();
    request.group_id = GroupId(s(group));
    request.member_id = s(member_id);
    request.generation_id_or_member_epoch = generation;
    for (topic, partition, offset) in offsets {
        let mut p = messages::offset_commit_request::OffsetCommitRequestPartition::default();
        p.partition_index = *partition;
        p.committed_offset = *offset;
        p.committed_metadata = Some(s("meta"));
        let name = TopicName(s(topic));
        match request.topics.iter_mut().find(|t| t.name == name) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = messages::offset_commit_request::OffsetCommitRequestTopic::default();
                t.name = name;
                t.partitions = vec![p];
                request.topics.push(t);
            }
        }
    }
    match client.call(ApiKey::OffsetCommit, 8, RequestKind::OffsetCommit(request))? {
        ResponseKind::OffsetCommit(r) => Ok(r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
            })
            .collect()),
        other => bail!("unexpected {other:?}"),
    }
}

/// OffsetFetch v7 of every partition the group has: (group error,
/// [(topic, partition, offset, metadata)]).
pub fn fetch_offsets(client: &mut Client, group: &str) -> Result<(i16, Vec<Committed>)> {
    let mut request = messages::OffsetFetchRequest::default();
    request.group_id = GroupId(s(group));
    request.topics = None;
    match client.call(ApiKey::OffsetFetch, 7, RequestKind::OffsetFetch(request))? {
        ResponseKind::OffsetFetch(r) => {
            let mut found: Vec<Committed> = r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        (
                            t.name.0.to_string(),
                            p.partition_index,
                            p.committed_offset,
                            p.metadata
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                        )
                    })
                })
                .collect();
            found.sort();
            Ok((r.error_code, found))
        }
        other => bail!("unexpected {other:?}"),
    }
}

pub fn list_groups(client: &mut Client, states: &[&str]) -> Result<(i16, Vec<Listed>)> {
    let mut request = messages::ListGroupsRequest::default();
    request.states_filter = states.iter().map(|x| s(x)).collect();
    match client.call(ApiKey::ListGroups, 4, RequestKind::ListGroups(request))? {
        ResponseKind::ListGroups(r) => Ok((
            r.error_code,
            r.groups
                .iter()
                .map(|g| {
                    (
                        g.group_id.0.to_string(),
                        g.protocol_type.to_string(),
                        g.group_state.to_string(),
                    )
                })
                .collect(),
        )),
        other => bail!("unexpected {other:?}"),
    }
}

pub fn describe_group(
    client: &mut Client,
    group: &str,
) -> Result<messages::describe_groups_response::DescribedGroup> {
    let mut request = messages::DescribeGroupsRequest::default();
    request.groups = vec![GroupId(s(group))];
    match client.call(
        ApiKey::DescribeGroups,
        5,
        RequestKind::DescribeGroups(request),
    )? {
        ResponseKind::DescribeGroups(mut r) if r.groups.len() == 1 => Ok(r.groups.remove(0)),
        other => bail!("unexpected {other:?}"),
    }
}

pub fn delete_groups(client: &mut Client, groups: &[&str]) -> Result<Vec<(String, i16)>> {
    let mut request = messages::DeleteGroupsRequest::default();
    request.groups_names = groups.iter().map(|g| GroupId(s(g))).collect();
    match client.call(ApiKey::DeleteGroups, 2, RequestKind::DeleteGroups(request))? {
        ResponseKind::DeleteGroups(r) => Ok(r
            .results
            .iter()
            .map(|x| (x.group_id.0.to_string(), x.error_code))
            .collect()),
        other => bail!("unexpected {other:?}"),
    }
}

/// Fetches the group's offsets, waiting out COORDINATOR_LOAD_IN_PROGRESS.
pub fn fetch_after_load(client: &mut Client, group: &str) -> Result<Vec<Committed>> {
    let started = Instant::now();
    loop {
        let (error, offsets) = fetch_offsets(client, group)?;
        if error == 0 {
            return Ok(offsets);
        }
        if error != skiff_protocol::ErrorCode::CoordinatorLoadInProgress.code()
            || started.elapsed() > Duration::from_secs(20)
        {
            bail!("OffsetFetch error {error}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
