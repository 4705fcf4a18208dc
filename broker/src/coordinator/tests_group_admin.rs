//! The admin side beyond `tests_lifecycle.rs`: unloading a partition with
//! parked requests, DescribeGroups in every state, ListGroups while a
//! partition loads, deleted topics of an active group, offsets retention,
//! and timers of groups whose partition is still loading.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use skiff_protocol::ErrorCode;

use super::tests_errors::completing_group;
use super::tests_lifecycle::{commit_one, coordinator_with, persisted};
use super::tests_membership::{
    coordinator, heartbeat, join, join_responses, member_id_for, stable_group, sync,
    sync_responses, GROUP,
};
use super::*;

fn everyone_leaves(c: &mut GroupCoordinator, now_ms: i64, members: [&String; 2]) {
    let leaving = members.map(|m| LeavingMember {
        member_id: m.clone(),
        group_instance_id: None,
    });
    let (response, _) = c.leave_group(now_ms, GROUP, &leaving);
    assert!(response.members.iter().all(|m| m.2 == ErrorCode::None));
}

/// A group id other than [`GROUP`] whose offsets partition differs.
fn group_elsewhere(c: &GroupCoordinator) -> String {
    (0..)
        .map(|n| format!("other-{n}"))
        .find(|id| c.partition_for(id) != c.partition_for(GROUP))
        .unwrap()
}

#[test]
fn unload_answers_parked_syncs_and_leaves_other_partitions_alone() {
    let mut c = coordinator();
    let other = group_elsewhere(&c);
    commit_one(&mut c, 0, &other, -1, "", "t", 0, 5);
    let (_a, b, generation) = completing_group(&mut c);
    assert!(sync_responses(&c.sync_group(6_100, 5, sync(&b, generation, Vec::new()))).is_empty());

    let out = c.unload(c.partition_for(GROUP));
    assert_eq!(
        sync_responses(&out),
        vec![(5, SyncResponse::error(ErrorCode::NotCoordinator))]
    );
    assert!(join_responses(&out).is_empty());
    assert!(
        !out.iter().any(|o| matches!(o, Output::Persist { .. })),
        "no longer ours to write"
    );
    assert_eq!(c.group_state(GROUP), None);
    assert_eq!(c.next_deadline_ms(), None, "its timers are gone too");
    assert_eq!(c.group_state(&other), Some(GroupState::Empty));
    let (error, listed) = c.list_groups(&[]);
    assert_eq!(error, ErrorCode::None);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].group_id, other);
}

#[test]
fn describe_reports_every_state_by_kafkas_name() {
    let mut c = coordinator();
    assert_eq!(c.describe_group(GROUP).state.name(), "Dead");
    let a = member_id_for(&mut c, 0, 1, "a");
    c.join_group(10, 2, join(&a, "a"));
    let preparing = c.describe_group(GROUP);
    assert_eq!(preparing.state.name(), "PreparingRebalance");
    assert_eq!(preparing.protocol_type, "consumer");
    assert_eq!(preparing.protocol_name, "");
    let joins = join_responses(&c.tick(3_010));
    let generation = joins[0].1.generation_id;
    let completing = c.describe_group(GROUP);
    assert_eq!(completing.state.name(), "CompletingRebalance");
    assert_eq!(completing.protocol_name, "", "only shown once Stable");
    assert_eq!(completing.members.len(), 1);
    assert!(completing.members[0].metadata.is_empty());
    let assignment = vec![(a.clone(), Bytes::from_static(b"all"))];
    c.sync_group(3_100, 3, sync(&a, generation, assignment));
    let stable = c.describe_group(GROUP);
    assert_eq!(stable.state.name(), "Stable");
    assert_eq!(stable.protocol_name, "range");
    assert_eq!(stable.members[0].member_id, a);
    assert_eq!(stable.members[0].client_id, "a");
    assert_eq!(stable.members[0].metadata, Bytes::from_static(b"sub-a"));
    assert_eq!(stable.members[0].assignment, Bytes::from_static(b"all"));

    let leaving = [LeavingMember {
        member_id: a,
        group_instance_id: None,
    }];
    c.leave_group(4_000, GROUP, &leaving);
    let empty = c.describe_group(GROUP);
    assert_eq!(empty.state.name(), "Empty");
    assert_eq!(empty.protocol_type, "consumer");
    assert!(empty.members.is_empty());
}

#[test]
fn list_groups_while_a_partition_loads_shows_only_loaded_groups() {
    let mut c = coordinator();
    let other = group_elsewhere(&c);
    stable_group(&mut c);
    commit_one(&mut c, 0, &other, -1, "", "t", 0, 5);
    c.begin_loading(c.partition_for(&other));
    let (error, listed) = c.list_groups(&[]);
    assert_eq!(error, ErrorCode::CoordinatorLoadInProgress);
    let ids: Vec<_> = listed.iter().map(|g| g.group_id.as_str()).collect();
    assert_eq!(ids, vec![GROUP]);
    assert_eq!(listed[0].protocol_type, "consumer");
}

#[test]
fn deleted_topics_leave_an_active_group_in_place() {
    let mut c = coordinator();
    let (leader, _follower, generation) = stable_group(&mut c);
    commit_one(&mut c, 6_300, GROUP, generation, &leader, "gone", 0, 1);
    let records = persisted(&c.topics_deleted(&["gone".to_owned()]));
    assert_eq!(
        records,
        vec![OffsetsRecord::Offset {
            group_id: GROUP.to_owned(),
            topic: "gone".to_owned(),
            partition: 0,
            value: None,
        }]
    );
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
    assert_eq!(c.offset_fetch(GROUP, None), Ok(Vec::new()));
    assert!(
        c.topics_deleted(&["gone".to_owned()]).is_empty(),
        "idempotent"
    );
}

#[test]
fn deleting_an_empty_group_without_offsets_writes_one_tombstone_and_frees_the_id() {
    let mut c = coordinator();
    let (leader, follower, _generation) = stable_group(&mut c);
    everyone_leaves(&mut c, 7_000, [&leader, &follower]);
    let (results, out) = c.delete_groups(&[GROUP.to_owned(), GROUP.to_owned()]);
    assert_eq!(
        results,
        vec![
            (GROUP.to_owned(), ErrorCode::None),
            (GROUP.to_owned(), ErrorCode::GroupIdNotFound)
        ]
    );
    assert_eq!(
        persisted(&out),
        vec![OffsetsRecord::Group {
            group_id: GROUP.to_owned(),
            value: None,
        }]
    );
    // The id starts from scratch: generation 1 again.
    let a = member_id_for(&mut c, 8_000, 10, "a");
    c.join_group(8_000, 11, join(&a, "a"));
    let joins = join_responses(&c.tick(11_000));
    assert_eq!(joins[0].1.generation_id, 1);
}

/// What the coordinator implements of `offsets_retention`: an emptied
/// consumer group with no offsets goes at the next check; one with
/// offsets keeps them for the retention counted from when it emptied, and
/// a commit in the meantime does not restart the count (as in Kafka,
/// whose base for an Empty consumer group is `currentStateTimestamp`).
#[test]
fn emptied_consumer_group_expiry_counts_from_when_it_emptied() {
    let mut c = coordinator_with(CoordinatorConfig {
        offsets_retention_ms: 60_000,
        ..CoordinatorConfig::default()
    });
    let (leader, follower, generation) = stable_group(&mut c);
    commit_one(&mut c, 6_300, GROUP, generation, &leader, "t", 0, 1);
    everyone_leaves(&mut c, 10_000, [&leader, &follower]);
    // A tool commits while the group is empty (as reset-offsets does).
    commit_one(&mut c, 50_000, GROUP, -1, "", "t", 1, 2);
    assert!(c.expire_offsets(69_999).is_empty());
    let records = persisted(&c.expire_offsets(70_000));
    assert_eq!(records.len(), 3, "two offsets and the group: {records:?}");
    assert_eq!(c.group_state(GROUP), None);
}

#[test]
fn emptied_consumer_group_without_offsets_is_removed_at_the_next_check() {
    let mut c = coordinator();
    let (leader, follower, _generation) = stable_group(&mut c);
    everyone_leaves(&mut c, 7_000, [&leader, &follower]);
    let records = persisted(&c.expire_offsets(7_001));
    assert_eq!(
        records,
        vec![OffsetsRecord::Group {
            group_id: GROUP.to_owned(),
            value: None,
        }]
    );
    assert_eq!(c.group_state(GROUP), None);
}

#[test]
fn expiry_skips_groups_of_a_loading_partition() {
    let mut c = coordinator();
    let retention_ms = c.config().offsets_retention_ms;
    commit_one(&mut c, 0, "simple", -1, "", "t", 0, 5);
    c.begin_loading(c.partition_for("simple"));
    assert!(c.expire_offsets(retention_ms + 1).is_empty());
    c.finish_loading(c.partition_for("simple"));
    assert_eq!(persisted(&c.expire_offsets(retention_ms + 1)).len(), 2);
}

/// A group replayed from a partition that is still loading is not served
/// yet, so its timers must not fire either: expiring its members would
/// write to a partition being read and rebalance a group nobody can reach.
/// As in Kafka, the members' sessions start once the load completes.
#[test]
fn tick_leaves_groups_of_a_loading_partition_alone() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_group(&mut c);
    let partition = c.partition_for(GROUP);
    c.begin_loading(partition);
    assert_eq!(c.next_deadline_ms(), None);
    let out = c.tick(60_000);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
    c.finish_loading(partition);
    assert!(c.tick(60_001).is_empty(), "sessions start now");
    assert!(c.tick(70_000).is_empty());
    assert_eq!(
        c.heartbeat(70_000, &heartbeat(&leader, generation)),
        ErrorCode::None
    );
    // Only the follower, silent since the load, times out.
    c.tick(70_001);
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    assert_eq!(
        c.heartbeat(70_002, &heartbeat(&follower, generation)),
        ErrorCode::UnknownMemberId
    );
}
