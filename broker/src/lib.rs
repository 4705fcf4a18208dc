//! skiff-broker
