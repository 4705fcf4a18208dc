//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup, with Kafka's error codes
//! and checks in Kafka's order (`GroupCoordinator.scala`, classic protocol).

use bytes::Bytes;
use skiff_protocol::ErrorCode;

use super::group::{Group, Member};
use super::rebalance;
use super::state::GroupCoordinator;
use super::types::{
    GroupState, HeartbeatRequest, JoinRequest, JoinResponse, LeaveResponse, LeavingMember, Output,
    ReplyId, SyncRequest, SyncResponse,
};

/// Client ids are cut to this many bytes in member ids, so a member id
/// always fits a Kafka `string`.
const MEMBER_ID_CLIENT_PREFIX_BYTES_MAX: usize = 255;

fn join_error(reply: ReplyId, error: ErrorCode, member_id: &str) -> Vec<Output> {
    vec![Output::Join {
        reply,
        response: JoinResponse::error(error, member_id),
    }]
}

fn sync_error(reply: ReplyId, error: ErrorCode) -> Vec<Output> {
    vec![Output::Sync {
        reply,
        response: SyncResponse::error(error),
    }]
}

fn new_member(request: &JoinRequest, member_id: String, reply: ReplyId, now_ms: i64) -> Member {
    Member {
        member_id,
        group_instance_id: request.group_instance_id.clone(),
        client_id: request.client_id.clone(),
        client_host: request.client_host.clone(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        protocol_type: request.protocol_type.clone(),
        protocols: request.protocols.clone(),
        assignment: Bytes::new(),
        pending_join: Some(reply),
        pending_sync: None,
        session_deadline_ms: now_ms + i64::from(request.session_timeout_ms),
    }
}

/// Records a rejoin's protocols and timeouts and parks its JoinGroup. A
/// JoinGroup the member had parked already is superseded (its client gave
/// up on it) and answered REBALANCE_IN_PROGRESS so no request leaks.
fn update_member(
    member: &mut Member,
    request: &JoinRequest,
    reply: ReplyId,
    out: &mut Vec<Output>,
) {
    if let Some(old) = member.pending_join.replace(reply) {
        out.push(Output::Join {
            reply: old,
            response: JoinResponse::error(ErrorCode::RebalanceInProgress, &member.member_id),
        });
    }
    member.protocols = request.protocols.clone();
    member.session_timeout_ms = request.session_timeout_ms;
    member.rebalance_timeout_ms = request.rebalance_timeout_ms;
}

/// The JoinGroup answer for a member of a group that is not rebalancing.
fn current_generation(group: &Group, member_id: &str, skip_assignment: bool) -> JoinResponse {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members = if group.is_leader(member_id) {
        group
            .members
            .iter()
            .map(|m| super::types::JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(&protocol).cloned().unwrap_or_default(),
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinResponse {
        error: ErrorCode::None,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader_id.clone().unwrap_or_default(),
        skip_assignment,
        member_id: member_id.to_owned(),
        members,
    }
}

impl GroupCoordinator {
    fn new_member_id(&mut self, request: &JoinRequest) -> String {
        let prefix = request
            .group_instance_id
            .as_deref()
            .unwrap_or(&request.client_id);
        let mut end = prefix.len().min(MEMBER_ID_CLIENT_PREFIX_BYTES_MAX);
        while !prefix.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}-{}", &prefix[..end], self.ids.next_id())
    }

    /// JoinGroup. The response for `reply` is among the returned outputs now
    /// or in those of a later call (another member's join, a leave, `tick`).
    pub fn join_group(&mut self, now_ms: i64, reply: ReplyId, request: JoinRequest) -> Vec<Output> {
        if let Err(error) = self.check_group_id(&request.group_id, false) {
            return join_error(reply, error, &request.member_id);
        }
        let timeout = request.session_timeout_ms;
        if timeout < self.config.session_timeout_min_ms
            || timeout > self.config.session_timeout_max_ms
        {
            return join_error(reply, ErrorCode::InvalidSessionTimeout, &request.member_id);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return join_error(
                reply,
                ErrorCode::InconsistentGroupProtocol,
                &request.member_id,
            );
        }
        let known_member = !request.member_id.is_empty();
        if known_member && !self.groups.contains_key(&request.group_id) {
            return join_error(reply, ErrorCode::UnknownMemberId, &request.member_id);
        }
        let group = self
            .groups
            .entry(request.group_id.clone())
            .or_insert_with(|| Group::new(&request.group_id, now_ms));
        if group.state == GroupState::Dead {
            return join_error(
                reply,
                ErrorCode::CoordinatorNotAvailable,
                &request.member_id,
            );
        }
        if !group.supports_protocols(&request.protocol_type, &request.protocols) {
            return join_error(
                reply,
                ErrorCode::InconsistentGroupProtocol,
                &request.member_id,
            );
        }
        if known_member {
            self.join_known(now_ms, reply, request)
        } else {
            self.join_unknown(now_ms, reply, request)
        }
    }

    fn join_unknown(&mut self, now_ms: i64, reply: ReplyId, request: JoinRequest) -> Vec<Output> {
        let member_id = self.new_member_id(&request);
        let partition = self.partition_for(&request.group_id);
        let config = &self.config;
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return join_error(reply, ErrorCode::UnknownMemberId, &request.member_id);
        };
        let mut out = Vec::new();
        if let Some(instance_id) = request.group_instance_id.as_deref() {
            if let Some(old_id) = group.static_member_id(instance_id).map(str::to_owned) {
                replace_static_member(
                    group, config, partition, &old_id, member_id, reply, &request, now_ms, &mut out,
                );
                return out;
            }
        } else if request.require_known_member_id {
            let deadline_ms = now_ms + i64::from(request.session_timeout_ms);
            group.pending_members.insert(member_id.clone(), deadline_ms);
            return join_error(reply, ErrorCode::MemberIdRequired, &member_id);
        }
        if group.members.len() >= config.group_members_max {
            return join_error(reply, ErrorCode::GroupMaxSizeReached, "");
        }
        let member = new_member(&request, member_id, reply, now_ms);
        rebalance::add_member(group, config, partition, member, now_ms, &mut out);
        out
    }

    fn join_known(&mut self, now_ms: i64, reply: ReplyId, request: JoinRequest) -> Vec<Output> {
        let partition = self.partition_for(&request.group_id);
        let config = &self.config;
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return join_error(reply, ErrorCode::UnknownMemberId, &request.member_id);
        };
        let member_id = request.member_id.clone();
        let mut out = Vec::new();
        if group.pending_members.contains_key(&member_id) {
            if group.members.len() >= config.group_members_max {
                // The others may be waiting for this member alone.
                group.pending_members.remove(&member_id);
                rebalance::try_complete_join(group, partition, now_ms, &mut out);
                out.extend(join_error(
                    reply,
                    ErrorCode::GroupMaxSizeReached,
                    &member_id,
                ));
                return out;
            }
            let member = new_member(&request, member_id, reply, now_ms);
            rebalance::add_member(group, config, partition, member, now_ms, &mut out);
            return out;
        }
        if group.is_static_member_fenced(request.group_instance_id.as_deref(), &member_id) {
            return join_error(reply, ErrorCode::FencedInstanceId, &member_id);
        }
        let state = group.state;
        let is_leader = group.is_leader(&member_id);
        let Some(member) = group.member_mut(&member_id) else {
            return join_error(reply, ErrorCode::UnknownMemberId, &member_id);
        };
        let unchanged = member.protocols == request.protocols;
        match state {
            GroupState::PreparingRebalance => {
                update_member(member, &request, reply, &mut out);
                rebalance::try_complete_join(group, partition, now_ms, &mut out);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && !(state == GroupState::Stable && is_leader) =>
            {
                // A retried JoinGroup (its response was lost): answer with the
                // current generation rather than rebalance everyone.
                member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                out.push(Output::Join {
                    reply,
                    response: current_generation(group, &member_id, false),
                });
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                update_member(member, &request, reply, &mut out);
                rebalance::prepare(group, config, now_ms, &mut out);
                rebalance::try_complete_join(group, partition, now_ms, &mut out);
            }
            GroupState::Empty | GroupState::Dead => {
                return join_error(reply, ErrorCode::UnknownMemberId, &member_id);
            }
        }
        out
    }

    /// SyncGroup. The response for `reply` is among the returned outputs now
    /// or when the leader's SyncGroup arrives (or the rebalance restarts).
    pub fn sync_group(&mut self, now_ms: i64, reply: ReplyId, request: SyncRequest) -> Vec<Output> {
        if let Err(error) = self.check_group_id(&request.group_id, false) {
            return sync_error(reply, error);
        }
        let partition = self.partition_for(&request.group_id);
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return sync_error(reply, ErrorCode::UnknownMemberId);
        };
        if group.state == GroupState::Dead {
            return sync_error(reply, ErrorCode::CoordinatorNotAvailable);
        }
        if group.is_static_member_fenced(request.group_instance_id.as_deref(), &request.member_id) {
            return sync_error(reply, ErrorCode::FencedInstanceId);
        }
        if !group.has_member(&request.member_id) {
            return sync_error(reply, ErrorCode::UnknownMemberId);
        }
        if request.generation_id != group.generation_id {
            return sync_error(reply, ErrorCode::IllegalGeneration);
        }
        let type_mismatch = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_ref() != Some(t));
        let name_mismatch = request
            .protocol_name
            .as_ref()
            .is_some_and(|n| group.protocol_name.as_ref() != Some(n));
        if type_mismatch || name_mismatch {
            return sync_error(reply, ErrorCode::InconsistentGroupProtocol);
        }
        let mut out = Vec::new();
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                return sync_error(reply, ErrorCode::UnknownMemberId)
            }
            GroupState::PreparingRebalance => {
                return sync_error(reply, ErrorCode::RebalanceInProgress)
            }
            GroupState::Stable => {
                let protocol_type = group.protocol_type.clone();
                let protocol_name = group.protocol_name.clone();
                if let Some(member) = group.member_mut(&request.member_id) {
                    member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                    out.push(Output::Sync {
                        reply,
                        response: SyncResponse {
                            error: ErrorCode::None,
                            protocol_type,
                            protocol_name,
                            assignment: member.assignment.clone(),
                        },
                    });
                }
            }
            GroupState::CompletingRebalance => {
                if let Some(member) = group.member_mut(&request.member_id) {
                    member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                    if let Some(old) = member.pending_sync.replace(reply) {
                        out.push(Output::Sync {
                            reply: old,
                            response: SyncResponse::error(ErrorCode::RebalanceInProgress),
                        });
                    }
                }
                if group.is_leader(&request.member_id) {
                    complete_sync(group, partition, request.assignments, now_ms, &mut out);
                }
            }
        }
        out
    }

    /// Heartbeat: keeps a member alive and tells it whether to rejoin.
    pub fn heartbeat(&mut self, now_ms: i64, request: &HeartbeatRequest) -> ErrorCode {
        if let Err(error) = self.check_group_id(&request.group_id, false) {
            return error;
        }
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if group.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        if group.is_static_member_fenced(request.group_instance_id.as_deref(), &request.member_id) {
            return ErrorCode::FencedInstanceId;
        }
        let generation_id = group.generation_id;
        let state = group.state;
        let Some(member) = group.member_mut(&request.member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if request.generation_id != generation_id {
            return ErrorCode::IllegalGeneration;
        }
        member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        match state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::Empty | GroupState::Dead => ErrorCode::UnknownMemberId,
            GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::None,
        }
    }

    /// LeaveGroup, one or many members (v3+). An empty `member_id` with a
    /// `group_instance_id` removes whichever member holds that instance.
    pub fn leave_group(
        &mut self,
        now_ms: i64,
        group_id: &str,
        members: &[LeavingMember],
    ) -> (LeaveResponse, Vec<Output>) {
        let mut out = Vec::new();
        let fail = |error| {
            (
                LeaveResponse {
                    error,
                    members: Vec::new(),
                },
                Vec::new(),
            )
        };
        if let Err(error) = self.check_group_id(group_id, false) {
            return fail(error);
        }
        let partition = self.partition_for(group_id);
        let config = &self.config;
        let Some(group) = self.groups.get_mut(group_id) else {
            // Kafka answers NONE with each member unknown (so v0-2 see
            // UNKNOWN_MEMBER_ID, v3+ per member).
            let members = members
                .iter()
                .map(|m| {
                    let instance = m.group_instance_id.clone();
                    (m.member_id.clone(), instance, ErrorCode::UnknownMemberId)
                })
                .collect();
            let response = LeaveResponse {
                error: ErrorCode::None,
                members,
            };
            return (response, out);
        };
        if group.state == GroupState::Dead {
            return fail(ErrorCode::CoordinatorNotAvailable);
        }
        let mut results = Vec::with_capacity(members.len());
        for leaving in members {
            let target = match leaving.group_instance_id.as_deref() {
                Some(instance_id) => match group.static_member_id(instance_id) {
                    None => Err(ErrorCode::UnknownMemberId),
                    Some(current)
                        if !leaving.member_id.is_empty() && current != leaving.member_id =>
                    {
                        Err(ErrorCode::FencedInstanceId)
                    }
                    Some(current) => Ok(current.to_owned()),
                },
                None if group.pending_members.remove(&leaving.member_id).is_some() => {
                    rebalance::try_complete_join(group, partition, now_ms, &mut out);
                    Err(ErrorCode::None)
                }
                None if group.has_member(&leaving.member_id) => Ok(leaving.member_id.clone()),
                None => Err(ErrorCode::UnknownMemberId),
            };
            let error = match target {
                Ok(member_id) => {
                    rebalance::remove_member(
                        group, config, partition, &member_id, now_ms, &mut out,
                    );
                    ErrorCode::None
                }
                Err(error) => error,
            };
            results.push((
                leaving.member_id.clone(),
                leaving.group_instance_id.clone(),
                error,
            ));
        }
        let response = LeaveResponse {
            error: ErrorCode::None,
            members: results,
        };
        (response, out)
    }
}

/// The leader's SyncGroup: store the assignment, persist the group, answer
/// every parked SyncGroup, become Stable.
fn complete_sync(
    group: &mut Group,
    partition: i32,
    assignments: Vec<(String, Bytes)>,
    now_ms: i64,
    out: &mut Vec<Output>,
) {
    for member in &mut group.members {
        // Members the leader left out get an empty assignment, as in Kafka.
        member.assignment = assignments
            .iter()
            .find(|(id, _)| *id == member.member_id)
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
    }
    group.transition(GroupState::Stable, now_ms);
    out.push(rebalance::persist(group, partition));
    let protocol_type = group.protocol_type.clone();
    let protocol_name = group.protocol_name.clone();
    for member in &mut group.members {
        if let Some(reply) = member.pending_sync.take() {
            // As in Kafka: a parked member could not heartbeat, so its
            // session starts afresh once it has its answer.
            member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
            out.push(Output::Sync {
                reply,
                response: SyncResponse {
                    error: ErrorCode::None,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: member.assignment.clone(),
                },
            });
        }
    }
}

/// A static member restarted (joined with an empty member id and a known
/// `group.instance.id`): it takes over the old member's place and, in a
/// Stable group whose protocol does not change, its assignment — without
/// a rebalance. The old member id is fenced.
#[allow(clippy::too_many_arguments)]
fn replace_static_member(
    group: &mut Group,
    config: &super::types::CoordinatorConfig,
    partition: i32,
    old_id: &str,
    new_id: String,
    reply: ReplyId,
    request: &JoinRequest,
    now_ms: i64,
    out: &mut Vec<Output>,
) {
    let Some(member) = group.member_mut(old_id) else {
        return;
    };
    rebalance::answer_parked(member, ErrorCode::FencedInstanceId, out);
    member.pending_join = None;
    member.pending_sync = None;
    member.member_id = new_id.clone();
    member.client_id = request.client_id.clone();
    member.client_host = request.client_host.clone();
    member.session_deadline_ms = now_ms + i64::from(request.session_timeout_ms);
    member.protocols = request.protocols.clone();
    member.session_timeout_ms = request.session_timeout_ms;
    member.rebalance_timeout_ms = request.rebalance_timeout_ms;
    if group.leader_id.as_deref() == Some(old_id) {
        group.leader_id = Some(new_id.clone());
    }
    match group.state {
        GroupState::Stable if group.select_protocol() == group.protocol_name => {
            out.push(rebalance::persist(group, partition));
            let is_leader = group.is_leader(&new_id);
            out.push(Output::Join {
                reply,
                response: current_generation(group, &new_id, is_leader),
            });
        }
        GroupState::PreparingRebalance => {
            if let Some(member) = group.member_mut(&new_id) {
                member.pending_join = Some(reply);
            }
            rebalance::try_complete_join(group, partition, now_ms, out);
        }
        _ => {
            // CompletingRebalance: the leader may be assigning to the old id,
            // so start over; Stable with a protocol change likewise.
            if let Some(member) = group.member_mut(&new_id) {
                member.pending_join = Some(reply);
            }
            rebalance::prepare(group, config, now_ms, out);
            rebalance::try_complete_join(group, partition, now_ms, out);
        }
    }
}
