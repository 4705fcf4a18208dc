//! End-to-end test support: real `skiffd` processes on loopback ports with
//! data in temp dirs, and helpers to reach them with skiff-client.
//!
//! The binaries come from this package's own `[[bin]]` targets
//! (`skiffd-e2e`, `skiff-e2e`, built from the broker's and client's
//! `main.rs`), so `env!("CARGO_BIN_EXE_…")` names them; see [`skiffd_bin!`].

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use skiff_client::{Client, ClientConfig, QuicTrust, Transport};

pub mod groups;
pub mod python;

/// Path of the skiffd binary, for use in integration tests.
#[macro_export]
macro_rules! skiffd_bin {
    () => {
        env!("CARGO_BIN_EXE_skiffd-e2e")
    };
}

/// Path of the skiff CLI binary, for use in integration tests.
#[macro_export]
macro_rules! skiff_bin {
    () => {
        env!("CARGO_BIN_EXE_skiff-e2e")
    };
}

/// How long a broker may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running skiffd. Killed (SIGKILL) on drop.
pub struct Broker {
    bin: PathBuf,
    child: Option<Child>,
    data_dir: PathBuf,
    /// The TCP listener.
    pub tcp: SocketAddr,
    /// The QUIC listener.
    pub quic: SocketAddr,
    /// The metrics listener.
    pub metrics: Option<SocketAddr>,
    extra_args: Vec<String>,
}

impl Broker {
    /// Starts skiffd on ephemeral loopback ports with data in `data_dir`.
    pub fn start(bin: &str, data_dir: &Path) -> anyhow::Result<Broker> {
        Self::start_with(bin, data_dir, &[])
    }

    /// Starts skiffd with extra command-line arguments.
    pub fn start_with(bin: &str, data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Broker> {
        let mut broker = Broker {
            bin: PathBuf::from(bin),
            child: None,
            data_dir: data_dir.to_path_buf(),
            tcp: SocketAddr::from(([127, 0, 0, 1], 0)),
            quic: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        broker.launch()?;
        Ok(broker)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let mut child = Command::new(&self.bin)
            .arg("--listen")
            .arg(self.tcp.to_string())
            .arg("--quic-listen")
            .arg(self.quic.to_string())
            .arg("--metrics-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env(
                "SKIFF_LOG",
                std::env::var("SKIFF_TEST_BROKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && line.starts_with("skiffd listening") {
                    sent = true;
                    let _ = tx.send(line);
                }
                // Keep draining so the broker never blocks on a full pipe.
            }
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!("skiffd printed no listening line (exit status {status:?})");
            }
        };
        for field in line.split_whitespace() {
            if let Some((key, value)) = field.split_once('=') {
                let addr = value.parse::<SocketAddr>();
                match (key, addr) {
                    ("tcp", Ok(addr)) => self.tcp = addr,
                    ("quic", Ok(addr)) => self.quic = addr,
                    ("metrics", Ok(addr)) => self.metrics = Some(addr),
                    _ => {}
                }
            }
        }
        if self.tcp.port() == 0 {
            bail!("cannot parse the listening line {line:?}");
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills the broker with SIGKILL (no clean shutdown) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same ports and data dir.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        // The ports were ours a moment ago; retry briefly if the kernel
        // has not released them yet.
        let mut last = None;
        for _ in 0..50 {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| anyhow!("restart failed")))
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The self-signed QUIC certificate the broker generated.
    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("quic-cert.pem")
    }

    /// The bootstrap string for `transport`.
    pub fn bootstrap(&self, transport: Transport) -> String {
        match transport {
            Transport::Tcp => self.tcp.to_string(),
            Transport::Quic => format!("quic://{}", self.quic),
        }
    }

    /// A client configuration for `transport` (QUIC trusts the broker's certificate).
    pub fn client_config(&self, transport: Transport) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new(&self.bootstrap(transport))?
            .client_id("skiff-tests")
            .request_timeout(Duration::from_secs(10))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
        if transport == Transport::Quic {
            config = config.quic_trust(QuicTrust::CertificateFile(self.cert_path()));
        }
        Ok(config)
    }

    /// A connected client over `transport`.
    pub async fn client(&self, transport: Transport) -> anyhow::Result<Client> {
        Ok(Client::connect(self.client_config(transport)?).await?)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Both transports, for tests that run over each.
pub const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Quic];

/// Whether `kcat` is installed.
pub fn kcat_available() -> bool {
    Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Creates a topic and waits until its partitions have leaders.
pub async fn create_topic(client: &Client, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin = skiff_client::Admin::new(client.clone());
    admin
        .create_topic(skiff_client::NewTopic::new(name, partitions))
        .await
        .with_context(|| format!("create topic {name}"))?;
    let topic = client.topic(name).await?;
    anyhow::ensure!(
        topic.partition_count() == partitions,
        "topic {name} has {} partitions",
        topic.partition_count()
    );
    Ok(())
}

/// Reads every partition of `topic` from the beginning until `count`
/// records arrived (or `timeout` passed), returning them.
pub async fn consume_all(
    client: &Client,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<skiff_client::ConsumerRecord>> {
    let mut consumer = skiff_client::Consumer::new(
        client.clone(),
        skiff_client::ConsumerConfig {
            auto_offset_reset: skiff_client::OffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            ..Default::default()
        },
    );
    consumer.assign_topics(&[topic]).await?;
    consumer.seek_all(skiff_client::SeekTo::Beginning).await?;
    let deadline = std::time::Instant::now() + timeout;
    let mut records = Vec::new();
    while records.len() < count && std::time::Instant::now() < deadline {
        records.extend(consumer.poll(Duration::from_millis(200)).await?);
    }
    Ok(records)
}

/// A unique topic name for a test.
pub fn topic_name(test: &str, transport: Transport) -> String {
    let transport = match transport {
        Transport::Tcp => "tcp",
        Transport::Quic => "quic",
    };
    format!("{test}-{transport}")
}

/// Sends the test process's own tracing (the client's) to stderr when
/// `SKIFF_TEST_LOG` is set, e.g. `SKIFF_TEST_LOG=skiff_client=debug`.
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("SKIFF_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Reads one counter or gauge from the broker's Prometheus endpoint.
pub fn broker_metric(broker: &Broker, name: &str) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let addr = broker
        .metrics
        .ok_or_else(|| anyhow!("the broker has no metrics listener"))?;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    body.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow!("metric {name} not found"))
}
