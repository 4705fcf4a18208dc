//! The client's error type.
//!
//! One enum for the library. It is `Clone` because one failure (a broker
//! rejecting a batch, a dropped connection) is reported to every record and
//! every caller waiting on it; I/O errors are therefore held in an `Arc`.

use std::sync::Arc;
use std::time::Duration;

use skiff_protocol::{DecodeError, ErrorCode};
use thiserror::Error;

/// Everything that can go wrong talking to brokers.
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// A bootstrap or advertised broker address could not be parsed or resolved.
    #[error("invalid broker address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The TCP or QUIC connection could not be established.
    #[error("cannot connect to broker {address}: {source}")]
    Connect {
        /// The broker address concerned.
        address: String,
        /// The underlying I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// QUIC or TLS failed (handshake, certificate, stream).
    #[error("QUIC connection to {address} failed: {reason}")]
    Quic {
        /// The broker address.
        address: String,
        /// What failed.
        reason: String,
    },
    /// The trust settings for QUIC could not be loaded.
    #[error("cannot load the broker certificate: {reason}")]
    Certificate {
        /// What failed.
        reason: String,
    },
    /// An established connection broke; in-flight requests on it fail with this.
    #[error("connection to {address} lost: {reason}")]
    Disconnected {
        /// The broker address.
        address: String,
        /// Why the connection ended.
        reason: String,
    },
    /// The broker sent bytes we could not decode.
    #[error("malformed response from {address}: {source}")]
    Decode {
        /// The broker address concerned.
        address: String,
        /// The decoding error.
        #[source]
        source: DecodeError,
    },
    /// We could not encode a request (a message type or version the codec lacks).
    #[error("cannot encode request: {0}")]
    Encode(#[source] DecodeError),
    /// No version of an API is supported by both the broker and this client.
    #[error("broker {address} does not support {api} in any version this client speaks")]
    UnsupportedVersion {
        /// The broker address.
        address: String,
        /// The API name.
        api: &'static str,
    },
    /// A broker answered with a Kafka error code.
    #[error("{context}: {} ({}){}", code.name(), code.code(), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        /// The Kafka error code.
        code: ErrorCode,
        /// What the client was doing.
        context: String,
        /// The broker's error message, if any.
        message: Option<String>,
    },
    /// A request got no answer within the request timeout.
    #[error("request to {address} timed out after {timeout:?}")]
    RequestTimeout {
        /// The broker address.
        address: String,
        /// The request timeout.
        timeout: Duration,
    },
    /// A record was not acknowledged within the delivery timeout.
    #[error("record not delivered within the delivery timeout of {timeout:?}: {last_error}")]
    DeliveryTimeout {
        /// The timeout that expired.
        timeout: Duration,
        /// The last error seen before giving up.
        last_error: String,
    },
    /// The topic does not exist (and was not created automatically).
    #[error("topic {topic:?} does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The partition number is outside the topic's partitions.
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// How many partitions the topic has.
        partitions: i32,
    },
    /// No bootstrap broker answered.
    #[error("no broker reachable (tried {tried}): {last_error}")]
    NoBrokerAvailable {
        /// The addresses tried.
        tried: String,
        /// The last connection error.
        last_error: String,
    },
    /// A record is larger than a configured limit.
    #[error("record of {record_bytes} bytes exceeds {limit} ({limit_bytes} bytes)")]
    RecordTooLarge {
        /// The record's size.
        record_bytes: usize,
        /// The setting that limits it.
        limit: &'static str,
        /// The limit.
        limit_bytes: usize,
    },
    /// The fetch position is outside the log and the reset policy is `None`.
    #[error(
        "offset {offset} is out of range for {topic}-{partition} and auto offset reset is none"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
    },
    /// The partition is not assigned to this consumer.
    #[error("{topic}-{partition} is not assigned to this consumer")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// An invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Some records accepted by the producer were not delivered.
    #[error("{failed_records} record(s) could not be delivered; first error: {first_error}")]
    Undelivered {
        /// How many records failed.
        failed_records: u64,
        /// The first failure.
        first_error: Box<Error>,
    },
    /// A group member's subscription or assignment bytes could not be decoded.
    #[error("malformed consumer protocol {what}: {reason}")]
    MalformedGroupData {
        /// Subscription or assignment.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The operation needs a group without members (offsets of an active
    /// group belong to its members).
    #[error("group {group:?} has {members} active member(s); stop its consumers first")]
    GroupNotEmpty {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
    },
    /// The consumer has no group (no `group_id`, or `subscribe` not called).
    #[error("the consumer is not in a group: {0}")]
    NoGroup(&'static str),
    /// The producer or consumer was closed.
    #[error("the {0} is closed")]
    Closed(&'static str),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A Kafka error code with what we were doing.
    pub fn kafka(code: ErrorCode, context: impl Into<String>, message: Option<String>) -> Self {
        Error::Kafka {
            code,
            context: context.into(),
            message,
        }
    }

    /// The Kafka error code, if the broker reported one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed: network failures,
    /// timeouts, and the Kafka codes the protocol marks as retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Quic { .. }
            | Error::Disconnected { .. }
            | Error::RequestTimeout { .. }
            | Error::NoBrokerAvailable { .. } => true,
            Error::Kafka { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// Whether the error means our metadata (leaders, partitions) is stale.
    pub fn invalidates_metadata(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => is_stale_metadata_code(*code),
            Error::Connect { .. } | Error::Disconnected { .. } | Error::Quic { .. } => true,
            _ => false,
        }
    }
}

/// Codes after which a client refreshes its metadata before retrying.
pub(crate) fn is_stale_metadata_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeaderOrFollower
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::KafkaStorageError
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka errors print their name and number so a shell user can look them up.
    #[test]
    fn kafka_error_display_names_the_code() {
        let error = Error::kafka(
            ErrorCode::NotLeaderOrFollower,
            "produce to t-0",
            Some("moved".into()),
        );
        assert_eq!(
            error.to_string(),
            "produce to t-0: NOT_LEADER_OR_FOLLOWER (6): moved"
        );
        assert!(error.is_retriable());
        assert!(error.invalidates_metadata());
        let fatal = Error::kafka(ErrorCode::MessageTooLarge, "produce", None);
        assert!(!fatal.is_retriable());
        assert!(!fatal.invalidates_metadata());
    }
}
