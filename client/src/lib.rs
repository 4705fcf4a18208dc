//! skiff-client: Producer, Consumer and Admin for Skiff and any
//! Kafka-protocol broker, over TCP or QUIC.
//!
//! Everything starts from a [`Client`], which holds the connections (one per
//! broker, shared) and the cluster metadata cache:
//!
//! ```no_run
//! # async fn demo() -> skiff_client::Result<()> {
//! use skiff_client::{Client, ClientConfig};
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9092")?).await?;
//! let topics = client.metadata().await?.topics;
//! # Ok(()) }
//! ```

pub mod error;
pub mod net;

pub use error::{Error, Result};
pub mod admin;
pub mod client;
pub mod consumer;
pub mod metadata;
pub mod producer;

pub use admin::{Admin, ConfigEntry, NewTopic, TopicDescription};
pub use client::{Client, ClientConfig};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, OffsetSpec, SeekTo, TopicPartition,
};
pub use metadata::{ClusterMetadata, PartitionMetadata, TopicMetadata};
pub use net::{BrokerAddress, QuicTrust, Transport};
pub use producer::{
    Acks, DeliveryFuture, Partitioner, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use skiff_protocol::batch::Compression;
