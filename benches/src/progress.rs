//! The live progress line and the broker memory sampler, on one thread that
//! wakes every 200 ms (a plain thread, so it neither steals nor waits for the
//! async runtime's workers).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::procstat::Process;
use crate::units::BYTES_PER_MB;
use crate::workload::Live;

const TICK: Duration = Duration::from_millis(200);

/// Runs until [`Monitor::stop`]; reports the broker's largest RssAnon seen.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    rss_anon_max_kib: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    pub fn start(live: Arc<Live>, broker_pid: Option<u32>, show: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rss_anon_max_kib = Arc::new(AtomicU64::new(0));
        let bar = if show {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let thread = {
            let stop = Arc::clone(&stop);
            let rss_max = Arc::clone(&rss_anon_max_kib);
            thread::spawn(move || {
                let mut last = (Instant::now(), 0u64, 0u64);
                // Sample once at once so even a very short run has a figure.
                sample_rss(broker_pid, &rss_max);
                while !stop.load(Relaxed) {
                    thread::sleep(TICK);
                    sample_rss(broker_pid, &rss_max);
                    let now = Instant::now();
                    let acked_bytes = live.acked_bytes.load(Relaxed);
                    let consumed_bytes = live.consumed_bytes.load(Relaxed);
                    let seconds = (now - last.0).as_secs_f64().max(1e-3);
                    let produce_mb_per_s =
                        acked_bytes.saturating_sub(last.1) as f64 / BYTES_PER_MB / seconds;
                    let consume_mb_per_s =
                        consumed_bytes.saturating_sub(last.2) as f64 / BYTES_PER_MB / seconds;
                    last = (now, acked_bytes, consumed_bytes);
                    bar.set_message(format!(
                        "sent {} acked {} ({produce_mb_per_s:.0} MB/s) consumed {} ({consume_mb_per_s:.0} MB/s) errors {} | broker RssAnon {} MiB",
                        live.sent.load(Relaxed),
                        live.acked.load(Relaxed),
                        live.consumed.load(Relaxed),
                        live.errors.load(Relaxed),
                        rss_max.load(Relaxed) / 1024,
                    ));
                    bar.tick();
                }
                bar.finish_and_clear();
            })
        };
        Monitor {
            stop,
            rss_anon_max_kib,
            thread: Some(thread),
        }
    }

    /// Stops the line and returns the broker's peak RssAnon in KiB (0 if none sampled).
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.rss_anon_max_kib.load(Relaxed)
    }
}

fn sample_rss(pid: Option<u32>, max_kib: &AtomicU64) {
    if let Some(pid) = pid {
        if let Ok(kib) = Process::Pid(pid).rss_anon_kib() {
            max_kib.fetch_max(kib, Relaxed);
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
