//! Joining: JoinGroup (with the KIP-394 retry), the leader's assignment,
//! SyncGroup, and applying the result (revocations first).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::protocol::Decodable;
use skiff_protocol::api::messages::join_group_request::JoinGroupRequestProtocol;
use skiff_protocol::api::messages::sync_group_request::SyncGroupRequestAssignment;
use skiff_protocol::api::messages::{JoinGroupRequest, JoinGroupResponse, SyncGroupRequest};
use skiff_protocol::api::RequestKind;
use skiff_protocol::ErrorCode;

use super::{millis, Flow, GroupEvent, Membership};
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::group::assignor::{GroupMember, RebalanceProtocol};
use crate::group::coordinator::{backoff, coordinator_retriable};
use crate::group::protocol::{Assignment, Subscription, PROTOCOL_TYPE};
use crate::net::Request;

/// How a JoinGroup or SyncGroup round trip ended.
enum Answer<T> {
    Response(T),
    /// The coordinator moved or the connection failed: join again.
    Retry,
    /// A command (leave, new subscription) came first.
    Interrupted(Flow),
}

impl Membership {
    /// Sends a JoinGroup or SyncGroup, which the coordinator may hold for
    /// up to the rebalance timeout, while still taking commands.
    async fn rebalance_request<R>(&mut self, request: R) -> Result<Answer<R::Response>>
    where
        R: Request + Into<RequestKind> + Send + 'static,
        R::Response: Decodable + Send,
    {
        let coordinator = Arc::clone(&self.coordinator);
        let wait = self.config.rebalance_timeout + self.request_timeout;
        let outcome = self
            .or_command(async move {
                let connection = coordinator.connection().await?;
                connection.send(request).await?.response_within(wait).await
            })
            .await;
        match outcome {
            Err(flow) => Ok(Answer::Interrupted(flow)),
            Ok(Err(error)) if self.coordinator.note_error(&error) => Ok(Answer::Retry),
            Ok(Err(error)) => Err(error),
            Ok(Ok(response)) => Ok(Answer::Response(response)),
        }
    }
    fn join_request(&self) -> Result<JoinGroupRequest> {
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        let mut protocols = Vec::with_capacity(self.config.assignors.len());
        for assignor in &self.config.assignors {
            // An eager member owns nothing when it joins (it revoked all),
            // but an eager sticky assignor needs to know what it had.
            let subscription = if assignor.wants_previous_assignment() {
                Subscription {
                    topics: self.topics.clone(),
                    owned_partitions: self.previous.iter().cloned().collect(),
                    generation: self.previous_generation,
                    user_data: None,
                }
            } else {
                Subscription {
                    topics: self.topics.clone(),
                    owned_partitions: owned.clone(),
                    generation: self.generation,
                    user_data: None,
                }
            };
            protocols.push(
                JoinGroupRequestProtocol::default()
                    .with_name(Self::wire(assignor.name()))
                    .with_metadata(subscription.encode()?),
            );
        }
        Ok(JoinGroupRequest::default()
            .with_group_id(self.coordinator.group_id_wire())
            .with_session_timeout_ms(millis(self.config.session_timeout))
            .with_rebalance_timeout_ms(millis(self.config.rebalance_timeout))
            .with_member_id(Self::wire(&self.member_id))
            .with_group_instance_id(self.instance_id())
            .with_protocol_type(Self::wire(PROTOCOL_TYPE))
            .with_protocols(protocols))
    }

    pub(super) async fn join_and_sync(&mut self) -> Result<Flow> {
        let mut attempt = 0u32;
        loop {
            if self.left_for_poll_timeout {
                // Rejoin only once the application polls again.
                let shared = Arc::clone(&self.shared);
                let limit = self.config.rebalance_timeout;
                let polled_again = async move {
                    // Every poll leaves a wake-up permit, so check the time
                    // since the last poll rather than trusting one wake-up.
                    while shared.since_poll() > limit {
                        shared.polled.notified().await;
                    }
                    Ok(())
                };
                match self.or_command(polled_again).await {
                    Ok(_) => self.left_for_poll_timeout = false,
                    Err(flow) => return Ok(flow),
                }
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            attempt += 1;
            if self.protocol() == RebalanceProtocol::Eager && !self.owned.is_empty() {
                let all: Vec<TopicPartition> =
                    std::mem::take(&mut self.owned).into_iter().collect();
                if !self.revoke(all, false).await {
                    return Ok(Flow::Stop);
                }
            }
            // Look the topics up so that the client's metadata refreshes
            // keep them current (see `current_partition_counts`).
            for topic in self.topics.clone() {
                if let Err(error) = self.client.existing_topic(&topic).await {
                    tracing::debug!(%error, topic, "subscribed topic not available");
                }
            }
            let request = self.join_request()?;
            let response = match self.rebalance_request(request).await? {
                Answer::Response(response) => response,
                Answer::Retry => continue,
                Answer::Interrupted(flow) => return Ok(flow),
            };
            match ErrorCode::from_code(response.error_code) {
                ErrorCode::None => {}
                ErrorCode::MemberIdRequired => {
                    // KIP-394: the coordinator gave us an id to join with.
                    self.member_id = response.member_id.to_string();
                    attempt = 0;
                    continue;
                }
                ErrorCode::UnknownMemberId => {
                    self.member_id.clear();
                    continue;
                }
                ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => continue,
                code if coordinator_retriable(code) => {
                    self.coordinator
                        .note_error(&Error::kafka(code, "join group", None));
                    continue;
                }
                code => return Err(Error::kafka(code, self.context("join"), None)),
            }
            self.member_id = response.member_id.to_string();
            let generation = response.generation_id;
            let protocol_name = response.protocol_name.as_ref().map(|p| p.to_string());
            let assignments = if response.leader == response.member_id {
                self.lead(&response).await?
            } else {
                Vec::new()
            };
            let sync = SyncGroupRequest::default()
                .with_group_id(self.coordinator.group_id_wire())
                .with_generation_id(generation)
                .with_member_id(response.member_id.clone())
                .with_group_instance_id(self.instance_id())
                .with_protocol_type(Some(Self::wire(PROTOCOL_TYPE)))
                .with_protocol_name(response.protocol_name.clone())
                .with_assignments(assignments);
            let response = match self.rebalance_request(sync).await? {
                Answer::Response(response) => response,
                Answer::Retry => continue,
                Answer::Interrupted(flow) => return Ok(flow),
            };
            match ErrorCode::from_code(response.error_code) {
                ErrorCode::None => {}
                ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => continue,
                ErrorCode::UnknownMemberId => {
                    self.member_id.clear();
                    continue;
                }
                code if coordinator_retriable(code) => {
                    self.coordinator
                        .note_error(&Error::kafka(code, "sync group", None));
                    continue;
                }
                code => return Err(Error::kafka(code, self.context("sync"), None)),
            }
            let assignment = Assignment::decode(response.assignment)?;
            tracing::info!(
                group = self.coordinator.group_id(),
                generation,
                member = %self.member_id,
                protocol = ?protocol_name,
                partitions = assignment.partitions.len(),
                "joined group"
            );
            self.generation = generation;
            self.shared.set_generation(generation, &self.member_id);
            let assigned: BTreeSet<TopicPartition> = assignment.partitions.into_iter().collect();
            let revoked: Vec<TopicPartition> = self.owned.difference(&assigned).cloned().collect();
            if !revoked.is_empty() {
                self.owned.retain(|tp| assigned.contains(tp));
                if !self.revoke(revoked.clone(), false).await {
                    return Ok(Flow::Stop);
                }
            }
            self.partition_counts = self.current_partition_counts();
            self.previous = assigned.clone();
            self.previous_generation = generation;
            self.owned = assigned;
            let _ = self.events.send(GroupEvent::Assign {
                partitions: self.owned.iter().cloned().collect(),
            });
            if !revoked.is_empty() && self.protocol() == RebalanceProtocol::Cooperative {
                // KIP-429: rejoin so that the revoked partitions reach their new owners.
                attempt = 0;
                continue;
            }
            return Ok(Flow::Stable);
        }
    }

    /// As the leader: every member's assignment, from the chosen assignor.
    async fn lead(&self, response: &JoinGroupResponse) -> Result<Vec<SyncGroupRequestAssignment>> {
        let name = response
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let assignor = self
            .config
            .assignors
            .iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                Error::Config(format!(
                    "the coordinator chose assignor {name:?}, which this member did not offer"
                ))
            })?;
        let mut members = Vec::with_capacity(response.members.len());
        for member in &response.members {
            let subscription = match Subscription::decode(member.metadata.clone()) {
                Ok(subscription) => subscription,
                Err(error) => {
                    // One member's bad bytes must not stop the group: it gets nothing.
                    tracing::warn!(%error, member = %member.member_id, "undecodable subscription");
                    Subscription::default()
                }
            };
            members.push(GroupMember {
                member_id: member.member_id.to_string(),
                group_instance_id: member.group_instance_id.as_ref().map(|i| i.to_string()),
                subscription,
            });
        }
        let topics: BTreeSet<&String> = members
            .iter()
            .flat_map(|m| &m.subscription.topics)
            .collect();
        let mut counts = BTreeMap::new();
        for topic in topics {
            match self.client.topic(topic).await {
                Ok(metadata) => {
                    counts.insert(topic.clone(), metadata.partition_count());
                }
                Err(Error::UnknownTopic { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        let assigned = assignor.assign(&counts, &members);
        let mut out = Vec::with_capacity(assigned.len());
        for (member_id, partitions) in assigned {
            let bytes = Assignment {
                partitions,
                user_data: None,
            }
            .encode()?;
            out.push(
                SyncGroupRequestAssignment::default()
                    .with_member_id(Self::wire(&member_id))
                    .with_assignment(bytes),
            );
        }
        Ok(out)
    }
}
