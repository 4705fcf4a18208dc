//! Kafka's `RangeAssignor`: for each topic, the members subscribed to it (in
//! member order) get contiguous ranges of its partitions; the first
//! `partitions % members` get one extra. With several topics the first
//! members get the extras of every topic, which is Kafka's behaviour too.

use std::collections::BTreeMap;

use super::{empty_assignments, sorted_members, Assignor, GroupMember, MemberAssignments};
use crate::consumer::TopicPartition;

/// Contiguous ranges per topic (`range`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> MemberAssignments {
        let mut out = empty_assignments(members);
        let sorted = sorted_members(members);
        for (topic, count) in partition_counts {
            let subscribed: Vec<&&GroupMember> =
                sorted.iter().filter(|m| m.subscribes(topic)).collect();
            if subscribed.is_empty() || *count <= 0 {
                continue;
            }
            let member_count = subscribed.len() as i32;
            let per_member = count / member_count;
            let extra = count % member_count;
            for (index, member) in subscribed.iter().enumerate() {
                let index = index as i32;
                let start = per_member * index + index.min(extra);
                let length = per_member + i32::from(index < extra);
                let partitions = out.entry(member.member_id.clone()).or_default();
                partitions.extend((start..start + length).map(|p| TopicPartition::new(topic, p)));
            }
        }
        out
    }
}
