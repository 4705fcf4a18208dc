//! OffsetCommit and OffsetFetch, and the cleanup of offsets: expired ones
//! (`offsets_retention`) and those of deleted topics.
//!
//! A commit is two steps so that memory never runs ahead of the log:
//! [`GroupCoordinator::offset_commit`] validates and returns a
//! [`PendingCommit`] holding the records to append; once the append
//! succeeded, [`GroupCoordinator::complete_commit`] applies them exactly as
//! replay would. Applying a commit is setting a value, so a retried commit
//! (or a record replayed twice) leaves the same state.

use skiff_protocol::ErrorCode;

use super::group::CommittedOffset;
use super::records::OffsetsRecord;
use super::state::GroupCoordinator;
use super::types::{GroupState, Output};

/// One partition's offset in an OffsetCommit request.
#[derive(Debug, Clone)]
pub struct CommitPartition {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// An OffsetCommit request. Simple consumers (no group management) send
/// generation -1 and an empty member id.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<(String, Vec<CommitPartition>)>,
}

/// Per topic, per partition error codes.
pub type CommitResults = Vec<(String, Vec<(i32, ErrorCode)>)>;

/// A validated commit: append `records` to `__consumer_offsets` partition
/// `partition`, then call `complete_commit` and answer with `results`; if
/// the append fails, answer every partition that was `NONE` with the
/// storage error instead (and do not call `complete_commit`).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCommit {
    pub group_id: String,
    pub partition: i32,
    pub records: Vec<OffsetsRecord>,
    pub results: CommitResults,
}

/// A fetched offset; `None` when the group has none for the partition
/// (OffsetFetch answers offset -1 then).
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

impl GroupCoordinator {
    /// Validates an OffsetCommit against the group's generation and members.
    pub fn offset_commit(&self, now_ms: i64, request: &CommitRequest) -> PendingCommit {
        let partition = self.partition_for(&request.group_id);
        let fail = |error: ErrorCode| PendingCommit {
            group_id: request.group_id.clone(),
            partition,
            records: Vec::new(),
            results: request
                .topics
                .iter()
                .map(|(topic, ps)| {
                    (
                        topic.clone(),
                        ps.iter().map(|p| (p.partition, error)).collect(),
                    )
                })
                .collect(),
        };
        if let Err(error) = self.check_group_id(&request.group_id, true) {
            return fail(error);
        }
        if let Err(error) = self.validate_commit(request) {
            return fail(error);
        }
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(request.topics.len());
        for (topic, partitions) in &request.topics {
            let mut topic_results = Vec::with_capacity(partitions.len());
            for p in partitions {
                let metadata = p.metadata.clone().unwrap_or_default();
                if metadata.len() > self.config.offset_metadata_max_bytes {
                    topic_results.push((p.partition, ErrorCode::OffsetMetadataTooLarge));
                    continue;
                }
                records.push(OffsetsRecord::Offset {
                    group_id: request.group_id.clone(),
                    topic: topic.clone(),
                    partition: p.partition,
                    value: Some(CommittedOffset {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata,
                        commit_timestamp_ms: now_ms,
                    }),
                });
                topic_results.push((p.partition, ErrorCode::None));
            }
            results.push((topic.clone(), topic_results));
        }
        PendingCommit {
            group_id: request.group_id.clone(),
            partition,
            records,
            results,
        }
    }

    /// Kafka's `doCommitOffsets` checks, in its order.
    fn validate_commit(&self, request: &CommitRequest) -> Result<(), ErrorCode> {
        let Some(group) = self.groups.get(&request.group_id) else {
            // No group: only a simple consumer may create one by committing.
            return if request.generation_id < 0 {
                Ok(())
            } else {
                Err(ErrorCode::IllegalGeneration)
            };
        };
        if group.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        if group.is_static_member_fenced(request.group_instance_id.as_deref(), &request.member_id) {
            return Err(ErrorCode::FencedInstanceId);
        }
        if request.generation_id < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        if !group.has_member(&request.member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        if request.generation_id != group.generation_id {
            return Err(ErrorCode::IllegalGeneration);
        }
        match group.state {
            // Commits during PreparingRebalance are how members commit what
            // they consumed before giving partitions up.
            GroupState::Stable | GroupState::PreparingRebalance => Ok(()),
            GroupState::CompletingRebalance => Err(ErrorCode::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(ErrorCode::UnknownMemberId),
        }
    }

    /// Applies a commit whose records were appended.
    pub fn complete_commit(&mut self, now_ms: i64, pending: &PendingCommit) {
        for record in &pending.records {
            self.replay(now_ms, record);
        }
    }

    /// OffsetFetch: the committed offsets of `topics` (all when `None`).
    pub fn offset_fetch(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<FetchedOffsets, ErrorCode> {
        self.check_group_id(group_id, true)?;
        let group = self
            .groups
            .get(group_id)
            .filter(|g| g.state != GroupState::Dead);
        let lookup = |topic: &str, partition: i32| {
            group.and_then(|g| g.offsets.get(&(topic.to_owned(), partition)).cloned())
        };
        if let Some(topics) = topics {
            return Ok(topics
                .iter()
                .map(|(topic, partitions)| {
                    let found = partitions.iter().map(|p| (*p, lookup(topic, *p))).collect();
                    (topic.clone(), found)
                })
                .collect());
        }
        let mut all: FetchedOffsets = Vec::new();
        for ((topic, partition), offset) in group.iter().flat_map(|g| g.offsets.iter()) {
            match all.last_mut() {
                Some((last, partitions)) if last == topic => {
                    partitions.push((*partition, Some(offset.clone())))
                }
                _ => all.push((topic.clone(), vec![(*partition, Some(offset.clone()))])),
            }
        }
        Ok(all)
    }

    /// Expires offsets older than `offsets_retention` (KIP-211): all offsets
    /// of a consumer group that has been Empty that long, and each offset of
    /// a simple group (no protocol type) committed that long ago. A group
    /// left Empty with no offsets is deleted. Returns the tombstones to
    /// append; memory is updated at once (a lost tombstone only means the
    /// offset expires again after a restart).
    pub fn expire_offsets(&mut self, now_ms: i64) -> Vec<Output> {
        let retention_ms = self.config.offsets_retention_ms;
        let mut ids: Vec<String> = self.groups.keys().cloned().collect();
        ids.sort();
        let mut out = Vec::new();
        for group_id in ids {
            if !self.owns_loaded(&group_id) {
                continue;
            }
            let Some(group) = self.groups.get_mut(&group_id) else {
                continue;
            };
            let empty = group.state == GroupState::Empty;
            let expired: Vec<(String, i32)> = if empty && group.protocol_type.is_some() {
                if now_ms.saturating_sub(group.state_since_ms) >= retention_ms {
                    group.offsets.keys().cloned().collect()
                } else {
                    Vec::new()
                }
            } else if empty {
                group
                    .offsets
                    .iter()
                    .filter(|(_, o)| now_ms.saturating_sub(o.commit_timestamp_ms) >= retention_ms)
                    .map(|(k, _)| k.clone())
                    .collect()
            } else {
                Vec::new()
            };
            let mut records = self.remove_offsets(&group_id, &expired);
            records.extend(self.delete_if_abandoned(&group_id));
            if !records.is_empty() {
                let partition = self.partition_for(&group_id);
                out.push(Output::Persist {
                    group_id,
                    partition,
                    records,
                });
            }
        }
        out
    }

    /// Drops the offsets of deleted topics from every group.
    pub fn topics_deleted(&mut self, topics: &[String]) -> Vec<Output> {
        let mut ids: Vec<String> = self.groups.keys().cloned().collect();
        ids.sort();
        let mut out = Vec::new();
        for group_id in ids {
            let Some(group) = self.groups.get(&group_id) else {
                continue;
            };
            let gone: Vec<(String, i32)> = group
                .offsets
                .keys()
                .filter(|(topic, _)| topics.contains(topic))
                .cloned()
                .collect();
            let mut records = self.remove_offsets(&group_id, &gone);
            records.extend(self.delete_if_abandoned(&group_id));
            if !records.is_empty() {
                let partition = self.partition_for(&group_id);
                out.push(Output::Persist {
                    group_id,
                    partition,
                    records,
                });
            }
        }
        out
    }

    fn remove_offsets(&mut self, group_id: &str, keys: &[(String, i32)]) -> Vec<OffsetsRecord> {
        let mut records = Vec::with_capacity(keys.len());
        if let Some(group) = self.groups.get_mut(group_id) {
            for key in keys {
                if group.offsets.remove(key).is_some() {
                    records.push(OffsetsRecord::Offset {
                        group_id: group_id.to_owned(),
                        topic: key.0.clone(),
                        partition: key.1,
                        value: None,
                    });
                }
            }
        }
        records
    }

    /// Deletes an Empty group that has no offsets left; its metadata record
    /// gets a tombstone.
    fn delete_if_abandoned(&mut self, group_id: &str) -> Option<OffsetsRecord> {
        let group = self.groups.get(group_id)?;
        if group.state != GroupState::Empty
            || !group.offsets.is_empty()
            || !group.pending_members.is_empty()
        {
            return None;
        }
        self.groups.remove(group_id);
        Some(OffsetsRecord::Group {
            group_id: group_id.to_owned(),
            value: None,
        })
    }
}
