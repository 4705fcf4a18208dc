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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let separator = args.key_separator.as_deref();
    loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        if args.exit_at_end
            && assignment
                .iter()
                .all(|tp| consumer.position(tp).unwrap_or(-1) >= ends.get(tp).copied().unwrap_or(0))
        {
            break;
        }
        if let Some(idle) = args.idle_timeout_ms {
            if last_record.elapsed() >= Duration::from_millis(idle) {
                break;
            }
        }
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for record in &records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            let written = if args.json {
                write_json(&mut out, record)
            } else {
                write_plain(&mut out, record, separator)
            };
            if let Err(error) = written {
                if error.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                bail!("cannot write to stdout: {error}");
            }
            printed += 1;
        }
        match out.flush() {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("cannot write to stdout")?,
        }
    }
    Ok(())
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
