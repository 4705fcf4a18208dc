//! Group membership, run by a background task per subscribed consumer:
//! find the coordinator, JoinGroup, (as leader) run the assignor, SyncGroup,
//! then heartbeat every `heartbeat_interval` until a rebalance or close.
//!
//! The task never touches fetch positions: it tells the consumer what to
//! revoke and what it now owns through [`GroupEvent`]s, which
//! [`crate::Consumer::poll`] handles. A revocation waits for the consumer's
//! acknowledgement (it commits the revoked partitions' positions first), and
//! the task keeps heartbeating meanwhile.
//!
//! Rebalance protocols (KIP-429): with eager assignors every partition is
//! revoked before JoinGroup; with cooperative ones (all configured assignors
//! cooperative) the member keeps its partitions through the join, revokes
//! only those the new assignment leaves out, and rejoins at once so that the
//! leader can hand them to their new owners.
//!
//! Errors: MEMBER_ID_REQUIRED (KIP-394) is answered by joining again with
//! the given id; REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION and
//! UNKNOWN_MEMBER_ID lead to a rejoin (the last two lose the partitions:
//! another member may own them already); coordinator errors to a new
//! lookup and a retry with backoff; FENCED_INSTANCE_ID and configuration
//! errors end the membership and are reported by `poll`.

mod join;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_protocol::api::messages::leave_group_request::MemberIdentity;
use skiff_protocol::api::messages::{HeartbeatRequest, LeaveGroupRequest};
use skiff_protocol::api::{ApiKey, StrBytes};
use skiff_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot, Notify};

use super::assignor::{Assignor, RebalanceProtocol};
use super::coordinator::{backoff, GroupCoordinator};
use crate::client::Client;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};

/// Settings of a membership, from the consumer's config.
#[derive(Debug)]
pub(crate) struct MembershipConfig {
    pub group_instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub assignors: Vec<Box<dyn Assignor>>,
}

/// The member's identity for offset commits.
#[derive(Debug, Clone)]
pub(crate) struct Generation {
    pub generation: i32,
    pub member_id: String,
}

/// State shared by the task and the consumer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub generation: Mutex<Generation>,
    /// When the application last called `poll` (max.poll.interval).
    pub last_poll: Mutex<Instant>,
    pub polled: Notify,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            generation: Mutex::new(Generation {
                generation: -1,
                member_id: String::new(),
            }),
            last_poll: Mutex::new(Instant::now()),
            polled: Notify::new(),
        }
    }

    pub fn generation(&self) -> Generation {
        self.generation
            .lock()
            .map(|g| g.clone())
            .unwrap_or(Generation {
                generation: -1,
                member_id: String::new(),
            })
    }

    fn set_generation(&self, generation: i32, member_id: &str) {
        if let Ok(mut g) = self.generation.lock() {
            g.generation = generation;
            g.member_id = member_id.to_string();
        }
    }

    pub fn mark_polled(&self) {
        if let Ok(mut at) = self.last_poll.lock() {
            *at = Instant::now();
        }
        self.polled.notify_one();
    }

    fn since_poll(&self) -> Duration {
        self.last_poll
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or_default()
    }
}

/// What the task asks of the consumer.
#[derive(Debug)]
pub(crate) enum GroupEvent {
    /// Stop consuming these partitions: commit (unless lost), tell the
    /// listener, then acknowledge.
    Revoke {
        partitions: Vec<TopicPartition>,
        lost: bool,
        done: oneshot::Sender<()>,
    },
    /// The member's whole assignment is now this.
    Assign { partitions: Vec<TopicPartition> },
    /// The membership ended with an error.
    Failed(Error),
}

/// What the consumer asks of the task.
#[derive(Debug)]
pub(crate) enum GroupCommand {
    /// Change the subscription (rejoins).
    Subscribe(Vec<String>),
    /// Leave the group and stop.
    Leave(oneshot::Sender<()>),
}

enum Flow {
    Rejoin,
    Stable,
    Stop,
}

/// The membership task's state.
pub(crate) struct Membership {
    pub config: MembershipConfig,
    pub client: Client,
    pub coordinator: Arc<GroupCoordinator>,
    pub shared: Arc<Shared>,
    pub topics: Vec<String>,
    pub events: mpsc::UnboundedSender<GroupEvent>,
    pub commands: mpsc::Receiver<GroupCommand>,
    pub request_timeout: Duration,
    member_id: String,
    generation: i32,
    owned: BTreeSet<TopicPartition>,
    /// The last assignment received and its generation (for eager sticky).
    previous: BTreeSet<TopicPartition>,
    previous_generation: i32,
    /// Partitions per subscribed topic when the assignment was made (0 for
    /// a topic that did not exist); a change means the group must rebalance.
    partition_counts: BTreeMap<String, i32>,
    /// Set when the application has not polled within the rebalance timeout.
    left_for_poll_timeout: bool,
}

impl Membership {
    pub fn new(
        config: MembershipConfig,
        client: Client,
        coordinator: Arc<GroupCoordinator>,
        shared: Arc<Shared>,
        topics: Vec<String>,
        events: mpsc::UnboundedSender<GroupEvent>,
        commands: mpsc::Receiver<GroupCommand>,
    ) -> Self {
        let request_timeout = client.config().connection.request_timeout;
        Membership {
            config,
            client,
            coordinator,
            shared,
            topics,
            events,
            commands,
            request_timeout,
            member_id: String::new(),
            generation: -1,
            owned: BTreeSet::new(),
            previous: BTreeSet::new(),
            previous_generation: -1,
            partition_counts: BTreeMap::new(),
            left_for_poll_timeout: false,
        }
    }

    fn protocol(&self) -> RebalanceProtocol {
        if self
            .config
            .assignors
            .iter()
            .all(|a| a.rebalance_protocol() == RebalanceProtocol::Cooperative)
        {
            RebalanceProtocol::Cooperative
        } else {
            RebalanceProtocol::Eager
        }
    }

    /// Runs until the consumer leaves or the membership fails.
    pub async fn run(mut self) {
        loop {
            let flow = match self.join_and_sync().await {
                Ok(Flow::Stable) => self.stable().await,
                Ok(flow) => flow,
                Err(error) => {
                    tracing::warn!(%error, group = self.coordinator.group_id(), "group membership failed");
                    let _ = self.events.send(GroupEvent::Failed(error));
                    Flow::Stop
                }
            };
            if let Flow::Stop = flow {
                return;
            }
        }
    }

    fn wire(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_string())
    }

    fn instance_id(&self) -> Option<StrBytes> {
        self.config.group_instance_id.as_deref().map(Self::wire)
    }

    /// Waits for `request`, or for a command that interrupts it.
    async fn or_command<T>(
        &mut self,
        request: impl std::future::Future<Output = Result<T>>,
    ) -> std::result::Result<Result<T>, Flow> {
        tokio::select! {
            outcome = request => Ok(outcome),
            command = self.commands.recv() => Err(self.on_command(command).await),
        }
    }

    async fn on_command(&mut self, command: Option<GroupCommand>) -> Flow {
        match command {
            Some(GroupCommand::Subscribe(topics)) => {
                self.topics = topics;
                Flow::Rejoin
            }
            Some(GroupCommand::Leave(done)) => {
                self.leave().await;
                let _ = done.send(());
                Flow::Stop
            }
            None => {
                self.leave().await;
                Flow::Stop
            }
        }
    }

    /// Partition counts of the subscribed topics as the metadata cache has
    /// them (the client refreshes it every `metadata_max_age`).
    fn current_partition_counts(&self) -> BTreeMap<String, i32> {
        self.topics
            .iter()
            .map(|t| {
                let count = self
                    .client
                    .cached_topic(t)
                    .map_or(0, |m| m.partition_count());
                (t.clone(), count)
            })
            .collect()
    }

    fn context(&self, what: &str) -> String {
        format!("{what} group {:?}", self.coordinator.group_id())
    }

    /// Asks the consumer to revoke, heartbeating while it does; false if
    /// the consumer is gone.
    async fn revoke(&mut self, partitions: Vec<TopicPartition>, lost: bool) -> bool {
        let (done, mut acked) = oneshot::channel();
        if self
            .events
            .send(GroupEvent::Revoke {
                partitions,
                lost,
                done,
            })
            .is_err()
        {
            return false;
        }
        loop {
            tokio::select! {
                ack = &mut acked => return ack.is_ok(),
                _ = tokio::time::sleep(self.config.heartbeat_interval) => {
                    if !lost {
                        let _ = self.heartbeat().await;
                    }
                }
            }
        }
    }

    async fn heartbeat(&self) -> Result<()> {
        let request = HeartbeatRequest::default()
            .with_group_id(self.coordinator.group_id_wire())
            .with_generation_id(self.generation)
            .with_member_id(Self::wire(&self.member_id))
            .with_group_instance_id(self.instance_id());
        let connection = self.coordinator.connection().await?;
        let response = connection.request(request).await?;
        match ErrorCode::from_code(response.error_code) {
            ErrorCode::None => Ok(()),
            code => Err(Error::kafka(code, self.context("heartbeat"), None)),
        }
    }

    /// Drops every partition as lost (another member may own them already).
    async fn lose_all(&mut self) -> bool {
        self.generation = -1;
        self.shared.set_generation(-1, &self.member_id);
        self.previous.clear();
        let all: Vec<TopicPartition> = std::mem::take(&mut self.owned).into_iter().collect();
        all.is_empty() || self.revoke(all, true).await
    }

    /// Heartbeats until the group rebalances, the consumer leaves, or the
    /// application stops polling for longer than the rebalance timeout.
    async fn stable(&mut self) -> Flow {
        let mut next_heartbeat = Instant::now() + self.config.heartbeat_interval;
        loop {
            let since_poll = self.shared.since_poll();
            if since_poll > self.config.rebalance_timeout {
                tracing::warn!(
                    group = self.coordinator.group_id(),
                    ?since_poll,
                    "poll not called within max poll interval; leaving the group"
                );
                self.leave().await;
                if self.config.group_instance_id.is_none() {
                    self.member_id.clear();
                }
                self.left_for_poll_timeout = true;
                return if self.lose_all().await {
                    Flow::Rejoin
                } else {
                    Flow::Stop
                };
            }
            let poll_deadline = Instant::now() + (self.config.rebalance_timeout - since_poll);
            let wake = next_heartbeat.min(poll_deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                command = self.commands.recv() => return self.on_command(command).await,
            }
            if Instant::now() < next_heartbeat {
                continue;
            }
            next_heartbeat = Instant::now() + self.config.heartbeat_interval;
            if self.current_partition_counts() != self.partition_counts {
                // A subscribed topic appeared or grew: its new partitions
                // need an owner, which only a rebalance gives them.
                tracing::info!(
                    group = self.coordinator.group_id(),
                    "subscribed topics changed; rejoining"
                );
                return Flow::Rejoin;
            }
            let Err(error) = self.heartbeat().await else {
                continue;
            };
            match error.code() {
                Some(ErrorCode::RebalanceInProgress) => return Flow::Rejoin,
                Some(code @ (ErrorCode::IllegalGeneration | ErrorCode::UnknownMemberId)) => {
                    tracing::info!(
                        ?code,
                        group = self.coordinator.group_id(),
                        "lost group membership"
                    );
                    if code == ErrorCode::UnknownMemberId {
                        self.member_id.clear();
                    }
                    return if self.lose_all().await {
                        Flow::Rejoin
                    } else {
                        Flow::Stop
                    };
                }
                Some(ErrorCode::FencedInstanceId) => {
                    self.lose_all().await;
                    let _ = self.events.send(GroupEvent::Failed(error));
                    return Flow::Stop;
                }
                _ => {
                    tracing::debug!(%error, "heartbeat failed");
                    if self.coordinator.note_error(&error) {
                        next_heartbeat = Instant::now() + backoff(1);
                    }
                }
            }
        }
    }

    /// Sends LeaveGroup. Static members do not leave: a restart within the
    /// session timeout gets their assignment back without a rebalance.
    async fn leave(&mut self) {
        if self.member_id.is_empty() || self.config.group_instance_id.is_some() {
            return;
        }
        let outcome = async {
            let connection = self.coordinator.connection().await?;
            let version = connection.version(ApiKey::LeaveGroup)?;
            let mut request =
                LeaveGroupRequest::default().with_group_id(self.coordinator.group_id_wire());
            if version >= 3 {
                request.members = vec![MemberIdentity::default()
                    .with_member_id(Self::wire(&self.member_id))
                    .with_reason(Some(Self::wire("the consumer is closing")))];
            } else {
                request.member_id = Self::wire(&self.member_id);
            }
            connection.request_at(request, version).await
        }
        .await;
        match outcome {
            Ok(response) if response.error_code == 0 => {
                tracing::info!(group = self.coordinator.group_id(), member = %self.member_id, "left group");
            }
            Ok(response) => tracing::debug!(code = response.error_code, "leave group refused"),
            Err(error) => tracing::debug!(%error, "leave group failed"),
        }
        self.generation = -1;
        self.shared.set_generation(-1, &self.member_id);
    }
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}
