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

/// One record of a send call.
#[derive(Clone, Debug)]
pub struct BenchRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
}

/// What the broker acknowledged for the records of one send call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acked {
    /// The call's one record went to this partition.
    One { partition: i32 },
    /// Several records: `(partition, records, delivered)` for each stretch
    /// of consecutive records that went to one partition, in send order,
    /// and the first failure if any were not delivered.
    Many {
        runs: Vec<(i32, u64, bool)>,
        first_error: Option<String>,
    },
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

/// Sends records and hands back one acknowledgement future per call.
pub trait BenchProducer: Send + 'static {
    /// Resolves when the broker acknowledged the call's records (or the
    /// whole call failed).
    type AckFuture: Future<Output = Result<Acked>> + Send + Unpin + 'static;

    /// Hands records to the producer, waiting while its buffer is full
    /// (back-pressure), and returns the future of their acknowledgement. A
    /// call of one record uses the client's one-record send, as most
    /// applications do; more use its many-record send.
    fn send(
        &mut self,
        topic_index: usize,
        records: &[BenchRecord],
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
