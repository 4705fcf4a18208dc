//! The result of a run: a JSON document for scripts and a table for people.
//!
//! Top-level `records_per_s` and `mb_per_s` are the workload's headline
//! throughput: producing for `produce` and `e2e`, consuming for `consume`.
//! Throughputs are payload bytes (record values) in decimal MB/s; every one is
//! also given as a fraction of the limits measured in the same run.

use std::fmt::Write as _;

use serde::Serialize;

use crate::limits::Limits;
use crate::stats::{PartitionCounts, Percentiles};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub workload: String,
    pub scenario: Option<String>,
    pub command: String,
    pub settings: serde_json::Value,
    pub machine: Machine,
    pub broker: BrokerInfo,
    pub limits: Option<Limits>,
    pub loopback_limit_mb_per_s: Option<f64>,
    pub page_cache_limit_mb_per_s: Option<f64>,
    pub fdatasync_limit_mb_per_s: Option<f64>,

    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub fraction_of_loopback: Option<f64>,
    pub fraction_of_page_cache: Option<f64>,
    /// Record-batch bytes the broker appended (produce) and served (consume)
    /// per payload byte, from its /metrics counters; embedded broker only.
    pub wire_bytes_per_payload_byte_in: Option<f64>,
    pub wire_bytes_per_payload_byte_out: Option<f64>,

    pub produce: Option<Throughput>,
    pub consume: Option<Throughput>,
    /// Target rate the producers were paced at (records/s), if any.
    pub target_rate_per_s: Option<f64>,
    pub produce_latency_us: Option<Percentiles>,
    pub e2e_latency_us: Option<Percentiles>,

    pub counts: Counts,
    pub partitions: PartitionReport,
    pub cpu: CpuReport,
    pub broker_rss_anon_max_mib: Option<f64>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub memory_total_mib: u64,
}

impl Machine {
    /// What /proc says about this machine.
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                line.strip_prefix("model name")
                    .and_then(|rest| rest.split_once(':'))
            })
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_total_mib =
            crate::procstat::parse_status_kib(&meminfo, "MemTotal").unwrap_or(0) / 1024;
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|count| count.get())
                .unwrap_or(1),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cpu_model,
            memory_total_mib,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BrokerInfo {
    /// "embedded" (a private skiffd) or "external" (--bootstrap).
    pub kind: String,
    pub bootstrap: String,
    pub durability: Option<String>,
}

/// Throughput of one direction over its measured interval.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Throughput {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub fraction_of_loopback: Option<f64>,
    pub fraction_of_page_cache: Option<f64>,
    /// Record-batch bytes per second as the broker counted them (payload plus
    /// keys and framing); embedded broker only.
    pub wire_mb_per_s: Option<f64>,
}

impl Throughput {
    pub fn new(
        records: u64,
        bytes: u64,
        seconds: f64,
        limits: Option<&Limits>,
        writes_to_disk: bool,
    ) -> Self {
        let per_s = |value: f64| if seconds > 0.0 { value / seconds } else { 0.0 };
        let mb_per_s = per_s(bytes as f64) / crate::units::BYTES_PER_MB;
        Throughput {
            records,
            bytes,
            seconds,
            records_per_s: per_s(records as f64),
            mb_per_s,
            fraction_of_loopback: limits.map(|limits| mb_per_s / limits.loopback_tcp.mb_per_s),
            fraction_of_page_cache: limits
                .filter(|_| writes_to_disk)
                .map(|limits| mb_per_s / limits.page_cache_write.mb_per_s),
            wire_mb_per_s: None,
        }
    }

    /// Adds the wire rate from the broker's batch bytes per payload byte.
    pub fn with_wire_ratio(mut self, wire_bytes_per_payload_byte: Option<f64>) -> Self {
        self.wire_mb_per_s = wire_bytes_per_payload_byte.map(|ratio| ratio * self.mb_per_s);
        self
    }
}

/// Records over the whole run, warm-up included.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub acked: u64,
    pub consumed: u64,
    pub errors: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionReport {
    pub count: usize,
    /// Records per partition: produced (acked) for produce/e2e, consumed for consume.
    pub records: Vec<PartitionRecords>,
    pub hottest: Option<PartitionRecords>,
    /// The hottest partition's share of all records; 1/count when perfectly even.
    pub hottest_share: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PartitionRecords {
    pub topic: String,
    pub partition: i32,
    pub records: u64,
    /// Records per second of the run's headline interval (warm-up included in
    /// the count, so an approximation for runs with a long warm-up).
    pub records_per_s: f64,
}

impl PartitionReport {
    pub fn new(counts: &PartitionCounts, topics: &[String], seconds: f64) -> Self {
        let name = |index: usize| topics.get(index).cloned().unwrap_or_default();
        let records: Vec<PartitionRecords> = counts
            .iter()
            .map(|(topic, partition, records)| PartitionRecords {
                topic: name(topic),
                partition,
                records,
                records_per_s: if seconds > 0.0 {
                    records as f64 / seconds
                } else {
                    0.0
                },
            })
            .collect();
        let hottest = counts.hottest();
        PartitionReport {
            count: records.len(),
            hottest: hottest.and_then(|(topic, partition, _)| {
                records
                    .iter()
                    .find(|entry| entry.topic == name(topic) && entry.partition == partition)
                    .cloned()
            }),
            hottest_share: hottest.map(|(_, _, share)| share),
            records,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CpuReport {
    /// Wall-clock seconds of the measured workload.
    pub wall_s: f64,
    pub client_s: f64,
    pub broker_s: Option<f64>,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub client_cores: f64,
    pub broker_cores: Option<f64>,
}

impl Report {
    /// Internal consistency a script can rely on: every record sent was
    /// acknowledged (and, where consumed, consumed exactly once), no errors.
    pub fn is_consistent(&self) -> bool {
        let consumed_ok = self.consume.is_none() || self.counts.consumed == self.counts.acked;
        self.errors.is_empty()
            && self.counts.errors == 0
            && self.counts.sent == self.counts.acked
            && consumed_ok
    }

    /// The human table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let scenario = self
            .scenario
            .as_deref()
            .map(|name| format!(" (scenario {name})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n== skiff-bench {}{scenario} against {} broker {}",
            self.workload, self.broker.kind, self.broker.bootstrap
        );
        let _ = writeln!(out, "   {}", self.command);
        let _ = writeln!(
            out,
            "   machine: {} CPUs, {} MiB, {}, kernel {}",
            self.machine.cpus,
            self.machine.memory_total_mib,
            self.machine.cpu_model,
            self.machine.kernel
        );
        let setting = |name: &str| self.settings.get(name).and_then(serde_json::Value::as_u64);
        if let (Some(threads), Some(fetch)) =
            (setting("client_threads"), setting("partition_fetch_bytes"))
        {
            let per_send = setting("records_per_send").unwrap_or(1);
            let _ = writeln!(
                out,
                "   client:  {threads} worker thread(s), fetches up to {} KiB per partition, {per_send} record(s) per send",
                fetch / 1024
            );
        }
        if let Some(limits) = &self.limits {
            let _ = writeln!(
                out,
                "   limits:  loopback TCP {:.0} MB/s | page-cache write {:.0} MB/s | write+fdatasync {:.0} MB/s",
                limits.loopback_tcp.mb_per_s, limits.page_cache_write.mb_per_s, limits.fdatasync_write.mb_per_s
            );
        }
        let _ = writeln!(
            out,
            "\n{:<10} {:>12} {:>10} {:>10} {:>9} {:>12} {:>12} {:>10}",
            "direction",
            "records/s",
            "MB/s",
            "wire MB/s",
            "seconds",
            "of loopback",
            "of pagecache",
            "records"
        );
        for (name, throughput) in [("produce", &self.produce), ("consume", &self.consume)] {
            if let Some(t) = throughput {
                let percent = |fraction: Option<f64>| {
                    fraction
                        .map(|f| format!("{:.1}%", f * 100.0))
                        .unwrap_or_else(|| "-".into())
                };
                let _ = writeln!(
                    out,
                    "{:<10} {:>12.0} {:>10.1} {:>10} {:>9.2} {:>12} {:>12} {:>10}",
                    name,
                    t.records_per_s,
                    t.mb_per_s,
                    t.wire_mb_per_s
                        .map(|wire| format!("{wire:.1}"))
                        .unwrap_or_else(|| "-".into()),
                    t.seconds,
                    percent(t.fraction_of_loopback),
                    percent(t.fraction_of_page_cache),
                    t.records
                );
            }
        }
        if let Some(rate) = self.target_rate_per_s {
            let _ = writeln!(out, "(producers paced at {rate:.0} records/s in total)");
        }
        if self.produce_latency_us.is_some() || self.e2e_latency_us.is_some() {
            let _ = writeln!(
                out,
                "\n{:<16} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
                "latency (µs)", "p50", "p90", "p99", "p99.9", "max", "samples"
            );
        }
        for (name, latency) in [
            ("produce-ack", &self.produce_latency_us),
            ("end-to-end", &self.e2e_latency_us),
        ] {
            if let Some(p) = latency {
                let _ = writeln!(
                    out,
                    "{:<16} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
                    name, p.p50, p.p90, p.p99, p.p99_9, p.max, p.count
                );
            }
        }
        let c = &self.counts;
        let _ = writeln!(
            out,
            "\nrecords: sent {} acked {} consumed {} errors {}",
            c.sent, c.acked, c.consumed, c.errors
        );
        if let (Some(hottest), Some(share)) =
            (&self.partitions.hottest, self.partitions.hottest_share)
        {
            let _ = writeln!(
                out,
                "partitions: {}; hottest {}-{} has {:.1}% of records (even share {:.1}%)",
                self.partitions.count,
                hottest.topic,
                hottest.partition,
                share * 100.0,
                100.0 / self.partitions.count.max(1) as f64
            );
        }
        let cpu = &self.cpu;
        let broker_cpu = match (cpu.broker_s, cpu.broker_cores) {
            (Some(seconds), Some(cores)) => format!("broker {seconds:.2} s ({cores:.2} cores)"),
            _ => "broker n/a (external)".into(),
        };
        let _ = writeln!(
            out,
            "cpu: client {:.2} s ({:.2} cores), {broker_cpu} over {:.2} s",
            cpu.client_s, cpu.client_cores, cpu.wall_s
        );
        if let Some(rss) = self.broker_rss_anon_max_mib {
            let _ = writeln!(out, "broker RssAnon max: {rss:.1} MiB");
        }
        for error in &self.errors {
            let _ = writeln!(out, "ERROR: {error}");
        }
        out
    }
}
