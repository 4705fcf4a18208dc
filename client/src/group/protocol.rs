//! The "consumer" embedded protocol: what a member puts in JoinGroup's
//! protocol metadata (its subscription) and what the leader puts in
//! SyncGroup's assignments.
//!
//! Both are a big-endian `int16` version followed by the message body as
//! defined by Kafka's `ConsumerProtocolSubscription.json` and
//! `ConsumerProtocolAssignment.json` (the bodies are encoded by the
//! `kafka-protocol` crate):
//!
//! ```text
//! +---------+------------------------------------------------------+
//! | version | body (topics, user data, owned partitions,           |
//! | int16   |       generation id v2+, rack id v3+)                |
//! +---------+------------------------------------------------------+
//! ```
//!
//! As in Kafka's `ConsumerProtocol`, a version newer than this client knows
//! is read as the newest it knows (later versions only append fields).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::consumer::TopicPartition;
use crate::error::{Error, Result};

/// The JoinGroup protocol type of consumer groups.
pub const PROTOCOL_TYPE: &str = "consumer";

/// Version written for subscriptions: v1 carries owned partitions, which
/// cooperative rebalancing needs; v2 adds the generation sticky assignors
/// use to settle conflicting claims.
const SUBSCRIPTION_VERSION: i16 = 2;
/// Newest subscription version this client reads.
const SUBSCRIPTION_VERSION_MAX: i16 = 3;
/// Version written for assignments (all versions share one layout).
const ASSIGNMENT_VERSION: i16 = 1;
const ASSIGNMENT_VERSION_MAX: i16 = 3;

/// What one member asks for: its topics and what it owns now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Partitions the member owns from the last generation (cooperative
    /// and sticky assignors keep them where they can).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation the owned partitions come from, -1 if unknown.
    pub generation: i32,
    /// Assignor-specific bytes.
    pub user_data: Option<Bytes>,
}

/// What the leader gives one member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// The member's partitions.
    pub partitions: Vec<TopicPartition>,
    /// Assignor-specific bytes.
    pub user_data: Option<Bytes>,
}

fn malformed(what: &'static str, error: impl std::fmt::Display) -> Error {
    Error::MalformedGroupData {
        what,
        reason: format!("{error:#}"),
    }
}

fn read_version(bytes: &mut Bytes, what: &'static str, max: i16) -> Result<i16> {
    if bytes.remaining() < 2 {
        return Err(malformed(what, "shorter than its version field"));
    }
    let version = bytes.get_i16();
    if version < 0 {
        return Err(malformed(what, format!("negative version {version}")));
    }
    Ok(version.min(max))
}

fn grouped(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    by_topic
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

impl Subscription {
    /// Encodes the subscription for JoinGroup's protocol metadata.
    pub fn encode(&self) -> Result<Bytes> {
        let message = ConsumerProtocolSubscription::default()
            .with_topics(
                self.topics
                    .iter()
                    .map(|t| StrBytes::from_string(t.clone()))
                    .collect(),
            )
            .with_user_data(self.user_data.clone())
            .with_owned_partitions(
                grouped(&self.owned_partitions)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OwnedTopic::default()
                            .with_topic(topic_name(topic))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_generation_id(self.generation);
        let mut out = BytesMut::new();
        out.put_i16(SUBSCRIPTION_VERSION);
        message
            .encode(&mut out, SUBSCRIPTION_VERSION)
            .map_err(|e| malformed("subscription", e))?;
        Ok(out.freeze())
    }

    /// Decodes a member's protocol metadata.
    pub fn decode(mut bytes: Bytes) -> Result<Subscription> {
        let version = read_version(&mut bytes, "subscription", SUBSCRIPTION_VERSION_MAX)?;
        let message = ConsumerProtocolSubscription::decode(&mut bytes, version)
            .map_err(|e| malformed("subscription", e))?;
        Ok(Subscription {
            topics: message.topics.iter().map(|t| t.to_string()).collect(),
            owned_partitions: message
                .owned_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
                })
                .collect(),
            generation: message.generation_id,
            user_data: message.user_data,
        })
    }
}

impl Assignment {
    /// Encodes the assignment for SyncGroup.
    pub fn encode(&self) -> Result<Bytes> {
        let message = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(
                grouped(&self.partitions)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        AssignedTopic::default()
                            .with_topic(topic_name(topic))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_user_data(self.user_data.clone());
        let mut out = BytesMut::new();
        out.put_i16(ASSIGNMENT_VERSION);
        message
            .encode(&mut out, ASSIGNMENT_VERSION)
            .map_err(|e| malformed("assignment", e))?;
        Ok(out.freeze())
    }

    /// Decodes SyncGroup's assignment. An empty byte string is an empty
    /// assignment (Kafka sends one to members the leader left out).
    pub fn decode(mut bytes: Bytes) -> Result<Assignment> {
        if bytes.is_empty() {
            return Ok(Assignment::default());
        }
        let version = read_version(&mut bytes, "assignment", ASSIGNMENT_VERSION_MAX)?;
        let message = ConsumerProtocolAssignment::decode(&mut bytes, version)
            .map_err(|e| malformed("assignment", e))?;
        Ok(Assignment {
            partitions: message
                .assigned_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| TopicPartition::new(t.topic.0.as_str(), *p))
                })
                .collect(),
            user_data: message.user_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn partitions() -> impl Strategy<Value = Vec<TopicPartition>> {
        // Sorted and unique: encoding groups by topic, so that is the order
        // a round trip gives back.
        proptest::collection::btree_set(("[a-c]{1,3}", 0..50i32), 0..20).prop_map(|set| {
            set.into_iter()
                .map(|(t, p)| TopicPartition::new(t, p))
                .collect()
        })
    }

    proptest! {
        /// Any subscription survives encode then decode unchanged.
        #[test]
        fn subscription_round_trips(
            topics in proptest::collection::vec("[a-z.-]{1,20}", 0..5),
            owned in partitions(),
            generation in -1..1000i32,
            user_data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        ) {
            let subscription = Subscription {
                topics,
                owned_partitions: owned,
                generation,
                user_data: user_data.map(Bytes::from),
            };
            let decoded = Subscription::decode(subscription.encode()?)?;
            prop_assert_eq!(decoded, subscription);
        }

        /// Any assignment survives encode then decode unchanged.
        #[test]
        fn assignment_round_trips(
            assigned in partitions(),
            user_data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        ) {
            let assignment = Assignment { partitions: assigned, user_data: user_data.map(Bytes::from) };
            let decoded = Assignment::decode(assignment.encode()?)?;
            prop_assert_eq!(decoded, assignment);
        }

        /// Arbitrary bytes decode to a value or a typed error, never a panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Subscription::decode(Bytes::from(bytes.clone()));
            let _ = Assignment::decode(Bytes::from(bytes));
        }
    }

    /// A version-0 subscription as librdkafka and old Java clients send it
    /// (topics and user data only) decodes with no owned partitions.
    #[test]
    fn decodes_version_0_subscription() -> Result<()> {
        let mut bytes = BytesMut::new();
        bytes.put_i16(0);
        bytes.put_i32(1); // one topic
        bytes.put_i16(6);
        bytes.put_slice(b"events");
        bytes.put_i32(-1); // null user data
        let decoded = Subscription::decode(bytes.freeze())?;
        assert_eq!(decoded.topics, vec!["events".to_string()]);
        assert!(decoded.owned_partitions.is_empty());
        assert_eq!(decoded.generation, -1);
        Ok(())
    }

    /// A newer version than we know is read with the newest layout we know,
    /// so a future client's extra trailing fields do not break us.
    #[test]
    fn newer_versions_read_as_newest_known() -> Result<()> {
        let subscription = Subscription {
            topics: vec!["t".into()],
            owned_partitions: vec![TopicPartition::new("t", 3)],
            generation: 7,
            user_data: None,
        };
        let mut body = subscription.encode()?.slice(2..).to_vec();
        body.extend_from_slice(&[0xff, 0xff]); // rack id null (v3)
        body.extend_from_slice(b"future");
        let mut bytes = BytesMut::new();
        bytes.put_i16(9);
        bytes.put_slice(&body);
        assert_eq!(Subscription::decode(bytes.freeze())?, subscription);
        Ok(())
    }

    /// Truncated and negative-version inputs are typed errors.
    #[test]
    fn bad_input_is_a_typed_error() -> Result<()> {
        assert!(Subscription::decode(Bytes::from_static(&[0])).is_err());
        assert!(Subscription::decode(Bytes::from_static(&[0xff, 0xff])).is_err());
        let full = Assignment {
            partitions: vec![TopicPartition::new("t", 1)],
            user_data: None,
        }
        .encode()?;
        assert!(Assignment::decode(full.slice(..full.len() - 1)).is_err());
        assert_eq!(Assignment::decode(Bytes::new())?, Assignment::default());
        Ok(())
    }
}
