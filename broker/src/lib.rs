//! skiff-broker: the Skiff broker library.

pub mod storage;
