//! Cluster administration: topics (create, delete, describe with their
//! configs, list), offsets, and cluster metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use skiff_protocol::api::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use skiff_protocol::api::messages::delete_topics_request::DeleteTopicState;
use skiff_protocol::api::messages::describe_configs_request::DescribeConfigsResource;
use skiff_protocol::api::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, TopicName,
};
use skiff_protocol::api::{ApiKey, StrBytes};
use skiff_protocol::ErrorCode;

use crate::client::Client;
use crate::consumer::{list_offsets, ListedOffset, OffsetSpec, TopicPartition};
use crate::error::{Error, Result};
use crate::metadata::{ClusterMetadata, TopicMetadata};

/// Kafka's resource type number for topics in DescribeConfigs.
const RESOURCE_TYPE_TOPIC: i8 = 2;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// The name.
    pub name: String,
    /// Number of partitions; -1 for the broker's default.
    pub partitions: i32,
    /// Replicas per partition; -1 for the broker's default.
    pub replication_factor: i16,
    /// Topic configs such as `retention.ms` or `cleanup.policy`.
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and the broker's default replication.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
        }
    }

    /// Adds a topic config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// One config entry of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The config name.
    pub name: String,
    /// Its value (`None` for sensitive or unset values).
    pub value: Option<String>,
    /// Whether the value is a default rather than set on the topic.
    pub is_default: bool,
    /// Whether it cannot be changed.
    pub read_only: bool,
}

/// A topic with its partitions and configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Partitions, leaders and replicas.
    pub metadata: TopicMetadata,
    /// The topic's configs (empty if the broker does not support DescribeConfigs).
    pub configs: Vec<ConfigEntry>,
}

/// Administers a cluster.
///
/// ```no_run
/// # async fn demo(client: skiff_client::Client) -> skiff_client::Result<()> {
/// use skiff_client::{Admin, NewTopic};
///
/// let admin = Admin::new(client);
/// admin.create_topic(NewTopic::new("orders", 6).config("retention.ms", "604800000")).await?;
/// let names = admin.list_topics(false).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
    timeout: Duration,
}

impl Admin {
    /// An admin on `client`; operations wait up to the client's request timeout.
    pub fn new(client: Client) -> Admin {
        let timeout = client.config().connection.request_timeout;
        Admin { client, timeout }
    }

    /// The client this admin uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// Creates topics; the result per topic, in order.
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<Vec<Result<()>>> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(false)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(&t.name))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let connection = self.client.controller_connection().await?;
        let response = connection.request(request).await?;
        let results = topics
            .iter()
            .map(|topic| {
                let Some(result) = response
                    .topics
                    .iter()
                    .find(|r| r.name.0.as_str() == topic.name)
                else {
                    return Err(Error::kafka(
                        ErrorCode::UnknownServerError,
                        format!("create topic {:?}", topic.name),
                        Some("the broker did not answer for this topic".into()),
                    ));
                };
                match ErrorCode::from_code(result.error_code) {
                    ErrorCode::None => Ok(()),
                    code => Err(Error::kafka(
                        code,
                        format!("create topic {:?}", topic.name),
                        result.error_message.as_ref().map(ToString::to_string),
                    )),
                }
            })
            .collect();
        self.client.invalidate_metadata();
        Ok(results)
    }

    /// Creates one topic.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        self.create_topics(std::slice::from_ref(&topic))
            .await?
            .pop()
            .unwrap_or(Err(Error::Closed("admin")))
    }

    /// Deletes topics; the result per topic, in order.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<Vec<Result<()>>> {
        let connection = self.client.controller_connection().await?;
        let version = connection.version(ApiKey::DeleteTopics)?;
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(self.timeout_ms());
        if version >= 6 {
            request.topics = names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                .collect();
        } else {
            request.topic_names = names.iter().map(|n| topic_name(n)).collect();
        }
        let response = connection.request_at(request, version).await?;
        let results = names
            .iter()
            .map(|name| {
                let result = response
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == *name));
                match result.map(|r| (ErrorCode::from_code(r.error_code), r.error_message.clone()))
                {
                    Some((ErrorCode::None, _)) => Ok(()),
                    Some((code, message)) => Err(Error::kafka(
                        code,
                        format!("delete topic {name:?}"),
                        message.map(|m| m.to_string()),
                    )),
                    None => Err(Error::kafka(
                        ErrorCode::UnknownServerError,
                        format!("delete topic {name:?}"),
                        Some("the broker did not answer for this topic".into()),
                    )),
                }
            })
            .collect();
        self.client.invalidate_metadata();
        Ok(results)
    }

    /// Deletes one topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.delete_topics(&[name])
            .await?
            .pop()
            .unwrap_or(Err(Error::Closed("admin")))
    }

    /// The names of all topics, sorted; internal topics are left out unless asked for.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<String>> {
        let metadata = self.client.metadata().await?;
        Ok(metadata
            .topics
            .values()
            .filter(|t| t.error.is_none() && (include_internal || !t.is_internal))
            .map(|t| t.name.clone())
            .collect())
    }

    /// Describes topics: partitions, leaders, replicas, and configs.
    pub async fn describe_topics(&self, names: &[&str]) -> Result<Vec<TopicDescription>> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            self.client.refresh_topics(&[name], false).await?;
            let metadata = self.client.cached_metadata();
            let topic = metadata
                .topics
                .get(*name)
                .ok_or_else(|| Error::UnknownTopic {
                    topic: name.to_string(),
                })?;
            match topic.error {
                None => {}
                Some(ErrorCode::UnknownTopicOrPartition) => {
                    return Err(Error::UnknownTopic {
                        topic: name.to_string(),
                    })
                }
                Some(code) => {
                    return Err(Error::kafka(code, format!("describe topic {name:?}"), None))
                }
            }
            let configs = self.topic_configs(name).await?;
            out.push(TopicDescription {
                metadata: (**topic).clone(),
                configs,
            });
        }
        Ok(out)
    }

    /// The configs of a topic; empty if the broker does not support DescribeConfigs.
    pub async fn topic_configs(&self, name: &str) -> Result<Vec<ConfigEntry>> {
        let connection = self.client.any_connection().await?;
        if connection.version(ApiKey::DescribeConfigs).is_err() {
            return Ok(Vec::new());
        }
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(None),
        ]);
        let response = connection.request(request).await?;
        let mut entries = Vec::new();
        for result in response.results {
            match ErrorCode::from_code(result.error_code) {
                ErrorCode::None => {}
                code => {
                    return Err(Error::kafka(
                        code,
                        format!("describe configs of {name:?}"),
                        result.error_message.map(|m| m.to_string()),
                    ))
                }
            }
            for config in result.configs {
                entries.push(ConfigEntry {
                    name: config.name.to_string(),
                    value: config.value.map(|v| v.to_string()),
                    // Source 1 is DYNAMIC_TOPIC_CONFIG: set on the topic itself.
                    is_default: config.config_source != 1,
                    read_only: config.read_only,
                });
            }
        }
        Ok(entries)
    }

    /// Looks up offsets (earliest, latest, by timestamp) of partitions.
    pub async fn list_offsets(
        &self,
        partitions: &[(TopicPartition, OffsetSpec)],
    ) -> Result<BTreeMap<TopicPartition, ListedOffset>> {
        list_offsets(&self.client, partitions).await
    }

    /// The cluster's brokers, controller and all topics.
    pub async fn metadata(&self) -> Result<ClusterMetadata> {
        self.client.metadata().await
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}
