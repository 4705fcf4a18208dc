//! Producer and consumer against a real skiffd, over TCP and over QUIC.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context};
use skiff_client::{
    Acks, Compression, Consumer, ConsumerConfig, Error, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, SeekTo, TopicPartition, Transport,
};
use skiff_protocol::partition::partition_for_key;
use skiff_protocol::ErrorCode;
use skiff_tests::{consume_all, create_topic, skiffd_bin, topic_name, Broker, TRANSPORTS};

const WAIT: Duration = Duration::from_secs(20);

fn quick_producer(acks: Acks) -> ProducerConfig {
    ProducerConfig {
        acks,
        linger: Duration::from_millis(2),
        request_timeout: Duration::from_secs(10),
        delivery_timeout: Duration::from_secs(30),
        ..ProducerConfig::default()
    }
}

/// Keyed records land on murmur2(key) % partitions, as the Java client
/// would put them, and are read back from that partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_on_the_murmur2_partition() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let topic = topic_name("keyed", transport);
        create_topic(&client, &topic, 6).await?;
        let producer = Producer::new(client.clone(), quick_producer(Acks::All)).await?;
        let mut futures = Vec::new();
        for i in 0..300 {
            let key = format!("key-{i}");
            let value = format!("value-{i}");
            futures.push((
                key.clone(),
                producer
                    .send(ProducerRecord::new(&topic, value.as_bytes()).key(key.as_bytes()))
                    .await?,
            ));
        }
        producer.flush().await?;
        for (key, future) in futures {
            let metadata = future.await?;
            ensure!(
                metadata.partition == partition_for_key(key.as_bytes(), 6),
                "{key} went to {}",
                metadata.partition
            );
            ensure!(metadata.offset >= 0);
        }
        let records = consume_all(&client, &topic, 300, WAIT).await?;
        ensure!(
            records.len() == 300,
            "read {} of 300 over {transport:?}",
            records.len()
        );
        for record in &records {
            let key = record.key.as_deref().context("record without key")?;
            ensure!(record.partition == partition_for_key(key, 6));
        }
        producer.close().await?;
    }
    Ok(())
}

/// Keyless records stick to one partition per batch and, over many
/// batches, reach every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_spread_over_all_partitions_in_sticky_batches() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let topic = topic_name("keyless", transport);
        create_topic(&client, &topic, 4).await?;
        let config = ProducerConfig {
            batch_size: 1024,
            ..quick_producer(Acks::All)
        };
        let producer = Producer::new(client.clone(), config).await?;
        let value = [b'x'; 100];
        let mut partitions = Vec::new();
        for _ in 0..800 {
            let future = producer.send(ProducerRecord::new(&topic, &value)).await?;
            partitions.push(future.partition());
        }
        producer.close().await?;
        let used: BTreeSet<i32> = partitions.iter().copied().collect();
        ensure!(used.len() == 4, "keyless records used partitions {used:?}");
        // About 9 records fit a 1 KiB batch; switching per record would
        // give ~600 switches for 800 records.
        let switches = partitions.windows(2).filter(|w| w[0] != w[1]).count();
        ensure!(
            switches <= 800 / 5,
            "{switches} partition switches: not sticky"
        );
        let records = consume_all(&client, &topic, 800, WAIT).await?;
        ensure!(records.len() == 800, "read {} of 800", records.len());
    }
    Ok(())
}

/// acks=0, 1 and all all deliver; only acks=0 leaves offsets unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acks_level_delivers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        for (acks, label) in [
            (Acks::None, "acks0"),
            (Acks::Leader, "acks1"),
            (Acks::All, "acksall"),
        ] {
            let topic = topic_name(label, transport);
            create_topic(&client, &topic, 1).await?;
            let producer = Producer::new(client.clone(), quick_producer(acks)).await?;
            let mut futures = Vec::new();
            for i in 0..50 {
                let value = format!("{i}");
                futures.push(
                    producer
                        .send(ProducerRecord::new(&topic, value.as_bytes()))
                        .await?,
                );
            }
            producer.flush().await?;
            for (i, future) in futures.into_iter().enumerate() {
                let metadata = future.await?;
                match acks {
                    Acks::None => ensure!(metadata.offset == -1),
                    _ => ensure!(
                        metadata.offset == i as i64,
                        "{label}: record {i} at {}",
                        metadata.offset
                    ),
                }
            }
            let records = consume_all(&client, &topic, 50, WAIT).await?;
            let values: Vec<String> = records
                .iter()
                .map(|r| {
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
                })
                .collect();
            let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
            ensure!(values == expected, "{label} over {transport:?}: {values:?}");
            producer.close().await?;
        }
    }
    Ok(())
}

/// Every compression codec round-trips records, headers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        for codec in Compression::ALL {
            let topic = topic_name(&format!("codec-{}", codec.name()), transport);
            create_topic(&client, &topic, 2).await?;
            let producer = Producer::new(
                client.clone(),
                ProducerConfig {
                    compression: codec,
                    ..quick_producer(Acks::All)
                },
            )
            .await?;
            for i in 0..200 {
                let key = format!("k{i}");
                let value = format!("{i}-{}", "compressible ".repeat(i % 7));
                let headers: [(&[u8], Option<&[u8]>); 1] =
                    [(b"codec", Some(codec.name().as_bytes()))];
                drop(
                    producer
                        .send(
                            ProducerRecord::new(&topic, value.as_bytes())
                                .key(key.as_bytes())
                                .headers(&headers),
                        )
                        .await?,
                );
            }
            producer.close().await?;
            let records = consume_all(&client, &topic, 200, WAIT).await?;
            ensure!(
                records.len() == 200,
                "{} over {transport:?}: read {}",
                codec.name(),
                records.len()
            );
            for record in records {
                let key =
                    String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
                let i: usize = key[1..].parse()?;
                let expected = format!("{i}-{}", "compressible ".repeat(i % 7));
                ensure!(record.value.as_deref() == Some(expected.as_bytes()));
                let headers: Vec<_> = record.headers.clone().collect::<Result<_, _>>()?;
                ensure!(
                    headers.len() == 1
                        && headers[0].value.as_deref() == Some(codec.name().as_bytes())
                );
            }
        }
    }
    Ok(())
}

/// Seeking by timestamp finds the first record at or after it; past the
/// last record it lands at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_by_timestamp() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let topic = topic_name("timestamps", transport);
        create_topic(&client, &topic, 1).await?;
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                batch_size: 200,
                ..quick_producer(Acks::All)
            },
        )
        .await?;
        let base = 1_700_000_000_000i64;
        for i in 0..100i64 {
            let value = i.to_string();
            drop(
                producer
                    .send(ProducerRecord::new(&topic, value.as_bytes()).timestamp(base + 10 * i))
                    .await?,
            );
        }
        producer.close().await?;
        let tp = TopicPartition::new(&topic, 0);
        let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
        consumer.assign([tp.clone()]);
        for (timestamp, expected) in [
            (base, 0),
            (base + 455, 46),
            (base + 500, 50),
            (base - 1, 0),
            (base + 10_000, 100),
        ] {
            let position = consumer.seek(&tp, SeekTo::Timestamp(timestamp)).await?;
            ensure!(
                position == expected,
                "timestamp {timestamp}: position {position}, expected {expected}"
            );
        }
        consumer.seek(&tp, SeekTo::Timestamp(base + 455)).await?;
        let records = consumer.poll(WAIT).await?;
        let first = records.first().context("no records after seek")?;
        ensure!(first.offset == 46 && first.timestamp == base + 460);
        // Pipelining: the next fetch left before poll handed these records over.
        ensure!(
            consumer.fetches_in_flight() == 1,
            "{} fetches in flight",
            consumer.fetches_in_flight()
        );
    }
    Ok(())
}

/// A position past the log end is reset per policy: earliest re-reads
/// from the start, none reports OffsetOutOfRange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_out_of_range_follows_the_reset_policy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let topic = topic_name("out-of-range", transport);
        create_topic(&client, &topic, 1).await?;
        let producer = Producer::new(client.clone(), quick_producer(Acks::All)).await?;
        for i in 0..10 {
            drop(
                producer
                    .send(ProducerRecord::new(&topic, format!("{i}").as_bytes()))
                    .await?,
            );
        }
        producer.close().await?;
        let tp = TopicPartition::new(&topic, 0);
        let mut earliest = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..Default::default()
            },
        );
        earliest.assign([tp.clone()]);
        earliest.seek(&tp, SeekTo::Offset(1000)).await?;
        let mut records = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        while records.len() < 10 && std::time::Instant::now() < deadline {
            records.extend(earliest.poll(Duration::from_millis(300)).await?);
        }
        ensure!(
            records.first().map(|r| r.offset) == Some(0),
            "reset to earliest should restart at 0"
        );
        let mut strict = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::None,
                ..Default::default()
            },
        );
        strict.assign([tp.clone()]);
        strict.seek(&tp, SeekTo::Offset(1000)).await?;
        let mut outcome = Ok(Vec::new());
        for _ in 0..20 {
            outcome = strict.poll(Duration::from_millis(300)).await;
            if outcome.is_err() {
                break;
            }
        }
        ensure!(
            matches!(outcome, Err(Error::OffsetOutOfRange { offset: 1000, .. })),
            "expected OffsetOutOfRange, got {outcome:?}"
        );
    }
    Ok(())
}

/// Puts every record on the topic's last partition.
#[derive(Debug)]
struct LastPartition;

impl skiff_client::Partitioner for LastPartition {
    fn partition(
        &self,
        _topic: &str,
        _key: Option<&[u8]>,
        _value: Option<&[u8]>,
        partitions: i32,
    ) -> Option<i32> {
        Some(partitions - 1)
    }
}

/// Explicit partitions and a custom partitioner are honoured, and a
/// partition outside the topic is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_partitions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let topic = topic_name("explicit", transport);
        create_topic(&client, &topic, 3).await?;
        let producer = Producer::new(client.clone(), quick_producer(Acks::All)).await?;
        let mut counts = BTreeMap::new();
        for i in 0..30 {
            let future = producer
                .send(ProducerRecord::new(&topic, b"v").partition(i % 3))
                .await?;
            *counts.entry(future.await?.partition).or_insert(0) += 1;
        }
        ensure!(counts == BTreeMap::from([(0, 10), (1, 10), (2, 10)]));
        let custom = Producer::new(
            client.clone(),
            ProducerConfig {
                partitioner: std::sync::Arc::new(LastPartition),
                ..quick_producer(Acks::All)
            },
        )
        .await?;
        for key in ["a", "b", "c"] {
            let written = custom
                .send(ProducerRecord::new(&topic, b"v").key(key.as_bytes()))
                .await?
                .await?;
            ensure!(
                written.partition == 2,
                "custom partitioner ignored: {key} went to {}",
                written.partition
            );
        }
        custom.close().await?;
        let refused = producer
            .send(ProducerRecord::new(&topic, b"v").partition(3))
            .await;
        ensure!(matches!(
            refused,
            Err(Error::UnknownPartition {
                partition: 3,
                partitions: 3,
                ..
            })
        ));
        producer.close().await?;
    }
    Ok(())
}

/// flush waits for the records accepted before it, not for records other
/// tasks keep sending meanwhile (it would never return otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_is_not_starved_by_concurrent_sends() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(skiff_client::Transport::Tcp).await?;
    create_topic(&client, "flush", 2).await?;
    let producer = std::sync::Arc::new(Producer::new(client, quick_producer(Acks::All)).await?);
    let before = producer
        .send(ProducerRecord::new("flush", b"before"))
        .await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let producer = std::sync::Arc::clone(&producer);
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                drop(
                    producer
                        .send(ProducerRecord::new("flush", b"during"))
                        .await?,
                );
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>(())
        })
    };
    tokio::time::timeout(Duration::from_secs(30), producer.flush())
        .await
        .context("flush never returned")??;
    ensure!(
        before.await?.offset >= 0,
        "a record sent before flush was not acknowledged by it"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    background.await??;
    producer.flush().await?;
    Ok(())
}

/// Admin, producer and consumer built on one client share one connection
/// to the broker (the broker counts the connections it accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_broker_is_shared() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(skiff_client::Transport::Tcp).await?;
    create_topic(&client, "shared", 3).await?;
    let producer = Producer::new(client.clone(), quick_producer(Acks::All)).await?;
    for i in 0..100 {
        drop(
            producer
                .send(ProducerRecord::new("shared", format!("{i}").as_bytes()))
                .await?,
        );
    }
    producer.flush().await?;
    let records = consume_all(&client, "shared", 100, WAIT).await?;
    ensure!(records.len() == 100);
    producer.close().await?;
    let accepted = skiff_tests::broker_metric(&broker, "skiff_connections_total")?;
    ensure!(
        accepted == 1.0,
        "the broker accepted {accepted} connections from one client"
    );
    Ok(())
}

/// A record over max_request_size or buffer_memory is refused with a typed
/// error before anything is queued, and the producer carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(skiff_client::Transport::Tcp).await?;
    create_topic(&client, "sizes", 1).await?;
    let config = ProducerConfig {
        max_request_size: 10_000,
        buffer_memory: 5_000,
        ..quick_producer(Acks::All)
    };
    let producer = Producer::new(client.clone(), config).await?;
    let huge = vec![0u8; 20_000];
    let refused = producer.send(ProducerRecord::new("sizes", &huge)).await;
    ensure!(
        matches!(
            refused,
            Err(Error::RecordTooLarge {
                limit: "max_request_size",
                ..
            })
        ),
        "{refused:?}"
    );
    let big = vec![0u8; 8_000];
    let refused = producer.send(ProducerRecord::new("sizes", &big)).await;
    ensure!(
        matches!(
            refused,
            Err(Error::RecordTooLarge {
                limit: "buffer_memory",
                ..
            })
        ),
        "{refused:?}"
    );
    let written = producer
        .send(ProducerRecord::new("sizes", b"small"))
        .await?
        .await?;
    ensure!(
        written.offset == 0,
        "the refused records left traces: {written:?}"
    );
    producer.close().await?;
    Ok(())
}

/// A batch the broker refuses for good (MESSAGE_TOO_LARGE) fails its
/// records only; the idempotent producer renumbers the batches queued
/// behind it under a new epoch or id, and they are delivered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_fails_alone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(skiff_client::Transport::Tcp).await?;
    create_topic(&client, "refusals", 1).await?;
    let config = ProducerConfig {
        max_request_size: 8 * 1024 * 1024,
        batch_size: 1024,
        ..quick_producer(Acks::All)
    };
    let producer = Producer::new(client.clone(), config).await?;
    let before = producer
        .send(ProducerRecord::new("refusals", b"before"))
        .await?;
    // Larger than the broker's default max.message.bytes (1 MiB).
    let huge = vec![7u8; 2 * 1024 * 1024];
    let refused = producer
        .send(ProducerRecord::new("refusals", &huge))
        .await?;
    let mut after = Vec::new();
    for i in 0..20 {
        after.push(
            producer
                .send(ProducerRecord::new(
                    "refusals",
                    format!("after {i}").as_bytes(),
                ))
                .await?,
        );
    }
    ensure!(before.await?.offset == 0);
    let outcome = refused.await;
    ensure!(
        matches!(
            outcome,
            Err(Error::Kafka {
                code: ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge,
                ..
            })
        ),
        "{outcome:?}"
    );
    for (i, future) in after.into_iter().enumerate() {
        let written = future
            .await
            .with_context(|| format!("record {i} after the refused one"))?;
        ensure!(
            written.offset == 1 + i as i64,
            "record {i} at offset {}",
            written.offset
        );
    }
    let flushed = producer.flush().await;
    ensure!(
        matches!(
            flushed,
            Err(Error::Undelivered {
                failed_records: 1,
                ..
            })
        ),
        "{flushed:?}"
    );
    ensure!(
        producer.epoch_bumps() >= 1,
        "the hole in the sequence was not renumbered"
    );
    producer.close().await?;
    Ok(())
}

/// With linger 0, a batch that cannot go out yet (its connection is at
/// max_in_flight) stays open and gathers the records sent meanwhile, as in
/// Kafka, instead of being sealed with a record or two and queued: 2 000
/// records sent a few microseconds apart (so the sender runs between them)
/// with one request in flight go out in far fewer requests than records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_zero_batches_grow_while_the_connection_is_busy() -> anyhow::Result<()> {
    const RECORDS: usize = 2_000;
    const SPACING_US: u64 = 10;
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(skiff_client::Transport::Tcp).await?;
    let topic = topic_name("busy-batches", skiff_client::Transport::Tcp);
    create_topic(&client, &topic, 1).await?;
    let config = ProducerConfig {
        linger: Duration::ZERO,
        max_in_flight: 1,
        ..quick_producer(Acks::All)
    };
    let producer = Producer::new(client.clone(), config).await?;
    let produce_requests = r#"skiff_requests_total{api="Produce",api_key="0"}"#;
    let before = skiff_tests::broker_metric(&broker, produce_requests).unwrap_or(0.0);
    let value = [7u8; 100];
    let mut acks = Vec::with_capacity(RECORDS);
    for _ in 0..RECORDS {
        acks.push(
            producer
                .send(ProducerRecord::new(&topic, &value[..]))
                .await?,
        );
        let sent = std::time::Instant::now();
        while sent.elapsed() < Duration::from_micros(SPACING_US) {
            std::hint::spin_loop();
        }
    }
    for ack in acks {
        ack.await?;
    }
    let requests = skiff_tests::broker_metric(&broker, produce_requests)? - before;
    eprintln!("{RECORDS} records, {requests} produce requests");
    ensure!(
        requests <= (RECORDS / 20) as f64,
        "{RECORDS} records took {requests} produce requests"
    );
    ensure!(consume_all(&client, &topic, RECORDS, WAIT).await?.len() == RECORDS);
    Ok(())
}

/// Flips one byte of the record value containing `marker` in whichever
/// file under `dir` holds it; the broker maps its segments shared, so it
/// serves the flipped byte from then on.
fn corrupt_on_disk(dir: &std::path::Path, marker: &[u8]) -> anyhow::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
            continue;
        }
        let bytes = std::fs::read(&path)?;
        if let Some(at) = bytes.windows(marker.len()).position(|w| w == marker) {
            let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
            file.seek(SeekFrom::Start(at as u64))?;
            file.write_all(&[bytes[at] ^ 0xff])?;
            return Ok(());
        }
    }
    anyhow::bail!("no file under {} holds the marker", dir.display())
}

/// A batch corrupted on disk after it was written stops the consumer at it:
/// the batch before it is delivered once (the consumer used to deliver it
/// again with every retry), then every poll reports the corruption and the
/// position stays at the bad batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_corrupted_on_disk_stops_the_consumer_at_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = topic_name("corrupt-on-disk", Transport::Tcp);
    create_topic(&client, &topic, 1).await?;
    let producer = Producer::new(client.clone(), quick_producer(Acks::All)).await?;
    for batch in 0..3 {
        for record in 0..5 {
            let value = format!("batch-{batch}-record-{record}");
            drop(
                producer
                    .send(ProducerRecord::new(&topic, value.as_bytes()))
                    .await?,
            );
        }
        producer.flush().await?;
    }
    producer.close().await?;
    corrupt_on_disk(broker.data_dir(), b"batch-1-record-2")?;

    let tp = TopicPartition::new(&topic, 0);
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, SeekTo::Beginning).await?;
    let mut delivered = Vec::new();
    let mut errors = 0;
    let deadline = std::time::Instant::now() + WAIT;
    while errors < 3 && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(300)).await {
            Ok(records) => delivered.extend(records.iter().map(|r| r.offset)),
            Err(Error::Decode { .. }) => errors += 1,
            Err(other) => anyhow::bail!("expected a decode error, got {other}"),
        }
    }
    ensure!(errors == 3, "the corruption was reported {errors} times");
    ensure!(
        delivered == [0, 1, 2, 3, 4],
        "delivered {delivered:?}: the good batch once, nothing of the bad one or after it"
    );
    ensure!(
        consumer.position(&tp) == Some(5),
        "position {:?}",
        consumer.position(&tp)
    );
    Ok(())
}

/// A send that must wait for `buffer_memory` gets the open batches sent at
/// once instead of after their linger (Kafka sends everything while its
/// buffer pool is exhausted): with a 30 s linger and room for two 4 KiB
/// batches, the sends for a third and fourth partition go through in
/// seconds. (Before, the third send waited out the linger.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_buffer_memory_sends_open_batches_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = topic_name("memory-waits", Transport::Tcp);
    create_topic(&client, &topic, 4).await?;
    let config = ProducerConfig {
        linger: Duration::from_secs(30),
        batch_size: 4 * 1024,
        buffer_memory: 8 * 1024,
        delivery_timeout: Duration::from_secs(60),
        ..quick_producer(Acks::All)
    };
    let producer = Producer::new(client.clone(), config).await?;
    let sends = async {
        let mut deliveries = Vec::new();
        for partition in 0..4 {
            let record = ProducerRecord::new(&topic, b"value").partition(partition);
            deliveries.push(producer.send(record).await?);
        }
        anyhow::Ok(deliveries)
    };
    let deliveries = tokio::time::timeout(Duration::from_secs(10), sends)
        .await
        .context("sends waited for the linger")??;
    producer.flush().await?;
    for delivery in deliveries {
        delivery.await?;
    }
    Ok(())
}

/// `send_many` places, batches and delivers records as one `send` each
/// would: keyed ones on their murmur2 partition, keyless ones sticky, in
/// order; a buffer too small for the call makes it wait mid-way for
/// batches to complete rather than fail; the report gives every record the
/// offset it was read back at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_delivers_every_record_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let topic = topic_name("send-many", transport);
        create_topic(&client, &topic, 4).await?;
        let config = ProducerConfig {
            batch_size: 4 * 1024,
            // Two calls' worth of batches at most: the calls wait for memory.
            buffer_memory: 16 * 1024,
            ..quick_producer(Acks::All)
        };
        let producer = Producer::new(client.clone(), config).await?;
        let keys: Vec<String> = (0..400).map(|i| format!("key-{i}")).collect();
        let values: Vec<String> = (0..400).map(|i| format!("value-{i:0>200}")).collect();
        let mut calls = Vec::new();
        for chunk in 0..4 {
            let range = chunk * 100..(chunk + 1) * 100;
            let records: Vec<ProducerRecord<'_>> = range
                .map(|i| {
                    let record = ProducerRecord::new(&topic, values[i].as_bytes());
                    // Half the calls keyed, half keyless.
                    if chunk % 2 == 0 {
                        record.key(keys[i].as_bytes())
                    } else {
                        record
                    }
                })
                .collect();
            let deliveries = producer.send_many(&records).await?;
            ensure!(deliveries.len() == 100);
            calls.push((chunk, deliveries));
        }
        let mut written = BTreeMap::new();
        for (chunk, deliveries) in calls {
            let report = deliveries.await.into_result()?;
            ensure!(report.len() == 100 && report.failed_records() == 0);
            for (i, metadata) in (chunk * 100..).zip(report.iter()) {
                let metadata = metadata.map_err(Clone::clone)?;
                if chunk % 2 == 0 {
                    ensure!(metadata.partition == partition_for_key(keys[i].as_bytes(), 4));
                }
                written.insert((metadata.partition, metadata.offset), i);
            }
        }
        ensure!(written.len() == 400, "offsets repeat: {}", written.len());
        let records = consume_all(&client, &topic, 400, WAIT).await?;
        ensure!(records.len() == 400, "read back {}", records.len());
        for record in &records {
            let i = written
                .get(&(record.partition, record.offset))
                .with_context(|| format!("no report for {}@{}", record.partition, record.offset))?;
            ensure!(record.value.as_deref() == Some(values[*i].as_bytes()));
        }
        producer.close().await?;
    }
    Ok(())
}

/// A call with one bad record (too large, or for a partition the topic
/// lacks) is refused whole: none of its records is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_refuses_a_call_with_a_bad_record_whole() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, "many-refused", 2).await?;
    let config = ProducerConfig {
        max_request_size: 10_000,
        ..quick_producer(Acks::All)
    };
    let producer = Producer::new(client.clone(), config).await?;
    let huge = vec![0u8; 20_000];
    let good = ProducerRecord::new("many-refused", b"good");
    let refused = producer
        .send_many(&[good, ProducerRecord::new("many-refused", &huge), good])
        .await;
    ensure!(
        matches!(
            refused,
            Err(Error::RecordTooLarge {
                limit: "max_request_size",
                ..
            })
        ),
        "{refused:?}"
    );
    let refused = producer.send_many(&[good, good.partition(2)]).await;
    ensure!(
        matches!(refused, Err(Error::UnknownPartition { partition: 2, .. })),
        "{refused:?}"
    );
    let report = producer
        .send_many(&[good.partition(0), good.partition(1)])
        .await?
        .await
        .into_result()?;
    let offsets: Vec<_> = report.iter().map(|m| m.ok().map(|m| m.offset)).collect();
    ensure!(
        offsets == [Some(0), Some(0)],
        "the refused calls left traces: {offsets:?}"
    );
    producer.close().await?;
    Ok(())
}

/// A record for a topic deleted under the producer waits for a leader
/// that never comes: the producer asks for metadata once per retry
/// backoff meanwhile, not in a loop, and fails the record at its delivery
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_without_leader_is_asked_for_once_per_backoff() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, "vanishing", 1).await?;
    let config = ProducerConfig {
        retry_backoff: Duration::from_millis(100),
        request_timeout: Duration::from_secs(1),
        delivery_timeout: Duration::from_secs(2),
        ..quick_producer(Acks::All)
    };
    let producer = Producer::new(client.clone(), config).await?;
    let record = ProducerRecord::new("vanishing", b"value");
    producer.send(record).await?.await?;
    skiff_client::Admin::new(client.clone())
        .delete_topic("vanishing")
        .await?;
    let metadata_requests = || {
        skiff_tests::broker_metric(
            &broker,
            "skiff_requests_total{api=\"Metadata\",api_key=\"3\"}",
        )
    };
    let before = metadata_requests()?;
    let waiting = producer.send(record).await?;
    let started = std::time::Instant::now();
    let failed = waiting.await;
    let seconds = started.elapsed().as_secs_f64();
    let asked = metadata_requests()? - before;
    ensure!(failed.is_err(), "delivered to a deleted topic: {failed:?}");
    // One per 100 ms backoff, plus a few for the send's own lookups.
    ensure!(
        asked <= seconds * 10.0 + 5.0,
        "{asked} Metadata requests in {seconds:.1} s"
    );
    Ok(())
}

/// `poll_with` shows the records `poll` returns, borrowed: keys, values,
/// headers and timestamps of keyed records over three partitions in two
/// codecs, each once, in offset order per partition, and its positions
/// advance as `poll`'s do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_with_shows_what_poll_returns() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let topic = topic_name("poll-with", transport);
        create_topic(&client, &topic, 3).await?;
        for compression in [Compression::None, Compression::Lz4] {
            let config = ProducerConfig {
                compression,
                ..quick_producer(Acks::All)
            };
            let producer = Producer::new(client.clone(), config).await?;
            for i in 0..150 {
                let (key, value) = (format!("key-{i}"), format!("{compression:?}-{i}"));
                let headers: &[(&[u8], Option<&[u8]>)] = &[(b"h", Some(b"v")), (b"n", None)];
                let record = ProducerRecord::new(&topic, value.as_bytes())
                    .key(key.as_bytes())
                    .headers(headers)
                    .timestamp(1_000 + i);
                drop(producer.send(record).await?);
            }
            producer.close().await?;
        }
        type Seen = (
            i32,
            i64,
            i64,
            Vec<u8>,
            Vec<u8>,
            Vec<(Vec<u8>, Option<Vec<u8>>)>,
        );
        let expected: Vec<Seen> = consume_all(&client, &topic, 300, WAIT)
            .await?
            .into_iter()
            .map(|r| {
                let headers = r
                    .headers
                    .map(|h| h.map(|h| (h.key.to_vec(), h.value.map(|v| v.to_vec()))))
                    .collect::<Result<Vec<_>, _>>()?;
                let key = r.key.map(|k| k.to_vec()).unwrap_or_default();
                let value = r.value.map(|v| v.to_vec()).unwrap_or_default();
                anyhow::Ok((r.partition, r.offset, r.timestamp, key, value, headers))
            })
            .collect::<Result<_, _>>()?;
        ensure!(expected.len() == 300, "poll read {}", expected.len());

        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                fetch_max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        consumer.assign_topics(&[&topic]).await?;
        consumer.seek_all(SeekTo::Beginning).await?;
        let mut seen: Vec<Seen> = Vec::new();
        let mut other_topics = 0;
        let deadline = std::time::Instant::now() + WAIT;
        while seen.len() < 300 && std::time::Instant::now() < deadline {
            let shown = consumer
                .poll_with(Duration::from_millis(200), |r| {
                    other_topics += usize::from(r.topic != topic);
                    seen.push((
                        r.partition,
                        r.offset,
                        r.timestamp,
                        r.key.unwrap_or_default().to_vec(),
                        r.value.unwrap_or_default().to_vec(),
                        r.headers
                            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                            .collect(),
                    ));
                })
                .await?;
            ensure!(shown <= seen.len());
        }
        ensure!(other_topics == 0, "{other_topics} records of another topic");
        let sorted = |mut records: Vec<Seen>| {
            records.sort_by_key(|r| (r.0, r.1));
            records
        };
        ensure!(
            sorted(seen.clone()) == sorted(expected),
            "poll_with showed {} records, not what poll returned",
            seen.len()
        );
        for partition in 0..3 {
            let offsets: Vec<i64> = seen
                .iter()
                .filter(|r| r.0 == partition)
                .map(|r| r.1)
                .collect();
            ensure!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "out of order: {offsets:?}"
            );
            let tp = TopicPartition::new(&topic, partition);
            ensure!(consumer.position(&tp) == Some(offsets.len() as i64));
        }
    }
    Ok(())
}

/// `send_many` asks the partitioner about each record once, in order,
/// though it asks one record ahead (to prefetch that record's batch) and
/// the call waits for buffer memory mid-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_asks_the_partitioner_once_per_record_in_order() -> anyhow::Result<()> {
    #[derive(Debug, Default)]
    struct Asked(std::sync::Mutex<Vec<u8>>);
    impl skiff_client::Partitioner for Asked {
        fn partition(&self, _: &str, key: Option<&[u8]>, _: Option<&[u8]>, n: i32) -> Option<i32> {
            let key = key?[0];
            self.0.lock().ok()?.push(key);
            Some(i32::from(key) % n)
        }
    }
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, "asked-once", 3).await?;
    let asked = std::sync::Arc::new(Asked::default());
    let config = ProducerConfig {
        partitioner: asked.clone(),
        batch_size: 2 * 1024,
        // Room for a few batches: the call waits for memory several times.
        buffer_memory: 8 * 1024,
        ..quick_producer(Acks::All)
    };
    let producer = Producer::new(client.clone(), config).await?;
    let keys: Vec<[u8; 1]> = (0..200u8).map(|i| [i]).collect();
    let value = [7u8; 300];
    let records: Vec<ProducerRecord<'_>> = keys
        .iter()
        .map(|key| ProducerRecord::new("asked-once", &value).key(key))
        .collect();
    let report = producer.send_many(&records).await?.await.into_result()?;
    ensure!(report.failed_records() == 0);
    for (key, metadata) in keys.iter().zip(report.iter()) {
        let metadata = metadata.map_err(Clone::clone)?;
        ensure!(metadata.partition == i32::from(key[0]) % 3);
    }
    let order = asked
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    ensure!(order == (0..200u8).collect::<Vec<_>>(), "asked {order:?}");
    producer.close().await?;
    Ok(())
}

/// A partitioner that answers a partition the topic lacks fails a
/// `send_many` call at that record; the records before it were queued and
/// are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_stops_at_a_bad_partitioner_answer() -> anyhow::Result<()> {
    #[derive(Debug)]
    struct KeyIsPartition;
    impl skiff_client::Partitioner for KeyIsPartition {
        fn partition(&self, _: &str, key: Option<&[u8]>, _: Option<&[u8]>, _: i32) -> Option<i32> {
            key.map(|key| i32::from(key[0]))
        }
    }
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, "bad-partitioner", 2).await?;
    let config = ProducerConfig {
        partitioner: std::sync::Arc::new(KeyIsPartition),
        ..quick_producer(Acks::All)
    };
    let producer = Producer::new(client.clone(), config).await?;
    let record =
        |partition: &'static [u8]| ProducerRecord::new("bad-partitioner", b"v").key(partition);
    let refused = producer
        .send_many(&[record(&[1]), record(&[0]), record(&[7]), record(&[0])])
        .await;
    ensure!(
        matches!(refused, Err(Error::UnknownPartition { partition: 7, .. })),
        "{refused:?}"
    );
    producer.close().await?;
    let records = consume_all(&client, "bad-partitioner", 2, WAIT).await?;
    let mut partitions: Vec<i32> = records.iter().map(|r| r.partition).collect();
    partitions.sort_unstable();
    ensure!(partitions == [0, 1], "delivered to {partitions:?}");
    Ok(())
}
