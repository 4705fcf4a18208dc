//! The sticky assignors: a balanced assignment that keeps as many
//! partitions as possible with the member that owned them.
//!
//! 1. Each member keeps the owned partitions it still subscribes to. When
//!    two members claim one partition (a member that missed a rebalance),
//!    the claim from the newest generation wins, as in Kafka.
//! 2. Unowned partitions go, one by one, to the least loaded member
//!    subscribed to their topic.
//! 3. While some member holds two or more partitions more than a member
//!    that could end up with one of them, directly or through a chain of
//!    members that each pass one on, a chain moves (`balance`). Chains of
//!    partitions their holder did not own before go first, each from the
//!    most loaded member that has one, so members keep their own up to
//!    their share.
//!
//! `cooperative-sticky` computes the same target and then withholds every
//! partition that another member owns now: that member revokes it, rejoins,
//! and the follow-up rebalance hands it over (KIP-429).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    balance, sorted_members, subscribed_partitions, Assignor, GroupMember, MemberAssignments,
    RebalanceProtocol,
};
use crate::consumer::TopicPartition;

/// Balanced and sticky (`sticky`), eager rebalancing.
#[derive(Debug, Clone, Copy, Default)]
pub struct StickyAssignor;

/// Balanced and sticky with incremental rebalancing (`cooperative-sticky`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

impl Assignor for StickyAssignor {
    fn name(&self) -> &'static str {
        "sticky"
    }

    fn wants_previous_assignment(&self) -> bool {
        true
    }

    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> MemberAssignments {
        let (assignment, _) = sticky_assign(partition_counts, members);
        assignment
    }
}

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn rebalance_protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> MemberAssignments {
        let (mut assignment, owners) = sticky_assign(partition_counts, members);
        for (member_id, partitions) in &mut assignment {
            partitions.retain(|tp| owners.get(tp).is_none_or(|owner| owner == member_id));
        }
        assignment
    }
}

/// The sticky target assignment, and the current owner of each partition
/// (member id) after settling conflicting claims.
fn sticky_assign(
    partition_counts: &BTreeMap<String, i32>,
    members: &[GroupMember],
) -> (MemberAssignments, BTreeMap<TopicPartition, String>) {
    let sorted = sorted_members(members);
    let all = subscribed_partitions(partition_counts, members);

    // 1. Claims: newest generation wins, ties go to the first member in order.
    let mut claims: BTreeMap<TopicPartition, (i32, usize)> = BTreeMap::new();
    for (index, member) in sorted.iter().enumerate() {
        let generation = member.subscription.generation;
        for tp in &member.subscription.owned_partitions {
            if !all.contains(tp) || !member.subscribes(&tp.topic) {
                continue;
            }
            match claims.get(tp) {
                Some((best, _)) if *best >= generation => {}
                _ => {
                    claims.insert(tp.clone(), (generation, index));
                }
            }
        }
    }
    let owners: BTreeMap<TopicPartition, String> = claims
        .iter()
        .map(|(tp, (_, index))| (tp.clone(), sorted[*index].member_id.clone()))
        .collect();
    let mut loads: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); sorted.len()];
    for (tp, (_, index)) in &claims {
        loads[*index].insert(tp.clone());
    }

    // 2. Unowned partitions to the least loaded subscriber.
    for tp in all.iter().filter(|tp| !claims.contains_key(*tp)) {
        let target = (0..sorted.len())
            .filter(|i| sorted[*i].subscribes(&tp.topic))
            .min_by_key(|i| (loads[*i].len(), *i));
        if let Some(target) = target {
            loads[target].insert(tp.clone());
        }
    }

    // 3. Balance.
    balance::balance(&sorted, &mut loads, &owners);

    let assignment = sorted
        .iter()
        .zip(loads)
        .map(|(member, partitions)| (member.member_id.clone(), partitions.into_iter().collect()))
        .collect();
    (assignment, owners)
}
