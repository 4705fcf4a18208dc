//! The consumer, with manual assignment: the application says which
//! partitions to read and where to start; [`Consumer::poll`] returns records.
//!
//! Fetches are pipelined: when a broker's answer is turned into records,
//! the next fetch to that broker is sent before `poll` returns, so it is in
//! flight while the application works on the last batch. Positions with no
//! offset yet (new assignments, or after OFFSET_OUT_OF_RANGE) are resolved
//! with ListOffsets according to [`OffsetReset`].
//!
//! Group membership (`subscribe`) builds on this type from the `group`
//! module; the assignment API here is what it drives.

mod fetcher;
mod group;
mod offsets;
mod sink;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use sink::{RecordSink, Visitor};
use skiff_protocol::api::messages::FetchResponse;
use skiff_protocol::ErrorCode;

pub use fetcher::{ConsumerRecord, RecordView};
pub use group::RebalanceListener;
pub use offsets::{list_offsets, ListedOffset, OffsetSpec};

use crate::client::Client;
use crate::error::{Error, Result};

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Where to start when a partition has no valid position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest record still in the log.
    Earliest,
    /// The log end: only records produced from now on (Kafka's default).
    #[default]
    Latest,
    /// No automatic reset: `poll` returns [`Error::OffsetOutOfRange`].
    None,
}

/// Where [`Consumer::seek`] moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// This exact offset.
    Offset(i64),
    /// The earliest offset in the log.
    Beginning,
    /// The log end offset.
    End,
    /// The first record with a timestamp at or after this one (ms since the
    /// epoch), or the log end if there is none.
    Timestamp(i64),
}

/// Consumer settings; defaults follow the Java client.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The broker answers a fetch once it has this many bytes (default 1).
    pub fetch_min_bytes: i32,
    /// ...or once this long has passed (default 500 ms).
    pub fetch_max_wait: Duration,
    /// Most bytes returned per partition per fetch (default 1 MiB; a larger
    /// first batch is still returned whole, KIP-74).
    pub max_partition_fetch_bytes: i32,
    /// Most bytes per fetch response (default 50 MiB).
    pub fetch_max_bytes: i32,
    /// What to do without a valid position (default latest).
    pub auto_offset_reset: OffsetReset,
    /// Verify each batch's CRC-32C (default true).
    pub check_crcs: bool,
    /// Wait before refetching a partition after an error (default 100 ms).
    pub retry_backoff: Duration,
    /// The consumer group (`group.id`); needed by `subscribe` and commits.
    pub group_id: Option<String>,
    /// Static membership id (`group.instance.id`, KIP-345): a member that
    /// restarts within the session timeout gets its partitions back without
    /// a rebalance.
    pub group_instance_id: Option<String>,
    /// The coordinator drops a member it has not heard from for this long
    /// (default 45 s).
    pub session_timeout: Duration,
    /// Heartbeat period (default 3 s; at most a third of the session timeout).
    pub heartbeat_interval: Duration,
    /// Longest time between two `poll` calls before the member leaves the
    /// group; also the rebalance timeout sent in JoinGroup (default 300 s).
    pub max_poll_interval: Duration,
    /// Assignors offered in JoinGroup, in order of preference (default
    /// Kafka's: `range`, `cooperative-sticky`).
    pub partition_assignment_strategy: Vec<String>,
    /// Commit consumed positions periodically and on revocation (default true).
    pub enable_auto_commit: bool,
    /// Auto-commit period (default 5 s).
    pub auto_commit_interval: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_min_bytes: 1,
            fetch_max_wait: Duration::from_millis(500),
            max_partition_fetch_bytes: 1024 * 1024,
            fetch_max_bytes: 50 * 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
            check_crcs: true,
            retry_backoff: Duration::from_millis(100),
            group_id: None,
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            partition_assignment_strategy: vec!["range".into(), "cooperative-sticky".into()],
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    topic: Arc<str>,
    /// Next offset to fetch; `None` until resolved.
    position: Option<i64>,
    /// Bumped by every seek so that answers to older fetches are dropped.
    generation: u64,
    fetching: bool,
    /// Waiting for the group's committed offset before any reset.
    awaiting_committed: bool,
    retry_at: Option<Instant>,
    high_watermark: i64,
}

struct FetchDone {
    broker: i32,
    requested: Vec<(TopicPartition, i64, u64)>,
    result: Result<FetchResponse>,
}

/// Reads assigned partitions.
///
/// ```no_run
/// # async fn demo(client: skiff_client::Client) -> skiff_client::Result<()> {
/// use std::time::Duration;
/// use skiff_client::{Consumer, ConsumerConfig, SeekTo, TopicPartition};
///
/// let mut consumer = Consumer::new(client, ConsumerConfig::default());
/// let tp = TopicPartition::new("events", 0);
/// consumer.assign([tp.clone()]);
/// consumer.seek(&tp, SeekTo::Timestamp(1_700_000_000_000)).await?;
/// for record in consumer.poll(Duration::from_secs(1)).await? {
///     println!("{} {:?}", record.offset, record.value);
/// }
/// # Ok(()) }
/// ```
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    /// Fetches in flight, polled by `poll` (not tasks of their own: a task
    /// per fetch cost a spawn and a hand-off per response). In a mutex only
    /// so that the consumer stays `Sync`; reached with `get_mut`, never locked.
    fetches: std::sync::Mutex<Fetches>,
    brokers_fetching: HashMap<i32, usize>,
    deferred_error: Option<Error>,
    metadata_refreshing: Arc<AtomicBool>,
    group: Option<group::GroupState>,
}

/// Rounds of "send, then absorb what completed at once" in one poll: each
/// round adds at most one response per broker to the records it returns.
const IMMEDIATE_FETCH_ROUNDS_MAX: usize = 3;

// Applications share consumers across threads (`Arc<Mutex<Consumer>>`,
// `&Consumer` in scoped threads); keep both.
const _: fn() = || {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Consumer>();
};

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("assignment", &self.partitions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer on `client` with nothing assigned.
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        let group = group::GroupState::new(&client, &config);
        Consumer {
            group,
            client,
            config,
            partitions: BTreeMap::new(),
            fetches: std::sync::Mutex::new(FuturesUnordered::new()),
            brokers_fetching: HashMap::new(),
            deferred_error: None,
            metadata_refreshing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The client this consumer uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Replaces the assignment. Partitions kept keep their positions; new
    /// ones start per `auto_offset_reset` unless sought.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let mut next = BTreeMap::new();
        for tp in partitions {
            let state = self
                .partitions
                .remove(&tp)
                .unwrap_or_else(|| PartitionState {
                    topic: Arc::from(tp.topic.as_str()),
                    high_watermark: -1,
                    ..Default::default()
                });
            next.insert(tp, state);
        }
        // Dropped partitions: bump nothing, their answers find no state.
        self.partitions = next;
    }

    /// Assigns every partition of `topics`.
    pub async fn assign_topics(&mut self, topics: &[&str]) -> Result<()> {
        let mut all: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        for topic in topics {
            let metadata = self.client.topic(topic).await?;
            for partition in &metadata.partitions {
                let tp = TopicPartition::new(*topic, partition.partition);
                if !all.contains(&tp) {
                    all.push(tp);
                }
            }
        }
        self.assign(all);
        Ok(())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// The next offset `poll` will return for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions.get(tp).and_then(|s| s.position)
    }

    /// The high watermark the last fetch of `tp` reported, -1 before any.
    pub fn high_watermark(&self, tp: &TopicPartition) -> i64 {
        self.partitions.get(tp).map_or(-1, |s| s.high_watermark)
    }

    /// Fetch requests in flight right now. After a `poll` that returned
    /// records this is normally one per leader: the next fetch is already
    /// on its way while the application works.
    pub fn fetches_in_flight(&self) -> usize {
        self.brokers_fetching.values().sum()
    }

    /// Moves `tp` to a new position, returning it.
    pub async fn seek(&mut self, tp: &TopicPartition, to: SeekTo) -> Result<i64> {
        if !self.partitions.contains_key(tp) {
            return Err(Error::NotAssigned {
                topic: tp.topic.clone(),
                partition: tp.partition,
            });
        }
        let position = match to {
            SeekTo::Offset(offset) => offset,
            SeekTo::Beginning => self.lookup(tp, OffsetSpec::Earliest).await?.offset,
            SeekTo::End => self.lookup(tp, OffsetSpec::Latest).await?.offset,
            SeekTo::Timestamp(ts) => match self.lookup(tp, OffsetSpec::Timestamp(ts)).await?.offset
            {
                -1 => self.lookup(tp, OffsetSpec::Latest).await?.offset,
                offset => offset,
            },
        };
        if let Some(state) = self.partitions.get_mut(tp) {
            state.position = Some(position);
            state.generation += 1;
            state.retry_at = None;
        }
        Ok(position)
    }

    /// Seeks every assigned partition.
    pub async fn seek_all(&mut self, to: SeekTo) -> Result<()> {
        for tp in self.assignment() {
            self.seek(&tp, to).await?;
        }
        Ok(())
    }

    async fn lookup(&self, tp: &TopicPartition, spec: OffsetSpec) -> Result<ListedOffset> {
        let found = list_offsets(&self.client, &[(tp.clone(), spec)]).await?;
        found.get(tp).copied().ok_or_else(|| {
            Error::kafka(
                ErrorCode::UnknownTopicOrPartition,
                format!("list offsets of {tp}"),
                None,
            )
        })
    }

    /// Waits up to `timeout` for records and returns those fetched (possibly
    /// none). Records of a partition come in offset order.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let mut records = Vec::new();
        self.poll_into(timeout, &mut records).await?;
        Ok(records)
    }

    /// Like [`poll`](Consumer::poll), but shows each record to `visit`,
    /// borrowed from the fetched data, instead of returning owned records;
    /// returns how many it showed. No allocation or reference count per
    /// record: for applications that handle each record in place, at high
    /// rates. The records shown count as consumed, as those `poll` returns.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: skiff_client::Consumer) -> skiff_client::Result<()> {
    /// let mut bytes = 0;
    /// let shown = consumer
    ///     .poll_with(std::time::Duration::from_millis(100), |record| {
    ///         bytes += record.value.map_or(0, <[u8]>::len);
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn poll_with<F>(&mut self, timeout: Duration, visit: F) -> Result<usize>
    where
        F: FnMut(RecordView<'_>) + Send,
    {
        let mut visitor = Visitor { visit, shown: 0 };
        self.poll_into(timeout, &mut visitor).await?;
        Ok(visitor.shown)
    }

    async fn poll_into(&mut self, timeout: Duration, records: &mut impl RecordSink) -> Result<()> {
        let deadline = Instant::now() + timeout;
        if let Some(error) = self.deferred_error.take() {
            return Err(error);
        }
        self.group_tick().await?;
        loop {
            if let Err(error) = self.resolve_positions().await {
                if !error.is_retriable() {
                    return Err(error);
                }
                // The cluster is unreachable or moving: try again shortly.
                tracing::debug!(%error, "cannot resolve positions yet");
                let pause = self
                    .config
                    .retry_backoff
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                if Instant::now() >= deadline {
                    return Ok(());
                }
                continue;
            }
            while let Some(Some(done)) = self.fetches_mut().next().now_or_never() {
                self.absorb(done, records);
            }
            self.send_and_start_fetches(records);
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(());
            }
            if let Some(error) = self.deferred_error.take() {
                return Err(error);
            }
            let wake_at = self
                .partitions
                .values()
                .filter_map(|s| s.retry_at)
                .fold(deadline, Instant::min);
            tokio::select! {
                Some(done) = fetches_of(&mut self.fetches).next(), if !fetches_of(&mut self.fetches).is_empty() => {
                    self.absorb(done, records);
                }
                Some(event) = group::next_event(&mut self.group) => {
                    // `records` is empty here: every position is one the
                    // application has consumed, so it is safe to commit.
                    self.on_group_event(event).await?;
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
            if let Some(error) = self.deferred_error.take() {
                if records.is_empty() {
                    return Err(error);
                }
                self.deferred_error = Some(error);
            }
        }
    }

    /// Resolves positions of partitions that have none, by the reset policy.
    async fn resolve_positions(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.position.is_none() && !s.fetching && !s.awaiting_committed)
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let spec = match self.config.auto_offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::None => {
                let tp = &missing[0];
                return Err(Error::OffsetOutOfRange {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: -1,
                });
            }
        };
        let asks: Vec<(TopicPartition, OffsetSpec)> =
            missing.into_iter().map(|tp| (tp, spec)).collect();
        let found = list_offsets(&self.client, &asks).await?;
        for (tp, listed) in found {
            if let Some(state) = self.partitions.get_mut(&tp) {
                if state.position.is_none() {
                    state.position = Some(listed.offset);
                    state.generation += 1;
                }
            }
        }
        Ok(())
    }

    /// Sends what fetches are due and takes them to their first wait, which
    /// writes their requests: the broker serves them while the application
    /// handles the records this poll returns. A fetch can also complete in
    /// that first poll (its answer arrived while this thread was preempted
    /// on a busy machine); its partitions then get their next fetch sent
    /// too, so that one is in flight when the records are returned.
    fn send_and_start_fetches(&mut self, records: &mut impl RecordSink) {
        for _ in 0..IMMEDIATE_FETCH_ROUNDS_MAX {
            self.send_fetches();
            let mut completed = false;
            while let Some(Some(done)) = self.fetches_mut().next().now_or_never() {
                self.absorb(done, records);
                completed = true;
            }
            if !completed {
                return;
            }
        }
    }

    /// Sends a fetch to every leader that has none in flight.
    fn send_fetches(&mut self) {
        let now = Instant::now();
        let mut by_leader: HashMap<i32, Vec<(TopicPartition, i64, u64)>> = HashMap::new();
        let mut need_metadata = false;
        for (tp, state) in &mut self.partitions {
            let Some(position) = state.position else {
                continue;
            };
            if state.fetching || state.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let Some(leader) = self.client.cached_leader(&tp.topic, tp.partition) else {
                need_metadata = true;
                state.retry_at = Some(now + self.config.retry_backoff);
                continue;
            };
            if self.brokers_fetching.get(&leader).copied().unwrap_or(0) > 0 {
                continue;
            }
            by_leader
                .entry(leader)
                .or_default()
                .push((tp.clone(), position, state.generation));
        }
        let stale = need_metadata || self.client.is_metadata_stale();
        if stale {
            self.client.refresh_metadata_spaced(
                &self.metadata_refreshing,
                self.config.retry_backoff,
                || {},
            );
        }
        for (leader, requested) in by_leader {
            for (tp, _, _) in &requested {
                if let Some(state) = self.partitions.get_mut(tp) {
                    state.fetching = true;
                }
            }
            *self.brokers_fetching.entry(leader).or_default() += 1;
            let positions: Vec<(TopicPartition, i64)> = requested
                .iter()
                .map(|(tp, o, _)| (tp.clone(), *o))
                .collect();
            let request = fetcher::fetch_request(&self.config, &positions);
            let client = self.client.clone();
            let fetch_max_wait = self.config.fetch_max_wait;
            self.fetches_mut().push(Box::pin(async move {
                let result = async {
                    let connection = client.broker_connection(leader).await?;
                    // The broker may hold a fetch for fetch_max_wait before answering.
                    let timeout = client.config().connection.request_timeout + fetch_max_wait;
                    connection
                        .send(request)
                        .await?
                        .response_within(timeout)
                        .await
                }
                .await;
                FetchDone {
                    broker: leader,
                    requested,
                    result,
                }
            }));
        }
    }

    fn fetches_mut(&mut self) -> &mut Fetches {
        fetches_of(&mut self.fetches)
    }

    /// Turns a fetch answer into records and new positions.
    fn absorb(&mut self, done: FetchDone, records: &mut impl RecordSink) {
        if let Some(count) = self.brokers_fetching.get_mut(&done.broker) {
            *count = count.saturating_sub(1);
        }
        let now = Instant::now();
        let backoff = self.config.retry_backoff;
        for (tp, _, _) in &done.requested {
            if let Some(state) = self.partitions.get_mut(tp) {
                state.fetching = false;
            }
        }
        let response = match done.result {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, broker = done.broker, "fetch failed");
                if error.invalidates_metadata() {
                    self.client.invalidate_metadata();
                }
                for (tp, _, _) in &done.requested {
                    if let Some(state) = self.partitions.get_mut(tp) {
                        state.retry_at = Some(now + backoff);
                    }
                }
                return;
            }
        };
        if response.error_code != 0 {
            let code = ErrorCode::from_code(response.error_code);
            tracing::debug!(?code, "fetch failed as a whole");
            for (tp, _, _) in &done.requested {
                if let Some(state) = self.partitions.get_mut(tp) {
                    state.retry_at = Some(now + backoff);
                }
            }
            return;
        }
        let mut stale_metadata = false;
        for topic in response.responses {
            for partition in topic.partitions {
                let tp = TopicPartition::new(topic.topic.0.as_str(), partition.partition_index);
                let Some((_, requested_offset, generation)) =
                    done.requested.iter().find(|(t, _, _)| *t == tp)
                else {
                    continue;
                };
                let Some(state) = self.partitions.get_mut(&tp) else {
                    continue;
                };
                // The partition was sought (or reset) since this fetch left.
                if state.generation != *generation || state.position != Some(*requested_offset) {
                    continue;
                }
                state.high_watermark = partition.high_watermark;
                match ErrorCode::from_code(partition.error_code) {
                    ErrorCode::None => {
                        let Some(data) = partition.records else {
                            continue;
                        };
                        match records.take(
                            &state.topic,
                            tp.partition,
                            data,
                            *requested_offset,
                            self.config.check_crcs,
                        ) {
                            Ok(next) => state.position = Some(next),
                            Err(partial) => {
                                // The batches before the bad one were
                                // delivered: resume at the bad one.
                                state.position = Some(partial.next);
                                self.deferred_error.get_or_insert(partial.error);
                            }
                        }
                    }
                    ErrorCode::OffsetOutOfRange => match self.config.auto_offset_reset {
                        OffsetReset::None => {
                            self.deferred_error.get_or_insert(Error::OffsetOutOfRange {
                                topic: tp.topic.clone(),
                                partition: tp.partition,
                                offset: *requested_offset,
                            });
                        }
                        _ => {
                            tracing::info!(%tp, offset = requested_offset, "offset out of range, resetting");
                            state.position = None;
                        }
                    },
                    code if crate::error::is_stale_metadata_code(code) || code.is_retriable() => {
                        stale_metadata |= crate::error::is_stale_metadata_code(code);
                        state.retry_at = Some(now + backoff);
                    }
                    code => {
                        self.deferred_error.get_or_insert(Error::kafka(
                            code,
                            format!("fetch from {tp}"),
                            None,
                        ));
                        state.retry_at = Some(now + backoff);
                    }
                }
            }
        }
        if stale_metadata {
            self.client.invalidate_metadata();
        }
    }
}

/// Fetches in flight (see `Consumer::fetches`).
type Fetches = FuturesUnordered<BoxFuture<'static, FetchDone>>;

fn fetches_of(fetches: &mut std::sync::Mutex<Fetches>) -> &mut Fetches {
    fetches
        .get_mut()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
