//! Sends keyed records and prints where each landed, then a bulk of
//! records in one call.
//!
//! ```sh
//! cargo run -p skiff-client --example producer -- 127.0.0.1:9092 events
//! ```

use std::time::Duration;

use skiff_client::{Client, ClientConfig, Compression, Producer, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let topic = args.next().unwrap_or_else(|| "events".to_string());

    let client = Client::connect(client_config(&bootstrap)?).await?;
    let config = ProducerConfig {
        linger: Duration::from_millis(10),
        compression: Compression::Lz4,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config).await?;

    let mut deliveries = Vec::new();
    for i in 0..10 {
        let key = format!("user-{}", i % 3);
        let value = format!("clicked button {i}");
        // `send` copies the record into its partition's batch and returns at once;
        // the future resolves when the broker has acknowledged the batch.
        let delivery = producer
            .send(ProducerRecord::new(&topic, value.as_bytes()).key(key.as_bytes()))
            .await?;
        deliveries.push((key, delivery));
    }
    for (key, delivery) in deliveries {
        let written = delivery.await?;
        println!(
            "{key} -> partition {} offset {}",
            written.partition, written.offset
        );
    }

    // Bulk: many records per call, one future for all of them.
    let values: Vec<String> = (0..1000).map(|i| format!("page view {i}")).collect();
    let records: Vec<ProducerRecord<'_>> = values
        .iter()
        .map(|value| ProducerRecord::new(&topic, value.as_bytes()))
        .collect();
    let report = producer.send_many(&records).await?.await;
    println!(
        "{} records in one call, {} not delivered",
        report.len(),
        report.failed_records()
    );
    report.into_result()?;
    producer.close().await?;
    Ok(())
}

/// `host:port` for TCP; for `quic://host:port`, the broker's certificate
/// comes from `SKIFF_QUIC_CERT` (skiffd writes it to DATA_DIR/quic-cert.pem).
fn client_config(bootstrap: &str) -> skiff_client::Result<ClientConfig> {
    let config = ClientConfig::new(bootstrap)?;
    Ok(match std::env::var_os("SKIFF_QUIC_CERT") {
        Some(path) => config.quic_trust(skiff_client::QuicTrust::CertificateFile(path.into())),
        None => config,
    })
}
