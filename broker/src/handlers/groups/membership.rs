//! JoinGroup (v0–9), SyncGroup (v0–5), Heartbeat (v0–4) and LeaveGroup
//! (v0–5, batched members from v3).

use std::sync::Arc;

use futures::future::BoxFuture;
use skiff_protocol::api::messages::join_group_response::JoinGroupResponseMember;
use skiff_protocol::api::messages::leave_group_response::MemberResponse;
use skiff_protocol::api::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use skiff_protocol::ErrorCode;

use super::opt_string;
use crate::broker::Broker;
use crate::coordinator::{self, JoinResponse, LeavingMember, Protocol, SyncResponse};
use crate::handlers::str_bytes;

fn join_response(version: i16, answer: JoinResponse) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = answer.error.code();
    response.generation_id = answer.generation_id;
    // v0–6 carry a non-nullable protocol name; v7+ may send null.
    let name_default = (version < 7).then(|| str_bytes(""));
    response.protocol_name = answer.protocol_name.map(str_bytes).or(name_default);
    response.protocol_type = answer.protocol_type.map(str_bytes);
    response.leader = str_bytes(answer.leader);
    // KIP-814's flag exists from v9; an older static leader that rejoined
    // without a rebalance recomputes the same assignment instead.
    response.skip_assignment = version >= 9 && answer.skip_assignment;
    response.member_id = str_bytes(answer.member_id);
    response.members = answer
        .members
        .into_iter()
        .map(|m| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = str_bytes(m.member_id);
            member.group_instance_id = m.group_instance_id.map(str_bytes);
            member.metadata = m.metadata;
            member
        })
        .collect();
    response
}

/// JoinGroup: parked until the rebalance completes.
pub fn join(
    broker: &Arc<Broker>,
    version: i16,
    client_id: &str,
    client_host: String,
    request: JoinGroupRequest,
) -> BoxFuture<'static, JoinGroupResponse> {
    let member_id = request.member_id.as_str().to_owned();
    if let Err(error) = broker.groups.ensure_topic(&broker.topics) {
        let answer = JoinResponse::error(error, &member_id);
        return Box::pin(async move { join_response(version, answer) });
    }
    let join = coordinator::JoinRequest {
        group_id: request.group_id.0.as_str().to_owned(),
        member_id,
        group_instance_id: opt_string(request.group_instance_id),
        client_id: client_id.to_owned(),
        client_host,
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.as_str().to_owned(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name.as_str().to_owned(),
                metadata: p.metadata,
            })
            .collect(),
        require_known_member_id: version >= 4,
    };
    let member_id = join.member_id.clone();
    let rx = broker.groups.join(join);
    Box::pin(async move {
        let answer = rx.await.unwrap_or_else(|_| {
            JoinResponse::error(ErrorCode::CoordinatorNotAvailable, &member_id)
        });
        join_response(version, answer)
    })
}

fn sync_response(answer: SyncResponse) -> SyncGroupResponse {
    let mut response = SyncGroupResponse::default();
    response.error_code = answer.error.code();
    response.protocol_type = answer.protocol_type.map(str_bytes);
    response.protocol_name = answer.protocol_name.map(str_bytes);
    response.assignment = answer.assignment;
    response
}

/// SyncGroup: parked until the leader's assignment is stored.
pub fn sync(
    broker: &Arc<Broker>,
    version: i16,
    request: SyncGroupRequest,
) -> BoxFuture<'static, SyncGroupResponse> {
    if let Err(error) = broker.groups.ensure_topic(&broker.topics) {
        return Box::pin(async move { sync_response(SyncResponse::error(error)) });
    }
    let sync = coordinator::SyncRequest {
        group_id: request.group_id.0.as_str().to_owned(),
        member_id: request.member_id.as_str().to_owned(),
        generation_id: request.generation_id,
        group_instance_id: opt_string(request.group_instance_id),
        protocol_type: if version >= 5 {
            opt_string(request.protocol_type)
        } else {
            None
        },
        protocol_name: if version >= 5 {
            opt_string(request.protocol_name)
        } else {
            None
        },
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.as_str().to_owned(), a.assignment))
            .collect(),
    };
    let rx = broker.groups.sync(sync);
    Box::pin(async move {
        let answer = rx
            .await
            .unwrap_or_else(|_| SyncResponse::error(ErrorCode::CoordinatorNotAvailable));
        sync_response(answer)
    })
}

pub fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    let mut response = HeartbeatResponse::default();
    if let Err(error) = broker.groups.ensure_topic(&broker.topics) {
        response.error_code = error.code();
        return response;
    }
    let heartbeat = coordinator::HeartbeatRequest {
        group_id: request.group_id.0.as_str().to_owned(),
        member_id: request.member_id.as_str().to_owned(),
        generation_id: request.generation_id,
        group_instance_id: opt_string(request.group_instance_id),
    };
    response.error_code = broker.groups.heartbeat(&heartbeat).code();
    response
}

pub fn leave(broker: &Arc<Broker>, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let mut response = LeaveGroupResponse::default();
    if let Err(error) = broker.groups.ensure_topic(&broker.topics) {
        response.error_code = error.code();
        return response;
    }
    let members: Vec<LeavingMember> = if version >= 3 {
        request
            .members
            .into_iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.as_str().to_owned(),
                group_instance_id: opt_string(m.group_instance_id),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: request.member_id.as_str().to_owned(),
            group_instance_id: None,
        }]
    };
    let answer = broker.groups.leave(request.group_id.0.as_str(), &members);
    if version >= 3 {
        response.error_code = answer.error.code();
        response.members = answer
            .members
            .into_iter()
            .map(|(member_id, group_instance_id, error)| {
                let mut member = MemberResponse::default();
                member.member_id = str_bytes(member_id);
                member.group_instance_id = group_instance_id.map(str_bytes);
                member.error_code = error.code();
                member
            })
            .collect();
    } else {
        // One member: its error is the response's, as in Kafka.
        let member_error = answer.members.first().map_or(ErrorCode::None, |m| m.2);
        let error = if answer.error.is_ok() {
            member_error
        } else {
            answer.error
        };
        response.error_code = error.code();
    }
    response
}
