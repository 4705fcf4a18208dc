//! `skiff consume TOPIC`: records to stdout, one per line.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use skiff_client::{
    Client, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, OffsetSpec, SeekTo,
    TopicPartition,
};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Where to start: beginning, end, offset:N, or timestamp:MS (ms since the epoch).
    #[arg(long, short = 'f', default_value = "end", value_parser = parse_start)]
    pub from: SeekTo,
    /// Read only these partitions (repeatable); default all.
    #[arg(long = "partition", short = 'p')]
    pub partitions: Vec<i32>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub max_messages: Option<u64>,
    /// Stop at the end of the log as it was at start.
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// Stop after this long without records (ms).
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Print each record as JSON: {"partition","offset","timestamp","key","value"}.
    #[arg(long)]
    pub json: bool,
    /// Print the key before the value, separated by SEP.
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Consume as a member of this consumer group: partitions are assigned
    /// by the group, reading resumes from the group's committed offsets
    /// (--from applies only where there are none: beginning or end), and
    /// offsets are committed while running and on exit.
    #[arg(long, short = 'g', conflicts_with = "partitions")]
    pub group: Option<String>,
    /// Assignors offered to the group, in order of preference (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "range,cooperative-sticky",
        requires = "group"
    )]
    pub assignment_strategy: Vec<String>,
    /// Static membership id for the group (group.instance.id).
    #[arg(long, requires = "group")]
    pub group_instance_id: Option<String>,
    /// Session timeout for the group, in milliseconds.
    #[arg(long, default_value_t = 45_000, requires = "group")]
    pub session_timeout_ms: u64,
}

fn parse_start(text: &str) -> Result<SeekTo, String> {
    let number = |n: &str, what: &str| {
        n.parse::<i64>()
            .map_err(|_| format!("{n:?} is not a valid {what}"))
    };
    match text {
        "beginning" | "earliest" => Ok(SeekTo::Beginning),
        "end" | "latest" => Ok(SeekTo::End),
        _ => {
            if let Some(n) = text.strip_prefix("offset:") {
                Ok(SeekTo::Offset(number(n, "offset")?))
            } else if let Some(n) = text.strip_prefix("timestamp:") {
                Ok(SeekTo::Timestamp(number(n, "timestamp")?))
            } else {
                Err(format!(
                    "{text:?}: use beginning, end, offset:N or timestamp:MS"
                ))
            }
        }
    }
}

pub async fn run(client: Client, args: ConsumeArgs) -> anyhow::Result<()> {
    if args.group.is_some() {
        return run_group(client, args).await;
    }
    let topic = client.existing_topic(&args.topic).await?;
    let partitions: Vec<i32> = if args.partitions.is_empty() {
        topic.partitions.iter().map(|p| p.partition).collect()
    } else {
        for p in &args.partitions {
            if topic.partition(*p).is_none() {
                return Err(skiff_client::Error::UnknownPartition {
                    topic: args.topic.clone(),
                    partition: *p,
                    partitions: topic.partition_count(),
                }
                .into());
            }
        }
        args.partitions.clone()
    };
    let assignment: Vec<TopicPartition> = partitions
        .iter()
        .map(|p| TopicPartition::new(&args.topic, *p))
        .collect();
    let ends: BTreeMap<TopicPartition, i64> = if args.exit_at_end {
        let asks: Vec<_> = assignment
            .iter()
            .map(|tp| (tp.clone(), OffsetSpec::Latest))
            .collect();
        skiff_client::consumer::list_offsets(&client, &asks)
            .await?
            .into_iter()
            .map(|(tp, listed)| (tp, listed.offset))
            .collect()
    } else {
        BTreeMap::new()
    };
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config);
    consumer.assign(assignment.clone());
    for tp in &assignment {
        consumer
            .seek(tp, args.from)
            .await
            .with_context(|| format!("cannot seek {tp}"))?;
    }
    let mut sink = Sink::new(&args);
    loop {
        if sink.done() {
            break;
        }
        if args.exit_at_end
            && assignment
                .iter()
                .all(|tp| consumer.position(tp).unwrap_or(-1) >= ends.get(tp).copied().unwrap_or(0))
        {
            break;
        }
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if !sink.write(&records)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Consumes as a group member until a stop condition or Ctrl-C, then
/// commits and leaves the group.
async fn run_group(client: Client, args: ConsumeArgs) -> anyhow::Result<()> {
    let topic = client.existing_topic(&args.topic).await?;
    let auto_offset_reset = match args.from {
        SeekTo::Beginning => OffsetReset::Earliest,
        SeekTo::End => OffsetReset::Latest,
        SeekTo::Offset(_) | SeekTo::Timestamp(_) => bail!(
            "--from offset:N and timestamp:MS do not apply to a group; \
             use `skiff groups reset-offsets` while the group is empty"
        ),
    };
    let ends: BTreeMap<TopicPartition, i64> = if args.exit_at_end {
        let asks: Vec<_> = topic
            .partitions
            .iter()
            .map(|p| {
                (
                    TopicPartition::new(&args.topic, p.partition),
                    OffsetSpec::Latest,
                )
            })
            .collect();
        skiff_client::consumer::list_offsets(&client, &asks)
            .await?
            .into_iter()
            .map(|(tp, listed)| (tp, listed.offset))
            .collect()
    } else {
        BTreeMap::new()
    };
    let session_timeout = Duration::from_millis(args.session_timeout_ms);
    let config = ConsumerConfig {
        auto_offset_reset,
        group_id: args.group.clone(),
        group_instance_id: args.group_instance_id.clone(),
        session_timeout,
        heartbeat_interval: (session_timeout / 3).min(Duration::from_secs(3)),
        partition_assignment_strategy: args.assignment_strategy.clone(),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config);
    consumer.subscribe(&[&args.topic]).await?;
    let mut sink = Sink::new(&args);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let outcome = loop {
        if sink.done() {
            break Ok(());
        }
        let assignment = consumer.assignment();
        if args.exit_at_end
            && consumer.group_generation().is_some()
            && !assignment.is_empty()
            && assignment
                .iter()
                .all(|tp| consumer.position(tp).unwrap_or(-1) >= ends.get(tp).copied().unwrap_or(0))
        {
            break Ok(());
        }
        let records = tokio::select! {
            records = consumer.poll(Duration::from_millis(500)) => records,
            _ = &mut interrupted => break Ok(()),
        };
        let records = match records {
            Ok(records) => records,
            Err(error) => break Err(error.into()),
        };
        // Records beyond --max-messages are not printed: move back so that
        // the committed offsets do not claim them.
        let keep = sink.room(records.len());
        let mut rewind: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for record in &records[keep..] {
            let tp = TopicPartition::new(&args.topic, record.partition);
            rewind.entry(tp).or_insert(record.offset);
        }
        let mut rewound = Ok(());
        for (tp, offset) in rewind {
            if let Err(error) = consumer.seek(&tp, SeekTo::Offset(offset)).await {
                rewound = Err(error);
                break;
            }
        }
        if let Err(error) = rewound {
            break Err(error.into());
        }
        match sink.write(&records[..keep]) {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    let closed = consumer
        .close()
        .await
        .context("cannot commit and leave the group");
    outcome.and(closed)
}

/// Where records go: stdout, with the stop conditions shared by both modes.
struct Sink<'a> {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    printed: u64,
    last_record: Instant,
    args: &'a ConsumeArgs,
}

impl<'a> Sink<'a> {
    fn new(args: &'a ConsumeArgs) -> Self {
        Sink {
            out: std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock()),
            printed: 0,
            last_record: Instant::now(),
            args,
        }
    }

    /// How many of `available` records may still be printed.
    fn room(&self, available: usize) -> usize {
        match self.args.max_messages {
            Some(max) => available
                .min(usize::try_from(max.saturating_sub(self.printed)).unwrap_or(usize::MAX)),
            None => available,
        }
    }

    /// Whether a stop condition (record count, idle time) is met.
    fn done(&self) -> bool {
        if self
            .args
            .max_messages
            .is_some_and(|max| self.printed >= max)
        {
            return true;
        }
        self.args
            .idle_timeout_ms
            .is_some_and(|idle| self.last_record.elapsed() >= Duration::from_millis(idle))
    }

    /// Prints records; false once stdout is closed (a broken pipe ends quietly).
    fn write(&mut self, records: &[ConsumerRecord]) -> anyhow::Result<bool> {
        if !records.is_empty() {
            self.last_record = Instant::now();
        }
        let separator = self.args.key_separator.as_deref();
        for record in records {
            if self
                .args
                .max_messages
                .is_some_and(|max| self.printed >= max)
            {
                break;
            }
            let written = if self.args.json {
                write_json(&mut self.out, record)
            } else {
                write_plain(&mut self.out, record, separator)
            };
            if let Err(error) = written {
                if error.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(false);
                }
                bail!("cannot write to stdout: {error}");
            }
            self.printed += 1;
        }
        match self.out.flush() {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            other => other.context("cannot write to stdout").map(|()| true),
        }
    }
}

fn write_plain(
    out: &mut impl Write,
    record: &ConsumerRecord,
    separator: Option<&str>,
) -> std::io::Result<()> {
    if let Some(separator) = separator {
        out.write_all(record.key.as_deref().unwrap_or_default())?;
        out.write_all(separator.as_bytes())?;
    }
    out.write_all(record.value.as_deref().unwrap_or_default())?;
    out.write_all(b"\n")
}

fn json_bytes(bytes: Option<&[u8]>) -> serde_json::Value {
    match bytes {
        Some(bytes) => serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()),
        None => serde_json::Value::Null,
    }
}

fn write_json(out: &mut impl Write, record: &ConsumerRecord) -> std::io::Result<()> {
    let value = serde_json::json!({
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": json_bytes(record.key.as_deref()),
        "value": json_bytes(record.value.as_deref()),
    });
    serde_json::to_writer(&mut *out, &value)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented start position parses; anything else is refused.
    #[test]
    fn parses_start_positions() {
        assert_eq!(parse_start("beginning"), Ok(SeekTo::Beginning));
        assert_eq!(parse_start("end"), Ok(SeekTo::End));
        assert_eq!(parse_start("offset:42"), Ok(SeekTo::Offset(42)));
        assert_eq!(
            parse_start("timestamp:1700000000000"),
            Ok(SeekTo::Timestamp(1_700_000_000_000))
        );
        assert!(parse_start("offset:x").is_err());
        assert!(parse_start("middle").is_err());
    }
}
