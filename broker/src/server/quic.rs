//! Kafka over QUIC (quinn + rustls): the same frames as TCP, one
//! bidirectional stream per request. The client opens a stream, writes one
//! request frame, finishes its side; the broker answers with one response
//! frame (none for Produce acks=0) and finishes. Requests are applied in
//! stream order (Kafka's per-connection ordering, so clients may pipeline);
//! only their waits run concurrently, so a long-polling fetch never holds
//! back a produce on the same connection.
//!
//! ALPN protocol id: [`ALPN`]. Limits: `connection_inflight_requests_max`
//! concurrent streams per connection, `connection_inflight_bytes_max` request
//! bytes held per connection (a stream waits before reading its body),
//! `frame_bytes_max` per request (a bigger size prefix closes the
//! connection), `idle_timeout_ms` as the QUIC idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{Endpoint, IdleTimeout, VarInt};
use skiff_protocol::frame;
use skiff_protocol::quic::{datagram_policy, LOOPBACK_DATAGRAM_BYTES_MAX};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::dispatch::{dispatch, Dispatched, Outcome};
use super::tls::ServerIdentity;
use super::ServerError;
use crate::broker::Broker;
use crate::config::Config;

pub use skiff_protocol::quic::ALPN;

/// Application close code for a protocol violation (oversized frame).
const CLOSE_PROTOCOL_ERROR: u32 = 1;

/// A bound QUIC endpoint.
pub struct Bound {
    pub endpoint: Endpoint,
    /// Server settings for a client on loopback (the endpoint's own are
    /// for the others): no segmentation offload, loopback-sized datagrams.
    pub loopback: Arc<quinn::ServerConfig>,
}

/// Binds the QUIC endpoint.
pub fn bind(
    addr: SocketAddr,
    identity: ServerIdentity,
    config: &Config,
) -> Result<Bound, ServerError> {
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
    let mut loopback = server.clone();
    loopback.transport_config(Arc::new(transport(config, true)));
    server.transport_config(Arc::new(transport(config, false)));
    let bind_error = |source| ServerError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind_error)?;
    enlarge_socket_buffers(&socket);
    let mut endpoint = quinn::EndpointConfig::default();
    endpoint
        .max_udp_payload_size(LOOPBACK_DATAGRAM_BYTES_MAX)
        .map_err(|e| bind_error(std::io::Error::other(e)))?;
    let endpoint = Endpoint::new(
        endpoint,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_error)?;
    Ok(Bound {
        endpoint,
        loopback: Arc::new(loopback),
    })
}

/// Transport settings for a client connection, over loopback or not.
fn transport(config: &Config, loopback: bool) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    let streams = u32::try_from(config.connection_inflight_requests_max).unwrap_or(u32::MAX);
    transport.max_concurrent_bidi_streams(VarInt::from_u32(streams));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    let window = u32::try_from(config.connection_inflight_bytes_max).unwrap_or(u32::MAX);
    transport.receive_window(VarInt::from_u32(window));
    // A stream may use the connection's whole window: requests are read one
    // stream at a time, so one big produce request need not wait for credit.
    transport.stream_receive_window(VarInt::from_u32(window));
    // quinn's defaults are tuned for 100 Mbit/s at 100 ms; the send window
    // here keeps several fetch responses (up to tens of MiB) in flight.
    transport.send_window(SEND_WINDOW_BYTES);
    let policy = datagram_policy(loopback);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(policy.mtu_upper_bound_bytes);
    transport.mtu_discovery_config(Some(mtu));
    transport.enable_segmentation_offload(policy.segmentation_offload);
    transport.max_idle_timeout(
        IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms)).ok(),
    );
    transport
}

/// Asks for big UDP socket buffers. A burst of datagrams beyond the default
/// (~208 KiB) is dropped by the kernel, which QUIC takes for congestion and
/// halves its window. The kernel caps the size at
/// `net.core.rmem_max`/`wmem_max`; a refusal only costs speed.
fn enlarge_socket_buffers(socket: &std::net::UdpSocket) {
    let Ok(state) = quinn::udp::UdpSocketState::new(socket.into()) else {
        return;
    };
    if let Err(error) = state.set_recv_buffer_size(socket.into(), UDP_SOCKET_BUFFER_BYTES) {
        tracing::debug!(%error, "could not enlarge the QUIC receive buffer");
    }
    if let Err(error) = state.set_send_buffer_size(socket.into(), UDP_SOCKET_BUFFER_BYTES) {
        tracing::debug!(%error, "could not enlarge the QUIC send buffer");
    }
}

/// Requested UDP socket buffer size, each direction.
const UDP_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of responses the broker may hold unacknowledged per connection.
const SEND_WINDOW_BYTES: u64 = 64 * 1024 * 1024;

/// Accepts connections until shutdown.
pub async fn accept_loop(
    endpoint: Endpoint,
    loopback: Arc<quinn::ServerConfig>,
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
        // to_canonical: a dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d.
        let connecting = if incoming.remote_address().ip().to_canonical().is_loopback() {
            incoming.accept_with(Arc::clone(&loopback))
        } else {
            incoming.accept()
        };
        let connecting = match connecting {
            Ok(connecting) => connecting,
            Err(error) => {
                tracing::debug!(%error, "QUIC connection refused");
                continue;
            }
        };
        let counted = broker.metrics.connection_opened();
        let broker = Arc::clone(&broker);
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            match connecting.await {
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
    let peer = connection.remote_address();
    // Streams are accepted in stream-id order, which is the order the client
    // opened them; reading each request and running its side effects here,
    // one stream after the other, applies a connection's requests in the
    // order they were sent, as Kafka does on TCP. So a client may pipeline
    // produce requests of one partition over QUIC too. Only the waiting (a
    // produce's durability, a fetch's long poll) and the response run apart.
    loop {
        let stream = tokio::select! {
            stream = connection.accept_bi() => stream,
            _ = shutdown.changed() => break,
        };
        let Ok((send, mut recv)) = stream else { break };
        let received = tokio::select! {
            received = read_request(&broker, &connection, &inflight, &mut recv) => received,
            _ = shutdown.changed() => break,
        };
        let (request, permit) = match received {
            Ok(Some(received)) => received,
            // The client reset or abandoned this stream: nothing to apply.
            Ok(None) => continue,
            Err(()) => break,
        };
        let dispatched = dispatch(&broker, request, peer.ip());
        if let Dispatched::Ready(Outcome::Close(reason)) = &dispatched {
            // Stop here, so no request after a malformed one is applied.
            tracing::warn!(%peer, %reason, "closing QUIC connection");
            connection.close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), b"malformed request");
            break;
        }
        let outcome = dispatched.outcome();
        let connection = connection.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            respond(outcome.await, &connection, peer, send).await;
            drop(permit);
            drop(alive);
        });
    }
}

/// Reads one request frame (without its size prefix) from a stream, holding
/// its bytes against the connection's in-flight budget. `Ok(None)` when the
/// stream ended early; `Err` when the connection must close.
async fn read_request(
    broker: &Broker,
    connection: &quinn::Connection,
    inflight: &Arc<Semaphore>,
    recv: &mut quinn::RecvStream,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, ()> {
    let peer = connection.remote_address();
    let mut prefix = [0u8; frame::FRAME_SIZE_PREFIX_BYTES];
    if recv.read_exact(&mut prefix).await.is_err() {
        return Ok(None);
    }
    let size = match frame::peek_frame_size(&prefix, broker.config.frame_bytes_max) {
        Ok(Some(size)) => size,
        Ok(None) => return Ok(None),
        Err(error) => {
            tracing::warn!(%peer, %error, "closing QUIC connection: bad frame size");
            broker.metrics.frame_rejected();
            connection.close(VarInt::from_u32(CLOSE_PROTOCOL_ERROR), b"frame too large");
            return Err(());
        }
    };
    let cost = size.clamp(1, broker.config.connection_inflight_bytes_max) as u32;
    let Ok(permit) = Arc::clone(inflight).acquire_many_owned(cost).await else {
        return Err(());
    };
    let mut request = BytesMut::zeroed(size);
    if recv.read_exact(&mut request).await.is_err() {
        return Ok(None);
    }
    Ok(Some((request.freeze(), permit)))
}

async fn respond(
    outcome: Outcome,
    connection: &quinn::Connection,
    peer: SocketAddr,
    mut send: quinn::SendStream,
) {
    match outcome {
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
