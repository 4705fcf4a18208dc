//! The group coordinator at work: owns the pure [`GroupCoordinator`],
//! answers parked JoinGroup/SyncGroup requests through oneshot channels,
//! drives its timers, and carries out its [`Output::Persist`] effects by
//! appending to `__consumer_offsets`.
//!
//! # Ordering and durability
//!
//! Coordinator calls and the appends they ask for happen together under one
//! mutex, so the log receives records in the order the state machine made
//! them. Waiting for durability happens outside the lock, in a spawned task
//! (so a client hanging up cannot cut a persist short). Per offsets
//! partition, persists are numbered when appended and their completions run
//! in that order: offset commits are applied to memory in log order
//! (`complete_commit` after the append is durable), and answers that follow
//! a persist are sent only once it is durable. A failed persist turns every
//! later answer of the same call into COORDINATOR_NOT_AVAILABLE (or the
//! storage error for commits) and calls `persist_failed`: nothing is
//! reported as done that was not stored.
//!
//! # Loading
//!
//! `__consumer_offsets` is created on the first group request (as Kafka
//! does on the first FindCoordinator). If it exists at start, every
//! partition is marked loading before the listener opens and is replayed in
//! the background ([`GroupRuntime::start`]); requests for its groups answer
//! COORDINATOR_LOAD_IN_PROGRESS until then.

pub mod persist;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use skiff_protocol::ErrorCode;
use tokio::sync::{oneshot, watch, Notify};

use crate::coordinator::offsets::CommitResults;
use crate::coordinator::{
    CommitRequest, CoordinatorConfig, GroupCoordinator, HeartbeatRequest, JoinRequest,
    JoinResponse, LeaveResponse, LeavingMember, Output, PendingCommit, RandomIds, ReplyId,
    SyncRequest, SyncResponse, OFFSETS_TOPIC,
};
use crate::topics::{Topic, TopicError, TopicRegistry};
use persist::Appended;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// State guarded by the runtime's mutex.
pub(crate) struct Inner {
    pub(crate) coordinator: GroupCoordinator,
    topic: Option<Arc<Topic>>,
    joins: HashMap<ReplyId, oneshot::Sender<JoinResponse>>,
    syncs: HashMap<ReplyId, oneshot::Sender<SyncResponse>>,
    /// Per offsets partition, the number of the last persist appended.
    appended: Vec<u64>,
}

pub(crate) fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An answer to send once the persists before it are durable.
enum Delivery {
    Join(oneshot::Sender<JoinResponse>, JoinResponse),
    Sync(oneshot::Sender<SyncResponse>, SyncResponse),
    Commit(oneshot::Sender<CommitResults>, PendingCommit),
    /// Tells whether the stage's persist succeeded (DeleteGroups).
    Done(oneshot::Sender<ErrorCode>),
}

struct Persist {
    partition: i32,
    seq: u64,
    group_id: String,
    appended: Result<Option<Appended>, ErrorCode>,
}

/// A persist (none for the answers due at once) and the answers after it.
struct Stage {
    persist: Option<Persist>,
    deliveries: Vec<Delivery>,
}

/// Group counters for `/metrics`.
#[derive(Debug, Default)]
pub struct GroupMetrics {
    pub rebalances: AtomicU64,
}

/// The coordinator with its I/O. See the module docs.
pub struct GroupRuntime {
    inner: Mutex<Inner>,
    next_reply: AtomicU64,
    wake: Notify,
    /// Per offsets partition, the number of the last persist completed.
    completed: Vec<watch::Sender<u64>>,
    partitions: i32,
    /// How often expired offsets are looked for.
    retention_check_interval_ms: i64,
    pub metrics: GroupMetrics,
}

impl GroupRuntime {
    /// Builds the runtime over the registry's `__consumer_offsets`, if it
    /// exists (then every partition is loading until [`Self::start`]).
    pub fn new(
        config: CoordinatorConfig,
        retention_check_interval_ms: i64,
        topics: &TopicRegistry,
    ) -> GroupRuntime {
        let existing = topics.get(OFFSETS_TOPIC);
        let mut config = config;
        if let Some(topic) = &existing {
            let count = u32::try_from(topic.partitions.len()).unwrap_or(0);
            if count > 0 && count != config.offsets_partitions {
                tracing::info!(
                    partitions = count,
                    configured = config.offsets_partitions,
                    "__consumer_offsets keeps the partition count it was created with"
                );
                config.offsets_partitions = count;
            }
        }
        let partitions = i32::try_from(config.offsets_partitions).unwrap_or(i32::MAX);
        let mut coordinator = GroupCoordinator::new(config, Box::<RandomIds>::default());
        if existing.is_some() {
            for p in 0..partitions {
                coordinator.begin_loading(p);
            }
        }
        let slots = usize::try_from(partitions).unwrap_or(0);
        GroupRuntime {
            inner: Mutex::new(Inner {
                coordinator,
                topic: existing,
                joins: HashMap::new(),
                syncs: HashMap::new(),
                appended: vec![0; slots],
            }),
            next_reply: AtomicU64::new(1),
            wake: Notify::new(),
            completed: (0..slots).map(|_| watch::channel(0).0).collect(),
            partitions,
            retention_check_interval_ms: retention_check_interval_ms.max(1),
            metrics: GroupMetrics::default(),
        }
    }

    /// Replays `__consumer_offsets` in the background and starts the timer.
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        let topic = lock(&self.inner).topic.clone();
        if let Some(topic) = topic {
            let runtime = Arc::clone(self);
            tokio::task::spawn_blocking(move || runtime.load(&topic));
        }
        tokio::spawn(Arc::clone(self).run_timer(shutdown));
    }

    fn load(&self, topic: &Topic) {
        let started = std::time::Instant::now();
        let mut total = 0u64;
        for partition in &topic.partitions {
            match persist::load_partition(&self.inner, partition, now_ms) {
                Ok(records) => {
                    total += records;
                    lock(&self.inner)
                        .coordinator
                        .finish_loading(partition.index);
                }
                Err(error) => {
                    // Its groups stay COORDINATOR_LOAD_IN_PROGRESS: serving
                    // them without their offsets would rewind consumers.
                    tracing::error!(partition = partition.index, %error, "cannot load __consumer_offsets partition");
                }
            }
        }
        self.wake.notify_one();
        tracing::info!(
            records = total,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded __consumer_offsets"
        );
    }

    /// Creates `__consumer_offsets` on first use. Errors map to
    /// COORDINATOR_NOT_AVAILABLE, which clients retry.
    pub fn ensure_topic(&self, topics: &TopicRegistry) -> Result<(), ErrorCode> {
        let mut inner = lock(&self.inner);
        if inner.topic.is_some() {
            return Ok(());
        }
        let overrides = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let topic = match topics.create(OFFSETS_TOPIC, self.partitions, overrides) {
            Ok(topic) => topic,
            Err(TopicError::AlreadyExists { .. }) => topics
                .get(OFFSETS_TOPIC)
                .ok_or(ErrorCode::CoordinatorNotAvailable)?,
            Err(error) => {
                tracing::error!(%error, "cannot create __consumer_offsets");
                return Err(ErrorCode::CoordinatorNotAvailable);
            }
        };
        if topic.partitions.len() != inner.appended.len() {
            tracing::error!("__consumer_offsets has an unexpected partition count");
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        for p in 0..self.partitions {
            inner.coordinator.finish_loading(p);
        }
        inner.topic = Some(topic);
        Ok(())
    }

    /// Runs `f` on the coordinator under the lock.
    pub fn with<T>(&self, f: impl FnOnce(&GroupCoordinator) -> T) -> T {
        f(&lock(&self.inner).coordinator)
    }

    fn reply_id(&self) -> ReplyId {
        self.next_reply.fetch_add(1, Ordering::Relaxed)
    }

    /// JoinGroup; the receiver gets the answer when the rebalance allows.
    pub fn join(self: &Arc<Self>, request: JoinRequest) -> oneshot::Receiver<JoinResponse> {
        let reply = self.reply_id();
        let (tx, rx) = oneshot::channel();
        let stages = {
            let mut inner = lock(&self.inner);
            inner.joins.insert(reply, tx);
            let out = inner.coordinator.join_group(now_ms(), reply, request);
            self.plan(&mut inner, out)
        };
        self.execute(stages);
        rx
    }

    /// SyncGroup; the receiver gets the answer once the leader's assignment
    /// is stored.
    pub fn sync(self: &Arc<Self>, request: SyncRequest) -> oneshot::Receiver<SyncResponse> {
        let reply = self.reply_id();
        let (tx, rx) = oneshot::channel();
        let stages = {
            let mut inner = lock(&self.inner);
            inner.syncs.insert(reply, tx);
            let out = inner.coordinator.sync_group(now_ms(), reply, request);
            self.plan(&mut inner, out)
        };
        self.execute(stages);
        rx
    }

    pub fn heartbeat(&self, request: &HeartbeatRequest) -> ErrorCode {
        let error = lock(&self.inner).coordinator.heartbeat(now_ms(), request);
        self.wake.notify_one();
        error
    }

    pub fn leave(self: &Arc<Self>, group_id: &str, members: &[LeavingMember]) -> LeaveResponse {
        let (response, stages) = {
            let mut inner = lock(&self.inner);
            let (response, out) = inner.coordinator.leave_group(now_ms(), group_id, members);
            (response, self.plan(&mut inner, out))
        };
        self.execute(stages);
        response
    }

    /// OffsetCommit: validated, appended, and applied once durable.
    pub fn commit(self: &Arc<Self>, request: &CommitRequest) -> oneshot::Receiver<CommitResults> {
        let (tx, rx) = oneshot::channel();
        let stages = {
            let mut inner = lock(&self.inner);
            let now = now_ms();
            let pending = inner.coordinator.offset_commit(now, request);
            if pending.records.is_empty() {
                let _ = tx.send(pending.results);
                return rx;
            }
            let output = Output::Persist {
                group_id: pending.group_id.clone(),
                partition: pending.partition,
                records: pending.records.clone(),
            };
            let mut stages = self.plan(&mut inner, vec![output]);
            if let Some(last) = stages.last_mut() {
                last.deliveries.push(Delivery::Commit(tx, pending));
            }
            stages
        };
        self.execute(stages);
        rx
    }

    /// DeleteGroups: per group, the error once its tombstones are durable.
    pub async fn delete_groups(self: &Arc<Self>, group_ids: &[String]) -> Vec<(String, ErrorCode)> {
        let mut waits = Vec::new();
        let (mut results, stages) = {
            let mut inner = lock(&self.inner);
            let (results, out) = inner.coordinator.delete_groups(group_ids);
            let mut stages = self.plan(&mut inner, out);
            for stage in &mut stages {
                if let Some(persist) = &stage.persist {
                    let (tx, rx) = oneshot::channel();
                    waits.push((persist.group_id.clone(), rx));
                    stage.deliveries.push(Delivery::Done(tx));
                }
            }
            (results, stages)
        };
        self.execute(stages);
        for (group_id, rx) in waits {
            let error = rx.await.unwrap_or(ErrorCode::CoordinatorNotAvailable);
            if let Some(result) = results.iter_mut().find(|(id, _)| *id == group_id) {
                result.1 = error;
            }
        }
        results
    }

    /// DeleteTopics: drops the topics' committed offsets.
    pub fn topics_deleted(self: &Arc<Self>, topics: &[String]) {
        let stages = {
            let mut inner = lock(&self.inner);
            let out = inner.coordinator.topics_deleted(topics);
            self.plan(&mut inner, out)
        };
        self.execute(stages);
    }

    /// Splits `outputs` at each persist, appending its records now.
    fn plan(&self, inner: &mut Inner, outputs: Vec<Output>) -> Vec<Stage> {
        let mut stages = vec![Stage {
            persist: None,
            deliveries: Vec::new(),
        }];
        for output in outputs {
            match output {
                Output::Join { reply, response } => {
                    if response.error.is_ok() && response.member_id == response.leader {
                        self.metrics.rebalances.fetch_add(1, Ordering::Relaxed);
                    }
                    if let (Some(tx), Some(stage)) = (inner.joins.remove(&reply), stages.last_mut())
                    {
                        stage.deliveries.push(Delivery::Join(tx, response));
                    }
                }
                Output::Sync { reply, response } => {
                    if let (Some(tx), Some(stage)) = (inner.syncs.remove(&reply), stages.last_mut())
                    {
                        stage.deliveries.push(Delivery::Sync(tx, response));
                    }
                }
                Output::Persist {
                    group_id,
                    partition,
                    records,
                } => {
                    let slot = usize::try_from(partition).unwrap_or(usize::MAX);
                    assert!(
                        slot < inner.appended.len(),
                        "coordinator persisted to partition {partition} of {}",
                        inner.appended.len()
                    );
                    let appended = match &inner.topic {
                        Some(topic) => persist::append(topic, partition, &records, now_ms()),
                        None => Err(ErrorCode::CoordinatorNotAvailable),
                    };
                    inner.appended[slot] += 1;
                    stages.push(Stage {
                        persist: Some(Persist {
                            partition,
                            seq: inner.appended[slot],
                            group_id,
                            appended,
                        }),
                        deliveries: Vec::new(),
                    });
                }
            }
        }
        stages
    }

    /// Sends the answers due now; the rest wait for their persists in a task.
    fn execute(self: &Arc<Self>, mut stages: Vec<Stage>) {
        self.wake.notify_one();
        if stages.first().is_some_and(|s| s.persist.is_none()) {
            let first = stages.remove(0);
            self.deliver(first.deliveries, None);
        }
        if !stages.is_empty() {
            let runtime = Arc::clone(self);
            tokio::spawn(async move { runtime.complete(stages).await });
        }
    }

    async fn complete(self: Arc<Self>, stages: Vec<Stage>) {
        let mut failed: Option<ErrorCode> = None;
        for stage in stages {
            let Some(persist) = stage.persist else {
                self.deliver(stage.deliveries, failed);
                continue;
            };
            let slot = usize::try_from(persist.partition).unwrap_or(0);
            let mut turn = self.completed[slot].subscribe();
            let _ = turn.wait_for(|done| *done + 1 >= persist.seq).await;
            let result = match (&failed, &persist.appended) {
                (Some(error), _) => Err(*error),
                (None, Ok(Some(appended))) => persist::wait_durable(appended).await,
                (None, Ok(None)) => Ok(()),
                (None, Err(error)) => Err(*error),
            };
            if let Err(error) = result {
                if failed.is_none() {
                    failed = Some(error);
                    let stages = {
                        let mut inner = lock(&self.inner);
                        let out = inner
                            .coordinator
                            .persist_failed(now_ms(), &persist.group_id);
                        self.plan(&mut inner, out)
                    };
                    self.execute(stages);
                }
            }
            self.deliver(stage.deliveries, failed);
            self.completed[slot].send_modify(|done| *done = (*done).max(persist.seq));
        }
    }

    fn deliver(&self, deliveries: Vec<Delivery>, failed: Option<ErrorCode>) {
        for delivery in deliveries {
            match (delivery, failed) {
                (Delivery::Join(tx, response), None) => {
                    let _ = tx.send(response);
                }
                (Delivery::Join(tx, response), Some(_)) => {
                    let _ = tx.send(JoinResponse::error(
                        ErrorCode::CoordinatorNotAvailable,
                        &response.member_id,
                    ));
                }
                (Delivery::Sync(tx, response), None) => {
                    let _ = tx.send(response);
                }
                (Delivery::Sync(tx, _), Some(_)) => {
                    let _ = tx.send(SyncResponse::error(ErrorCode::CoordinatorNotAvailable));
                }
                (Delivery::Commit(tx, pending), None) => {
                    lock(&self.inner)
                        .coordinator
                        .complete_commit(now_ms(), &pending);
                    let _ = tx.send(pending.results);
                }
                (Delivery::Commit(tx, mut pending), Some(error)) => {
                    for (_, partitions) in &mut pending.results {
                        for (_, code) in partitions.iter_mut() {
                            if code.is_ok() {
                                *code = error;
                            }
                        }
                    }
                    let _ = tx.send(pending.results);
                }
                (Delivery::Done(tx), failed) => {
                    let _ = tx.send(failed.unwrap_or(ErrorCode::None));
                }
            }
        }
    }

    /// Fires session and rebalance deadlines, and expires old offsets.
    async fn run_timer(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut next_retention_ms = now_ms() + self.retention_check_interval_ms;
        loop {
            let now = now_ms();
            let stages = {
                let mut inner = lock(&self.inner);
                let mut out = inner.coordinator.tick(now);
                if now >= next_retention_ms && !inner.coordinator.is_loading() {
                    next_retention_ms = now + self.retention_check_interval_ms;
                    out.extend(inner.coordinator.expire_offsets(now));
                }
                self.plan(&mut inner, out)
            };
            if stages.len() > 1 || stages.iter().any(|s| !s.deliveries.is_empty()) {
                self.execute(stages);
            }
            let deadline = self
                .with(|c| c.next_deadline_ms())
                .unwrap_or(i64::MAX)
                .min(next_retention_ms);
            let wait_ms = u64::try_from(deadline.saturating_sub(now_ms())).unwrap_or(0);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {
                    self.release_parked();
                    return;
                }
            }
        }
    }

    /// Answers every parked JoinGroup and SyncGroup NOT_COORDINATOR, as
    /// Kafka does when it stops coordinating: shutdown waits for in-flight
    /// requests, and these could otherwise wait a whole rebalance timeout.
    fn release_parked(&self) {
        let (joins, syncs) = {
            let mut inner = lock(&self.inner);
            (
                std::mem::take(&mut inner.joins),
                std::mem::take(&mut inner.syncs),
            )
        };
        for (_, tx) in joins {
            let _ = tx.send(JoinResponse::error(ErrorCode::NotCoordinator, ""));
        }
        for (_, tx) in syncs {
            let _ = tx.send(SyncResponse::error(ErrorCode::NotCoordinator));
        }
    }

    /// The group series of `/metrics`, in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let (groups, members) = self.with(|c| (c.group_ids().len(), c.member_count()));
        let rebalances = self.metrics.rebalances.load(Ordering::Relaxed);
        format!(
            "# HELP skiff_groups Consumer groups coordinated (including empty groups with offsets).\n\
             # TYPE skiff_groups gauge\nskiff_groups {groups}\n\
             # HELP skiff_group_members Members of all groups.\n\
             # TYPE skiff_group_members gauge\nskiff_group_members {members}\n\
             # HELP skiff_group_rebalances_total Rebalances completed (JoinGroup answered to a leader).\n\
             # TYPE skiff_group_rebalances_total counter\nskiff_group_rebalances_total {rebalances}\n"
        )
    }
}

#[cfg(test)]
mod tests;
