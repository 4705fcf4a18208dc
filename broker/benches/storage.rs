//! Storage engine throughput: append (no sync) and sequential read.
//!
//! `cargo bench -p skiff-broker --bench storage`
//!
//! Page-cache write speed on the development VMs swings from run to run, so
//! the bench first times `dd if=/dev/zero of=<same filesystem>/probe bs=1M
//! count=1024` and prints it; the append figure is judged against that.
//! `SKIFF_BENCH_DIR` picks the directory (default: the system temp dir).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skiff_broker::storage::{FlushPolicy, LogConfig, LogManager, PartitionLog};
use skiff_protocol::batch::{RecordBatchBuilder, RecordBatchBuilderConfig};

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;
const APPEND_BYTES: usize = 1024 * 1024;
const READ_LOG_MIB: usize = 512;

fn bench_dir() -> PathBuf {
    std::env::var_os("SKIFF_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// Times dd writing 1 GiB to the page cache of the bench's filesystem; GB/s.
fn dd_probe(dir: &Path) -> Option<f64> {
    let probe = dir.join("probe");
    let started = Instant::now();
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", probe.display()))
        .args(["bs=1M", "count=1024"])
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&probe);
    status
        .success()
        .then(|| (1u64 << 30) as f64 / seconds / 1e9)
}

/// About 1 MiB of batches of 16 records of 1 KiB, concatenated as a produce request carries them.
fn append_payload() -> Bytes {
    let mut out = Vec::with_capacity(APPEND_BYTES + 4096);
    let value = vec![0xa5u8; RECORD_BYTES];
    while out.len() + RECORD_BYTES * RECORDS_PER_BATCH <= APPEND_BYTES {
        let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig::default());
        for i in 0..RECORDS_PER_BATCH {
            builder.append(i as i64, None, Some(&value), &[]);
        }
        out.extend_from_slice(&builder.build().unwrap_or_default());
    }
    Bytes::from(out)
}

fn bench_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 30,
        retention_ms: -1,
        flush: FlushPolicy::Periodic {
            flush_ms: u64::MAX / 2,
            flush_messages: u64::MAX,
        },
        ..LogConfig::default()
    }
}

fn storage(c: &mut Criterion) {
    let dir = bench_dir();
    match dd_probe(&dir) {
        Some(gbps) => println!(
            "dd if=/dev/zero of={}/probe bs=1M count=1024: {gbps:.2} GB/s",
            dir.display()
        ),
        None => println!("dd probe failed"),
    }
    let data =
        tempfile::tempdir_in(&dir).unwrap_or_else(|e| panic!("temp dir in {}: {e}", dir.display()));
    let manager =
        LogManager::open(data.path(), bench_config()).unwrap_or_else(|e| panic!("open: {e}"));
    let payload = append_payload();

    let mut group = c.benchmark_group("storage");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("append_1KiB_records_1MiB_no_sync", |b| {
        b.iter_custom(|iters| {
            let log = fresh_log(&manager, "append");
            let started = Instant::now();
            for _ in 0..iters {
                log.append(&payload)
                    .unwrap_or_else(|e| panic!("append: {e}"));
            }
            let elapsed = started.elapsed();
            // Dropping the topic discards its dirty pages instead of writing them back.
            manager
                .delete_topic("append")
                .unwrap_or_else(|e| panic!("delete: {e}"));
            elapsed
        })
    });

    // Baselines for the design choice: the same bytes copied into a fresh
    // mapping of a preallocated file (the older design), with and without
    // pre-faulting the next chunk with MADV_POPULATE_WRITE.
    for populate in [false, true] {
        let name = if populate {
            "baseline_memcpy_into_mmap_populated"
        } else {
            "baseline_memcpy_into_mmap"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| memcpy_into_mmap(data.path(), &payload, iters, populate))
        });
    }

    let log = fresh_log(&manager, "read");
    for _ in 0..READ_LOG_MIB {
        log.append(&payload)
            .unwrap_or_else(|e| panic!("append: {e}"));
    }
    group.throughput(Throughput::Bytes(log.size_bytes()));
    let mut sink = vec![0u8; 2 * APPEND_BYTES];
    // What a fetch costs the engine: slicing the mapping, no record byte touched.
    group.bench_function("sequential_read_512MiB_zero_copy", |b| {
        b.iter(|| read_all(&log, |bytes| std::hint::black_box(bytes.len())))
    });
    // What a consumer of the bytes pays (a socket write copies them): memory-bound.
    group.bench_function("sequential_read_512MiB_copied_out", |b| {
        b.iter(|| {
            read_all(&log, |bytes| {
                sink[..bytes.len()].copy_from_slice(&bytes);
                std::hint::black_box(&sink);
                bytes.len()
            })
        })
    });
    group.finish();
    let _ = manager.delete_topic("read");
    // Page-cache speed drifts during a run: probe again so both ends are known.
    if let Some(gbps) = dd_probe(&dir) {
        println!("dd probe again after the benches: {gbps:.2} GB/s");
    }
}

fn memcpy_into_mmap(dir: &Path, payload: &[u8], iters: u64, populate: bool) -> Duration {
    let path = dir.join("baseline.mmap");
    let len = (iters as usize * payload.len()).max(payload.len());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("baseline file: {e}"));
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe {
        libc::posix_fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            len as libc::off_t,
        )
    };
    assert_eq!(rc, 0, "baseline posix_fallocate");
    // SAFETY: a private scratch file that nothing else touches while mapped.
    let mut map =
        unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap_or_else(|e| panic!("map: {e}"));
    let started = Instant::now();
    for i in 0..iters as usize {
        let at = i * payload.len();
        if populate {
            let _ = map.advise_range(memmap2::Advice::PopulateWrite, at, payload.len());
        }
        map[at..at + payload.len()].copy_from_slice(payload);
    }
    let elapsed = started.elapsed();
    drop(map);
    let _ = std::fs::remove_file(&path);
    elapsed
}

fn fresh_log(manager: &Arc<LogManager>, topic: &str) -> Arc<PartitionLog> {
    let _ = manager.delete_topic(topic);
    manager
        .create_partition(topic, 0, bench_config())
        .unwrap_or_else(|e| panic!("create: {e}"))
}

/// Reads the whole log in 1 MiB fetches, handing each slice to `consume`.
fn read_all(log: &PartitionLog, mut consume: impl FnMut(Bytes) -> usize) -> usize {
    let mut offset = log.log_start_offset();
    let mut bytes_read = 0;
    let end = log.log_end_offset();
    while offset < end {
        let bytes = log
            .read(offset, APPEND_BYTES)
            .unwrap_or_else(|e| panic!("read: {e}"));
        let last = skiff_protocol::batch::BatchReader::new(bytes.clone())
            .last()
            .and_then(Result::ok)
            .map_or(end - 1, |view| view.header().last_offset());
        bytes_read += consume(bytes);
        offset = last + 1;
    }
    bytes_read
}

criterion_group!(benches, storage);
criterion_main!(benches);
