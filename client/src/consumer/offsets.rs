//! ListOffsets: the offset of the earliest record, of the log end, or of
//! the first record at or after a timestamp, asked of each partition's leader.

use std::collections::{BTreeMap, HashMap};

use skiff_protocol::api::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use skiff_protocol::api::messages::{ListOffsetsRequest, TopicName};
use skiff_protocol::api::StrBytes;
use skiff_protocol::ErrorCode;

use super::TopicPartition;
use crate::client::Client;
use crate::error::{Error, Result};

/// Which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still in the log (Kafka timestamp -2).
    Earliest,
    /// The log end offset: the offset the next record will get (timestamp -1).
    Latest,
    /// The first offset whose record timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire_timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ts) => ts,
        }
    }
}

/// An offset found by [`list_offsets`], with the timestamp of its record
/// (-1 for earliest/latest lookups). `offset` is -1 when no record has a
/// timestamp at or after the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset, or -1 if none matches.
    pub offset: i64,
    /// The record's timestamp, -1 if not applicable.
    pub timestamp: i64,
}

/// Looks up `spec` for each partition, one request per leader. Partitions
/// whose leader moved are retried once after a metadata refresh.
pub async fn list_offsets(
    client: &Client,
    partitions: &[(TopicPartition, OffsetSpec)],
) -> Result<BTreeMap<TopicPartition, ListedOffset>> {
    let mut found = BTreeMap::new();
    let mut pending: Vec<(TopicPartition, OffsetSpec)> = partitions.to_vec();
    for attempt in 0..3 {
        let mut by_leader: HashMap<i32, Vec<(TopicPartition, OffsetSpec)>> = HashMap::new();
        let mut retry = Vec::new();
        for (tp, spec) in pending.drain(..) {
            client.topic(&tp.topic).await?;
            match client.cached_leader(&tp.topic, tp.partition) {
                Some(leader) => by_leader.entry(leader).or_default().push((tp, spec)),
                None => {
                    let topic = client.topic(&tp.topic).await?;
                    if topic.partition(tp.partition).is_none() {
                        return Err(Error::UnknownPartition {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            partitions: topic.partition_count(),
                        });
                    }
                    retry.push((tp, spec));
                }
            }
        }
        let mut last_error = None;
        for (leader, group) in by_leader {
            match list_from_leader(client, leader, &group).await {
                Ok(results) => {
                    for (tp, outcome) in results {
                        match outcome {
                            Ok(listed) => {
                                found.insert(tp, listed);
                            }
                            Err(error) if error.is_retriable() => {
                                last_error = Some(error);
                                let spec = group.iter().find(|(t, _)| *t == tp).map(|(_, s)| *s);
                                retry.extend(spec.map(|s| (tp, s)));
                            }
                            Err(error) => return Err(error),
                        }
                    }
                }
                Err(error) if error.is_retriable() => {
                    last_error = Some(error);
                    retry.extend(group);
                }
                Err(error) => return Err(error),
            }
        }
        if retry.is_empty() {
            return Ok(found);
        }
        if attempt == 2 {
            return Err(last_error.unwrap_or_else(|| {
                Error::kafka(ErrorCode::LeaderNotAvailable, "list offsets", None)
            }));
        }
        client.invalidate_metadata();
        tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
        pending = retry;
    }
    Ok(found)
}

type Listed = Vec<(TopicPartition, Result<ListedOffset>)>;

async fn list_from_leader(
    client: &Client,
    leader: i32,
    group: &[(TopicPartition, OffsetSpec)],
) -> Result<Listed> {
    let mut topics: Vec<ListOffsetsTopic> = Vec::new();
    for (tp, spec) in group {
        let partition = ListOffsetsPartition::default()
            .with_partition_index(tp.partition)
            .with_current_leader_epoch(-1)
            .with_timestamp(spec.wire_timestamp());
        match topics.iter_mut().find(|t| t.name.0.as_str() == tp.topic) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_isolation_level(0)
        .with_topics(topics);
    let connection = client.broker_connection(leader).await?;
    let response = connection.request(request).await?;
    let mut out = Vec::new();
    for topic in &response.topics {
        for partition in &topic.partitions {
            let tp = TopicPartition::new(topic.name.0.as_str(), partition.partition_index);
            let outcome = match ErrorCode::from_code(partition.error_code) {
                ErrorCode::None => Ok(ListedOffset {
                    offset: partition.offset,
                    timestamp: partition.timestamp,
                }),
                code => Err(Error::kafka(code, format!("list offsets of {tp}"), None)),
            };
            out.push((tp, outcome));
        }
    }
    Ok(out)
}
