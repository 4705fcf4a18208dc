//! The broker's shared state: configuration, logs, topics, producer ids,
//! metrics. One `Arc<Broker>` is handed to every connection and request.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::config::Config;
use crate::coordinator::CoordinatorConfig;
use crate::group_runtime::GroupRuntime;
use crate::metrics::Metrics;
use crate::storage::{LogManager, StorageError};
use crate::topic_config;
use crate::topics::{write_file_atomically, Topic, TopicError, TopicRegistry};

/// Name of the producer id allocation file inside the data directory.
pub const PRODUCER_IDS_FILE: &str = "skiff-producer-ids";
/// Producer ids reserved per write of [`PRODUCER_IDS_FILE`].
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("producer id file {path}: {reason}")]
    ProducerIds {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// Hands out producer ids that are never reused, even across restarts:
/// ids are reserved in blocks and the end of the current block is written to
/// disk before any id of it is given out.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: std::path::PathBuf,
    state: Mutex<(i64, i64)>, // (next id, end of reserved block)
}

impl ProducerIdAllocator {
    fn open(data_dir: &Path, max_seen: Option<i64>) -> Result<Self, BrokerError> {
        let path = data_dir.join(PRODUCER_IDS_FILE);
        let stored = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|e| BrokerError::ProducerIds {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(BrokerError::ProducerIds {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let next = stored.max(max_seen.map_or(0, |id| id + 1));
        Ok(ProducerIdAllocator {
            path,
            state: Mutex::new((next, next)),
        })
    }

    /// A fresh producer id.
    pub fn allocate(&self) -> std::io::Result<i64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, block_end) = *state;
        if next >= block_end {
            let new_end = next + PRODUCER_ID_BLOCK;
            write_file_atomically(&self.path, new_end.to_string().as_bytes())?;
            state.1 = new_end;
        }
        state.0 = next + 1;
        Ok(next)
    }
}

/// Everything a request handler may need.
pub struct Broker {
    pub config: Config,
    /// Host and port given to clients in Metadata.
    pub advertised_host: String,
    pub advertised_port: i32,
    pub logs: Arc<LogManager>,
    pub topics: TopicRegistry,
    pub producer_ids: ProducerIdAllocator,
    pub metrics: Arc<Metrics>,
    /// Becomes `true` when the broker starts shutting down; long polls end early.
    pub shutdown: watch::Receiver<bool>,
    /// The group coordinator and its `__consumer_offsets` I/O.
    pub groups: Arc<GroupRuntime>,
}

impl Broker {
    /// Opens the data directory (recovering every partition) and builds the state.
    pub fn open(
        config: Config,
        advertised_port: u16,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Broker, BrokerError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| BrokerError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let logs = LogManager::open(&data_dir, topic_config::log_config(&config.topic))?;
        let topics = TopicRegistry::open(
            &data_dir,
            Arc::clone(&logs),
            config.topic.clone(),
            Arc::clone(&metrics),
        )?;
        let producer_ids = ProducerIdAllocator::open(&data_dir, topics.max_producer_id())?;
        let groups = Arc::new(GroupRuntime::new(
            coordinator_config(&config),
            config.offsets_retention_check_interval_ms,
            &topics,
        ));
        Ok(Broker {
            groups,
            advertised_host: config.advertised_host(),
            advertised_port: i32::from(advertised_port),
            config,
            logs,
            topics,
            producer_ids,
            metrics,
            shutdown,
        })
    }

    /// The topic, created with broker defaults if auto-creation is on and
    /// `allow_auto_create` (Metadata v4+ lets the client refuse it).
    pub fn topic_or_create(
        &self,
        name: &str,
        allow_auto_create: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        if let Some(topic) = self.topics.get(name) {
            return Ok(topic);
        }
        crate::topics::validate_topic_name(name)?;
        // The internal offsets topic is only ever created by the coordinator.
        let internal = name == crate::coordinator::OFFSETS_TOPIC;
        if internal || !(self.config.auto_create_topics && allow_auto_create) {
            return Err(TopicError::Unknown {
                name: name.to_string(),
            });
        }
        match self.topics.create(name, -1, Default::default()) {
            Ok(topic) => Ok(topic),
            // Another request created it in the meantime.
            Err(TopicError::AlreadyExists { .. }) => {
                self.topics.get(name).ok_or(TopicError::Unknown {
                    name: name.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// (topic, partition, log start, log end) of every partition, for /metrics.
    pub fn offsets_snapshot(&self) -> Vec<(String, i32, i64, i64)> {
        let mut out = Vec::new();
        for topic in self.topics.list() {
            for partition in &topic.partitions {
                out.push((
                    topic.name.clone(),
                    partition.index,
                    partition.log.log_start_offset(),
                    partition.log.log_end_offset(),
                ));
            }
        }
        out
    }
}

/// The coordinator's settings from the broker's.
pub fn coordinator_config(config: &Config) -> CoordinatorConfig {
    CoordinatorConfig {
        offsets_partitions: u32::try_from(config.offsets_topic_partitions).unwrap_or(1),
        session_timeout_min_ms: config.group_min_session_timeout_ms,
        session_timeout_max_ms: config.group_max_session_timeout_ms,
        initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
        offsets_retention_ms: config.offsets_retention_ms,
        ..CoordinatorConfig::default()
    }
}
