//! The command line: `skiff-bench produce|consume|e2e|limits|scenario NAME`.
//!
//! Every workload flag is shared by the three workloads, so a scenario file
//! is nothing more than a workload name and a table of these flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::embedded::Durability;
use crate::keys::KeyDistribution;
use crate::units::{parse_bytes, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "skiff-bench",
    version,
    about = "Throughput and latency of Skiff (or any Kafka-protocol broker), with the machine's limits measured in the same run.",
    // Later flags win, so a scenario's settings can be overridden on the command line.
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Producers only: records/s, MB/s and produce-ack latency.
    Produce(WorkloadArgs),
    /// Consumers read back what a produce phase wrote (or an existing topic with --no-fill).
    Consume(WorkloadArgs),
    /// Producers and consumers at once: end-to-end latency from send to delivery.
    E2e(WorkloadArgs),
    /// Only the machine's limits: loopback TCP and page-cache write bandwidth.
    Limits(LimitsArgs),
    /// A named standard workload from benches/scenarios/NAME.toml.
    Scenario(ScenarioArgs),
}

/// Which workload a run performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Produce,
    Consume,
    E2e,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Quic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerMode {
    /// Partitions dealt round-robin to consumers by the tool (manual assignment).
    Assigned,
    /// Consumers join one consumer group and the broker's coordinator assigns.
    Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Acknowledgements the producer asks for: 0, 1 or all (-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    /// The Kafka wire value of `acks`.
    pub fn wire_value(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        other => Err(format!("acks must be 0, 1 or all, not {other:?}")),
    }
}

/// A target rate: fixed records/s, or a fraction of the saturated rate
/// measured by a short calibration run first (`saturation:0.5`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum TargetRate {
    RecordsPerSecond(f64),
    FractionOfSaturation(f64),
}

fn parse_rate(text: &str) -> Result<TargetRate, String> {
    let trimmed = text.trim();
    if let Some(fraction) = trimmed.strip_prefix("saturation:") {
        let fraction: f64 = fraction
            .parse()
            .map_err(|_| format!("invalid fraction in {text:?}"))?;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(format!(
                "saturation fraction must be in (0, 1], got {fraction}"
            ));
        }
        return Ok(TargetRate::FractionOfSaturation(fraction));
    }
    let rate: f64 = trimmed
        .parse()
        .map_err(|_| format!("rate must be records/s or saturation:F, not {text:?}"))?;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("rate must be positive, got {rate}"));
    }
    Ok(TargetRate::RecordsPerSecond(rate))
}

/// How much work a run does (after the warm-up).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Amount {
    Duration(#[serde(serialize_with = "serialize_secs")] Duration),
    Messages(u64),
    TotalBytes(u64),
}

fn serialize_secs<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    parse_bytes(text)
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

#[derive(Clone, Debug, Args)]
pub struct WorkloadArgs {
    /// Broker(s) to drive, host:port[,…] (quic://host:port for QUIC); absent = start a private skiffd.
    #[arg(long, value_name = "HOST:PORT[,…]")]
    pub bootstrap: Option<String>,
    /// The skiffd binary to embed (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    pub skiffd: Option<PathBuf>,
    /// Durability mode of the embedded broker (ignored with --bootstrap).
    #[arg(long, value_enum, default_value_t = Durability::Periodic)]
    pub durability: Durability,
    /// Extra skiffd flag for the embedded broker, repeatable
    /// (e.g. `--broker-arg=--topic-segment-bytes=268435456`).
    #[arg(long = "broker-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub broker_args: Vec<String>,
    /// Where the embedded broker's temporary data dir (and the write probes) go.
    #[arg(long, value_name = "DIR")]
    pub data_parent: Option<PathBuf>,
    /// The broker's QUIC certificate (PEM) to trust with --bootstrap and --transport quic.
    #[arg(long, value_name = "FILE")]
    pub quic_cert: Option<PathBuf>,
    /// Transport between client and broker.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,

    /// Number of producers (each its own connection and task).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Number of consumers.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Worker threads of the clients' async runtime; 0 (the default): one
    /// per client of the measured phase (producers, consumers, or both for
    /// e2e), at most one per CPU.
    #[arg(long, default_value_t = 0)]
    pub client_threads: usize,
    /// How consumers get partitions.
    #[arg(long, value_enum, default_value_t = ConsumerMode::Assigned)]
    pub consumer_mode: ConsumerMode,
    /// Group id for --consumer-mode group (default: skiff-bench-<pid>).
    #[arg(long)]
    pub group_id: Option<String>,

    /// Number of topics.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Topic name (with --topics 1), or prefix `NAME-i` for several; default a fresh skiff-bench-<pid>.
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions per topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Consume an existing topic instead of writing it first (consume only).
    #[arg(long)]
    pub no_fill: bool,

    /// Record value size (e.g. 1000, 1KiB).
    #[arg(long, value_parser = parse_size_arg, default_value = "1000")]
    pub message_size: u64,
    /// Record keys: none | uniform:N | zipf:S[:N].
    #[arg(long, default_value = "none")]
    pub keys: KeyDistribution,
    /// Seed of the key generators (runs with the same seed draw the same keys).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Producer batch size per partition (bytes). Default: 1MB (under
    /// Kafka's default max.message.bytes, 1 MiB + 12, with a record to
    /// spare), or for a run over many partitions 16 MiB shared by them, at
    /// least 64KiB, so that a producer's open batches stay in cache.
    #[arg(long, value_parser = parse_size_arg)]
    pub batch_size: Option<u64>,
    /// Producer linger (e.g. 0, 5ms).
    #[arg(long, value_parser = parse_duration_arg, default_value = "5ms")]
    pub linger: Duration,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, value_parser = parse_acks, default_value = "1")]
    pub acks: Acks,
    /// Compression codec of produced batches.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Records a producer hands to the client per call: 1 (the default) is
    /// the one-record send most applications use; more use the client's
    /// many-record send, as Iggy's bench sends batches of 1 000 messages.
    #[arg(long, default_value_t = 1)]
    pub records_per_send: usize,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Producer buffer memory per producer (bytes). Each open batch holds
    /// --batch-size of it, as in Kafka; default: a batch per partition
    /// written, at least 32 MiB.
    #[arg(long, value_parser = parse_size_arg)]
    pub buffer_memory: Option<u64>,
    /// Total target rate in records/s over all producers, or saturation:F (default: saturate).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<TargetRate>,

    /// Measured run length (e.g. 10s); default 10s unless --messages or --total.
    #[arg(long, value_parser = parse_duration_arg, conflicts_with_all = ["messages", "total"])]
    pub duration: Option<Duration>,
    /// Measured records in total over all producers.
    #[arg(long, conflicts_with = "total")]
    pub messages: Option<u64>,
    /// Measured payload bytes in total (e.g. 1GB, 5GB).
    #[arg(long, value_parser = parse_size_arg)]
    pub total: Option<u64>,
    /// Most bytes a consumer fetches per partition per request (default:
    /// 4MiB split over the partitions each consumer reads, at least 64KiB
    /// and at most 1MiB over TCP, the client's and Kafka's default, or
    /// 4MiB over QUIC, where each request costs more).
    #[arg(long, value_parser = parse_size_arg)]
    pub partition_fetch_bytes: Option<u64>,
    /// Unmeasured run before the measurement starts (e.g. 2s).
    #[arg(long, value_parser = parse_duration_arg, default_value = "0")]
    pub warmup: Duration,

    /// Bytes the loopback and page-cache probes move (default: the workload's payload, at most 2 GB).
    #[arg(long, value_parser = parse_size_arg)]
    pub probe_bytes: Option<u64>,
    /// Skip the limit probes (quick checks only; fractions are then absent).
    #[arg(long)]
    pub no_limits: bool,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Most record bytes the bench's consumers ask for per fetch by default
/// (see [`WorkloadArgs::partition_fetch_bytes`]).
pub const FETCH_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

impl WorkloadArgs {
    /// `--partition-fetch-bytes`, or the default for the transport and for
    /// the partitions each consumer reads: as much of a fetch response as
    /// [`FETCH_RESPONSE_BYTES`] allows, split over those partitions, between
    /// 64 KiB and the transport's most. The most: one consumer of 1 GB,
    /// three runs each, TCP 2 495 / 2 569 / 2 235 MB/s with 1 MiB against
    /// 2 193 / 2 003 / 1 779 with 4 MiB (a 1 MiB response is still in the
    /// L2 cache when it is decoded); QUIC 1 149 / 1 040 / 990 against
    /// 1 388 / 1 357 / 1 406 (a request costs a stream, more packets and
    /// thread wake-ups). The split: four consumers in a group over 64
    /// partitions, seven alternating pairs, 1 874–2 282 MB/s (median
    /// 2 103, client 0.45–0.52 s of CPU) with 1 MiB a partition, 16 MiB
    /// responses, against 1 987–2 565 (median 2 392, client 0.31–0.41 s)
    /// with 256 KiB; 64 KiB (1 MiB responses) fell to 1 410–1 647.
    pub fn partition_fetch_bytes(&self) -> u64 {
        const MIB: u64 = 1024 * 1024;
        const PARTITION_FETCH_BYTES_MIN: u64 = 64 * 1024;
        self.partition_fetch_bytes.unwrap_or_else(|| {
            let most = match self.transport {
                Transport::Tcp => MIB,
                Transport::Quic => 4 * MIB,
            };
            let partitions = (self.topics as u64 * u64::from(self.partitions)).max(1);
            let per_consumer = partitions.div_ceil(self.consumers.max(1) as u64);
            (FETCH_RESPONSE_BYTES / per_consumer).clamp(PARTITION_FETCH_BYTES_MIN, most)
        })
    }

    /// `--batch-size`, or the default for the run's partitions. Four
    /// keyed producers over 64 partitions, 1 GB: 1 MB batches 749 / 552
    /// MB/s (client 1.24 / 1.03 s, broker 1.16 / 2.21 s of CPU), 256 KiB
    /// 1 216 / 1 255 (0.86 / 0.89 s, 0.60 / 0.59 s), 64 KiB 1 204 / 1 106:
    /// each record is copied into one of 64 open batches per producer, and
    /// 64 MiB of them do not stay in any cache.
    pub fn batch_size_bytes(&self) -> u64 {
        const BATCH_BYTES_MAX: u64 = 1_000_000;
        const BATCH_BYTES_MIN: u64 = 64 * 1024;
        const OPEN_BATCHES_BYTES: u64 = 16 * 1024 * 1024;
        self.batch_size.unwrap_or_else(|| {
            let partitions = (self.topics as u64 * u64::from(self.partitions)).max(1);
            (OPEN_BATCHES_BYTES / partitions).clamp(BATCH_BYTES_MIN, BATCH_BYTES_MAX)
        })
    }

    /// The clients' worker threads: one per client of the measured phase
    /// unless `--client-threads` says otherwise, as each Kafka client has
    /// its own network thread. A lone QUIC consumer on two workers spent its
    /// time waking the other thread (each wake-up a VM exit on this machine
    /// kind): 1.24-1.28 s of CPU for 2 GB against 1.08-1.18 s on one, and
    /// 14 % slower.
    pub fn client_threads(&self, kind: WorkloadKind) -> usize {
        if self.client_threads > 0 {
            return self.client_threads;
        }
        let clients = match kind {
            WorkloadKind::Produce => self.producers,
            WorkloadKind::Consume => self.consumers,
            WorkloadKind::E2e => self.producers + self.consumers,
        };
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        clients.clamp(1, cpus)
    }

    /// The measured amount of work; a duration of 10 s when nothing was given.
    pub fn amount(&self) -> Amount {
        match (self.duration, self.messages, self.total) {
            (Some(duration), _, _) => Amount::Duration(duration),
            (None, Some(messages), _) => Amount::Messages(messages),
            (None, None, Some(total)) => Amount::TotalBytes(total),
            (None, None, None) => Amount::Duration(Duration::from_secs(10)),
        }
    }

    /// Measured records, when the amount is a count rather than a duration.
    pub fn measured_records(&self) -> Option<u64> {
        match self.amount() {
            Amount::Duration(_) => None,
            Amount::Messages(messages) => Some(messages),
            Amount::TotalBytes(total) => Some(total.div_ceil(self.message_size.max(1))),
        }
    }

    /// Checks combinations clap cannot express.
    pub fn validate(&self, kind: WorkloadKind) -> Result<(), String> {
        if self.producers == 0 && kind != WorkloadKind::Consume {
            return Err("--producers must be at least 1".into());
        }
        if self.consumers == 0 && kind != WorkloadKind::Produce {
            return Err("--consumers must be at least 1".into());
        }
        if self.topics == 0 || self.partitions == 0 {
            return Err("--topics and --partitions must be at least 1".into());
        }
        if self.no_fill && kind != WorkloadKind::Consume {
            return Err("--no-fill only applies to consume".into());
        }
        if self.no_fill && self.topic.is_none() {
            return Err("--no-fill needs --topic NAME of an existing topic".into());
        }
        if self.message_size < 8 && kind == WorkloadKind::E2e {
            return Err("e2e needs --message-size of at least 8 bytes (the send timestamp)".into());
        }
        if self.records_per_send == 0 {
            return Err("--records-per-send must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("--max-in-flight must be at least 1".into());
        }
        Ok(())
    }

    /// The topic names of the run.
    pub fn topic_names(&self) -> Vec<String> {
        let base = self
            .topic
            .clone()
            .unwrap_or_else(|| format!("skiff-bench-{}", std::process::id()));
        if self.topics == 1 {
            vec![base]
        } else {
            (0..self.topics)
                .map(|index| format!("{base}-{index}"))
                .collect()
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct LimitsArgs {
    /// Bytes each probe moves.
    #[arg(long, value_parser = parse_size_arg, default_value = "1GB")]
    pub bytes: u64,
    /// Bytes of the write + fdatasync probe.
    #[arg(long, value_parser = parse_size_arg, default_value = "64MiB")]
    pub sync_bytes: u64,
    /// Directory whose filesystem the write probes use (default: the temp dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Clone, Debug, Args)]
pub struct ScenarioArgs {
    /// Scenario name (a file NAME.toml in the scenarios directory); `list` lists them.
    pub name: String,
    /// Directory of scenario files (default: benches/scenarios of this source tree).
    #[arg(long, value_name = "DIR")]
    pub scenarios_dir: Option<PathBuf>,
    /// Workload flags overriding the scenario's, e.g. `--total 100MB --json out.json`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub overrides: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("skiff-bench").chain(args.iter().copied()))
    }

    /// Every workload flag of the issue parses to the value it names.
    #[test]
    fn workload_flags_parse() -> Result<(), Box<dyn std::error::Error>> {
        let cli = parse(&[
            "e2e",
            "--producers",
            "4",
            "--consumers",
            "2",
            "--consumer-mode",
            "group",
            "--topics",
            "2",
            "--partitions",
            "64",
            "--message-size",
            "1KiB",
            "--keys",
            "zipf:1.1",
            "--batch-size",
            "64KiB",
            "--linger",
            "2ms",
            "--acks",
            "all",
            "--compression",
            "lz4",
            "--max-in-flight",
            "3",
            "--rate",
            "50000",
            "--total",
            "1GB",
            "--warmup",
            "2s",
            "--transport",
            "quic",
            "--durability",
            "sync",
            "--json",
            "out.json",
        ])?;
        let Command::E2e(args) = cli.command else {
            return Err("expected e2e".into());
        };
        assert_eq!(
            (args.producers, args.consumers, args.topics, args.partitions),
            (4, 2, 2, 64)
        );
        assert_eq!(args.consumer_mode, ConsumerMode::Group);
        assert_eq!(args.message_size, 1024);
        assert_eq!(
            args.keys,
            KeyDistribution::Zipf {
                exponent: 1.1,
                keys: 10_000
            }
        );
        assert_eq!(args.batch_size_bytes(), 65536);
        assert_eq!(args.linger, Duration::from_millis(2));
        assert_eq!(args.acks.wire_value(), -1);
        assert_eq!(args.compression, Compression::Lz4);
        assert_eq!(args.max_in_flight, 3);
        assert_eq!(args.rate, Some(TargetRate::RecordsPerSecond(50000.0)));
        assert_eq!(args.amount(), Amount::TotalBytes(1_000_000_000));
        assert_eq!(args.measured_records(), Some(976_563));
        assert_eq!(args.warmup, Duration::from_secs(2));
        assert_eq!(args.transport, Transport::Quic);
        assert_eq!(args.durability, Durability::Sync);
        assert!(args.bootstrap.is_none());
        assert_eq!(args.topic_names().len(), 2);
        assert_eq!(args.validate(WorkloadKind::E2e), Ok(()));
        Ok(())
    }

    /// Defaults: 10 s, one of everything, acks=1, no key; later flags override earlier ones.
    #[test]
    fn defaults_and_overrides() -> Result<(), Box<dyn std::error::Error>> {
        let cli = parse(&[
            "produce",
            "--partitions",
            "2",
            "--partitions",
            "8",
            "--rate",
            "saturation:0.5",
        ])?;
        let Command::Produce(args) = cli.command else {
            return Err("expected produce".into());
        };
        assert_eq!(args.partitions, 8);
        assert_eq!(args.amount(), Amount::Duration(Duration::from_secs(10)));
        assert_eq!(args.acks, Acks::Leader);
        assert_eq!(args.keys, KeyDistribution::None);
        assert_eq!(args.rate, Some(TargetRate::FractionOfSaturation(0.5)));
        assert_eq!(args.measured_records(), None);
        assert_eq!(args.records_per_send, 1);
        Ok(())
    }

    /// The default batch size is 1 MB for a few partitions and shrinks
    /// with many, to 64 KiB at least; an explicit one is kept.
    #[test]
    fn batch_size_follows_the_partitions() -> Result<(), Box<dyn std::error::Error>> {
        let batch_size = |args: &[&str]| -> Result<u64, Box<dyn std::error::Error>> {
            let Command::Produce(workload) = parse(args)?.command else {
                return Err("expected produce".into());
            };
            Ok(workload.batch_size_bytes())
        };
        assert_eq!(batch_size(&["produce"])?, 1_000_000);
        assert_eq!(batch_size(&["produce", "--partitions", "16"])?, 1_000_000);
        assert_eq!(batch_size(&["produce", "--partitions", "64"])?, 256 * 1024);
        let many = ["produce", "--topics", "4", "--partitions", "1024"];
        assert_eq!(batch_size(&many)?, 64 * 1024);
        let explicit = ["produce", "--partitions", "64", "--batch-size", "1MB"];
        assert_eq!(batch_size(&explicit)?, 1_000_000);
        Ok(())
    }

    /// A consumer's default fetch asks at most 4 MiB over its partitions,
    /// 1 MiB a partition at most over TCP (4 MiB over QUIC) and 64 KiB at
    /// least; an explicit size is kept.
    #[test]
    fn partition_fetch_follows_the_partitions() -> Result<(), Box<dyn std::error::Error>> {
        let fetch = |args: &[&str]| -> Result<u64, Box<dyn std::error::Error>> {
            let Command::Consume(workload) = parse(args)?.command else {
                return Err("expected consume".into());
            };
            Ok(workload.partition_fetch_bytes())
        };
        const KIB: u64 = 1024;
        assert_eq!(fetch(&["consume"])?, 1024 * KIB);
        assert_eq!(fetch(&["consume", "--transport", "quic"])?, 4096 * KIB);
        let group = ["consume", "--partitions", "64", "--consumers", "4"];
        assert_eq!(fetch(&group)?, 256 * KIB);
        assert_eq!(fetch(&["consume", "--partitions", "64"])?, 64 * KIB);
        assert_eq!(
            fetch(&["consume", "--topics", "4", "--partitions", "1024"])?,
            64 * KIB
        );
        let explicit = [
            "consume",
            "--partitions",
            "64",
            "--partition-fetch-bytes",
            "1MiB",
        ];
        assert_eq!(fetch(&explicit)?, 1024 * KIB);
        Ok(())
    }

    /// Contradictory or meaningless settings are refused with a message.
    #[test]
    fn bad_flags_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        assert!(parse(&["produce", "--duration", "1s", "--total", "1GB"]).is_err());
        assert!(parse(&["produce", "--messages", "10", "--total", "1GB"]).is_err());
        assert!(parse(&["produce", "--acks", "2"]).is_err());
        assert!(parse(&["produce", "--keys", "zipf"]).is_err());
        assert!(parse(&["produce", "--rate", "saturation:2"]).is_err());
        assert!(parse(&["produce", "--rate", "-5"]).is_err());
        assert!(parse(&["produce", "--message-size", "big"]).is_err());
        assert!(parse(&["produce", "--transport", "carrier-pigeon"]).is_err());
        let cli = parse(&["produce", "--no-fill"])?;
        let Command::Produce(args) = cli.command else {
            return Err("expected produce".into());
        };
        assert!(args.validate(WorkloadKind::Produce).is_err());
        let cli = parse(&["e2e", "--message-size", "4"])?;
        let Command::E2e(args) = cli.command else {
            return Err("expected e2e".into());
        };
        assert!(args.validate(WorkloadKind::E2e).is_err());
        Ok(())
    }

    /// Broker flags accumulate rather than override each other.
    #[test]
    fn broker_args_accumulate() -> Result<(), Box<dyn std::error::Error>> {
        let cli = parse(&["produce", "--broker-arg=--a=1", "--broker-arg", "--b"])?;
        let Command::Produce(args) = cli.command else {
            return Err("expected produce".into());
        };
        assert_eq!(args.broker_args, vec!["--a=1", "--b"]);
        Ok(())
    }

    /// `scenario NAME` takes trailing workload flags as overrides.
    #[test]
    fn scenario_overrides_are_collected() -> Result<(), Box<dyn std::error::Error>> {
        let cli = parse(&[
            "scenario",
            "single-partition",
            "--total",
            "10MB",
            "--json",
            "x.json",
        ])?;
        let Command::Scenario(args) = cli.command else {
            return Err("expected scenario".into());
        };
        assert_eq!(args.name, "single-partition");
        assert_eq!(args.overrides, vec!["--total", "10MB", "--json", "x.json"]);
        Ok(())
    }
}
