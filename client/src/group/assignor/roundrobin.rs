//! Kafka's `RoundRobinAssignor`: all partitions, sorted by topic then
//! partition, are dealt to the members in member order, skipping members
//! not subscribed to a partition's topic.

use std::collections::BTreeMap;

use super::{
    empty_assignments, sorted_members, subscribed_partitions, Assignor, GroupMember,
    MemberAssignments,
};

/// Partitions dealt in turn (`roundrobin`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> MemberAssignments {
        let mut out = empty_assignments(members);
        let sorted = sorted_members(members);
        if sorted.is_empty() {
            return out;
        }
        let mut next = 0usize;
        for tp in subscribed_partitions(partition_counts, members) {
            // Someone subscribes to the topic (subscribed_partitions says so),
            // so this finds a member within one turn of the circle.
            for _ in 0..sorted.len() {
                let member = sorted[next % sorted.len()];
                next += 1;
                if member.subscribes(&tp.topic) {
                    out.entry(member.member_id.clone()).or_default().push(tp);
                    break;
                }
            }
        }
        out
    }
}
