//! The embedded broker's Prometheus counters, for bytes on the wire.
//!
//! The client reports payload (record values); the broker counts the record
//! batch bytes it appended and served (`skiff_partition_bytes_in_total`,
//! `skiff_partition_bytes_out_total` per topic and partition), i.e. payload
//! plus keys, record and batch framing. Their ratio to the payload gives the
//! wire figures without instrumenting the client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;

use anyhow::{bail, Context, Result};

pub const BYTES_IN: &str = "skiff_partition_bytes_in_total";
pub const BYTES_OUT: &str = "skiff_partition_bytes_out_total";

/// Longest time a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest metrics page read.
const SCRAPE_BYTES_MAX: u64 = 64 << 20;

/// GET /metrics from `address` (HTTP/1.0, so the body ends at EOF).
pub fn scrape(address: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, SCRAPE_TIMEOUT)
        .with_context(|| format!("connecting to metrics at {address}"))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream
        .take(SCRAPE_BYTES_MAX)
        .read_to_string(&mut response)
        .context("reading the metrics page")?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("metrics answer has no header end");
    };
    let status_ok = head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200");
    if !status_ok {
        bail!(
            "metrics answered {:?}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_string())
}

/// Sum of counter `name` over the samples whose `topic` label is one of `topics`.
pub fn sum_for_topics(text: &str, name: &str, topics: &[String]) -> u64 {
    let mut total = 0u64;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(labels_end) = rest
            .strip_prefix('{')
            .and_then(|labels| labels.find('}').map(|end| (labels, end)))
        else {
            continue;
        };
        let (labels, end) = labels_end;
        let topic = labels[..end].split(',').find_map(|label| {
            label
                .strip_prefix("topic=\"")
                .and_then(|value| value.strip_suffix('"'))
        });
        if !topic.is_some_and(|topic| topics.iter().any(|wanted| wanted == topic)) {
            continue;
        }
        if let Some(value) = labels[end + 1..]
            .split_whitespace()
            .next()
            .and_then(|value| value.parse::<f64>().ok())
        {
            total += value as u64;
        }
    }
    total
}

/// Broker batch bytes and client payload bytes at one moment.
pub struct WireSample {
    batch_in: u64,
    batch_out: u64,
    payload_in: u64,
    payload_out: u64,
}

impl WireSample {
    fn ratio(batch: u64, payload: u64) -> Option<f64> {
        (payload > 0 && batch > 0).then(|| batch as f64 / payload as f64)
    }

    pub fn ratio_in(&self, after: &WireSample) -> Option<f64> {
        Self::ratio(
            after.batch_in.saturating_sub(self.batch_in),
            after.payload_in.saturating_sub(self.payload_in),
        )
    }

    pub fn ratio_out(&self, after: &WireSample) -> Option<f64> {
        Self::ratio(
            after.batch_out.saturating_sub(self.batch_out),
            after.payload_out.saturating_sub(self.payload_out),
        )
    }
}

/// Scrapes the embedded broker's counters; `None` without metrics (or on failure:
/// wire figures are a bonus, not a reason to fail a run).
pub fn wire_sample(
    metrics: Option<std::net::SocketAddr>,
    topics: &[String],
    live: &crate::workload::Live,
) -> Option<WireSample> {
    let text = scrape(metrics?).ok()?;
    Some(WireSample {
        batch_in: sum_for_topics(&text, BYTES_IN, topics),
        batch_out: sum_for_topics(&text, BYTES_OUT, topics),
        payload_in: live.acked_bytes.load(Relaxed),
        payload_out: live.consumed_bytes.load(Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the named counter of the named topics is summed.
    #[test]
    fn sums_per_topic_samples() {
        let text = "# HELP skiff_partition_bytes_in_total x\n\
                    skiff_partition_bytes_in_total{topic=\"a\",partition=\"0\"} 100\n\
                    skiff_partition_bytes_in_total{topic=\"a\",partition=\"1\"} 50\n\
                    skiff_partition_bytes_in_total{topic=\"ab\",partition=\"0\"} 7\n\
                    skiff_partition_bytes_out_total{topic=\"a\",partition=\"0\"} 9\n\
                    skiff_partition_bytes_in_total_extra{topic=\"a\"} 1000\n";
        assert_eq!(sum_for_topics(text, BYTES_IN, &["a".to_string()]), 150);
        assert_eq!(
            sum_for_topics(text, BYTES_IN, &["a".to_string(), "ab".to_string()]),
            157
        );
        assert_eq!(sum_for_topics(text, BYTES_OUT, &["a".to_string()]), 9);
        assert_eq!(sum_for_topics(text, BYTES_OUT, &["zzz".to_string()]), 0);
    }

    /// A non-HTTP answer is an error, not an empty page.
    #[test]
    fn scrape_refuses_garbage() -> Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let server = std::thread::spawn(move || -> Result<()> {
            let (mut stream, _) = listener.accept()?;
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request)?;
            stream.write_all(b"hello there")?;
            Ok(())
        });
        assert!(scrape(address).is_err());
        let _ = server.join();
        Ok(())
    }
}
