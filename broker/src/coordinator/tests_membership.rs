//! Join/sync/heartbeat/session-timeout transitions driven with a hand clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use skiff_protocol::ErrorCode;

use super::*;

pub(super) const GROUP: &str = "g1";
const SESSION_MS: i32 = 10_000;

/// A coordinator that owns and has loaded every offsets partition.
pub(super) fn coordinator() -> GroupCoordinator {
    let config = CoordinatorConfig::default();
    let partitions = config.offsets_partitions;
    let mut c = GroupCoordinator::new(config, Box::new(SequentialIds::default()));
    for p in 0..partitions as i32 {
        c.finish_loading(p);
    }
    c
}

pub(super) fn join(member_id: &str, client_id: &str) -> JoinRequest {
    JoinRequest {
        group_id: GROUP.to_owned(),
        member_id: member_id.to_owned(),
        group_instance_id: None,
        client_id: client_id.to_owned(),
        client_host: "/127.0.0.1".to_owned(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".to_owned(),
        protocols: vec![Protocol {
            name: "range".to_owned(),
            metadata: Bytes::from(format!("sub-{client_id}")),
        }],
        require_known_member_id: true,
    }
}

pub(super) fn join_responses(out: &[Output]) -> Vec<(ReplyId, JoinResponse)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Join { reply, response } => Some((*reply, response.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn sync_responses(out: &[Output]) -> Vec<(ReplyId, SyncResponse)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Sync { reply, response } => Some((*reply, response.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn heartbeat(member_id: &str, generation_id: i32) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: GROUP.to_owned(),
        member_id: member_id.to_owned(),
        generation_id,
        group_instance_id: None,
    }
}

pub(super) fn sync(
    member_id: &str,
    generation_id: i32,
    assignments: Vec<(String, Bytes)>,
) -> SyncRequest {
    SyncRequest {
        group_id: GROUP.to_owned(),
        member_id: member_id.to_owned(),
        generation_id,
        group_instance_id: None,
        protocol_type: Some("consumer".to_owned()),
        protocol_name: Some("range".to_owned()),
        assignments,
    }
}

/// First join of a KIP-394 member: MEMBER_ID_REQUIRED with a fresh id.
pub(super) fn member_id_for(
    c: &mut GroupCoordinator,
    now_ms: i64,
    reply: ReplyId,
    client: &str,
) -> String {
    let out = c.join_group(now_ms, reply, join("", client));
    let joins = join_responses(&out);
    assert_eq!(joins.len(), 1, "{out:?}");
    assert_eq!(joins[0].0, reply);
    assert_eq!(joins[0].1.error, ErrorCode::MemberIdRequired);
    joins[0].1.member_id.clone()
}

/// Two members joined and synced: returns (leader, follower, generation).
pub(super) fn stable_group(c: &mut GroupCoordinator) -> (String, String, i32) {
    let a = member_id_for(c, 0, 1, "a");
    let b = member_id_for(c, 0, 2, "b");
    assert!(join_responses(&c.join_group(10, 3, join(&a, "a"))).is_empty());
    assert!(join_responses(&c.join_group(20, 4, join(&b, "b"))).is_empty());
    // b joined during the initial delay, so it is extended once (KIP-134).
    assert!(join_responses(&c.tick(10 + 3_000)).is_empty());
    let out = c.tick(10 + 6_000);
    let joins = join_responses(&out);
    assert_eq!(joins.len(), 2, "{out:?}");
    let generation = joins[0].1.generation_id;
    let leader = joins[0].1.leader.clone();
    let follower = if leader == a { b } else { a };
    c.sync_group(
        6_100,
        5,
        sync(
            &leader,
            generation,
            vec![
                (leader.clone(), Bytes::from_static(b"L")),
                (follower.clone(), Bytes::from_static(b"F")),
            ],
        ),
    );
    c.sync_group(6_200, 6, sync(&follower, generation, Vec::new()));
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
    (leader, follower, generation)
}

#[test]
fn first_join_without_id_gets_member_id_required_with_client_prefix() {
    let mut c = coordinator();
    let id = member_id_for(&mut c, 0, 1, "client-a");
    assert_eq!(id, "client-a-00000000-0000-4000-8000-000000000001");
    let id2 = member_id_for(&mut c, 0, 2, "client-b");
    assert_ne!(id, id2);
}

#[test]
fn join_waits_for_initial_delay_then_leader_gets_members_and_sync_stabilises() {
    let mut c = coordinator();
    let a = member_id_for(&mut c, 0, 1, "a");
    let b = member_id_for(&mut c, 0, 2, "b");
    assert!(join_responses(&c.join_group(10, 3, join(&a, "a"))).is_empty());
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    assert!(join_responses(&c.join_group(20, 4, join(&b, "b"))).is_empty());

    // Before the initial delay (3 s) has passed nothing is answered.
    assert!(join_responses(&c.tick(1_000)).is_empty());
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));

    // b joined during the delay: Kafka extends it once more (up to the
    // rebalance timeout) rather than completing at 3 s.
    assert!(join_responses(&c.tick(3_010)).is_empty());
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    let out = c.tick(6_010);
    let mut joins = join_responses(&out);
    joins.sort_by_key(|(reply, _)| *reply);
    assert_eq!(joins.iter().map(|j| j.0).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(c.group_state(GROUP), Some(GroupState::CompletingRebalance));
    let generation = joins[0].1.generation_id;
    assert_eq!(generation, 1);
    assert!(joins.iter().all(|(_, r)| r.error == ErrorCode::None));
    assert!(joins.iter().all(|(_, r)| r.generation_id == generation));
    assert_eq!(joins[0].1.protocol_name.as_deref(), Some("range"));
    let leader = joins[0].1.leader.clone();
    assert!(leader == a || leader == b);
    for (_, response) in &joins {
        assert_eq!(response.leader, leader);
        if response.member_id == leader {
            let mut ids: Vec<_> = response
                .members
                .iter()
                .map(|m| m.member_id.clone())
                .collect();
            ids.sort();
            let mut expected = vec![a.clone(), b.clone()];
            expected.sort();
            assert_eq!(ids, expected);
            let a_meta = response.members.iter().find(|m| m.member_id == a).unwrap();
            assert_eq!(a_meta.metadata, Bytes::from_static(b"sub-a"));
        } else {
            assert!(response.members.is_empty());
        }
    }
    let follower = if leader == a { b.clone() } else { a.clone() };

    // The follower's sync parks until the leader's arrives.
    let out = c.sync_group(6_100, 5, sync(&follower, generation, Vec::new()));
    assert!(sync_responses(&out).is_empty(), "{out:?}");
    let out = c.sync_group(
        6_200,
        6,
        sync(
            &leader,
            generation,
            vec![
                (leader.clone(), Bytes::from_static(b"L")),
                (follower.clone(), Bytes::from_static(b"F")),
            ],
        ),
    );
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
    // The assignment is persisted before the answers go out.
    let persist_at = out
        .iter()
        .position(|o| matches!(o, Output::Persist { .. }))
        .expect("assignment persisted");
    let first_sync = out
        .iter()
        .position(|o| matches!(o, Output::Sync { .. }))
        .expect("sync answered");
    assert!(persist_at < first_sync);
    let mut syncs = sync_responses(&out);
    syncs.sort_by_key(|(reply, _)| *reply);
    assert_eq!(syncs.len(), 2, "{out:?}");
    assert_eq!(syncs[0].0, 5);
    assert_eq!(syncs[0].1.error, ErrorCode::None);
    assert_eq!(syncs[0].1.assignment, Bytes::from_static(b"F"));
    assert_eq!(syncs[1].0, 6);
    assert_eq!(syncs[1].1.assignment, Bytes::from_static(b"L"));
}

#[test]
fn heartbeat_errors_follow_group_state() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_group(&mut c);
    assert_eq!(
        c.heartbeat(7_000, &heartbeat(&leader, generation)),
        ErrorCode::None
    );
    assert_eq!(
        c.heartbeat(7_000, &heartbeat(&follower, generation)),
        ErrorCode::None
    );
    assert_eq!(
        c.heartbeat(7_000, &heartbeat("nobody", generation)),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        c.heartbeat(7_000, &heartbeat(&leader, generation + 1)),
        ErrorCode::IllegalGeneration
    );

    // A new member joining starts a rebalance the others learn of by heartbeat.
    let late = member_id_for(&mut c, 8_000, 10, "c");
    c.join_group(8_000, 11, join(&late, "c"));
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    assert_eq!(
        c.heartbeat(8_100, &heartbeat(&follower, generation)),
        ErrorCode::RebalanceInProgress
    );
}

#[test]
fn heartbeat_to_unknown_group_is_unknown_member() {
    let mut c = coordinator();
    assert_eq!(
        c.heartbeat(0, &heartbeat("x", 1)),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn session_timeout_removes_member_and_rebalances() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_group(&mut c);
    // Only the leader keeps heartbeating.
    let mut now_ms = 6_200;
    while now_ms < 6_200 + i64::from(SESSION_MS) - 1_000 {
        now_ms += 1_000;
        assert_eq!(
            c.heartbeat(now_ms, &heartbeat(&leader, generation)),
            ErrorCode::None
        );
        c.tick(now_ms);
        assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
    }
    // Past the follower's session deadline, it is removed and a rebalance starts.
    c.tick(6_200 + i64::from(SESSION_MS) + 1);
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    assert_eq!(
        c.heartbeat(16_300, &heartbeat(&follower, generation)),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        c.heartbeat(16_300, &heartbeat(&leader, generation)),
        ErrorCode::RebalanceInProgress
    );
    // The leader rejoins alone and gets the next generation.
    let out = c.join_group(
        16_400,
        20,
        join(&leader, if leader.starts_with("a-") { "a" } else { "b" }),
    );
    let joins = join_responses(&out);
    assert_eq!(joins.len(), 1, "{out:?}");
    assert_eq!(joins[0].1.error, ErrorCode::None);
    assert_eq!(joins[0].1.generation_id, generation + 1);
    assert_eq!(joins[0].1.members.len(), 1);
    assert_eq!(c.group_state(GROUP), Some(GroupState::CompletingRebalance));
}

#[test]
fn sync_with_wrong_generation_or_member_fails() {
    let mut c = coordinator();
    let (leader, _follower, generation) = stable_group(&mut c);
    let out = c.sync_group(7_000, 30, sync(&leader, generation + 1, Vec::new()));
    assert_eq!(
        sync_responses(&out)[0].1.error,
        ErrorCode::IllegalGeneration
    );
    let out = c.sync_group(7_000, 31, sync("nobody", generation, Vec::new()));
    assert_eq!(sync_responses(&out)[0].1.error, ErrorCode::UnknownMemberId);
}

#[test]
fn leave_of_follower_rebalances_and_leader_rejoins_alone() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_group(&mut c);
    let (response, _out) = c.leave_group(
        7_000,
        GROUP,
        &[
            LeavingMember {
                member_id: follower.clone(),
                group_instance_id: None,
            },
            LeavingMember {
                member_id: "nobody".to_owned(),
                group_instance_id: None,
            },
        ],
    );
    assert_eq!(response.error, ErrorCode::None);
    assert_eq!(response.members[0].2, ErrorCode::None);
    assert_eq!(response.members[1].2, ErrorCode::UnknownMemberId);
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    assert_eq!(
        c.heartbeat(7_100, &heartbeat(&follower, generation)),
        ErrorCode::UnknownMemberId
    );
    let client = if leader.starts_with("a-") { "a" } else { "b" };
    let joins = join_responses(&c.join_group(7_200, 40, join(&leader, client)));
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1.generation_id, generation + 1);
    assert_eq!(joins[0].1.leader, leader);
}

#[test]
fn member_that_does_not_rejoin_is_dropped_at_rebalance_timeout() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_group(&mut c);
    let late = member_id_for(&mut c, 7_000, 10, "c");
    c.join_group(7_000, 11, join(&late, "c"));
    let client = if leader.starts_with("a-") { "a" } else { "b" };
    assert!(join_responses(&c.join_group(7_100, 12, join(&leader, client))).is_empty());
    // The follower keeps heartbeating but never rejoins: heartbeats keep
    // its session alive, so only the rebalance timeout (60 s) ends the join.
    let mut now_ms = 7_100;
    while now_ms + 5_000 < 7_000 + 60_000 {
        now_ms += 5_000;
        assert_eq!(
            c.heartbeat(now_ms, &heartbeat(&follower, generation)),
            ErrorCode::RebalanceInProgress
        );
        let out = c.tick(now_ms);
        assert!(join_responses(&out).is_empty(), "at {now_ms}: {out:?}");
    }
    let out = c.tick(7_000 + 60_000);
    let mut joins = join_responses(&out);
    joins.sort_by_key(|(reply, _)| *reply);
    assert_eq!(joins.iter().map(|j| j.0).collect::<Vec<_>>(), vec![11, 12]);
    assert!(joins.iter().all(|(_, r)| r.generation_id == generation + 1));
    assert_eq!(
        c.heartbeat(now_ms + 1, &heartbeat(&follower, generation + 1)),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn parked_follower_sync_is_answered_when_rebalance_restarts() {
    let mut c = coordinator();
    let a = member_id_for(&mut c, 0, 1, "a");
    let b = member_id_for(&mut c, 0, 2, "b");
    c.join_group(10, 3, join(&a, "a"));
    c.join_group(20, 4, join(&b, "b"));
    c.tick(3_010);
    let joins = join_responses(&c.tick(6_010));
    let generation = joins[0].1.generation_id;
    let leader = joins[0].1.leader.clone();
    let follower = if leader == a { b.clone() } else { a.clone() };
    assert!(
        sync_responses(&c.sync_group(6_100, 5, sync(&follower, generation, Vec::new()))).is_empty()
    );
    // A third member joins before the leader syncs: the parked sync fails.
    let late = member_id_for(&mut c, 6_200, 6, "c");
    let out = c.join_group(6_200, 7, join(&late, "c"));
    let syncs = sync_responses(&out);
    assert_eq!(syncs.len(), 1, "{out:?}");
    assert_eq!(syncs[0].0, 5);
    assert_eq!(syncs[0].1.error, ErrorCode::RebalanceInProgress);
    // A sync during PreparingRebalance is refused at once.
    let out = c.sync_group(6_300, 8, sync(&leader, generation, Vec::new()));
    assert_eq!(
        sync_responses(&out)[0].1.error,
        ErrorCode::RebalanceInProgress
    );
}

#[test]
fn unknown_pending_member_id_expires_after_session_timeout() {
    let mut c = coordinator();
    let a = member_id_for(&mut c, 0, 1, "a");
    c.tick(i64::from(SESSION_MS) + 1);
    let joins = join_responses(&c.join_group(i64::from(SESSION_MS) + 2, 2, join(&a, "a")));
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1.error, ErrorCode::UnknownMemberId);
}

#[test]
fn join_rejects_bad_session_timeout_and_empty_group_id() {
    let mut c = coordinator();
    let mut request = join("", "a");
    request.session_timeout_ms = 1;
    let joins = join_responses(&c.join_group(0, 1, request));
    assert_eq!(joins[0].1.error, ErrorCode::InvalidSessionTimeout);
    let mut request = join("", "a");
    request.group_id = String::new();
    let joins = join_responses(&c.join_group(0, 2, request));
    assert_eq!(joins[0].1.error, ErrorCode::InvalidGroupId);
}

#[test]
fn retried_follower_join_in_stable_gets_current_generation_without_rebalance() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_group(&mut c);
    let client = if follower.starts_with("a-") { "a" } else { "b" };
    let joins = join_responses(&c.join_group(7_000, 60, join(&follower, client)));
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1.error, ErrorCode::None);
    assert_eq!(joins[0].1.generation_id, generation);
    assert_eq!(joins[0].1.leader, leader);
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
}

#[test]
fn failed_persist_of_assignment_forces_rejoin() {
    let mut c = coordinator();
    let (leader, _follower, generation) = stable_group(&mut c);
    c.persist_failed(7_000, GROUP);
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    assert_eq!(
        c.heartbeat(7_100, &heartbeat(&leader, generation)),
        ErrorCode::RebalanceInProgress
    );
}

#[test]
fn next_deadline_is_the_earliest_timer() {
    let mut c = coordinator();
    assert_eq!(c.next_deadline_ms(), None);
    let a = member_id_for(&mut c, 0, 1, "a");
    c.join_group(10, 2, join(&a, "a"));
    // The initial delay (10 + 3000) comes before any session deadline.
    assert_eq!(c.next_deadline_ms(), Some(3_010));
}
