//! No per-record allocation on the produce or fetch path (issue 8).
//!
//! A counting global allocator wraps the system allocator for this test
//! binary. An in-process broker (same process, so its allocations count
//! too) takes N and then 10×N records from skiff-client's producer, and a
//! consumer reads them back. Per-batch and per-request allocations are
//! fine; what must not happen is allocation that grows with the record
//! count. The extra allocations of the 10×N phase over the N phase, divided
//! by the 9×N extra records, would be at least 1 if any step allocated per
//! record; batches here hold hundreds of records, so per-batch costs stay
//! far below the bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use skiff_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};

/// Counts every allocation (and reallocation) made by any thread.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds GlobalAlloc's contract; counting touches only an atomic.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Records of the first measured phase; the second has ten times as many.
const RECORDS: u64 = 5_000;
const VALUE_BYTES: usize = 100;
/// Allowed growth of allocations per extra record; one allocation per
/// record (or per few records) would exceed it.
const ALLOCATIONS_PER_RECORD_MAX: f64 = 0.2;

/// Sends `count` records and waits until all are acknowledged; returns the
/// allocations made meanwhile.
async fn produce(producer: &Producer, topic: &str, count: u64) -> Result<u64> {
    let value = [7u8; VALUE_BYTES];
    let before = allocations();
    for _ in 0..count {
        // The delivery future is dropped: flush reports failures.
        let _delivery = producer
            .send(ProducerRecord::new(topic, &value).partition(0))
            .await?;
    }
    producer.flush().await?;
    Ok(allocations() - before)
}

/// Polls until `count` more records arrived; returns the allocations made.
async fn consume(consumer: &mut Consumer, count: u64) -> Result<u64> {
    let before = allocations();
    let mut received = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received < count {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "only {received} of {count} records arrived"
        );
        let records = consumer.poll(Duration::from_millis(200)).await?;
        for record in &records {
            ensure!(
                record.value.as_ref().map(|v| v.len()) == Some(VALUE_BYTES),
                "record at offset {} has the wrong value",
                record.offset
            );
        }
        received += records.len() as u64;
    }
    ensure!(received == count, "got {received} records, wanted {count}");
    Ok(allocations() - before)
}

fn per_extra_record(small: u64, large: u64) -> f64 {
    large.saturating_sub(small) as f64 / (9 * RECORDS) as f64
}

/// Allocations on the produce path (client producer + broker append) and on
/// the fetch path (broker fetch + client consumer) grow with the number of
/// batches, not with the number of records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_do_not_allocate_per_record() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = skiff_broker::server::start(skiff_broker::config::Config {
        listen: "127.0.0.1:0".parse()?,
        quic_listen: None,
        metrics_listen: None,
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .await?;
    let bootstrap = server.tcp_addr.to_string();
    let client = Client::connect(ClientConfig::new(&bootstrap)?).await?;
    let topic = "alloc-per-record";
    skiff_tests::create_topic(&client, topic, 1).await?;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::Leader,
            // Batches fill by size, so the batch count is proportional to
            // the record count in both phases.
            linger: Duration::from_millis(50),
            batch_size: 64 * 1024,
            ..Default::default()
        },
    )
    .await?;
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(50),
            ..Default::default()
        },
    );
    consumer.assign([TopicPartition::new(topic, 0)]);
    consumer
        .seek(
            &TopicPartition::new(topic, 0),
            skiff_client::SeekTo::Beginning,
        )
        .await?;

    // Warm-up: connections, metadata, lazily created runtime threads and
    // buffers that reach their steady size.
    produce(&producer, topic, RECORDS).await?;
    consume(&mut consumer, RECORDS).await?;

    // Each consume phase reads exactly what the produce before it wrote.
    let produce_small = produce(&producer, topic, RECORDS).await?;
    let fetch_small = consume(&mut consumer, RECORDS).await?;
    let produce_large = produce(&producer, topic, 10 * RECORDS).await?;
    let fetch_large = consume(&mut consumer, 10 * RECORDS).await?;
    let produce_growth = per_extra_record(produce_small, produce_large);
    let fetch_growth = per_extra_record(fetch_small, fetch_large);
    eprintln!(
        "allocations: produce {produce_small} for {RECORDS} records, {produce_large} for {} \
         ({produce_growth:.3} per extra record); fetch {fetch_small} / {fetch_large} \
         ({fetch_growth:.3} per extra record)",
        10 * RECORDS
    );
    ensure!(
        produce_growth < ALLOCATIONS_PER_RECORD_MAX,
        "produce path allocates per record: {produce_small} allocations for {RECORDS} records, \
         {produce_large} for {}",
        10 * RECORDS
    );
    ensure!(
        fetch_growth < ALLOCATIONS_PER_RECORD_MAX,
        "fetch path allocates per record: {fetch_small} allocations for {RECORDS} records, \
         {fetch_large} for {}",
        10 * RECORDS
    );

    producer.close().await.context("close producer")?;
    server.shutdown().await?;
    Ok(())
}
