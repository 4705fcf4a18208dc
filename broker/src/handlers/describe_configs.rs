//! DescribeConfigs (key 32), versions 1–4, for topics and this broker.

use std::sync::Arc;

use skiff_protocol::api::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use skiff_protocol::api::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use skiff_protocol::ErrorCode;

use super::str_bytes;
use super::topics::{SOURCE_DEFAULT, SOURCE_TOPIC};
use crate::broker::Broker;
use crate::topic_config::{value_of, CONFIG_NAMES};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's `ConfigType` values used below.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;
/// `config_source` of a static broker setting.
const SOURCE_STATIC_BROKER: i8 = 4;

fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" => TYPE_LIST,
        "max.message.bytes" | "index.interval.bytes" | "num.partitions" | "message.max.bytes" => {
            TYPE_INT
        }
        "auto.create.topics.enable" => TYPE_BOOLEAN,
        _ => TYPE_LONG,
    }
}

fn entry(
    name: &str,
    value: String,
    source: i8,
    include_synonyms: bool,
) -> DescribeConfigsResourceResult {
    let mut result = DescribeConfigsResourceResult::default();
    result.name = str_bytes(name);
    result.value = Some(str_bytes(value.clone()));
    result.config_source = source;
    result.config_type = config_type(name);
    if include_synonyms {
        let mut synonym = DescribeConfigsSynonym::default();
        synonym.name = str_bytes(name);
        synonym.value = Some(str_bytes(value));
        synonym.source = source;
        result.synonyms = vec![synonym];
    }
    result
}

pub fn handle(broker: &Arc<Broker>, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        // Null (and, leniently, empty) means every config.
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
        };
        match resource.resource_type {
            RESOURCE_TOPIC => match broker.topics.get(resource.resource_name.as_str()) {
                Some(topic) => {
                    for name in CONFIG_NAMES.iter().filter(|n| wanted(n)) {
                        let Some(value) = value_of(&topic.settings, name) else {
                            continue;
                        };
                        let source = if topic.overrides.contains_key(*name) {
                            SOURCE_TOPIC
                        } else {
                            SOURCE_DEFAULT
                        };
                        result
                            .configs
                            .push(entry(name, value, source, request.include_synonyms));
                    }
                }
                None => {
                    result.error_code = ErrorCode::UnknownTopicOrPartition.code();
                    result.error_message = Some(str_bytes("unknown topic"));
                }
            },
            RESOURCE_BROKER => {
                let name = resource.resource_name.as_str();
                if !name.is_empty() && name != broker.config.node_id.to_string() {
                    result.error_code = ErrorCode::InvalidRequest.code();
                    result.error_message = Some(str_bytes(format!(
                        "this is broker {}",
                        broker.config.node_id
                    )));
                } else {
                    let defaults = &broker.config.topic;
                    let settings = [
                        (
                            "auto.create.topics.enable",
                            broker.config.auto_create_topics.to_string(),
                        ),
                        ("num.partitions", defaults.partitions.to_string()),
                        ("message.max.bytes", defaults.max_message_bytes.to_string()),
                        ("log.retention.ms", defaults.retention_ms.to_string()),
                        ("log.retention.bytes", defaults.retention_bytes.to_string()),
                        ("log.segment.bytes", defaults.segment_bytes.to_string()),
                    ];
                    for (name, value) in settings.into_iter().filter(|(n, _)| wanted(n)) {
                        result.configs.push(entry(
                            name,
                            value,
                            SOURCE_STATIC_BROKER,
                            request.include_synonyms,
                        ));
                    }
                }
            }
            other => {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message =
                    Some(str_bytes(format!("resource type {other} is not supported")));
            }
        }
        response.results.push(result);
    }
    response
}
