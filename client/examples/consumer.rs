//! Reads every partition of a topic from the beginning and prints records.
//!
//! ```sh
//! cargo run -p skiff-client --example consumer -- 127.0.0.1:9092 events
//! ```

use std::time::Duration;

use skiff_client::{Client, ClientConfig, Consumer, ConsumerConfig, SeekTo};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let topic = args.next().unwrap_or_else(|| "events".to_string());

    let client = Client::connect(client_config(&bootstrap)?).await?;
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.assign_topics(&[&topic]).await?;
    consumer.seek_all(SeekTo::Beginning).await?;

    let mut idle_polls = 0;
    while idle_polls < 3 {
        // The next fetch is already in flight while we print these.
        let records = consumer.poll(Duration::from_secs(1)).await?;
        if records.is_empty() {
            idle_polls += 1;
        }
        for record in records {
            let key = record.key.as_deref().map(String::from_utf8_lossy);
            let value = record.value.as_deref().map(String::from_utf8_lossy);
            println!(
                "{}-{}@{} key={key:?} value={value:?}",
                record.topic, record.partition, record.offset
            );
        }
    }
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
