//! The shared core of producers, consumers and admins: one connection per
//! broker, reconnects with backoff, and the metadata cache.
//!
//! The cache is refreshed on a timer (`metadata_max_age`) by a background
//! task, and on demand when a caller reports stale metadata (a
//! NOT_LEADER_OR_FOLLOWER or UNKNOWN_TOPIC_OR_PARTITION answer, a broker
//! that went away) through [`Client::invalidate_metadata`]. Concurrent
//! refreshes collapse into one request.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use skiff_protocol::api::messages::metadata_request::MetadataRequestTopic;
use skiff_protocol::api::messages::{MetadataRequest, TopicName};
use skiff_protocol::api::StrBytes;
use skiff_protocol::ErrorCode;

use crate::error::{Error, Result};
use crate::metadata::{self, ClusterMetadata, TopicMetadata};
use crate::net::{
    parse_bootstrap, BrokerAddress, BrokerConnection, ConnectionConfig, QuicTrust, Transport,
};

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Brokers to ask for the cluster's metadata first.
    pub bootstrap: Vec<BrokerAddress>,
    /// Connection settings (client id, timeouts, QUIC trust).
    pub connection: ConnectionConfig,
    /// Metadata older than this is refreshed in the background.
    pub metadata_max_age: Duration,
    /// Wait before the first reconnect to a broker that failed.
    pub reconnect_backoff: Duration,
    /// Upper bound of the exponential reconnect backoff.
    pub reconnect_backoff_max: Duration,
}

impl ClientConfig {
    /// A configuration for a comma-separated bootstrap list
    /// (`host:port`, `quic://host:port`).
    pub fn new(bootstrap: &str) -> Result<Self> {
        Ok(ClientConfig {
            bootstrap: parse_bootstrap(bootstrap)?,
            connection: ConnectionConfig::default(),
            metadata_max_age: Duration::from_secs(300),
            reconnect_backoff: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(1),
        })
    }

    /// Sets the client id sent with every request.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.connection.client_id = client_id.into();
        self
    }

    /// Sets how long a request may wait for its response.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.connection.request_timeout = timeout;
        self
    }

    /// Sets how QUIC brokers' certificates are trusted.
    pub fn quic_trust(mut self, trust: QuicTrust) -> Self {
        self.connection.quic_trust = Some(trust);
        self
    }

    /// Sets the metadata refresh interval.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = age;
        self
    }

    /// Sets the reconnect backoff (first wait, and its cap).
    pub fn reconnect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.reconnect_backoff = first;
        self.reconnect_backoff_max = max.max(first);
        self
    }
}

/// A handle on a cluster: connections and metadata. Cheap to clone; clones
/// share everything.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.config.bootstrap)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    cache: RwLock<Cache>,
    refresh: tokio::sync::Mutex<()>,
    pool: Mutex<HashMap<BrokerAddress, Arc<Slot>>>,
    timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut timer) = self.timer.lock() {
            if let Some(task) = timer.take() {
                task.abort();
            }
        }
    }
}

#[derive(Default)]
struct Cache {
    metadata: ClusterMetadata,
    fetched_at: Option<Instant>,
    /// Topics anyone asked about; each refresh asks for all of them.
    wanted: BTreeSet<String>,
    stale: bool,
}

/// One broker address's connection, with its reconnect state.
#[derive(Default)]
struct Slot {
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    connection: Option<Arc<BrokerConnection>>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Client {
    /// Connects to the first reachable bootstrap broker and loads the
    /// cluster's broker list.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let client = Client {
            inner: Arc::new(Inner {
                config,
                cache: RwLock::new(Cache::default()),
                refresh: tokio::sync::Mutex::new(()),
                pool: Mutex::new(HashMap::new()),
                timer: Mutex::new(None),
            }),
        };
        client.refresh_metadata().await?;
        let timer = tokio::spawn(refresh_timer(Arc::downgrade(&client.inner)));
        if let Ok(mut slot) = client.inner.timer.lock() {
            *slot = Some(timer);
        }
        Ok(client)
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The connection to `address`, made (or remade after a failure) as needed.
    /// After a failure, reconnects wait an exponentially growing backoff.
    pub async fn connection_to(&self, address: &BrokerAddress) -> Result<Arc<BrokerConnection>> {
        let slot = {
            let mut pool = self.inner.pool.lock().map_err(|_| poisoned())?;
            Arc::clone(pool.entry(address.clone()).or_default())
        };
        let mut state = slot.state.lock().await;
        if let Some(connection) = &state.connection {
            if !connection.is_closed() {
                return Ok(Arc::clone(connection));
            }
            state.connection = None;
        }
        if let Some(retry_at) = state.retry_at {
            tokio::time::sleep_until(retry_at.into()).await;
        }
        match BrokerConnection::connect(address, &self.inner.config.connection).await {
            Ok(connection) => {
                state.failures = 0;
                state.retry_at = None;
                state.connection = Some(Arc::clone(&connection));
                Ok(connection)
            }
            Err(error) => {
                let config = &self.inner.config;
                let backoff = config
                    .reconnect_backoff
                    .saturating_mul(1u32 << state.failures.min(16))
                    .min(config.reconnect_backoff_max);
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + backoff);
                Err(error)
            }
        }
    }

    /// The connection to broker `node_id`.
    pub async fn broker_connection(&self, node_id: i32) -> Result<Arc<BrokerConnection>> {
        let address = self.broker_address(node_id).ok_or_else(|| {
            Error::kafka(
                ErrorCode::BrokerNotAvailable,
                format!("broker {node_id} is not in the cluster metadata"),
                None,
            )
        })?;
        self.connection_to(&address).await
    }

    /// The open connection to broker `node_id`, if there is one right now
    /// (without waiting or dialling).
    pub fn connected(&self, node_id: i32) -> Option<Arc<BrokerConnection>> {
        let address = self.broker_address(node_id)?;
        let slot = self.inner.pool.lock().ok()?.get(&address).cloned()?;
        let state = slot.state.try_lock().ok()?;
        state
            .connection
            .as_ref()
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// The address of broker `node_id`, from the cache.
    ///
    /// A broker reached over QUIC may advertise its TCP port (Metadata has
    /// one port per broker); with a single broker and a single QUIC
    /// bootstrap address, that address is the broker, so it is used.
    pub fn broker_address(&self, node_id: i32) -> Option<BrokerAddress> {
        let cache = self.inner.cache.read().ok()?;
        let advertised = cache.metadata.brokers.get(&node_id)?;
        if let [only] = self.inner.config.bootstrap.as_slice() {
            if only.transport == Transport::Quic && cache.metadata.brokers.len() == 1 {
                return Some(only.clone());
            }
        }
        Some(advertised.clone())
    }

    /// A connection to any broker: known brokers first, then the bootstrap list.
    pub async fn any_connection(&self) -> Result<Arc<BrokerConnection>> {
        let node_ids: Vec<i32> = self
            .inner
            .cache
            .read()
            .map(|c| c.metadata.brokers.keys().copied().collect())
            .unwrap_or_default();
        let mut candidates: Vec<BrokerAddress> = node_ids
            .into_iter()
            .filter_map(|id| self.broker_address(id))
            .collect();
        for address in &self.inner.config.bootstrap {
            if !candidates.contains(address) {
                candidates.push(address.clone());
            }
        }
        let mut last_error = None;
        for address in &candidates {
            match self.connection_to(address).await {
                Ok(connection) => return Ok(connection),
                Err(error) => last_error = Some(error),
            }
        }
        let tried = candidates
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Err(match last_error {
            // A configuration problem is clearer than "no broker".
            Some(error @ (Error::Config(_) | Error::Certificate { .. })) => error,
            other => Error::NoBrokerAvailable {
                tried,
                last_error: other.map(|e| e.to_string()).unwrap_or_default(),
            },
        })
    }

    /// The connection to the controller (for topic creation and deletion).
    pub async fn controller_connection(&self) -> Result<Arc<BrokerConnection>> {
        let controller = self
            .inner
            .cache
            .read()
            .map(|c| c.metadata.controller_id)
            .unwrap_or(-1);
        if controller >= 0 {
            if let Ok(connection) = self.broker_connection(controller).await {
                return Ok(connection);
            }
        }
        self.any_connection().await
    }

    /// The cached metadata of `topic` if it has partitions, however old.
    /// Hot paths use this and leave refreshing to the background.
    pub fn cached_topic(&self, topic: &str) -> Option<Arc<TopicMetadata>> {
        let cache = self.inner.cache.read().ok()?;
        cache
            .metadata
            .topics
            .get(topic)
            .filter(|t| t.error.is_none() && !t.partitions.is_empty())
            .cloned()
    }

    /// Whether someone reported the metadata stale since the last refresh.
    pub fn is_metadata_stale(&self) -> bool {
        self.inner.cache.read().map(|c| c.stale).unwrap_or(true)
    }

    /// Marks the cached metadata stale: the next lookup refreshes it.
    pub fn invalidate_metadata(&self) {
        if let Ok(mut cache) = self.inner.cache.write() {
            cache.stale = true;
        }
    }

    /// A snapshot of the cached metadata.
    pub fn cached_metadata(&self) -> ClusterMetadata {
        self.inner
            .cache
            .read()
            .map(|c| c.metadata.clone())
            .unwrap_or_default()
    }

    /// The cached leader of a partition, if known and reachable.
    pub fn cached_leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let cache = self.inner.cache.read().ok()?;
        let leader = cache
            .metadata
            .topics
            .get(topic)?
            .partition(partition)?
            .leader;
        (leader >= 0 && cache.metadata.brokers.contains_key(&leader)).then_some(leader)
    }

    /// Refreshes metadata for all topics this client has asked about.
    pub async fn refresh_metadata(&self) -> Result<()> {
        self.refresh_topics(&[], false).await
    }

    /// Refreshes the metadata in a background task, unless `refreshing`
    /// says one is under way. `refreshing` stays set for `backoff` after the
    /// answer, so a topic that stays without a leader (deleted, or not
    /// created yet) costs one Metadata request per backoff, as Kafka's
    /// `retry.backoff.ms` spaces metadata requests, instead of a request
    /// loop. `woken` runs when the answer is in and again when the backoff
    /// ends, for a caller waiting to use or retry it.
    pub(crate) fn refresh_metadata_spaced(
        &self,
        refreshing: &Arc<AtomicBool>,
        backoff: Duration,
        woken: impl Fn() + Send + 'static,
    ) {
        if refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let client = self.clone();
        let refreshing = Arc::clone(refreshing);
        tokio::spawn(async move {
            client.invalidate_metadata();
            if let Err(error) = client.refresh_metadata().await {
                tracing::debug!(%error, "metadata refresh failed");
            }
            woken();
            tokio::time::sleep(backoff).await;
            refreshing.store(false, Ordering::Release);
            woken();
        });
    }

    /// Fetches the metadata of every topic in the cluster, and caches it.
    pub async fn metadata(&self) -> Result<ClusterMetadata> {
        let response = self.fetch_metadata(None, false).await?;
        let mut cache = self.inner.cache.write().map_err(|_| poisoned())?;
        cache.metadata.brokers = response.brokers.clone();
        cache.metadata.controller_id = response.controller_id;
        cache.metadata.cluster_id = response.cluster_id.clone();
        for (name, topic) in &response.topics {
            if cache.wanted.contains(name) {
                cache
                    .metadata
                    .topics
                    .insert(name.clone(), Arc::clone(topic));
            }
        }
        Ok(response)
    }

    /// The metadata of `topic`, from the cache when fresh. A topic the
    /// broker is still creating (LEADER_NOT_AVAILABLE) is waited for up to
    /// the request timeout; a topic that does not exist is an error.
    ///
    /// Asking may create the topic if the broker auto-creates topics, as
    /// Kafka producers and consumers do; see [`Client::existing_topic`].
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicMetadata>> {
        self.topic_with(topic, true).await
    }

    /// Like [`Client::topic`], but never asks the broker to create the topic.
    pub async fn existing_topic(&self, topic: &str) -> Result<Arc<TopicMetadata>> {
        self.topic_with(topic, false).await
    }

    async fn topic_with(&self, topic: &str, allow_auto_create: bool) -> Result<Arc<TopicMetadata>> {
        let deadline = Instant::now() + self.inner.config.connection.request_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            if let Some(found) = self.fresh_topic(topic) {
                match found.error {
                    None if !found.partitions.is_empty() => return Ok(found),
                    Some(ErrorCode::UnknownTopicOrPartition) => {
                        return Err(Error::UnknownTopic {
                            topic: topic.to_string(),
                        })
                    }
                    Some(code) if !code.is_retriable() => {
                        return Err(Error::kafka(
                            code,
                            format!("metadata of topic {topic:?}"),
                            None,
                        ))
                    }
                    _ => {}
                }
                if Instant::now() >= deadline {
                    let code = found.error.unwrap_or(ErrorCode::LeaderNotAvailable);
                    return Err(Error::kafka(
                        code,
                        format!("metadata of topic {topic:?}"),
                        None,
                    ));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            self.refresh_topics(&[topic], allow_auto_create).await?;
        }
    }

    fn fresh_topic(&self, topic: &str) -> Option<Arc<TopicMetadata>> {
        let cache = self.inner.cache.read().ok()?;
        let fresh = !cache.stale
            && cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < self.inner.config.metadata_max_age);
        if !fresh {
            return None;
        }
        cache.metadata.topics.get(topic).cloned()
    }

    /// Refreshes the wanted topics plus `extra`. Callers that queued behind
    /// a refresh that started after they asked reuse its result.
    pub(crate) async fn refresh_topics(
        &self,
        extra: &[&str],
        allow_auto_create: bool,
    ) -> Result<()> {
        let asked_at = Instant::now();
        let _single = self.inner.refresh.lock().await;
        let wanted: Vec<String> = {
            let mut cache = self.inner.cache.write().map_err(|_| poisoned())?;
            for topic in extra {
                cache.wanted.insert((*topic).to_string());
            }
            let covered = extra.iter().all(|t| cache.metadata.topics.contains_key(*t));
            if covered && !cache.stale && cache.fetched_at.is_some_and(|at| at > asked_at) {
                return Ok(());
            }
            // A request that may create topics asks only about `extra` and
            // topics known to exist, so that a name someone merely looked up
            // is never created behind their back.
            cache
                .wanted
                .iter()
                .filter(|name| {
                    !allow_auto_create
                        || extra.contains(&name.as_str())
                        || cache
                            .metadata
                            .topics
                            .get(*name)
                            .is_some_and(|t| t.error.is_none())
                })
                .cloned()
                .collect()
        };
        let response = self
            .fetch_metadata(Some(&wanted), allow_auto_create)
            .await?;
        let mut cache = self.inner.cache.write().map_err(|_| poisoned())?;
        cache.metadata.brokers = response.brokers;
        cache.metadata.controller_id = response.controller_id;
        cache.metadata.cluster_id = response.cluster_id;
        for (name, topic) in response.topics {
            cache.metadata.topics.insert(name, topic);
        }
        cache.fetched_at = Some(Instant::now());
        cache.stale = false;
        Ok(())
    }

    async fn fetch_metadata(
        &self,
        topics: Option<&[String]>,
        allow_auto_create: bool,
    ) -> Result<ClusterMetadata> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|topics| {
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(allow_auto_create);
        let mut last_error = None;
        for _ in 0..2 {
            let connection = self.any_connection().await?;
            match connection.request(request.clone()).await {
                Ok(response) => {
                    return Ok(metadata::from_response(
                        &response,
                        connection.address().transport,
                    ));
                }
                Err(error) => {
                    connection.close("metadata request failed");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(Error::Closed("client")))
    }
}

fn poisoned() -> Error {
    Error::Config("internal state poisoned by a panic".into())
}

async fn refresh_timer(inner: Weak<Inner>) {
    loop {
        let Some(age) = inner.upgrade().map(|i| i.config.metadata_max_age) else {
            return;
        };
        tokio::time::sleep(age).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let client = Client { inner };
        if let Err(error) = client.refresh_metadata().await {
            tracing::debug!(%error, "periodic metadata refresh failed");
        }
    }
}
