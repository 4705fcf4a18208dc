//! One benchmark run from start to finish: broker, limits, workload, report.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::{Amount, TargetRate, Transport, WorkloadArgs, WorkloadKind};
use crate::embedded::{locate_skiffd, EmbeddedBroker};
use crate::keys::{KeyDistribution, KeySpace};
use crate::limits::{self, Limits};
use crate::metrics::wire_sample;
use crate::procstat::{CpuTime, Process};
use crate::progress::Monitor;
use crate::report::{BrokerInfo, Counts, CpuReport, Machine, PartitionReport, Report, Throughput};
use crate::stats::{PartitionCounts, Percentiles};
use crate::workload::driver::{Connector, ProducerSettings};
use crate::workload::{self, Clock, ConsumePhase, ConsumePlan, Live, ProducePhase, ProducePlan};

/// Largest default probe: the page-cache probe must not fill a small disk.
const PROBE_BYTES_DEFAULT_MAX: u64 = 2_000_000_000;
/// Probe size for duration-based runs, whose payload is not known up front.
const PROBE_BYTES_FOR_DURATION: u64 = 1_000_000_000;
/// Bytes of the write + fdatasync probe.
const SYNC_PROBE_BYTES: u64 = 64 << 20;
/// Length of the measured part of the saturation run behind `--rate saturation:F`.
const CALIBRATION: Duration = Duration::from_secs(3);
/// Unmeasured start of the saturation run. The page-cache probe frees about
/// a gigabyte of pages just before; on a VM that hands freed memory back to
/// its host, writes into those still-backed pages run several times faster
/// than into fresh ones, and a saturated producer uses them up in about a
/// second. Timing from the start measured that burst, not a rate the broker
/// can keep.
const CALIBRATION_WARMUP: Duration = Duration::from_secs(2);

/// Where the broker is and how to reach it.
pub struct Target {
    pub bootstrap: String,
    pub transport: Transport,
    /// The QUIC certificate to trust (the embedded broker's own, or --quic-cert).
    pub quic_cert: Option<std::path::PathBuf>,
}

/// Runs a workload against the broker of `args` (a private skiffd when no
/// `--bootstrap`), with `connect` building the client for the bootstrap.
pub async fn run_workload<C, F, Fut>(
    kind: WorkloadKind,
    args: &WorkloadArgs,
    scenario: Option<String>,
    command: String,
    connect: F,
) -> Result<Report>
where
    C: Connector,
    F: FnOnce(Target) -> Fut,
    Fut: Future<Output = Result<C>>,
{
    args.validate(kind).map_err(anyhow::Error::msg)?;
    let (mut embedded, bootstrap) = start_broker(args)?;
    let broker_info = BrokerInfo {
        kind: if embedded.is_some() {
            "embedded"
        } else {
            "external"
        }
        .into(),
        bootstrap: bootstrap.clone(),
        durability: embedded.as_ref().map(|_| args.durability.to_string()),
    };
    let limits = measure_limits(args, embedded.as_ref()).await?;
    let quic_cert = match &embedded {
        Some(broker) => Some(broker.data_dir().join(crate::embedded::QUIC_CERT_FILE)),
        None => args.quic_cert.clone(),
    };
    let target = Target {
        bootstrap: bootstrap.clone(),
        transport: args.transport,
        quic_cert,
    };
    let connector = connect(target)
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    let topics = args.topic_names();
    if !args.no_fill {
        connector
            .create_topics(&topics, args.partitions)
            .await
            .context("creating topics")?;
    }
    let clock = Clock::new();
    let (mut produce_plan, consume_plan) = plans(kind, args, &topics);
    produce_plan.rate_per_s = match args.rate {
        None => None,
        Some(TargetRate::RecordsPerSecond(rate)) => Some(rate),
        Some(TargetRate::FractionOfSaturation(fraction)) => Some(
            fraction
                * calibrate(
                    &connector,
                    &produce_plan,
                    (kind == WorkloadKind::E2e).then_some(&consume_plan),
                    clock,
                )
                .await
                .context("measuring the saturated rate")?,
        ),
    };

    let live = Arc::new(Live::default());
    let mut tally = Tally::default();
    if kind == WorkloadKind::Consume {
        prepare_consume(
            args,
            &connector,
            &produce_plan,
            &topics,
            clock,
            &live,
            limits.as_ref(),
            embedded.as_ref().map(EmbeddedBroker::data_dir),
            &mut tally,
        )
        .await?;
    }
    let broker_pid = embedded.as_ref().map(EmbeddedBroker::pid);
    let metrics_address = embedded
        .as_ref()
        .and_then(|broker| broker.listening().metrics);
    let wire_before = wire_sample(metrics_address, &topics, &live);
    let monitor = Monitor::start(Arc::clone(&live), broker_pid, !args.quiet);
    let cpu_before = cpu_sample(broker_pid);
    let wall_start = Instant::now();
    let phases = Phases {
        connector: &connector,
        produce: &produce_plan,
        consume: &consume_plan,
        clock,
        live: &live,
        limits: limits.as_ref(),
    };
    match kind {
        WorkloadKind::Produce => phases.produce(&mut tally).await?,
        WorkloadKind::Consume => phases.consume(&mut tally).await?,
        WorkloadKind::E2e => {
            phases
                .end_to_end(args.acks.wire_value() == 0, &mut tally)
                .await?
        }
    }
    let wall = wall_start.elapsed();
    let wire_after = wire_sample(metrics_address, &topics, &live);
    let cpu_after = cpu_sample(broker_pid);
    let rss_anon_max_kib = monitor.stop();
    if let Some(broker) = embedded.as_mut() {
        if !broker.is_running() {
            let log = broker.log_tail();
            tally.errors.push(format!(
                "the embedded skiffd exited during the run; its log:\n{log}"
            ));
        }
    }
    tally.check_counts(kind);
    let (wire_in, wire_out) = match (wire_before, wire_after) {
        (Some(before), Some(after)) => (before.ratio_in(&after), before.ratio_out(&after)),
        _ => (None, None),
    };
    let produce = tally
        .produce
        .map(|throughput| throughput.with_wire_ratio(wire_in));
    let consume = tally
        .consume
        .map(|throughput| throughput.with_wire_ratio(wire_out));
    let headline = if kind == WorkloadKind::Consume {
        consume
    } else {
        produce
    };
    let partitions = tally
        .partitions
        .unwrap_or_else(|| PartitionCounts::new(topics.len(), args.partitions));
    Ok(Report {
        workload: format!("{kind:?}").to_lowercase(),
        scenario,
        command,
        settings: settings_json(kind, args, &topics, produce_plan.rate_per_s),
        machine: Machine::describe(),
        broker: broker_info,
        loopback_limit_mb_per_s: limits.map(|l: Limits| l.loopback_tcp.mb_per_s),
        page_cache_limit_mb_per_s: limits.map(|l| l.page_cache_write.mb_per_s),
        fdatasync_limit_mb_per_s: limits.map(|l| l.fdatasync_write.mb_per_s),
        limits,
        records_per_s: headline.map(|t| t.records_per_s).unwrap_or(0.0),
        mb_per_s: headline.map(|t| t.mb_per_s).unwrap_or(0.0),
        fraction_of_loopback: headline.and_then(|t| t.fraction_of_loopback),
        fraction_of_page_cache: headline.and_then(|t| t.fraction_of_page_cache),
        wire_bytes_per_payload_byte_in: wire_in,
        wire_bytes_per_payload_byte_out: wire_out,
        produce,
        consume,
        target_rate_per_s: produce_plan.rate_per_s,
        produce_latency_us: tally.produce_latency,
        e2e_latency_us: tally.e2e_latency,
        counts: tally.counts,
        partitions: PartitionReport::new(
            &partitions,
            &topics,
            headline.map(|t| t.seconds).unwrap_or(0.0),
        ),
        cpu: cpu_report(wall, cpu_before, cpu_after),
        broker_rss_anon_max_mib: broker_pid.map(|_| rss_anon_max_kib as f64 / 1024.0),
        errors: tally.errors,
    })
}

/// Starts the private skiffd unless `--bootstrap` names a broker; returns it
/// and the bootstrap string for the chosen transport.
fn start_broker(args: &WorkloadArgs) -> Result<(Option<EmbeddedBroker>, String)> {
    if let Some(bootstrap) = &args.bootstrap {
        return Ok((None, external_bootstrap(bootstrap, args.transport)));
    }
    let skiffd = locate_skiffd(args.skiffd.as_deref())?;
    let broker = EmbeddedBroker::start(
        &skiffd,
        args.durability,
        args.data_parent.as_deref(),
        &args.broker_args,
    )?;
    let bootstrap = match args.transport {
        Transport::Tcp => broker.listening().tcp.to_string(),
        Transport::Quic => match broker.listening().quic {
            Some(quic) => format!("quic://{quic}"),
            None => bail!("the embedded skiffd did not open a QUIC listener"),
        },
    };
    Ok((Some(broker), bootstrap))
}

/// The limit probes, on the broker's data filesystem when it is embedded.
async fn measure_limits(
    args: &WorkloadArgs,
    embedded: Option<&EmbeddedBroker>,
) -> Result<Option<Limits>> {
    if args.no_limits {
        return Ok(None);
    }
    let probe_dir = match (embedded, &args.data_parent) {
        (Some(broker), _) => broker.data_dir().to_path_buf(),
        (None, Some(dir)) => dir.clone(),
        (None, None) => std::env::temp_dir(),
    };
    let probe_bytes = args.probe_bytes.unwrap_or(match args.amount() {
        Amount::Duration(_) => PROBE_BYTES_FOR_DURATION,
        _ => (args.measured_records().unwrap_or(0) * args.message_size)
            .clamp(1 << 20, PROBE_BYTES_DEFAULT_MAX),
    });
    let measured = tokio::task::spawn_blocking(move || {
        limits::measure(probe_bytes, SYNC_PROBE_BYTES, &probe_dir)
    })
    .await
    .context("the limit probes panicked")??;
    Ok(Some(measured))
}

/// A producer's default buffer memory is a batch per partition it may write,
/// at least Kafka's default (32 MiB) and at most a gigabyte (the client
/// refuses 4 GiB and more). Less stalls keyed sends: each open batch holds
/// a whole --batch-size of it.
const BUFFER_MEMORY_MIN_BYTES: u64 = 32 << 20;
const BUFFER_MEMORY_MAX_BYTES: u64 = 1 << 30;

/// The producer and consumer plans of a run (the rate is resolved later).
fn plans(kind: WorkloadKind, args: &WorkloadArgs, topics: &[String]) -> (ProducePlan, ConsumePlan) {
    let produce = ProducePlan {
        topics: topics.to_vec(),
        partitions: args.partitions,
        producers: args.producers,
        settings: ProducerSettings {
            batch_size_bytes: args.batch_size_bytes(),
            buffer_memory_bytes: args.buffer_memory.unwrap_or_else(|| {
                let partitions = args.topics as u64 * u64::from(args.partitions);
                (2 * args.batch_size_bytes() * partitions)
                    .clamp(BUFFER_MEMORY_MIN_BYTES, BUFFER_MEMORY_MAX_BYTES)
            }),
            linger: args.linger,
            acks: args.acks,
            compression: args.compression,
            max_in_flight: args.max_in_flight,
        },
        keys: KeySpace::new(args.keys),
        seed: args.seed,
        message_size: args.message_size,
        records_per_send: args.records_per_send,
        rate_per_s: None,
        amount: args.amount(),
        warmup: args.warmup,
        stamp: kind == WorkloadKind::E2e,
    };
    let consume = ConsumePlan {
        topics: topics.to_vec(),
        partitions: args.partitions,
        consumers: args.consumers,
        mode: args.consumer_mode,
        group_id: args
            .group_id
            .clone()
            .unwrap_or_else(|| format!("skiff-bench-{}", std::process::id())),
    };
    (produce, consume)
}

/// A consume run writes its data first (outside the CPU figures), then sets
/// the consumers' target to every record the topics hold.
#[allow(clippy::too_many_arguments)]
async fn prepare_consume<C: Connector>(
    args: &WorkloadArgs,
    connector: &C,
    produce_plan: &ProducePlan,
    topics: &[String],
    clock: Clock,
    live: &Arc<Live>,
    limits: Option<&Limits>,
    broker_data_dir: Option<&Path>,
    tally: &mut Tally,
) -> Result<()> {
    if !args.no_fill {
        let fill_plan = ProducePlan {
            warmup: Duration::ZERO,
            ..produce_plan.clone()
        };
        let fill = workload::produce_phase(connector, &fill_plan, clock, live).await?;
        tally.add_produce(fill, limits);
        // The fill saturates the broker; its latency is not this run's subject.
        tally.produce_latency = None;
        // Consumers read what was written earlier, not data still being
        // written back: without this, a fast fill leaves up to gigabytes of
        // dirty pages whose writeback takes CPU from the measured read.
        if let Some(dir) = broker_data_dir {
            crate::limits::write_back(dir)
                .with_context(|| format!("writing back {} after the fill", dir.display()))?;
        }
    }
    let ranges = connector
        .partition_ranges(topics)
        .await
        .context("reading partition offsets")?;
    let available: i64 = ranges
        .iter()
        .map(|range| range.end_offset - range.start_offset)
        .sum();
    live.consume_target.store(available.max(0) as u64, Relaxed);
    if args.no_fill {
        // Nothing is produced in this run; the topics' records stand in for "acked".
        tally.counts.sent = available.max(0) as u64;
        tally.counts.acked = tally.counts.sent;
    }
    Ok(())
}

/// What the phases of a run measured, before it becomes a report.
#[derive(Default)]
struct Tally {
    counts: Counts,
    errors: Vec<String>,
    produce: Option<Throughput>,
    consume: Option<Throughput>,
    produce_latency: Option<Percentiles>,
    e2e_latency: Option<Percentiles>,
    partitions: Option<PartitionCounts>,
}

impl Tally {
    fn add_produce(&mut self, phase: ProducePhase, limits: Option<&Limits>) {
        let seconds = phase.measured_elapsed().as_secs_f64();
        let outcome = phase.outcome;
        self.produce = Some(Throughput::new(
            outcome.measured_records,
            outcome.measured_bytes,
            seconds,
            limits,
            true,
        ));
        self.counts.sent = outcome.sent;
        self.counts.acked = outcome.acked;
        self.counts.errors += outcome.errors;
        self.errors.extend(outcome.first_error);
        self.produce_latency = outcome.latency.percentiles();
        self.partitions = Some(outcome.partitions);
    }

    /// `own_partitions`: the consumed per-partition counts are the run's (consume
    /// runs); e2e runs keep the producers'.
    fn add_consume(&mut self, phase: ConsumePhase, limits: Option<&Limits>, own_partitions: bool) {
        let seconds = phase.measured_elapsed().as_secs_f64();
        let outcome = phase.outcome;
        self.consume = Some(Throughput::new(
            outcome.measured_records,
            outcome.measured_bytes,
            seconds,
            limits,
            false,
        ));
        self.counts.consumed = outcome.consumed;
        self.counts.errors += outcome.errors;
        self.errors.extend(outcome.first_error);
        self.e2e_latency = outcome.e2e.percentiles();
        if own_partitions {
            self.partitions = Some(outcome.partitions);
        }
    }

    /// Sent = acknowledged (= consumed, when consumed), or the run is void.
    fn check_counts(&mut self, kind: WorkloadKind) {
        let counts = self.counts;
        if kind != WorkloadKind::Produce && counts.consumed != counts.acked {
            self.errors.push(format!(
                "consumed {} records but {} were acknowledged",
                counts.consumed, counts.acked
            ));
        }
        if counts.acked != counts.sent {
            self.errors.push(format!(
                "{} records sent but {} acknowledged",
                counts.sent, counts.acked
            ));
        }
    }
}

/// The measured phase of each workload.
struct Phases<'a, C> {
    connector: &'a C,
    produce: &'a ProducePlan,
    consume: &'a ConsumePlan,
    clock: Clock,
    live: &'a Arc<Live>,
    limits: Option<&'a Limits>,
}

impl<C: Connector> Phases<'_, C> {
    async fn produce(&self, tally: &mut Tally) -> Result<()> {
        let phase =
            workload::produce_phase(self.connector, self.produce, self.clock, self.live).await?;
        tally.add_produce(phase, self.limits);
        Ok(())
    }

    async fn consume(&self, tally: &mut Tally) -> Result<()> {
        let running =
            workload::start_consumers(self.connector, self.consume, false, self.clock, self.live)
                .await?;
        tally.add_consume(running.finish(self.live).await?, self.limits, true);
        Ok(())
    }

    /// Consumers first (reading from the earliest offset), then producers; the
    /// consumers stop once they have every record the producers delivered.
    async fn end_to_end(&self, fire_and_forget: bool, tally: &mut Tally) -> Result<()> {
        let running =
            workload::start_consumers(self.connector, self.consume, true, self.clock, self.live)
                .await?;
        let phase =
            workload::produce_phase(self.connector, self.produce, self.clock, self.live).await?;
        let delivered = if fire_and_forget {
            phase.outcome.sent
        } else {
            phase.outcome.acked
        };
        self.live.consume_target.store(delivered, Relaxed);
        tally.add_produce(phase, self.limits);
        tally.add_consume(running.finish(self.live).await?, self.limits, false);
        Ok(())
    }
}

fn cpu_report(
    wall: Duration,
    before: (CpuTime, Option<CpuTime>),
    after: (CpuTime, Option<CpuTime>),
) -> CpuReport {
    let wall_s = wall.as_secs_f64().max(1e-9);
    let client_s = after.0.since(&before.0).total().as_secs_f64();
    let broker_s = match (before.1, after.1) {
        (Some(before), Some(after)) => Some(after.since(&before).total().as_secs_f64()),
        _ => None,
    };
    CpuReport {
        wall_s,
        client_s,
        broker_s,
        client_cores: client_s / wall_s,
        broker_cores: broker_s.map(|seconds| seconds / wall_s),
    }
}

/// Runs the producers unpaced for [`CALIBRATION_WARMUP`] and then
/// [`CALIBRATION`] on separate topics and
/// returns their records/s, the "saturated rate". For an end-to-end
/// workload the consumers run too, and the rate is what both sides kept up
/// with: on a small machine producers, consumers and broker share the
/// cores, so half of a produce-only rate may be more than the whole
/// pipeline can carry, and latency at it would measure queueing only.
async fn calibrate<C: Connector>(
    connector: &C,
    plan: &ProducePlan,
    consume: Option<&ConsumePlan>,
    clock: Clock,
) -> Result<f64> {
    let topics: Vec<String> = plan
        .topics
        .iter()
        .map(|topic| format!("{topic}-calibration"))
        .collect();
    connector.create_topics(&topics, plan.partitions).await?;
    let calibration = ProducePlan {
        topics: topics.clone(),
        rate_per_s: None,
        amount: Amount::Duration(CALIBRATION),
        warmup: CALIBRATION_WARMUP,
        stamp: consume.is_some(),
        ..plan.clone()
    };
    let live = Arc::new(Live::default());
    let consumers = match consume {
        Some(consume) => {
            let plan = ConsumePlan {
                topics,
                group_id: format!("{}-calibration", consume.group_id),
                ..consume.clone()
            };
            Some(workload::start_consumers(connector, &plan, true, clock, &live).await?)
        }
        None => None,
    };
    let phase = workload::produce_phase(connector, &calibration, clock, &live).await?;
    if let Some(error) = phase.outcome.first_error {
        bail!("calibration run failed: {error}");
    }
    let seconds = phase.measured_elapsed().as_secs_f64();
    if phase.outcome.measured_records == 0 || seconds <= 0.0 {
        bail!("calibration run acknowledged nothing");
    }
    let produced_per_s = phase.outcome.measured_records as f64 / seconds;
    let Some(consumers) = consumers else {
        return Ok(produced_per_s);
    };
    live.consume_target.store(phase.outcome.acked, Relaxed);
    let consumed = consumers.finish(&live).await?;
    if let Some(error) = consumed.outcome.first_error {
        bail!("calibration consumers failed: {error}");
    }
    let consumed_s = consumed.measured_elapsed().as_secs_f64();
    let consumed_per_s = consumed.outcome.measured_records as f64 / consumed_s.max(1e-9);
    Ok(produced_per_s.min(consumed_per_s))
}

fn cpu_sample(broker_pid: Option<u32>) -> (CpuTime, Option<CpuTime>) {
    let client = Process::Current.cpu_time().unwrap_or_default();
    let broker = broker_pid.and_then(|pid| Process::Pid(pid).cpu_time().ok());
    (client, broker)
}

/// `--bootstrap` as given, with `quic://` added to bare entries under `--transport quic`.
pub fn external_bootstrap(bootstrap: &str, transport: Transport) -> String {
    match transport {
        Transport::Tcp => bootstrap.to_string(),
        Transport::Quic => bootstrap
            .split(',')
            .map(|entry| {
                if entry.contains("://") {
                    entry.to_string()
                } else {
                    format!("quic://{entry}")
                }
            })
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn settings_json(
    kind: WorkloadKind,
    args: &WorkloadArgs,
    topics: &[String],
    rate: Option<f64>,
) -> serde_json::Value {
    let keys = match args.keys {
        KeyDistribution::None => "none".to_string(),
        other => other.to_string(),
    };
    serde_json::json!({
        "topics": topics,
        "partitions": args.partitions,
        "producers": args.producers,
        "consumers": args.consumers,
        "consumer_mode": args.consumer_mode,
        "message_size": args.message_size,
        "keys": keys,
        "batch_size": args.batch_size_bytes(),
        "linger_ms": args.linger.as_secs_f64() * 1e3,
        "acks": args.acks.wire_value(),
        "compression": args.compression,
        "max_in_flight": args.max_in_flight,
        "records_per_send": args.records_per_send,
        "rate_per_s": rate,
        "amount": args.amount(),
        "warmup_s": args.warmup.as_secs_f64(),
        "transport": args.transport,
        "durability": args.durability,
        "partition_fetch_bytes": args.partition_fetch_bytes(),
        "client_threads": args.client_threads(kind),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(kind: WorkloadKind, sent: u64, acked: u64, consumed: u64) -> Vec<String> {
        let mut tally = Tally {
            counts: Counts {
                sent,
                acked,
                consumed,
                errors: 0,
            },
            ..Tally::default()
        };
        tally.check_counts(kind);
        tally.errors
    }

    /// A run whose counts disagree is flagged, whichever count is short.
    #[test]
    fn count_mismatches_void_the_run() {
        assert!(checked(WorkloadKind::E2e, 5, 5, 5).is_empty());
        assert_eq!(
            checked(WorkloadKind::Produce, 5, 4, 0).len(),
            1,
            "a lost ack"
        );
        assert_eq!(
            checked(WorkloadKind::Consume, 5, 5, 4).len(),
            1,
            "a lost record"
        );
        assert_eq!(checked(WorkloadKind::E2e, 5, 5, 6).len(), 1, "a duplicate");
        // A produce run consumes nothing, and that is no error.
        assert!(checked(WorkloadKind::Produce, 5, 5, 0).is_empty());
    }

    /// QUIC bootstraps gain the scheme only where it is missing.
    #[test]
    fn quic_bootstrap_scheme() {
        assert_eq!(external_bootstrap("a:1,b:2", Transport::Tcp), "a:1,b:2");
        assert_eq!(
            external_bootstrap("a:1,quic://b:2", Transport::Quic),
            "quic://a:1,quic://b:2"
        );
    }
}
