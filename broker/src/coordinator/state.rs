//! [`GroupCoordinator`]: every group this broker coordinates, the
//! `__consumer_offsets` partitions it owns, and the timer that drives
//! session and rebalance timeouts.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use skiff_protocol::ErrorCode;

use super::group::Group;
use super::load::partition_for;
use super::rebalance;
use super::types::{CoordinatorConfig, GroupState, Output};

/// Where member ids' unique suffix comes from. Injected so tests are
/// deterministic; the broker uses [`RandomIds`].
pub trait MemberIdSource: Send {
    /// A fresh id in the UUID text form (Kafka appends `UUID.randomUUID()`).
    fn next_id(&mut self) -> String;
}

/// Counts up: `00000000-0000-4000-8000-000000000001`, ….
#[derive(Debug, Default)]
pub struct SequentialIds(u64);

impl MemberIdSource for SequentialIds {
    fn next_id(&mut self) -> String {
        self.0 += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.0)
    }
}

/// Random version-4-shaped UUIDs from the standard library's per-process
/// random hash keys mixed with a counter, so no RNG dependency is needed.
#[derive(Debug)]
pub struct RandomIds {
    state: std::collections::hash_map::RandomState,
    counter: u64,
}

impl Default for RandomIds {
    fn default() -> Self {
        RandomIds {
            state: std::collections::hash_map::RandomState::new(),
            counter: 0,
        }
    }
}

impl MemberIdSource for RandomIds {
    fn next_id(&mut self) -> String {
        let mut half = |salt: u64| {
            self.counter += 1;
            let mut hasher = self.state.build_hasher();
            hasher.write_u64(self.counter);
            hasher.write_u64(salt);
            hasher.finish()
        };
        let high = half(1);
        let low = half(2);
        let high = (high & !0xf000) | 0x4000;
        let low = (low & !(0xc << 60)) | (0x8 << 60);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            low >> 48,
            low & 0xffff_ffff_ffff
        )
    }
}

/// How far along loading an owned `__consumer_offsets` partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Loading,
    Loaded,
}

/// The group coordinator's state. See the module docs for the calling
/// convention.
pub struct GroupCoordinator {
    pub(crate) config: CoordinatorConfig,
    pub(crate) groups: HashMap<String, Group>,
    pub(crate) ids: Box<dyn MemberIdSource>,
    partitions: HashMap<i32, Load>,
    /// Partitions loaded since the last tick: their members' sessions start
    /// at that tick, as Kafka starts them when a load completes, so a long
    /// load does not expire every member it replayed.
    loaded_since_tick: HashSet<i32>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("config", &self.config)
            .field("groups", &self.groups.len())
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig, ids: Box<dyn MemberIdSource>) -> GroupCoordinator {
        assert!(
            config.offsets_partitions > 0,
            "offsets_partitions must be positive"
        );
        GroupCoordinator {
            config,
            groups: HashMap::new(),
            ids,
            partitions: HashMap::new(),
            loaded_since_tick: HashSet::new(),
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The `__consumer_offsets` partition holding `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.config.offsets_partitions)
    }

    /// This broker became the leader of `partition`: requests for its groups
    /// answer COORDINATOR_LOAD_IN_PROGRESS until [`Self::finish_loading`].
    pub fn begin_loading(&mut self, partition: i32) {
        self.partitions.insert(partition, Load::Loading);
    }

    /// Every record of `partition` was replayed; its groups are served.
    pub fn finish_loading(&mut self, partition: i32) {
        self.partitions.insert(partition, Load::Loaded);
        self.loaded_since_tick.insert(partition);
    }

    /// This broker no longer leads `partition`: forget its groups. Parked
    /// requests of those groups are answered NOT_COORDINATOR.
    pub fn unload(&mut self, partition: i32) -> Vec<Output> {
        self.partitions.remove(&partition);
        self.loaded_since_tick.remove(&partition);
        let offsets_partitions = self.config.offsets_partitions;
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|id| partition_for(id, offsets_partitions) == partition)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for group_id in gone {
            if let Some(mut group) = self.groups.remove(&group_id) {
                rebalance::fail_parked(&mut group, ErrorCode::NotCoordinator, &mut out);
            }
        }
        out
    }

    /// Whether `group_id` is ours to answer for, and loaded. `allow_empty`:
    /// OffsetCommit, OffsetFetch, DescribeGroups and DeleteGroups accept the
    /// empty group id, as Kafka does; the membership APIs do not.
    pub(crate) fn check_group_id(
        &self,
        group_id: &str,
        allow_empty: bool,
    ) -> Result<(), ErrorCode> {
        if group_id.is_empty() && !allow_empty {
            return Err(ErrorCode::InvalidGroupId);
        }
        if group_id.len() > i16::MAX as usize {
            return Err(ErrorCode::InvalidGroupId);
        }
        match self.partitions.get(&self.partition_for(group_id)) {
            Some(Load::Loaded) => Ok(()),
            Some(Load::Loading) => Err(ErrorCode::CoordinatorLoadInProgress),
            None => Err(ErrorCode::NotCoordinator),
        }
    }

    /// Whether any owned partition is still loading (ListGroups reports
    /// COORDINATOR_LOAD_IN_PROGRESS then).
    pub fn is_loading(&self) -> bool {
        self.partitions.values().any(|l| *l == Load::Loading)
    }

    pub(crate) fn owns_loaded(&self, group_id: &str) -> bool {
        self.partitions.get(&self.partition_for(group_id)) == Some(&Load::Loaded)
    }

    /// The state of `group_id`, or `None` when there is no such group.
    pub fn group_state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(|g| g.state)
    }

    /// The group's current generation, or `None` when there is no such group.
    pub fn generation(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(|g| g.generation_id)
    }

    /// Fires every session, pending-member and rebalance deadline at or
    /// before `now_ms`. Call it at [`Self::next_deadline_ms`] (or on any
    /// periodic tick); calling early or twice is harmless. Groups of a
    /// partition still loading are left alone: they are not served yet.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        let mut ids: Vec<String> = self.groups.keys().cloned().collect();
        ids.sort();
        let restarted = std::mem::take(&mut self.loaded_since_tick);
        for group_id in ids {
            if !self.owns_loaded(&group_id) {
                continue;
            }
            let offsets_partitions = self.config.offsets_partitions;
            let Some(group) = self.groups.get_mut(&group_id) else {
                continue;
            };
            let partition = partition_for(&group_id, offsets_partitions);
            if restarted.contains(&partition) {
                for member in &mut group.members {
                    member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
                }
            }
            rebalance::expire(group, &self.config, partition, now_ms, &mut out);
        }
        out
    }

    /// The earliest deadline [`Self::tick`] would act on, if any.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.groups
            .values()
            .filter(|g| self.owns_loaded(&g.group_id))
            .filter_map(rebalance::next_deadline_ms)
            .min()
    }

    /// An append of the outputs for `group_id` failed: the group's members
    /// must rejoin, so nobody keeps an assignment that was never stored.
    pub fn persist_failed(&mut self, now_ms: i64, group_id: &str) -> Vec<Output> {
        let mut out = Vec::new();
        let partition = self.partition_for(group_id);
        if let Some(group) = self.groups.get_mut(group_id) {
            if matches!(
                group.state,
                GroupState::Stable | GroupState::CompletingRebalance
            ) {
                rebalance::prepare(group, &self.config, now_ms, &mut out);
                rebalance::try_complete_join(group, partition, now_ms, &mut out);
            }
        }
        out
    }

    /// Members of every group, for metrics.
    pub fn member_count(&self) -> usize {
        self.groups.values().map(|g| g.members.len()).sum()
    }

    /// The group ids this broker currently coordinates, for tests and tools.
    pub fn group_ids(&self) -> HashSet<&str> {
        self.groups.keys().map(String::as_str).collect()
    }
}
