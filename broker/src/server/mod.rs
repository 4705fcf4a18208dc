//! Listeners and connection handling: TCP and QUIC carry the Kafka
//! protocol, HTTP carries `/metrics`.
//!
//! [`start`] binds every listener (port 0 picks a free port; the bound
//! addresses are in [`RunningServer`]), opens the broker state (recovering
//! the logs) and spawns the accept loops. [`RunningServer::shutdown`] stops
//! accepting, lets in-flight requests finish (long polls end early), then
//! flushes the logs and writes the clean-shutdown marker.

pub mod dispatch;
pub mod http;
pub mod quic;
pub mod tcp;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::broker::{Broker, BrokerError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::storage::StorageError;

/// How long shutdown waits for in-flight requests before flushing anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("QUIC TLS setup failed: {0}")]
    Tls(String),
    #[error(transparent)]
    Identity(#[from] tls::TlsError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("shutdown flush failed: {0}")]
    Shutdown(#[from] StorageError),
}

/// A started broker.
pub struct RunningServer {
    pub tcp_addr: SocketAddr,
    pub quic_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    alive: mpsc::Sender<()>,
    drained: mpsc::Receiver<()>,
    endpoint: Option<quinn::Endpoint>,
    accept_loops: Vec<JoinHandle<()>>,
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Binds all listeners, opens the data directory and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    let listener = bind_tcp(config.listen).await?;
    let tcp_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let broker = Arc::new(Broker::open(
        config.clone(),
        tcp_addr.port(),
        metrics,
        shutdown_rx.clone(),
    )?);
    broker.logs.start_background();
    broker.groups.start(shutdown_rx.clone());
    let (alive, drained) = mpsc::channel(1);
    let mut accept_loops = Vec::new();
    accept_loops.push(tokio::spawn(tcp::accept_loop(
        listener,
        Arc::clone(&broker),
        shutdown_rx.clone(),
        alive.clone(),
    )));

    let mut endpoint = None;
    let mut quic_addr = None;
    if let Some(addr) = config.quic_listen {
        let identity = tls::load_or_generate(
            &config.data_dir,
            config.quic_cert.as_deref(),
            config.quic_key.as_deref(),
        )?;
        tracing::info!(
            cert = %identity.cert_path.display(),
            sha256 = %identity.fingerprint,
            generated = identity.generated,
            "QUIC certificate"
        );
        let bound = quic::bind(addr, identity, &config)?;
        quic_addr = Some(
            bound
                .endpoint
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?,
        );
        accept_loops.push(tokio::spawn(quic::accept_loop(
            bound.endpoint.clone(),
            bound.loopback,
            Arc::clone(&broker),
            shutdown_rx.clone(),
            alive.clone(),
        )));
        endpoint = Some(bound.endpoint);
    }

    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_listen {
        let listener = bind_tcp(addr).await?;
        metrics_addr = Some(
            listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?,
        );
        accept_loops.push(tokio::spawn(http::accept_loop(
            listener,
            Arc::clone(&broker),
            shutdown_rx.clone(),
        )));
    }
    Ok(RunningServer {
        tcp_addr,
        quic_addr,
        metrics_addr,
        broker,
        shutdown,
        alive,
        drained,
        endpoint,
        accept_loops,
    })
}

impl RunningServer {
    /// The start line scripts and tests parse:
    /// `skiffd listening tcp=HOST:PORT quic=HOST:PORT|off metrics=HOST:PORT|off`.
    pub fn listening_line(&self) -> String {
        let or_off =
            |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_string(), |a| a.to_string());
        format!(
            "skiffd listening tcp={} quic={} metrics={}",
            self.tcp_addr,
            or_off(self.quic_addr),
            or_off(self.metrics_addr)
        )
    }

    /// Graceful stop: stop accepting, finish in-flight requests, flush, mark clean.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let RunningServer {
            broker,
            shutdown,
            alive,
            mut drained,
            endpoint,
            accept_loops,
            ..
        } = self;
        let _ = shutdown.send(true);
        for task in accept_loops {
            let _ = task.await;
        }
        drop(alive);
        // `recv` returns None once every connection task dropped its sender.
        if tokio::time::timeout(DRAIN_TIMEOUT, drained.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                "in-flight requests did not finish within {DRAIN_TIMEOUT:?}; flushing anyway"
            );
        }
        if let Some(endpoint) = endpoint {
            endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
        broker.logs.shutdown()?;
        tracing::info!("clean shutdown");
        Ok(())
    }
}
