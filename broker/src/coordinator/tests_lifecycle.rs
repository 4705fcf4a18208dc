//! Static membership (KIP-345), protocol selection, group size, unload,
//! and the admin side (DescribeGroups, ListGroups, DeleteGroups, deleted
//! topics), driven with a hand clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use skiff_protocol::ErrorCode;

use super::tests_membership::{
    coordinator, heartbeat, join, join_responses, member_id_for, stable_group, sync,
    sync_responses, GROUP,
};
use super::*;

pub(super) fn static_join(member_id: &str, client_id: &str, instance_id: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance_id.to_owned()),
        ..join(member_id, client_id)
    }
}

pub(super) fn static_heartbeat(
    member_id: &str,
    generation_id: i32,
    instance_id: &str,
) -> HeartbeatRequest {
    HeartbeatRequest {
        group_instance_id: Some(instance_id.to_owned()),
        ..heartbeat(member_id, generation_id)
    }
}

pub(super) fn persisted(out: &[Output]) -> Vec<OffsetsRecord> {
    out.iter()
        .flat_map(|o| match o {
            Output::Persist { records, .. } => records.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// A coordinator with `config` that owns and has loaded every partition.
pub(super) fn coordinator_with(config: CoordinatorConfig) -> GroupCoordinator {
    let partitions = config.offsets_partitions;
    let mut c = GroupCoordinator::new(config, Box::new(SequentialIds::default()));
    for p in 0..partitions as i32 {
        c.finish_loading(p);
    }
    c
}

/// Commits one offset and applies it, as the broker does once it is durable.
#[allow(clippy::too_many_arguments)]
pub(super) fn commit_one(
    c: &mut GroupCoordinator,
    now_ms: i64,
    group_id: &str,
    generation_id: i32,
    member_id: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    let request = CommitRequest {
        group_id: group_id.to_owned(),
        generation_id,
        member_id: member_id.to_owned(),
        group_instance_id: None,
        topics: vec![(
            topic.to_owned(),
            vec![CommitPartition {
                partition,
                offset,
                leader_epoch: -1,
                metadata: None,
            }],
        )],
    };
    let pending = c.offset_commit(now_ms, &request);
    assert!(pending.results[0]
        .1
        .iter()
        .all(|(_, e)| *e == ErrorCode::None));
    c.complete_commit(now_ms, &pending);
}

/// Two static members ("ia", "ib") sent `shape(static_join(..))` and the
/// join completed at 6_000 (generation 1, a leads, nobody synced yet):
/// (id of a, id of b, generation).
pub(super) fn completing_static_group(
    c: &mut GroupCoordinator,
    shape: impl Fn(JoinRequest) -> JoinRequest,
) -> (String, String, i32) {
    // Static members skip KIP-394's MEMBER_ID_REQUIRED round trip.
    let out = c.join_group(0, 1, shape(static_join("", "a", "ia")));
    assert!(join_responses(&out).is_empty());
    let out = c.join_group(10, 2, shape(static_join("", "b", "ib")));
    assert!(join_responses(&out).is_empty());
    c.tick(3_000);
    let joins = join_responses(&c.tick(6_000));
    assert_eq!(joins.len(), 2, "{joins:?}");
    let id_of = |reply: ReplyId| {
        let found = joins.iter().find(|(r, _)| *r == reply).unwrap();
        found.1.member_id.clone()
    };
    let (a, b) = (id_of(1), id_of(2));
    assert!(a.starts_with("ia-") && b.starts_with("ib-"), "{a} {b}");
    assert_eq!(joins[0].1.leader, a);
    assert_eq!(c.group_state(GROUP), Some(GroupState::CompletingRebalance));
    (a, b, joins[0].1.generation_id)
}

/// Two static members ("ia", "ib") joined and synced: (id of a, id of b,
/// generation). a joins first and leads.
pub(super) fn stable_static_group(c: &mut GroupCoordinator) -> (String, String, i32) {
    let (a, b, generation) = completing_static_group(c, |j| j);
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"for-a")),
        (b.clone(), Bytes::from_static(b"for-b")),
    ];
    c.sync_group(6_100, 3, sync(&a, generation, assignments));
    c.sync_group(6_200, 4, sync(&b, generation, Vec::new()));
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
    (a, b, generation)
}

#[test]
fn restarted_static_member_gets_its_assignment_back_without_rebalance() {
    let mut c = coordinator();
    let (a, old_b, generation) = stable_static_group(&mut c);

    // b restarts: a fresh process knows only its instance id.
    let out = c.join_group(7_000, 10, static_join("", "b", "ib"));
    assert!(
        matches!(out.first(), Some(Output::Persist { .. })),
        "the new member id is stored before it is handed out: {out:?}"
    );
    let joins = join_responses(&out);
    assert_eq!(joins.len(), 1);
    let response = &joins[0].1;
    assert_eq!(response.error, ErrorCode::None);
    assert_eq!(response.generation_id, generation, "no new generation");
    let new_b = response.member_id.clone();
    assert_ne!(new_b, old_b);
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));

    let syncs = sync_responses(&c.sync_group(7_100, 11, sync(&new_b, generation, Vec::new())));
    assert_eq!(syncs[0].1.error, ErrorCode::None);
    assert_eq!(syncs[0].1.assignment, Bytes::from_static(b"for-b"));

    // The old incarnation is fenced everywhere; the other member never noticed.
    let fenced = static_heartbeat(&old_b, generation, "ib");
    assert_eq!(c.heartbeat(7_200, &fenced), ErrorCode::FencedInstanceId);
    let stale_sync = SyncRequest {
        group_instance_id: Some("ib".to_owned()),
        ..sync(&old_b, generation, Vec::new())
    };
    let syncs = sync_responses(&c.sync_group(7_200, 12, stale_sync));
    assert_eq!(syncs[0].1.error, ErrorCode::FencedInstanceId);
    let stale_join = static_join(&old_b, "b", "ib");
    let joins = join_responses(&c.join_group(7_200, 13, stale_join));
    assert_eq!(joins[0].1.error, ErrorCode::FencedInstanceId);
    assert_eq!(
        c.heartbeat(7_300, &static_heartbeat(&new_b, generation, "ib")),
        ErrorCode::None
    );
    assert_eq!(
        c.heartbeat(7_300, &static_heartbeat(&a, generation, "ia")),
        ErrorCode::None
    );
    assert_eq!(c.generation(GROUP), Some(generation));
}

/// KIP-345: a restarted static member whose new protocol list still
/// leaves the group's selected protocol unchanged causes no rebalance.
#[test]
fn restarted_static_member_with_compatible_new_protocols_keeps_the_generation() {
    let mut c = coordinator();
    let (_a, _b, generation) = stable_static_group(&mut c);
    let mut changed = static_join("", "b", "ib");
    changed.protocols.insert(
        0,
        Protocol {
            name: "roundrobin".to_owned(),
            metadata: Bytes::from_static(b"x"),
        },
    );
    // a supports only range, so range stays the group's protocol.
    let joins = join_responses(&c.join_group(7_000, 10, changed));
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1.error, ErrorCode::None);
    assert_eq!(joins[0].1.protocol_name.as_deref(), Some("range"));
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
    assert_eq!(c.generation(GROUP), Some(generation));
}

#[test]
fn static_member_session_timeout_removes_it_and_rebalances() {
    let mut c = coordinator();
    let (a, b, generation) = stable_static_group(&mut c);
    // Only a keeps heartbeating; b's session (10 s) runs out.
    for now_ms in (8_000..=18_000).step_by(2_000) {
        assert_eq!(
            c.heartbeat(now_ms, &static_heartbeat(&a, generation, "ia")),
            ErrorCode::None
        );
        c.tick(now_ms);
    }
    c.tick(16_300);
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    assert_eq!(
        c.heartbeat(16_400, &static_heartbeat(&b, generation, "ib")),
        ErrorCode::UnknownMemberId
    );
    let described = c.describe_group(GROUP);
    let instances: Vec<_> = described
        .members
        .iter()
        .map(|m| m.group_instance_id.clone())
        .collect();
    assert_eq!(instances, vec![Some("ia".to_owned())]);
}

#[test]
fn static_member_leaves_by_instance_id() {
    let mut c = coordinator();
    let (a, b, _generation) = stable_static_group(&mut c);
    let leaving = |member_id: &str, instance: &str| LeavingMember {
        member_id: member_id.to_owned(),
        group_instance_id: Some(instance.to_owned()),
    };
    let (response, _) = c.leave_group(
        7_000,
        GROUP,
        &[
            leaving(&a, "ib"),     // a's id with b's instance: fenced
            leaving("", "nobody"), // unknown instance
            leaving("", "ib"),     // by instance id alone
        ],
    );
    assert_eq!(response.error, ErrorCode::None);
    let errors: Vec<_> = response.members.iter().map(|m| m.2).collect();
    assert_eq!(
        errors,
        vec![
            ErrorCode::FencedInstanceId,
            ErrorCode::UnknownMemberId,
            ErrorCode::None
        ]
    );
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    let remaining: Vec<_> = c
        .describe_group(GROUP)
        .members
        .into_iter()
        .map(|m| m.member_id)
        .collect();
    assert_eq!(remaining, vec![a]);
    assert_ne!(remaining[0], b);
}

#[test]
fn protocol_is_the_one_every_member_supports_chosen_by_votes() {
    let mut c = coordinator();
    let protocols = |names: &[&str]| -> Vec<Protocol> {
        names
            .iter()
            .map(|n| Protocol {
                name: (*n).to_owned(),
                metadata: Bytes::from(format!("meta-{n}")),
            })
            .collect()
    };
    // a prefers sticky, b and d prefer roundrobin; only range and
    // roundrobin are common to all, and roundrobin has more first votes.
    let prefs: [(&str, &[&str]); 3] = [
        ("a", &["sticky", "range", "roundrobin"]),
        ("b", &["roundrobin", "range"]),
        ("d", &["roundrobin", "sticky", "range"]),
    ];
    for (reply, (client, names)) in prefs.iter().enumerate() {
        let id = member_id_for(&mut c, 0, 100 + reply as u64, client);
        let request = JoinRequest {
            protocols: protocols(names),
            ..join(&id, client)
        };
        c.join_group(1, reply as u64, request);
    }
    c.tick(3_001);
    let joins = join_responses(&c.tick(6_001));
    assert_eq!(joins.len(), 3);
    for (_, response) in &joins {
        assert_eq!(response.protocol_name.as_deref(), Some("roundrobin"));
    }
    let leader = joins.iter().find(|(_, r)| !r.members.is_empty()).unwrap();
    for member in &leader.1.members {
        assert_eq!(member.metadata, Bytes::from_static(b"meta-roundrobin"));
    }

    // A member sharing no protocol with the group is refused.
    let id = member_id_for(&mut c, 7_000, 200, "e");
    let request = JoinRequest {
        protocols: protocols(&["cooperative-sticky"]),
        ..join(&id, "e")
    };
    let joins = join_responses(&c.join_group(7_000, 201, request));
    assert_eq!(joins[0].1.error, ErrorCode::InconsistentGroupProtocol);
    // As is one of another protocol type.
    let id = member_id_for(&mut c, 7_000, 202, "f");
    let request = JoinRequest {
        protocol_type: "connect".to_owned(),
        ..join(&id, "f")
    };
    let joins = join_responses(&c.join_group(7_000, 203, request));
    assert_eq!(joins[0].1.error, ErrorCode::InconsistentGroupProtocol);
}

#[test]
fn group_max_size_refuses_the_extra_member() {
    let config = CoordinatorConfig {
        group_members_max: 1,
        ..CoordinatorConfig::default()
    };
    let mut c = coordinator_with(config);
    let a = member_id_for(&mut c, 0, 1, "a");
    c.join_group(0, 2, join(&a, "a"));
    let b = member_id_for(&mut c, 0, 3, "b");
    let joins = join_responses(&c.join_group(0, 4, join(&b, "b")));
    assert_eq!(joins[0].1.error, ErrorCode::GroupMaxSizeReached);
}

#[test]
fn unload_answers_parked_requests_not_coordinator_and_forgets_the_group() {
    let mut c = coordinator();
    let a = member_id_for(&mut c, 0, 1, "a");
    assert!(join_responses(&c.join_group(0, 2, join(&a, "a"))).is_empty());
    let partition = c.partition_for(GROUP);
    let joins = join_responses(&c.unload(partition));
    assert_eq!(joins.len(), 1);
    assert_eq!(
        (joins[0].0, joins[0].1.error),
        (2, ErrorCode::NotCoordinator)
    );
    assert_eq!(c.group_state(GROUP), None);
    let joins = join_responses(&c.join_group(10, 3, join("", "a")));
    assert_eq!(joins[0].1.error, ErrorCode::NotCoordinator);
    assert_eq!(
        c.heartbeat(10, &heartbeat(&a, 1)),
        ErrorCode::NotCoordinator
    );

    // Taking the partition back: loading first, then served again.
    c.begin_loading(partition);
    let joins = join_responses(&c.join_group(20, 4, join("", "a")));
    assert_eq!(joins[0].1.error, ErrorCode::CoordinatorLoadInProgress);
    assert_eq!(c.list_groups(&[]).0, ErrorCode::CoordinatorLoadInProgress);
    c.finish_loading(partition);
    let joins = join_responses(&c.join_group(30, 5, join("", "a")));
    assert_eq!(joins[0].1.error, ErrorCode::MemberIdRequired);
}

#[test]
fn describe_shows_members_and_assignments_only_when_stable() {
    let mut c = coordinator();
    let unknown = c.describe_group("nobody");
    assert_eq!(
        (unknown.error, unknown.state.name()),
        (ErrorCode::None, "Dead")
    );
    assert!(unknown.members.is_empty());

    let (leader, follower, generation) = stable_group(&mut c);
    let stable = c.describe_group(GROUP);
    assert_eq!(stable.state.name(), "Stable");
    assert_eq!(stable.protocol_type, "consumer");
    assert_eq!(stable.protocol_name, "range");
    let mut members: Vec<_> = stable
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.clone(),
                m.assignment.clone(),
                m.client_host.clone(),
            )
        })
        .collect();
    members.sort();
    let mut expected = vec![
        (
            leader.clone(),
            Bytes::from_static(b"L"),
            "/127.0.0.1".to_owned(),
        ),
        (
            follower.clone(),
            Bytes::from_static(b"F"),
            "/127.0.0.1".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(members, expected);
    assert!(stable
        .members
        .iter()
        .all(|m| m.metadata.starts_with(b"sub-")));

    // A rejoin starts a rebalance: members are listed, assignments are not.
    c.join_group(7_000, 20, join(&leader, "a"));
    let preparing = c.describe_group(GROUP);
    assert_eq!(preparing.state.name(), "PreparingRebalance");
    assert_eq!(preparing.members.len(), 2);
    assert!(preparing.members.iter().all(|m| m.assignment.is_empty()));
    assert_eq!(
        c.heartbeat(7_100, &heartbeat(&follower, generation)),
        ErrorCode::RebalanceInProgress
    );
    c.join_group(7_200, 21, join(&follower, "b"));
    let completing = c.describe_group(GROUP);
    assert_eq!(completing.state.name(), "CompletingRebalance");
    // Heartbeats are fine while the leader computes the assignment.
    let next = c.generation(GROUP).unwrap();
    assert_eq!(
        c.heartbeat(7_300, &heartbeat(&follower, next)),
        ErrorCode::None
    );
}

#[test]
fn list_groups_filters_by_state_name() {
    let mut c = coordinator();
    stable_group(&mut c);
    // A simple (commit-only) group is Empty with no protocol type.
    commit_one(&mut c, 0, "simple", -1, "", "t", 0, 5);
    let names = |states: &[&str]| -> Vec<(String, &'static str)> {
        let states: Vec<String> = states.iter().map(|s| (*s).to_owned()).collect();
        let (error, groups) = c.list_groups(&states);
        assert_eq!(error, ErrorCode::None);
        groups
            .into_iter()
            .map(|g| (g.group_id, g.state.name()))
            .collect()
    };
    assert_eq!(
        names(&[]),
        vec![(GROUP.to_owned(), "Stable"), ("simple".to_owned(), "Empty")]
    );
    assert_eq!(names(&["Stable"]), vec![(GROUP.to_owned(), "Stable")]);
    assert_eq!(names(&["empty"]), vec![("simple".to_owned(), "Empty")]);
    assert!(names(&["PreparingRebalance", "Dead"]).is_empty());
}

#[test]
fn delete_groups_only_empty_ones_and_writes_tombstones() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_group(&mut c);
    commit_one(&mut c, 6_300, GROUP, generation, &leader, "t", 3, 42);

    let ids = vec![GROUP.to_owned(), "nobody".to_owned(), String::new()];
    let (results, out) = c.delete_groups(&ids);
    assert_eq!(
        results,
        vec![
            (GROUP.to_owned(), ErrorCode::NonEmptyGroup),
            ("nobody".to_owned(), ErrorCode::GroupIdNotFound),
            (String::new(), ErrorCode::GroupIdNotFound),
        ]
    );
    assert!(out.is_empty());

    let everyone = [leader, follower].map(|member_id| LeavingMember {
        member_id,
        group_instance_id: None,
    });
    c.leave_group(7_000, GROUP, &everyone);
    assert_eq!(c.group_state(GROUP), Some(GroupState::Empty));
    let (results, out) = c.delete_groups(&[GROUP.to_owned()]);
    assert_eq!(results, vec![(GROUP.to_owned(), ErrorCode::None)]);
    assert_eq!(
        persisted(&out),
        vec![
            OffsetsRecord::Offset {
                group_id: GROUP.to_owned(),
                topic: "t".to_owned(),
                partition: 3,
                value: None,
            },
            OffsetsRecord::Group {
                group_id: GROUP.to_owned(),
                value: None,
            },
        ]
    );
    assert_eq!(c.group_state(GROUP), None);
    let topics = vec![("t".to_owned(), vec![3])];
    let fetched = c.offset_fetch(GROUP, Some(&topics)).unwrap();
    assert_eq!(fetched[0].1[0].1, None);
}

#[test]
fn deleted_topics_lose_their_offsets_and_an_abandoned_group_goes() {
    let mut c = coordinator();
    commit_one(&mut c, 0, "both", -1, "", "gone", 0, 9);
    commit_one(&mut c, 0, "both", -1, "", "kept", 0, 9);
    commit_one(&mut c, 0, "only-gone", -1, "", "gone", 0, 9);
    let out = c.topics_deleted(&["gone".to_owned()]);
    let records = persisted(&out);
    assert_eq!(
        records,
        vec![
            OffsetsRecord::Offset {
                group_id: "both".to_owned(),
                topic: "gone".to_owned(),
                partition: 0,
                value: None,
            },
            OffsetsRecord::Offset {
                group_id: "only-gone".to_owned(),
                topic: "gone".to_owned(),
                partition: 0,
                value: None,
            },
            OffsetsRecord::Group {
                group_id: "only-gone".to_owned(),
                value: None,
            },
        ]
    );
    assert_eq!(c.group_state("only-gone"), None);
    let kept = vec![("kept".to_owned(), vec![0])];
    let fetched = c.offset_fetch("both", Some(&kept)).unwrap();
    assert_eq!(fetched[0].1[0].1.as_ref().map(|o| o.offset), Some(9));
}

#[test]
fn consumer_group_offsets_expire_only_after_the_group_is_empty_that_long() {
    let config = CoordinatorConfig {
        offsets_retention_ms: 60_000,
        ..CoordinatorConfig::default()
    };
    let mut c = coordinator_with(config);
    let (leader, follower, generation) = stable_group(&mut c);
    commit_one(&mut c, 6_300, GROUP, generation, &leader, "t", 0, 1);
    // Long past the retention, but the group is active: nothing expires.
    for now_ms in (10_000..200_000).step_by(5_000) {
        for member in [&leader, &follower] {
            assert_eq!(
                c.heartbeat(now_ms, &heartbeat(member, generation)),
                ErrorCode::None
            );
        }
        assert!(c.expire_offsets(now_ms).is_empty(), "at {now_ms}");
    }
    let everyone = [leader, follower].map(|member_id| LeavingMember {
        member_id,
        group_instance_id: None,
    });
    c.leave_group(200_000, GROUP, &everyone);
    assert!(
        c.expire_offsets(259_999).is_empty(),
        "empty for less than the retention"
    );
    let records = persisted(&c.expire_offsets(260_000));
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(matches!(
        &records[0],
        OffsetsRecord::Offset { value: None, .. }
    ));
    assert!(matches!(
        &records[1],
        OffsetsRecord::Group { value: None, .. }
    ));
    assert_eq!(c.group_state(GROUP), None);
}

/// Timestamps replayed from disk are whatever the bytes say; expiry must
/// not overflow on them (found by the `offsets_records` fuzz target).
#[test]
fn expiry_survives_extreme_replayed_commit_timestamps() {
    let mut c = GroupCoordinator::new(
        CoordinatorConfig::default(),
        Box::new(SequentialIds::default()),
    );
    let partition = c.partition_for("simple");
    c.begin_loading(partition);
    for (topic_partition, commit_timestamp_ms) in [(0, i64::MIN), (1, i64::MAX)] {
        let record = OffsetsRecord::Offset {
            group_id: "simple".to_owned(),
            topic: "t".to_owned(),
            partition: topic_partition,
            value: Some(CommittedOffset {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms,
            }),
        };
        c.replay(0, &record);
    }
    c.finish_loading(partition);
    let expired = persisted(&c.expire_offsets(i64::MAX));
    assert_eq!(
        expired,
        vec![OffsetsRecord::Offset {
            group_id: "simple".to_owned(),
            topic: "t".to_owned(),
            partition: 0,
            value: None,
        }]
    );
    let _ = c.expire_offsets(i64::MIN);
}
