//! skiff-broker

pub mod coordinator;
