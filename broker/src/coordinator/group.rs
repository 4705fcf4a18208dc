//! One group's membership state: members, generation, leader, protocol, and
//! its committed offsets. The transitions live in `membership.rs`; this file
//! holds the data and the small queries both it and the offsets code share.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::types::{GroupState, Protocol, ReplyId};

/// A committed offset, as stored in an OffsetCommit value record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete.
    pub pending_join: Option<ReplyId>,
    /// A SyncGroup waiting for the leader's assignment.
    pub pending_sync: Option<ReplyId>,
    /// When the member is removed unless it heartbeats (or has a parked
    /// request, which keeps it alive as in Kafka).
    pub session_deadline_ms: i64,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| &p.metadata)
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    /// A member with a parked request is kept alive: its client is waiting
    /// on us, not failing to heartbeat.
    pub fn is_kept_alive(&self) -> bool {
        self.pending_join.is_some() || self.pending_sync.is_some()
    }
}

/// The deadline that ends the PreparingRebalance phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinTimer {
    pub deadline_ms: i64,
    /// Set during the initial delay of an empty group's first rebalance:
    /// how much of the rebalance timeout is left to extend the delay with,
    /// and whether a member joined since the delay was (re)armed.
    pub initial: Option<InitialDelay>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialDelay {
    pub remaining_ms: i64,
    pub member_added: bool,
}

/// A group and its offsets.
#[derive(Debug, Clone)]
pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    /// When the group entered `state` (GroupMetadataValue's
    /// `currentStateTimestamp`); the offsets of an empty group expire
    /// relative to it.
    pub state_since_ms: i64,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    /// In join order, so the first joiner leads.
    pub members: Vec<Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, awaiting the member's
    /// second join, with the deadline after which they are forgotten.
    pub pending_members: BTreeMap<String, i64>,
    pub join_timer: Option<JoinTimer>,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
}

impl Group {
    pub fn new(group_id: &str, now_ms: i64) -> Group {
        Group {
            group_id: group_id.to_owned(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: Vec::new(),
            pending_members: BTreeMap::new(),
            join_timer: None,
            offsets: BTreeMap::new(),
        }
    }

    pub fn transition(&mut self, state: GroupState, now_ms: i64) {
        assert!(
            valid_transition(self.state, state),
            "group {}: illegal transition {:?} -> {:?}",
            self.group_id,
            self.state,
            state
        );
        self.state = state;
        self.state_since_ms = now_ms;
    }

    pub fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.member_id == member_id)
    }

    pub fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.member_id == member_id)
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.member(member_id).is_some()
    }

    /// The member id currently holding `instance_id`.
    pub fn static_member_id(&self, instance_id: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.group_instance_id.as_deref() == Some(instance_id))
            .map(|m| m.member_id.as_str())
    }

    /// Kafka's `isStaticMemberFenced`: the instance id is held by a
    /// different member id than the one in the request.
    pub fn is_static_member_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        match instance_id.and_then(|id| self.static_member_id(id)) {
            Some(current) => current != member_id,
            None => false,
        }
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    /// The largest rebalance timeout of the members: how long a rebalance
    /// waits for every member to rejoin.
    pub fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Every member rejoined and no id handed out by MEMBER_ID_REQUIRED is
    /// still expected.
    pub fn all_members_joined(&self) -> bool {
        self.members.iter().all(|m| m.pending_join.is_some()) && self.pending_members.is_empty()
    }

    /// The protocols every member supports, in the first member's order.
    pub fn candidate_protocols(&self) -> Vec<&str> {
        let Some(first) = self.members.first() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect()
    }

    /// Whether a member offering `protocols` could join: same protocol type,
    /// and at least one protocol all current members (and it) support.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|p| self.members.iter().all(|m| m.supports(&p.name)))
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports,
    /// each member votes for the one it prefers most; the most votes win.
    /// Ties go to the candidate the first member prefers, so the choice is
    /// deterministic.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes = vec![0usize; candidates.len()];
        for member in &self.members {
            let preferred = member
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name));
            if let Some(index) = preferred {
                votes[index] += 1;
            }
        }
        let mut best: Option<usize> = None;
        for (index, count) in votes.iter().enumerate() {
            if best.is_none_or(|b| *count > votes[b]) {
                best = Some(index);
            }
        }
        best.map(|index| candidates[index].to_owned())
    }
}

/// Kafka's allowed previous states per state.
fn valid_transition(from: GroupState, to: GroupState) -> bool {
    use GroupState::*;
    match to {
        Empty => matches!(from, PreparingRebalance),
        PreparingRebalance => matches!(from, Stable | CompletingRebalance | Empty),
        CompletingRebalance => matches!(from, PreparingRebalance),
        Stable => matches!(from, CompletingRebalance),
        Dead => true,
    }
}
