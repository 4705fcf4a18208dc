//! Admin operations against a real skiffd, over TCP and QUIC.

use std::time::Duration;

use anyhow::ensure;
use skiff_client::consumer::OffsetSpec;
use skiff_client::{Admin, NewTopic, Producer, ProducerConfig, ProducerRecord, TopicPartition};
use skiff_protocol::ErrorCode;
use skiff_tests::{skiffd_bin, topic_name, Broker, TRANSPORTS};

/// Topics are created with their configs, listed, described, and deleted;
/// creating one twice is TOPIC_ALREADY_EXISTS; describing a missing one is
/// UnknownTopic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_lifecycle() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let admin = Admin::new(broker.client(transport).await?);
        let name = topic_name("admin", transport);
        admin
            .create_topic(NewTopic::new(&name, 3).config("retention.ms", "3600000"))
            .await?;
        let again = admin.create_topic(NewTopic::new(&name, 3)).await;
        ensure!(
            again.as_ref().err().and_then(|e| e.code()) == Some(ErrorCode::TopicAlreadyExists),
            "{again:?}"
        );
        ensure!(admin.list_topics(false).await?.contains(&name));
        let description = admin.describe_topics(&[&name]).await?;
        let topic = &description[0];
        ensure!(topic.metadata.partition_count() == 3);
        ensure!(topic.metadata.partitions.iter().all(|p| p.leader >= 0));
        let retention = topic.configs.iter().find(|c| c.name == "retention.ms");
        ensure!(
            retention.and_then(|c| c.value.as_deref()) == Some("3600000"),
            "configs: {:?}",
            topic.configs
        );
        admin.delete_topic(&name).await?;
        ensure!(!admin.list_topics(false).await?.contains(&name));
        let missing = admin.describe_topics(&[&name]).await;
        ensure!(
            matches!(missing, Err(skiff_client::Error::UnknownTopic { .. })),
            "{missing:?}"
        );
    }
    Ok(())
}

/// ListOffsets reports the earliest and latest offsets and finds offsets by timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let client = broker.client(transport).await?;
        let admin = Admin::new(client.clone());
        let name = topic_name("offsets", transport);
        admin.create_topic(NewTopic::new(&name, 1)).await?;
        let producer = Producer::new(
            client,
            ProducerConfig {
                linger: Duration::ZERO,
                ..Default::default()
            },
        )
        .await?;
        for i in 0..20 {
            drop(
                producer
                    .send(ProducerRecord::new(&name, b"v").timestamp(1_000 + i))
                    .await?,
            );
        }
        producer.close().await?;
        let tp = TopicPartition::new(&name, 0);
        let listed = admin
            .list_offsets(&[(tp.clone(), OffsetSpec::Earliest)])
            .await?;
        ensure!(listed[&tp].offset == 0);
        let latest = admin
            .list_offsets(&[(tp.clone(), OffsetSpec::Latest)])
            .await?;
        ensure!(latest[&tp].offset == 20);
        let by_time = admin
            .list_offsets(&[(tp.clone(), OffsetSpec::Timestamp(1_007))])
            .await?;
        ensure!(
            by_time[&tp].offset == 7 && by_time[&tp].timestamp == 1_007,
            "{:?}",
            by_time[&tp]
        );
        let metadata = admin.metadata().await?;
        ensure!(!metadata.brokers.is_empty() && metadata.topics.contains_key(&name));
    }
    Ok(())
}

/// The metadata cache refreshes on its timer: a topic recreated with more
/// partitions by another client is seen without any error prompting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_refreshes_on_its_timer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let config = broker
        .client_config(skiff_client::Transport::Tcp)?
        .metadata_max_age(Duration::from_millis(200));
    let watcher = skiff_client::Client::connect(config).await?;
    let admin = Admin::new(broker.client(skiff_client::Transport::Tcp).await?);
    admin.create_topic(NewTopic::new("grows", 2)).await?;
    ensure!(watcher.topic("grows").await?.partition_count() == 2);
    admin.delete_topic("grows").await?;
    admin.create_topic(NewTopic::new("grows", 5)).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = watcher.cached_topic("grows").map(|t| t.partition_count());
        if seen == Some(5) {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the cache still says {seen:?} partitions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Looking a topic up (describe) never creates it, not even later when
/// the same client's producer asks for metadata with auto-creation on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_do_not_create_topics() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(skiff_client::Transport::Tcp).await?;
    let admin = Admin::new(client.clone());
    let missing = admin.describe_topics(&["looked-up"]).await;
    ensure!(
        matches!(missing, Err(skiff_client::Error::UnknownTopic { .. })),
        "{missing:?}"
    );
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    // The broker auto-creates topics a producer writes to (Kafka's default).
    producer
        .send(ProducerRecord::new("auto-created", b"v"))
        .await?
        .await?;
    producer.close().await?;
    client.refresh_metadata().await?;
    let topics = admin.list_topics(false).await?;
    ensure!(topics.contains(&"auto-created".to_string()), "{topics:?}");
    ensure!(
        !topics.contains(&"looked-up".to_string()),
        "describe created the topic: {topics:?}"
    );
    Ok(())
}
