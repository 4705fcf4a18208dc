//! Metadata (key 3), versions 0–12: the one broker, and the requested topics.
//!
//! A null topic list (v1+), or an empty one in v0, means every topic.
//! Unknown topics are created when auto-creation is on and the client allows
//! it (`allow_auto_topic_creation`, v4+). Topics addressed by id only (v12)
//! are UNKNOWN_TOPIC_ID: this broker has no topic ids yet.

use std::sync::Arc;

use skiff_protocol::api::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use skiff_protocol::api::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use skiff_protocol::ErrorCode;

use super::{str_bytes, topic_error_code};
use crate::broker::Broker;
use crate::topics::Topic;

/// Kafka's `AclOperation` bits a topic supports: READ 3, WRITE 4, CREATE 5,
/// DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11.
const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

pub fn handle(broker: &Arc<Broker>, version: i16, request: MetadataRequest) -> MetadataResponse {
    let node = BrokerId(broker.config.node_id);
    let mut response = MetadataResponse::default();
    let mut own = MetadataResponseBroker::default();
    own.node_id = node;
    own.host = str_bytes(broker.advertised_host.clone());
    own.port = broker.advertised_port;
    response.brokers = vec![own];
    response.cluster_id = Some(str_bytes(broker.topics.cluster_id()));
    response.controller_id = node;

    // Without ACLs every operation is allowed; v8+ clients may ask which.
    let operations = (version >= 8 && request.include_topic_authorized_operations)
        .then_some(TOPIC_OPERATIONS_ALL);
    let all_topics = match &request.topics {
        None => true,
        Some(topics) => version == 0 && topics.is_empty(),
    };
    if all_topics {
        response.topics = broker
            .topics
            .list()
            .iter()
            .map(|t| describe(t, node, operations))
            .collect();
        return response;
    }
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    for requested in request.topics.unwrap_or_default() {
        let Some(name) = requested.name else {
            let mut topic = MetadataResponseTopic::default();
            topic.error_code = ErrorCode::UnknownTopicId.code();
            topic.name = None;
            topic.topic_id = requested.topic_id;
            response.topics.push(topic);
            continue;
        };
        match broker.topic_or_create(name.as_str(), allow_auto_create) {
            Ok(topic) => response.topics.push(describe(&topic, node, operations)),
            Err(error) => {
                let mut topic = MetadataResponseTopic::default();
                topic.error_code = topic_error_code(&error).code();
                topic.name = Some(name);
                response.topics.push(topic);
            }
        }
    }
    response
}

fn describe(topic: &Topic, node: BrokerId, operations: Option<i32>) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    if let Some(operations) = operations {
        out.topic_authorized_operations = operations;
    }
    out.name = Some(TopicName(str_bytes(topic.name.clone())));
    out.is_internal = topic.name == crate::coordinator::OFFSETS_TOPIC;
    out.partitions = topic
        .partitions
        .iter()
        .map(|partition| {
            let mut p = MetadataResponsePartition::default();
            p.partition_index = partition.index;
            p.leader_id = node;
            p.leader_epoch = 0;
            p.replica_nodes = vec![node];
            p.isr_nodes = vec![node];
            p
        })
        .collect();
    out
}
