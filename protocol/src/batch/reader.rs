//! Walks a buffer holding many concatenated batches (a produce request's
//! records, a fetch response, a segment slice).

use bytes::Bytes;

use super::view::{BatchHeader, RecordBatchView};
use crate::error::Result;

/// Yields each whole batch of a buffer as a [`RecordBatchView`].
///
/// A buffer may end with a partial batch (Kafka truncates fetch responses
/// at `max_bytes`); iteration stops before it and
/// [`partial_tail_bytes`](Self::partial_tail_bytes) reports its size, so a
/// caller that requires whole batches (produce) can refuse the request.
/// A batch with a malformed header is an error, after which iteration stops.
#[derive(Debug, Clone)]
pub struct BatchReader {
    buf: Bytes,
    pos: usize,
    done: bool,
}

impl BatchReader {
    pub fn new(buf: Bytes) -> Self {
        BatchReader {
            buf,
            pos: 0,
            done: false,
        }
    }

    /// Byte position of the next batch within the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left unread after iteration stopped on a partial batch.
    pub fn partial_tail_bytes(&self) -> usize {
        self.buf.len() - self.pos
    }
}

impl Iterator for BatchReader {
    type Item = Result<RecordBatchView>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let total = match BatchHeader::peek_total_bytes(rest) {
            Ok(Some(total)) if total <= rest.len() => total,
            Ok(_) => {
                self.done = true;
                return None;
            }
            Err(error) => {
                self.done = true;
                return Some(Err(error));
            }
        };
        let view = RecordBatchView::new(self.buf.slice(self.pos..self.pos + total));
        match view {
            Ok(_) => self.pos += total,
            Err(_) => self.done = true,
        }
        Some(view)
    }
}
