//! Our murmur2 partitioning agrees with librdkafka's Java-compatible
//! partitioner (kcat with `topic.partitioner=murmur2_random`), in both
//! directions.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};
use skiff_client::{Producer, ProducerConfig, ProducerRecord, Transport};
use skiff_protocol::partition::partition_for_key;
use skiff_tests::{consume_all, create_topic, kcat_available, skiffd_bin, Broker};

/// Keys kcat produced land where our partitioner says; keys we produced
/// land where kcat's consumer finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_partitions_agree_with_kcat() -> anyhow::Result<()> {
    ensure!(
        kcat_available(),
        "kcat is required for the Kafka compatibility tests"
    );
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, "kcat-keys", 7).await?;
    let input: String = (0..200)
        .map(|i| format!("user-{i}:payload {i}\n"))
        .collect();
    let mut kcat = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &broker.tcp.to_string(),
            "-t",
            "kcat-keys",
            "-K:",
            "-X",
            "topic.partitioner=murmur2_random",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    kcat.stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let status = kcat.wait_with_output()?;
    ensure!(
        status.status.success(),
        "kcat -P failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let records = consume_all(&client, "kcat-keys", 200, Duration::from_secs(20)).await?;
    ensure!(
        records.len() == 200,
        "read {} of kcat's 200 records",
        records.len()
    );
    for record in &records {
        let key = record.key.as_deref().context("kcat record without key")?;
        ensure!(
            record.partition == partition_for_key(key, 7),
            "{} in {}",
            String::from_utf8_lossy(key),
            record.partition
        );
    }

    create_topic(&client, "skiff-keys", 7).await?;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    for i in 0..200 {
        let key = format!("order-{i}");
        drop(
            producer
                .send(ProducerRecord::new("skiff-keys", b"x").key(key.as_bytes()))
                .await?,
        );
    }
    producer.close().await?;
    let output = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &broker.tcp.to_string(),
            "-t",
            "skiff-keys",
            "-e",
            "-q",
            "-f",
            "%k %p\\n",
        ])
        .output()?;
    ensure!(
        output.status.success(),
        "kcat -C failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    let mut count = 0;
    for line in text.lines() {
        let (key, partition) = line.rsplit_once(' ').context("kcat line")?;
        ensure!(
            partition.parse::<i32>()? == partition_for_key(key.as_bytes(), 7),
            "{line}"
        );
        count += 1;
    }
    ensure!(count == 200, "kcat read {count} of 200");
    Ok(())
}
