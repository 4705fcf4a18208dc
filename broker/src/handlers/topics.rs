//! CreateTopics (key 19, versions 2–6) and DeleteTopics (key 20, versions 1–5).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use skiff_protocol::api::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use skiff_protocol::api::messages::delete_topics_response::DeletableTopicResult;
use skiff_protocol::api::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
};
use skiff_protocol::ErrorCode;

use super::{str_bytes, topic_error_code};
use crate::broker::Broker;
use crate::config::TopicDefaults;
use crate::topic_config::{value_of, CONFIG_NAMES};

/// `config_source` of DescribeConfigs/CreateTopics: set for this topic.
pub const SOURCE_TOPIC: i8 = 1;
/// `config_source`: the broker's default.
pub const SOURCE_DEFAULT: i8 = 5;

pub fn create(
    broker: &Arc<Broker>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let node = broker.config.node_id;
    let mut response = CreateTopicsResponse::default();
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.as_str().to_string()))
        .map(|t| t.name.as_str().to_string())
        .collect();
    for topic in request.topics {
        let name = topic.name.as_str().to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        let fail = |result: &mut CreatableTopicResult, code: ErrorCode, message: String| {
            result.error_code = code.code();
            result.error_message = Some(str_bytes(message));
        };
        if duplicates.contains(&name) {
            fail(
                &mut result,
                ErrorCode::InvalidRequest,
                format!("topic {name} appears twice in the request"),
            );
            response.topics.push(result);
            continue;
        }
        if name == crate::coordinator::OFFSETS_TOPIC && broker.topics.get(&name).is_none() {
            // The coordinator creates it, with its partition count and
            // compaction; one made by a client would not fit.
            fail(
                &mut result,
                ErrorCode::InvalidRequest,
                format!("{name} is an internal topic, created by the group coordinator"),
            );
            response.topics.push(result);
            continue;
        }
        if topic.replication_factor != -1 && topic.replication_factor != 1 {
            fail(
                &mut result,
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {} but this cluster has one broker",
                    topic.replication_factor
                ),
            );
            response.topics.push(result);
            continue;
        }
        let mut partitions = topic.num_partitions;
        if !topic.assignments.is_empty() {
            let only_this_node = topic
                .assignments
                .iter()
                .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node);
            if partitions != -1 || !only_this_node {
                fail(
                    &mut result,
                    ErrorCode::InvalidReplicaAssignment,
                    format!(
                        "replicas may only be assigned to broker {node}, with num_partitions -1"
                    ),
                );
                response.topics.push(result);
                continue;
            }
            partitions = topic.assignments.len() as i32;
        }
        let mut overrides = BTreeMap::new();
        let mut null_config = None;
        for config in &topic.configs {
            match &config.value {
                Some(value) => {
                    overrides.insert(config.name.as_str().to_string(), value.as_str().to_string());
                }
                None => null_config = Some(config.name.as_str().to_string()),
            }
        }
        if let Some(config) = null_config {
            fail(
                &mut result,
                ErrorCode::InvalidConfig,
                format!("config {config} has a null value"),
            );
            response.topics.push(result);
            continue;
        }
        let partitions = if partitions == -1 {
            broker.config.topic.partitions
        } else {
            partitions
        };
        let outcome = if request.validate_only {
            broker
                .topics
                .validate_creation(&name, partitions, &overrides)
        } else {
            broker
                .topics
                .create(&name, partitions, overrides.clone())
                .map(|t| t.settings.clone())
        };
        match outcome {
            Ok(settings) => {
                if version >= 5 {
                    result.num_partitions = partitions;
                    result.replication_factor = 1;
                    result.configs = Some(describe_created(&settings, &overrides));
                }
            }
            Err(error) => fail(&mut result, topic_error_code(&error), error.to_string()),
        }
        response.topics.push(result);
    }
    response
}

fn describe_created(
    settings: &TopicDefaults,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    CONFIG_NAMES
        .iter()
        .map(|name| {
            let mut config = CreatableTopicConfigs::default();
            config.name = str_bytes(*name);
            config.value = value_of(settings, name).map(str_bytes);
            config.config_source = if overrides.contains_key(*name) {
                SOURCE_TOPIC
            } else {
                SOURCE_DEFAULT
            };
            config
        })
        .collect()
}

pub fn delete(
    broker: &Arc<Broker>,
    _version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    for name in request.topic_names {
        let mut result = DeletableTopicResult::default();
        if name.as_str() == crate::coordinator::OFFSETS_TOPIC {
            // As Kafka's controller: internal topics cannot be deleted.
            result.error_code = ErrorCode::InvalidRequest.code();
            result.error_message = Some(str_bytes(
                "__consumer_offsets is an internal topic and cannot be deleted",
            ));
        } else if let Err(error) = broker.topics.delete(name.as_str()) {
            result.error_code = topic_error_code(&error).code();
            result.error_message = Some(str_bytes(error.to_string()));
        } else {
            broker.groups.topics_deleted(&[name.as_str().to_owned()]);
        }
        result.name = Some(name);
        response.responses.push(result);
    }
    response
}
