//! Creates a topic with a config, describes it, lists offsets, deletes it.
//!
//! ```sh
//! cargo run -p skiff-client --example admin -- 127.0.0.1:9092
//! ```

use skiff_client::{Admin, Client, ClientConfig, NewTopic, OffsetSpec, TopicPartition};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let admin = Admin::new(Client::connect(client_config(&bootstrap)?).await?);

    admin
        .create_topic(NewTopic::new("admin-example", 3).config("retention.ms", "86400000"))
        .await?;
    for description in admin.describe_topics(&["admin-example"]).await? {
        println!(
            "{} has {} partitions",
            description.metadata.name,
            description.metadata.partition_count()
        );
        for config in description.configs.iter().filter(|c| !c.is_default) {
            println!("  {} = {:?}", config.name, config.value);
        }
    }
    let ends = admin
        .list_offsets(&[(TopicPartition::new("admin-example", 0), OffsetSpec::Latest)])
        .await?;
    println!("log end offsets: {ends:?}");
    println!("topics: {:?}", admin.list_topics(false).await?);
    admin.delete_topic("admin-example").await?;
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
