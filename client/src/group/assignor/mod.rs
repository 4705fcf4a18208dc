//! Partition assignors: the group leader turns every member's subscription
//! into an assignment. Names and algorithms follow Kafka's client-side
//! assignors (`partition.assignment.strategy`):
//!
//! - `range` ([`RangeAssignor`]): per topic, contiguous ranges.
//! - `roundrobin` ([`RoundRobinAssignor`]): all partitions dealt in turn.
//! - `sticky` ([`StickyAssignor`]): balanced, keeping as much of the
//!   previous assignment as it can.
//! - `cooperative-sticky` ([`CooperativeStickyAssignor`]): sticky, with
//!   incremental (KIP-429) rebalancing: a partition moving between members
//!   is first only revoked, and assigned to its new owner in a follow-up
//!   rebalance, so that no two members ever own it at once.
//!
//! Assignors are pure functions of the members' subscriptions and the
//! partition counts, so they are tested without a broker.

mod balance;
mod range;
mod roundrobin;
mod sticky;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use range::RangeAssignor;
pub use roundrobin::RoundRobinAssignor;
pub use sticky::{CooperativeStickyAssignor, StickyAssignor};

use super::protocol::Subscription;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};

/// How members give up partitions during a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceProtocol {
    /// Every member revokes everything before rejoining.
    Eager,
    /// Members keep their partitions and revoke only those that move (KIP-429).
    Cooperative,
}

/// One member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its static membership id, if any.
    pub group_instance_id: Option<String>,
    /// What it subscribed to and owns.
    pub subscription: Subscription,
}

impl GroupMember {
    /// Kafka's member order (`MemberInfo.compareTo`): static members first,
    /// by instance id, then dynamic members by member id.
    fn order_key(&self) -> (bool, &str) {
        match &self.group_instance_id {
            Some(id) => (false, id.as_str()),
            None => (true, self.member_id.as_str()),
        }
    }

    fn subscribes(&self, topic: &str) -> bool {
        self.subscription.topics.iter().any(|t| t == topic)
    }
}

/// Partitions per member id.
pub type MemberAssignments = BTreeMap<String, Vec<TopicPartition>>;

/// A partition assignment strategy.
pub trait Assignor: Send + Sync + fmt::Debug {
    /// The protocol name sent in JoinGroup (Kafka's names, so that mixed
    /// groups with Java or librdkafka consumers agree).
    fn name(&self) -> &'static str;

    /// Whether the assignor supports incremental rebalancing.
    fn rebalance_protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// Whether the member should describe its last assignment as owned
    /// even though an eager member revoked it before joining (the eager
    /// sticky assignor needs it; Kafka's Java one reads it from user data
    /// instead, so a Java sticky leader treats skiff members as new).
    fn wants_previous_assignment(&self) -> bool {
        false
    }

    /// Assigns the partitions of `partition_counts` (topic → number of
    /// partitions; topics missing from it are not assigned) to `members`.
    /// Every member gets an entry, possibly empty.
    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> MemberAssignments;
}

/// The assignor Kafka calls `name`.
pub fn assignor_by_name(name: &str) -> Result<Box<dyn Assignor>> {
    match name {
        "range" => Ok(Box::new(RangeAssignor)),
        "roundrobin" => Ok(Box::new(RoundRobinAssignor)),
        "sticky" => Ok(Box::new(StickyAssignor)),
        "cooperative-sticky" => Ok(Box::new(CooperativeStickyAssignor)),
        other => Err(Error::Config(format!(
            "unknown partition assignment strategy {other:?} \
             (known: range, roundrobin, sticky, cooperative-sticky)"
        ))),
    }
}

/// Members in Kafka's order.
fn sorted_members(members: &[GroupMember]) -> Vec<&GroupMember> {
    let mut sorted: Vec<&GroupMember> = members.iter().collect();
    sorted.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    sorted
}

/// Every partition of the topics at least one member subscribes to.
fn subscribed_partitions(
    partition_counts: &BTreeMap<String, i32>,
    members: &[GroupMember],
) -> BTreeSet<TopicPartition> {
    partition_counts
        .iter()
        .filter(|(topic, _)| members.iter().any(|m| m.subscribes(topic)))
        .flat_map(|(topic, count)| (0..*count).map(move |p| TopicPartition::new(topic.clone(), p)))
        .collect()
}

fn empty_assignments(members: &[GroupMember]) -> MemberAssignments {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

#[cfg(test)]
mod tests;
