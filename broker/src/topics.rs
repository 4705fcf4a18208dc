//! The topic registry: which topics exist, how many partitions each has and
//! which settings CreateTopics overrode.
//!
//! The registry is one small TOML file, `<data_dir>/skiff-topics.toml`,
//! rewritten atomically (temp file, fsync, rename, fsync directory) on every
//! change. It is written *before* partitions are created and *before* they
//! are deleted, so after a crash a partition directory the registry does not
//! name belongs to a deletion that did not finish, and a partition the
//! registry names but the disk lacks belongs to a creation that did not
//! finish; both are completed on start.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::TopicDefaults;
use crate::metrics::{Metrics, PartitionMetrics};
use crate::producer_state::ProducerTable;
use crate::storage::{LogManager, PartitionLog, StorageError};
use crate::topic_config;

/// Name of the registry file inside the data directory.
pub const REGISTRY_FILE: &str = "skiff-topics.toml";
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Partitions per topic we agree to create in one request.
pub const PARTITIONS_MAX: i32 = 10_000;

/// Errors of topic administration, each mapping to one Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("topic {name:?} already exists")]
    AlreadyExists { name: String },
    #[error("topic {name:?} does not exist")]
    Unknown { name: String },
    #[error("invalid partition count {partitions}")]
    InvalidPartitions { partitions: i32 },
    #[error("invalid config {name}: {reason}")]
    InvalidConfig { name: String, reason: String },
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot write the topic registry {path}: {source}")]
    Registry {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse the topic registry {path}: {reason}")]
    RegistryCorrupt { path: PathBuf, reason: String },
}

/// Checks a topic name against Kafka's rules (`Topic.validate`).
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| {
        Err(TopicError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// One partition being served: its log and its idempotent-producer state.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Arc<PartitionLog>,
    /// Held across (sequence check, append, record) so that two retries of
    /// the same batch cannot both be appended.
    pub producers: Mutex<ProducerTable>,
    pub metrics: Arc<PartitionMetrics>,
}

/// One topic: settings and partitions.
pub struct Topic {
    pub name: String,
    /// Effective settings (broker defaults with `overrides` applied).
    pub settings: TopicDefaults,
    /// Kafka config names and values given at CreateTopics.
    pub overrides: BTreeMap<String, String>,
    pub partitions: Vec<Arc<Partition>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    cluster_id: String,
    #[serde(default)]
    topics: BTreeMap<String, RegistryTopic>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RegistryTopic {
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// All topics of the broker.
pub struct TopicRegistry {
    path: PathBuf,
    cluster_id: String,
    logs: Arc<LogManager>,
    defaults: TopicDefaults,
    metrics: Arc<Metrics>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises creations and deletions (and the registry file writes).
    admin: Mutex<()>,
}

impl TopicRegistry {
    /// Loads the registry, reconciles it with the partitions on disk and
    /// rebuilds each partition's producer state from its log.
    pub fn open(
        data_dir: &Path,
        logs: Arc<LogManager>,
        defaults: TopicDefaults,
        metrics: Arc<Metrics>,
    ) -> Result<TopicRegistry, TopicError> {
        let path = data_dir.join(REGISTRY_FILE);
        let on_disk = logs.partitions();
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str::<RegistryFile>(&text).map_err(|e| TopicError::RegistryCorrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // No registry yet: adopt whatever partitions the directory holds.
                let mut file = RegistryFile {
                    cluster_id: new_cluster_id(),
                    topics: BTreeMap::new(),
                };
                for (topic, partition, _) in &on_disk {
                    let entry = file.topics.entry(topic.clone()).or_insert(RegistryTopic {
                        partitions: 0,
                        configs: BTreeMap::new(),
                    });
                    entry.partitions = entry.partitions.max(partition + 1);
                }
                file
            }
            Err(source) => return Err(TopicError::Registry { path, source }),
        };
        for (topic, _, _) in &on_disk {
            if !file.topics.contains_key(topic) {
                tracing::warn!(
                    topic,
                    "deleting partitions of a topic whose deletion did not finish"
                );
                logs.delete_topic(topic)?;
            }
        }
        let registry = TopicRegistry {
            path,
            cluster_id: file.cluster_id.clone(),
            logs,
            defaults,
            metrics,
            topics: RwLock::new(BTreeMap::new()),
            admin: Mutex::new(()),
        };
        let mut topics = BTreeMap::new();
        for (name, entry) in &file.topics {
            let topic = registry.open_topic(name, entry.partitions, entry.configs.clone())?;
            topics.insert(name.clone(), Arc::new(topic));
        }
        *registry
            .topics
            .write()
            .unwrap_or_else(PoisonError::into_inner) = topics;
        registry.persist()?;
        Ok(registry)
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Checks a creation without performing it (CreateTopics `validate_only`,
    /// and the first step of [`create`](Self::create)).
    pub fn validate_creation(
        &self,
        name: &str,
        partitions: i32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicDefaults, TopicError> {
        validate_topic_name(name)?;
        if self.get(name).is_some() {
            return Err(TopicError::AlreadyExists {
                name: name.to_string(),
            });
        }
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(TopicError::InvalidPartitions { partitions });
        }
        topic_config::resolve(&self.defaults, overrides)
    }

    /// Creates a topic; `partitions` of -1 means the broker default.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        let partitions = if partitions == -1 {
            self.defaults.partitions
        } else {
            partitions
        };
        self.validate_creation(name, partitions, &overrides)?;
        let mut file = self.snapshot();
        file.topics.insert(
            name.to_string(),
            RegistryTopic {
                partitions,
                configs: overrides.clone(),
            },
        );
        write_atomically(&self.path, &file)?;
        let topic = match self.open_topic(name, partitions, overrides) {
            Ok(topic) => Arc::new(topic),
            Err(error) => {
                file.topics.remove(name);
                let _ = self.logs.delete_topic(name);
                write_atomically(&self.path, &file)?;
                return Err(error);
            }
        };
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        let _admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        if self.get(name).is_none() {
            return Err(TopicError::Unknown {
                name: name.to_string(),
            });
        }
        let mut file = self.snapshot();
        file.topics.remove(name);
        write_atomically(&self.path, &file)?;
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.metrics.forget_topic(name);
        self.logs.delete_topic(name)?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    fn snapshot(&self) -> RegistryFile {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        RegistryFile {
            cluster_id: self.cluster_id.clone(),
            topics: topics
                .iter()
                .map(|(name, topic)| {
                    (
                        name.clone(),
                        RegistryTopic {
                            partitions: topic.partitions.len() as i32,
                            configs: topic.overrides.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn persist(&self) -> Result<(), TopicError> {
        write_atomically(&self.path, &self.snapshot())
    }

    /// Opens (creating where missing) every partition of a topic and
    /// replays its batch headers into a fresh producer table.
    fn open_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Topic, TopicError> {
        let settings = topic_config::resolve(&self.defaults, &overrides)?;
        let log_config = topic_config::log_config(&settings);
        let mut opened = Vec::with_capacity(partitions.max(0) as usize);
        for index in 0..partitions {
            // Opens the partition if recovery found it, applying this topic's
            // settings (recovery only knows the broker defaults).
            let log = self
                .logs
                .create_partition(name, index, log_config.clone())?;
            let mut producers = ProducerTable::new();
            for header in log.scan_headers(log.log_start_offset())? {
                producers.record(&header);
            }
            opened.push(Arc::new(Partition {
                topic: name.to_string(),
                index,
                log,
                producers: Mutex::new(producers),
                metrics: self.metrics.partition(name, index),
            }));
        }
        Ok(Topic {
            name: name.to_string(),
            settings,
            overrides,
            partitions: opened,
        })
    }

    /// Largest producer id found in any partition's producer state.
    pub fn max_producer_id(&self) -> Option<i64> {
        self.list()
            .iter()
            .flat_map(|topic| topic.partitions.iter())
            .filter_map(|p| {
                p.producers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .max_producer_id()
            })
            .max()
    }
}

fn new_cluster_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("skiff-{:x}-{:x}", nanos, std::process::id())
}

/// Replaces `path` with the TOML of `value` so that a crash leaves either
/// the old or the new file, never a torn one.
fn write_atomically<T: Serialize>(path: &Path, value: &T) -> Result<(), TopicError> {
    let io = |source| TopicError::Registry {
        path: path.to_path_buf(),
        source,
    };
    let text = toml::to_string(value).map_err(|e| TopicError::RegistryCorrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_file_atomically(path, text.as_bytes()).map_err(io)
}

/// Temp file, fsync, rename, fsync of the directory.
pub fn write_file_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's topic name rules: legal characters, length, reserved names.
    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/",
            "ümlaut",
            &"a".repeat(250),
        ] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(TopicError::InvalidName { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }
}
