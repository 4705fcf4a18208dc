//! skiff-client: Producer, Consumer and Admin for Skiff and any
//! Kafka-protocol broker, over TCP or QUIC.
//!
//! Everything starts from a [`Client`], which holds the connections (one per
//! broker, shared by everything built on the client) and the cluster
//! metadata cache. Bootstrap addresses are `host:port` for TCP and
//! `quic://host:port` for QUIC; QUIC brokers use self-signed certificates,
//! trusted by pinning ([`QuicTrust`]).
//!
//! ```no_run
//! # async fn demo() -> skiff_client::Result<()> {
//! use skiff_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
//!
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9092")?).await?;
//! let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
//! let delivery = producer.send(ProducerRecord::new("events", b"hello").key(b"user-1")).await?;
//! let written = delivery.await?;
//! println!("partition {} offset {}", written.partition, written.offset);
//! producer.close().await?;
//! # Ok(()) }
//! ```
//!
//! - [`producer`]: batching, idempotent producer with murmur2 partitioning.
//! - [`consumer`]: consumer with pipelined fetches, manual assignment or
//!   group subscription ([`Consumer::subscribe`]).
//! - [`group`]: consumer groups: assignors, the embedded consumer protocol,
//!   coordinator lookup and offset commits.
//! - [`admin`]: topics, offsets, cluster metadata.
//! - [`net`]: addresses, TCP and QUIC transports, version negotiation.
//! - [`allocator`]: an opt-in glibc setting for bulk transfers.

#![warn(missing_docs)]

pub mod admin;
pub mod allocator;
pub mod client;
pub mod consumer;
pub mod error;
pub mod group;
pub mod metadata;
pub mod net;
pub mod producer;

pub use admin::{Admin, ConfigEntry, NewTopic, TopicDescription};
pub use client::{Client, ClientConfig};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, OffsetSpec, RebalanceListener,
    RecordView, SeekTo, TopicPartition,
};
pub use error::{Error, Result};
pub use group::{
    CommittedOffset, GroupCoordinator, GroupDescription, GroupListing, MemberDescription,
};
pub use metadata::{ClusterMetadata, PartitionMetadata, TopicMetadata};
pub use net::{BrokerAddress, QuicTrust, Transport};
pub use producer::{
    Acks, Deliveries, DeliveryFuture, DeliveryReport, Partitioner, Producer, ProducerConfig,
    ProducerRecord, RecordMetadata,
};
pub use skiff_protocol::batch::Compression;
