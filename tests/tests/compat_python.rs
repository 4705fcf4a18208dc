//! Compatibility with two more unmodified Kafka clients besides kcat:
//! kafka-python (a pure-Python protocol implementation) and confluent-kafka
//! (librdkafka 2.16). Records cross in both directions, in every codec, and
//! are checked byte for byte; keyed placement must match murmur2.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context};
use skiff_client::{Compression, Producer, ProducerConfig, ProducerRecord};
use skiff_protocol::partition::partition_for_key;
use skiff_tests::python::{ensure_python_clients, run_python_client, PythonClient};
use skiff_tests::{consume_all, create_topic, skiffd_bin, Broker};

const PARTITIONS: i32 = 6;
const RECORDS: usize = 150;

fn expected_value(client: &str, i: usize) -> String {
    format!("{client}-{i}-{}", "x".repeat(100))
}

/// Each Python client produces keyed records with headers in every codec;
/// skiff-client reads back exactly what was acknowledged, where murmur2 puts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_produce_every_codec_and_skiff_reads_it() -> anyhow::Result<()> {
    ensure_python_clients()?;
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(skiff_client::Transport::Tcp).await?;
    let bootstrap = broker.tcp.to_string();
    for python in PythonClient::ALL {
        for codec in Compression::ALL {
            let topic = format!("py-{}-{}", python.name(), codec.name());
            create_topic(&client, &topic, PARTITIONS).await?;
            let count = RECORDS.to_string();
            let acked = run_python_client(
                python,
                "produce",
                &bootstrap,
                &topic,
                &[&count, codec.name()],
            )?;
            ensure!(acked.len() == RECORDS, "{topic}: {} acks", acked.len());
            // index -> (partition, offset) as the producer was told.
            let mut placed = BTreeMap::new();
            for ack in &acked {
                let row: (usize, i32, i64) = serde_json::from_value(ack.clone())?;
                placed.insert(row.0, (row.1, row.2));
            }
            let records = consume_all(&client, &topic, RECORDS, Duration::from_secs(20)).await?;
            ensure!(records.len() == RECORDS, "{topic}: read {}", records.len());
            for record in &records {
                let key = record.key.as_deref().context("record without key")?;
                let index: usize = std::str::from_utf8(&key[1..])?.parse()?;
                ensure!(
                    placed.get(&index) == Some(&(record.partition, record.offset)),
                    "{topic}: record {index} at {}/{}, acked at {:?}",
                    record.partition,
                    record.offset,
                    placed.get(&index)
                );
                ensure!(record.partition == partition_for_key(key, PARTITIONS));
                ensure!(
                    record.value.as_deref()
                        == Some(expected_value(python.name(), index).as_bytes()),
                    "{topic}: value of record {index}"
                );
                let headers = record
                    .headers
                    .clone()
                    .collect::<Result<Vec<_>, _>>()
                    .context("decoding headers")?;
                ensure!(headers.len() == 1 && &headers[0].key[..] == b"i");
                ensure!(headers[0].value.as_deref() == Some(index.to_string().as_bytes()));
            }
        }
    }
    Ok(())
}

/// Records skiff-client wrote in every codec read back identically by both
/// Python clients, offsets and headers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_read_what_skiff_wrote() -> anyhow::Result<()> {
    ensure_python_clients()?;
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let client = broker.client(skiff_client::Transport::Tcp).await?;
    let bootstrap = broker.tcp.to_string();
    for codec in Compression::ALL {
        let topic = format!("skiff-{}", codec.name());
        create_topic(&client, &topic, PARTITIONS).await?;
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                compression: codec,
                linger: Duration::from_millis(2),
                ..ProducerConfig::default()
            },
        )
        .await?;
        let mut expected = BTreeMap::new();
        let mut deliveries = Vec::new();
        for i in 0..RECORDS {
            let key = format!("k{i}");
            let value = expected_value("skiff", i);
            let header = i.to_string();
            let headers: [(&[u8], Option<&[u8]>); 1] = [(b"i", Some(header.as_bytes()))];
            let record = ProducerRecord::new(&topic, value.as_bytes())
                .key(key.as_bytes())
                .headers(&headers);
            deliveries.push((i, producer.send(record).await?));
            expected.insert(i, (key, value));
        }
        producer.flush().await?;
        let mut placed = BTreeMap::new();
        for (i, delivery) in deliveries {
            let metadata = delivery.await?;
            placed.insert((metadata.partition, metadata.offset), i);
        }
        for python in PythonClient::ALL {
            let count = RECORDS.to_string();
            let rows = run_python_client(python, "consume", &bootstrap, &topic, &[&count])?;
            ensure!(
                rows.len() == RECORDS,
                "{} read {}",
                python.name(),
                rows.len()
            );
            for row in rows {
                let partition = row["partition"].as_i64().context("partition")? as i32;
                let offset = row["offset"].as_i64().context("offset")?;
                let i = *placed.get(&(partition, offset)).with_context(|| {
                    format!("{} read unknown {partition}/{offset}", python.name())
                })?;
                let (key, value) = &expected[&i];
                ensure!(row["key"] == key.as_str(), "{}: key at {i}", python.name());
                ensure!(
                    row["value"] == value.as_str(),
                    "{}: value at {i}",
                    python.name()
                );
                ensure!(
                    row["headers"] == serde_json::json!([["i", i.to_string()]]),
                    "{}: headers at {i}: {}",
                    python.name(),
                    row["headers"]
                );
            }
        }
    }
    Ok(())
}

/// Both Python admin clients create, list, describe (configs too) and
/// delete a topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_admin_clients_manage_topics() -> anyhow::Result<()> {
    ensure_python_clients()?;
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for python in PythonClient::ALL {
        let topic = format!("admin-{}", python.name());
        let rows = run_python_client(python, "admin", &broker.tcp.to_string(), &topic, &["4"])?;
        ensure!(rows == vec![serde_json::json!({"ok": true})], "{rows:?}");
    }
    Ok(())
}
