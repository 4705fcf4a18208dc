//! `skiff produce TOPIC`: one record per stdin line.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use skiff_client::{Acks, Client, Compression, Producer, ProducerConfig, ProducerRecord};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Inputs at least this large get a progress bar (on a terminal) and a summary.
const LARGE_INPUT_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    pub topic: String,
    /// Split each line at the first SEP into key and value (lines without it have no key).
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Write every record to this partition instead of using the partitioner.
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, short = 'z', default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Wait this long for a batch to fill.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub batch_size: usize,
    /// Never show the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    Acks::parse(text).ok_or_else(|| format!("{text:?} is not 0, 1 or all"))
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    Compression::from_name(text)
        .ok_or_else(|| format!("{text:?} is not none, gzip, snappy, lz4 or zstd"))
}

fn stdin_file_bytes() -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        let metadata = std::fs::File::from(fd).metadata().ok()?;
        metadata.is_file().then_some(metadata.len())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

fn progress_bar(total_bytes: Option<u64>, quiet: bool) -> ProgressBar {
    let target = if quiet || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let template = match total_bytes {
        Some(_) => "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
        None => "{spinner} {binary_bytes} {binary_bytes_per_sec} {msg}",
    };
    let style = ProgressStyle::default_bar()
        .template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::with_draw_target(total_bytes, target).with_style(style)
}

pub async fn run(client: Client, args: ProduceArgs) -> anyhow::Result<()> {
    let config = ProducerConfig {
        acks: args.acks,
        compression: args.compression,
        linger: Duration::from_millis(args.linger_ms),
        batch_size: args.batch_size,
        request_timeout: client.config().connection.request_timeout,
        delivery_timeout: client.config().connection.request_timeout * 4
            + Duration::from_millis(args.linger_ms),
        ..ProducerConfig::default()
    };
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    let producer = Producer::new(client, config)
        .await
        .context("cannot start the producer")?;
    let file_bytes = stdin_file_bytes();
    let bar = progress_bar(file_bytes.filter(|b| *b >= LARGE_INPUT_BYTES), args.quiet);
    let mut shown = file_bytes.is_some_and(|b| b >= LARGE_INPUT_BYTES);
    let started = Instant::now();
    let mut input = BufReader::with_capacity(256 * 1024, tokio::io::stdin());
    let mut line = Vec::with_capacity(4096);
    let (mut records, mut bytes) = (0u64, 0u64);
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .await
            .context("cannot read stdin")?;
        if read == 0 {
            break;
        }
        bytes += read as u64;
        let mut content = &line[..];
        if let Some(rest) = content.strip_suffix(b"\n") {
            content = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        let (key, value) = split_key(content, args.key_separator.as_deref().map(str::as_bytes));
        let record = ProducerRecord {
            topic: &args.topic,
            partition: args.partition,
            key,
            value: Some(value),
            headers: &[],
            timestamp: None,
        };
        // Failures are collected by flush; the futures are not needed.
        drop(
            producer
                .send(record)
                .await
                .with_context(|| format!("cannot send line {}", records + 1))?,
        );
        records += 1;
        if !shown && bytes >= LARGE_INPUT_BYTES {
            shown = true;
        }
        if shown && records % 1024 == 0 {
            bar.set_position(bytes);
            let rate = records as f64 / started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{records} records, {rate:.0} records/s"));
        }
    }
    let flushed = producer.close().await;
    bar.finish_and_clear();
    if shown {
        let seconds = started.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "produced {records} records ({:.1} MB) in {seconds:.1} s: {:.0} records/s, {:.1} MB/s",
            bytes as f64 / 1e6,
            records as f64 / seconds,
            bytes as f64 / 1e6 / seconds
        );
    }
    flushed.with_context(|| format!("{records} record(s) read from stdin, not all delivered"))?;
    Ok(())
}

fn split_key<'a>(line: &'a [u8], separator: Option<&[u8]>) -> (Option<&'a [u8]>, &'a [u8]) {
    let Some(separator) = separator else {
        return (None, line);
    };
    match line.windows(separator.len()).position(|w| w == separator) {
        Some(at) => (Some(&line[..at]), &line[at + separator.len()..]),
        None => (None, line),
    }
}

#[cfg(test)]
mod tests {
    use super::split_key;

    /// A line splits at the first separator; a line without one has no key.
    #[test]
    fn splits_key_at_first_separator() {
        assert_eq!(
            split_key(b"k:v:w", Some(b":")),
            (Some(&b"k"[..]), &b"v:w"[..])
        );
        assert_eq!(
            split_key(b"k::v", Some(b"::")),
            (Some(&b"k"[..]), &b"v"[..])
        );
        assert_eq!(split_key(b"value", Some(b":")), (None, &b"value"[..]));
        assert_eq!(split_key(b"a:b", None), (None, &b"a:b"[..]));
    }
}
