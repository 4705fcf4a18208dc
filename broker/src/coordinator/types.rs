//! The coordinator's inputs and outputs: plain request/response values the
//! broker translates from and to Kafka messages, plus the [`Output`] effects.
//!
//! The types mirror the Kafka messages' fields but use owned Rust values, so
//! the state machine does not depend on one message version: the handler fills
//! in defaults for fields older versions lack (e.g. `rebalance_timeout_ms` =
//! `session_timeout_ms` for JoinGroup v0).

use bytes::Bytes;
use skiff_protocol::ErrorCode;

use super::records::OffsetsRecord;

/// Identifies a parked request (JoinGroup or SyncGroup) so its response can be
/// delivered later. Chosen by the caller; the coordinator only hands it back.
pub type ReplyId = u64;

/// The member id a JoinGroup carries when the member has none yet.
pub const UNKNOWN_MEMBER_ID: &str = "";

/// Group coordinator limits and timings; defaults are Kafka's.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Partitions of `__consumer_offsets` (`offsets.topic.num.partitions`).
    pub offsets_partitions: u32,
    /// `group.min.session.timeout.ms`.
    pub session_timeout_min_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_max_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an
    /// empty group waits for more members, so a fleet starting together does
    /// not rebalance once per member.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`.
    pub group_members_max: usize,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: i64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            offsets_partitions: 50,
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            group_members_max: usize::MAX,
            offset_metadata_max_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

/// One protocol a joining member supports (for consumers: an assignor name
/// and the ConsumerProtocol subscription bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty ([`UNKNOWN_MEMBER_ID`]) on a member's first join.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// For JoinGroup v0, the session timeout.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+ (KIP-394): a dynamic member's first join is answered
    /// MEMBER_ID_REQUIRED with its new id, and it joins for real with that id.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    /// KIP-814: a static leader that rejoined without a rebalance must not
    /// compute a new assignment.
    pub skip_assignment: bool,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    pub(crate) fn error(error: ErrorCode, member_id: &str) -> JoinResponse {
        JoinResponse {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub generation_id: i32,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment, member id → assignment bytes; empty for others.
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub(crate) fn error(error: ErrorCode) -> SyncResponse {
        SyncResponse {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A Heartbeat request.
#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub generation_id: i32,
    pub group_instance_id: Option<String>,
}

/// One member leaving (LeaveGroup v3+ batches them; v0–2 carry one member id).
#[derive(Debug, Clone)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// A LeaveGroup response: a group-level error and one error per member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error: ErrorCode,
    pub members: Vec<(String, Option<String>, ErrorCode)>,
}

/// What the broker must do after a coordinator call, **in order**.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Answer the parked JoinGroup `reply`.
    Join {
        reply: ReplyId,
        response: JoinResponse,
    },
    /// Answer the parked SyncGroup `reply`.
    Sync {
        reply: ReplyId,
        response: SyncResponse,
    },
    /// Append these records to `__consumer_offsets` partition `partition`
    /// before delivering any later output of the same call. If the append
    /// fails, answer those later outputs with COORDINATOR_NOT_AVAILABLE
    /// instead and call `GroupCoordinator::persist_failed`.
    Persist {
        group_id: String,
        partition: i32,
        records: Vec<OffsetsRecord>,
    },
}

/// The state names DescribeGroups and ListGroups report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's spelling, as DescribeGroups and ListGroups (v4+ filter) use it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}
