//! The producer: records in, acknowledged offsets out.
//!
//! [`Producer::send`] picks the record's partition, encodes the record into
//! that partition's open batch (its only copy), and returns a
//! [`DeliveryFuture`]. A background sender task seals batches when they are
//! full or their linger expires, groups them by partition leader into
//! Produce requests (at most `max_in_flight` per broker), and resolves the
//! futures from the responses, retrying what can be retried.
//! [`Producer::send_many`] queues many records in one call, with one future
//! ([`Deliveries`]) for them all: for bulk producers, whose per-record cost
//! is then the record's encoding and copy alone.
//!
//! Idempotence (on by default, as in the Java client) gives every batch a
//! producer id, epoch and per-partition sequence number, so the broker
//! drops a retried batch it already appended and refuses one that would
//! leave a gap: retries neither duplicate nor reorder records. When the
//! broker reports a gap it cannot explain (OUT_OF_ORDER_SEQUENCE_NUMBER for
//! the next expected batch) or has forgotten the producer
//! (UNKNOWN_PRODUCER_ID), the producer waits for its in-flight requests,
//! bumps its epoch with InitProducerId (KIP-360) and renumbers the queued
//! batches from zero, as the Java client does.
//!
//! Pipelining (`max_in_flight` > 1) relies on the broker applying a
//! connection's requests in order, over TCP and over QUIC (where it applies
//! streams in the order they were opened). A partition has one batch in
//! flight until the broker
//! has acknowledged the producer there, and after a failure until the next
//! success, because a broker accepts any first sequence from a producer it
//! does not know.

mod accumulator;
mod batch;
mod deliveries;
mod partitioner;
mod sender;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use skiff_protocol::api::messages::InitProducerIdRequest;
use skiff_protocol::batch::Compression;
use skiff_protocol::ErrorCode;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

pub use batch::{DeliveryFuture, RecordMetadata};
pub use deliveries::{Deliveries, DeliveryReport};
pub use partitioner::{DefaultPartitioner, Partitioner};

use crate::client::Client;
use crate::error::{Error, Result};
use accumulator::{Accumulator, MemoryNeeded, ProducerIdentity, RecordParts, TopicSlot};

/// How many replicas must have a batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// No answer at all: fire and forget (offsets are unknown, -1).
    None,
    /// The leader has appended it.
    Leader,
    /// Every in-sync replica has it (required for idempotence).
    #[default]
    All,
}

impl Acks {
    /// The value of the Produce request's `acks` field.
    pub fn wire_value(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// Parses Kafka's spelling: `0`, `1`, `all` or `-1`.
    pub fn parse(text: &str) -> Option<Acks> {
        match text {
            "0" => Some(Acks::None),
            "1" => Some(Acks::Leader),
            "all" | "-1" => Some(Acks::All),
            _ => None,
        }
    }
}

/// Producer settings. Defaults follow the Java client.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Acknowledgement level (default all).
    pub acks: Acks,
    /// How long a batch may wait for more records before it is sent (default 5 ms).
    pub linger: Duration,
    /// Bytes after which a partition's batch is sealed (default 16 KiB).
    pub batch_size: usize,
    /// Produce requests in flight per broker (default 5; at most 5 with idempotence).
    pub max_in_flight: usize,
    /// Compression codec of the batches (default none).
    pub compression: Compression,
    /// How long a Produce request may wait for its response (default 30 s).
    pub request_timeout: Duration,
    /// Upper bound on the time from `send` to success or failure, retries
    /// included (default 120 s).
    pub delivery_timeout: Duration,
    /// Retries of a failed batch before giving up (default: unbounded,
    /// within the delivery timeout).
    pub retries: u32,
    /// Wait before the first retry; doubles per attempt (default 100 ms).
    pub retry_backoff: Duration,
    /// Cap of the retry backoff (default 1 s).
    pub retry_backoff_max: Duration,
    /// Idempotence. `None` (the default) turns it on unless `acks` is not
    /// `All` or `max_in_flight` exceeds 5; `Some(true)` with such settings
    /// is a configuration error.
    pub idempotence: Option<bool>,
    /// Memory for batches not yet acknowledged (default 32 MiB), as Kafka's
    /// `buffer.memory`: each batch holds `batch_size` of it (or the size of
    /// its one larger record) from when it opens until it completes, however
    /// few records it gets; `send` waits while a new batch's share is not
    /// free. Buffers of completed batches kept for reuse (at most a quarter
    /// as much again) are not counted.
    pub buffer_memory: usize,
    /// Largest Produce request, and so the largest record (default 1 MiB).
    pub max_request_size: usize,
    /// Picks partitions for records without an explicit one.
    pub partitioner: Arc<dyn Partitioner>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            max_in_flight: 5,
            compression: Compression::None,
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            idempotence: None,
            buffer_memory: 32 * 1024 * 1024,
            max_request_size: 1024 * 1024,
            partitioner: Arc::new(DefaultPartitioner),
        }
    }
}

/// Idempotence may be on only with acks=all, at most 5 requests in flight
/// and retries allowed (Kafka's rules).
const IDEMPOTENT_IN_FLIGHT_MAX: usize = 5;

impl ProducerConfig {
    /// Whether these settings produce idempotently; an error for
    /// contradictory settings.
    pub fn idempotent(&self) -> Result<bool> {
        let compatible = self.acks == Acks::All
            && self.max_in_flight <= IDEMPOTENT_IN_FLIGHT_MAX
            && self.retries > 0;
        match self.idempotence {
            None => Ok(compatible),
            Some(false) => Ok(false),
            Some(true) if compatible => Ok(true),
            Some(true) => Err(Error::Config(format!(
                "idempotence needs acks=all, max_in_flight <= {IDEMPOTENT_IN_FLIGHT_MAX} and retries > 0 \
                 (have acks={:?}, max_in_flight={}, retries={})",
                self.acks, self.max_in_flight, self.retries
            ))),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.max_in_flight == 0 || self.buffer_memory == 0 {
            return Err(Error::Config(
                "batch_size, max_in_flight and buffer_memory must be positive".into(),
            ));
        }
        if self.buffer_memory > u32::MAX as usize {
            return Err(Error::Config("buffer_memory must be below 4 GiB".into()));
        }
        if self.delivery_timeout < self.linger + self.request_timeout {
            return Err(Error::Config(
                "delivery_timeout must be at least linger + request_timeout".into(),
            ));
        }
        self.idempotent().map(|_| ())
    }
}

/// A record to send. Key, value and headers are borrowed: `send` copies
/// them once, into the batch.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRecord<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// An explicit partition, bypassing the partitioner.
    pub partition: Option<i32>,
    /// The key; records with equal keys go to the same partition.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers: (key, optional value) pairs.
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    /// Create time in ms since the epoch; now if `None`.
    pub timestamp: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    /// A record with a value and nothing else.
    pub fn new(topic: &'a str, value: &'a [u8]) -> Self {
        ProducerRecord {
            topic,
            partition: None,
            key: None,
            value: Some(value),
            headers: &[],
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the headers.
    pub fn headers(mut self, headers: &'a [(&'a [u8], Option<&'a [u8]>)]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the create timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }

    fn parts(&self, timestamp: i64, estimated_bytes: usize) -> RecordParts<'a> {
        RecordParts {
            timestamp,
            key: self.key,
            value: self.value,
            headers: self.headers,
            estimated_bytes,
        }
    }

    fn estimated_bytes(&self) -> usize {
        const RECORD_OVERHEAD_BYTES: usize = 24;
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len) + 10)
            .sum();
        RECORD_OVERHEAD_BYTES
            + self.key.map_or(0, <[u8]>::len)
            + self.value.map_or(0, <[u8]>::len)
            + headers
    }
}

/// Adds `more` to the buffer memory a send holds.
fn hold<'a>(held: &mut Option<SemaphorePermit<'a>>, more: SemaphorePermit<'a>) {
    match held {
        Some(permit) => permit.merge(more),
        None => *held = Some(more),
    }
}

/// Counts a send waiting for buffer memory, and wakes the sender so that
/// it sends what is open; uncounted when dropped, also if the send is.
struct MemoryWaiter<'a>(&'a Shared);

impl<'a> MemoryWaiter<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.memory_waiters.fetch_add(1, Ordering::AcqRel);
        shared.wake.notify_one();
        MemoryWaiter(shared)
    }
}

impl Drop for MemoryWaiter<'_> {
    fn drop(&mut self) {
        self.0.memory_waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// State shared by the producer handle and its sender task.
pub(crate) struct Shared {
    pub client: Client,
    pub config: ProducerConfig,
    pub accumulator: Mutex<Accumulator>,
    /// Wakes the sender: a batch was sealed or opened, a flush or close began.
    pub wake: Notify,
    /// Signalled whenever a batch completes (for flush).
    pub done: Notify,
    pub buffer: Semaphore,
    pub closing: AtomicBool,
    pub flushing: AtomicUsize,
    /// Sends waiting for buffer_memory. While there are any, open batches
    /// are sent without waiting for linger (as Kafka does when its buffer
    /// pool is exhausted): only completed batches give memory back.
    pub memory_waiters: AtomicUsize,
    /// A `send` sealed a batch: the next `send` yields first, so that the
    /// sender, maybe on the same runtime thread, takes it before more
    /// records pile up behind it. (Not on a batch opened: with linger 0 the
    /// sender would send it with one record.)
    pub batch_sealed: AtomicBool,
    pub failed_records: AtomicU64,
    /// Batches put back for another attempt, and epoch bumps (for tests and monitoring).
    pub retried_batches: AtomicU64,
    pub epoch_bumps: AtomicU64,
    pub first_failure: Mutex<Option<Error>>,
}

impl Shared {
    /// The partition the record names or its partitioner picks, before the
    /// sticky choice (which depends on the batches, so is made only when
    /// the record is appended).
    fn chosen_partition(&self, record: &ProducerRecord<'_>, partitions: i32) -> Option<i32> {
        record.partition.or_else(|| {
            self.config
                .partitioner
                .partition(record.topic, record.key, record.value, partitions)
        })
    }

    /// The record's partition: `chosen`, or else the sticky one of its
    /// topic (at `slot`); checked.
    fn place(
        acc: &mut Accumulator,
        slot: TopicSlot,
        record: &ProducerRecord<'_>,
        chosen: Option<i32>,
        partitions: i32,
    ) -> Result<i32> {
        let partition = chosen.unwrap_or_else(|| acc.sticky_partition_at(slot, partitions));
        check_partition(record.topic, partition, partitions)?;
        Ok(partition)
    }

    /// Takes `wanted` bytes of buffer memory for a new batch: what `held`
    /// has, topped up if that much is free now; `None` (taking nothing)
    /// if it is not. The bytes are released when the batch completes.
    fn reserve_now<'a>(
        &'a self,
        held: &mut Option<SemaphorePermit<'a>>,
        wanted: usize,
    ) -> Option<usize> {
        // A batch never waits for more than all of buffer_memory.
        let wanted = wanted.min(self.config.buffer_memory);
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        if have < wanted {
            let missing = u32::try_from(wanted - have).ok()?;
            let more = self.buffer.try_acquire_many(missing).ok()?;
            hold(held, more);
        }
        held.as_mut()?.split(wanted)?.forget();
        Some(wanted)
    }

    /// Waits, outside the accumulator's lock, until `held` has the bytes a
    /// new batch needs.
    async fn wait_for_memory<'a>(
        &'a self,
        held: &mut Option<SemaphorePermit<'a>>,
        needed: MemoryNeeded,
    ) -> Result<()> {
        let wanted = needed.bytes.min(self.config.buffer_memory);
        let have = held.as_ref().map_or(0, |p| p.num_permits());
        let missing =
            u32::try_from(wanted.saturating_sub(have)).map_err(|_| Error::Closed("producer"))?;
        let waiting = MemoryWaiter::new(self);
        let more = self
            .buffer
            .acquire_many(missing)
            .await
            .map_err(|_| Error::Closed("producer"))?;
        drop(waiting);
        hold(held, more);
        Ok(())
    }
}

/// The partitioner's answers for the record being placed and the one after
/// it. `send_many` asks one record ahead, yet must ask about each record
/// once and in order (a partitioner may keep state) however often a wait
/// for buffer memory makes it place a record again.
#[derive(Default)]
struct ChosenAhead([Option<(usize, Option<i32>)>; 2]);

impl ChosenAhead {
    /// The answer for record `at`, asking for it only the first time.
    fn get_or_ask(&mut self, at: usize, ask: impl FnOnce() -> Option<i32>) -> Option<i32> {
        let slot = &mut self.0[at % 2];
        match *slot {
            Some((asked, choice)) if asked == at => choice,
            _ => {
                let choice = ask();
                *slot = Some((at, choice));
                choice
            }
        }
    }
}

fn check_partition(topic: &str, partition: i32, partitions: i32) -> Result<()> {
    if (0..partitions).contains(&partition) {
        Ok(())
    } else {
        Err(Error::UnknownPartition {
            topic: topic.to_string(),
            partition,
            partitions,
        })
    }
}

/// Sends records to a cluster. Share it behind an `Arc`; `send` takes `&self`.
///
/// ```no_run
/// # async fn demo(client: skiff_client::Client) -> skiff_client::Result<()> {
/// use skiff_client::{Acks, Producer, ProducerConfig, ProducerRecord};
///
/// let producer = Producer::new(client, ProducerConfig { acks: Acks::All, ..Default::default() }).await?;
/// let delivery = producer.send(ProducerRecord::new("orders", b"{\"id\":1}").key(b"customer-7")).await?;
/// let written = delivery.await?; // partition and offset
/// producer.close().await?; // delivers the rest, reports failures
/// # Ok(()) }
/// ```
pub struct Producer {
    shared: Arc<Shared>,
    sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer on `client`. With idempotence, obtains a producer id first.
    pub async fn new(client: Client, config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let identity = if config.idempotent()? {
            init_producer_id(&client, None, config.request_timeout).await?
        } else {
            ProducerIdentity::NONE
        };
        let shared = Arc::new(Shared {
            accumulator: Mutex::new(Accumulator::new(
                identity,
                config.compression,
                config.batch_size,
                // A buffer is only allocated when none is spare, so the
                // spares stay within the most memory batches ever held at
                // once. A quarter of buffer_memory dropped half the
                // buffers of a 64-partition producer whose batches
                // complete together in one response, and new ones came
                // as fresh pages (a keyed 1 GB run: 48 k page faults, 37 k
                // with this bound).
                config.buffer_memory,
            )),
            buffer: Semaphore::new(config.buffer_memory),
            client,
            config,
            wake: Notify::new(),
            done: Notify::new(),
            closing: AtomicBool::new(false),
            flushing: AtomicUsize::new(0),
            memory_waiters: AtomicUsize::new(0),
            batch_sealed: AtomicBool::new(false),
            failed_records: AtomicU64::new(0),
            retried_batches: AtomicU64::new(0),
            epoch_bumps: AtomicU64::new(0),
            first_failure: Mutex::new(None),
        });
        let sender = tokio::spawn(sender::run(Arc::clone(&shared)));
        Ok(Producer {
            shared,
            sender: Mutex::new(Some(sender)),
        })
    }

    /// The producer id and epoch in use, `(-1, -1)` without idempotence.
    pub fn producer_id_and_epoch(&self) -> (i64, i16) {
        self.shared
            .accumulator
            .lock()
            .map(|a| (a.identity.id, a.identity.epoch))
            .unwrap_or((-1, -1))
    }

    /// How many times a batch was put back to be sent again, since the start.
    pub fn retried_batches(&self) -> u64 {
        self.shared.retried_batches.load(Ordering::Relaxed)
    }

    /// How many times the producer renumbered its batches under a new
    /// epoch or producer id, since the start.
    pub fn epoch_bumps(&self) -> u64 {
        self.shared.epoch_bumps.load(Ordering::Relaxed)
    }

    /// Queues a record and returns the future of its delivery. Waits while
    /// the buffer is full, and for the topic's metadata the first time.
    pub async fn send(&self, record: ProducerRecord<'_>) -> Result<DeliveryFuture> {
        let shared = &self.shared;
        self.check_open()?;
        // Before anything is queued, so that dropping the call here loses nothing.
        if shared.batch_sealed.swap(false, Ordering::AcqRel) {
            tokio::task::yield_now().await;
        }
        let estimated_bytes = self.checked_estimate(&record)?;
        let partitions = self.partition_count(record.topic).await?;
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let parts = record.parts(timestamp, estimated_bytes);
        // buffer_memory taken while waiting for a new batch's share and not
        // yet handed to a batch; given back if this future is dropped.
        let mut held: Option<SemaphorePermit<'_>> = None;
        // Asked once, though a wait for memory may place the record again.
        let choice = shared.chosen_partition(&record, partitions);
        let appended = loop {
            let attempt = {
                let mut acc = shared
                    .accumulator
                    .lock()
                    .map_err(|_| Error::Closed("producer"))?;
                let slot = acc.topic_slot(record.topic, partitions);
                let partition = Shared::place(&mut acc, slot, &record, choice, partitions)?;
                acc.append_at(
                    slot,
                    partition,
                    partitions,
                    &parts,
                    |wanted| shared.reserve_now(&mut held, wanted),
                    Instant::now,
                    |placed| (Arc::clone(placed.outcome), placed.partition, placed.index),
                )
            };
            match attempt {
                Ok(appended) => break appended,
                // Another send may open the batch meanwhile: try again.
                Err(needed) => shared.wait_for_memory(&mut held, needed).await?,
            }
        };
        // What is still held (more than the batch took) goes back on drop.
        drop(held);
        if appended.wake_sender {
            shared.wake.notify_one();
        }
        if appended.sealed {
            shared.batch_sealed.store(true, Ordering::Release);
        }
        let (outcome, partition, index) = appended.placed;
        Ok(DeliveryFuture::new(outcome, partition, index, timestamp))
    }

    /// Queues `records` in order and returns one future for the delivery of
    /// them all, which resolves to a [`DeliveryReport`] of each record's
    /// metadata or error. Records are placed, batched and delivered exactly
    /// as by one [`send`](Producer::send) each, but take the producer's lock
    /// once per batch rather than once per record and share a future per
    /// batch: the way to produce at high rates (as librdkafka's
    /// `produce_batch`). Records without a timestamp get the time of the call.
    ///
    /// Every record's size, topic and explicit partition are checked before
    /// any is queued, so such an error queues none (a custom partitioner
    /// that answers a partition the topic lacks fails the call at that
    /// record, the ones before it queued). Waits while the buffer is full,
    /// and lets the sender run after each batch it fills; dropping the call
    /// before it returns leaves the records queued so far to be delivered
    /// unreported, as a dropped [`DeliveryFuture`] does.
    pub async fn send_many(&self, records: &[ProducerRecord<'_>]) -> Result<Deliveries> {
        let shared = &self.shared;
        self.check_open()?;
        // (first record, partition count) of each stretch of one topic.
        let mut topic_runs: Vec<(usize, i32)> = Vec::new();
        for (at, record) in records.iter().enumerate() {
            self.checked_estimate(record)?;
            let partitions = match topic_runs.last() {
                Some(&(first, partitions)) if records[first].topic == record.topic => partitions,
                _ => {
                    let partitions = self.partition_count(record.topic).await?;
                    topic_runs.push((at, partitions));
                    partitions
                }
            };
            if let Some(partition) = record.partition {
                check_partition(record.topic, partition, partitions)?;
            }
        }
        let now = now_ms();
        let mut deliveries = Deliveries::with_capacity(records.len());
        let mut held: Option<SemaphorePermit<'_>> = None;
        let mut next = 0;
        let mut topic_run = 0;
        // Partitions are chosen one record ahead, so that the tail of the
        // next record's batch is prefetched while this one is copied.
        let mut chosen = ChosenAhead::default();
        let mut run_slot: Option<(usize, TopicSlot)> = None;
        while next < records.len() {
            let mut wake_sender = false;
            let mut sealed = false;
            let needed = {
                let mut acc = shared
                    .accumulator
                    .lock()
                    .map_err(|_| Error::Closed("producer"))?;
                let mut needed = None;
                // Until the buffer is full, or a batch opens or is sealed:
                // then the lock is let go, so the sender can take it.
                while let Some(record) = records.get(next) {
                    if topic_runs
                        .get(topic_run + 1)
                        .is_some_and(|&(first, _)| first <= next)
                    {
                        topic_run += 1;
                    }
                    let partitions = topic_runs[topic_run].1;
                    // The topic's name is looked up once per run, not per record.
                    let slot = match run_slot {
                        Some((run, slot)) if run == topic_run => slot,
                        _ => {
                            let slot = acc.topic_slot(record.topic, partitions);
                            run_slot = Some((topic_run, slot));
                            slot
                        }
                    };
                    let choice =
                        chosen.get_or_ask(next, || shared.chosen_partition(record, partitions));
                    let partition = Shared::place(&mut acc, slot, record, choice, partitions)?;
                    if let Some(following) = records.get(next + 1) {
                        let (partitions, same_run) = match topic_runs.get(topic_run + 1) {
                            Some(&(first, partitions)) if first == next + 1 => (partitions, false),
                            _ => (partitions, true),
                        };
                        let choice = chosen.get_or_ask(next + 1, || {
                            shared.chosen_partition(following, partitions)
                        });
                        if let Some(partition) = choice {
                            let slot = match same_run {
                                true => slot,
                                false => acc.topic_slot(following.topic, partitions),
                            };
                            acc.prefetch_append(slot, partition, following.estimated_bytes());
                        }
                    }
                    let timestamp = record.timestamp.unwrap_or(now);
                    let parts = record.parts(timestamp, record.estimated_bytes());
                    match acc.append_at(
                        slot,
                        partition,
                        partitions,
                        &parts,
                        |wanted| shared.reserve_now(&mut held, wanted),
                        Instant::now,
                        |placed| deliveries.push(placed, timestamp),
                    ) {
                        Ok(appended) => {
                            wake_sender = appended.wake_sender;
                            sealed = appended.sealed;
                            next += 1;
                            if wake_sender {
                                break;
                            }
                        }
                        Err(memory) => {
                            needed = Some(memory);
                            break;
                        }
                    }
                }
                needed
            };
            if wake_sender {
                shared.wake.notify_one();
            }
            if sealed {
                // Let the sender take the full batch now: on a runtime
                // thread shared with it, a call running on would keep it
                // from sending until the buffer is full, and the broker
                // idle. (Not for a batch opened: with linger 0 the sender
                // would send it with one record.)
                tokio::task::yield_now().await;
            }
            if let Some(needed) = needed {
                shared.wait_for_memory(&mut held, needed).await?;
            }
        }
        drop(held);
        Ok(deliveries)
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Error::Closed("producer"));
        }
        Ok(())
    }

    /// The record's size estimate, if it fits a request and the buffer.
    fn checked_estimate(&self, record: &ProducerRecord<'_>) -> Result<usize> {
        let config = &self.shared.config;
        let estimated_bytes = record.estimated_bytes();
        for (limit, limit_bytes) in [
            ("max_request_size", config.max_request_size),
            ("buffer_memory", config.buffer_memory),
        ] {
            if estimated_bytes > limit_bytes {
                return Err(Error::RecordTooLarge {
                    record_bytes: estimated_bytes,
                    limit,
                    limit_bytes,
                });
            }
        }
        Ok(estimated_bytes)
    }

    /// The topic's partition count. Stale metadata still tells it;
    /// refreshing it is the sender's job, so a broker restart does not fail
    /// sends.
    async fn partition_count(&self, topic: &str) -> Result<i32> {
        let client = &self.shared.client;
        let metadata = match client.cached_topic(topic) {
            Some(metadata) => metadata,
            None => client.topic(topic).await?,
        };
        Ok(metadata.partition_count())
    }

    /// Sends everything queued now, without waiting for linger, and waits
    /// until every record accepted before the call is acknowledged or has
    /// failed (records sent meanwhile by other tasks are not waited for).
    /// Reports the records that failed since the previous flush.
    pub async fn flush(&self) -> Result<()> {
        let shared = &self.shared;
        let target = shared
            .accumulator
            .lock()
            .map(|a| a.next_batch_id())
            .unwrap_or(0);
        shared.flushing.fetch_add(1, Ordering::AcqRel);
        shared.wake.notify_one();
        loop {
            let notified = shared.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let done = shared
                .accumulator
                .lock()
                .map(|a| a.completed_before(target))
                .unwrap_or(true);
            if done {
                break;
            }
            notified.await;
        }
        shared.flushing.fetch_sub(1, Ordering::AcqRel);
        let failed = shared.failed_records.swap(0, Ordering::AcqRel);
        let first = shared.first_failure.lock().ok().and_then(|mut f| f.take());
        match (failed, first) {
            (0, _) => Ok(()),
            (failed_records, first_error) => Err(Error::Undelivered {
                failed_records,
                first_error: Box::new(first_error.unwrap_or(Error::Closed("producer"))),
            }),
        }
    }

    /// Flushes, then stops the sender. Further sends fail with `Closed`.
    pub async fn close(self) -> Result<()> {
        let flushed = self.flush().await;
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        if let Some(sender) = sender {
            let _ = sender.await;
        }
        flushed
    }
}

impl Drop for Producer {
    /// Dropping without `close` still lets the sender deliver what is
    /// queued (it exits when done), but no one can wait for it.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// InitProducerId: a fresh producer id, or with `current`, the same id with
/// a bumped epoch (KIP-360; brokers without it hand out a fresh id).
pub(crate) async fn init_producer_id(
    client: &Client,
    current: Option<ProducerIdentity>,
    timeout: Duration,
) -> Result<ProducerIdentity> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            let connection = client.any_connection().await?;
            let mut request = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(i32::MAX);
            if let Some(current) = current {
                if connection.supports(skiff_protocol::api::ApiKey::InitProducerId, 3) {
                    request = request
                        .with_producer_id(current.id.into())
                        .with_producer_epoch(current.epoch);
                }
            } else {
                request = request
                    .with_producer_id((-1i64).into())
                    .with_producer_epoch(-1);
            }
            let response = connection.request(request).await?;
            match ErrorCode::from_code(response.error_code) {
                ErrorCode::None => Ok(ProducerIdentity {
                    id: response.producer_id.0,
                    epoch: response.producer_epoch,
                }),
                code => Err(Error::kafka(code, "InitProducerId", None)),
            }
        };
        match attempt.await {
            Ok(identity) => return Ok(identity),
            Err(error) if error.is_retriable() && Instant::now() + backoff < deadline => {
                tracing::debug!(%error, "InitProducerId failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Idempotence follows Kafka's rules: on by default only with settings
    /// that allow it, and an explicit request with bad settings is an error.
    #[test]
    fn idempotence_rules() {
        let default = ProducerConfig::default();
        assert!(default.idempotent().unwrap());
        let leader_acks = ProducerConfig {
            acks: Acks::Leader,
            ..ProducerConfig::default()
        };
        assert!(!leader_acks.idempotent().unwrap());
        let forced = ProducerConfig {
            idempotence: Some(true),
            ..leader_acks
        };
        assert!(matches!(forced.idempotent(), Err(Error::Config(_))));
        let too_many = ProducerConfig {
            max_in_flight: 6,
            idempotence: Some(true),
            ..ProducerConfig::default()
        };
        assert!(matches!(too_many.validate(), Err(Error::Config(_))));
    }

    /// Kafka's spellings of acks parse; others do not.
    #[test]
    fn acks_parse() {
        assert_eq!(Acks::parse("all"), Some(Acks::All));
        assert_eq!(Acks::parse("-1"), Some(Acks::All));
        assert_eq!(Acks::parse("0").map(Acks::wire_value), Some(0));
        assert_eq!(Acks::parse("2"), None);
    }
}
