//! `skiff topics create|list|describe|delete`.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use skiff_client::admin::{Admin, NewTopic};
use skiff_client::Client;

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topic names.
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
    },
    /// Show partitions, leaders, replicas and configs.
    Describe {
        /// Topics to describe.
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Delete topics.
    Delete {
        /// Topics to delete.
        #[arg(required = true)]
        topics: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub partitions: i32,
    /// Replicas per partition (-1: the broker's default).
    #[arg(long, short = 'r', default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i16,
    /// Topic config KEY=VALUE, e.g. retention.ms=60000 (repeatable).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
    pub configs: Vec<String>,
    /// Succeed if the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
}

pub async fn run(client: Client, command: TopicsCommand) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match command {
        TopicsCommand::Create(args) => create(&admin, args).await,
        TopicsCommand::List { internal } => {
            for name in admin.list_topics(internal).await? {
                println!("{name}");
            }
            Ok(())
        }
        TopicsCommand::Describe { topics } => {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            for description in admin.describe_topics(&names).await? {
                let topic = &description.metadata;
                println!(
                    "topic {} partitions {}",
                    topic.name,
                    topic.partition_count()
                );
                for p in &topic.partitions {
                    println!(
                        "  partition {} leader {} replicas {:?} isr {:?}",
                        p.partition, p.leader, p.replicas, p.isr
                    );
                }
                for config in description.configs.iter().filter(|c| !c.is_default) {
                    println!(
                        "  config {}={}",
                        config.name,
                        config.value.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        TopicsCommand::Delete { topics } => {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            for (name, result) in names.iter().zip(admin.delete_topics(&names).await?) {
                result.with_context(|| format!("cannot delete topic {name:?}"))?;
                println!("deleted topic {name}");
            }
            Ok(())
        }
    }
}

async fn create(admin: &Admin, args: CreateArgs) -> anyhow::Result<()> {
    let mut configs = BTreeMap::new();
    for pair in &args.configs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--config {pair:?} is not KEY=VALUE");
        };
        configs.insert(key.to_string(), value.to_string());
    }
    let topic = NewTopic {
        name: args.name.clone(),
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        configs,
    };
    match admin.create_topic(topic).await {
        Ok(()) => {
            println!(
                "created topic {} with {} partition(s)",
                args.name, args.partitions
            );
            Ok(())
        }
        Err(error)
            if args.if_not_exists
                && error.code() == Some(skiff_protocol::ErrorCode::TopicAlreadyExists) =>
        {
            println!("topic {} already exists", args.name);
            Ok(())
        }
        Err(error) => Err(error).with_context(|| format!("cannot create topic {:?}", args.name)),
    }
}
