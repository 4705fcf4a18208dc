//! Child process for the storage crash and disk-full tests (broker/tests/storage_crash.rs).
//!
//! `storage_crash_child append <data_dir>`: recovers the log, prints `READY <log_end>`,
//! then appends from 4 concurrent tasks in `Sync` mode; after each
//! `wait_durable` it prints `ACK <base_offset> <hex of the batch as appended>`.
//! The parent kills it with SIGKILL at a random moment.
//!
//! `storage_crash_child disk-full <data_dir>`: lowers RLIMIT_FSIZE (with SIGXFSZ
//! ignored, so writes fail with EFBIG instead of killing the process) and
//! checks that appends fail with `StorageError::DiskFull` while reads keep
//! working, and that appends resume once the limit is lifted.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context};
use skiff_broker::storage::{FlushPolicy, LogConfig, LogManager, StorageError};
use skiff_protocol::batch::{BatchReader, RecordBatchBuilder, RecordBatchBuilderConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(dir)) = (args.get(1), args.get(2)) else {
        bail!("usage: storage_crash_child append|disk-full <data_dir>");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match mode.as_str() {
        "append" => runtime.block_on(append_forever(Path::new(dir))),
        "disk-full" => disk_full(Path::new(dir)),
        other => bail!("unknown mode {other}"),
    }
}

fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        index_interval_bytes: 1024,
        flush: FlushPolicy::Sync,
        ..LogConfig::default()
    }
}

/// A batch whose size and contents vary with `seed`, small enough that an
/// ACK line stays below PIPE_BUF and is written atomically.
fn make_batch(seed: u64) -> anyhow::Result<bytes::Bytes> {
    let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig::default());
    let records = 1 + (seed % 4) as usize;
    for i in 0..records {
        let mut value =
            vec![0u8; 50 + (seed.wrapping_mul(7919).wrapping_add(i as u64) % 300) as usize];
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(i as u64 + 1);
        for byte in &mut value {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        builder.append(
            seed as i64,
            Some(format!("key-{seed}-{i}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    Ok(builder.build()?)
}

async fn append_forever(dir: &Path) -> anyhow::Result<()> {
    let manager = LogManager::open(dir, crash_config())?;
    let log = manager.create_partition("crash", 0, crash_config())?;
    let log_end = log.log_end_offset();
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    {
        let mut out = stdout.lock().map_err(|_| anyhow::anyhow!("stdout lock"))?;
        writeln!(out, "READY {log_end}")?;
        out.flush()?;
    }
    let pid = u64::from(std::process::id());
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let log = log.clone();
        let stdout = stdout.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0u64.. {
                let batch = make_batch((pid << 32) ^ (task << 24) ^ n)?;
                let info = log.append(&batch)?;
                log.wait_durable(info.last_offset).await?;
                let line = format!("ACK {} {}\n", info.base_offset, hex(&batch));
                let mut out = stdout.lock().map_err(|_| anyhow::anyhow!("stdout lock"))?;
                out.write_all(line.as_bytes())?;
                out.flush()?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn set_file_size_limit(limit: libc::rlim_t) -> anyhow::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid pointers to a local struct.
    unsafe {
        ensure!(
            libc::getrlimit(libc::RLIMIT_FSIZE, &mut current) == 0,
            "getrlimit failed"
        );
        let wanted = libc::rlimit {
            rlim_cur: limit.min(current.rlim_max),
            rlim_max: current.rlim_max,
        };
        ensure!(
            libc::setrlimit(libc::RLIMIT_FSIZE, &wanted) == 0,
            "setrlimit failed"
        );
    }
    Ok(())
}

fn disk_full(dir: &Path) -> anyhow::Result<()> {
    // SAFETY: installing SIG_IGN for SIGXFSZ has no preconditions.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let config = LogConfig {
        segment_bytes: 4 * 1024 * 1024,
        max_message_bytes: 64 * 1024,
        ..crash_config()
    };
    let manager = LogManager::open(dir, config.clone())?;
    let log = manager.create_partition("full", 0, config.clone())?;
    let mut appended = Vec::new();
    for seed in 0..100 {
        let batch = make_batch(seed)?;
        appended.push((log.append(&batch)?.base_offset, batch));
    }
    // The segment is preallocated past this point: the limit now fails the
    // writes themselves (pwritev returns EFBIG), not the preallocation.
    set_file_size_limit(128 * 1024)?;
    let mut write_error = None;
    for seed in 100..10_000 {
        let batch = make_batch(seed)?;
        match log.append(&batch) {
            Ok(info) => appended.push((info.base_offset, batch)),
            Err(error) => {
                write_error = Some(error);
                break;
            }
        }
    }
    let Some(write_error) = write_error else {
        bail!("appends never failed under RLIMIT_FSIZE")
    };
    ensure!(
        matches!(write_error, StorageError::DiskFull { .. }),
        "expected DiskFull, got {write_error:?}"
    );
    ensure!(
        log.log_end_offset() == appended.last().map_or(0, |(b, _)| b + 1) + last_delta(&appended),
        "failed append left no trace"
    );
    // A new partition fails at preallocation, before writing anything.
    let other = manager.create_partition("full", 1, config.clone())?;
    let prealloc_error = other
        .append(&make_batch(1)?)
        .err()
        .context("preallocation beyond the limit succeeded")?;
    ensure!(
        matches!(prealloc_error, StorageError::DiskFull { .. }),
        "expected DiskFull, got {prealloc_error:?}"
    );
    ensure!(other.log_end_offset() == 0);
    // Reads keep working and return exactly what was acknowledged.
    verify(&log, &appended)?;
    // Lift the limit: appends resume with the next offset, no gap, no garbage.
    set_file_size_limit(libc::RLIM_INFINITY)?;
    let batch = make_batch(20_000)?;
    let info = log.append(&batch)?;
    appended.push((info.base_offset, batch));
    verify(&log, &appended)?;
    println!(
        "OK appended={} write_error={write_error} prealloc_error={prealloc_error}",
        appended.len()
    );
    Ok(())
}

fn last_delta(appended: &[(i64, bytes::Bytes)]) -> i64 {
    appended.last().map_or(0, |(_, batch)| {
        i64::from(i32::from_be_bytes([
            batch[23], batch[24], batch[25], batch[26],
        ]))
    })
}

fn verify(
    log: &skiff_broker::storage::PartitionLog,
    appended: &[(i64, bytes::Bytes)],
) -> anyhow::Result<()> {
    let all = log.read(0, usize::MAX)?;
    let views: Vec<_> = BatchReader::new(all).collect::<Result<_, _>>()?;
    ensure!(
        views.len() == appended.len(),
        "read {} batches, appended {}",
        views.len(),
        appended.len()
    );
    for (view, (base, batch)) in views.iter().zip(appended) {
        view.validate()?;
        ensure!(view.header().base_offset == *base);
        ensure!(view.bytes()[16..] == batch[16..], "batch at {base} differs");
    }
    Ok(())
}
