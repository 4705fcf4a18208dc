//! Kafka over QUIC (quinn + rustls): the same frames as TCP, one
//! bidirectional stream per request. The client opens a stream, writes one
//! request frame, finishes its side; the broker answers with one response
//! frame (none for Produce acks=0) and finishes. Streams are independent,
//! so a long-polling fetch never holds back a produce on the same connection.
//!
//! ALPN protocol id: [`ALPN`]. Limits: `connection_inflight_requests_max`
//! concurrent streams per connection, `connection_inflight_bytes_max` request
//! bytes held per connection (a stream waits before reading its body),
//! `frame_bytes_max` per request (a bigger size prefix closes the
//! connection), `idle_timeout_ms` as the QUIC idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quinn::{Endpoint, IdleTimeout, VarInt};
use skiff_protocol::frame;
use tokio::sync::{mpsc, watch, Semaphore};

use super::dispatch::{dispatch, Outcome};
use super::tls::ServerIdentity;
use super::ServerError;
use crate::broker::Broker;
use crate::config::Config;

/// ALPN protocol id of Kafka-over-QUIC, client and broker must agree.
pub const ALPN: &[u8] = b"kafka";
/// Application close code for a protocol violation (oversized frame).
const CLOSE_PROTOCOL_ERROR: u32 = 1;

/// Binds the QUIC endpoint.
pub fn bind(
    addr: SocketAddr,
    identity: ServerIdentity,
    config: &Config,
) -> Result<Endpoint, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let streams = u32::try_from(config.connection_inflight_requests_max).unwrap_or(u32::MAX);
    transport.max_concurrent_bidi_streams(VarInt::from_u32(streams));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    let window = u32::try_from(config.connection_inflight_bytes_max).unwrap_or(u32::MAX);
    transport.receive_window(VarInt::from_u32(window));
    transport.max_idle_timeout(
        IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms)).ok(),
    );
    server.transport_config(Arc::new(transport));
    Endpoint::server(server, addr).map_err(|source| ServerError::Bind { addr, source })
}

/// Accepts connections until shutdown.
pub async fn accept_loop(
    endpoint: Endpoint,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        if broker.metrics.connections_open() >= broker.config.connections_max as i64 {
            broker.metrics.connection_refused();
            incoming.refuse();
            continue;
        }
        let counted = broker.metrics.connection_opened();
        let broker = Arc::clone(&broker);
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(connection) => serve_connection(connection, broker, shutdown, alive).await,
                Err(error) => tracing::debug!(%error, "QUIC handshake failed"),
            }
            drop(counted);
        });
    }
    // In-flight streams finish on their own; the server closes the endpoint
    // once they have (closing it now would abort them).
    drop(alive);
}

async fn serve_connection(
    connection: quinn::Connection,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    // Request bytes held in memory across this connection's streams, as on TCP.
    let inflight = Arc::new(Semaphore::new(broker.config.connection_inflight_bytes_max));
    loop {
        let stream = tokio::select! {
            stream = connection.accept_bi() => stream,
            _ = shutdown.changed() => break,
        };
        let Ok((send, recv)) = stream else { break };
        let broker = Arc::clone(&broker);
        let connection = connection.clone();
        let alive = alive.clone();
        let inflight = Arc::clone(&inflight);
        tokio::spawn(async move {
            serve_stream(broker, connection, inflight, send, recv).await;
            drop(alive);
        });
    }
}

async fn serve_stream(
    broker: Arc<Broker>,
    connection: quinn::Connection,
    inflight: Arc<Semaphore>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let peer = connection.remote_address();
    let mut prefix = [0u8; frame::FRAME_SIZE_PREFIX_BYTES];
    if recv.read_exact(&mut prefix).await.is_err() {
        return;
    }
    let size = match frame::peek_frame_size(&prefix, broker.config.frame_bytes_max) {
        Ok(Some(size)) => size,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%peer, %error, "closing QUIC connection: bad frame size");
            broker.metrics.frame_rejected();
            connection.close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), b"frame too large");
            return;
        }
    };
    let cost = size.clamp(1, broker.config.connection_inflight_bytes_max) as u32;
    let Ok(_permit) = inflight.acquire_many_owned(cost).await else {
        return;
    };
    let mut request = BytesMut::zeroed(size);
    if recv.read_exact(&mut request).await.is_err() {
        return;
    }
    match dispatch(&broker, request.freeze(), peer.ip())
        .outcome()
        .await
    {
        Outcome::Respond(mut frame) => {
            if send.write_all_chunks(&mut frame.chunks).await.is_ok() {
                let _ = send.finish();
            }
        }
        Outcome::Silent => {
            let _ = send.finish();
        }
        Outcome::Close(reason) => {
            tracing::warn!(%peer, %reason, "closing QUIC connection");
            connection.close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), b"malformed request");
        }
    }
}
