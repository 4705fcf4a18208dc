//! Connections to brokers: addresses, TCP and QUIC transports, and API
//! version negotiation.

mod address;
mod buffer_pool;
mod connection;
mod frame_buffer;
mod quic;
mod tcp;

pub use address::{parse_bootstrap, BrokerAddress, Transport};
pub use connection::{BrokerConnection, ConnectionConfig, Request, ResponseFuture};
pub use quic::{fingerprint_hex, sha256, QuicTrust, ALPN_KAFKA};
