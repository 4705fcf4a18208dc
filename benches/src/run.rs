//! One benchmark run from start to finish: broker, limits, workload, report.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::{Amount, TargetRate, Transport, WorkloadArgs, WorkloadKind};
use crate::embedded::{locate_skiffd, EmbeddedBroker};
use crate::keys::{KeyDistribution, KeySpace};
use crate::limits::{self, Limits};
use crate::procstat::{CpuTime, Process};
use crate::progress::Monitor;
use crate::report::{BrokerInfo, Counts, CpuReport, Machine, PartitionReport, Report, Throughput};
use crate::stats::PartitionCounts;
use crate::workload::driver::{Connector, ProducerSettings};
use crate::workload::{self, Clock, ConsumePlan, Live, ProducePlan};

/// Largest default probe: the page-cache probe must not fill a small disk.
const PROBE_BYTES_DEFAULT_MAX: u64 = 2_000_000_000;
/// Probe size for duration-based runs, whose payload is not known up front.
const PROBE_BYTES_FOR_DURATION: u64 = 1_000_000_000;
/// Bytes of the write + fdatasync probe.
const SYNC_PROBE_BYTES: u64 = 64 << 20;
/// Length of the saturation run behind `--rate saturation:F`.
const CALIBRATION: Duration = Duration::from_secs(3);

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
    let mut embedded = match &args.bootstrap {
        Some(_) => None,
        None => {
            let skiffd = locate_skiffd(args.skiffd.as_deref())?;
            Some(EmbeddedBroker::start(
                &skiffd,
                args.durability,
                args.data_parent.as_deref(),
            )?)
        }
    };
    let bootstrap = match (&args.bootstrap, &embedded) {
        (Some(bootstrap), _) => external_bootstrap(bootstrap, args.transport),
        (None, Some(broker)) => match args.transport {
            Transport::Tcp => broker.listening().tcp.to_string(),
            Transport::Quic => match broker.listening().quic {
                Some(quic) => format!("quic://{quic}"),
                None => bail!("the embedded skiffd did not open a QUIC listener"),
            },
        },
        (None, None) => bail!("neither --bootstrap nor an embedded broker"),
    };
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

    let limits = if args.no_limits {
        None
    } else {
        let probe_dir = match (&embedded, &args.data_parent) {
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
        Some(measured)
    };

    let connector = connect(Target {
        bootstrap: bootstrap.clone(),
        transport: args.transport,
        quic_cert: match &embedded {
            Some(broker) => Some(broker.data_dir().join(crate::embedded::QUIC_CERT_FILE)),
            None => args.quic_cert.clone(),
        },
    })
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
    let settings = ProducerSettings {
        batch_size_bytes: args.batch_size,
        linger: args.linger,
        acks: args.acks,
        compression: args.compression,
        max_in_flight: args.max_in_flight,
    };
    let mut produce_plan = ProducePlan {
        topics: topics.clone(),
        partitions: args.partitions,
        producers: args.producers,
        settings,
        keys: KeySpace::new(args.keys),
        seed: args.seed,
        message_size: args.message_size,
        rate_per_s: None,
        amount: args.amount(),
        warmup: args.warmup,
        stamp: kind == WorkloadKind::E2e,
    };
    produce_plan.rate_per_s = match args.rate {
        None => None,
        Some(TargetRate::RecordsPerSecond(rate)) => Some(rate),
        Some(TargetRate::FractionOfSaturation(fraction)) => Some(
            fraction
                * calibrate(&connector, &produce_plan, clock)
                    .await
                    .context("measuring the saturated rate")?,
        ),
    };
    let consume_plan = ConsumePlan {
        topics: topics.clone(),
        partitions: args.partitions,
        consumers: args.consumers,
        mode: args.consumer_mode,
        group_id: args
            .group_id
            .clone()
            .unwrap_or_else(|| format!("skiff-bench-{}", std::process::id())),
    };

    let live = Arc::new(Live::default());
    let broker_pid = embedded.as_ref().map(EmbeddedBroker::pid);
    let mut counts = Counts::default();
    let mut errors = Vec::new();
    let mut produce = None;
    let mut consume = None;
    let mut produce_latency = None;
    let mut e2e_latency = None;
    let partition_counts: PartitionCounts;

    // A consume run writes its data first, unmeasured by the CPU figures.
    if kind == WorkloadKind::Consume && !args.no_fill {
        let fill_plan = ProducePlan {
            warmup: Duration::ZERO,
            ..produce_plan.clone()
        };
        let fill = workload::produce_phase(&connector, &fill_plan, clock, &live).await?;
        counts.sent = fill.outcome.sent;
        counts.acked = fill.outcome.acked;
        counts.errors += fill.outcome.errors;
        errors.extend(fill.outcome.first_error.clone());
        produce = Some(Throughput::new(
            fill.outcome.measured_records,
            fill.outcome.measured_bytes,
            fill.measured_elapsed().as_secs_f64(),
            limits.as_ref(),
            true,
        ));
    }
    if kind == WorkloadKind::Consume {
        let ranges = connector
            .partition_ranges(&topics)
            .await
            .context("reading partition offsets")?;
        let available: i64 = ranges
            .iter()
            .map(|range| range.end_offset - range.start_offset)
            .sum();
        live.consume_target.store(available.max(0) as u64, Relaxed);
    }

    let metrics_address = embedded
        .as_ref()
        .and_then(|broker| broker.listening().metrics);
    let wire_before = wire_sample(metrics_address, &topics, &live);
    let monitor = Monitor::start(Arc::clone(&live), broker_pid, !args.quiet);
    let cpu_before = cpu_sample(broker_pid);
    let wall_start = Instant::now();
    match kind {
        WorkloadKind::Produce => {
            let phase = workload::produce_phase(&connector, &produce_plan, clock, &live).await?;
            produce = Some(Throughput::new(
                phase.outcome.measured_records,
                phase.outcome.measured_bytes,
                phase.measured_elapsed().as_secs_f64(),
                limits.as_ref(),
                true,
            ));
            counts.sent = phase.outcome.sent;
            counts.acked = phase.outcome.acked;
            counts.errors += phase.outcome.errors;
            errors.extend(phase.outcome.first_error);
            produce_latency = phase.outcome.latency.percentiles();
            partition_counts = phase.outcome.partitions;
        }
        WorkloadKind::Consume => {
            let running =
                workload::start_consumers(&connector, &consume_plan, false, clock, &live).await?;
            let phase = running.finish(&live).await?;
            consume = Some(Throughput::new(
                phase.outcome.measured_records,
                phase.outcome.measured_bytes,
                phase.measured_elapsed().as_secs_f64(),
                limits.as_ref(),
                false,
            ));
            counts.consumed = phase.outcome.consumed;
            counts.errors += phase.outcome.errors;
            errors.extend(phase.outcome.first_error);
            if args.no_fill {
                // Nothing was produced in this run; the topic's records stand in for "acked".
                counts.sent = live.consume_target.load(Relaxed);
                counts.acked = counts.sent;
            }
            partition_counts = phase.outcome.partitions;
        }
        WorkloadKind::E2e => {
            let running =
                workload::start_consumers(&connector, &consume_plan, true, clock, &live).await?;
            let phase = workload::produce_phase(&connector, &produce_plan, clock, &live).await?;
            let delivered = if args.acks.wire_value() == 0 {
                phase.outcome.sent
            } else {
                phase.outcome.acked
            };
            live.consume_target.store(delivered, Relaxed);
            let consumed = running.finish(&live).await?;
            produce = Some(Throughput::new(
                phase.outcome.measured_records,
                phase.outcome.measured_bytes,
                phase.measured_elapsed().as_secs_f64(),
                limits.as_ref(),
                true,
            ));
            consume = Some(Throughput::new(
                consumed.outcome.measured_records,
                consumed.outcome.measured_bytes,
                consumed.measured_elapsed().as_secs_f64(),
                limits.as_ref(),
                false,
            ));
            counts.sent = phase.outcome.sent;
            counts.acked = phase.outcome.acked;
            counts.consumed = consumed.outcome.consumed;
            counts.errors += phase.outcome.errors + consumed.outcome.errors;
            errors.extend(phase.outcome.first_error);
            errors.extend(consumed.outcome.first_error);
            produce_latency = phase.outcome.latency.percentiles();
            e2e_latency = consumed.outcome.e2e.percentiles();
            partition_counts = phase.outcome.partitions;
        }
    }
    let wall = wall_start.elapsed();
    let wire_after = wire_sample(metrics_address, &topics, &live);
    let (wire_in, wire_out) = match (wire_before, wire_after) {
        (Some(before), Some(after)) => (before.ratio_in(&after), before.ratio_out(&after)),
        _ => (None, None),
    };
    let produce = produce.map(|throughput| throughput.with_wire_ratio(wire_in));
    let consume = consume.map(|throughput| throughput.with_wire_ratio(wire_out));
    let cpu_after = cpu_sample(broker_pid);
    let rss_anon_max_kib = monitor.stop();
    if let Some(broker) = embedded.as_mut() {
        if !broker.is_running() {
            errors.push(format!(
                "the embedded skiffd exited during the run; its log:\n{}",
                broker.log_tail()
            ));
        }
    }
    if kind != WorkloadKind::Produce && counts.consumed != counts.acked {
        errors.push(format!(
            "consumed {} records but {} were acknowledged",
            counts.consumed, counts.acked
        ));
    }
    if counts.acked != counts.sent {
        errors.push(format!(
            "{} records sent but {} acknowledged",
            counts.sent, counts.acked
        ));
    }

    let headline = if kind == WorkloadKind::Consume {
        consume
    } else {
        produce
    };
    let client_cpu = cpu_after.0.since(&cpu_before.0).total().as_secs_f64();
    let broker_cpu = match (cpu_before.1, cpu_after.1) {
        (Some(before), Some(after)) => Some(after.since(&before).total().as_secs_f64()),
        _ => None,
    };
    let wall_s = wall.as_secs_f64().max(1e-9);
    Ok(Report {
        workload: format!("{kind:?}").to_lowercase(),
        scenario,
        command,
        settings: settings_json(args, &topics, produce_plan.rate_per_s),
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
        produce_latency_us: produce_latency,
        e2e_latency_us: e2e_latency,
        counts,
        partitions: PartitionReport::new(
            &partition_counts,
            &topics,
            headline.map(|t| t.seconds).unwrap_or(0.0),
        ),
        cpu: CpuReport {
            wall_s,
            client_s: client_cpu,
            broker_s: broker_cpu,
            client_cores: client_cpu / wall_s,
            broker_cores: broker_cpu.map(|seconds| seconds / wall_s),
        },
        broker_rss_anon_max_mib: broker_pid.map(|_| rss_anon_max_kib as f64 / 1024.0),
        errors,
    })
}

/// Runs the producers unpaced for [`CALIBRATION`] on separate topics and
/// returns their records/s, the "saturated rate".
async fn calibrate<C: Connector>(connector: &C, plan: &ProducePlan, clock: Clock) -> Result<f64> {
    let topics: Vec<String> = plan
        .topics
        .iter()
        .map(|topic| format!("{topic}-calibration"))
        .collect();
    connector.create_topics(&topics, plan.partitions).await?;
    let calibration = ProducePlan {
        topics,
        rate_per_s: None,
        amount: Amount::Duration(CALIBRATION),
        warmup: Duration::from_millis(500),
        stamp: false,
        ..plan.clone()
    };
    let phase =
        workload::produce_phase(connector, &calibration, clock, &Arc::new(Live::default())).await?;
    if let Some(error) = phase.outcome.first_error {
        bail!("calibration run failed: {error}");
    }
    let seconds = phase.measured_elapsed().as_secs_f64();
    if phase.outcome.measured_records == 0 || seconds <= 0.0 {
        bail!("calibration run acknowledged nothing");
    }
    Ok(phase.outcome.measured_records as f64 / seconds)
}

/// Broker batch bytes and client payload bytes at one moment.
struct WireSample {
    batch_in: u64,
    batch_out: u64,
    payload_in: u64,
    payload_out: u64,
}

impl WireSample {
    fn ratio(batch: u64, payload: u64) -> Option<f64> {
        (payload > 0 && batch > 0).then(|| batch as f64 / payload as f64)
    }

    fn ratio_in(&self, after: &WireSample) -> Option<f64> {
        Self::ratio(
            after.batch_in.saturating_sub(self.batch_in),
            after.payload_in.saturating_sub(self.payload_in),
        )
    }

    fn ratio_out(&self, after: &WireSample) -> Option<f64> {
        Self::ratio(
            after.batch_out.saturating_sub(self.batch_out),
            after.payload_out.saturating_sub(self.payload_out),
        )
    }
}

/// Scrapes the embedded broker's counters; `None` without metrics (or on failure:
/// wire figures are a bonus, not a reason to fail a run).
fn wire_sample(
    metrics: Option<std::net::SocketAddr>,
    topics: &[String],
    live: &Live,
) -> Option<WireSample> {
    let text = crate::metrics::scrape(metrics?).ok()?;
    Some(WireSample {
        batch_in: crate::metrics::sum_for_topics(&text, crate::metrics::BYTES_IN, topics),
        batch_out: crate::metrics::sum_for_topics(&text, crate::metrics::BYTES_OUT, topics),
        payload_in: live.acked_bytes.load(Relaxed),
        payload_out: live.consumed_bytes.load(Relaxed),
    })
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

fn settings_json(args: &WorkloadArgs, topics: &[String], rate: Option<f64>) -> serde_json::Value {
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
        "batch_size": args.batch_size,
        "linger_ms": args.linger.as_secs_f64() * 1e3,
        "acks": args.acks.wire_value(),
        "compression": args.compression,
        "max_in_flight": args.max_in_flight,
        "rate_per_s": rate,
        "amount": args.amount(),
        "warmup_s": args.warmup.as_secs_f64(),
        "transport": args.transport,
        "durability": args.durability,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
