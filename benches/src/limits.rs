//! The machine's own limits, measured in the same run as the workload.
//!
//! On a shared, noisy VM the absolute throughput of a run says little; the
//! fraction of what the machine could do *at that moment* holds from run to
//! run. Two probes bound a log broker on one host:
//!
//! - **loopback TCP**: one socket pair moving the same number of bytes as the
//!   workload, a writer thread and a reader thread — the most a single
//!   client connection could carry.
//! - **page-cache write**: `write(2)` of N bytes in 1 MiB chunks into a file
//!   on the data directory's filesystem (like `dd bs=1M`), no fsync — what
//!   appending to segments costs before any broker logic. A third, smaller
//!   probe adds `fdatasync` after every chunk, the ceiling for `sync`
//!   durability.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::units::mb_per_s;

/// Chunk size of every probe's writes and reads.
const CHUNK_BYTES: usize = 1 << 20;

/// One probe's measurement.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Probe {
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

impl Probe {
    fn new(bytes: u64, elapsed: Duration) -> Self {
        Probe {
            bytes,
            seconds: elapsed.as_secs_f64(),
            mb_per_s: mb_per_s(bytes, elapsed),
        }
    }
}

/// All limits of one run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Limits {
    pub loopback_tcp: Probe,
    pub page_cache_write: Probe,
    pub fdatasync_write: Probe,
}

/// Runs every probe: `bytes` over loopback and into the page cache of `dir`,
/// `sync_bytes` through write + fdatasync.
///
/// The page-cache probe runs twice and keeps the faster pass: on this VM the
/// first write into freshly returned memory is often several times slower
/// than the second (the host must fault the pages in again), and a limit is
/// the best the machine can do at that moment.
pub fn measure(bytes: u64, sync_bytes: u64, dir: &Path) -> Result<Limits> {
    let first = page_cache_write(dir, bytes, false).context("page-cache write probe")?;
    let second = page_cache_write(dir, bytes, false).context("page-cache write probe")?;
    Ok(Limits {
        loopback_tcp: loopback_tcp(bytes).context("loopback TCP probe")?,
        page_cache_write: if second.mb_per_s > first.mb_per_s {
            second
        } else {
            first
        },
        fdatasync_write: page_cache_write(dir, sync_bytes, true)
            .context("fdatasync write probe")?,
    })
}

/// Moves `bytes` through one loopback TCP connection; timed from the first
/// write until the reader has seen the last byte.
pub fn loopback_tcp(bytes: u64) -> Result<Probe> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback listener")?;
    let address = listener.local_addr()?;
    let reader = thread::spawn(move || -> Result<u64> {
        let (mut stream, _) = listener
            .accept()
            .context("accepting the probe connection")?;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut received = 0u64;
        while received < bytes {
            let read = stream.read(&mut buffer).context("reading probe bytes")?;
            if read == 0 {
                break;
            }
            received += read as u64;
        }
        Ok(received)
    });
    let mut stream = TcpStream::connect(address).context("connecting the probe socket")?;
    let chunk = pattern_chunk();
    let started = Instant::now();
    let mut remaining = bytes;
    while remaining > 0 {
        let length = remaining.min(CHUNK_BYTES as u64) as usize;
        stream
            .write_all(&chunk[..length])
            .context("writing probe bytes")?;
        remaining -= length as u64;
    }
    let received = match reader.join() {
        Ok(result) => result?,
        Err(_) => bail!("loopback reader thread panicked"),
    };
    let elapsed = started.elapsed();
    if received != bytes {
        bail!("loopback probe moved {received} of {bytes} bytes");
    }
    Ok(Probe::new(bytes, elapsed))
}

/// Writes `bytes` into a fresh file in `dir` with write(2), 1 MiB at a time;
/// with `sync_each_chunk`, fdatasync after every chunk. The file is removed.
pub fn page_cache_write(dir: &Path, bytes: u64, sync_each_chunk: bool) -> Result<Probe> {
    let mut file: File = tempfile::tempfile_in(dir)
        .with_context(|| format!("creating a probe file in {}", dir.display()))?;
    let chunk = pattern_chunk();
    let started = Instant::now();
    let mut remaining = bytes;
    while remaining > 0 {
        let length = remaining.min(CHUNK_BYTES as u64) as usize;
        file.write_all(&chunk[..length])
            .context("writing the probe file")?;
        if sync_each_chunk {
            file.sync_data().context("fdatasync of the probe file")?;
        }
        remaining -= length as u64;
    }
    Ok(Probe::new(bytes, started.elapsed()))
}

/// Writes back every dirty page of the filesystem holding `dir` and waits
/// for it (syncfs(2)).
pub fn write_back(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Non-zero bytes, so no layer can special-case zero pages.
fn pattern_chunk() -> Vec<u8> {
    (0..CHUNK_BYTES)
        .map(|index| (index % 251) as u8 + 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loopback probe really moves the bytes it claims (odd size included).
    #[test]
    fn loopback_moves_all_bytes() -> Result<()> {
        let probe = loopback_tcp(3 * CHUNK_BYTES as u64 + 17)?;
        assert_eq!(probe.bytes, 3 * CHUNK_BYTES as u64 + 17);
        assert!(probe.seconds > 0.0 && probe.mb_per_s > 0.0);
        Ok(())
    }

    /// The write probes write into the given directory and leave nothing behind.
    #[test]
    fn write_probes_clean_up() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let limits = measure(2 * CHUNK_BYTES as u64, CHUNK_BYTES as u64, dir.path())?;
        assert!(limits.page_cache_write.mb_per_s > 0.0);
        assert!(limits.fdatasync_write.mb_per_s > 0.0);
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        assert!(page_cache_write(Path::new("/nonexistent/skiff-bench"), 1, false).is_err());
        write_back(dir.path())?;
        assert!(write_back(Path::new("/nonexistent/skiff-bench")).is_err());
        Ok(())
    }
}
