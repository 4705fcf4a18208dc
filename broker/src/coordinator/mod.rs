//! The group coordinator: a pure state machine for Kafka's classic consumer
//! group protocol (JoinGroup/SyncGroup/Heartbeat/LeaveGroup), committed
//! offsets, and the `__consumer_offsets` record format that persists both.
//!
//! # Design
//!
//! Nothing here performs I/O or reads a clock. Every call takes `now_ms`
//! (milliseconds since the Unix epoch) and returns what the broker must do,
//! so every transition and timeout is unit-tested with a hand-driven clock.
//!
//! - **Parked requests.** JoinGroup and SyncGroup often cannot be answered
//!   at once: a join waits for the other members, a follower's sync waits
//!   for the leader's. The caller passes a [`ReplyId`] with each; the answer
//!   comes back as an [`Output::Join`]/[`Output::Sync`] carrying that id,
//!   from this call or a later one (another member's request, a leave, or
//!   [`GroupCoordinator::tick`]). Every parked request is answered exactly
//!   once — superseded ones with REBALANCE_IN_PROGRESS, those of removed
//!   members with UNKNOWN_MEMBER_ID, of replaced static members with
//!   FENCED_INSTANCE_ID — so an async wrapper can hold a oneshot sender per
//!   `ReplyId` and never leak one.
//! - **Timers.** Session timeouts, the rebalance timeout, the initial
//!   rebalance delay and KIP-394 pending members are deadlines stored in the
//!   groups; [`GroupCoordinator::tick`] fires those due, and
//!   [`GroupCoordinator::next_deadline_ms`] says when to call it next.
//! - **Persistence.** Outputs are ordered. An [`Output::Persist`] asks for
//!   records to be appended to `__consumer_offsets` before any later output
//!   of the same call is delivered (a SyncGroup is answered only once the
//!   assignment is stored, as in Kafka). Offset commits are two-step — see
//!   [`offsets`] — so committed offsets in memory are always durable.
//! - **Loading.** On start, or on becoming leader of an offsets partition,
//!   the broker calls [`GroupCoordinator::begin_loading`], replays every
//!   record with [`GroupCoordinator::replay`], then
//!   [`GroupCoordinator::finish_loading`]; meanwhile requests for its groups
//!   answer COORDINATOR_LOAD_IN_PROGRESS, and groups of partitions it does
//!   not own NOT_COORDINATOR.
//!
//! # States
//!
//! Empty → PreparingRebalance → CompletingRebalance → Stable, and Dead, as
//! drawn in [`rebalance`]. Kafka's documentation of the classic protocol and
//! `GroupCoordinator.scala` are the reference for the checks and their order.
//!
//! [`crate::group_runtime`] wires it to the server, timers and the log.

pub mod admin;
pub mod group;
pub mod load;
pub mod membership;
pub mod offsets;
pub mod rebalance;
pub mod records;
pub mod state;
pub mod types;
pub mod wire;

#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_group_admin;
#[cfg(test)]
mod tests_lifecycle;
#[cfg(test)]
mod tests_membership;
#[cfg(test)]
mod tests_model;
#[cfg(test)]
mod tests_offsets;
#[cfg(test)]
mod tests_records;
#[cfg(test)]
mod tests_static_members;

pub use admin::{DescribedGroup, DescribedMember, ListedGroup};
pub use group::CommittedOffset;
pub use load::partition_for;
pub use offsets::{CommitPartition, CommitRequest, PendingCommit};
pub use records::{GroupMetadata, MemberMetadata, OffsetsRecord};
pub use state::{GroupCoordinator, MemberIdSource, RandomIds, SequentialIds};
pub use types::{
    CoordinatorConfig, GroupState, HeartbeatRequest, JoinMember, JoinRequest, JoinResponse,
    LeaveResponse, LeavingMember, Output, Protocol, ReplyId, SyncRequest, SyncResponse,
};
pub use wire::RecordError;

/// The internal topic holding group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
