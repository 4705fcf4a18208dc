//! Consumer group administration on [`Admin`]: list, describe, delete
//! groups, and read or overwrite their committed offsets.
//!
//! Offsets are overwritten as Kafka's admin client does: an OffsetCommit
//! with generation -1 and an empty member id, which the coordinator accepts
//! only for a group without members (the members own their offsets).

use std::collections::BTreeMap;

use skiff_protocol::api::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
};
use skiff_protocol::api::StrBytes;
use skiff_protocol::ErrorCode;

use super::coordinator::{CommitIdentity, CommittedOffset, GroupCoordinator};
use super::protocol::{Assignment, Subscription, PROTOCOL_TYPE};
use crate::admin::Admin;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// `consumer` for consumer groups; empty for groups that only commit.
    pub protocol_type: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead
    /// (empty if the broker does not report states).
    pub state: String,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
    /// The client id it connected with.
    pub client_id: String,
    /// The host it connected from.
    pub client_host: String,
    /// Subscribed topics (consumer groups only).
    pub topics: Vec<String>,
    /// Its assigned partitions (consumer groups only).
    pub assignment: Vec<TopicPartition>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// The group state (`Dead` for a group that does not exist).
    pub state: String,
    /// The protocol type (`consumer`).
    pub protocol_type: String,
    /// The chosen protocol: for consumer groups, the assignor.
    pub protocol: String,
    /// The members.
    pub members: Vec<MemberDescription>,
}

fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_string()))
}

impl Admin {
    /// Every group on every broker, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let metadata = self.client().metadata().await?;
        let mut out = BTreeMap::new();
        for node_id in metadata.brokers.keys() {
            let connection = self.client().broker_connection(*node_id).await?;
            let response = connection.request(ListGroupsRequest::default()).await?;
            match ErrorCode::from_code(response.error_code) {
                ErrorCode::None => {}
                code => return Err(Error::kafka(code, "list groups", None)),
            }
            for group in response.groups {
                let id = group.group_id.0.to_string();
                out.insert(
                    id.clone(),
                    GroupListing {
                        group_id: id,
                        protocol_type: group.protocol_type.to_string(),
                        state: group.group_state.to_string(),
                    },
                );
            }
        }
        Ok(out.into_values().collect())
    }

    /// Describes groups: state, assignor, members and their assignments.
    pub async fn describe_groups(&self, groups: &[&str]) -> Result<Vec<GroupDescription>> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let coordinator = GroupCoordinator::new(self.client().clone(), *group);
            let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
            let response = coordinator.connection().await?.request(request).await?;
            let Some(described) = response.groups.into_iter().next() else {
                return Err(Error::kafka(
                    ErrorCode::UnknownServerError,
                    format!("describe group {group:?}"),
                    Some("the coordinator did not answer for this group".into()),
                ));
            };
            match ErrorCode::from_code(described.error_code) {
                ErrorCode::None => {}
                code => {
                    return Err(Error::kafka(
                        code,
                        format!("describe group {group:?}"),
                        described.error_message.map(|m| m.to_string()),
                    ))
                }
            }
            let consumer = described.protocol_type.as_str() == PROTOCOL_TYPE;
            let members = described
                .members
                .into_iter()
                .map(|m| {
                    let (topics, assignment) = if consumer {
                        let topics = Subscription::decode(m.member_metadata)
                            .map(|s| s.topics)
                            .unwrap_or_default();
                        let assignment = Assignment::decode(m.member_assignment)
                            .map(|a| a.partitions)
                            .unwrap_or_default();
                        (topics, assignment)
                    } else {
                        (Vec::new(), Vec::new())
                    };
                    MemberDescription {
                        member_id: m.member_id.to_string(),
                        group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                        client_id: m.client_id.to_string(),
                        client_host: m.client_host.to_string(),
                        topics,
                        assignment,
                    }
                })
                .collect();
            out.push(GroupDescription {
                group_id: described.group_id.0.to_string(),
                state: described.group_state.to_string(),
                protocol_type: described.protocol_type.to_string(),
                protocol: described.protocol_data.to_string(),
                members,
            });
        }
        Ok(out)
    }

    /// Every committed offset of `group`.
    pub async fn list_group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, CommittedOffset>> {
        GroupCoordinator::new(self.client().clone(), group)
            .fetch(None)
            .await
    }

    /// Deletes groups (their committed offsets included); the result per
    /// group, in order. A group with members is refused (NON_EMPTY_GROUP).
    pub async fn delete_groups(&self, groups: &[&str]) -> Result<Vec<Result<()>>> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let coordinator = GroupCoordinator::new(self.client().clone(), *group);
            let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
            let response = coordinator.connection().await?.request(request).await?;
            let code = response
                .results
                .iter()
                .find(|r| r.group_id.0.as_str() == *group)
                .map_or(ErrorCode::UnknownServerError, |r| {
                    ErrorCode::from_code(r.error_code)
                });
            out.push(match code {
                ErrorCode::None => Ok(()),
                code => Err(Error::kafka(code, format!("delete group {group:?}"), None)),
            });
        }
        Ok(out)
    }

    /// Overwrites committed offsets of a group without members; the result
    /// per partition. Members own their group's offsets, so this checks the
    /// group is empty first ([`Error::GroupNotEmpty`]); the coordinator
    /// refuses too if a member joins in between.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, CommittedOffset>,
    ) -> Result<BTreeMap<TopicPartition, Result<()>>> {
        if let Some(described) = self.describe_groups(&[group]).await?.pop() {
            if !described.members.is_empty() {
                return Err(Error::GroupNotEmpty {
                    group: group.to_string(),
                    members: described.members.len(),
                });
            }
        }
        GroupCoordinator::new(self.client().clone(), group)
            .commit(&CommitIdentity::admin(), offsets)
            .await
    }
}
