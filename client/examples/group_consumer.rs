//! A consumer group member: joins GROUP, consumes its share of TOPIC's
//! partitions, commits as it goes, and leaves the group on Ctrl-C. Run it
//! in two or three terminals to watch the partitions being shared out.
//!
//! ```sh
//! cargo run -p skiff-client --example group_consumer -- 127.0.0.1:9092 events billing
//! ```

use std::time::Duration;

use skiff_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, RebalanceListener, TopicPartition,
};

/// Prints what each rebalance gives and takes.
struct Announce;

impl RebalanceListener for Announce {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        println!("assigned: {}", list(partitions));
    }
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        // With auto-commit on, their positions were just committed.
        println!("revoked: {}", list(partitions));
    }
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        println!(
            "lost (another member may have them already): {}",
            list(partitions)
        );
    }
}

fn list(partitions: &[TopicPartition]) -> String {
    let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
    names.join(", ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let topic = args.next().unwrap_or_else(|| "events".to_string());
    let group = args.next().unwrap_or_else(|| "example-group".to_string());

    let client = Client::connect(ClientConfig::new(&bootstrap)?).await?;
    let config = ConsumerConfig {
        group_id: Some(group),
        // Where to start in partitions the group has no commit for.
        auto_offset_reset: OffsetReset::Earliest,
        // Incremental rebalancing: partitions that stay keep being consumed.
        partition_assignment_strategy: vec!["cooperative-sticky".into()],
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config);
    consumer
        .subscribe_with_listener(&[&topic], Box::new(Announce))
        .await?;

    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let records = tokio::select! {
            records = consumer.poll(Duration::from_secs(1)) => records?,
            _ = &mut stop => break,
        };
        for record in records {
            let value = record.value.as_deref().map(String::from_utf8_lossy);
            println!(
                "{}-{}@{} {value:?}",
                record.topic, record.partition, record.offset
            );
        }
        // Positions are committed every auto_commit_interval and on
        // revocation; `consumer.commit_sync().await?` commits right now.
    }
    // Commits the positions and leaves, so the others take over at once.
    consumer.close().await?;
    Ok(())
}
