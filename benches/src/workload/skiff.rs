//! The engine's traits implemented with `skiff-client`.
//!
//! Every producer and consumer gets its own [`Client`], hence its own broker
//! connection, as separate application processes would have.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use skiff_client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, Deliveries, DeliveryFuture, NewTopic,
    OffsetReset, OffsetSpec, Producer, ProducerConfig, ProducerRecord, QuicTrust, TopicPartition,
};
use skiff_protocol::ErrorCode;

use super::driver::{
    Acked, Assignment, BenchConsumer, BenchProducer, BenchRecord, Connector, Delivered,
    PartitionRange, ProducerSettings,
};
use crate::cli::{Acks, Compression};

/// Creates clients for one cluster.
pub struct SkiffConnector {
    bootstrap: String,
    quic_trust: Option<PathBuf>,
    partition_fetch_bytes: i32,
    admin_client: Client,
}

impl SkiffConnector {
    /// Connects an admin client; `quic_cert` is the broker certificate to trust over QUIC.
    pub async fn connect(
        bootstrap: &str,
        quic_cert: Option<PathBuf>,
        partition_fetch_bytes: u64,
    ) -> Result<Self> {
        let partition_fetch_bytes = i32::try_from(partition_fetch_bytes)
            .context("--partition-fetch-bytes must fit in an i32")?;
        let admin_client = Client::connect(client_config(bootstrap, quic_cert.clone())?).await?;
        Ok(SkiffConnector {
            bootstrap: bootstrap.to_string(),
            quic_trust: quic_cert,
            partition_fetch_bytes,
            admin_client,
        })
    }

    async fn new_client(&self) -> Result<Client> {
        Ok(Client::connect(client_config(&self.bootstrap, self.quic_trust.clone())?).await?)
    }
}

fn client_config(bootstrap: &str, quic_cert: Option<PathBuf>) -> Result<ClientConfig> {
    let mut config = ClientConfig::new(bootstrap)?.client_id("skiff-bench");
    if let Some(cert) = quic_cert {
        config = config.quic_trust(QuicTrust::CertificateFile(cert));
    }
    Ok(config)
}

impl Connector for SkiffConnector {
    type Producer = SkiffProducer;
    type Consumer = SkiffConsumer;

    async fn create_topics(&self, topics: &[String], partitions: u32) -> Result<()> {
        let admin = Admin::new(self.admin_client.clone());
        let partitions_wire = i32::try_from(partitions).context("partition count too large")?;
        let wanted: Vec<NewTopic> = topics
            .iter()
            .map(|name| NewTopic::new(name.clone(), partitions_wire))
            .collect();
        let results = admin.create_topics(&wanted).await?;
        for (name, result) in topics.iter().zip(results) {
            match result {
                Ok(()) => {}
                Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {}
                Err(error) => return Err(error).with_context(|| format!("creating topic {name}")),
            }
            let metadata = self.admin_client.topic(name).await?;
            if metadata.partition_count() != partitions_wire {
                bail!(
                    "topic {name} has {} partitions, the run wants {partitions}",
                    metadata.partition_count()
                );
            }
        }
        Ok(())
    }

    async fn partition_ranges(&self, topics: &[String]) -> Result<Vec<PartitionRange>> {
        let mut ranges = Vec::new();
        for (topic_index, name) in topics.iter().enumerate() {
            let metadata = self.admin_client.topic(name).await?;
            let partitions: Vec<TopicPartition> = (0..metadata.partition_count())
                .map(|p| TopicPartition::new(name.clone(), p))
                .collect();
            let lookup = |spec: OffsetSpec| {
                partitions
                    .iter()
                    .map(|tp| (tp.clone(), spec))
                    .collect::<Vec<_>>()
            };
            let earliest = skiff_client::consumer::list_offsets(
                &self.admin_client,
                &lookup(OffsetSpec::Earliest),
            )
            .await?;
            let latest = skiff_client::consumer::list_offsets(
                &self.admin_client,
                &lookup(OffsetSpec::Latest),
            )
            .await?;
            for tp in &partitions {
                let start = earliest.get(tp).map(|listed| listed.offset);
                let end = latest.get(tp).map(|listed| listed.offset);
                let (Some(start_offset), Some(end_offset)) = (start, end) else {
                    bail!("no offsets listed for {tp}");
                };
                ranges.push(PartitionRange {
                    topic_index,
                    partition: tp.partition,
                    start_offset,
                    end_offset,
                });
            }
        }
        Ok(ranges)
    }

    async fn producer(
        &self,
        topics: &[String],
        settings: &ProducerSettings,
    ) -> Result<SkiffProducer> {
        let config = ProducerConfig {
            acks: match settings.acks {
                Acks::None => skiff_client::Acks::None,
                Acks::Leader => skiff_client::Acks::Leader,
                Acks::All => skiff_client::Acks::All,
            },
            linger: settings.linger,
            batch_size: usize::try_from(settings.batch_size_bytes)
                .context("batch size too large")?,
            max_in_flight: settings.max_in_flight,
            compression: match settings.compression {
                Compression::None => skiff_client::Compression::None,
                Compression::Gzip => skiff_client::Compression::Gzip,
                Compression::Snappy => skiff_client::Compression::Snappy,
                Compression::Lz4 => skiff_client::Compression::Lz4,
                Compression::Zstd => skiff_client::Compression::Zstd,
            },
            ..ProducerConfig::default()
        };
        // A batch must fit in a request.
        let config = ProducerConfig {
            max_request_size: config.max_request_size.max(config.batch_size + (64 << 10)),
            buffer_memory: usize::try_from(settings.buffer_memory_bytes)
                .context("buffer memory too large")?
                .max(4 * config.batch_size),
            ..config
        };
        let producer = Producer::new(self.new_client().await?, config).await?;
        Ok(SkiffProducer {
            producer,
            topics: topics.to_vec(),
        })
    }

    async fn consumer(&self, topics: &[String], assignment: &Assignment) -> Result<SkiffConsumer> {
        let mut config = ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_partition_fetch_bytes: self.partition_fetch_bytes,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        };
        if let Assignment::Group { group_id } = assignment {
            config.group_id = Some(group_id.clone());
        }
        let mut consumer = Consumer::new(self.new_client().await?, config);
        match assignment {
            Assignment::Manual(pairs) => {
                let mut partitions = Vec::with_capacity(pairs.len());
                for &(topic_index, partition) in pairs {
                    let Some(topic) = topics.get(topic_index) else {
                        bail!(
                            "assignment names topic index {topic_index} of {}",
                            topics.len()
                        );
                    };
                    partitions.push(TopicPartition::new(topic.clone(), partition));
                }
                consumer.assign(partitions);
            }
            Assignment::Group { .. } => {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&names).await?;
            }
        }
        Ok(SkiffConsumer {
            consumer,
            topics: topics.to_vec(),
            in_group: matches!(assignment, Assignment::Group { .. }),
        })
    }
}

/// A skiff-client producer for the run's topics.
pub struct SkiffProducer {
    producer: Producer,
    topics: Vec<String>,
}

/// The client's delivery future(s) of a call, with its errors turned into
/// the engine's.
pub enum SkiffAck {
    One(DeliveryFuture),
    Many(Deliveries),
}

impl Future for SkiffAck {
    type Output = Result<Acked>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            SkiffAck::One(delivery) => Pin::new(delivery).poll(context).map(|result| {
                result
                    .map(|metadata| Acked::One {
                        partition: metadata.partition,
                    })
                    .map_err(anyhow::Error::from)
            }),
            SkiffAck::Many(deliveries) => Pin::new(deliveries).poll(context).map(|report| {
                Ok(Acked::Many {
                    runs: report
                        .partition_runs()
                        .map(|(partition, records, delivered)| {
                            (partition, records as u64, delivered)
                        })
                        .collect(),
                    first_error: report.first_error().map(|error| format!("{error:#}")),
                })
            }),
        }
    }
}

fn record<'a>(topic: &'a str, sent: &'a BenchRecord, timestamp_ms: i64) -> ProducerRecord<'a> {
    let record = ProducerRecord::new(topic, &sent.value).timestamp(timestamp_ms);
    match sent.key.as_deref() {
        Some(key) => record.key(key),
        None => record,
    }
}

impl BenchProducer for SkiffProducer {
    type AckFuture = SkiffAck;

    async fn send(
        &mut self,
        topic_index: usize,
        records: &[BenchRecord],
        timestamp_ms: i64,
    ) -> Result<SkiffAck> {
        let Some(topic) = self.topics.get(topic_index) else {
            bail!("topic index {topic_index} of {}", self.topics.len());
        };
        match records {
            [one] => Ok(SkiffAck::One(
                self.producer.send(record(topic, one, timestamp_ms)).await?,
            )),
            many => {
                let many: Vec<ProducerRecord<'_>> = many
                    .iter()
                    .map(|sent| record(topic, sent, timestamp_ms))
                    .collect();
                Ok(SkiffAck::Many(self.producer.send_many(&many).await?))
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(self.producer.flush().await?)
    }
}

/// A skiff-client consumer, manually assigned or in a group.
pub struct SkiffConsumer {
    consumer: Consumer,
    topics: Vec<String>,
    in_group: bool,
}

impl BenchConsumer for SkiffConsumer {
    async fn poll<F>(&mut self, max_wait: Duration, mut visit: F) -> Result<usize>
    where
        F: FnMut(Delivered<'_>) + Send,
    {
        let topics = &self.topics;
        // Few topics per run: a linear search beats hashing the name, and
        // a run of records of one partition shares its topic's string.
        let mut last_topic: Option<(usize, usize, usize)> = None;
        let shown = self
            .consumer
            .poll_with(max_wait, |record| {
                let key = (record.topic.as_ptr() as usize, record.topic.len());
                let topic_index = match last_topic {
                    Some((ptr, len, index)) if (ptr, len) == key => index,
                    _ => {
                        let index = topics
                            .iter()
                            .position(|name| **name == *record.topic)
                            .unwrap_or(usize::MAX);
                        last_topic = Some((key.0, key.1, index));
                        index
                    }
                };
                visit(Delivered {
                    topic_index,
                    partition: record.partition,
                    offset: record.offset,
                    timestamp_ms: record.timestamp,
                    key: record.key,
                    value: record.value.unwrap_or_default(),
                });
            })
            .await?;
        Ok(shown)
    }

    /// In a group, commits what was consumed and leaves, so the group's
    /// next member does not wait out this one's session timeout.
    async fn close(self) -> Result<()> {
        if self.in_group {
            self.consumer.close().await?;
        }
        Ok(())
    }
}
