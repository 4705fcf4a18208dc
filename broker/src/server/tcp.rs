//! The TCP listener and the per-connection loop.
//!
//! Kafka clients pipeline requests on one connection and expect them applied
//! and answered in request order. One task per connection takes whole
//! frames off the socket, runs each request's side effects (appends, topic
//! changes) at once, in arrival order, polls what remains to wait for (a
//! produce's durability, a fetch's long poll) itself, and writes the
//! responses in request order with vectored writes (fetch responses are
//! mostly mmap slices); responses complete together go out in one write.
//!
//! One task, not a reader, a writer and a task per waiting request: each
//! hand-off between tasks is a wakeup, often of the other worker thread,
//! and with the small batches of a latency-bound producer those wakeups
//! were most of the broker's work.
//!
//! Limits: a frame's size prefix is checked against `frame_bytes_max`
//! before its bytes are buffered (oversized → log line naming the peer and
//! size, connection closed); request bytes and request count in flight are
//! bounded (the connection stops reading until responses are written); a
//! connection with no request in flight and nothing read or written for
//! `idle_timeout_ms` is closed.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::future::{BoxFuture, Either, Ready};
use futures::stream::{FuturesOrdered, StreamExt};
use skiff_protocol::frame;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::dispatch::{dispatch, Dispatched, Outcome};
use crate::broker::Broker;

/// Bytes read from the socket per call when no frame is pending.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Slices handed to one `write_vectored` call.
const IO_SLICES_MAX: usize = 64;

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
            Connection::new(broker, stream, peer).serve(shutdown).await;
            drop(counted);
            drop(alive);
        });
    }
}

/// A response still being worked on, or one already complete that waits
/// behind an earlier one (kept without a box).
type Response = Either<Ready<Outcome>, BoxFuture<'static, Outcome>>;

/// Why the connection takes no more requests.
enum Stop {
    /// Peer closed, read failed, bad frame, idle or broker shutdown: answer
    /// the requests taken, then close.
    Drain,
    /// A request's outcome was to close: answer the requests before it,
    /// drop those after it, then close.
    Close(String),
}

struct Connection {
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read and not yet taken as frames.
    buf: BytesMut,
    /// Budget held by the requests whose responses are not yet written, and
    /// by the frame being received (taken as soon as its size prefix is
    /// read, so a size prefix alone never makes the broker buffer more than
    /// the connection's in-flight budget).
    inflight_bytes: usize,
    /// The part of `inflight_bytes` held by the frame being received.
    receiving_bytes: usize,
    /// Responses not complete yet, in request order, and their budgets.
    pending: FuturesOrdered<Response>,
    pending_bytes: VecDeque<usize>,
    /// Response bytes to write; per response, the count of chunks queued up
    /// to its end and its budget, released once those chunks are written.
    out: VecDeque<Bytes>,
    out_marks: VecDeque<(u64, usize)>,
    chunks_queued: u64,
    chunks_written: u64,
    stop: Option<Stop>,
    last_read: Instant,
    last_write: Instant,
}

impl Connection {
    fn new(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) -> Connection {
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        Connection {
            broker,
            stream,
            peer,
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            inflight_bytes: 0,
            receiving_bytes: 0,
            pending: FuturesOrdered::new(),
            pending_bytes: VecDeque::new(),
            out: VecDeque::new(),
            out_marks: VecDeque::new(),
            chunks_queued: 0,
            chunks_written: 0,
            stop: None,
            last_read: now,
            last_write: now,
        }
    }

    async fn serve(mut self, mut shutdown: watch::Receiver<bool>) {
        let idle_timeout = Duration::from_millis(self.broker.config.idle_timeout_ms.max(1));
        // Moved only when it fires: resetting a timer on every read would
        // cost more than one look at the clocks per timeout.
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        loop {
            let budget_full = self.stop.is_none() && !self.take_frames();
            let held_bytes = self.inflight_bytes;
            // Responses complete by now go out in the same write.
            std::future::poll_fn(|cx| {
                while let Poll::Ready(Some(outcome)) = self.pending.poll_next_unpin(cx) {
                    self.complete(outcome);
                }
                Poll::Ready(())
            })
            .await;
            if let Err(error) = self.write_out() {
                tracing::debug!(peer = %self.peer, %error, "write failed");
                return;
            }
            if self.stop.is_some() && self.pending.is_empty() && self.out.is_empty() {
                break;
            }
            if budget_full && self.inflight_bytes < held_bytes {
                continue; // budget came back: the next frame may fit now
            }
            let read = self.stop.is_none() && !budget_full;
            let interest = match (read, self.out.is_empty()) {
                (true, true) => Some(Interest::READABLE),
                (true, false) => Some(Interest::READABLE | Interest::WRITABLE),
                (false, false) => Some(Interest::WRITABLE),
                (false, true) => None,
            };
            let stream = &self.stream;
            let pending = &mut self.pending;
            tokio::select! {
                biased;
                Some(outcome) = pending.next(), if !pending.is_empty() => self.complete(outcome),
                ready = stream.ready(interest.unwrap_or(Interest::READABLE)), if interest.is_some() => {
                    match ready {
                        Ok(ready) if read && (ready.is_readable() || ready.is_read_closed()) => self.read(),
                        // Writable: the next turn writes.
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(peer = %self.peer, %error, "socket failed");
                            return;
                        }
                    }
                }
                () = &mut idle, if self.stop.is_none() => {
                    let now = Instant::now();
                    let deadline = self.last_read.max(self.last_write) + idle_timeout;
                    // Requests being handled (not a frame stalled half-way in).
                    let busy = self.inflight_bytes > self.receiving_bytes;
                    if deadline > now {
                        idle.as_mut().reset(deadline);
                    } else if busy {
                        // A long poll in flight is activity too.
                        idle.as_mut().reset(now + idle_timeout);
                    } else {
                        tracing::debug!(peer = %self.peer, "closing idle connection");
                        self.stop = Some(Stop::Drain);
                    }
                }
                _ = shutdown.changed(), if self.stop.is_none() => self.stop = Some(Stop::Drain),
            }
        }
        if let Some(Stop::Close(reason)) = &self.stop {
            tracing::warn!(peer = %self.peer, %reason, "closing connection");
        }
        let _ = self.stream.shutdown().await;
    }

    /// Reads what the socket has (the caller saw it readable).
    fn read(&mut self) {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK_BYTES);
        }
        match self.stream.try_read_buf(&mut self.buf) {
            Ok(0) => self.stop = Some(Stop::Drain),
            Ok(_) => self.last_read = Instant::now(),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => {
                tracing::debug!(peer = %self.peer, %error, "read failed");
                self.stop = Some(Stop::Drain);
            }
        }
    }

    /// Takes the whole frames in the buffer and runs their requests, in
    /// order. Returns false when the in-flight budget stops it: then nothing
    /// is read until responses are written.
    fn take_frames(&mut self) -> bool {
        let frame_bytes_max = self.broker.config.frame_bytes_max;
        let inflight_bytes_max = self.broker.config.connection_inflight_bytes_max;
        let inflight_requests_max = self.broker.config.connection_inflight_requests_max;
        while self.stop.is_none() {
            let size = match frame::peek_frame_size(&self.buf, frame_bytes_max) {
                Ok(Some(size)) => size,
                Ok(None) => return true,
                Err(error) => {
                    tracing::warn!(peer = %self.peer, %error, "closing connection: bad frame size");
                    self.broker.metrics.frame_rejected();
                    self.stop = Some(Stop::Drain);
                    return true;
                }
            };
            if self.receiving_bytes == 0 {
                // A frame larger than the whole budget takes all of it.
                let cost = size.clamp(1, inflight_bytes_max);
                let requests = self.pending_bytes.len() + self.out_marks.len();
                if self.inflight_bytes + cost > inflight_bytes_max
                    || requests >= inflight_requests_max
                {
                    return false;
                }
                self.inflight_bytes += cost;
                self.receiving_bytes = cost;
            }
            let total = frame::FRAME_SIZE_PREFIX_BYTES + size;
            if self.buf.len() < total {
                self.buf.reserve(total - self.buf.len());
                return true;
            }
            self.buf.advance(frame::FRAME_SIZE_PREFIX_BYTES);
            let request = self.buf.split_to(size).freeze();
            self.pending_bytes
                .push_back(std::mem::take(&mut self.receiving_bytes));
            // Side effects run here, in arrival order; only waits are left for later.
            match dispatch(&self.broker, request, self.peer.ip()) {
                Dispatched::Ready(outcome) if self.pending.is_empty() => self.complete(outcome),
                Dispatched::Ready(outcome) => self
                    .pending
                    .push_back(Either::Left(futures::future::ready(outcome))),
                Dispatched::Later(future) => self.pending.push_back(Either::Right(future)),
            }
        }
        true
    }

    /// Queues the next response in request order for writing.
    fn complete(&mut self, outcome: Outcome) {
        let Some(cost) = self.pending_bytes.pop_front() else {
            unreachable!("every pending response holds a budget");
        };
        match outcome {
            Outcome::Respond(frame) => {
                for chunk in frame.chunks {
                    // An empty slice would make a write of only empty slices
                    // return 0, which reads as a closed socket.
                    if !chunk.is_empty() {
                        self.out.push_back(chunk);
                        self.chunks_queued += 1;
                    }
                }
            }
            Outcome::Silent => {}
            Outcome::Close(reason) => {
                // The requests after this one are dropped unanswered.
                self.pending = FuturesOrdered::new();
                let dropped: usize = self.pending_bytes.drain(..).sum();
                self.inflight_bytes -= dropped + std::mem::take(&mut self.receiving_bytes);
                self.stop = Some(Stop::Close(reason));
            }
        }
        self.out_marks.push_back((self.chunks_queued, cost));
        self.release_written();
    }

    /// Writes queued responses until the socket would block.
    fn write_out(&mut self) -> std::io::Result<()> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); IO_SLICES_MAX];
            let count = self.out.len().min(IO_SLICES_MAX);
            for (slice, chunk) in slices.iter_mut().zip(&self.out) {
                *slice = IoSlice::new(chunk);
            }
            let mut written = match self.stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(error),
            };
            self.last_write = Instant::now();
            while let Some(chunk) = self.out.front_mut() {
                if written < chunk.len() {
                    chunk.advance(written);
                    break;
                }
                written -= chunk.len();
                self.out.pop_front();
                self.chunks_written += 1;
            }
            self.release_written();
        }
        Ok(())
    }

    /// Returns the budget of the responses written in full.
    fn release_written(&mut self) {
        while let Some(&(end, cost)) = self.out_marks.front() {
            if end > self.chunks_written {
                break;
            }
            self.inflight_bytes -= cost;
            self.out_marks.pop_front();
        }
    }
}
