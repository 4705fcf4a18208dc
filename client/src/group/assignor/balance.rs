//! Step 3 of the sticky assignors: evening out loads by moving partitions
//! along chains of members.
//!
//! A chain takes one partition from a member and gives one to a member with
//! at least two fewer, through members that each pass one partition on (A
//! gives a `t1` partition to B, B gives a `t2` partition to C: A −1, C +1, B
//! unchanged). Each chain lowers the sum of squared loads, and when no chain
//! is left the loads are the best balance the subscriptions allow. Direct
//! moves alone can stop short of it when subscriptions differ; the next
//! rebalance would then find a better balance and move partitions again,
//! which under cooperative rebalancing leaves a partition with nobody for a
//! round.
//!
//! Chains that move only partitions their holder did not own before this
//! rebalance are used up first. Those alone reach the same best loads as any
//! chains when the owned partitions can stay (a rebalance starting from a
//! previous target), so then nothing owned moves. Among chains, the shortest
//! from the most loaded member wins.

use std::collections::{BTreeMap, BTreeSet};

use super::GroupMember;
use crate::consumer::TopicPartition;

/// Moves chains until none lowers the imbalance. `loads[i]` holds what
/// `members[i]` gets; `owners` maps each partition to the member that owned
/// it coming into this rebalance.
pub(super) fn balance(
    members: &[&GroupMember],
    loads: &mut [BTreeSet<TopicPartition>],
    owners: &BTreeMap<TopicPartition, String>,
) {
    assert_eq!(members.len(), loads.len(), "one load per member");
    let mut subscribers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, member) in members.iter().enumerate() {
        for topic in &member.subscription.topics {
            subscribers.entry(topic.as_str()).or_default().push(index);
        }
    }
    let balancer = Balancer {
        members,
        subscribers,
        owners,
    };
    // Each chain lowers the sum of squared loads (at most partitions²), so
    // this ends; the budget only guards against a bug turning it into a hang.
    let partitions: usize = loads.iter().map(BTreeSet::len).sum();
    let mut budget = partitions.saturating_mul(partitions).saturating_add(1);
    while budget > 0 && balancer.move_one_chain(loads) {
        budget -= 1;
    }
}

/// Which partitions a chain may move.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Movable {
    /// Only partitions their holder did not own before this rebalance.
    NotOwnedByHolder,
    /// Any partition (those not owned by their holder are still preferred).
    Any,
}

struct Balancer<'a> {
    members: &'a [&'a GroupMember],
    /// Member indexes subscribed to each topic.
    subscribers: BTreeMap<&'a str, Vec<usize>>,
    owners: &'a BTreeMap<TopicPartition, String>,
}

/// One move of a chain: (giver, taker, partition).
type Move = (usize, usize, TopicPartition);

impl Balancer<'_> {
    /// Moves one chain; false if none is left.
    fn move_one_chain(&self, loads: &mut [BTreeSet<TopicPartition>]) -> bool {
        let mut donors: Vec<usize> = (0..loads.len()).collect();
        donors.sort_by_key(|i| (std::cmp::Reverse(loads[*i].len()), *i));
        for movable in [Movable::NotOwnedByHolder, Movable::Any] {
            // Members a failed search reached: everything they reach, the
            // failed donor reached too, and all of it holds at least the
            // failed donor's load − 1, which is no taker for a donor loaded
            // no more than it. Donors go most loaded first, so later
            // searches skip them.
            let mut exhausted = vec![false; loads.len()];
            for &donor in &donors {
                if exhausted[donor] {
                    continue;
                }
                match self.find_chain(loads, donor, movable, &mut exhausted) {
                    Some(chain) => {
                        for (giver, taker, tp) in chain {
                            let moved = loads[giver].remove(&tp);
                            debug_assert!(moved, "a chain moves only what its givers hold");
                            loads[taker].insert(tp);
                        }
                        return true;
                    }
                    None => continue,
                }
            }
        }
        false
    }

    /// Breadth-first search from `donor` for a member holding at least two
    /// fewer; the shortest chain wins, then the least loaded taker. Marks
    /// every member reached in `exhausted` when it finds none.
    fn find_chain(
        &self,
        loads: &[BTreeSet<TopicPartition>],
        donor: usize,
        movable: Movable,
        exhausted: &mut [bool],
    ) -> Option<Vec<Move>> {
        let donor_load = loads[donor].len();
        let mut reached_from: Vec<Option<(usize, &TopicPartition)>> = vec![None; loads.len()];
        let mut visited = vec![false; loads.len()];
        visited[donor] = true;
        let mut level = vec![donor];
        while !level.is_empty() {
            let mut next_level = Vec::new();
            for &giver in &level {
                for (topic, tp) in self.movable_per_topic(giver, &loads[giver], movable) {
                    let takers = self.subscribers.get(topic).map_or(&[][..], Vec::as_slice);
                    for &taker in takers {
                        if visited[taker] || exhausted[taker] {
                            continue;
                        }
                        visited[taker] = true;
                        reached_from[taker] = Some((giver, tp));
                        next_level.push(taker);
                    }
                }
            }
            let taker = next_level
                .iter()
                .copied()
                .filter(|t| loads[*t].len() + 1 < donor_load)
                .min_by_key(|t| (loads[*t].len(), *t));
            if let Some(mut taker) = taker {
                let mut chain = Vec::new();
                while taker != donor {
                    let (giver, tp) = reached_from[taker]?;
                    chain.push((giver, taker, tp.clone()));
                    taker = giver;
                }
                return Some(chain);
            }
            level = next_level;
        }
        for (member, seen) in visited.iter().enumerate() {
            if *seen {
                exhausted[member] = true;
            }
        }
        None
    }

    /// One partition per topic that member `index` may pass on: one it did
    /// not own before this rebalance if it has such, else (with
    /// `Movable::Any`) one it owned.
    fn movable_per_topic<'l>(
        &self,
        index: usize,
        held: &'l BTreeSet<TopicPartition>,
        movable: Movable,
    ) -> BTreeMap<&'l str, &'l TopicPartition> {
        let member_id = &self.members[index].member_id;
        // Per topic: whether the pick is owned by its holder, and the pick.
        let mut per_topic: BTreeMap<&str, (bool, &TopicPartition)> = BTreeMap::new();
        for tp in held {
            let owned = self.owners.get(tp) == Some(member_id);
            if owned && movable == Movable::NotOwnedByHolder {
                continue;
            }
            match per_topic.get(tp.topic.as_str()) {
                Some((false, _)) => {}
                Some((true, _)) if owned => {}
                _ => {
                    per_topic.insert(tp.topic.as_str(), (owned, tp));
                }
            }
        }
        per_topic
            .into_iter()
            .map(|(topic, (_, tp))| (topic, tp))
            .collect()
    }
}
