//! Every served version of every group API, encoded and decoded by the
//! skiff-protocol codec against a real skiffd: a one-member group goes
//! through join, sync, heartbeat, commit, fetch, describe, list, leave and
//! delete at each version, and static membership (v5+) keeps a restarted
//! member's assignment without a rebalance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod group_util;

use anyhow::{bail, Result};
use bytes::Bytes;
use common::{Client, Skiffd};
use group_util::{join_request, s, FAST_GROUPS};
use skiff_protocol::api::messages::{self, GroupId, TopicName};
use skiff_protocol::api::{ApiKey, RequestKind, ResponseKind};
use skiff_protocol::ErrorCode;

const SESSION_MS: i32 = 10_000;

fn join_v(
    client: &mut Client,
    version: i16,
    group: &str,
    member_id: &str,
    instance: Option<&str>,
) -> Result<messages::JoinGroupResponse> {
    let request = join_request(group, member_id, SESSION_MS, instance);
    match client.call(ApiKey::JoinGroup, version, RequestKind::JoinGroup(request))? {
        ResponseKind::JoinGroup(r) => Ok(r),
        other => bail!("unexpected {other:?}"),
    }
}

/// Joins as a new member at `version` (two steps from v4, KIP-394).
fn join_new_v(
    client: &mut Client,
    version: i16,
    group: &str,
    instance: Option<&str>,
) -> Result<messages::JoinGroupResponse> {
    let first = join_v(client, version, group, "", instance)?;
    if version >= 4 && instance.is_none() {
        assert_eq!(first.error_code, ErrorCode::MemberIdRequired.code());
        return join_v(client, version, group, first.member_id.as_str(), None);
    }
    Ok(first)
}

fn sync_v(
    client: &mut Client,
    version: i16,
    group: &str,
    member_id: &str,
    generation: i32,
    assignment: &'static [u8],
) -> Result<messages::SyncGroupResponse> {
    let mut a = messages::sync_group_request::SyncGroupRequestAssignment::default();
    a.member_id = s(member_id);
    a.assignment = Bytes::from_static(assignment);
    let mut request = messages::SyncGroupRequest::default();
    request.group_id = GroupId(s(group));
    request.member_id = s(member_id);
    request.generation_id = generation;
    if version >= 5 {
        request.protocol_type = Some(s("consumer"));
        request.protocol_name = Some(s("range"));
    }
    request.assignments = vec![a];
    match client.call(ApiKey::SyncGroup, version, RequestKind::SyncGroup(request))? {
        ResponseKind::SyncGroup(r) => Ok(r),
        other => bail!("unexpected {other:?}"),
    }
}

fn call(
    client: &mut Client,
    key: ApiKey,
    version: i16,
    request: RequestKind,
) -> Result<ResponseKind> {
    client.call(key, version, request)
}

/// One member through every API at `v` (capped per API at its maximum).
fn lifecycle(client: &mut Client, v: i16) -> Result<()> {
    let group = format!("g{v}");
    let found = {
        let mut request = messages::FindCoordinatorRequest::default();
        if v.min(4) >= 4 {
            request.coordinator_keys = vec![s(&group)];
        } else {
            request.key = s(&group);
        }
        match call(
            client,
            ApiKey::FindCoordinator,
            v.min(4),
            RequestKind::FindCoordinator(request),
        )? {
            ResponseKind::FindCoordinator(r) if v >= 4 => r.coordinators[0].error_code,
            ResponseKind::FindCoordinator(r) => r.error_code,
            other => bail!("unexpected {other:?}"),
        }
    };
    assert_eq!(found, 0, "FindCoordinator v{}", v.min(4));

    let joined = join_new_v(client, v, &group, None)?;
    assert_eq!(joined.error_code, 0, "JoinGroup v{v}");
    assert_eq!(joined.generation_id, 1);
    if v >= 7 {
        assert_eq!(joined.protocol_type.as_deref(), Some("consumer"));
    }
    assert_eq!(joined.protocol_name.as_deref(), Some("range"), "v{v}");
    let me = joined.member_id.to_string();
    let synced = sync_v(client, v.min(5), &group, &me, 1, b"a")?;
    assert_eq!(
        (synced.error_code, &synced.assignment[..]),
        (0, &b"a"[..]),
        "SyncGroup v{}",
        v.min(5)
    );

    let mut heartbeat = messages::HeartbeatRequest::default();
    heartbeat.group_id = GroupId(s(&group));
    heartbeat.member_id = s(&me);
    heartbeat.generation_id = 1;
    match call(
        client,
        ApiKey::Heartbeat,
        v.min(4),
        RequestKind::Heartbeat(heartbeat),
    )? {
        ResponseKind::Heartbeat(r) => assert_eq!(r.error_code, 0, "Heartbeat v{}", v.min(4)),
        other => bail!("unexpected {other:?}"),
    }

    for commit_version in 2..=8 {
        let mut p = messages::offset_commit_request::OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = i64::from(commit_version) * 10 + i64::from(v);
        p.committed_metadata = Some(s("m"));
        let mut t = messages::offset_commit_request::OffsetCommitRequestTopic::default();
        t.name = TopicName(s("t"));
        t.partitions = vec![p];
        let mut request = messages::OffsetCommitRequest::default();
        request.group_id = GroupId(s(&group));
        request.generation_id_or_member_epoch = 1;
        request.member_id = s(&me);
        request.retention_time_ms = -1;
        request.topics = vec![t];
        match call(
            client,
            ApiKey::OffsetCommit,
            commit_version,
            RequestKind::OffsetCommit(request),
        )? {
            ResponseKind::OffsetCommit(r) => {
                assert_eq!(
                    r.topics[0].partitions[0].error_code, 0,
                    "OffsetCommit v{commit_version}"
                )
            }
            other => bail!("unexpected {other:?}"),
        }
        for fetch_version in [1, 2, 5, 7, 8] {
            let expected = i64::from(commit_version) * 10 + i64::from(v);
            let mut request = messages::OffsetFetchRequest::default();
            let offset = if fetch_version >= 8 {
                let mut t = messages::offset_fetch_request::OffsetFetchRequestTopics::default();
                t.name = TopicName(s("t"));
                t.partition_indexes = vec![0];
                let mut g = messages::offset_fetch_request::OffsetFetchRequestGroup::default();
                g.group_id = GroupId(s(&group));
                g.topics = Some(vec![t]);
                request.groups = vec![g];
                match call(
                    client,
                    ApiKey::OffsetFetch,
                    8,
                    RequestKind::OffsetFetch(request),
                )? {
                    ResponseKind::OffsetFetch(r) => {
                        assert_eq!(r.groups[0].error_code, 0);
                        r.groups[0].topics[0].partitions[0].committed_offset
                    }
                    other => bail!("unexpected {other:?}"),
                }
            } else {
                let mut t = messages::offset_fetch_request::OffsetFetchRequestTopic::default();
                t.name = TopicName(s("t"));
                t.partition_indexes = vec![0];
                request.group_id = GroupId(s(&group));
                request.topics = Some(vec![t]);
                match call(
                    client,
                    ApiKey::OffsetFetch,
                    fetch_version,
                    RequestKind::OffsetFetch(request),
                )? {
                    ResponseKind::OffsetFetch(r) => {
                        assert_eq!(r.topics[0].partitions[0].error_code, 0);
                        r.topics[0].partitions[0].committed_offset
                    }
                    other => bail!("unexpected {other:?}"),
                }
            };
            assert_eq!(
                offset, expected,
                "OffsetFetch v{fetch_version} after OffsetCommit v{commit_version}"
            );
        }
    }

    let mut describe = messages::DescribeGroupsRequest::default();
    describe.groups = vec![GroupId(s(&group))];
    match call(
        client,
        ApiKey::DescribeGroups,
        v.min(5),
        RequestKind::DescribeGroups(describe),
    )? {
        ResponseKind::DescribeGroups(r) => {
            assert_eq!(
                r.groups[0].group_state.as_str(),
                "Stable",
                "DescribeGroups v{}",
                v.min(5)
            );
            assert_eq!(r.groups[0].members[0].member_id.as_str(), me);
        }
        other => bail!("unexpected {other:?}"),
    }
    match call(
        client,
        ApiKey::ListGroups,
        v.min(4),
        RequestKind::ListGroups(Default::default()),
    )? {
        ResponseKind::ListGroups(r) => {
            assert!(
                r.groups.iter().any(|g| g.group_id.0.as_str() == group),
                "ListGroups v{}",
                v.min(4)
            );
        }
        other => bail!("unexpected {other:?}"),
    }

    let mut leave = messages::LeaveGroupRequest::default();
    leave.group_id = GroupId(s(&group));
    if v.min(5) >= 3 {
        let mut member = messages::leave_group_request::MemberIdentity::default();
        member.member_id = s(&me);
        leave.members = vec![member];
    } else {
        leave.member_id = s(&me);
    }
    match call(
        client,
        ApiKey::LeaveGroup,
        v.min(5),
        RequestKind::LeaveGroup(leave),
    )? {
        ResponseKind::LeaveGroup(r) => assert_eq!(r.error_code, 0, "LeaveGroup v{}", v.min(5)),
        other => bail!("unexpected {other:?}"),
    }
    let mut delete = messages::DeleteGroupsRequest::default();
    delete.groups_names = vec![GroupId(s(&group))];
    match call(
        client,
        ApiKey::DeleteGroups,
        v.min(2),
        RequestKind::DeleteGroups(delete),
    )? {
        ResponseKind::DeleteGroups(r) => {
            assert_eq!(r.results[0].error_code, 0, "DeleteGroups v{}", v.min(2))
        }
        other => bail!("unexpected {other:?}"),
    }
    Ok(())
}

#[test]
fn every_served_version_of_the_group_apis() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("t", 1, &[])?, 0);
    for version in 0..=9 {
        lifecycle(&mut client, version)?;
    }
    Ok(())
}

/// A static member (group.instance.id) that restarts — joins again with
/// no member id — gets a new member id and its old assignment back, in
/// the same generation, and its old id is fenced. From v9 the rejoining
/// leader is told to skip the assignment (KIP-814).
#[test]
fn static_member_rejoins_without_rebalance() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    for version in [5, 9] {
        let group = format!("static{version}");
        let mut client = broker.connect()?;
        let joined = join_new_v(&mut client, version, &group, Some("instance-1"))?;
        assert_eq!(joined.error_code, 0);
        let old_id = joined.member_id.to_string();
        let synced = sync_v(&mut client, 5, &group, &old_id, 1, b"mine")?;
        assert_eq!(synced.error_code, 0);

        let mut restarted = broker.connect()?;
        let again = join_v(&mut restarted, version, &group, "", Some("instance-1"))?;
        assert_eq!(again.error_code, 0);
        assert_eq!(again.generation_id, 1, "no rebalance");
        assert_ne!(again.member_id.as_str(), old_id);
        assert_eq!(again.skip_assignment, version >= 9, "v{version}");
        let new_id = again.member_id.to_string();
        let synced = sync_v(&mut restarted, 5, &group, &new_id, 1, b"mine")?;
        assert_eq!(&synced.assignment[..], b"mine");

        let mut heartbeat = messages::HeartbeatRequest::default();
        heartbeat.group_id = GroupId(s(&group));
        heartbeat.member_id = s(&old_id);
        heartbeat.generation_id = 1;
        heartbeat.group_instance_id = Some(s("instance-1"));
        match client.call(ApiKey::Heartbeat, 4, RequestKind::Heartbeat(heartbeat))? {
            ResponseKind::Heartbeat(r) => {
                assert_eq!(r.error_code, ErrorCode::FencedInstanceId.code())
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    Ok(())
}
