//! A broker that is killed (SIGKILL) and comes back: producers deliver
//! everything they accepted, in order and without duplicates; consumers
//! carry on where they were; a broker that stays away is reported.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use skiff_client::{Acks, Error, Producer, ProducerConfig, ProducerRecord, Transport};
use skiff_tests::{consume_all, create_topic, skiffd_bin, topic_name, Broker, TRANSPORTS};

/// With max_in_flight 5 and idempotence, a broker restart in the middle of
/// a stream causes retries, yet every partition holds each record exactly
/// once and in send order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_and_no_duplicates_across_a_broker_restart() -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let topic = topic_name("restart-order", transport);
        create_topic(&client, &topic, 3).await?;
        let config = ProducerConfig {
            max_in_flight: 5,
            batch_size: 512,
            linger: Duration::from_millis(1),
            request_timeout: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(60),
            retry_backoff: Duration::from_millis(20),
            retry_backoff_max: Duration::from_millis(200),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(client.clone(), config).await?;
        const RECORDS: usize = 6000;
        let mut futures = Vec::with_capacity(RECORDS);
        for i in 0..RECORDS {
            if i == RECORDS / 2 {
                broker.restart()?;
            }
            let key = format!("k{}", i % 3);
            let value = format!("{i:08}");
            futures.push(
                producer
                    .send(ProducerRecord::new(&topic, value.as_bytes()).key(key.as_bytes()))
                    .await?,
            );
        }
        producer.flush().await?;
        for future in futures {
            future.await?;
        }
        ensure!(
            producer.retried_batches() > 0,
            "the restart caused no retry over {transport:?}: the test proves nothing"
        );
        eprintln!(
            "{transport:?}: {} batches retried, {} epoch bumps",
            producer.retried_batches(),
            producer.epoch_bumps()
        );
        producer.close().await?;
        let records = consume_all(&client, &topic, RECORDS, Duration::from_secs(30)).await?;
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for record in &records {
            let value: usize =
                std::str::from_utf8(record.value.as_deref().unwrap_or_default())?.parse()?;
            by_partition
                .entry(record.partition)
                .or_default()
                .push(value);
        }
        let mut total = 0;
        for (partition, values) in &by_partition {
            ensure!(
                values.windows(2).all(|w| w[0] < w[1]),
                "partition {partition} out of order or duplicated over {transport:?}"
            );
            total += values.len();
        }
        ensure!(
            total == RECORDS,
            "read {total} records, sent {RECORDS} over {transport:?}"
        );
    }
    Ok(())
}

/// A consumer in the middle of a topic keeps reading after the broker
/// restarts, from where it was: no record is skipped or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_resumes_after_a_broker_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let topic = topic_name("restart-consume", transport);
        create_topic(&client, &topic, 2).await?;
        let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
        for i in 0..1000 {
            drop(
                producer
                    .send(
                        ProducerRecord::new(&topic, format!("{i}").as_bytes())
                            .key(format!("{i}").as_bytes()),
                    )
                    .await?,
            );
        }
        producer.close().await?;
        let mut consumer = skiff_client::Consumer::new(
            client.clone(),
            skiff_client::ConsumerConfig {
                max_partition_fetch_bytes: 2048,
                fetch_max_wait: Duration::from_millis(100),
                ..Default::default()
            },
        );
        consumer.assign_topics(&[&topic]).await?;
        consumer.seek_all(skiff_client::SeekTo::Beginning).await?;
        let mut seen = Vec::new();
        while seen.len() < 300 {
            seen.extend(
                consumer
                    .poll(Duration::from_millis(500))
                    .await?
                    .into_iter()
                    .map(|r| (r.partition, r.offset)),
            );
        }
        broker.restart()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < 1000 && std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(500)).await {
                Ok(records) => seen.extend(records.into_iter().map(|r| (r.partition, r.offset))),
                Err(error) if error.is_retriable() => {}
                Err(error) => return Err(error.into()),
            }
        }
        ensure!(
            seen.len() == 1000,
            "read {} of 1000 over {transport:?}",
            seen.len()
        );
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        ensure!(sorted.len() == 1000, "duplicates after the restart");
    }
    Ok(())
}

/// When the broker stays down, undeliverable records fail with a delivery
/// timeout and flush reports how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_time_out_when_the_broker_stays_away() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = "gone";
    create_topic(&client, topic, 1).await?;
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(1),
        request_timeout: Duration::from_millis(500),
        delivery_timeout: Duration::from_secs(2),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config).await?;
    producer
        .send(ProducerRecord::new(topic, b"before"))
        .await?
        .await?;
    broker.kill();
    let future = producer.send(ProducerRecord::new(topic, b"lost")).await?;
    let outcome = future.await;
    ensure!(
        matches!(outcome, Err(Error::DeliveryTimeout { .. })),
        "got {outcome:?}"
    );
    let flushed = producer.flush().await;
    ensure!(
        matches!(
            flushed,
            Err(Error::Undelivered {
                failed_records: 1,
                ..
            })
        ),
        "got {flushed:?}"
    );
    Ok(())
}

/// A 16 KiB buffer of 4 KiB batches, and timeouts that ride out a restart.
fn small_buffer() -> ProducerConfig {
    ProducerConfig {
        buffer_memory: 16 * 1024,
        batch_size: 4 * 1024,
        linger: Duration::from_millis(1),
        request_timeout: Duration::from_secs(2),
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    }
}

/// With the broker down, `send` stops accepting records once
/// `buffer_memory` is used up, and resumes when the broker returns and the
/// buffered records are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waits_while_the_buffer_is_full() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, "backpressure", 1).await?;
    let producer = std::sync::Arc::new(Producer::new(client.clone(), small_buffer()).await?);
    producer
        .send(ProducerRecord::new("backpressure", b"warm-up"))
        .await?
        .await?;
    broker.kill();
    let value = [b'v'; 1000];
    let mut accepted = 0usize;
    let blocked = loop {
        match tokio::time::timeout(
            Duration::from_millis(500),
            producer.send(ProducerRecord::new("backpressure", &value)),
        )
        .await
        {
            Ok(sent) => {
                drop(sent?);
                accepted += 1;
                ensure!(
                    accepted <= 16,
                    "accepted {accepted} KB into a 16 KiB buffer"
                );
            }
            Err(_) => break accepted,
        }
    };
    ensure!(blocked >= 8, "send blocked after only {blocked} records");
    broker.restart()?;
    let waiting = {
        let producer = std::sync::Arc::clone(&producer);
        tokio::spawn(async move {
            producer
                .send(ProducerRecord::new("backpressure", b"after"))
                .await
                .map(drop)
        })
    };
    tokio::time::timeout(Duration::from_secs(30), waiting).await???;
    producer.flush().await?;
    let records = consume_all(
        &client,
        "backpressure",
        blocked + 2,
        Duration::from_secs(20),
    )
    .await?;
    ensure!(
        records.len() == blocked + 2,
        "read {} of {}",
        records.len(),
        blocked + 2
    );
    Ok(())
}

/// `buffer_memory` bounds the memory of open batches, not only the bytes
/// of their records: with the broker down, one small record per partition
/// opens a batch of `batch_size` each, so a 16 KiB buffer takes four 4 KiB
/// batches (four records) and then `send` waits. (Counting record bytes
/// only, it took all 16 records, 64 KiB of batch buffers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_memory_bounds_batches_across_partitions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, "bounded", 16).await?;
    let producer = std::sync::Arc::new(Producer::new(client.clone(), small_buffer()).await?);
    producer
        .send(ProducerRecord::new("bounded", b"warm-up").partition(0))
        .await?
        .await?;
    broker.kill();
    let mut accepted = 0i32;
    while accepted < 16 {
        let send = producer.send(ProducerRecord::new("bounded", b"small").partition(accepted));
        match tokio::time::timeout(Duration::from_millis(500), send).await {
            Ok(sent) => {
                drop(sent?);
                accepted += 1;
            }
            Err(_) => break,
        }
    }
    ensure!(
        accepted == 4,
        "accepted {accepted} one-record batches into 16 KiB of 4 KiB batches"
    );
    broker.restart()?;
    let waiting = {
        let producer = std::sync::Arc::clone(&producer);
        tokio::spawn(async move {
            producer
                .send(ProducerRecord::new("bounded", b"after").partition(15))
                .await
                .map(drop)
        })
    };
    tokio::time::timeout(Duration::from_secs(30), waiting).await???;
    producer.flush().await?;
    let records = consume_all(&client, "bounded", 6, Duration::from_secs(20)).await?;
    ensure!(records.len() == 6, "read {} of 6", records.len());
    Ok(())
}

/// A producer whose topic disappears gets UNKNOWN_TOPIC_OR_PARTITION,
/// refreshes its metadata, and delivers once the topic is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_recovers_when_its_topic_is_recreated() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // skiffd creates a missing topic on Produce too (Kafka only does so on
    // Metadata), which would recreate it behind our back.
    let broker = Broker::start_with(
        skiffd_bin!(),
        dir.path(),
        &["--auto-create-topics", "false"],
    )?;
    let client = broker.client(Transport::Tcp).await?;
    let admin = skiff_client::Admin::new(broker.client(Transport::Tcp).await?);
    create_topic(&client, "phoenix", 2).await?;
    let config = ProducerConfig {
        linger: Duration::from_millis(1),
        retry_backoff: Duration::from_millis(20),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config).await?;
    producer
        .send(ProducerRecord::new("phoenix", b"first").partition(1))
        .await?
        .await?;
    admin.delete_topic("phoenix").await?;
    let pending = producer
        .send(ProducerRecord::new("phoenix", b"second").partition(1))
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while producer.retried_batches() == 0 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the deleted topic caused no retry"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    admin
        .create_topic(skiff_client::NewTopic::new("phoenix", 2))
        .await?;
    let written = tokio::time::timeout(Duration::from_secs(30), pending).await??;
    ensure!(written.partition == 1 && written.offset == 0, "{written:?}");
    producer.close().await?;
    Ok(())
}
