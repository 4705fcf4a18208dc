//! Consumer groups with the Python clients: kafka-python (its own
//! implementation of the group protocol) and confluent-kafka (librdkafka
//! 2.16) subscribe, consume, commit and leave; a second member of the same
//! group resumes from the committed offsets and reads nothing twice.

use anyhow::{ensure, Context};
use skiff_client::{Producer, ProducerConfig, ProducerRecord};
use skiff_tests::python::{ensure_python_clients, run_python_client, PythonClient};
use skiff_tests::{create_topic, skiffd_bin, Broker};
use std::collections::BTreeMap;

const PARTITIONS: i32 = 4;
const RECORDS: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_group_consumers_commit_and_resume() -> anyhow::Result<()> {
    ensure_python_clients()?;
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(
        skiffd_bin!(),
        dir.path(),
        &["--group-initial-rebalance-delay-ms", "0"],
    )?;
    let client = broker.client(skiff_client::Transport::Tcp).await?;
    let bootstrap = broker.tcp.to_string();
    let topic = "py-groups";
    create_topic(&client, topic, PARTITIONS).await?;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let key = format!("k{i}");
        let record = ProducerRecord::new(topic, b"v".as_slice()).key(key.as_bytes());
        deliveries.push(producer.send(record).await?);
    }
    producer.flush().await?;
    // Log end offset per partition: what a group that read everything commits.
    let mut ends: BTreeMap<String, i64> = BTreeMap::new();
    for delivery in deliveries {
        let metadata = delivery.await?;
        let end = ends.entry(metadata.partition.to_string()).or_insert(0);
        *end = (*end).max(metadata.offset + 1);
    }
    ensure!(
        ends.len() == PARTITIONS as usize,
        "keys reach every partition"
    );
    for python in PythonClient::ALL {
        let group = format!("group-{}", python.name());
        let count = RECORDS.to_string();
        let rows = run_python_client(python, "group", &bootstrap, topic, &[&count, &group])?;
        ensure!(rows.len() == 1, "{rows:?}");
        let row = &rows[0];
        ensure!(
            row["consumed"].as_u64() == Some(RECORDS as u64),
            "{}: {row}",
            python.name()
        );
        ensure!(
            row["extra"] == 0,
            "{} read records twice: {row}",
            python.name()
        );
        let committed: BTreeMap<String, i64> = row["committed"]
            .as_object()
            .context("committed")?
            .iter()
            .map(|(p, o)| Ok((p.clone(), o.as_i64().context("offset")?)))
            .collect::<anyhow::Result<_>>()?;
        ensure!(
            committed == ends,
            "{}: committed {committed:?}, log ends {ends:?}",
            python.name()
        );
    }
    Ok(())
}
