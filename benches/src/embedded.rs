//! A private `skiffd` for one benchmark run: the real binary, started on a
//! temporary directory and ephemeral loopback ports, killed and removed after.
//!
//! The broker announces its bound addresses on stdout with one line,
//! `skiffd listening tcp=ADDR quic=ADDR metrics=ADDR`, which is how a caller
//! that asked for port 0 learns the ports. It runs as a separate process so
//! that its CPU time and memory can be read from /proc apart from the client's.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

/// How long a starting broker may take to announce its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The skiffd flag selecting when produce requests are acknowledged.
const DURABILITY_FLAG: &str = "--topic-flush-mode";

/// Where skiffd writes its self-signed QUIC certificate, in its data dir.
pub const QUIC_CERT_FILE: &str = "quic-cert.pem";

/// The broker's durability mode (the flush policy of its partitions).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledge after fdatasync (group commit).
    Sync,
    /// Acknowledge once in the page cache; flush in the background.
    Periodic,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Sync => "sync",
            Durability::Periodic => "periodic",
        })
    }
}

/// The addresses a running skiffd announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listening {
    pub tcp: SocketAddr,
    /// `None` when the broker runs without that listener (`quic=off`).
    pub quic: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

impl FromStr for Listening {
    type Err = anyhow::Error;

    /// Parses `skiffd listening tcp=ADDR quic=ADDR|off metrics=ADDR|off` (fields
    /// in any order; unknown `key=value` fields are ignored so the line may grow).
    fn from_str(line: &str) -> Result<Self> {
        let rest = line
            .trim()
            .strip_prefix("skiffd listening")
            .ok_or_else(|| anyhow!("not a listening line: {line:?}"))?;
        let (mut tcp, mut quic, mut metrics) = (None, None, None);
        for field in rest.split_whitespace() {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let slot = match key {
                "tcp" => &mut tcp,
                "quic" => &mut quic,
                "metrics" => &mut metrics,
                _ => continue,
            };
            *slot = Some(match value {
                "off" => None,
                _ => Some(
                    value
                        .parse::<SocketAddr>()
                        .with_context(|| format!("bad {key} address {value:?}"))?,
                ),
            });
        }
        Ok(Listening {
            tcp: tcp
                .flatten()
                .ok_or_else(|| anyhow!("no tcp address in {line:?}"))?,
            quic: quic.ok_or_else(|| anyhow!("no quic= in {line:?}"))?,
            metrics: metrics.ok_or_else(|| anyhow!("no metrics= in {line:?}"))?,
        })
    }
}

/// Finds the skiffd binary: `explicit` if given, else next to the running
/// executable (the same cargo target dir; test binaries live one level deeper
/// in `deps/`).
pub fn locate_skiffd(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--skiffd {} is not a file", path.display());
    }
    let executable = std::env::current_exe().context("locating the running executable")?;
    let mut candidates = Vec::new();
    if let Some(dir) = executable.parent() {
        candidates.push(dir.join("skiffd"));
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join("skiffd"));
        }
    }
    candidates
        .iter()
        .find(|candidate| candidate.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "no skiffd binary next to {} (build it with `cargo build --release --bin skiffd`, or pass --skiffd PATH or --bootstrap)",
                executable.display()
            )
        })
}

/// A running private broker; dropping it kills the process and deletes its data.
pub struct EmbeddedBroker {
    child: Child,
    listening: Listening,
    data_dir: PathBuf,
    log_path: PathBuf,
    // Declared last so it is removed after the process is gone.
    _root: TempDir,
}

impl EmbeddedBroker {
    /// Starts `skiffd` with its data in a new temporary directory under
    /// `parent` (the system temp dir when `None`); `extra_args` are appended
    /// to its command line (broker tuning for experiments).
    pub fn start(
        skiffd: &Path,
        durability: Durability,
        parent: Option<&Path>,
        extra_args: &[String],
    ) -> Result<Self> {
        let root = match parent {
            Some(parent) => tempfile::Builder::new()
                .prefix("skiff-bench-")
                .tempdir_in(parent),
            None => tempfile::Builder::new().prefix("skiff-bench-").tempdir(),
        }
        .context("creating the broker's temporary directory")?;
        let data_dir = root.path().join("data");
        std::fs::create_dir(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let log_path = root.path().join("skiffd.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(skiffd)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--quic-listen")
            .arg("127.0.0.1:0")
            .arg("--metrics-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg(DURABILITY_FLAG)
            .arg(durability.to_string())
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", skiffd.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("skiffd stdout not captured"))?;
        let (sender, receiver) = mpsc::channel();
        // The reader keeps draining stdout after the announcement so the broker
        // never blocks on a full pipe.
        thread::spawn(move || {
            let mut announced = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !announced && line.starts_with("skiffd listening") {
                    announced = true;
                    let _ = sender.send(line);
                }
            }
        });
        let mut broker = EmbeddedBroker {
            child,
            listening: Listening {
                tcp: SocketAddr::from(([127, 0, 0, 1], 0)),
                quic: None,
                metrics: None,
            },
            data_dir,
            log_path,
            _root: root,
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            match receiver.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    broker.listening = line.parse()?;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {
                    if let Ok(Some(status)) = broker.child.try_wait() {
                        bail!("skiffd exited ({status}) before announcing its addresses; its log:\n{}", broker.log_tail());
                    }
                }
                Err(_) => {
                    let status = broker.child.try_wait().ok().flatten();
                    bail!(
                        "skiffd did not announce `skiffd listening …` within {START_TIMEOUT:?} or closed its stdout (exit status {status:?}); its log:\n{}",
                        broker.log_tail()
                    );
                }
            }
        }
        Ok(broker)
    }

    pub fn listening(&self) -> Listening {
        self.listening
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the process is still running (a crash mid-run voids the figures).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the broker's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The announcement parses in any field order and bad lines are refused.
    #[test]
    fn listening_line_parses() -> Result<()> {
        let listening: Listening =
            "skiffd listening tcp=127.0.0.1:40001 quic=127.0.0.1:40002 metrics=127.0.0.1:40003"
                .parse()?;
        assert_eq!(listening.tcp, "127.0.0.1:40001".parse()?);
        assert_eq!(listening.quic, Some("127.0.0.1:40002".parse()?));
        assert_eq!(listening.metrics, Some("127.0.0.1:40003".parse()?));
        let quiet: Listening = "skiffd listening tcp=127.0.0.1:1 quic=off metrics=off".parse()?;
        assert_eq!((quiet.quic, quiet.metrics), (None, None));
        assert!("skiffd listening tcp=off quic=off metrics=off"
            .parse::<Listening>()
            .is_err());
        let reordered: Listening =
            "skiffd listening metrics=127.0.0.1:3 version=0.1 tcp=127.0.0.1:1 quic=127.0.0.1:2\n"
                .parse()?;
        assert_eq!(reordered.tcp.port(), 1);
        assert!("skiffd listening tcp=127.0.0.1:1 quic=127.0.0.1:2"
            .parse::<Listening>()
            .is_err());
        assert!(
            "skiffd listening tcp=nowhere quic=127.0.0.1:2 metrics=127.0.0.1:3"
                .parse::<Listening>()
                .is_err()
        );
        assert!("hello".parse::<Listening>().is_err());
        Ok(())
    }

    /// A missing explicit binary is a clear error, not a search elsewhere.
    #[test]
    fn explicit_binary_must_exist() {
        let error = locate_skiffd(Some(Path::new("/nonexistent/skiffd")));
        assert!(error.is_err());
    }
}
