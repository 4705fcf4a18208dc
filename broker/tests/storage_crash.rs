//! Crash and disk-full tests of the storage engine with real processes.
//!
//! The crash test proves that in `Sync` mode every acknowledged batch survives
//! SIGKILL byte for byte and that the recovered log ends on a batch boundary.
//! `SKIFF_CRASH_CYCLES=N` runs N kill/restart cycles (default 20).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use skiff_broker::storage::{LogConfig, LogManager};
use skiff_protocol::batch::BatchReader;

const CHILD: &str = env!("CARGO_BIN_EXE_storage_crash_child");

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Tiny deterministic PRNG for kill delays (xorshift), seeded from the clock and printed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs one child until it has acknowledged for `run_ms`, SIGKILLs it, and
/// returns the complete ACK lines it printed: (base_offset, batch bytes).
fn run_and_kill(data_dir: &std::path::Path, run_ms: u64) -> (i64, Vec<(i64, Vec<u8>)>) {
    let mut child = Command::new(CHILD)
        .arg("append")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill has no newline: it was never acknowledged in full.
                Ok(_) if line.ends_with('\n') => {
                    let _ = tx.send(line);
                }
                Ok(_) => break,
            }
        }
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("child never got ready");
    let log_end_at_start: i64 = ready
        .trim()
        .strip_prefix("READY ")
        .unwrap()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(run_ms);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(1)) {
            lines.push(line);
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let acks = lines
        .iter()
        .map(|line| {
            let mut parts = line.trim().split(' ');
            assert_eq!(parts.next(), Some("ACK"));
            let base: i64 = parts.next().unwrap().parse().unwrap();
            (base, unhex(parts.next().unwrap()))
        })
        .collect();
    (log_end_at_start, acks)
}

/// Opens the data directory as the next process would and checks every
/// acknowledged batch and the batch boundary at the end.
fn verify(data_dir: &std::path::Path, acked: &BTreeMap<i64, Vec<u8>>) -> (i64, u64) {
    let config = LogConfig {
        segment_bytes: 256 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    };
    let manager = LogManager::open(data_dir, config).unwrap();
    let Some(log) = manager.get("crash", 0) else {
        assert!(acked.is_empty());
        return (0, 0);
    };
    for (base, batch) in acked {
        let read = log.read(*base, 1).unwrap();
        let view = BatchReader::new(read).next().unwrap().unwrap();
        view.validate().unwrap();
        assert_eq!(
            view.header().base_offset,
            *base,
            "acknowledged batch at {base} moved"
        );
        assert_eq!(
            &view.bytes()[16..],
            &batch[16..],
            "acknowledged batch at {base} differs"
        );
        assert_eq!(view.bytes().len(), batch.len());
    }
    // Sequential read of the whole log: whole, valid, contiguous batches up to the end.
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let mut reader = BatchReader::new(log.read(offset, 1 << 20).unwrap());
        for view in reader.by_ref() {
            let view = view.unwrap();
            view.validate().unwrap();
            assert_eq!(view.header().base_offset, offset, "offsets are contiguous");
            offset = view.header().last_offset() + 1;
        }
        assert_eq!(reader.partial_tail_bytes(), 0);
    }
    assert_eq!(
        offset,
        log.log_end_offset(),
        "the log ends on a batch boundary"
    );
    (log.log_end_offset(), log.size_bytes())
}

/// SIGKILL during sync-mode appends never loses an acknowledged batch.
#[test]
fn sigkill_never_loses_acknowledged_batches() {
    let cycles: usize = std::env::var("SKIFF_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test: {cycles} cycles, seed {seed}");
    let mut rng = Rng(seed);
    let mut acked: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let (mut total_acks, mut lost_unacked) = (0usize, 0i64);
    let started = Instant::now();
    for cycle in 0..cycles {
        let run_ms = 5 + rng.next() % 150;
        let (log_end_at_start, acks) = run_and_kill(dir.path(), run_ms);
        let previous_max = acked.iter().next_back().map_or(0, |(b, v)| {
            b + 1 + i64::from(i32::from_be_bytes([v[23], v[24], v[25], v[26]]))
        });
        assert!(
            log_end_at_start >= previous_max,
            "cycle {cycle}: restart lost acknowledged offsets"
        );
        lost_unacked += log_end_at_start - previous_max;
        total_acks += acks.len();
        for (base, batch) in acks {
            assert!(
                acked.insert(base, batch).is_none(),
                "offset {base} acknowledged twice"
            );
        }
        verify(dir.path(), &acked);
    }
    let (log_end, size) = verify(dir.path(), &acked);
    eprintln!(
        "crash test: {cycles} cycles, {total_acks} acknowledged batches all intact, log end {log_end}, {size} bytes, \
         {lost_unacked} unacknowledged-but-durable offsets, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(total_acks > 0);
}

/// A full disk (RLIMIT_FSIZE in a child) is a typed DiskFull error, both when
/// a write and when a preallocation hits it, and reads keep working.
#[test]
fn full_disk_is_a_typed_error_and_reads_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(CHILD)
        .arg("disk-full")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(stdout.starts_with("OK "), "{stdout}");
    assert!(stdout.contains("disk full"), "{stdout}");
}
