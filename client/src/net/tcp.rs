//! One TCP connection to a broker with pipelined requests.
//!
//! Callers write their request frames under a short lock on the write half
//! and then wait, without the lock, for the reader task to hand them the
//! response whose correlation id matches. Many requests are thus in flight
//! on one connection at once, as Kafka allows (responses come back in
//! request order, but matching by id does not rely on it).

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::frame_buffer::FrameBuffer;
use crate::error::{Error, Result};

/// Response frames, without their size prefix, keyed by correlation id.
type Waiters = HashMap<i32, oneshot::Sender<Result<Bytes>>>;

#[derive(Default)]
struct Pending {
    waiters: Waiters,
    /// Set once the connection is unusable; new requests fail with it.
    closed: Option<String>,
}

/// A pipelined TCP connection.
pub(crate) struct TcpLink {
    address: String,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Mutex<Pending>>,
    reader: JoinHandle<()>,
}

impl TcpLink {
    /// Connects to the first of `addrs` that accepts.
    pub(crate) async fn connect(
        address: String,
        addrs: &[std::net::SocketAddr],
        frame_bytes_max: usize,
    ) -> Result<Self> {
        let mut last_error = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Requests are small and latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    let (read, write) = stream.into_split();
                    let pending = Arc::new(Mutex::new(Pending::default()));
                    let reader = tokio::spawn(read_loop(
                        read,
                        Arc::clone(&pending),
                        address.clone(),
                        frame_bytes_max,
                    ));
                    return Ok(TcpLink {
                        address,
                        writer: tokio::sync::Mutex::new(write),
                        pending,
                        reader,
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        let source =
            last_error.unwrap_or_else(|| std::io::Error::other("no address to connect to"));
        Err(Error::Connect {
            address,
            source: Arc::new(source),
        })
    }

    /// Whether the connection has failed or been closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.pending
            .lock()
            .map(|p| p.closed.is_some())
            .unwrap_or(true)
    }

    /// Writes `chunks` (one whole frame) and, if `correlation_id` is given,
    /// returns a receiver for the response frame.
    pub(crate) async fn send(
        &self,
        chunks: &[Bytes],
        correlation_id: Option<i32>,
    ) -> Result<Option<oneshot::Receiver<Result<Bytes>>>> {
        let mut writer = self.writer.lock().await;
        let receiver = {
            let mut pending = self.lock_pending()?;
            if let Some(reason) = &pending.closed {
                return Err(self.disconnected(reason.clone()));
            }
            correlation_id.map(|id| {
                let (tx, rx) = oneshot::channel();
                pending.waiters.insert(id, tx);
                rx
            })
        };
        if let Err(error) = write_all_vectored(&mut writer, chunks).await {
            let reason = format!("write failed: {error}");
            self.close(&reason);
            return Err(self.disconnected(reason));
        }
        Ok(receiver)
    }

    /// Forgets a waiter (after a timeout), so a late response is dropped.
    pub(crate) fn forget(&self, correlation_id: i32) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.waiters.remove(&correlation_id);
        }
    }

    /// Marks the connection closed and fails everything in flight.
    pub(crate) fn close(&self, reason: &str) {
        fail_all(&self.pending, &self.address, reason);
        self.reader.abort();
    }

    fn lock_pending(&self) -> Result<std::sync::MutexGuard<'_, Pending>> {
        self.pending
            .lock()
            .map_err(|_| self.disconnected("connection state poisoned".into()))
    }

    fn disconnected(&self, reason: String) -> Error {
        Error::Disconnected {
            address: self.address.clone(),
            reason,
        }
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn fail_all(pending: &Mutex<Pending>, address: &str, reason: &str) {
    let waiters = match pending.lock() {
        Ok(mut pending) => {
            if pending.closed.is_none() {
                pending.closed = Some(reason.to_string());
            }
            std::mem::take(&mut pending.waiters)
        }
        Err(_) => return,
    };
    for (_, waiter) in waiters {
        let _ = waiter.send(Err(Error::Disconnected {
            address: address.to_string(),
            reason: reason.to_string(),
        }));
    }
}

async fn read_loop(
    mut read: tokio::net::tcp::OwnedReadHalf,
    pending: Arc<Mutex<Pending>>,
    address: String,
    frame_bytes_max: usize,
) {
    let mut buffer = FrameBuffer::new(frame_bytes_max);
    let reason = loop {
        match buffer.next_frame() {
            Ok(Some(frame)) => {
                let Some(id) = frame.first_chunk::<4>().map(|b| i32::from_be_bytes(*b)) else {
                    break "response frame shorter than a correlation id".to_string();
                };
                let waiter = match pending.lock() {
                    Ok(mut pending) => pending.waiters.remove(&id),
                    Err(_) => break "connection state poisoned".to_string(),
                };
                // A response nobody waits for belongs to a request that timed out.
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Ok(frame));
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => break format!("bad frame from broker: {error}"),
        }
        match read.read_buf(buffer.unfilled()).await {
            Ok(0) => break "the broker closed the connection".to_string(),
            Ok(_) => {}
            Err(error) => break format!("read failed: {error}"),
        }
    };
    fail_all(&pending, &address, &reason);
}

/// Writes every chunk with as few system calls as the kernel allows.
async fn write_all_vectored(writer: &mut OwnedWriteHalf, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut index = 0;
    let mut offset = 0;
    while index < chunks.len() {
        let mut slices = [IoSlice::new(&[]); 16];
        let mut count = 0;
        for (i, chunk) in chunks[index..].iter().enumerate().take(slices.len()) {
            let start = if i == 0 { offset } else { 0 };
            slices[count] = IoSlice::new(&chunk[start..]);
            count += 1;
        }
        let mut written = writer.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "socket accepted no bytes",
            ));
        }
        while index < chunks.len() && written > 0 {
            let left = chunks[index].len() - offset;
            if written >= left {
                written -= left;
                index += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    writer.flush().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Two requests in flight at once get the responses with their own
    /// correlation ids even when the server answers in reverse order.
    #[tokio::test]
    async fn matches_responses_by_correlation_id() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut ids = Vec::new();
            for _ in 0..2 {
                let size = socket.read_i32().await.unwrap() as usize;
                let mut body = vec![0u8; size];
                socket.read_exact(&mut body).await.unwrap();
                ids.push(i32::from_be_bytes([body[0], body[1], body[2], body[3]]));
            }
            for id in ids.iter().rev() {
                socket.write_i32(8).await.unwrap();
                socket.write_i32(*id).await.unwrap();
                socket.write_i32(id * 10).await.unwrap();
            }
        });
        let link = TcpLink::connect("test".into(), &[addr], 1024)
            .await
            .unwrap();
        let frame = |id: i32| {
            let mut b = bytes::BytesMut::new();
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&id.to_be_bytes());
            vec![b.freeze()]
        };
        let first = link.send(&frame(7), Some(7)).await.unwrap().unwrap();
        let second = link.send(&frame(8), Some(8)).await.unwrap().unwrap();
        let second = second.await.unwrap().unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!(&first[..], &[0, 0, 0, 7, 0, 0, 0, 70]);
        assert_eq!(&second[..], &[0, 0, 0, 8, 0, 0, 0, 80]);
        server.await.unwrap();
    }

    /// When the broker goes away, requests in flight fail with Disconnected
    /// and the link reports itself closed.
    #[tokio::test]
    async fn broken_connection_fails_waiters() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            drop(socket);
        });
        let link = TcpLink::connect("test".into(), &[addr], 1024)
            .await
            .unwrap();
        server.await.unwrap();
        let chunk = vec![Bytes::from_static(&[0, 0, 0, 4, 0, 0, 0, 1])];
        let outcome = match link.send(&chunk, Some(1)).await {
            Ok(Some(rx)) => rx.await.unwrap(),
            Ok(None) => unreachable!(),
            Err(error) => Err(error),
        };
        assert!(
            matches!(outcome, Err(Error::Disconnected { .. })),
            "{outcome:?}"
        );
        assert!(link.is_closed());
    }

    /// A frame larger than the limit closes the connection instead of allocating.
    #[tokio::test]
    async fn oversized_response_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let _ = socket.read_i32().await;
            socket.write_i32(1 << 30).await.unwrap();
            socket
        });
        let link = TcpLink::connect("test".into(), &[addr], 1024)
            .await
            .unwrap();
        let chunk = vec![Bytes::from_static(&[0, 0, 0, 4, 0, 0, 0, 1])];
        let rx = link.send(&chunk, Some(1)).await.unwrap().unwrap();
        let outcome = rx.await.unwrap();
        match outcome {
            Err(Error::Disconnected { reason, .. }) => {
                assert!(reason.contains("exceeds"), "{reason}")
            }
            other => panic!("expected a disconnect, got {other:?}"),
        }
        drop(server);
    }
}
