//! Cluster metadata as the client caches it: brokers, topics, partitions
//! and their leaders, decoded from Metadata responses.

use std::collections::BTreeMap;
use std::sync::Arc;

use skiff_protocol::api::messages::MetadataResponse;
use skiff_protocol::ErrorCode;

use crate::net::{BrokerAddress, Transport};

/// What the cluster told us about itself.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    /// The cluster id, if the broker reports one.
    pub cluster_id: Option<String>,
    /// The broker acting as controller (creates and deletes topics), -1 if unknown.
    pub controller_id: i32,
    /// Brokers by node id.
    pub brokers: BTreeMap<i32, BrokerAddress>,
    /// Topics by name. Holds only the topics asked about so far.
    pub topics: BTreeMap<String, Arc<TopicMetadata>>,
}

/// One topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// The topic name.
    pub name: String,
    /// The topic-level error, e.g. UNKNOWN_TOPIC_OR_PARTITION.
    pub error: Option<ErrorCode>,
    /// Whether this is an internal topic such as `__consumer_offsets`.
    pub is_internal: bool,
    /// Partitions in partition-number order.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// Number of partitions.
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// The partition with number `partition`.
    pub fn partition(&self, partition: i32) -> Option<&PartitionMetadata> {
        self.partitions
            .get(usize::try_from(partition).ok()?)
            .filter(|p| p.partition == partition)
            .or_else(|| self.partitions.iter().find(|p| p.partition == partition))
    }
}

/// One partition: who leads it and who holds replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition number.
    pub partition: i32,
    /// Node id of the leader, -1 when there is none right now.
    pub leader: i32,
    /// The leader's epoch, -1 if the broker does not report it.
    pub leader_epoch: i32,
    /// Node ids holding replicas.
    pub replicas: Vec<i32>,
    /// Node ids of the in-sync replicas.
    pub isr: Vec<i32>,
    /// A partition-level error such as LEADER_NOT_AVAILABLE.
    pub error: Option<ErrorCode>,
}

fn error_of(code: i16) -> Option<ErrorCode> {
    match ErrorCode::from_code(code) {
        ErrorCode::None => None,
        code => Some(code),
    }
}

/// Decodes a Metadata response. Brokers are reached with `transport`: a
/// broker advertises the listener a request came in on, so the transport
/// is that of the connection that asked.
pub(crate) fn from_response(response: &MetadataResponse, transport: Transport) -> ClusterMetadata {
    let brokers = response
        .brokers
        .iter()
        .filter_map(|b| {
            let port = u16::try_from(b.port).ok()?;
            Some((
                b.node_id.0,
                BrokerAddress {
                    transport,
                    host: b.host.to_string(),
                    port,
                },
            ))
        })
        .collect();
    let topics = response
        .topics
        .iter()
        .filter_map(|t| {
            let name = t.name.as_ref()?.to_string();
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                    isr: p.isr_nodes.iter().map(|n| n.0).collect(),
                    error: error_of(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            Some((
                name.clone(),
                Arc::new(TopicMetadata {
                    name,
                    error: error_of(t.error_code),
                    is_internal: t.is_internal,
                    partitions,
                }),
            ))
        })
        .collect();
    ClusterMetadata {
        cluster_id: response.cluster_id.as_ref().map(|c| c.to_string()),
        controller_id: response.controller_id.0,
        brokers,
        topics,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use skiff_protocol::api::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use skiff_protocol::api::messages::{BrokerId, TopicName};
    use skiff_protocol::api::StrBytes;

    /// A response decodes into brokers with the asking transport, topics
    /// with partitions sorted by number, and errors as codes.
    #[test]
    fn decodes_a_metadata_response() {
        let mut response = MetadataResponse::default();
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = BrokerId(3);
        broker.host = StrBytes::from_static_str("10.0.0.1");
        broker.port = 9093;
        response.brokers = vec![broker];
        response.controller_id = BrokerId(3);
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(TopicName(StrBytes::from_static_str("t")));
        topic.partitions = [1, 0]
            .into_iter()
            .map(|index| {
                let mut p = MetadataResponsePartition::default();
                p.partition_index = index;
                p.leader_id = BrokerId(3);
                p.error_code = if index == 1 { 5 } else { 0 };
                p
            })
            .collect();
        let mut missing = MetadataResponseTopic::default();
        missing.name = Some(TopicName(StrBytes::from_static_str("gone")));
        missing.error_code = 3;
        response.topics = vec![topic, missing];

        let metadata = from_response(&response, Transport::Quic);
        assert_eq!(metadata.brokers[&3], BrokerAddress::quic("10.0.0.1", 9093));
        assert_eq!(metadata.controller_id, 3);
        let t = &metadata.topics["t"];
        assert_eq!(
            t.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(
            t.partition(1).unwrap().error,
            Some(ErrorCode::LeaderNotAvailable)
        );
        assert_eq!(t.partition(2), None);
        assert_eq!(
            metadata.topics["gone"].error,
            Some(ErrorCode::UnknownTopicOrPartition)
        );
    }
}
