//! One typed configuration for `skiffd`.
//!
//! Every setting has a built-in default, which a TOML file (`--config`)
//! overrides, which `SKIFF_*` environment variables override, which
//! command-line flags override. Clap reads flags and environment variables
//! together (a flag wins over its variable); both are optional here so that
//! an absent flag falls through to the file and then to the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Parser};
use serde::Deserialize;
use thiserror::Error;

use crate::storage::cache_window::CONSUMED_CACHE_WINDOW_BYTES_DEFAULT;

/// Errors reading the configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

/// How the log is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// fdatasync before acknowledging acks=all (and acks=1) produce requests; concurrent
    /// producers share one sync.
    Sync,
    /// Flush in the background every `flush_ms` or `flush_messages`; the page cache
    /// holds acknowledged data meanwhile (Kafka's default behaviour).
    Periodic,
}

/// Kafka's `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    Delete,
    Compact,
}

/// Broker-wide defaults for new topics; CreateTopics may override each one
/// with the Kafka config name in parentheses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    /// Partitions of an auto-created topic or of CreateTopics with -1 (`num.partitions`).
    pub partitions: i32,
    /// Largest record batch accepted (`max.message.bytes`).
    pub max_message_bytes: u32,
    /// Size at which a segment is rolled (`segment.bytes`).
    pub segment_bytes: u64,
    /// Age at which a segment is rolled (`segment.ms`).
    pub segment_ms: u64,
    /// Delete old segments beyond this many bytes per partition; -1 = unlimited (`retention.bytes`).
    pub retention_bytes: i64,
    /// Delete segments older than this; -1 = unlimited (`retention.ms`).
    pub retention_ms: i64,
    /// Bytes between offset index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// `delete` or `compact` (`cleanup.policy`).
    pub cleanup_policy: Cleanup,
    /// How long compaction keeps tombstones (`delete.retention.ms`).
    pub delete_retention_ms: u64,
    /// `sync` or `periodic`.
    pub flush_mode: FlushMode,
    /// Periodic flush interval (`flush.ms`).
    pub flush_ms: u64,
    /// Periodic flush after this many messages (`flush.messages`).
    pub flush_messages: u64,
    /// Page cache kept per partition behind the end of its log once on
    /// disk; -1 = all of it, as the kernel decides (`skiff.cache.window.bytes`).
    pub cache_window_bytes: i64,
    /// As `cache_window_bytes`, for data consumers have read only, and no
    /// faster than appends come in; -1 = no limit
    /// (`skiff.cache.consumed.window.bytes`).
    pub consumed_cache_window_bytes: i64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            partitions: 1,
            max_message_bytes: 1_048_588,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3_600_000,
            index_interval_bytes: 4096,
            cleanup_policy: Cleanup::Delete,
            delete_retention_ms: 24 * 3_600_000,
            flush_mode: FlushMode::Sync,
            flush_ms: 1000,
            flush_messages: 10_000,
            cache_window_bytes: -1,
            consumed_cache_window_bytes: CONSUMED_CACHE_WINDOW_BYTES_DEFAULT as i64,
        }
    }
}

/// The broker's whole configuration, after layering.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka protocol over TCP.
    pub listen: SocketAddr,
    /// Kafka protocol over QUIC; `None` disables QUIC.
    pub quic_listen: Option<SocketAddr>,
    /// Prometheus `/metrics` over HTTP; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Segments, topic registry, producer ids, certificate.
    pub data_dir: PathBuf,
    /// Host name given to clients in Metadata; the TCP listen host when unset.
    pub advertised_host: Option<String>,
    /// This broker's node id in Metadata.
    pub node_id: i32,
    /// PEM certificate for QUIC; generated self-signed into the data dir when unset.
    pub quic_cert: Option<PathBuf>,
    /// PEM private key for `quic_cert`.
    pub quic_key: Option<PathBuf>,
    /// Largest request frame accepted; larger closes the connection.
    pub frame_bytes_max: usize,
    /// Request bytes a connection may have in flight before reading pauses.
    pub connection_inflight_bytes_max: usize,
    /// Requests a connection may have in flight before reading pauses.
    pub connection_inflight_requests_max: usize,
    /// Open connections (TCP plus QUIC) beyond which new ones are refused.
    pub connections_max: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout_ms: u64,
    /// Threads of the async runtime that serves connections; 0 = one less
    /// than the CPUs (at least one). See [`Config::worker_threads_resolved`].
    pub worker_threads: usize,
    /// Create unknown topics on Metadata and Produce.
    pub auto_create_topics: bool,
    /// Defaults for new topics.
    pub topic: TopicDefaults,
    /// Partitions of `__consumer_offsets` when it is created
    /// (`offsets.topic.num.partitions`); an existing topic keeps its count.
    pub offsets_topic_partitions: i32,
    /// How long the committed offsets of an empty group are kept
    /// (`offsets.retention.minutes`, in milliseconds).
    pub offsets_retention_ms: i64,
    /// How often expired offsets are looked for (`offsets.retention.check.interval.ms`).
    pub offsets_retention_check_interval_ms: i64,
    /// Smallest session timeout a member may ask for (`group.min.session.timeout.ms`).
    pub group_min_session_timeout_ms: i32,
    /// Largest session timeout a member may ask for (`group.max.session.timeout.ms`).
    pub group_max_session_timeout_ms: i32,
    /// How long an empty group's first rebalance waits for more members
    /// (`group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            quic_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9093))),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9094))),
            data_dir: PathBuf::from("./skiff-data"),
            advertised_host: None,
            node_id: 0,
            quic_cert: None,
            quic_key: None,
            frame_bytes_max: skiff_protocol::frame::FRAME_BYTES_MAX_DEFAULT,
            connection_inflight_bytes_max: 64 * 1024 * 1024,
            connection_inflight_requests_max: 128,
            connections_max: 4096,
            idle_timeout_ms: 600_000,
            worker_threads: 0,
            auto_create_topics: true,
            topic: TopicDefaults::default(),
            offsets_topic_partitions: 50,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offsets_retention_check_interval_ms: 600_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
        }
    }
}

/// A listen address, or `off`.
fn parse_optional_addr(value: &str) -> Result<OptionalAddr, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(OptionalAddr(None));
    }
    value
        .parse::<SocketAddr>()
        .map(|addr| OptionalAddr(Some(addr)))
        .map_err(|e| format!("{e} (expected HOST:PORT or off)"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

/// Command-line flags; each also reads `SKIFF_<NAME>` from the environment.
#[derive(Debug, Parser, Default)]
#[command(
    name = "skiffd",
    version,
    about = "Skiff broker: a Kafka-protocol event log over TCP and QUIC.",
    long_about = "Skiff broker: a Kafka-protocol event log over TCP and QUIC.\n\n\
        Settings come from built-in defaults < the TOML file given by --config < SKIFF_* \
        environment variables < these flags. In the TOML file, use the flag name with \
        underscores (listen = \"127.0.0.1:9092\"); topic defaults go in a [topic] table \
        without the topic- prefix (partitions = 3)."
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "SKIFF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kafka protocol over TCP. [default: 127.0.0.1:9092]
    #[arg(long, env = "SKIFF_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Kafka protocol over QUIC, or `off`. [default: 127.0.0.1:9093]
    #[arg(long, env = "SKIFF_QUIC_LISTEN", value_name = "HOST:PORT", value_parser = parse_optional_addr)]
    pub quic_listen: Option<OptionalAddr>,
    /// Prometheus /metrics over HTTP, or `off`. [default: 127.0.0.1:9094]
    #[arg(long, env = "SKIFF_METRICS_LISTEN", value_name = "HOST:PORT", value_parser = parse_optional_addr)]
    pub metrics_listen: Option<OptionalAddr>,
    /// Directory for segments, topic registry, producer ids and the QUIC certificate. [default: ./skiff-data]
    #[arg(long, env = "SKIFF_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Host name advertised to clients in Metadata. [default: the --listen host]
    #[arg(long, env = "SKIFF_ADVERTISED_HOST", value_name = "HOST")]
    pub advertised_host: Option<String>,
    /// Node id advertised in Metadata. [default: 0]
    #[arg(long, env = "SKIFF_NODE_ID")]
    pub node_id: Option<i32>,
    /// PEM certificate chain for QUIC. [default: DATA_DIR/quic-cert.pem, self-signed, generated on first start]
    #[arg(long, env = "SKIFF_QUIC_CERT", value_name = "FILE")]
    pub quic_cert: Option<PathBuf>,
    /// PEM private key for --quic-cert. [default: DATA_DIR/quic-key.pem]
    #[arg(long, env = "SKIFF_QUIC_KEY", value_name = "FILE")]
    pub quic_key: Option<PathBuf>,
    /// Largest request frame; a bigger one closes the connection. [default: 104857600]
    #[arg(long, env = "SKIFF_FRAME_BYTES_MAX", value_name = "BYTES")]
    pub frame_bytes_max: Option<usize>,
    /// Request bytes in flight per connection before reading pauses. [default: 67108864]
    #[arg(
        long,
        env = "SKIFF_CONNECTION_INFLIGHT_BYTES_MAX",
        value_name = "BYTES"
    )]
    pub connection_inflight_bytes_max: Option<usize>,
    /// Requests in flight per connection before reading pauses. [default: 128]
    #[arg(long, env = "SKIFF_CONNECTION_INFLIGHT_REQUESTS_MAX", value_name = "N")]
    pub connection_inflight_requests_max: Option<usize>,
    /// Open connections beyond which new ones are refused. [default: 4096]
    #[arg(long, env = "SKIFF_CONNECTIONS_MAX", value_name = "N")]
    pub connections_max: Option<usize>,
    /// Close a connection after this long without a request. [default: 600000]
    #[arg(long, env = "SKIFF_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Threads serving connections; 0 = one less than the CPUs, at least 1. [default: 0]
    #[arg(long, env = "SKIFF_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Create unknown topics when a client asks for them in Metadata, as Kafka does (true/false). [default: true]
    #[arg(long, env = "SKIFF_AUTO_CREATE_TOPICS", action = ArgAction::Set, value_name = "BOOL")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics and of CreateTopics with -1 (num.partitions). [default: 1]
    #[arg(long, env = "SKIFF_TOPIC_PARTITIONS", value_name = "N")]
    pub topic_partitions: Option<i32>,
    /// Largest record batch accepted (max.message.bytes). [default: 1048588]
    #[arg(long, env = "SKIFF_TOPIC_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub topic_max_message_bytes: Option<u32>,
    /// Segment size at which the log rolls (segment.bytes). [default: 134217728]
    #[arg(long, env = "SKIFF_TOPIC_SEGMENT_BYTES", value_name = "BYTES")]
    pub topic_segment_bytes: Option<u64>,
    /// Segment age at which the log rolls (segment.ms). [default: 604800000]
    #[arg(long, env = "SKIFF_TOPIC_SEGMENT_MS", value_name = "MS")]
    pub topic_segment_ms: Option<u64>,
    /// Bytes kept per partition, -1 = unlimited (retention.bytes). [default: -1]
    #[arg(
        long,
        env = "SKIFF_TOPIC_RETENTION_BYTES",
        value_name = "BYTES",
        allow_negative_numbers = true
    )]
    pub topic_retention_bytes: Option<i64>,
    /// Age after which segments are deleted, -1 = unlimited (retention.ms). [default: 604800000]
    #[arg(
        long,
        env = "SKIFF_TOPIC_RETENTION_MS",
        value_name = "MS",
        allow_negative_numbers = true
    )]
    pub topic_retention_ms: Option<i64>,
    /// Bytes between offset index entries (index.interval.bytes). [default: 4096]
    #[arg(long, env = "SKIFF_TOPIC_INDEX_INTERVAL_BYTES", value_name = "BYTES")]
    pub topic_index_interval_bytes: Option<u32>,
    /// delete or compact (cleanup.policy). [default: delete]
    #[arg(long, env = "SKIFF_TOPIC_CLEANUP_POLICY", value_enum)]
    pub topic_cleanup_policy: Option<Cleanup>,
    /// How long compaction keeps tombstones (delete.retention.ms). [default: 86400000]
    #[arg(long, env = "SKIFF_TOPIC_DELETE_RETENTION_MS", value_name = "MS")]
    pub topic_delete_retention_ms: Option<u64>,
    /// sync: fdatasync before acknowledging (group commit); periodic: flush every flush-ms. [default: sync]
    #[arg(long, env = "SKIFF_TOPIC_FLUSH_MODE", value_enum)]
    pub topic_flush_mode: Option<FlushMode>,
    /// Periodic flush interval (flush.ms). [default: 1000]
    #[arg(long, env = "SKIFF_TOPIC_FLUSH_MS", value_name = "MS")]
    pub topic_flush_ms: Option<u64>,
    /// Periodic flush after this many messages (flush.messages). [default: 10000]
    #[arg(long, env = "SKIFF_TOPIC_FLUSH_MESSAGES", value_name = "N")]
    pub topic_flush_messages: Option<u64>,
    /// Page cache kept per partition behind the log end once flushed, -1 = no limit (skiff.cache.window.bytes). [default: -1]
    #[arg(
        long,
        env = "SKIFF_TOPIC_CACHE_WINDOW_BYTES",
        value_name = "BYTES",
        allow_negative_numbers = true
    )]
    pub topic_cache_window_bytes: Option<i64>,
    /// Page cache kept per partition behind the log end for data consumers have read, -1 = no limit (skiff.cache.consumed.window.bytes). [default: 268435456]
    #[arg(
        long,
        env = "SKIFF_TOPIC_CONSUMED_CACHE_WINDOW_BYTES",
        value_name = "BYTES",
        allow_negative_numbers = true
    )]
    pub topic_consumed_cache_window_bytes: Option<i64>,
    /// Partitions of __consumer_offsets when first created (offsets.topic.num.partitions). [default: 50]
    #[arg(long, env = "SKIFF_OFFSETS_TOPIC_PARTITIONS", value_name = "N")]
    pub offsets_topic_partitions: Option<i32>,
    /// How long an empty group's committed offsets are kept (offsets.retention.minutes, in ms). [default: 604800000]
    #[arg(long, env = "SKIFF_OFFSETS_RETENTION_MS", value_name = "MS")]
    pub offsets_retention_ms: Option<i64>,
    /// How often expired offsets are looked for (offsets.retention.check.interval.ms). [default: 600000]
    #[arg(
        long,
        env = "SKIFF_OFFSETS_RETENTION_CHECK_INTERVAL_MS",
        value_name = "MS"
    )]
    pub offsets_retention_check_interval_ms: Option<i64>,
    /// Smallest session timeout a group member may use (group.min.session.timeout.ms). [default: 6000]
    #[arg(long, env = "SKIFF_GROUP_MIN_SESSION_TIMEOUT_MS", value_name = "MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout a group member may use (group.max.session.timeout.ms). [default: 1800000]
    #[arg(long, env = "SKIFF_GROUP_MAX_SESSION_TIMEOUT_MS", value_name = "MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// How long a new group's first rebalance waits for more members (group.initial.rebalance.delay.ms). [default: 3000]
    #[arg(
        long,
        env = "SKIFF_GROUP_INITIAL_REBALANCE_DELAY_MS",
        value_name = "MS"
    )]
    pub group_initial_rebalance_delay_ms: Option<i64>,
}

/// Largest `worker_threads` accepted.
const WORKER_THREADS_MAX: usize = 1024;

impl Config {
    /// The runtime's worker threads: `worker_threads`, or when 0 one less
    /// than `cpus` (at least one). Not every CPU: the broker's kernel work
    /// (network receive processing, page-cache writeback) and its storage
    /// thread run beside the workers, and a worker queued behind them on a
    /// busy CPU delays every request it holds. On two CPUs shared with the
    /// clients, one worker nearly halved the end-to-end p99 at 300 k records/s
    /// and lifted QUIC consume by a third (BENCHMARKS.md).
    pub fn worker_threads_resolved(&self, cpus: usize) -> usize {
        match self.worker_threads {
            0 => cpus.saturating_sub(1).max(1),
            threads => threads,
        }
    }

    /// Layers defaults < `cli.config` file < environment and flags (already merged by clap).
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(cli);
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    fn apply(&mut self, cli: &Cli) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        set(&mut self.listen, &cli.listen);
        if let Some(OptionalAddr(addr)) = cli.quic_listen {
            self.quic_listen = addr;
        }
        if let Some(OptionalAddr(addr)) = cli.metrics_listen {
            self.metrics_listen = addr;
        }
        set(&mut self.data_dir, &cli.data_dir);
        if cli.advertised_host.is_some() {
            self.advertised_host.clone_from(&cli.advertised_host);
        }
        set(&mut self.node_id, &cli.node_id);
        if cli.quic_cert.is_some() {
            self.quic_cert.clone_from(&cli.quic_cert);
        }
        if cli.quic_key.is_some() {
            self.quic_key.clone_from(&cli.quic_key);
        }
        set(&mut self.frame_bytes_max, &cli.frame_bytes_max);
        set(
            &mut self.connection_inflight_bytes_max,
            &cli.connection_inflight_bytes_max,
        );
        set(
            &mut self.connection_inflight_requests_max,
            &cli.connection_inflight_requests_max,
        );
        set(&mut self.connections_max, &cli.connections_max);
        set(&mut self.idle_timeout_ms, &cli.idle_timeout_ms);
        set(&mut self.worker_threads, &cli.worker_threads);
        set(&mut self.auto_create_topics, &cli.auto_create_topics);
        let topic = &mut self.topic;
        set(&mut topic.partitions, &cli.topic_partitions);
        set(&mut topic.max_message_bytes, &cli.topic_max_message_bytes);
        set(&mut topic.segment_bytes, &cli.topic_segment_bytes);
        set(&mut topic.segment_ms, &cli.topic_segment_ms);
        set(&mut topic.retention_bytes, &cli.topic_retention_bytes);
        set(&mut topic.retention_ms, &cli.topic_retention_ms);
        set(
            &mut topic.index_interval_bytes,
            &cli.topic_index_interval_bytes,
        );
        set(&mut topic.cleanup_policy, &cli.topic_cleanup_policy);
        set(
            &mut topic.delete_retention_ms,
            &cli.topic_delete_retention_ms,
        );
        set(&mut topic.flush_mode, &cli.topic_flush_mode);
        set(&mut topic.flush_ms, &cli.topic_flush_ms);
        set(&mut topic.flush_messages, &cli.topic_flush_messages);
        set(&mut topic.cache_window_bytes, &cli.topic_cache_window_bytes);
        set(
            &mut topic.consumed_cache_window_bytes,
            &cli.topic_consumed_cache_window_bytes,
        );
        set(
            &mut self.offsets_topic_partitions,
            &cli.offsets_topic_partitions,
        );
        set(&mut self.offsets_retention_ms, &cli.offsets_retention_ms);
        set(
            &mut self.offsets_retention_check_interval_ms,
            &cli.offsets_retention_check_interval_ms,
        );
        set(
            &mut self.group_min_session_timeout_ms,
            &cli.group_min_session_timeout_ms,
        );
        set(
            &mut self.group_max_session_timeout_ms,
            &cli.group_max_session_timeout_ms,
        );
        set(
            &mut self.group_initial_rebalance_delay_ms,
            &cli.group_initial_rebalance_delay_ms,
        );
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_string(),
            })
        };
        if self.frame_bytes_max < 1024 || self.frame_bytes_max > i32::MAX as usize {
            return invalid("frame_bytes_max", "must be between 1024 and 2147483647");
        }
        if self.connection_inflight_bytes_max == 0 || self.connection_inflight_requests_max == 0 {
            return invalid("connection_inflight_*", "must be positive");
        }
        if self.connection_inflight_bytes_max > u32::MAX as usize
            || self.connection_inflight_requests_max > 65_536
        {
            return invalid(
                "connection_inflight_*",
                "at most 4294967295 bytes and 65536 requests",
            );
        }
        if self.worker_threads > WORKER_THREADS_MAX {
            return invalid("worker_threads", "at most 1024 (0 = automatic)");
        }
        if self.topic.partitions < 1 {
            return invalid("topic.partitions", "must be at least 1");
        }
        if self.topic.max_message_bytes < 64 {
            return invalid("topic.max_message_bytes", "must be at least 64");
        }
        if self.topic.cache_window_bytes < -1 {
            return invalid("topic.cache_window_bytes", "must be -1 (no limit) or more");
        }
        if self.topic.consumed_cache_window_bytes < -1 {
            return invalid(
                "topic.consumed_cache_window_bytes",
                "must be -1 (no limit) or more",
            );
        }
        if self.offsets_topic_partitions < 1 {
            return invalid("offsets_topic_partitions", "must be at least 1");
        }
        if self.offsets_retention_ms < 1 || self.offsets_retention_check_interval_ms < 1 {
            return invalid("offsets_retention_*", "must be positive");
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_max_session_timeout_ms < self.group_min_session_timeout_ms
        {
            return invalid(
                "group_*_session_timeout_ms",
                "min must be positive and at most max",
            );
        }
        if self.group_initial_rebalance_delay_ms < 0 {
            return invalid("group_initial_rebalance_delay_ms", "must not be negative");
        }
        Ok(())
    }

    /// The host clients are told to connect to.
    pub fn advertised_host(&self) -> String {
        self.advertised_host
            .clone()
            .unwrap_or_else(|| self.listen.ip().to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// With nothing configured, the broker listens where the issue says and keeps data in ./skiff-data.
    #[test]
    fn defaults_match_documentation() {
        let config = Config::load(&Cli::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.quic_listen.unwrap().to_string(), "127.0.0.1:9093");
        assert_eq!(config.data_dir, PathBuf::from("./skiff-data"));
        assert!(config.auto_create_topics);
    }

    /// Automatic worker threads leave a CPU to the kernel and the storage
    /// thread, but never go below one; a configured count is kept.
    #[test]
    fn worker_threads_default_to_one_less_than_the_cpus() {
        let config = Config::load(&Cli::default()).unwrap();
        assert_eq!(config.worker_threads, 0);
        assert_eq!(config.worker_threads_resolved(1), 1);
        assert_eq!(config.worker_threads_resolved(2), 1);
        assert_eq!(config.worker_threads_resolved(16), 15);
        let cli = Cli::try_parse_from(["skiffd", "--worker-threads", "4"]).unwrap();
        let config = Config::load(&cli).unwrap();
        assert_eq!(config.worker_threads_resolved(2), 4);
        let file = Config::from_toml("worker_threads = 3\n").unwrap();
        assert_eq!(file.worker_threads_resolved(64), 3);
    }

    /// A flag beats the file, and the file beats the default.
    #[test]
    fn file_then_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skiff.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1000\"\ndata_dir = \"/tmp/x\"\nquic_listen = \"127.0.0.1:1001\"\n[topic]\npartitions = 4\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "skiffd",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2000",
            "--metrics-listen",
            "off",
        ])
        .unwrap();
        let config = Config::load(&cli).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:2000");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.quic_listen.unwrap().port(), 1001);
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.topic.partitions, 4);
        assert_eq!(config.topic.cache_window_bytes, -1);
        let window = Config::from_toml("[topic]\ncache_window_bytes = 268435456\n").unwrap();
        assert_eq!(window.topic.cache_window_bytes, 256 << 20);
        assert_eq!(config.topic.consumed_cache_window_bytes, 256 << 20);
        let kernel = Config::from_toml("[topic]\nconsumed_cache_window_bytes = -1\n").unwrap();
        assert_eq!(kernel.topic.consumed_cache_window_bytes, -1);
        let below = Config::from_toml("[topic]\nconsumed_cache_window_bytes = -2\n").unwrap();
        assert!(below.validate().is_err());
    }

    /// Limits that the server could not honour are refused at start.
    #[test]
    fn out_of_range_limits_are_refused() {
        for args in [
            &["skiffd", "--frame-bytes-max", "10"][..],
            &["skiffd", "--connection-inflight-bytes-max", "0"],
            &["skiffd", "--connection-inflight-bytes-max", "5000000000"],
            &["skiffd", "--topic-partitions", "0"],
            &["skiffd", "--offsets-topic-partitions", "0"],
            &["skiffd", "--topic-cache-window-bytes", "-2"],
            &["skiffd", "--worker-threads", "5000"],
            &[
                "skiffd",
                "--group-min-session-timeout-ms",
                "7000",
                "--group-max-session-timeout-ms",
                "6000",
            ],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(
                matches!(Config::load(&cli), Err(ConfigError::Invalid { .. })),
                "{args:?} accepted"
            );
        }
    }

    /// A misspelt key in the file is an error, not silently ignored.
    #[test]
    fn unknown_file_key_is_rejected() {
        assert!(Config::from_toml("lissten = \"127.0.0.1:1\"").is_err());
        assert!(Config::from_toml("[topic]\npartitions = \"x\"").is_err());
    }

    /// Every flag's help names its default (scripts and operators rely on --help).
    #[test]
    fn help_documents_every_default() {
        use clap::CommandFactory;
        let command = Cli::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.contains("[default:"),
                "--{id} help lacks its default: {help}"
            );
        }
    }
}
