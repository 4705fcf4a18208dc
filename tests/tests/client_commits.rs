//! Manual commits of a group member: `commit_async`, `commit_offsets` with
//! a metadata string, and `committed`, read back by a second client.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::ensure;
use skiff_client::group::CommittedOffset;
use skiff_client::{Admin, Consumer, TopicPartition, Transport};
use skiff_tests::groups::{group_config, produce, FAST_GROUPS};
use skiff_tests::{create_topic, skiffd_bin, Broker};

const TOPIC: &str = "manual-commits";
const GROUP: &str = "manual";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_async_and_metadata_commits_are_read_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, TOPIC, 2).await?;
    produce(&client, TOPIC, 0, 40).await?;

    let mut consumer = Consumer::new(
        client.clone(),
        skiff_client::ConsumerConfig {
            enable_auto_commit: false,
            ..group_config(GROUP, "range")
        },
    );
    consumer.subscribe(&[TOPIC]).await?;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut polled = 0;
    while polled < 40 {
        ensure!(Instant::now() < deadline, "polled {polled} of 40");
        for record in consumer.poll(Duration::from_millis(200)).await? {
            let end = ends.entry(record.partition).or_default();
            *end = (*end).max(record.offset + 1);
            polled += 1;
        }
    }
    let partitions: Vec<TopicPartition> = (0..2).map(|p| TopicPartition::new(TOPIC, p)).collect();
    // Nothing is committed without auto-commit until the application says so.
    let before = consumer.committed(&partitions).await?;
    ensure!(before.values().all(Option::is_none), "{before:?}");

    consumer.commit_async().await??;
    let committed = consumer.committed(&partitions).await?;
    for tp in &partitions {
        let end = ends.get(&tp.partition).copied().unwrap_or(0);
        ensure!(
            committed[tp] == Some(end) || (end == 0 && committed[tp].is_none()),
            "{tp:?}: committed {:?}, consumed up to {end}",
            committed[tp]
        );
    }

    // An explicit commit with the application's metadata, the same one twice
    // (a retried commit): both succeed and leave one state.
    let checkpoint = BTreeMap::from([(
        TopicPartition::new(TOPIC, 0),
        CommittedOffset {
            offset: 3,
            metadata: Some("checkpoint-7".to_owned()),
        },
    )]);
    consumer.commit_offsets(&checkpoint).await?;
    consumer.commit_offsets(&checkpoint).await?;
    let seen_by_admin = Admin::new(client.clone()).list_group_offsets(GROUP).await?;
    let p0 = &seen_by_admin[&TopicPartition::new(TOPIC, 0)];
    ensure!(
        p0.offset == 3 && p0.metadata.as_deref() == Some("checkpoint-7"),
        "{p0:?}"
    );
    consumer.close().await?;
    Ok(())
}
