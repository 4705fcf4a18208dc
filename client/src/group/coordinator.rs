//! Talking to a group's coordinator: finding it (FindCoordinator), and the
//! offset APIs (OffsetCommit, OffsetFetch) that consumers and admins share.
//!
//! The coordinator of a group is the broker leading the group's partition
//! of `__consumer_offsets`; it moves when that partition's leadership does
//! (NOT_COORDINATOR), may be briefly unavailable (COORDINATOR_NOT_AVAILABLE),
//! or still replaying its offsets (COORDINATOR_LOAD_IN_PROGRESS). Callers
//! here look it up again and retry, with backoff and a bounded budget.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_protocol::api::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use skiff_protocol::api::messages::offset_fetch_request::OffsetFetchRequestTopic;
use skiff_protocol::api::messages::{
    FindCoordinatorRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use skiff_protocol::api::{ApiKey, StrBytes};
use skiff_protocol::ErrorCode;

use crate::client::Client;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::net::{BrokerAddress, BrokerConnection};

/// FindCoordinator's key type for groups.
const KEY_TYPE_GROUP: i8 = 0;
/// Attempts per coordinator operation before giving up.
const ATTEMPTS_MAX: u32 = 8;
/// The first wait between attempts; doubles each time up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A committed offset and its metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to consume.
    pub offset: i64,
    /// The application's metadata string.
    pub metadata: Option<String>,
}

/// Who commits: a member of the current generation, or an admin
/// (generation -1, empty member id) on a group without members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitIdentity {
    /// The group generation.
    pub generation: i32,
    /// The member id.
    pub member_id: String,
    /// The static instance id, if any.
    pub group_instance_id: Option<String>,
}

impl CommitIdentity {
    /// The identity Kafka's admin uses: no generation, no member.
    pub fn admin() -> Self {
        CommitIdentity {
            generation: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

/// Codes after which the coordinator must be looked up again.
pub(crate) fn coordinator_moved(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable
    )
}

/// Codes worth retrying against the (possibly new) coordinator.
pub(crate) fn coordinator_retriable(code: ErrorCode) -> bool {
    coordinator_moved(code) || code == ErrorCode::CoordinatorLoadInProgress
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << attempt.min(10))
        .min(BACKOFF_MAX)
}

/// A group's coordinator connection, looked up lazily and forgotten when
/// it moves.
#[derive(Debug)]
pub struct GroupCoordinator {
    client: Client,
    group_id: String,
    connection: Mutex<Option<Arc<BrokerConnection>>>,
}

impl GroupCoordinator {
    /// A handle for `group_id`'s coordinator.
    pub fn new(client: Client, group_id: impl Into<String>) -> Self {
        GroupCoordinator {
            client,
            group_id: group_id.into(),
            connection: Mutex::new(None),
        }
    }

    /// The group id.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub(crate) fn group_id_wire(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.group_id.clone()))
    }

    /// The coordinator's connection, finding it first if needed.
    pub async fn connection(&self) -> Result<Arc<BrokerConnection>> {
        if let Some(connection) = self.cached() {
            return Ok(connection);
        }
        let mut last_error = None;
        for attempt in 0..ATTEMPTS_MAX {
            match find_coordinator(&self.client, &self.group_id).await {
                Ok(connection) => {
                    if let Ok(mut slot) = self.connection.lock() {
                        *slot = Some(Arc::clone(&connection));
                    }
                    return Ok(connection);
                }
                Err(error) if error.is_retriable() => {
                    tracing::debug!(%error, group = %self.group_id, "coordinator not found yet");
                    last_error = Some(error);
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or(Error::Closed("group coordinator")))
    }

    fn cached(&self) -> Option<Arc<BrokerConnection>> {
        let slot = self.connection.lock().ok()?;
        slot.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// Forgets the coordinator so that the next call looks it up again.
    pub fn mark_dead(&self) {
        if let Ok(mut slot) = self.connection.lock() {
            *slot = None;
        }
    }

    /// Reacts to an error from the coordinator; true if a retry may succeed.
    pub(crate) fn note_error(&self, error: &Error) -> bool {
        match error.code() {
            Some(code) if coordinator_moved(code) => {
                self.mark_dead();
                true
            }
            Some(code) => coordinator_retriable(code),
            None if error.is_retriable() => {
                self.mark_dead();
                true
            }
            None => false,
        }
    }

    /// Commits offsets; the outcome per partition. Retries while the
    /// coordinator moves or loads. A retried commit is safe: the coordinator
    /// applies the same commit twice to the same state.
    pub async fn commit(
        &self,
        identity: &CommitIdentity,
        offsets: &BTreeMap<TopicPartition, CommittedOffset>,
    ) -> Result<BTreeMap<TopicPartition, Result<()>>> {
        let mut attempt = 0;
        loop {
            let outcome = async {
                let connection = self.connection().await?;
                self.commit_once(&connection, identity, offsets).await
            }
            .await;
            let retry = match &outcome {
                Err(error) => self.note_error(error),
                Ok(results) => {
                    let mut retry = false;
                    for error in results.values().filter_map(|r| r.as_ref().err()) {
                        if error.code().is_some_and(coordinator_retriable) {
                            self.note_error(error);
                            retry = true;
                        }
                    }
                    retry
                }
            };
            attempt += 1;
            if !retry || attempt >= ATTEMPTS_MAX {
                return outcome;
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn commit_once(
        &self,
        connection: &BrokerConnection,
        identity: &CommitIdentity,
        offsets: &BTreeMap<TopicPartition, CommittedOffset>,
    ) -> Result<BTreeMap<TopicPartition, Result<()>>> {
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, committed) in offsets {
            topics.entry(tp.topic.as_str()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(committed.offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(
                        committed
                            .metadata
                            .as_ref()
                            .map(|m| StrBytes::from_string(m.clone())),
                    ),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(self.group_id_wire())
            .with_generation_id_or_member_epoch(identity.generation)
            .with_member_id(StrBytes::from_string(identity.member_id.clone()))
            .with_group_instance_id(
                identity
                    .group_instance_id
                    .as_ref()
                    .map(|i| StrBytes::from_string(i.clone())),
            )
            .with_retention_time_ms(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(name))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = connection.request(request).await?;
        let mut out = BTreeMap::new();
        for topic in response.topics {
            for partition in topic.partitions {
                let tp = TopicPartition::new(topic.name.0.as_str(), partition.partition_index);
                let result = match ErrorCode::from_code(partition.error_code) {
                    ErrorCode::None => Ok(()),
                    code => Err(Error::kafka(
                        code,
                        format!("commit offset of {tp} for group {:?}", self.group_id),
                        None,
                    )),
                };
                out.insert(tp, result);
            }
        }
        for tp in offsets.keys() {
            out.entry(tp.clone()).or_insert_with(|| {
                Err(Error::kafka(
                    ErrorCode::UnknownServerError,
                    format!("commit offset of {tp}"),
                    Some("the coordinator did not answer for this partition".into()),
                ))
            });
        }
        Ok(out)
    }

    /// The committed offsets of `partitions` (all of the group's when
    /// `None`); partitions without a commit are left out.
    pub async fn fetch(
        &self,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, CommittedOffset>> {
        let mut attempt = 0;
        loop {
            let outcome = async {
                let connection = self.connection().await?;
                self.fetch_once(&connection, partitions).await
            }
            .await;
            match outcome {
                Err(error) if self.note_error(&error) && attempt + 1 < ATTEMPTS_MAX => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn fetch_once(
        &self,
        connection: &BrokerConnection,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, CommittedOffset>> {
        let topics = partitions.map(|partitions| {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in partitions {
                by_topic
                    .entry(tp.topic.as_str())
                    .or_default()
                    .push(tp.partition);
            }
            by_topic
                .into_iter()
                .map(|(name, indexes)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(topic_name(name))
                        .with_partition_indexes(indexes)
                })
                .collect()
        });
        let version = connection.version(ApiKey::OffsetFetch)?;
        // v7 can ask the coordinator to wait out pending transactional
        // offsets; asking is harmless without transactions.
        let request = OffsetFetchRequest::default()
            .with_group_id(self.group_id_wire())
            .with_topics(topics)
            .with_require_stable(version >= 7);
        let response = connection.request_at(request, version).await?;
        let context = || format!("fetch committed offsets of group {:?}", self.group_id);
        match ErrorCode::from_code(response.error_code) {
            ErrorCode::None => {}
            code => return Err(Error::kafka(code, context(), None)),
        }
        let mut out = BTreeMap::new();
        for topic in response.topics {
            for partition in topic.partitions {
                match ErrorCode::from_code(partition.error_code) {
                    ErrorCode::None => {}
                    // A partition of a topic the broker does not know: no commit.
                    ErrorCode::UnknownTopicOrPartition => continue,
                    code => return Err(Error::kafka(code, context(), None)),
                }
                if partition.committed_offset < 0 {
                    continue;
                }
                out.insert(
                    TopicPartition::new(topic.name.0.as_str(), partition.partition_index),
                    CommittedOffset {
                        offset: partition.committed_offset,
                        metadata: partition
                            .metadata
                            .map(|m| m.to_string())
                            .filter(|m| !m.is_empty()),
                    },
                );
            }
        }
        Ok(out)
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Asks any broker which one coordinates `group_id` and connects to it.
pub async fn find_coordinator(client: &Client, group_id: &str) -> Result<Arc<BrokerConnection>> {
    let connection = client.any_connection().await?;
    let version = connection.version(ApiKey::FindCoordinator)?;
    let key = StrBytes::from_string(group_id.to_string());
    let mut request = FindCoordinatorRequest::default().with_key_type(KEY_TYPE_GROUP);
    if version >= 4 {
        request.coordinator_keys = vec![key];
    } else {
        request.key = key;
    }
    let response = connection.request_at(request, version).await?;
    let (code, message, node_id, host, port) = match response.coordinators.first() {
        Some(c) if version >= 4 => (
            c.error_code,
            c.error_message.clone(),
            c.node_id.0,
            c.host.to_string(),
            c.port,
        ),
        _ => (
            response.error_code,
            response.error_message.clone(),
            response.node_id.0,
            response.host.to_string(),
            response.port,
        ),
    };
    match ErrorCode::from_code(code) {
        ErrorCode::None => {}
        code => {
            return Err(Error::kafka(
                code,
                format!("find the coordinator of group {group_id:?}"),
                message.map(|m| m.to_string()),
            ))
        }
    }
    if client.broker_address(node_id).is_none() {
        client.invalidate_metadata();
        client.refresh_metadata().await?;
    }
    if client.broker_address(node_id).is_some() {
        return client.broker_connection(node_id).await;
    }
    let port = u16::try_from(port).map_err(|_| Error::InvalidAddress {
        address: format!("{host}:{port}"),
        reason: "coordinator port out of range".into(),
    })?;
    let address = BrokerAddress::tcp(host, port).with_transport(connection.address().transport);
    client.connection_to(&address).await
}
