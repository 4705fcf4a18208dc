//! Broker metrics and their Prometheus text rendering.
//!
//! Counters are atomics updated on the request path without locks, except
//! the per-partition table, which is looked up once per partition per
//! request (never per record). The `/metrics` HTTP endpoint lives in
//! [`crate::server::http`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds (seconds) of the request latency histogram buckets.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_SECONDS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            elapsed.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

/// Selects one counter of a [`PartitionMetrics`].
type CounterOf = fn(&PartitionMetrics) -> &AtomicU64;

/// Traffic of one topic-partition.
#[derive(Debug, Default)]
pub struct PartitionMetrics {
    pub bytes_in: AtomicU64,
    pub records_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub records_out: AtomicU64,
}

#[derive(Debug, Default)]
struct ApiMetrics {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
}

/// Every metric the broker exports.
#[derive(Debug, Default)]
pub struct Metrics {
    connections_open: AtomicI64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    frames_rejected: AtomicU64,
    apis: Mutex<BTreeMap<(&'static str, i16), Arc<ApiMetrics>>>,
    partitions: Mutex<BTreeMap<(String, i32), Arc<PartitionMetrics>>>,
}

/// Decrements the open-connection gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            metrics: Arc::clone(self),
        }
    }

    pub fn connections_open(&self) -> i64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn frame_rejected(&self) {
        self.frames_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one request of `api` (its Kafka name and key) taking `elapsed`.
    pub fn request(&self, api: &'static str, api_key: i16, elapsed: Duration, failed: bool) {
        let entry = {
            let mut apis = self.apis.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(apis.entry((api, api_key)).or_default())
        };
        entry.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            entry.errors.fetch_add(1, Ordering::Relaxed);
        }
        entry.latency.observe(elapsed);
    }

    /// The counters of one partition, created on first use.
    pub fn partition(&self, topic: &str, partition: i32) -> Arc<PartitionMetrics> {
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = partitions.get(&(topic.to_string(), partition)) {
            return Arc::clone(found);
        }
        Arc::clone(
            partitions
                .entry((topic.to_string(), partition))
                .or_default(),
        )
    }

    pub fn forget_topic(&self, topic: &str) {
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        partitions.retain(|(name, _), _| name != topic);
    }

    /// Renders everything in the Prometheus text exposition format (0.0.4).
    /// `log_end_offsets` are sampled by the caller at scrape time.
    pub fn render(&self, log_end_offsets: &[(String, i32, i64, i64)]) -> String {
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "skiff_connections_open",
            "Open client connections.",
            "gauge",
            self.connections_open.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "skiff_connections_total",
            "Connections accepted.",
            "counter",
            self.connections_total.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "skiff_connections_refused_total",
            "Connections refused at the limit.",
            "counter",
            self.connections_refused.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "skiff_frames_rejected_total",
            "Frames rejected as oversized or unparseable.",
            "counter",
            self.frames_rejected.load(Ordering::Relaxed).to_string(),
        );
        self.render_apis(&mut out);
        self.render_partitions(&mut out, log_end_offsets);
        out
    }

    fn render_apis(&self, out: &mut String) {
        let apis: Vec<_> = {
            let apis = self.apis.lock().unwrap_or_else(PoisonError::into_inner);
            apis.iter().map(|(k, v)| (*k, Arc::clone(v))).collect()
        };
        let _ = writeln!(out, "# HELP skiff_requests_total Requests handled, per API.\n# TYPE skiff_requests_total counter");
        for ((name, key), api) in &apis {
            let _ = writeln!(
                out,
                "skiff_requests_total{{api=\"{name}\",api_key=\"{key}\"}} {}",
                api.requests.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP skiff_request_errors_total Requests that failed as a whole, per API.\n# TYPE skiff_request_errors_total counter");
        for ((name, key), api) in &apis {
            let _ = writeln!(
                out,
                "skiff_request_errors_total{{api=\"{name}\",api_key=\"{key}\"}} {}",
                api.errors.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP skiff_request_duration_seconds Request handling latency, per API.\n# TYPE skiff_request_duration_seconds histogram");
        for ((name, _), api) in &apis {
            let h = &api.latency;
            for (bucket, bound) in h.buckets.iter().zip(LATENCY_BUCKETS_SECONDS) {
                let _ = writeln!(
                    out,
                    "skiff_request_duration_seconds_bucket{{api=\"{name}\",le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "skiff_request_duration_seconds_bucket{{api=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "skiff_request_duration_seconds_sum{{api=\"{name}\"}} {}",
                h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "skiff_request_duration_seconds_count{{api=\"{name}\"}} {count}"
            );
        }
    }

    fn render_partitions(&self, out: &mut String, log_end_offsets: &[(String, i32, i64, i64)]) {
        let partitions: Vec<_> = {
            let partitions = self
                .partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            partitions
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        let series: [(&str, &str, CounterOf); 4] = [
            (
                "skiff_partition_bytes_in_total",
                "Record batch bytes appended.",
                |p| &p.bytes_in,
            ),
            (
                "skiff_partition_records_in_total",
                "Records appended.",
                |p| &p.records_in,
            ),
            (
                "skiff_partition_bytes_out_total",
                "Record batch bytes served to fetchers.",
                |p| &p.bytes_out,
            ),
            (
                "skiff_partition_records_out_total",
                "Records served to fetchers (whole batches).",
                |p| &p.records_out,
            ),
        ];
        for (name, help, field) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((topic, partition), metrics) in &partitions {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {}",
                    field(metrics).load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP skiff_log_end_offset Next offset to be assigned.\n# TYPE skiff_log_end_offset gauge");
        for (topic, partition, _, end) in log_end_offsets {
            let _ = writeln!(
                out,
                "skiff_log_end_offset{{topic=\"{topic}\",partition=\"{partition}\"}} {end}"
            );
        }
        let _ = writeln!(out, "# HELP skiff_log_start_offset First offset still stored.\n# TYPE skiff_log_start_offset gauge");
        for (topic, partition, start, _) in log_end_offsets {
            let _ = writeln!(
                out,
                "skiff_log_start_offset{{topic=\"{topic}\",partition=\"{partition}\"}} {start}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request lands in exactly the buckets at or above its latency, and the text is well formed.
    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.request("Produce", 0, Duration::from_micros(700), false);
        let text = metrics.render(&[("t".to_string(), 0, 0, 42)]);
        assert!(
            text.contains("skiff_request_duration_seconds_bucket{api=\"Produce\",le=\"0.0005\"} 0")
        );
        assert!(
            text.contains("skiff_request_duration_seconds_bucket{api=\"Produce\",le=\"0.001\"} 1")
        );
        assert!(
            text.contains("skiff_request_duration_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 1")
        );
        assert!(text.contains("skiff_requests_total{api=\"Produce\",api_key=\"0\"} 1"));
        assert!(text.contains("skiff_log_end_offset{topic=\"t\",partition=\"0\"} 42"));
    }
}
