//! The receive buffer of a TCP connection: whole response frames out, each
//! read into place once.
//!
//! A fetch response can be tens of MiB. Growing the buffer as it arrives
//! copies what has arrived each time the buffer moves, and a fresh
//! allocation that large is new memory from the kernel, faulted in page by
//! page. So the whole frame is reserved as soon as its size is known (the
//! broker's sizes are trusted up to the configured maximum), and the
//! allocation of an earlier frame is reused once the application has
//! dropped every record that pointed into it. Two allocations take turns:
//! one holds the frame being decoded, the other the frame arriving; a
//! connection keeps both, so up to twice its largest frame.

use bytes::{Buf, Bytes, BytesMut};
use skiff_protocol::frame;
use skiff_protocol::DecodeError;

/// Room kept beyond a frame, so the next frame's size prefix (and, for
/// small responses, whole frames) arrives in the same read.
const READ_AHEAD_BYTES: usize = 64 * 1024;

/// A new allocation is this much larger than needed, so that it can be
/// reused for a somewhat larger frame later.
const HEADROOM_DIVISOR: usize = 8;

pub(crate) struct FrameBuffer {
    /// Received bytes not yet taken as frames; reads append here.
    current: BytesMut,
    /// An empty view of the previous allocation, reclaimed once unique.
    spare: BytesMut,
    frame_bytes_max: usize,
    /// Allocations made for frames, for tests.
    allocations: u64,
}

impl FrameBuffer {
    pub(crate) fn new(frame_bytes_max: usize) -> Self {
        FrameBuffer {
            current: BytesMut::with_capacity(READ_AHEAD_BYTES),
            spare: BytesMut::new(),
            frame_bytes_max,
            allocations: 0,
        }
    }

    /// Takes the next whole frame's payload (without its size prefix), or
    /// makes room for the rest of it and returns `Ok(None)`.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let Some(size) = frame::peek_frame_size(&self.current, self.frame_bytes_max)? else {
            self.make_room(READ_AHEAD_BYTES);
            return Ok(None);
        };
        let total = frame::FRAME_SIZE_PREFIX_BYTES + size;
        if self.current.len() < total {
            self.make_room(total - self.current.len() + READ_AHEAD_BYTES);
            return Ok(None);
        }
        self.current.advance(frame::FRAME_SIZE_PREFIX_BYTES);
        Ok(Some(self.current.split_to(size).freeze()))
    }

    /// Where the next read appends; has room after `next_frame` returned `Ok(None)`.
    pub(crate) fn unfilled(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    /// Ensures room for `additional` more bytes without moving frames
    /// already handed out.
    fn make_room(&mut self, additional: usize) {
        if self.current.capacity() - self.current.len() >= additional
            || self.current.try_reclaim(additional)
        {
            return;
        }
        let needed = self.current.len() + additional;
        if !self.spare.try_reclaim(needed) {
            // The spare is still in use (or too small): a new allocation,
            // with headroom so that it can serve a larger frame later.
            self.spare = BytesMut::with_capacity(needed + needed / HEADROOM_DIVISOR);
            self.allocations += 1;
        }
        self.spare.extend_from_slice(&self.current);
        std::mem::swap(&mut self.current, &mut self.spare);
        // The old allocation's frames may still be in use; keep a handle to
        // reclaim it when they are gone.
        self.spare.clear();
        debug_assert!(self.current.capacity() - self.current.len() >= additional);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn framed(payload_bytes: usize, fill: u8) -> Vec<u8> {
        let mut out = (payload_bytes as i32).to_be_bytes().to_vec();
        out.resize(4 + payload_bytes, fill);
        out
    }

    /// Feeds `stream` in reads of at most `read_bytes`, as a socket would.
    fn feed(buffer: &mut FrameBuffer, stream: &[u8], read_bytes: usize, out: &mut Vec<Bytes>) {
        let mut at = 0;
        loop {
            while let Some(frame) = buffer.next_frame().unwrap() {
                out.push(frame);
            }
            if at == stream.len() {
                return;
            }
            let room = buffer.unfilled();
            let take = read_bytes
                .min(room.capacity() - room.len())
                .min(stream.len() - at);
            assert!(take > 0, "no room after next_frame returned None");
            room.extend_from_slice(&stream[at..at + take]);
            at += take;
        }
    }

    /// Frames come out whole and in order, whatever the read sizes.
    #[test]
    fn frames_come_out_whole_and_in_order() {
        for read_bytes in [1, 3, 1000, 70_000, 10_000_000] {
            let mut stream = Vec::new();
            for (i, size) in [0usize, 5, 300_000, 17, 2_000_000].into_iter().enumerate() {
                stream.extend(framed(size, i as u8));
            }
            let mut buffer = FrameBuffer::new(10_000_000);
            let mut frames = Vec::new();
            feed(&mut buffer, &stream, read_bytes, &mut frames);
            let sizes: Vec<usize> = frames.iter().map(Bytes::len).collect();
            assert_eq!(
                sizes,
                [0, 5, 300_000, 17, 2_000_000],
                "reads of {read_bytes}"
            );
            for (i, frame) in frames.iter().enumerate() {
                assert!(frame.iter().all(|&b| b == i as u8), "frame {i} corrupted");
            }
        }
    }

    /// Large frames are read in place, and allocations take turns: while
    /// the application decodes one frame the next arrives in the other
    /// allocation, so a long stream of frames needs only two.
    #[test]
    fn large_frames_are_read_into_two_allocations_taking_turns() {
        let size = 4 << 20;
        let mut buffer = FrameBuffer::new(64 << 20);
        let mut decoding: Option<Bytes> = None;
        for round in 0..20u8 {
            let mut frames = Vec::new();
            feed(&mut buffer, &framed(size, round), 1 << 20, &mut frames);
            assert_eq!(frames.len(), 1);
            assert!(frames[0].iter().all(|&b| b == round));
            // The previous frame is done with once the next has arrived.
            decoding = frames.pop();
        }
        assert!(decoding.is_some());
        assert_eq!(buffer.allocations, 2, "allocations for 20 frames");
    }

    /// Frames still held by the application are never overwritten.
    #[test]
    fn held_frames_are_not_overwritten() {
        let size = 1 << 20;
        let mut buffer = FrameBuffer::new(64 << 20);
        let mut held = Vec::new();
        for round in 0..5u8 {
            feed(&mut buffer, &framed(size, round), 100_000, &mut held);
        }
        for (round, frame) in held.iter().enumerate() {
            assert!(
                frame.iter().all(|&b| b == round as u8),
                "frame {round} overwritten"
            );
        }
    }

    proptest::proptest! {
        /// Any frames, read in any slices, with the application holding any
        /// of them for a while, come out whole, in order and unchanged.
        #[test]
        fn frames_survive_any_reads_and_holds(
            sizes in proptest::collection::vec(0usize..200_000, 1..12),
            reads in proptest::collection::vec(1usize..150_000, 1..8),
            held_for in proptest::collection::vec(0usize..3, 12),
        ) {
            let mut stream = Vec::new();
            for (i, &size) in sizes.iter().enumerate() {
                stream.extend(framed(size, i as u8));
            }
            let mut buffer = FrameBuffer::new(1 << 20);
            // Frames the application still holds: the count of frames at
            // which it drops each, its index, the frame.
            let mut held: Vec<(usize, usize, Bytes)> = Vec::new();
            let mut seen = 0usize;
            let mut at = 0usize;
            let mut turn = 0usize;
            loop {
                while let Some(frame) = buffer.next_frame().unwrap() {
                    proptest::prop_assert_eq!(frame.len(), sizes[seen]);
                    held.push((seen + held_for[seen % held_for.len()], seen, frame));
                    seen += 1;
                    held.retain(|(until, _, _)| *until >= seen);
                    for (_, index, frame) in &held {
                        proptest::prop_assert!(
                            frame.iter().all(|&b| b == *index as u8),
                            "frame {} changed while held", index
                        );
                    }
                }
                if at == stream.len() {
                    break;
                }
                let room = buffer.unfilled();
                let take = reads[turn % reads.len()]
                    .min(room.capacity() - room.len())
                    .min(stream.len() - at);
                proptest::prop_assert!(take > 0);
                room.extend_from_slice(&stream[at..at + take]);
                at += take;
                turn += 1;
            }
            proptest::prop_assert_eq!(seen, sizes.len());
        }
    }

    /// A size above the maximum is an error before anything is reserved.
    #[test]
    fn oversized_frames_are_rejected() {
        let mut buffer = FrameBuffer::new(1000);
        buffer.unfilled().extend_from_slice(&1001i32.to_be_bytes());
        assert_eq!(
            buffer.next_frame(),
            Err(DecodeError::FrameTooLarge {
                size: 1001,
                max: 1000
            })
        );
    }
}
