//! Every error path of JoinGroup/SyncGroup/Heartbeat/LeaveGroup not covered
//! elsewhere, superseded parked requests, and the timers of the join and
//! sync phases, driven with a hand clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use skiff_protocol::ErrorCode;

use super::tests_lifecycle::coordinator_with;
use super::tests_membership::{
    coordinator, heartbeat, join, join_responses, member_id_for, stable_group, sync,
    sync_responses, GROUP,
};
use super::*;

fn leaving(member_id: &str) -> LeavingMember {
    LeavingMember {
        member_id: member_id.to_owned(),
        group_instance_id: None,
    }
}

/// a and b joined (generation 1, a leads) and nobody synced yet; the join
/// completed at 6_010, so both sessions run to 16_010.
pub(super) fn completing_group(c: &mut GroupCoordinator) -> (String, String, i32) {
    let a = member_id_for(c, 0, 1, "a");
    let b = member_id_for(c, 0, 2, "b");
    c.join_group(10, 3, join(&a, "a"));
    c.join_group(20, 4, join(&b, "b"));
    c.tick(3_010);
    let joins = join_responses(&c.tick(6_010));
    assert_eq!(joins.len(), 2, "{joins:?}");
    assert_eq!(joins[0].1.leader, a);
    assert_eq!(c.group_state(GROUP), Some(GroupState::CompletingRebalance));
    (a, b, joins[0].1.generation_id)
}

#[test]
fn session_timeout_bounds_are_inclusive() {
    let mut c = coordinator();
    let config = c.config().clone();
    for (timeout_ms, expected) in [
        (
            config.session_timeout_min_ms - 1,
            ErrorCode::InvalidSessionTimeout,
        ),
        (config.session_timeout_min_ms, ErrorCode::MemberIdRequired),
        (config.session_timeout_max_ms, ErrorCode::MemberIdRequired),
        (
            config.session_timeout_max_ms + 1,
            ErrorCode::InvalidSessionTimeout,
        ),
    ] {
        let request = JoinRequest {
            session_timeout_ms: timeout_ms,
            ..join("", "a")
        };
        let joins = join_responses(&c.join_group(0, 1, request));
        assert_eq!(joins[0].1.error, expected, "session timeout {timeout_ms}");
    }
}

#[test]
fn join_without_protocol_type_or_protocols_is_inconsistent() {
    let mut c = coordinator();
    let no_type = JoinRequest {
        protocol_type: String::new(),
        ..join("", "a")
    };
    let no_protocols = JoinRequest {
        protocols: Vec::new(),
        ..join("", "a")
    };
    for (reply, request) in [(1, no_type), (2, no_protocols)] {
        let joins = join_responses(&c.join_group(0, reply, request));
        assert_eq!(joins[0].1.error, ErrorCode::InconsistentGroupProtocol);
    }
    assert_eq!(c.group_state(GROUP), None, "no group is created");
}

#[test]
fn join_with_a_member_id_the_group_does_not_know_is_refused() {
    let mut c = coordinator();
    let joins = join_responses(&c.join_group(0, 1, join("ghost", "a")));
    assert_eq!(joins[0].1.error, ErrorCode::UnknownMemberId);
    assert_eq!(c.group_state(GROUP), None, "no group is created");
    let (_leader, _follower, generation) = stable_group(&mut c);
    let joins = join_responses(&c.join_group(7_000, 2, join("ghost", "a")));
    assert_eq!(joins[0].1.error, ErrorCode::UnknownMemberId);
    assert_eq!(c.generation(GROUP), Some(generation));
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
}

#[test]
fn membership_apis_answer_not_coordinator_then_load_in_progress() {
    let mut c = GroupCoordinator::new(
        CoordinatorConfig::default(),
        Box::new(SequentialIds::default()),
    );
    let partition = c.partition_for(GROUP);
    for expected in [
        ErrorCode::NotCoordinator,
        ErrorCode::CoordinatorLoadInProgress,
    ] {
        if expected == ErrorCode::CoordinatorLoadInProgress {
            c.begin_loading(partition);
        }
        let joins = join_responses(&c.join_group(0, 1, join("", "a")));
        assert_eq!(joins[0].1.error, expected);
        let syncs = sync_responses(&c.sync_group(0, 2, sync("m", 1, Vec::new())));
        assert_eq!(syncs[0].1.error, expected);
        assert_eq!(c.heartbeat(0, &heartbeat("m", 1)), expected);
        let (response, out) = c.leave_group(0, GROUP, &[leaving("m")]);
        assert_eq!(response.error, expected);
        assert!(out.is_empty());
        assert_eq!(c.describe_group(GROUP).error, expected);
        let (results, out) = c.delete_groups(&[GROUP.to_owned()]);
        assert_eq!(results, vec![(GROUP.to_owned(), expected)]);
        assert!(out.is_empty());
    }
    c.finish_loading(partition);
    let joins = join_responses(&c.join_group(0, 3, join("", "a")));
    assert_eq!(joins[0].1.error, ErrorCode::MemberIdRequired);
}

#[test]
fn membership_apis_refuse_the_empty_group_id() {
    let mut c = coordinator();
    let no_group = |mut request: SyncRequest| {
        request.group_id = String::new();
        request
    };
    let syncs = sync_responses(&c.sync_group(0, 1, no_group(sync("m", 1, Vec::new()))));
    assert_eq!(syncs[0].1.error, ErrorCode::InvalidGroupId);
    let request = HeartbeatRequest {
        group_id: String::new(),
        ..heartbeat("m", 1)
    };
    assert_eq!(c.heartbeat(0, &request), ErrorCode::InvalidGroupId);
    let (response, _) = c.leave_group(0, "", &[leaving("m")]);
    assert_eq!(response.error, ErrorCode::InvalidGroupId);
}

#[test]
fn sync_and_leave_for_an_unknown_group_are_unknown_member() {
    let mut c = coordinator();
    let syncs = sync_responses(&c.sync_group(0, 1, sync("m", 1, Vec::new())));
    assert_eq!(syncs[0].1.error, ErrorCode::UnknownMemberId);
    // Kafka's handleLeaveGroup: NONE, and each member UNKNOWN_MEMBER_ID.
    let (response, out) = c.leave_group(0, GROUP, &[leaving("m"), leaving("n")]);
    assert_eq!(response.error, ErrorCode::None);
    let errors: Vec<_> = response
        .members
        .iter()
        .map(|(id, _, e)| (id.as_str(), *e))
        .collect();
    assert_eq!(
        errors,
        vec![
            ("m", ErrorCode::UnknownMemberId),
            ("n", ErrorCode::UnknownMemberId)
        ]
    );
    assert!(out.is_empty());
}

#[test]
fn sync_naming_another_protocol_is_inconsistent() {
    let mut c = coordinator();
    let (leader, _follower, generation) = stable_group(&mut c);
    let other_name = SyncRequest {
        protocol_name: Some("roundrobin".to_owned()),
        ..sync(&leader, generation, Vec::new())
    };
    let other_type = SyncRequest {
        protocol_type: Some("connect".to_owned()),
        ..sync(&leader, generation, Vec::new())
    };
    for (reply, request) in [(1, other_name), (2, other_type)] {
        let syncs = sync_responses(&c.sync_group(7_000, reply, request));
        assert_eq!(syncs[0].1.error, ErrorCode::InconsistentGroupProtocol);
    }
    // SyncGroup before v5 names neither; the check is skipped.
    let old = SyncRequest {
        protocol_type: None,
        protocol_name: None,
        ..sync(&leader, generation, Vec::new())
    };
    let syncs = sync_responses(&c.sync_group(7_000, 3, old));
    assert_eq!(syncs[0].1.error, ErrorCode::None);
    assert_eq!(syncs[0].1.assignment, Bytes::from_static(b"L"));
}

#[test]
fn superseded_parked_join_and_sync_are_answered_rebalance_in_progress() {
    let mut c = coordinator();
    let (a, b, generation) = completing_group(&mut c);
    // b's client gave up on its parked SyncGroup and sent another.
    assert!(sync_responses(&c.sync_group(6_100, 10, sync(&b, generation, Vec::new()))).is_empty());
    let syncs = sync_responses(&c.sync_group(6_200, 11, sync(&b, generation, Vec::new())));
    assert_eq!(
        syncs,
        vec![(10, SyncResponse::error(ErrorCode::RebalanceInProgress))]
    );
    // a rejoins with a new subscription, so a new rebalance starts and b's
    // parked sync is released. (An unchanged rejoin would just be answered
    // with the current generation.)
    let changed = |reply_member: &str| JoinRequest {
        protocols: vec![Protocol {
            name: "range".to_owned(),
            metadata: Bytes::from_static(b"more-topics"),
        }],
        ..join(reply_member, "a")
    };
    let out = c.join_group(6_300, 12, changed(&a));
    assert!(join_responses(&out).is_empty());
    let syncs = sync_responses(&out);
    assert_eq!(
        syncs,
        vec![(11, SyncResponse::error(ErrorCode::RebalanceInProgress))]
    );
    // a sends its JoinGroup again while the first is parked.
    let out = c.join_group(6_400, 13, changed(&a));
    let joins = join_responses(&out);
    assert_eq!(joins.len(), 1, "{out:?}");
    assert_eq!(
        (joins[0].0, joins[0].1.error),
        (12, ErrorCode::RebalanceInProgress)
    );
    // Only the latest join of a is answered when the rebalance completes.
    let joins = join_responses(&c.join_group(6_500, 14, join(&b, "b")));
    let mut replies: Vec<_> = joins.iter().map(|(r, resp)| (*r, resp.error)).collect();
    replies.sort_by_key(|(reply, _)| *reply);
    assert_eq!(replies, vec![(13, ErrorCode::None), (14, ErrorCode::None)]);
    assert_eq!(c.generation(GROUP), Some(generation + 1));
}

#[test]
fn leaving_pending_member_lets_the_join_complete() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_group(&mut c);
    let pending = member_id_for(&mut c, 7_000, 10, "c");
    c.join_group(7_000, 11, join(&leader, "a"));
    let out = c.join_group(7_100, 12, join(&follower, "b"));
    assert!(
        join_responses(&out).is_empty(),
        "waits for the pending member"
    );
    let (response, out) = c.leave_group(7_200, GROUP, &[leaving(&pending)]);
    assert_eq!(response.members[0].2, ErrorCode::None);
    let joins = join_responses(&out);
    assert_eq!(joins.len(), 2, "{out:?}");
    assert!(joins.iter().all(|(_, r)| r.generation_id == generation + 1));
}

/// A member refused for the group's size must not leave the others parked
/// until the rebalance timeout: it was the one they were waiting for.
#[test]
fn pending_member_refused_by_group_max_size_does_not_hold_up_the_rebalance() {
    let mut c = coordinator_with(CoordinatorConfig {
        group_members_max: 2,
        ..CoordinatorConfig::default()
    });
    let (leader, follower, generation) = stable_group(&mut c);
    let extra = member_id_for(&mut c, 7_000, 10, "c");
    c.join_group(7_000, 11, join(&leader, "a"));
    assert!(join_responses(&c.join_group(7_100, 12, join(&follower, "b"))).is_empty());
    let out = c.join_group(7_200, 13, join(&extra, "c"));
    let mut joins = join_responses(&out);
    joins.sort_by_key(|(reply, _)| *reply);
    let errors: Vec<_> = joins.iter().map(|(r, resp)| (*r, resp.error)).collect();
    assert_eq!(
        errors,
        vec![
            (11, ErrorCode::None),
            (12, ErrorCode::None),
            (13, ErrorCode::GroupMaxSizeReached)
        ]
    );
    assert_eq!(joins[0].1.generation_id, generation + 1);
}

#[test]
fn heartbeat_in_completing_rebalance_keeps_the_member_alive() {
    let mut c = coordinator();
    let (a, b, generation) = completing_group(&mut c);
    // b waits on a parked sync; a computes the assignment, heartbeating.
    c.sync_group(6_100, 10, sync(&b, generation, Vec::new()));
    for now_ms in [10_000, 15_000, 20_000, 25_000] {
        assert_eq!(
            c.heartbeat(now_ms, &heartbeat(&a, generation)),
            ErrorCode::None
        );
        assert!(c.tick(now_ms).is_empty(), "at {now_ms}");
    }
    assert_eq!(c.group_state(GROUP), Some(GroupState::CompletingRebalance));
    let assignments = vec![(b.clone(), Bytes::from_static(b"B"))];
    let syncs = sync_responses(&c.sync_group(26_000, 11, sync(&a, generation, assignments)));
    assert_eq!(syncs.len(), 2);
    // As in Kafka, answering b's parked sync starts its session afresh: it
    // had no way to heartbeat for the 20 s it was parked.
    assert!(c.tick(26_001).is_empty());
    assert_eq!(
        c.heartbeat(30_000, &heartbeat(&b, generation)),
        ErrorCode::None
    );
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
}

#[test]
fn leader_that_never_syncs_times_out_and_parked_followers_rejoin() {
    let mut c = coordinator();
    let (a, b, generation) = completing_group(&mut c);
    c.sync_group(6_100, 10, sync(&b, generation, Vec::new()));
    assert!(c.tick(16_009).is_empty());
    let out = c.tick(16_010);
    let syncs = sync_responses(&out);
    assert_eq!(
        syncs,
        vec![(10, SyncResponse::error(ErrorCode::RebalanceInProgress))]
    );
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    assert_eq!(
        c.heartbeat(16_011, &heartbeat(&a, generation)),
        ErrorCode::UnknownMemberId
    );
    // b was told to rejoin and gets a full session to do so, although its
    // last sign of life (the sync at 6_100) is more than a session ago.
    assert!(c.tick(16_200).is_empty());
    let joins = join_responses(&c.join_group(16_300, 11, join(&b, "b")));
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1.error, ErrorCode::None);
    assert_eq!(joins[0].1.leader, b);
    assert_eq!(joins[0].1.generation_id, generation + 1);
}

/// KIP-134: the initial delay is extended while members keep arriving, but
/// never beyond the rebalance timeout.
#[test]
fn initial_delay_extensions_stop_at_the_rebalance_timeout() {
    let mut c = coordinator();
    let short = |member_id: &str, client: &str| JoinRequest {
        rebalance_timeout_ms: 5_000,
        ..join(member_id, client)
    };
    let a = member_id_for(&mut c, 0, 1, "a");
    c.join_group(0, 2, short(&a, "a"));
    let b = member_id_for(&mut c, 1_000, 3, "b");
    c.join_group(1_000, 4, short(&b, "b"));
    // b arrived during the first 3 s: extended by what is left, 2 s.
    assert!(join_responses(&c.tick(3_000)).is_empty());
    assert_eq!(c.next_deadline_ms(), Some(5_000));
    let d = member_id_for(&mut c, 4_000, 5, "d");
    c.join_group(4_000, 6, short(&d, "d"));
    assert!(join_responses(&c.tick(4_999)).is_empty());
    // d arrived too, but the rebalance timeout is used up.
    let joins = join_responses(&c.tick(5_000));
    assert_eq!(joins.len(), 3, "{joins:?}");
    assert_eq!(c.group_state(GROUP), Some(GroupState::CompletingRebalance));
}

#[test]
fn initial_delay_without_new_members_completes_once() {
    let mut c = coordinator();
    let a = member_id_for(&mut c, 0, 1, "a");
    c.join_group(100, 2, join(&a, "a"));
    // Nobody else arrived: no extension.
    assert!(join_responses(&c.tick(3_099)).is_empty());
    let joins = join_responses(&c.tick(3_100));
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1.generation_id, 1);
}
