//! The rebalance transitions of one group, as free functions over a
//! [`Group`] so that the request handlers (`membership.rs`) and the timer
//! (`GroupCoordinator::tick`) share them.
//!
//! ```text
//!            join (first member)           all joined / rebalance timeout
//!   Empty ──────────────────────▶ Preparing ─────────────────────────▶ Completing
//!     ▲                           Rebalance ◀───┐                      Rebalance
//!     │ all members gone            │  ▲        │ join, leave,            │
//!     └─────────────────────────────┘  │        │ session expiry          │ leader's
//!                                      │        │                         │ SyncGroup
//!                                      └──── Stable ◀─────────────────────┘
//! ```
//!
//! Every transition out of CompletingRebalance answers parked SyncGroups
//! with REBALANCE_IN_PROGRESS; completing a join answers every parked
//! JoinGroup, the leader's with the members' metadata.

use bytes::Bytes;
use skiff_protocol::ErrorCode;

use super::group::{Group, InitialDelay, JoinTimer, Member};
use super::records::{GroupMetadata, MemberMetadata, OffsetsRecord};
use super::types::{CoordinatorConfig, GroupState, JoinMember, JoinResponse, Output, SyncResponse};

/// Starts a rebalance: every member must rejoin before the join completes.
pub fn prepare(group: &mut Group, config: &CoordinatorConfig, now_ms: i64, out: &mut Vec<Output>) {
    if group.state == GroupState::CompletingRebalance {
        for member in &mut group.members {
            member.assignment = Bytes::new();
            if let Some(reply) = member.pending_sync.take() {
                // It could not heartbeat while parked: give it a full
                // session to rejoin, as Kafka does.
                member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                out.push(Output::Sync {
                    reply,
                    response: SyncResponse::error(ErrorCode::RebalanceInProgress),
                });
            }
        }
    }
    let rebalance_timeout_ms = group.rebalance_timeout_ms();
    group.join_timer = Some(
        if group.state == GroupState::Empty && config.initial_rebalance_delay_ms > 0 {
            let delay_ms = config.initial_rebalance_delay_ms.min(rebalance_timeout_ms);
            JoinTimer {
                deadline_ms: now_ms + delay_ms,
                initial: Some(InitialDelay {
                    remaining_ms: (rebalance_timeout_ms - delay_ms).max(0),
                    member_added: false,
                }),
            }
        } else {
            JoinTimer {
                deadline_ms: now_ms + rebalance_timeout_ms,
                initial: None,
            }
        },
    );
    group.transition(GroupState::PreparingRebalance, now_ms);
}

/// Completes the join phase if every member has rejoined (never during the
/// initial delay, which exists to wait for more members).
pub fn try_complete_join(group: &mut Group, partition: i32, now_ms: i64, out: &mut Vec<Output>) {
    let initial = group.join_timer.is_some_and(|t| t.initial.is_some());
    if group.state == GroupState::PreparingRebalance && !initial && group.all_members_joined() {
        complete_join(group, partition, now_ms, out);
    }
}

/// Ends PreparingRebalance: members that did not rejoin are dropped, the
/// generation advances, and every parked JoinGroup is answered.
pub fn complete_join(group: &mut Group, partition: i32, now_ms: i64, out: &mut Vec<Output>) {
    assert_eq!(group.state, GroupState::PreparingRebalance);
    group.members.retain(|m| m.pending_join.is_some());
    if group
        .leader_id
        .as_deref()
        .is_some_and(|leader| !group.has_member(leader))
    {
        group.leader_id = None;
    }
    group.join_timer = None;
    group.generation_id = group.generation_id.wrapping_add(1).max(1);
    if group.members.is_empty() {
        group.protocol_name = None;
        group.leader_id = None;
        group.transition(GroupState::Empty, now_ms);
        out.push(persist(group, partition));
        return;
    }
    group.protocol_name = group.select_protocol();
    if group.leader_id.is_none() {
        group.leader_id = group.members.first().map(|m| m.member_id.clone());
    }
    group.transition(GroupState::CompletingRebalance, now_ms);
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let leader = group.leader_id.clone().unwrap_or_default();
    let all: Vec<JoinMember> = group
        .members
        .iter()
        .map(|m| JoinMember {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            metadata: m.metadata_for(&protocol).cloned().unwrap_or_default(),
        })
        .collect();
    for member in &mut group.members {
        member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        if let Some(reply) = member.pending_join.take() {
            let is_leader = member.member_id == leader;
            out.push(Output::Join {
                reply,
                response: JoinResponse {
                    error: ErrorCode::None,
                    generation_id: group.generation_id,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    leader: leader.clone(),
                    skip_assignment: false,
                    member_id: member.member_id.clone(),
                    members: if is_leader { all.clone() } else { Vec::new() },
                },
            });
        }
    }
}

/// Adds a member that joined (parked on `member.pending_join`) and starts or
/// continues a rebalance.
pub fn add_member(
    group: &mut Group,
    config: &CoordinatorConfig,
    partition: i32,
    member: Member,
    now_ms: i64,
    out: &mut Vec<Output>,
) {
    if group.members.is_empty() {
        group.protocol_type = Some(member.protocol_type.clone());
    }
    if group.leader_id.is_none() {
        group.leader_id = Some(member.member_id.clone());
    }
    group.pending_members.remove(&member.member_id);
    if let Some(JoinTimer {
        initial: Some(initial),
        ..
    }) = &mut group.join_timer
    {
        initial.member_added = true;
    }
    group.members.push(member);
    if group.state != GroupState::PreparingRebalance {
        prepare(group, config, now_ms, out);
    }
    try_complete_join(group, partition, now_ms, out);
}

/// Removes a member (it left, or its session expired); its parked requests
/// are answered UNKNOWN_MEMBER_ID and the rest of the group rebalances.
pub fn remove_member(
    group: &mut Group,
    config: &CoordinatorConfig,
    partition: i32,
    member_id: &str,
    now_ms: i64,
    out: &mut Vec<Output>,
) {
    let Some(index) = group.members.iter().position(|m| m.member_id == member_id) else {
        return;
    };
    let member = group.members.remove(index);
    answer_parked(&member, ErrorCode::UnknownMemberId, out);
    if group.is_leader(member_id) {
        group.leader_id = group.members.first().map(|m| m.member_id.clone());
    }
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare(group, config, now_ms, out);
            try_complete_join(group, partition, now_ms, out);
        }
        GroupState::PreparingRebalance => try_complete_join(group, partition, now_ms, out),
        GroupState::Empty | GroupState::Dead => {}
    }
}

/// Answers a member's parked requests with `error`.
pub fn answer_parked(member: &Member, error: ErrorCode, out: &mut Vec<Output>) {
    if let Some(reply) = member.pending_join {
        out.push(Output::Join {
            reply,
            response: JoinResponse::error(error, &member.member_id),
        });
    }
    if let Some(reply) = member.pending_sync {
        out.push(Output::Sync {
            reply,
            response: SyncResponse::error(error),
        });
    }
}

/// Answers every parked request of the group with `error` (the group moved
/// away or was unloaded).
pub fn fail_parked(group: &mut Group, error: ErrorCode, out: &mut Vec<Output>) {
    for member in &mut group.members {
        answer_parked(member, error, out);
        member.pending_join = None;
        member.pending_sync = None;
    }
}

/// Fires the deadlines of one group that are due at `now_ms`.
pub fn expire(
    group: &mut Group,
    config: &CoordinatorConfig,
    partition: i32,
    now_ms: i64,
    out: &mut Vec<Output>,
) {
    let before = group.pending_members.len();
    group
        .pending_members
        .retain(|_, deadline_ms| *deadline_ms > now_ms);
    if group.pending_members.len() != before {
        try_complete_join(group, partition, now_ms, out);
    }
    let expired: Vec<String> = group
        .members
        .iter()
        .filter(|m| !m.is_kept_alive() && m.session_deadline_ms <= now_ms)
        .map(|m| m.member_id.clone())
        .collect();
    for member_id in expired {
        remove_member(group, config, partition, &member_id, now_ms, out);
    }
    let Some(timer) = group.join_timer else {
        return;
    };
    if group.state != GroupState::PreparingRebalance || timer.deadline_ms > now_ms {
        return;
    }
    match timer.initial {
        Some(initial) if initial.member_added && initial.remaining_ms > 0 => {
            let delay_ms = config.initial_rebalance_delay_ms.min(initial.remaining_ms);
            group.join_timer = Some(JoinTimer {
                deadline_ms: now_ms + delay_ms,
                initial: Some(InitialDelay {
                    remaining_ms: initial.remaining_ms - delay_ms,
                    member_added: false,
                }),
            });
        }
        _ => complete_join(group, partition, now_ms, out),
    }
}

/// The group's earliest deadline: a pending member forgotten, a session
/// expiring, or the join phase ending.
pub fn next_deadline_ms(group: &Group) -> Option<i64> {
    let pending = group.pending_members.values().copied();
    let sessions = group
        .members
        .iter()
        .filter(|m| !m.is_kept_alive())
        .map(|m| m.session_deadline_ms);
    let join = group
        .join_timer
        .filter(|_| group.state == GroupState::PreparingRebalance)
        .map(|t| t.deadline_ms);
    pending.chain(sessions).chain(join).min()
}

/// The GroupMetadata record for the group's current state.
pub fn group_record(group: &Group) -> OffsetsRecord {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    OffsetsRecord::Group {
        group_id: group.group_id.clone(),
        value: Some(GroupMetadata {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            generation_id: group.generation_id,
            protocol_name: group.protocol_name.clone(),
            leader_id: group.leader_id.clone(),
            current_state_timestamp_ms: group.state_since_ms,
            members: group
                .members
                .iter()
                .map(|m| MemberMetadata {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol).cloned().unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }),
    }
}

pub fn persist(group: &Group, partition: i32) -> Output {
    Output::Persist {
        group_id: group.group_id.clone(),
        partition,
        records: vec![group_record(group)],
    }
}
