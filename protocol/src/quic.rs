//! What broker and client must agree on to speak Kafka over QUIC.

/// ALPN protocol id of Kafka-over-QUIC.
pub const ALPN: &[u8] = b"kafka";

/// Largest UDP payload QUIC MTU discovery may try on a path through the
/// network (quinn's default stops at 1452). Where the path carries it (jumbo
/// frames) a fifth of the datagrams carry the same bytes as at 1452, whose
/// per-packet work dominates. Larger is not better with segmentation offload
/// (GSO): quinn sends up to 10 datagrams in one GSO call, whose total the
/// kernel caps at 64 KiB, so bigger datagrams fail to send and read as a
/// black hole. On a path with a smaller MTU discovery stays at what the
/// path carries.
pub const DATAGRAM_BYTES_MAX: u16 = 6_500;

/// Largest UDP payload on a loopback path, and the largest an endpoint
/// accepts. Loopback's MTU is 64 KiB: ten times fewer datagrams than at
/// [`DATAGRAM_BYTES_MAX`], each sent with its own system call (no GSO: one
/// such datagram fills a GSO call's 64 KiB alone). A QUIC consume of 3 GB
/// over loopback used ~10 % less CPU and ran ~25 % faster than with
/// 6 500-byte datagrams in GSO batches. IPv4 caps a UDP payload at 65 507.
pub const LOOPBACK_DATAGRAM_BYTES_MAX: u16 = 65_000;

/// How datagrams are sized and sent on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramPolicy {
    /// Upper bound for MTU discovery.
    pub mtu_upper_bound_bytes: u16,
    /// Send batches of datagrams in one GSO system call.
    pub segmentation_offload: bool,
}

/// The datagram policy for a path over loopback or through the network.
pub fn datagram_policy(loopback: bool) -> DatagramPolicy {
    if loopback {
        DatagramPolicy {
            mtu_upper_bound_bytes: LOOPBACK_DATAGRAM_BYTES_MAX,
            segmentation_offload: false,
        }
    } else {
        DatagramPolicy {
            mtu_upper_bound_bytes: DATAGRAM_BYTES_MAX,
            segmentation_offload: true,
        }
    }
}
