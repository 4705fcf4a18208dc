//! Measurements of one run: HDR latency histograms and per-partition counts.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency a histogram tracks (larger values are clamped to it).
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        let histogram = match Histogram::new_with_bounds(1, LATENCY_MAX_US, 3) {
            Ok(histogram) => histogram,
            // The bounds are constants that hdrhistogram accepts; reaching this is a bug.
            Err(error) => panic!("latency histogram bounds rejected: {error}"),
        };
        Latency { histogram }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        // `saturating_record` cannot fail: the value is clamped into range.
        self.histogram.saturating_record(micros);
    }

    /// Records `count` samples of the same latency.
    pub fn record_n(&mut self, latency: Duration, count: u64) {
        let micros = (latency.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        self.histogram.saturating_record_n(micros, count);
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so `add` cannot fail; keep the first error visible anyway.
        if let Err(error) = self.histogram.add(&other.histogram) {
            panic!("merging latency histograms with equal bounds failed: {error}");
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.histogram.is_empty() {
            return None;
        }
        let at = |quantile: f64| self.histogram.value_at_quantile(quantile);
        Some(Percentiles {
            count: self.histogram.len(),
            mean: self.histogram.mean(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p99_9: at(0.999),
            max: self.histogram.max(),
        })
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

/// Records and payload bytes per (topic index, partition).
#[derive(Clone, Debug, Default)]
pub struct PartitionCounts {
    /// Indexed by `topic_index * partitions_per_topic + partition`.
    records: Vec<u64>,
    partitions_per_topic: usize,
}

impl PartitionCounts {
    pub fn new(topics: usize, partitions_per_topic: u32) -> Self {
        PartitionCounts {
            records: vec![0; topics * partitions_per_topic as usize],
            partitions_per_topic: partitions_per_topic as usize,
        }
    }

    /// Counts one record; partitions outside the expected range (a broker
    /// that answered with another partition) are returned as an error count.
    pub fn add(&mut self, topic_index: usize, partition: i32, records: u64) -> bool {
        let Ok(partition) = usize::try_from(partition) else {
            return false;
        };
        if partition >= self.partitions_per_topic {
            return false;
        }
        match self
            .records
            .get_mut(topic_index * self.partitions_per_topic + partition)
        {
            Some(slot) => {
                *slot += records;
                true
            }
            None => false,
        }
    }

    pub fn merge(&mut self, other: &PartitionCounts) {
        assert_eq!(
            self.records.len(),
            other.records.len(),
            "merging counts of different layouts"
        );
        for (mine, theirs) in self.records.iter_mut().zip(&other.records) {
            *mine += theirs;
        }
    }

    pub fn total(&self) -> u64 {
        self.records.iter().sum()
    }

    /// (topic index, partition, records) of every partition.
    pub fn iter(&self) -> impl Iterator<Item = (usize, i32, u64)> + '_ {
        let per_topic = self.partitions_per_topic.max(1);
        self.records
            .iter()
            .enumerate()
            .map(move |(index, &records)| (index / per_topic, (index % per_topic) as i32, records))
    }

    /// The busiest partition and its share of all records (1/partitions when even).
    pub fn hottest(&self) -> Option<(usize, i32, f64)> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        self.iter()
            .max_by_key(|&(_, _, records)| records)
            .map(|(topic, partition, records)| (topic, partition, records as f64 / total as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles come from what was recorded, in microseconds, and merge adds up.
    #[test]
    fn latency_percentiles() {
        let mut first = Latency::new();
        assert!(first.percentiles().is_none());
        for micros in 1..=1000u64 {
            first.record(Duration::from_micros(micros));
        }
        let mut second = Latency::new();
        second.record(Duration::from_secs(2));
        first.merge(&second);
        let percentiles = first.percentiles();
        assert!(percentiles.is_some());
        if let Some(p) = percentiles {
            assert_eq!(p.count, 1001);
            assert!((499..=501).contains(&p.p50), "p50 {}", p.p50);
            assert!((989..=991).contains(&p.p99), "p99 {}", p.p99);
            assert!(p.max >= 1_999_000 && p.max <= 2_001_000, "max {}", p.max);
        }
        // Sub-microsecond and absurd values are clamped, not dropped.
        first.record(Duration::from_nanos(10));
        first.record(Duration::from_secs(100_000));
        assert_eq!(first.count(), 1003);
    }

    /// Per-partition counts locate the hottest partition and its share.
    #[test]
    fn partition_shares() {
        let mut counts = PartitionCounts::new(2, 4);
        assert!(counts.hottest().is_none());
        assert!(counts.add(0, 1, 10));
        assert!(counts.add(1, 3, 30));
        assert!(!counts.add(0, 4, 1), "partition beyond the topic's count");
        assert!(!counts.add(2, 0, 1), "topic beyond the run's count");
        assert!(!counts.add(0, -1, 1));
        let mut other = PartitionCounts::new(2, 4);
        other.add(1, 3, 60);
        counts.merge(&other);
        assert_eq!(counts.total(), 100);
        assert_eq!(counts.hottest(), Some((1, 3, 0.9)));
        assert_eq!(counts.iter().count(), 8);
    }
}
