//! OffsetCommit validation and application, and OffsetFetch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skiff_protocol::ErrorCode;

use super::tests_membership::{coordinator, stable_group, GROUP};
use super::*;

fn commit(group_id: &str, generation_id: i32, member_id: &str, offset: i64) -> CommitRequest {
    CommitRequest {
        group_id: group_id.to_owned(),
        generation_id,
        member_id: member_id.to_owned(),
        group_instance_id: None,
        topics: vec![(
            "t".to_owned(),
            vec![
                CommitPartition {
                    partition: 0,
                    offset,
                    leader_epoch: 3,
                    metadata: Some("m".to_owned()),
                },
                CommitPartition {
                    partition: 1,
                    offset: offset + 100,
                    leader_epoch: -1,
                    metadata: None,
                },
            ],
        )],
    }
}

fn errors(pending: &PendingCommit) -> Vec<ErrorCode> {
    pending
        .results
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|(_, e)| *e))
        .collect()
}

fn fetch_one(c: &GroupCoordinator, group_id: &str, partition: i32) -> Option<CommittedOffset> {
    let topics = vec![("t".to_owned(), vec![partition])];
    let fetched = c.offset_fetch(group_id, Some(&topics)).unwrap();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].1.len(), 1);
    assert_eq!(fetched[0].1[0].0, partition);
    fetched[0].1[0].1.clone()
}

#[test]
fn commit_with_current_generation_applies_and_fetch_returns_it() {
    let mut c = coordinator();
    let (leader, _follower, generation) = stable_group(&mut c);
    let pending = c.offset_commit(7_000, &commit(GROUP, generation, &leader, 42));
    assert_eq!(errors(&pending), vec![ErrorCode::None, ErrorCode::None]);
    assert_eq!(pending.partition, c.partition_for(GROUP));
    assert_eq!(pending.records.len(), 2);
    // Validation alone changes nothing: memory never runs ahead of the log.
    assert_eq!(fetch_one(&c, GROUP, 0), None);
    c.complete_commit(7_000, &pending);
    assert_eq!(
        fetch_one(&c, GROUP, 0),
        Some(CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".to_owned(),
            commit_timestamp_ms: 7_000,
        })
    );
    assert_eq!(fetch_one(&c, GROUP, 1).map(|o| o.offset), Some(142));
    assert_eq!(
        fetch_one(&c, GROUP, 1).map(|o| o.metadata),
        Some(String::new())
    );
    assert_eq!(fetch_one(&c, GROUP, 7), None);
    // Fetch of all topics lists both partitions.
    let all = c.offset_fetch(GROUP, None).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, "t");
    let partitions: Vec<i32> = all[0].1.iter().map(|(p, _)| *p).collect();
    assert_eq!(partitions, vec![0, 1]);
}

#[test]
fn commit_with_stale_generation_is_illegal_generation() {
    let mut c = coordinator();
    let (leader, _follower, generation) = stable_group(&mut c);
    let pending = c.offset_commit(7_000, &commit(GROUP, generation - 1, &leader, 1));
    assert_eq!(
        errors(&pending),
        vec![ErrorCode::IllegalGeneration, ErrorCode::IllegalGeneration]
    );
    assert!(pending.records.is_empty());
    c.complete_commit(7_000, &pending);
    assert_eq!(fetch_one(&c, GROUP, 0), None);
}

#[test]
fn commit_from_unknown_member_is_unknown_member_id() {
    let mut c = coordinator();
    let (_leader, _follower, generation) = stable_group(&mut c);
    let pending = c.offset_commit(7_000, &commit(GROUP, generation, "stranger", 1));
    assert_eq!(
        errors(&pending),
        vec![ErrorCode::UnknownMemberId, ErrorCode::UnknownMemberId]
    );
    assert!(pending.records.is_empty());
}

#[test]
fn same_commit_applied_twice_leaves_same_state() {
    let mut c = coordinator();
    let (leader, _follower, generation) = stable_group(&mut c);
    let pending = c.offset_commit(7_000, &commit(GROUP, generation, &leader, 42));
    c.complete_commit(7_000, &pending);
    let once = c.offset_fetch(GROUP, None).unwrap();
    c.complete_commit(7_000, &pending);
    let twice = c.offset_fetch(GROUP, None).unwrap();
    assert_eq!(once, twice);
    assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
    assert_eq!(c.generation(GROUP), Some(generation));
}

#[test]
fn simple_commit_on_absent_or_empty_group_is_accepted() {
    let mut c = coordinator();
    let pending = c.offset_commit(100, &commit("simple", -1, "", 5));
    assert_eq!(errors(&pending), vec![ErrorCode::None, ErrorCode::None]);
    c.complete_commit(100, &pending);
    assert_eq!(fetch_one(&c, "simple", 0).map(|o| o.offset), Some(5));
    assert_eq!(c.group_state("simple"), Some(GroupState::Empty));
    // A second simple commit on the now Empty group also applies.
    let pending = c.offset_commit(200, &commit("simple", -1, "", 6));
    assert_eq!(errors(&pending), vec![ErrorCode::None, ErrorCode::None]);
    c.complete_commit(200, &pending);
    assert_eq!(fetch_one(&c, "simple", 0).map(|o| o.offset), Some(6));
    // But a non-negative generation on an unknown group is refused.
    let pending = c.offset_commit(300, &commit("other", 1, "m", 6));
    assert_eq!(
        errors(&pending),
        vec![ErrorCode::IllegalGeneration, ErrorCode::IllegalGeneration]
    );
}

#[test]
fn simple_commit_on_active_group_is_refused() {
    let mut c = coordinator();
    let (_leader, _follower, _generation) = stable_group(&mut c);
    let pending = c.offset_commit(7_000, &commit(GROUP, -1, "", 5));
    assert!(errors(&pending).iter().all(|e| *e != ErrorCode::None));
}

#[test]
fn oversized_metadata_is_rejected_per_partition() {
    let mut c = coordinator();
    let mut request = commit("simple", -1, "", 5);
    request.topics[0].1[0].metadata = Some("x".repeat(c.config().offset_metadata_max_bytes + 1));
    let pending = c.offset_commit(100, &request);
    assert_eq!(
        errors(&pending),
        vec![ErrorCode::OffsetMetadataTooLarge, ErrorCode::None]
    );
    assert_eq!(pending.records.len(), 1);
    c.complete_commit(100, &pending);
    assert_eq!(fetch_one(&c, "simple", 0), None);
}

#[test]
fn requests_for_unowned_or_loading_partitions_fail() {
    let mut c = GroupCoordinator::new(
        CoordinatorConfig::default(),
        Box::new(SequentialIds::default()),
    );
    let pending = c.offset_commit(0, &commit(GROUP, -1, "", 1));
    assert_eq!(errors(&pending)[0], ErrorCode::NotCoordinator);
    assert_eq!(c.offset_fetch(GROUP, None), Err(ErrorCode::NotCoordinator));
    c.begin_loading(c.partition_for(GROUP));
    assert_eq!(
        c.offset_fetch(GROUP, None),
        Err(ErrorCode::CoordinatorLoadInProgress)
    );
    c.finish_loading(c.partition_for(GROUP));
    assert_eq!(c.offset_fetch(GROUP, None), Ok(Vec::new()));
}

#[test]
fn commit_during_rebalance_depends_on_phase() {
    let mut c = coordinator();
    let (leader, follower, generation) = stable_group(&mut c);
    // Start a rebalance by the leader rejoining with new metadata.
    let mut rejoin = JoinRequest {
        group_id: GROUP.to_owned(),
        member_id: leader.clone(),
        group_instance_id: None,
        client_id: "x".to_owned(),
        client_host: "/127.0.0.1".to_owned(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".to_owned(),
        protocols: vec![Protocol {
            name: "range".to_owned(),
            metadata: bytes::Bytes::from_static(b"changed"),
        }],
        require_known_member_id: true,
    };
    c.join_group(7_000, 50, rejoin.clone());
    assert_eq!(c.group_state(GROUP), Some(GroupState::PreparingRebalance));
    // Members commit what they consumed before giving partitions up.
    let pending = c.offset_commit(7_100, &commit(GROUP, generation, &follower, 1));
    assert_eq!(errors(&pending), vec![ErrorCode::None, ErrorCode::None]);
    rejoin.member_id = follower.clone();
    c.join_group(7_200, 51, rejoin);
    assert_eq!(c.group_state(GROUP), Some(GroupState::CompletingRebalance));
    let pending = c.offset_commit(7_300, &commit(GROUP, generation + 1, &follower, 1));
    assert_eq!(
        errors(&pending),
        vec![
            ErrorCode::RebalanceInProgress,
            ErrorCode::RebalanceInProgress
        ]
    );
}

#[test]
fn simple_group_offsets_expire_after_retention() {
    let mut c = coordinator();
    let retention_ms = c.config().offsets_retention_ms;
    let pending = c.offset_commit(1_000, &commit("simple", -1, "", 5));
    c.complete_commit(1_000, &pending);
    assert!(c.expire_offsets(1_000 + retention_ms - 1).is_empty());
    assert_eq!(fetch_one(&c, "simple", 0).map(|o| o.offset), Some(5));
    let out = c.expire_offsets(1_000 + retention_ms);
    let tombstones: Vec<&OffsetsRecord> = out
        .iter()
        .flat_map(|o| match o {
            Output::Persist { records, .. } => records.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(tombstones.contains(&&OffsetsRecord::Offset {
        group_id: "simple".to_owned(),
        topic: "t".to_owned(),
        partition: 0,
        value: None,
    }));
    assert_eq!(fetch_one(&c, "simple", 0), None);
}
