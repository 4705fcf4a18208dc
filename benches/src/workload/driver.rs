//! The narrow interface between the workload engine and a Kafka client.
//!
//! The engine (pacing, keys, measurement, stop conditions) is written once
//! against these traits; an adapter maps them onto a concrete client
//! (`skiff-client`). Keeping the surface this small is what lets the engine be
//! finished and reviewed independently of the client.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;

use crate::cli::{Acks, Compression};

/// Producer settings of a run (per producer).
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    pub batch_size_bytes: u64,
    pub buffer_memory_bytes: u64,
    pub linger: Duration,
    pub acks: Acks,
    pub compression: Compression,
    pub max_in_flight: usize,
}

/// How a consumer gets its partitions.
#[derive(Clone, Debug)]
pub enum Assignment {
    /// Exactly these (topic index, partition) pairs, read from their start offsets.
    Manual(Vec<(usize, i32)>),
    /// Join `group_id` subscribed to every topic of the run; offsets reset to earliest.
    Group { group_id: String },
}

/// Log start and end offsets of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionRange {
    pub topic_index: usize,
    pub partition: i32,
    pub start_offset: i64,
    pub end_offset: i64,
}

/// What the broker acknowledged for one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub partition: i32,
    /// -1 when acks=0 (the broker answers nothing).
    pub offset: i64,
}

/// One delivered record as the engine sees it: borrowed, never copied.
#[derive(Clone, Copy, Debug)]
pub struct Delivered<'a> {
    pub topic_index: usize,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

/// Connects producers and consumers to one cluster.
pub trait Connector: Send + Sync + 'static {
    type Producer: BenchProducer;
    type Consumer: BenchConsumer;

    /// Creates the run's topics (each with `partitions` partitions); a topic
    /// that already exists with that many partitions is fine.
    fn create_topics(
        &self,
        topics: &[String],
        partitions: u32,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Start and end offsets of every partition of `topics`.
    fn partition_ranges(
        &self,
        topics: &[String],
    ) -> impl Future<Output = Result<Vec<PartitionRange>>> + Send;

    /// A producer with its own connection(s) for the run's `topics`.
    fn producer(
        &self,
        topics: &[String],
        settings: &ProducerSettings,
    ) -> impl Future<Output = Result<Self::Producer>> + Send;

    /// A consumer of `topics` with the given assignment, reading from the earliest offset.
    fn consumer(
        &self,
        topics: &[String],
        assignment: &Assignment,
    ) -> impl Future<Output = Result<Self::Consumer>> + Send;
}

/// Sends records and hands back one acknowledgement future per record.
pub trait BenchProducer: Send + 'static {
    /// Resolves when the broker acknowledged the record (or it failed).
    type AckFuture: Future<Output = Result<Ack>> + Send + Unpin + 'static;

    /// Hands one record to the producer, waiting while its buffer is full
    /// (back-pressure), and returns the future of its acknowledgement.
    fn send(
        &mut self,
        topic_index: usize,
        key: Option<Bytes>,
        value: Bytes,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<Self::AckFuture>> + Send;

    /// Sends everything accepted so far without waiting for linger.
    fn flush(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// Receives records.
pub trait BenchConsumer: Send + 'static {
    /// Waits (at most about `max_wait`) for the next records and shows each
    /// to `visit`; returns how many were delivered (0 on a quiet timeout).
    fn poll<F>(
        &mut self,
        max_wait: Duration,
        visit: F,
    ) -> impl Future<Output = Result<usize>> + Send
    where
        F: FnMut(Delivered<'_>) + Send;

    /// Leaves the group (if any) and closes connections.
    fn close(self) -> impl Future<Output = Result<()>> + Send;
}
