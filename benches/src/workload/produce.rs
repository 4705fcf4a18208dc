//! One producer task: paced sends, keys, and acknowledgement latency.
//!
//! Records go to the producer in calls of `records_per_send` (one by
//! default, the one-record send most applications use). A call goes when
//! its last record is due, and each of its records is timed from its own
//! intended send time, so gathering records into a call shows up in their
//! latency as it would in an application's.
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

use super::driver::{Acked, BenchProducer, BenchRecord};
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
    /// Records per send call (1: the client's one-record send).
    pub records_per_send: usize,
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

/// One send call waiting for its acknowledgement.
struct Pending {
    /// Intended send times of the call's first and last record; the
    /// schedule is even in between.
    first_intended: Instant,
    last_intended: Instant,
    records: u64,
    record_bytes: u64,
    topic_index: usize,
    measured: bool,
}

impl Pending {
    /// The intended send time of the call's record at `index`.
    fn intended(&self, index: u64) -> Instant {
        if index == 0 || self.records < 2 {
            return self.first_intended;
        }
        let span = self.last_intended - self.first_intended;
        self.first_intended + span.mul_f64(index as f64 / (self.records - 1) as f64)
    }
}

impl ProducerOutcome {
    /// `now` is when the ack was seen: the caller reads the clock once for
    /// all the acks of a batch that complete together.
    fn record(
        &mut self,
        result: anyhow::Result<Acked>,
        pending: Pending,
        now: Instant,
        live: &Live,
    ) {
        let acked = match result {
            Ok(Acked::One { partition }) => self.acked(&pending, partition, 1, live),
            Ok(Acked::Many { runs, first_error }) => {
                let mut acked = 0;
                for (partition, records, delivered) in runs {
                    if delivered {
                        acked += self.acked(&pending, partition, records, live);
                    }
                }
                let failed = pending.records.saturating_sub(acked);
                if failed > 0 {
                    let error = first_error.unwrap_or_else(|| "no error reported".into());
                    self.errors(failed, format!("produce failed: {error}"), live);
                }
                acked
            }
            Err(error) => {
                self.errors(pending.records, format!("produce failed: {error:#}"), live);
                0
            }
        };
        if pending.measured && acked > 0 {
            if pending.first_intended == pending.last_intended {
                self.latency.record_n(now - pending.first_intended, acked);
            } else {
                for index in 0..acked {
                    self.latency.record(now - pending.intended(index));
                }
            }
            self.measured_records += acked;
            self.measured_bytes += acked * pending.record_bytes;
            self.last_measured_ack = Some(now);
        }
    }

    /// Counts `records` of the call acknowledged on `partition`; returns
    /// how many count as acknowledged.
    fn acked(&mut self, pending: &Pending, partition: i32, records: u64, live: &Live) -> u64 {
        if !self.partitions.add(pending.topic_index, partition, records) {
            self.errors(
                records,
                format!("ack names partition {partition} outside the topic"),
                live,
            );
            return 0;
        }
        self.acked += records;
        live.acked.fetch_add(records, Relaxed);
        live.acked_bytes
            .fetch_add(records * pending.record_bytes, Relaxed);
        records
    }

    fn errors(&mut self, records: u64, message: String, live: &Live) {
        self.errors += records;
        live.errors.fetch_add(records, Relaxed);
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
    let records_per_send = job.records_per_send.max(1);
    let mut call: Vec<BenchRecord> = Vec::with_capacity(records_per_send);
    let mut calls = 0u64;
    loop {
        let now = Instant::now();
        if live.abort.load(Relaxed) {
            break;
        }
        let first_intended = pacer.peek(now);
        match job.stop {
            StopRule::Until(deadline) if first_intended >= deadline => break,
            StopRule::Records(count) if measured_sent >= count => break,
            _ => {}
        }
        let measured = first_intended >= job.measure_start;
        // Gather the call: unpaced, every record is intended now.
        let mut last_intended = first_intended;
        // Unstamped values are all the payload: records of the previous call
        // are reused, saving a reference count round trip per record.
        let mut gathered = 0;
        while gathered < records_per_send {
            let intended = pacer.peek(now);
            // A call neither straddles the end of the warm-up nor passes the stop.
            let past_stop = match job.stop {
                StopRule::Until(deadline) => intended >= deadline,
                StopRule::Records(count) => measured && measured_sent + gathered as u64 >= count,
            };
            if past_stop || (intended >= job.measure_start) != measured {
                break;
            }
            pacer.advance();
            last_intended = intended;
            let key = job.keys.next_key();
            let value = || match job.stamp {
                true => stamped_value(&job.payload, job.clock.unix_ns(intended)),
                false => job.payload.clone(),
            };
            match call.get_mut(gathered) {
                Some(record) if !job.stamp => record.key = key,
                Some(record) => {
                    *record = BenchRecord {
                        key,
                        value: value(),
                    }
                }
                None => call.push(BenchRecord {
                    key,
                    value: value(),
                }),
            }
            gathered += 1;
        }
        call.truncate(gathered);
        // Wait for the intended send time, timing acks that arrive meanwhile
        // (unpaced, `intended` is `now`: no second clock read).
        while last_intended > now && last_intended > Instant::now() {
            let step = match pending.front_mut() {
                Some((ack, _)) => tokio::select! {
                    biased;
                    result = ack => Some(result),
                    () = tokio::time::sleep_until(last_intended.into()) => None,
                },
                None => {
                    tokio::time::sleep_until(last_intended.into()).await;
                    None
                }
            };
            if let Some(result) = step {
                if let Some((_, meta)) = pending.pop_front() {
                    outcome.record(result, meta, Instant::now(), &live);
                }
            }
        }
        let topic_index = (calls % job.topics as u64) as usize;
        calls += 1;
        let timestamp_ms = job.clock.unix_ms(first_intended);
        // While `send` waits for buffer space, keep timing the acks that free it.
        let send = producer.send(topic_index, &call, timestamp_ms);
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
        let records = call.len() as u64;
        match sent {
            Ok(ack) => {
                pending.push_back((
                    ack,
                    Pending {
                        first_intended,
                        last_intended,
                        records,
                        record_bytes,
                        topic_index,
                        measured,
                    },
                ));
                outcome.sent += records;
                live.sent.fetch_add(records, Relaxed);
                if measured {
                    measured_sent += records;
                }
            }
            Err(error) => {
                outcome.errors(records, format!("send failed: {error:#}"), &live);
                break;
            }
        }
        drain_ready(&mut pending, &mut outcome, &live).await;
    }
    if let Err(error) = producer.flush().await {
        outcome.errors(1, format!("flush failed: {error:#}"), &live);
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
    F: std::future::Future<Output = anyhow::Result<Acked>> + Unpin,
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
