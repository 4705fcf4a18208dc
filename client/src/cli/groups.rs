//! `skiff groups list|describe|reset-offsets|delete`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use skiff_client::consumer::{list_offsets, OffsetSpec};
use skiff_client::{Admin, Client, CommittedOffset, Error, TopicPartition};

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List groups: id, state, protocol type.
    List,
    /// Show a group's members and assignment, and per partition the
    /// committed offset, the log end offset and the lag.
    Describe {
        /// The group.
        group: String,
    },
    /// Overwrite a group's committed offsets (only while it has no members).
    ResetOffsets(ResetArgs),
    /// Delete groups and their committed offsets (only without members).
    Delete {
        /// Groups to delete.
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_timestamp", "to_offset"])))]
pub struct ResetArgs {
    /// The group.
    pub group: String,
    /// The topic whose offsets to reset.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Only these partitions (repeatable); default all.
    #[arg(long = "partition", short = 'p')]
    pub partitions: Vec<i32>,
    /// To the earliest offset still in the log.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the log end.
    #[arg(long)]
    pub to_latest: bool,
    /// To the first record at or after this timestamp (ms since the epoch).
    #[arg(long, value_name = "MS")]
    pub to_timestamp: Option<i64>,
    /// To this offset (clamped to the log's range, as Kafka's tool does).
    #[arg(long, value_name = "N")]
    pub to_offset: Option<i64>,
    /// Print the new offsets without committing them.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(client: Client, command: GroupsCommand) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match command {
        GroupsCommand::List => {
            for group in admin.list_groups().await? {
                let kind = if group.protocol_type.is_empty() {
                    "-"
                } else {
                    group.protocol_type.as_str()
                };
                println!("{}\t{}\t{}", group.group_id, group.state, kind);
            }
            Ok(())
        }
        GroupsCommand::Describe { group } => describe(&admin, &group).await,
        GroupsCommand::ResetOffsets(args) => reset(&admin, args).await,
        GroupsCommand::Delete { groups } => {
            let names: Vec<&str> = groups.iter().map(String::as_str).collect();
            for (name, result) in names.iter().zip(admin.delete_groups(&names).await?) {
                result.with_context(|| format!("cannot delete group {name:?}"))?;
                println!("deleted group {name}");
            }
            Ok(())
        }
    }
}

async fn describe(admin: &Admin, group: &str) -> anyhow::Result<()> {
    let description = admin
        .describe_groups(&[group])
        .await?
        .pop()
        .context("the coordinator did not describe the group")?;
    let committed = admin.list_group_offsets(group).await?;
    if description.state == "Dead" && committed.is_empty() {
        return Err(Error::kafka(
            skiff_protocol::ErrorCode::GroupIdNotFound,
            format!("describe group {group:?}"),
            None,
        )
        .into());
    }
    println!(
        "group {} state {} protocol {} members {}",
        description.group_id,
        description.state,
        if description.protocol.is_empty() {
            "-"
        } else {
            &description.protocol
        },
        description.members.len()
    );
    let mut owner: BTreeMap<TopicPartition, &str> = BTreeMap::new();
    for member in &description.members {
        let partitions: Vec<String> = member.assignment.iter().map(ToString::to_string).collect();
        println!(
            "member {} instance {} client {} host {} partitions {}",
            member.member_id,
            member.group_instance_id.as_deref().unwrap_or("-"),
            member.client_id,
            member.client_host,
            if partitions.is_empty() {
                "-".to_string()
            } else {
                partitions.join(",")
            }
        );
        for tp in &member.assignment {
            owner.insert(tp.clone(), member.member_id.as_str());
        }
    }
    let partitions: BTreeSet<TopicPartition> =
        committed.keys().chain(owner.keys()).cloned().collect();
    let asks: Vec<(TopicPartition, OffsetSpec)> = partitions
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let ends = if asks.is_empty() {
        BTreeMap::new()
    } else {
        list_offsets(admin.client(), &asks).await?
    };
    println!("TOPIC\tPARTITION\tCOMMITTED\tLOG-END\tLAG\tMEMBER");
    for tp in &partitions {
        let commit = committed.get(tp).map(|c| c.offset);
        let end = ends.get(tp).map(|l| l.offset);
        let lag = match (commit, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => "-".to_string(),
        };
        let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            tp.topic,
            tp.partition,
            show(commit),
            show(end),
            lag,
            owner.get(tp).copied().unwrap_or("-")
        );
    }
    Ok(())
}

async fn reset(admin: &Admin, args: ResetArgs) -> anyhow::Result<()> {
    let topic = admin.client().existing_topic(&args.topic).await?;
    let partitions: Vec<i32> = if args.partitions.is_empty() {
        topic.partitions.iter().map(|p| p.partition).collect()
    } else {
        for p in &args.partitions {
            if topic.partition(*p).is_none() {
                return Err(Error::UnknownPartition {
                    topic: args.topic.clone(),
                    partition: *p,
                    partitions: topic.partition_count(),
                }
                .into());
            }
        }
        args.partitions.clone()
    };
    let tps: Vec<TopicPartition> = partitions
        .iter()
        .map(|p| TopicPartition::new(&args.topic, *p))
        .collect();
    let lookup = |spec: OffsetSpec| {
        let asks: Vec<_> = tps.iter().map(|tp| (tp.clone(), spec)).collect();
        async move { list_offsets(admin.client(), &asks).await }
    };
    let earliest = lookup(OffsetSpec::Earliest).await?;
    let latest = lookup(OffsetSpec::Latest).await?;
    let by_time = match args.to_timestamp {
        Some(ts) => Some(lookup(OffsetSpec::Timestamp(ts)).await?),
        None => None,
    };
    let mut offsets = BTreeMap::new();
    for tp in &tps {
        let (Some(low), Some(high)) = (earliest.get(tp), latest.get(tp)) else {
            bail!("the broker did not report the offsets of {tp}");
        };
        let offset = if args.to_earliest {
            low.offset
        } else if args.to_latest {
            high.offset
        } else if let Some(found) = by_time.as_ref().and_then(|m| m.get(tp)) {
            // No record at or after the timestamp: the log end.
            if found.offset < 0 {
                high.offset
            } else {
                found.offset
            }
        } else {
            args.to_offset
                .unwrap_or(high.offset)
                .clamp(low.offset, high.offset)
        };
        offsets.insert(
            tp.clone(),
            CommittedOffset {
                offset,
                metadata: None,
            },
        );
    }
    if !args.dry_run {
        let results = admin.alter_group_offsets(&args.group, &offsets).await?;
        for (tp, result) in results {
            result.with_context(|| format!("cannot reset the offset of {tp}"))?;
        }
    }
    for (tp, committed) in &offsets {
        println!("{}\t{}\t{}", tp.topic, tp.partition, committed.offset);
    }
    Ok(())
}
