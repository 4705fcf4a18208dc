//! skiff-protocol: the bytes Skiff puts on the wire and on disk.
//!
//! This crate is a pure codec: it performs no I/O and needs no async runtime.
//! Everything that reads untrusted bytes checks each length against a named
//! limit before it allocates, and reports *where* and *what* went wrong.
//!
//! - [`batch`]: Kafka's RecordBatch v2, as a zero-copy view and a builder.
//! - [`frame`]: the 4-byte size prefix and request/response headers.
//! - [`api`]: request decoding and response encoding for every API we serve,
//!   through the `kafka-protocol` crate behind a small API of ours.
//! - [`partition`]: the murmur2 key partitioner, identical to the Java client's.
//! - [`error_code`]: Kafka's numeric error codes.
//! - [`quic`]: the constants broker and client share for Kafka over QUIC.

pub mod api;
pub mod batch;
pub mod error;
pub mod error_code;
pub mod frame;
pub mod partition;
pub mod quic;

pub use error::{DecodeError, Result};
pub use error_code::ErrorCode;
