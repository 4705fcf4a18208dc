//! The consumer's side of group membership: `subscribe`, reacting to the
//! membership task's revocations and assignments, offset commits (manual,
//! periodic, and on revocation) and `close`.
//!
//! Positions are only ever committed as they stand at the start of `poll`
//! or while `poll` holds no records yet, so a committed offset never runs
//! ahead of what the application was given: with commit-on-revoke a
//! partition's next owner resumes right after the last record handed out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Consumer, ConsumerConfig, TopicPartition};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::group::assignor::assignor_by_name;
use crate::group::coordinator::{CommitIdentity, CommittedOffset, GroupCoordinator};
use crate::group::membership::{GroupCommand, GroupEvent, Membership, MembershipConfig, Shared};

/// Told about partitions coming and going in a rebalance. Called from
/// within [`Consumer::poll`] (and `close`), so positions are consistent.
pub trait RebalanceListener: Send {
    /// These partitions are now assigned (only the new ones with
    /// cooperative rebalancing). Their positions resume from the committed
    /// offsets.
    fn on_assigned(&mut self, partitions: &[TopicPartition]);
    /// These partitions are being taken away; their positions were just
    /// committed when auto-commit is on.
    fn on_revoked(&mut self, partitions: &[TopicPartition]);
    /// These partitions were lost: the member fell out of the group and
    /// another member may own them already, so nothing was committed.
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_revoked(partitions);
    }
}

struct Subscribed {
    commands: mpsc::Sender<GroupCommand>,
    events: mpsc::UnboundedReceiver<GroupEvent>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// Group state of a consumer with a `group_id`.
pub(super) struct GroupState {
    coordinator: Arc<GroupCoordinator>,
    subscribed: Option<Subscribed>,
    /// In a mutex only so that the consumer stays `Sync` (it is only ever
    /// used through `&mut Consumer`).
    listener: Option<std::sync::Mutex<Box<dyn RebalanceListener>>>,
    last_auto_commit: Instant,
}

impl GroupState {
    pub(super) fn new(client: &Client, config: &ConsumerConfig) -> Option<GroupState> {
        let group_id = config.group_id.clone()?;
        Some(GroupState {
            coordinator: Arc::new(GroupCoordinator::new(client.clone(), group_id)),
            subscribed: None,
            listener: None,
            last_auto_commit: Instant::now(),
        })
    }
}

/// The next event of the membership task, or never without one.
pub(super) async fn next_event(group: &mut Option<GroupState>) -> Option<GroupEvent> {
    match group.as_mut().and_then(|g| g.subscribed.as_mut()) {
        Some(subscribed) => subscribed.events.recv().await,
        None => std::future::pending().await,
    }
}

impl Consumer {
    fn listener(&mut self) -> Option<&mut Box<dyn RebalanceListener>> {
        let listener = self.group.as_mut()?.listener.as_mut()?;
        // A listener that panicked is still called: its state is its own.
        Some(
            listener
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    fn group_state(&self) -> Result<&GroupState> {
        self.group
            .as_ref()
            .ok_or(Error::NoGroup("set ConsumerConfig::group_id"))
    }

    /// Joins the group and consumes `topics`; partitions are assigned by the
    /// group leader and change with rebalances. Replaces any manual assignment.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        if topics.is_empty() {
            return Err(Error::Config("subscribe needs at least one topic".into()));
        }
        let membership_config = self.membership_config()?;
        let client = self.client.clone();
        let Some(group) = self.group.as_mut() else {
            return Err(Error::NoGroup("set ConsumerConfig::group_id"));
        };
        if let Some(subscribed) = &group.subscribed {
            return subscribed
                .commands
                .send(GroupCommand::Subscribe(topics))
                .await
                .map_err(|_| Error::Closed("group membership"));
        }
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new());
        let membership = Membership::new(
            membership_config,
            client,
            Arc::clone(&group.coordinator),
            Arc::clone(&shared),
            topics,
            events_tx,
            commands_rx,
        );
        let task = tokio::spawn(membership.run());
        group.subscribed = Some(Subscribed {
            commands: commands_tx,
            events: events_rx,
            shared,
            task,
        });
        self.assign(Vec::new());
        Ok(())
    }

    /// Like [`Consumer::subscribe`], telling `listener` about rebalances.
    pub async fn subscribe_with_listener(
        &mut self,
        topics: &[&str],
        listener: Box<dyn RebalanceListener>,
    ) -> Result<()> {
        if let Some(group) = self.group.as_mut() {
            group.listener = Some(std::sync::Mutex::new(listener));
        }
        self.subscribe(topics).await
    }

    fn membership_config(&self) -> Result<MembershipConfig> {
        let config = &self.config;
        if config.partition_assignment_strategy.is_empty() {
            return Err(Error::Config(
                "partition_assignment_strategy needs at least one assignor".into(),
            ));
        }
        if config.heartbeat_interval >= config.session_timeout {
            return Err(Error::Config(format!(
                "heartbeat_interval ({:?}) must be below session_timeout ({:?})",
                config.heartbeat_interval, config.session_timeout
            )));
        }
        let assignors = config
            .partition_assignment_strategy
            .iter()
            .map(|name| assignor_by_name(name))
            .collect::<Result<Vec<_>>>()?;
        Ok(MembershipConfig {
            group_instance_id: config.group_instance_id.clone(),
            session_timeout: config.session_timeout,
            rebalance_timeout: config.max_poll_interval,
            heartbeat_interval: config.heartbeat_interval,
            assignors,
        })
    }

    /// Work done at the start of every poll: note the poll (max poll
    /// interval), apply pending group events, auto-commit when due, and
    /// resume new partitions from their committed offsets.
    pub(super) async fn group_tick(&mut self) -> Result<()> {
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        let mut pending = Vec::new();
        if let Some(subscribed) = group.subscribed.as_mut() {
            subscribed.shared.mark_polled();
            while let Ok(event) = subscribed.events.try_recv() {
                pending.push(event);
            }
        }
        // Only a member of a generation can commit; while it joins there is
        // nothing of its own to commit anyway.
        let auto_commit_due = self.config.enable_auto_commit
            && group
                .subscribed
                .as_ref()
                .is_some_and(|s| s.shared.generation().generation >= 0)
            && group.last_auto_commit.elapsed() >= self.config.auto_commit_interval;
        for event in pending {
            self.on_group_event(event).await?;
        }
        if auto_commit_due {
            if let Some(group) = self.group.as_mut() {
                group.last_auto_commit = Instant::now();
            }
            // The result is logged by the task; the next commit catches up.
            drop(self.commit_async());
        }
        self.resolve_committed().await
    }

    pub(super) async fn on_group_event(&mut self, event: GroupEvent) -> Result<()> {
        match event {
            GroupEvent::Revoke {
                partitions,
                lost,
                done,
            } => {
                if !lost && self.config.enable_auto_commit {
                    let offsets = self.consumed_offsets(Some(&partitions));
                    if let Err(error) = self.commit_offsets(&offsets).await {
                        tracing::warn!(%error, "commit of revoked partitions failed");
                    }
                }
                if let Some(listener) = self.listener() {
                    if lost {
                        listener.on_lost(&partitions);
                    } else {
                        listener.on_revoked(&partitions);
                    }
                }
                let revoked: BTreeSet<&TopicPartition> = partitions.iter().collect();
                let remaining: Vec<TopicPartition> = self
                    .partitions
                    .keys()
                    .filter(|tp| !revoked.contains(tp))
                    .cloned()
                    .collect();
                self.assign(remaining);
                let _ = done.send(());
                Ok(())
            }
            GroupEvent::Assign { partitions } => {
                let added: Vec<TopicPartition> = partitions
                    .iter()
                    .filter(|tp| !self.partitions.contains_key(tp))
                    .cloned()
                    .collect();
                self.assign(partitions);
                for tp in &added {
                    if let Some(state) = self.partitions.get_mut(tp) {
                        state.awaiting_committed = true;
                    }
                }
                if let Some(listener) = self.listener() {
                    listener.on_assigned(&added);
                }
                self.resolve_committed().await
            }
            GroupEvent::Failed(error) => Err(error),
        }
    }

    /// Looks up committed offsets of partitions waiting for them; those
    /// without a commit fall back to the reset policy. A failed lookup is
    /// retried on the next poll, and the partitions are not fetched meanwhile.
    async fn resolve_committed(&mut self) -> Result<()> {
        let waiting: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.awaiting_committed)
            .map(|(tp, _)| tp.clone())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let coordinator = Arc::clone(&self.group_state()?.coordinator);
        let committed = match coordinator.fetch(Some(&waiting)).await {
            Ok(committed) => committed,
            Err(error) if error.is_retriable() || error.code().is_some() => {
                tracing::debug!(%error, "committed offsets not available yet");
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        for tp in waiting {
            if let Some(state) = self.partitions.get_mut(&tp) {
                state.awaiting_committed = false;
                if let Some(found) = committed.get(&tp) {
                    state.position = Some(found.offset);
                    state.generation += 1;
                }
            }
        }
        Ok(())
    }

    /// Positions of `only` (or all) assigned partitions with a position.
    fn consumed_offsets(
        &self,
        only: Option<&[TopicPartition]>,
    ) -> BTreeMap<TopicPartition, CommittedOffset> {
        self.partitions
            .iter()
            .filter(|(tp, _)| only.is_none_or(|only| only.contains(tp)))
            .filter(|(_, s)| !s.awaiting_committed)
            .filter_map(|(tp, s)| {
                s.position.map(|offset| {
                    (
                        tp.clone(),
                        CommittedOffset {
                            offset,
                            metadata: None,
                        },
                    )
                })
            })
            .collect()
    }

    fn commit_identity(&self) -> CommitIdentity {
        match self.group.as_ref().and_then(|g| g.subscribed.as_ref()) {
            Some(subscribed) => {
                let generation = subscribed.shared.generation();
                CommitIdentity {
                    generation: generation.generation,
                    member_id: generation.member_id,
                    group_instance_id: self.config.group_instance_id.clone(),
                }
            }
            // A consumer with manual assignment commits as a simple group.
            None => CommitIdentity::admin(),
        }
    }

    /// Commits `offsets` (the next offset to read per partition) for the
    /// group, waiting for the coordinator's answer.
    pub async fn commit_offsets(
        &self,
        offsets: &BTreeMap<TopicPartition, CommittedOffset>,
    ) -> Result<()> {
        let coordinator = Arc::clone(&self.group_state()?.coordinator);
        if offsets.is_empty() {
            return Ok(());
        }
        let results = coordinator.commit(&self.commit_identity(), offsets).await?;
        results.into_values().collect::<Result<Vec<()>>>().map(drop)
    }

    /// Commits the positions of every assigned partition: everything the
    /// application has been given by `poll` counts as consumed.
    pub async fn commit_sync(&self) -> Result<()> {
        self.commit_offsets(&self.consumed_offsets(None)).await
    }

    /// Commits the current positions in the background; await the handle
    /// for the outcome (or drop it).
    pub fn commit_async(&self) -> tokio::task::JoinHandle<Result<()>> {
        let offsets = self.consumed_offsets(None);
        let identity = self.commit_identity();
        let coordinator = self.group.as_ref().map(|g| Arc::clone(&g.coordinator));
        tokio::spawn(async move {
            let Some(coordinator) = coordinator else {
                return Err(Error::NoGroup("set ConsumerConfig::group_id"));
            };
            if offsets.is_empty() {
                return Ok(());
            }
            let results = coordinator.commit(&identity, &offsets).await?;
            let outcome = results.into_values().collect::<Result<Vec<()>>>().map(drop);
            if let Err(error) = &outcome {
                tracing::debug!(%error, "async commit failed");
            }
            outcome
        })
    }

    /// The group's committed offsets of `partitions`; `None` where there is
    /// no commit.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let coordinator = Arc::clone(&self.group_state()?.coordinator);
        let found = coordinator.fetch(Some(partitions)).await?;
        Ok(partitions
            .iter()
            .map(|tp| (tp.clone(), found.get(tp).map(|c| c.offset)))
            .collect())
    }

    /// Whether the consumer is subscribed and currently owns partitions by
    /// group assignment (false while it joins).
    pub fn group_generation(&self) -> Option<i32> {
        let subscribed = self.group.as_ref()?.subscribed.as_ref()?;
        Some(subscribed.shared.generation().generation).filter(|g| *g >= 0)
    }

    /// Commits (with auto-commit on), tells the listener the partitions are
    /// revoked, and leaves the group. Static members do not send LeaveGroup,
    /// so that a restart gets the same partitions back.
    pub async fn close(mut self) -> Result<()> {
        let mut outcome = Ok(());
        if self.config.enable_auto_commit && self.group.is_some() {
            outcome = self.commit_sync().await;
        }
        let subscribed = self.group.as_mut().and_then(|g| g.subscribed.take());
        let Some(mut subscribed) = subscribed else {
            return outcome;
        };
        let owned = self.assignment();
        if let Some(listener) = self.listener() {
            if !owned.is_empty() {
                listener.on_revoked(&owned);
            }
        }
        let (left_tx, mut left_rx) = oneshot::channel();
        if subscribed
            .commands
            .send(GroupCommand::Leave(left_tx))
            .await
            .is_ok()
        {
            let budget = self.client.config().connection.request_timeout + Duration::from_secs(1);
            let drain = async {
                loop {
                    tokio::select! {
                        _ = &mut left_rx => return,
                        event = subscribed.events.recv() => match event {
                            // The task may be mid-rebalance: let it go on.
                            Some(GroupEvent::Revoke { done, .. }) => { let _ = done.send(()); }
                            Some(_) => {}
                            None => return,
                        },
                    }
                }
            };
            if tokio::time::timeout(budget, drain).await.is_err() {
                tracing::warn!("leaving the group timed out");
            }
        }
        subscribed.task.abort();
        outcome
    }
}
