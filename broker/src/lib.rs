//! skiff-broker: the `skiffd` daemon, a single-node broker speaking the
//! Kafka protocol over TCP and QUIC.
//!
//! - [`config`]: one typed configuration (TOML < `SKIFF_*` env < flags).
//! - [`producer_state`]: idempotent-producer sequence rules, per partition.
//! - [`metrics`]: counters and histograms, rendered for Prometheus.
//! - [`storage`]: the log engine (segments, indexes, recovery).

pub mod config;
pub mod metrics;
pub mod producer_state;
pub mod storage;
