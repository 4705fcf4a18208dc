//! Loading: which `__consumer_offsets` partition a group lives in, and the
//! replay of that partition's records into coordinator state.
//!
//! Replay is idempotent and order-tolerant in the ways compaction needs:
//! every record *sets* a value (an offset, a group's membership) or removes
//! it (a tombstone), so replaying a record twice — a retried commit, or a
//! log read again after a crash — leaves the same state.

use bytes::Bytes;

use super::group::{Group, Member};
use super::records::{GroupMetadata, OffsetsRecord};
use super::state::GroupCoordinator;
use super::types::{GroupState, Protocol};

/// Java's `String.hashCode` over the UTF-16 code units of `s`:
/// `s[0]*31^(n-1) + … + s[n-1]` in wrapping 32-bit arithmetic.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The `__consumer_offsets` partition of `group_id`, as Kafka computes it:
/// `Utils.abs(groupId.hashCode()) % partitions`, where `Utils.abs` maps
/// `i32::MIN` to 0 (it is `n & 0x7fffffff`), so Kafka and Skiff agree on
/// every group's coordinator.
pub fn partition_for(group_id: &str, partitions: u32) -> i32 {
    assert!(partitions > 0 && partitions <= i32::MAX as u32);
    let positive = java_string_hash(group_id) & 0x7fff_ffff;
    positive % partitions as i32
}

fn members_from(metadata: &GroupMetadata, now_ms: i64) -> Vec<Member> {
    metadata
        .members
        .iter()
        .map(|m| Member {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            session_timeout_ms: m.session_timeout_ms,
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            protocol_type: metadata.protocol_type.clone(),
            protocols: metadata
                .protocol_name
                .iter()
                .map(|name| Protocol {
                    name: name.clone(),
                    metadata: m.subscription.clone(),
                })
                .collect(),
            assignment: m.assignment.clone(),
            pending_join: None,
            pending_sync: None,
            // Members get a full session from the load, as in Kafka, so a
            // coordinator restart does not expire everyone at once.
            session_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
        })
        .collect()
}

impl GroupCoordinator {
    /// Applies one `__consumer_offsets` record (replayed at load, or just
    /// appended). `now_ms` starts the loaded members' sessions.
    pub fn replay(&mut self, now_ms: i64, record: &OffsetsRecord) {
        match record {
            OffsetsRecord::Offset {
                group_id,
                topic,
                partition,
                value: Some(value),
            } => {
                let group = self
                    .groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(group_id, now_ms));
                group
                    .offsets
                    .insert((topic.clone(), *partition), value.clone());
            }
            OffsetsRecord::Offset {
                group_id,
                topic,
                partition,
                value: None,
            } => {
                if let Some(group) = self.groups.get_mut(group_id) {
                    group.offsets.remove(&(topic.clone(), *partition));
                }
                self.forget_if_blank(group_id);
            }
            OffsetsRecord::Group {
                group_id,
                value: Some(metadata),
            } => {
                let group = self
                    .groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(group_id, now_ms));
                group.members = members_from(metadata, now_ms);
                group.generation_id = metadata.generation_id;
                group.protocol_type =
                    Some(metadata.protocol_type.clone()).filter(|t| !t.is_empty());
                group.protocol_name = metadata.protocol_name.clone();
                group.leader_id = metadata.leader_id.clone();
                group.pending_members.clear();
                group.join_timer = None;
                group.state = if group.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
                group.state_since_ms = if metadata.current_state_timestamp_ms >= 0 {
                    metadata.current_state_timestamp_ms
                } else {
                    now_ms
                };
            }
            OffsetsRecord::Group {
                group_id,
                value: None,
            } => {
                // The group's offsets have tombstones of their own; any that
                // survive make it a simple group again.
                if let Some(group) = self.groups.get_mut(group_id) {
                    let offsets = std::mem::take(&mut group.offsets);
                    *group = Group::new(group_id, now_ms);
                    group.offsets = offsets;
                }
                self.forget_if_blank(group_id);
            }
        }
    }

    /// Decodes and applies a raw record, as read from the log.
    pub fn replay_raw(
        &mut self,
        now_ms: i64,
        key: &[u8],
        value: Option<&Bytes>,
    ) -> Result<(), super::wire::RecordError> {
        if let Some(record) = OffsetsRecord::decode(key, value.map(|v| v.as_ref()))? {
            self.replay(now_ms, &record);
        }
        Ok(())
    }

    /// Forgets a group that holds nothing: no members, offsets or protocol.
    fn forget_if_blank(&mut self, group_id: &str) {
        let blank = self.groups.get(group_id).is_some_and(|g| {
            g.state == GroupState::Empty
                && g.offsets.is_empty()
                && g.protocol_type.is_none()
                && g.pending_members.is_empty()
        });
        if blank {
            self.groups.remove(group_id);
        }
    }
}
