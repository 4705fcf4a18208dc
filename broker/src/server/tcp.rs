//! The TCP listener and the per-connection read/dispatch/write loop.
//!
//! Kafka clients pipeline requests on one connection and expect them applied
//! and answered in request order. The reader half takes whole frames off the
//! socket and runs each request's side effects (appends, topic changes) at
//! once, in arrival order; what remains to wait for (a produce's durability,
//! a fetch's long poll) runs as its own task, so a long poll does not hold
//! up the requests behind it. The writer half takes the responses in
//! request order and writes them with vectored writes (fetch responses are
//! mostly mmap slices).
//!
//! Limits: a frame's size prefix is checked against `frame_bytes_max`
//! before its bytes are buffered (oversized → log line naming the peer and
//! size, connection closed); request bytes and request count in flight are
//! bounded (the reader stops reading until responses drain); a connection
//! with no request in flight and nothing read or written for
//! `idle_timeout_ms` is closed.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use skiff_protocol::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::dispatch::{dispatch, Dispatched, Outcome};
use crate::broker::Broker;

/// Bytes read from the socket per call when no frame is pending.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Slices handed to one `write_vectored` call.
const IO_SLICES_MAX: usize = 64;

/// A response slot: ready, or being produced by a spawned task.
enum Slot {
    Ready(Outcome),
    Running(JoinHandle<Outcome>),
}

impl Slot {
    fn is_finished(&self) -> bool {
        match self {
            Slot::Ready(_) => true,
            Slot::Running(handle) => handle.is_finished(),
        }
    }

    async fn outcome(self) -> Outcome {
        match self {
            Slot::Ready(outcome) => outcome,
            Slot::Running(handle) => match handle.await {
                Ok(outcome) => outcome,
                Err(error) => Outcome::Close(format!("request task failed: {error}")),
            },
        }
    }
}

/// Polls a request's remaining work once here and spawns it only if it
/// must wait. Most of it finishes at once (a produce whose flush policy is
/// not `sync`, a fetch with data), and a task spawned per request may wake
/// another worker thread to run it.
fn start(mut future: futures::future::BoxFuture<'static, Outcome>) -> Slot {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(outcome) => Slot::Ready(outcome),
        // The noop waker is never woken; the task polls again with its own.
        std::task::Poll::Pending => Slot::Running(tokio::spawn(future)),
    }
}

struct Pending {
    response: Slot,
    /// Released once the response is written.
    permit: OwnedSemaphorePermit,
}

/// Accepts connections until shutdown; each connection holds a clone of
/// `alive` so that the caller can wait for all of them to finish.
pub async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if broker.metrics.connections_open() >= broker.config.connections_max as i64 {
            tracing::warn!(%peer, limit = broker.config.connections_max, "refusing connection: too many open");
            broker.metrics.connection_refused();
            continue;
        }
        // Counted here, not in the task, so a burst cannot overshoot the limit.
        let counted = broker.metrics.connection_opened();
        let broker = Arc::clone(&broker);
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            serve_connection(broker, stream, peer, shutdown).await;
            drop(counted);
            drop(alive);
        });
    }
}

async fn serve_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let config = &broker.config;
    let frame_bytes_max = config.frame_bytes_max;
    let inflight_bytes_max = config.connection_inflight_bytes_max;
    let inflight = Arc::new(Semaphore::new(inflight_bytes_max));
    let (queue, responses) = mpsc::channel::<Pending>(config.connection_inflight_requests_max);
    // Idle means: nothing read and nothing written for `idle_timeout_ms`.
    let epoch = Instant::now();
    let mut last_read = epoch;
    let last_write_ms = Arc::new(AtomicU64::new(0));
    let writer_task = tokio::spawn(write_responses(
        writer,
        responses,
        peer,
        WriteClock {
            epoch,
            last_write_ms: Arc::clone(&last_write_ms),
        },
    ));
    let idle_timeout = Duration::from_millis(config.idle_timeout_ms.max(1));
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    // Budget held for the frame being received, taken as soon as its size
    // prefix is read: a size prefix alone never makes the broker buffer more
    // than the connection's in-flight budget.
    let mut reserved: Option<OwnedSemaphorePermit> = None;
    'connection: loop {
        loop {
            let size = match frame::peek_frame_size(&buf, frame_bytes_max) {
                Ok(Some(size)) => size,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%peer, %error, "closing connection: bad frame size");
                    broker.metrics.frame_rejected();
                    break 'connection;
                }
            };
            let permit = match reserved.take() {
                Some(permit) => permit,
                // A frame larger than the whole budget takes all of it.
                None => match Arc::clone(&inflight)
                    .acquire_many_owned(size.clamp(1, inflight_bytes_max) as u32)
                    .await
                {
                    Ok(permit) => permit,
                    Err(_) => break 'connection,
                },
            };
            let total = frame::FRAME_SIZE_PREFIX_BYTES + size;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                reserved = Some(permit);
                break;
            }
            buf.advance(frame::FRAME_SIZE_PREFIX_BYTES);
            let request = buf.split_to(size).freeze();
            // Side effects run here, in arrival order; only waits run apart.
            let response = match dispatch(&broker, request, peer.ip()) {
                Dispatched::Ready(outcome) => Slot::Ready(outcome),
                Dispatched::Later(future) => start(future),
            };
            if queue.send(Pending { response, permit }).await.is_err() {
                break 'connection; // the writer stopped: the connection is closing
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        let last_write = epoch + Duration::from_millis(last_write_ms.load(Ordering::Relaxed));
        let idle_deadline = last_read.max(last_write) + idle_timeout;
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break,
                Ok(_) => last_read = Instant::now(),
                Err(error) => {
                    tracing::debug!(%peer, %error, "read failed");
                    break;
                }
            },
            _ = tokio::time::sleep_until(idle_deadline) => {
                let last_write = epoch + Duration::from_millis(last_write_ms.load(Ordering::Relaxed));
                // Requests being handled (not a frame stalled half-way in).
                let receiving = reserved.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
                let busy = inflight.available_permits() + receiving < inflight_bytes_max;
                if busy {
                    // A long poll in flight is activity too.
                    last_read = Instant::now();
                } else if last_write + idle_timeout <= Instant::now() {
                    tracing::debug!(%peer, "closing idle connection");
                    break;
                }
            },
            _ = queue.closed() => break,
            _ = shutdown.changed() => break,
        }
    }
    // The writer sends every queued response, then closes the socket.
    drop(queue);
    let _ = writer_task.await;
}

/// Writes responses in request order. Responses that are already complete
/// when one is written go out in the same vectored write, so a pipelining
/// client costs one syscall per burst rather than one per request.
/// Where the writer records when it last wrote, for the idle timeout.
struct WriteClock {
    epoch: Instant,
    last_write_ms: Arc<AtomicU64>,
}

async fn write_responses(
    mut writer: OwnedWriteHalf,
    mut responses: mpsc::Receiver<Pending>,
    peer: SocketAddr,
    clock: WriteClock,
) {
    let mut waiting: Option<Pending> = None;
    loop {
        let first = match waiting.take() {
            Some(pending) => pending,
            None => match responses.recv().await {
                Some(pending) => pending,
                None => break,
            },
        };
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut permits = Vec::new();
        let mut close = None;
        let mut current = Some(first);
        while let Some(pending) = current.take() {
            let outcome = pending.response.outcome().await;
            permits.push(pending.permit);
            match outcome {
                Outcome::Respond(frame) => chunks.extend(frame.chunks),
                Outcome::Silent => {}
                Outcome::Close(reason) => {
                    close = Some(reason);
                    break;
                }
            }
            if chunks.len() >= IO_SLICES_MAX {
                break;
            }
            if let Ok(next) = responses.try_recv() {
                if next.response.is_finished() {
                    current = Some(next);
                } else {
                    waiting = Some(next);
                }
            }
        }
        if !chunks.is_empty() {
            if let Err(error) = write_chunks(&mut writer, chunks).await {
                tracing::debug!(%peer, %error, "write failed");
                break;
            }
            let since_epoch_ms = clock.epoch.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
            clock.last_write_ms.store(since_epoch_ms, Ordering::Relaxed);
        }
        drop(permits);
        if let Some(reason) = close {
            tracing::warn!(%peer, %reason, "closing connection");
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// Writes every chunk with as few `write_vectored` calls as the socket allows.
pub async fn write_chunks<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    mut chunks: Vec<Bytes>,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[first..]
            .iter()
            .take(IO_SLICES_MAX)
            .map(|c| IoSlice::new(c))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 && first < chunks.len() {
            let chunk = &mut chunks[first];
            if written >= chunk.len() {
                written -= chunk.len();
                first += 1;
            } else {
                chunk.advance(written);
                written = 0;
            }
        }
        while first < chunks.len() && chunks[first].is_empty() {
            first += 1;
        }
    }
    Ok(())
}
