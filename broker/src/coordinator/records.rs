//! The `__consumer_offsets` record format, byte for byte as Kafka stores it
//! (`group-coordinator/src/main/resources/common/message/*.json`), so a log
//! written by either can be read by the other's tools.
//!
//! Every key and value starts with a big-endian `int16` version. The key's
//! version says which record it is:
//!
//! ```text
//! key   := version:int16 body
//!   0|1 OffsetCommitKey     group:string topic:string partition:int32
//!   2   GroupMetadataKey    group:string
//!   3+  KIP-848 records     (not written by Skiff; skipped on replay)
//!
//! OffsetCommitValue (we write v3)
//!   v0  offset:int64 metadata:string commitTimestamp:int64
//!   v1  offset:int64 metadata:string commitTimestamp:int64 expireTimestamp:int64
//!   v2  offset:int64 metadata:string commitTimestamp:int64
//!   v3  offset:int64 leaderEpoch:int32 metadata:string commitTimestamp:int64
//!   v4  as v3, flexible (compact strings, tagged fields)
//!
//! GroupMetadataValue (we write v3)
//!   protocolType:string generation:int32 protocol:string? leader:string?
//!   currentStateTimestamp:int64 (v2+)
//!   members:[memberId:string groupInstanceId:string? (v3+) clientId:string
//!            clientHost:string rebalanceTimeout:int32 (v1+)
//!            sessionTimeout:int32 subscription:bytes assignment:bytes]
//!   v4 is flexible.
//! ```
//!
//! `string` is an `int16` length then UTF-8 (-1 = null), `bytes` an `int32`
//! length, arrays an `int32` count; flexible versions use unsigned varints of
//! length+1 and end each struct with tagged fields. A `null` value is a
//! tombstone: compaction then drops the key.

use bytes::{BufMut, Bytes, BytesMut};

use super::group::CommittedOffset;
use super::wire::{Reader, RecordError};

/// Key version of an OffsetCommitKey as Kafka writes it today.
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of a GroupMetadataKey.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Value versions Skiff writes.
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A member as persisted in a GroupMetadataValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A GroupMetadataValue: the group as of its last completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

/// One `__consumer_offsets` record; a `None` value is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    Offset {
        group_id: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    Group {
        group_id: String,
        value: Option<GroupMetadata>,
    },
}

impl OffsetsRecord {
    /// The group the record belongs to, which decides its partition.
    pub fn group_id(&self) -> &str {
        match self {
            OffsetsRecord::Offset { group_id, .. } | OffsetsRecord::Group { group_id, .. } => {
                group_id
            }
        }
    }

    pub fn key_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            OffsetsRecord::Offset {
                group_id,
                topic,
                partition,
                ..
            } => {
                buf.put_i16(OFFSET_COMMIT_KEY_VERSION);
                put_string(&mut buf, group_id);
                put_string(&mut buf, topic);
                buf.put_i32(*partition);
            }
            OffsetsRecord::Group { group_id, .. } => {
                buf.put_i16(GROUP_METADATA_KEY_VERSION);
                put_string(&mut buf, group_id);
            }
        }
        buf.freeze()
    }

    /// The value, or `None` for a tombstone.
    pub fn value_bytes(&self) -> Option<Bytes> {
        let mut buf = BytesMut::new();
        match self {
            OffsetsRecord::Offset { value, .. } => {
                let value = value.as_ref()?;
                buf.put_i16(OFFSET_COMMIT_VALUE_VERSION);
                buf.put_i64(value.offset);
                buf.put_i32(value.leader_epoch);
                put_string(&mut buf, &value.metadata);
                buf.put_i64(value.commit_timestamp_ms);
            }
            OffsetsRecord::Group { value, .. } => {
                let value = value.as_ref()?;
                buf.put_i16(GROUP_METADATA_VALUE_VERSION);
                put_string(&mut buf, &value.protocol_type);
                buf.put_i32(value.generation_id);
                put_nullable_string(&mut buf, value.protocol_name.as_deref());
                put_nullable_string(&mut buf, value.leader_id.as_deref());
                buf.put_i64(value.current_state_timestamp_ms);
                let count = i32::try_from(value.members.len()).unwrap_or(i32::MAX);
                buf.put_i32(count);
                for member in &value.members {
                    put_string(&mut buf, &member.member_id);
                    put_nullable_string(&mut buf, member.group_instance_id.as_deref());
                    put_string(&mut buf, &member.client_id);
                    put_string(&mut buf, &member.client_host);
                    buf.put_i32(member.rebalance_timeout_ms);
                    buf.put_i32(member.session_timeout_ms);
                    put_bytes(&mut buf, &member.subscription);
                    put_bytes(&mut buf, &member.assignment);
                }
            }
        }
        Some(buf.freeze())
    }

    /// Decodes a record read from `__consumer_offsets`. `Ok(None)` for record
    /// types Skiff does not use (KIP-848 and share groups), which replay skips.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<OffsetsRecord>, RecordError> {
        let mut reader = Reader::new(key, false);
        let key_version = reader.i16("key version")?;
        match key_version {
            0 | 1 => {
                let group_id = reader.string("group")?;
                let topic = reader.string("topic")?;
                let partition = reader.i32("partition")?;
                let value = value.map(decode_offset_value).transpose()?;
                Ok(Some(OffsetsRecord::Offset {
                    group_id,
                    topic,
                    partition,
                    value,
                }))
            }
            2 => {
                let group_id = reader.string("group")?;
                let value = value.map(decode_group_value).transpose()?;
                Ok(Some(OffsetsRecord::Group { group_id, value }))
            }
            _ => Ok(None),
        }
    }
}

fn decode_offset_value(bytes: &[u8]) -> Result<CommittedOffset, RecordError> {
    let version = Reader::new(bytes, false).i16("value version")?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnknownVersion {
            what: "OffsetCommitValue",
            version,
        });
    }
    let mut reader = Reader::new(&bytes[2..], version >= 4);
    let offset = reader.i64("offset")?;
    let leader_epoch = if version >= 3 {
        reader.i32("leaderEpoch")?
    } else {
        -1
    };
    let metadata = reader.string("metadata")?;
    let commit_timestamp_ms = reader.i64("commitTimestamp")?;
    if version == 1 {
        reader.i64("expireTimestamp")?;
    }
    reader.tagged_fields()?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(bytes: &[u8]) -> Result<GroupMetadata, RecordError> {
    let version = Reader::new(bytes, false).i16("value version")?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnknownVersion {
            what: "GroupMetadataValue",
            version,
        });
    }
    let mut reader = Reader::new(&bytes[2..], version >= 4);
    let protocol_type = reader.string("protocolType")?;
    let generation_id = reader.i32("generation")?;
    let protocol_name = reader.nullable_string("protocol")?;
    let leader_id = reader.nullable_string("leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        reader.i64("currentStateTimestamp")?
    } else {
        -1
    };
    // Each member takes at least 4 bytes, so the count is bounded by what is left.
    let count = reader.array_len("members", 4)?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = reader.string("memberId")?;
        let group_instance_id = if version >= 3 {
            reader.nullable_string("groupInstanceId")?
        } else {
            None
        };
        let client_id = reader.string("clientId")?;
        let client_host = reader.string("clientHost")?;
        let rebalance_timeout_ms = if version >= 1 {
            reader.i32("rebalanceTimeout")?
        } else {
            -1
        };
        let session_timeout_ms = reader.i32("sessionTimeout")?;
        let subscription = reader.bytes("subscription")?;
        let assignment = reader.bytes("assignment")?;
        reader.tagged_fields()?;
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        };
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    reader.tagged_fields()?;
    Ok(GroupMetadata {
        protocol_type,
        generation_id,
        protocol_name,
        leader_id,
        current_state_timestamp_ms,
        members,
    })
}

fn put_string(buf: &mut BytesMut, value: &str) {
    // Group ids, topics and member ids are bounded far below i16::MAX by the
    // request decoder (they arrive as int16-length strings themselves).
    let len = i16::try_from(value.len()).unwrap_or(i16::MAX);
    buf.put_i16(len);
    buf.put_slice(&value.as_bytes()[..len as usize]);
}

fn put_nullable_string(buf: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => put_string(buf, value),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, value: &[u8]) {
    let len = i32::try_from(value.len()).unwrap_or(i32::MAX);
    buf.put_i32(len);
    buf.put_slice(&value[..len as usize]);
}
