//! skiff-bench: end-to-end throughput and latency of Skiff or any
//! Kafka-protocol broker, with the machine's limits measured in the same run.
//!
//! The binary (`src/main.rs`) parses the command line ([`cli`]) and hands
//! over to [`run`]; everything is a library so it is unit-tested.

pub mod cli;
pub mod embedded;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod pacer;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod units;
pub mod workload;
