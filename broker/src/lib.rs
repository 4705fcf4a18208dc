//! skiff-broker: the `skiffd` daemon, a single-node broker speaking the
//! Kafka protocol over TCP and QUIC.
//!
//! - [`config`]: one typed configuration (TOML < `SKIFF_*` env < flags).
//! - [`server`]: TCP/QUIC/HTTP listeners, the per-connection loop, dispatch.
//! - [`handlers`]: one module per Kafka API family.
//! - [`broker`]: the shared state handed to every request.
//! - [`topics`], [`topic_config`]: the topic registry and per-topic settings.
//! - [`producer_state`]: idempotent-producer sequence rules, per partition.
//! - [`metrics`]: counters and histograms, rendered for Prometheus.
//! - [`storage`]: the log engine (segments, indexes, recovery).
//! - [`coordinator`]: the group coordinator state machine (pure, no I/O).
//! - [`group_runtime`]: the coordinator wired to timers, replies and `__consumer_offsets`.

pub mod broker;
pub mod config;
pub mod coordinator;
pub mod group_runtime;
pub mod handlers;
pub mod metrics;
pub mod producer_state;
pub mod server;
pub mod storage;
pub mod topic_config;
pub mod topics;
