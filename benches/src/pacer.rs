//! Send schedule for a target rate, free of coordinated omission.
//!
//! With a target rate, record i of a producer is *intended* to be sent at
//! `start + i / rate`. Latency is measured from that intended time, never from
//! the moment the sender actually got round to it: if the broker stalls and
//! the sender falls behind, the records it should have sent meanwhile carry the
//! stall in their latency (they are sent late, back to back, until the
//! schedule is caught up), instead of the stall vanishing from the histogram
//! because nothing was sent during it. Without a rate the workload runs at
//! saturation and the intended time is simply "now".
//!
//! The pacer takes `now` as an argument so its schedule is unit-tested
//! without sleeping.

use std::time::{Duration, Instant};

/// The schedule of one producer.
#[derive(Clone, Debug)]
pub struct Pacer {
    start: Instant,
    /// Nanoseconds between intended sends; `None` = as fast as possible.
    interval_ns: Option<f64>,
    scheduled: u64,
}

impl Pacer {
    /// A schedule of `rate_per_s` records per second from `start`; `None` or a
    /// non-positive rate means unpaced.
    pub fn new(start: Instant, rate_per_s: Option<f64>) -> Self {
        let interval_ns = rate_per_s
            .filter(|rate| rate.is_finite() && *rate > 0.0)
            .map(|rate| 1e9 / rate);
        Pacer {
            start,
            interval_ns,
            scheduled: 0,
        }
    }

    pub fn is_paced(&self) -> bool {
        self.interval_ns.is_some()
    }

    /// The intended send time of the next record. The caller waits until then
    /// if it is in the future, and otherwise sends at once (catching up).
    pub fn next_intended(&mut self, now: Instant) -> Instant {
        let intended = self.peek(now);
        self.advance();
        intended
    }

    /// The intended send time of the next record, leaving it unscheduled.
    pub fn peek(&self, now: Instant) -> Instant {
        match self.interval_ns {
            None => now,
            Some(interval_ns) => {
                self.start + Duration::from_nanos((self.scheduled as f64 * interval_ns) as u64)
            }
        }
    }

    /// Schedules the next record (at the time `peek` gave).
    pub fn advance(&mut self) {
        self.scheduled += 1;
    }

    /// How far behind schedule the sender is at `now` (zero when on time).
    pub fn lag(&self, now: Instant) -> Duration {
        match self.interval_ns {
            None => Duration::ZERO,
            Some(_) => now.saturating_duration_since(self.peek(now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A paced schedule is evenly spaced at 1/rate from the start.
    #[test]
    fn paced_schedule_is_even() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, Some(1000.0));
        assert!(pacer.is_paced());
        let times: Vec<Instant> = (0..5).map(|_| pacer.next_intended(start)).collect();
        for (index, time) in times.iter().enumerate() {
            assert_eq!(*time - start, Duration::from_millis(index as u64));
        }
    }

    /// A sender that falls behind keeps the original schedule, so the delay it
    /// suffered shows up in the latency of every record it owes.
    #[test]
    fn late_sender_keeps_schedule() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, Some(100.0)); // every 10 ms
        let _ = pacer.next_intended(start);
        // The sender stalls for a second before asking for the next record.
        let late = start + Duration::from_secs(1);
        assert_eq!(pacer.lag(late), Duration::from_millis(990));
        let second = pacer.next_intended(late);
        assert_eq!(second - start, Duration::from_millis(10));
        assert!(
            late - second > Duration::from_millis(900),
            "the stall is charged to the record"
        );
        let third = pacer.next_intended(late);
        assert_eq!(third - start, Duration::from_millis(20));
    }

    /// Without a rate the intended time is the moment of asking.
    #[test]
    fn unpaced_is_now() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, None);
        assert!(!pacer.is_paced());
        let now = start + Duration::from_millis(123);
        assert_eq!(pacer.next_intended(now), now);
        assert_eq!(pacer.lag(now), Duration::ZERO);
        assert!(!Pacer::new(start, Some(0.0)).is_paced());
        assert!(!Pacer::new(start, Some(f64::NAN)).is_paced());
    }
}
