//! Consumer group APIs, answered by the group coordinator
//! ([`crate::group_runtime`]): FindCoordinator here, the membership APIs in
//! [`membership`], offsets in [`offsets`], and ListGroups, DescribeGroups
//! and DeleteGroups in [`admin`].
//!
//! This single node coordinates every group. `__consumer_offsets` is
//! created by the first group request that needs it.

pub mod admin;
pub mod membership;
pub mod offsets;

use std::sync::Arc;

use skiff_protocol::api::messages::find_coordinator_response::Coordinator;
use skiff_protocol::api::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use skiff_protocol::api::StrBytes;
use skiff_protocol::ErrorCode;

use super::str_bytes;
use crate::broker::Broker;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The coordinator for one key: this node for groups.
fn coordinator_for(broker: &Broker, key_type: i8) -> (ErrorCode, Option<&'static str>) {
    match key_type {
        KEY_TYPE_GROUP => match broker.groups.ensure_topic(&broker.topics) {
            Ok(()) => (ErrorCode::None, None),
            Err(error) => (error, Some("the offsets topic is not available")),
        },
        KEY_TYPE_TRANSACTION => (
            ErrorCode::CoordinatorNotAvailable,
            Some("transactions are not supported"),
        ),
        _ => (
            ErrorCode::InvalidRequest,
            Some("unknown coordinator key type"),
        ),
    }
}

/// FindCoordinator (key 10), v0–v4; v4 batches keys (KIP-699).
pub fn find_coordinator(
    broker: &Arc<Broker>,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let key_type = if version >= 1 {
        request.key_type
    } else {
        KEY_TYPE_GROUP
    };
    let node = BrokerId(broker.config.node_id);
    let host = str_bytes(broker.advertised_host.clone());
    let port = broker.advertised_port;
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (error, message) = coordinator_for(broker, key_type);
                let mut c = Coordinator::default();
                c.key = key;
                c.error_code = error.code();
                c.error_message = message.map(StrBytes::from_static_str);
                if error.is_ok() {
                    c.node_id = node;
                    c.host = host.clone();
                    c.port = port;
                } else {
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                }
                c
            })
            .collect();
        return response;
    }
    let (error, message) = coordinator_for(broker, key_type);
    response.error_code = error.code();
    response.error_message = message.map(StrBytes::from_static_str);
    if error.is_ok() {
        response.node_id = node;
        response.host = host;
        response.port = port;
    } else {
        response.node_id = BrokerId(-1);
        response.port = -1;
    }
    response
}

/// An optional string field as an owned `String`.
fn opt_string(value: Option<StrBytes>) -> Option<String> {
    value.map(|s| s.as_str().to_owned())
}
