//! One producer task: paced sends, keys, and acknowledgement latency.
//!
//! Acknowledgements are kept in send order and checked after every send; a
//! Kafka connection answers requests in order, so the oldest pending ack is
//! (nearly always) the next to complete. While waiting for the next intended
//! send time the task waits on that oldest ack too, so an ack is timed when it
//! arrives, not when the sender next looks.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::driver::{Ack, BenchProducer};
use super::{Clock, Live};
use crate::keys::KeyGenerator;
use crate::pacer::Pacer;
use crate::stats::{Latency, PartitionCounts};

/// When a producer stops sending.
#[derive(Clone, Copy, Debug)]
pub enum StopRule {
    /// Records intended at or after this instant are not sent.
    Until(Instant),
    /// After this many measured (post-warm-up) records.
    Records(u64),
}

/// Everything one producer task needs.
pub struct ProducerJob {
    pub topics: usize,
    pub partitions: u32,
    pub start: Instant,
    pub measure_start: Instant,
    pub stop: StopRule,
    pub rate_per_s: Option<f64>,
    pub keys: KeyGenerator,
    pub payload: Bytes,
    /// Write the intended send time (unix ns, big-endian) into the first 8 value bytes.
    pub stamp: bool,
    pub clock: Clock,
    pub live: Arc<Live>,
}

/// What one producer task measured.
#[derive(Debug)]
pub struct ProducerOutcome {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub measured_records: u64,
    pub measured_bytes: u64,
    pub last_measured_ack: Option<Instant>,
    pub latency: Latency,
    pub partitions: PartitionCounts,
}

struct Pending {
    intended: Instant,
    topic_index: usize,
    bytes: u64,
    measured: bool,
}

impl ProducerOutcome {
    /// `now` is when the ack was seen: the caller reads the clock once for
    /// all the acks of a batch that complete together.
    fn record(&mut self, result: anyhow::Result<Ack>, pending: Pending, now: Instant, live: &Live) {
        match result {
            Ok(ack) => {
                self.acked += 1;
                live.acked.fetch_add(1, Relaxed);
                live.acked_bytes.fetch_add(pending.bytes, Relaxed);
                if !self.partitions.add(pending.topic_index, ack.partition, 1) {
                    self.error(
                        format!("ack names partition {} outside the topic", ack.partition),
                        live,
                    );
                }
                if pending.measured {
                    self.latency.record(now - pending.intended);
                    self.measured_records += 1;
                    self.measured_bytes += pending.bytes;
                    self.last_measured_ack = Some(now);
                }
            }
            Err(error) => self.error(format!("produce failed: {error:#}"), live),
        }
    }

    fn error(&mut self, message: String, live: &Live) {
        self.errors += 1;
        live.errors.fetch_add(1, Relaxed);
        self.first_error.get_or_insert(message);
    }
}

/// Runs one producer until its stop rule, then flushes and awaits every ack.
pub async fn run<P: BenchProducer>(mut producer: P, mut job: ProducerJob) -> ProducerOutcome {
    let mut outcome = ProducerOutcome {
        sent: 0,
        acked: 0,
        errors: 0,
        first_error: None,
        measured_records: 0,
        measured_bytes: 0,
        last_measured_ack: None,
        latency: Latency::new(),
        partitions: PartitionCounts::new(job.topics, job.partitions),
    };
    let live = Arc::clone(&job.live);
    let mut pacer = Pacer::new(job.start, job.rate_per_s);
    let mut pending: VecDeque<(P::AckFuture, Pending)> = VecDeque::new();
    let mut measured_sent = 0u64;
    let record_bytes = job.payload.len() as u64;
    loop {
        let now = Instant::now();
        if live.abort.load(Relaxed) {
            break;
        }
        let intended = pacer.next_intended(now);
        match job.stop {
            StopRule::Until(deadline) if intended >= deadline => break,
            StopRule::Records(count) if measured_sent >= count => break,
            _ => {}
        }
        // Wait for the intended send time, timing acks that arrive meanwhile
        // (unpaced, `intended` is `now`: no second clock read).
        while intended > now && intended > Instant::now() {
            let step = match pending.front_mut() {
                Some((ack, _)) => tokio::select! {
                    biased;
                    result = ack => Some(result),
                    () = tokio::time::sleep_until(intended.into()) => None,
                },
                None => {
                    tokio::time::sleep_until(intended.into()).await;
                    None
                }
            };
            if let Some(result) = step {
                if let Some((_, meta)) = pending.pop_front() {
                    outcome.record(result, meta, Instant::now(), &live);
                }
            }
        }
        let topic_index = (outcome.sent % job.topics as u64) as usize;
        let measured = intended >= job.measure_start;
        let value = if job.stamp {
            stamped_value(&job.payload, job.clock.unix_ns(intended))
        } else {
            job.payload.clone()
        };
        let key = job.keys.next_key();
        let timestamp_ms = job.clock.unix_ms(intended);
        // While `send` waits for buffer space, keep timing the acks that free it.
        let send = producer.send(topic_index, key, value, timestamp_ms);
        tokio::pin!(send);
        let sent = loop {
            let step = match pending.front_mut() {
                Some((ack, _)) => tokio::select! {
                    biased;
                    result = &mut send => Ok(result),
                    result = ack => Err(result),
                },
                None => Ok((&mut send).await),
            };
            match step {
                Ok(sent) => break sent,
                Err(result) => {
                    if let Some((_, meta)) = pending.pop_front() {
                        outcome.record(result, meta, Instant::now(), &live);
                    }
                }
            }
        };
        match sent {
            Ok(ack) => {
                pending.push_back((
                    ack,
                    Pending {
                        intended,
                        topic_index,
                        bytes: record_bytes,
                        measured,
                    },
                ));
                outcome.sent += 1;
                live.sent.fetch_add(1, Relaxed);
                if measured {
                    measured_sent += 1;
                }
            }
            Err(error) => {
                outcome.error(format!("send failed: {error:#}"), &live);
                break;
            }
        }
        drain_ready(&mut pending, &mut outcome, &live).await;
    }
    if let Err(error) = producer.flush().await {
        outcome.error(format!("flush failed: {error:#}"), &live);
    }
    while let Some((ack, meta)) = pending.pop_front() {
        let result = ack.await;
        outcome.record(result, meta, Instant::now(), &live);
        drain_ready(&mut pending, &mut outcome, &live).await;
    }
    outcome
}

/// Records every already-completed ack at the front of the queue.
async fn drain_ready<F>(
    pending: &mut VecDeque<(F, Pending)>,
    outcome: &mut ProducerOutcome,
    live: &Live,
) where
    F: std::future::Future<Output = anyhow::Result<Ack>> + Unpin,
{
    let mut seen_at = None;
    while let Some((ack, _)) = pending.front_mut() {
        match futures::poll!(ack) {
            Poll::Ready(result) => {
                if let Some((_, meta)) = pending.pop_front() {
                    let now = *seen_at.get_or_insert_with(Instant::now);
                    outcome.record(result, meta, now, live);
                }
            }
            Poll::Pending => break,
        }
    }
}

/// A copy of `payload` whose first 8 bytes are the intended send time, so the
/// consumer can time the record end to end with sub-millisecond resolution
/// (the Kafka record timestamp has only milliseconds).
pub fn stamped_value(payload: &Bytes, intended_unix_ns: u64) -> Bytes {
    assert!(
        payload.len() >= 8,
        "stamped records hold at least the 8-byte timestamp"
    );
    let mut value = BytesMut::with_capacity(payload.len());
    value.put_u64(intended_unix_ns);
    value.extend_from_slice(&payload[8..]);
    value.freeze()
}

/// The send time written by [`stamped_value`].
pub fn read_stamp(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stamped value keeps its length and payload tail and reads back its stamp.
    #[test]
    fn stamp_round_trip() {
        let payload = Bytes::from(vec![7u8; 32]);
        let value = stamped_value(&payload, 0x0102_0304_0506_0708);
        assert_eq!(value.len(), 32);
        assert_eq!(read_stamp(&value), Some(0x0102_0304_0506_0708));
        assert!(value[8..].iter().all(|&byte| byte == 7));
        assert_eq!(read_stamp(&[1, 2, 3]), None);
    }
}
