//! What broker and client must agree on to speak Kafka over QUIC.

/// ALPN protocol id of Kafka-over-QUIC.
pub const ALPN: &[u8] = b"kafka";

/// Largest UDP payload QUIC MTU discovery may try, and that an endpoint
/// accepts (quinn's default stops at 1452). On loopback (MTU 64 KiB)
/// discovery climbs to it and a fifth of the datagrams carry the same bytes:
/// twice the throughput of 1452-byte packets, which spend their time on
/// per-packet work. Larger is not better: quinn sends up to 10 datagrams in
/// one GSO call, whose total the kernel caps at 64 KiB, so bigger datagrams
/// fail to send and read as a black hole (16 KiB datagrams were slower than
/// 1452 for that reason). On a path with a smaller MTU discovery stays at
/// what the path carries.
pub const DATAGRAM_BYTES_MAX: u16 = 6_500;
