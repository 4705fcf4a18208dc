//! Static membership (KIP-345, KIP-814) beyond `tests_lifecycle.rs`: the
//! static leader's restart, fencing of the old member id on commit, and
//! restarts in the middle of a rebalance or with a protocol change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use skiff_protocol::ErrorCode;

use super::tests_lifecycle::{
    completing_static_group, stable_static_group, static_heartbeat, static_join,
};
use super::tests_membership::{coordinator, join_responses, sync, sync_responses, GROUP};
use super::*;

fn static_sync(member_id: &str, generation_id: i32, instance_id: &str) -> SyncRequest {
    SyncRequest {
        group_instance_id: Some(instance_id.to_owned()),
        ..sync(member_id, generation_id, Vec::new())
    }
}

fn commit(member_id: &str, generation_id: i32, instance_id: &str) -> CommitRequest {
    CommitRequest {
        group_id: GROUP.to_owned(),
        generation_id,
        member_id: member_id.to_owned(),
        group_instance_id: Some(instance_id.to_owned()),
        topics: vec![(
            "t".to_owned(),
            vec![CommitPartition {
                partition: 0,
                offset: 7,
                leader_epoch: -1,
                metadata: None,
            }],
        )],
    }
}

fn commit_error(pending: &PendingCommit) -> ErrorCode {
    pending.results[0].1[0].1
}

fn with_protocols(request: JoinRequest, names: &[&str]) -> JoinRequest {
    JoinRequest {
        protocols: names
            .iter()
            .map(|name| Protocol {
                name: (*name).to_owned(),
                metadata: Bytes::from(format!("{}-{name}", request.client_id)),
            })
            .collect(),
        ..request
    }
}

/// KIP-814: the restarted static leader keeps the generation and is told
/// to skip the assignment, but still sees the members.
#[test]
fn restarted_static_leader_keeps_the_generation_and_skips_assignment() {
    let mut c = coordinator();
    let (old_a, b, generation) = stable_static_group(&mut c);
    let out = c.join_group(7_000, 10, static_join("", "a", "ia"));
    assert!(
        matches!(out.first(), Some(Output::Persist { .. })),
        "{out:?}"
    );
    let joins = join_responses(&out);
    assert_eq!(joins.len(), 1);
    let response = &joins[0].1;
    assert_eq!(response.error, ErrorCode::None);
    assert_eq!(response.generation_id, generation);
    let new_a = response.member_id.clone();
    assert!(new_a.starts_with("ia-") && new_a != old_a);
    assert_eq!(response.leader, new_a);
    assert!(response.skip_assignment);
    let mut members: Vec<_> = response
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
        .collect();
    members.sort();
    assert_eq!(
        members,
        vec![
            (new_a.clone(), Some("ia".to_owned())),
            (b.clone(), Some("ib".to_owned()))
        ]
    );
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));

    // The stored assignment comes back; the old id is fenced.
    let syncs = sync_responses(&c.sync_group(7_100, 11, static_sync(&new_a, generation, "ia")));
    assert_eq!(syncs[0].1.error, ErrorCode::None);
    assert_eq!(syncs[0].1.assignment, Bytes::from_static(b"for-a"));
    assert_eq!(
        c.heartbeat(7_200, &static_heartbeat(&old_a, generation, "ia")),
        ErrorCode::FencedInstanceId
    );
    assert_eq!(
        c.heartbeat(7_200, &static_heartbeat(&b, generation, "ib")),
        ErrorCode::None
    );
}

#[test]
fn old_static_member_id_is_fenced_on_commit() {
    let mut c = coordinator();
    let (_a, old_b, generation) = stable_static_group(&mut c);
    let joins = join_responses(&c.join_group(7_000, 10, static_join("", "b", "ib")));
    let new_b = joins[0].1.member_id.clone();
    let stale = c.offset_commit(7_100, &commit(&old_b, generation, "ib"));
    assert_eq!(commit_error(&stale), ErrorCode::FencedInstanceId);
    assert!(stale.records.is_empty());
    // Fencing is checked before the generation.
    let stale = c.offset_commit(7_100, &commit(&old_b, generation + 5, "ib"));
    assert_eq!(commit_error(&stale), ErrorCode::FencedInstanceId);
    let fresh = c.offset_commit(7_100, &commit(&new_b, generation, "ib"));
    assert_eq!(commit_error(&fresh), ErrorCode::None);
}

#[test]
fn a_member_id_presented_with_another_members_instance_id_is_fenced() {
    let mut c = coordinator();
    let (a, _b, generation) = stable_static_group(&mut c);
    assert_eq!(
        c.heartbeat(7_000, &static_heartbeat(&a, generation, "ib")),
        ErrorCode::FencedInstanceId
    );
    let joins = join_responses(&c.join_group(7_000, 10, static_join(&a, "a", "ib")));
    assert_eq!(joins[0].1.error, ErrorCode::FencedInstanceId);
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
}

/// KIP-345: in CompletingRebalance the leader may be assigning to the old
/// member id, so a static restart starts the rebalance over.
#[test]
fn static_restart_while_completing_rebalance_fences_the_old_sync_and_rebalances() {
    let mut c = coordinator();
    let (a, old_b, generation) = completing_static_group(&mut c, |j| j);
    assert!(
        sync_responses(&c.sync_group(6_100, 3, static_sync(&old_b, generation, "ib"))).is_empty()
    );

    let out = c.join_group(6_200, 4, static_join("", "b", "ib"));
    assert_eq!(
        sync_responses(&out),
        vec![(3, SyncResponse::error(ErrorCode::FencedInstanceId))]
    );
    assert!(join_responses(&out).is_empty(), "waits for a to rejoin");
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    // The leader's sync for the old generation is refused.
    let syncs = sync_responses(&c.sync_group(6_300, 5, static_sync(&a, generation, "ia")));
    assert_eq!(syncs[0].1.error, ErrorCode::RebalanceInProgress);

    let out = c.join_group(6_400, 6, static_join(&a, "a", "ia"));
    let mut joins = join_responses(&out);
    joins.sort_by_key(|(reply, _)| *reply);
    assert_eq!(joins.iter().map(|j| j.0).collect::<Vec<_>>(), vec![4, 6]);
    let new_b = joins[0].1.member_id.clone();
    assert_ne!(new_b, old_b);
    assert_eq!(joins[0].1.generation_id, generation + 1);
    let leader_view: Vec<_> = joins[1]
        .1
        .members
        .iter()
        .map(|m| m.member_id.clone())
        .collect();
    assert!(leader_view.contains(&new_b) && !leader_view.contains(&old_b));
}

#[test]
fn static_restart_while_preparing_fences_the_old_join_and_completes_it() {
    let mut c = coordinator();
    let (a, old_b, generation) = stable_static_group(&mut c);
    // The old b rejoins with a new subscription: a rebalance starts.
    let changed = JoinRequest {
        protocols: vec![Protocol {
            name: "range".to_owned(),
            metadata: Bytes::from_static(b"more-topics"),
        }],
        ..static_join(&old_b, "b", "ib")
    };
    assert!(join_responses(&c.join_group(7_000, 10, changed)).is_empty());
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    // b's process restarts before the rebalance completes.
    let out = c.join_group(7_100, 11, static_join("", "b", "ib"));
    let joins = join_responses(&out);
    assert_eq!(joins.len(), 1, "{out:?}");
    assert_eq!(joins[0].0, 10);
    assert_eq!(joins[0].1.error, ErrorCode::FencedInstanceId);
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));

    let out = c.join_group(7_200, 12, static_join(&a, "a", "ia"));
    let mut joins = join_responses(&out);
    joins.sort_by_key(|(reply, _)| *reply);
    assert_eq!(joins.iter().map(|j| j.0).collect::<Vec<_>>(), vec![11, 12]);
    assert!(joins.iter().all(|(_, r)| r.error == ErrorCode::None));
    assert!(joins.iter().all(|(_, r)| r.generation_id == generation + 1));
    let new_b = joins[0].1.member_id.clone();
    assert!(new_b.starts_with("ib-") && new_b != old_b);
}

#[test]
fn static_restart_that_changes_the_selected_protocol_rebalances() {
    let mut c = coordinator();
    let both = ["range", "roundrobin"];
    let (a, b, generation) = completing_static_group(&mut c, |j| with_protocols(j, &both));
    assert_eq!(c.describe_group(GROUP).members.len(), 2);
    c.sync_group(
        6_100,
        3,
        sync(&a, generation, vec![(b.clone(), Bytes::from_static(b"B"))]),
    );
    c.sync_group(6_200, 4, sync(&b, generation, Vec::new()));
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));

    // b comes back supporting only roundrobin: range is no longer common.
    let out = c.join_group(
        7_000,
        5,
        with_protocols(static_join("", "b", "ib"), &["roundrobin"]),
    );
    assert!(join_responses(&out).is_empty(), "{out:?}");
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    let out = c.join_group(7_100, 6, with_protocols(static_join(&a, "a", "ia"), &both));
    let joins = join_responses(&out);
    assert_eq!(joins.len(), 2, "{out:?}");
    for (_, response) in &joins {
        assert_eq!(response.generation_id, generation + 1);
        assert_eq!(response.protocol_name.as_deref(), Some("roundrobin"));
    }
    let leader = joins.iter().find(|(r, _)| *r == 6).unwrap();
    assert!(!leader.1.skip_assignment);
    assert!(leader
        .1
        .members
        .iter()
        .all(|m| m.metadata.ends_with(b"-roundrobin")));
}
