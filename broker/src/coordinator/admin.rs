//! ListGroups, DescribeGroups and DeleteGroups.

use bytes::Bytes;
use skiff_protocol::ErrorCode;

use super::records::OffsetsRecord;
use super::state::GroupCoordinator;
use super::types::{GroupState, Output};

/// A ListGroups entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    /// Empty for simple groups, which only store offsets.
    pub protocol_type: String,
    pub state: GroupState,
}

/// A DescribeGroups member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A DescribeGroups entry. An unknown group is described as Dead with no
/// error, as Kafka's classic coordinator does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    pub error: ErrorCode,
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// The selected protocol, only while Stable.
    pub protocol_name: String,
    pub members: Vec<DescribedMember>,
}

impl GroupCoordinator {
    /// ListGroups; `states` filters by state name (ListGroups v4+), empty
    /// means all. The error is COORDINATOR_LOAD_IN_PROGRESS while loading.
    pub fn list_groups(&self, states: &[String]) -> (ErrorCode, Vec<ListedGroup>) {
        let error = if self.is_loading() {
            ErrorCode::CoordinatorLoadInProgress
        } else {
            ErrorCode::None
        };
        let mut groups: Vec<ListedGroup> = self
            .groups
            .values()
            .filter(|g| self.owns_loaded(&g.group_id))
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| ListedGroup {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        (error, groups)
    }

    /// DescribeGroups for one group. Member metadata and assignments are
    /// only shown while Stable, when they are consistent.
    pub fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let mut described = DescribedGroup {
            error: ErrorCode::None,
            group_id: group_id.to_owned(),
            state: GroupState::Dead,
            protocol_type: String::new(),
            protocol_name: String::new(),
            members: Vec::new(),
        };
        if let Err(error) = self.check_group_id(group_id, true) {
            described.error = error;
            return described;
        }
        let Some(group) = self.groups.get(group_id) else {
            return described;
        };
        let stable = group.state == GroupState::Stable;
        let protocol = group.protocol_name.clone().unwrap_or_default();
        described.state = group.state;
        described.protocol_type = group.protocol_type.clone().unwrap_or_default();
        if stable {
            described.protocol_name = protocol.clone();
        }
        described.members = group
            .members
            .iter()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata_for(&protocol).cloned().unwrap_or_default()
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        described
    }

    /// DeleteGroups: only Empty groups can be deleted (NON_EMPTY_GROUP
    /// otherwise); their metadata and every offset get tombstones.
    pub fn delete_groups(
        &mut self,
        group_ids: &[String],
    ) -> (Vec<(String, ErrorCode)>, Vec<Output>) {
        let mut results = Vec::with_capacity(group_ids.len());
        let mut out = Vec::new();
        for group_id in group_ids {
            let error = self.delete_group(group_id, &mut out);
            results.push((group_id.clone(), error));
        }
        (results, out)
    }

    fn delete_group(&mut self, group_id: &str, out: &mut Vec<Output>) -> ErrorCode {
        if let Err(error) = self.check_group_id(group_id, true) {
            return error;
        }
        match self.groups.get(group_id).map(|g| g.state) {
            None | Some(GroupState::Dead) => return ErrorCode::GroupIdNotFound,
            Some(GroupState::Empty) => {}
            Some(_) => return ErrorCode::NonEmptyGroup,
        }
        let partition = self.partition_for(group_id);
        let Some(group) = self.groups.remove(group_id) else {
            return ErrorCode::GroupIdNotFound;
        };
        let mut records: Vec<OffsetsRecord> = group
            .offsets
            .keys()
            .map(|(topic, partition)| OffsetsRecord::Offset {
                group_id: group_id.to_owned(),
                topic: topic.clone(),
                partition: *partition,
                value: None,
            })
            .collect();
        records.push(OffsetsRecord::Group {
            group_id: group_id.to_owned(),
            value: None,
        });
        out.push(Output::Persist {
            group_id: group_id.to_owned(),
            partition,
            records,
        });
        ErrorCode::None
    }
}
