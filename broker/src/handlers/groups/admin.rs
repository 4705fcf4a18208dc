//! ListGroups (v0–4, states filter from v4), DescribeGroups (v0–5) and
//! DeleteGroups (v0–2).

use std::sync::Arc;

use futures::future::BoxFuture;
use skiff_protocol::api::messages::delete_groups_response::DeletableGroupResult;
use skiff_protocol::api::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use skiff_protocol::api::messages::list_groups_response::ListedGroup;
use skiff_protocol::api::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};

use crate::broker::Broker;
use crate::handlers::str_bytes;

/// Kafka's `AclOperation` bits a group supports: READ 3, DELETE 6, DESCRIBE 8.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub fn list(broker: &Arc<Broker>, version: i16, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut response = ListGroupsResponse::default();
    if let Err(error) = broker.groups.ensure_topic(&broker.topics) {
        response.error_code = error.code();
        return response;
    }
    let states: Vec<String> = if version >= 4 {
        request
            .states_filter
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect()
    } else {
        Vec::new()
    };
    let (error, groups) = broker.groups.with(|c| c.list_groups(&states));
    response.error_code = error.code();
    response.groups = groups
        .into_iter()
        .map(|g| {
            let mut listed = ListedGroup::default();
            listed.group_id = GroupId(str_bytes(g.group_id));
            listed.protocol_type = str_bytes(g.protocol_type);
            listed.group_state = str_bytes(g.state.name());
            listed
        })
        .collect();
    response
}

pub fn describe(
    broker: &Arc<Broker>,
    version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    let ready = broker.groups.ensure_topic(&broker.topics);
    let operations =
        (version >= 3 && request.include_authorized_operations).then_some(GROUP_OPERATIONS_ALL);
    response.groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let mut out = DescribedGroup::default();
            if let Some(operations) = operations {
                out.authorized_operations = operations;
            }
            if let Err(error) = ready {
                out.error_code = error.code();
                out.group_id = group_id;
                out.group_state = str_bytes("Dead");
                return out;
            }
            let described = broker
                .groups
                .with(|c| c.describe_group(group_id.0.as_str()));
            out.group_id = group_id;
            out.error_code = described.error.code();
            out.group_state = str_bytes(described.state.name());
            out.protocol_type = str_bytes(described.protocol_type);
            out.protocol_data = str_bytes(described.protocol_name);
            out.members = described
                .members
                .into_iter()
                .map(|m| {
                    let mut member = DescribedGroupMember::default();
                    member.member_id = str_bytes(m.member_id);
                    member.group_instance_id = m.group_instance_id.map(str_bytes);
                    member.client_id = str_bytes(m.client_id);
                    member.client_host = str_bytes(m.client_host);
                    member.member_metadata = m.metadata;
                    member.member_assignment = m.assignment;
                    member
                })
                .collect();
            out
        })
        .collect();
    response
}

/// DeleteGroups: answered once each deleted group's tombstones are durable.
pub fn delete(
    broker: &Arc<Broker>,
    request: DeleteGroupsRequest,
) -> BoxFuture<'static, DeleteGroupsResponse> {
    let ids: Vec<String> = request
        .groups_names
        .iter()
        .map(|g| g.0.as_str().to_owned())
        .collect();
    let ready = broker.groups.ensure_topic(&broker.topics);
    let groups = Arc::clone(&broker.groups);
    Box::pin(async move {
        let results = match ready {
            Ok(()) => groups.delete_groups(&ids).await,
            Err(error) => ids.into_iter().map(|id| (id, error)).collect(),
        };
        let mut response = DeleteGroupsResponse::default();
        response.results = results
            .into_iter()
            .map(|(id, error)| {
                let mut result = DeletableGroupResult::default();
                result.group_id = GroupId(str_bytes(id));
                result.error_code = error.code();
                result
            })
            .collect();
        response
    })
}
