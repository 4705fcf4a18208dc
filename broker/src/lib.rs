//! skiff-broker: the `skiffd` daemon, a single-node broker speaking the
//! Kafka protocol over TCP and QUIC.
//!
//! - [`config`]: one typed configuration (TOML < `SKIFF_*` env < flags).
//! - [`producer_state`]: idempotent-producer sequence rules, per partition.
//! - [`metrics`]: counters and histograms, rendered for Prometheus.
//!
//! The server, handlers and topic registry are written against the storage
//! contract (notes/STORAGE_API.md) and are compiled in once `storage` lands.

pub mod config;
pub mod metrics;
pub mod producer_state;
