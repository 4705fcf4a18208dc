//! Broker addresses: `host:port` for TCP, `quic://host:port` for QUIC.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How to reach a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Kafka's framing over one TCP connection, requests pipelined.
    Tcp,
    /// Kafka's framing over QUIC, one bidirectional stream per request.
    Quic,
}

/// A broker's host, port and transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddress {
    /// The transport to use.
    pub transport: Transport,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port number.
    pub port: u16,
}

impl BrokerAddress {
    /// A TCP address.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        BrokerAddress {
            transport: Transport::Tcp,
            host: host.into(),
            port,
        }
    }

    /// A QUIC address.
    pub fn quic(host: impl Into<String>, port: u16) -> Self {
        BrokerAddress {
            transport: Transport::Quic,
            host: host.into(),
            port,
        }
    }

    /// The same host and port reached with `transport`.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Resolves the host to socket addresses (DNS for names).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let target = (self.host.as_str(), self.port);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target)
            .await
            .map_err(|e| Error::InvalidAddress {
                address: self.to_string(),
                reason: format!("cannot resolve host: {e}"),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::InvalidAddress {
                address: self.to_string(),
                reason: "host resolves to no address".into(),
            });
        }
        Ok(addrs)
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Tcp => "",
            Transport::Quic => "quic://",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for BrokerAddress {
    type Err = Error;

    /// Parses `host:port`, `tcp://host:port`, `quic://host:port`, with
    /// IPv6 hosts in brackets (`[::1]:9092`).
    fn from_str(text: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidAddress {
            address: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        let (transport, rest) = if let Some(rest) = trimmed.strip_prefix("quic://") {
            (Transport::Quic, rest)
        } else if let Some(rest) = trimmed.strip_prefix("tcp://") {
            (Transport::Tcp, rest)
        } else if trimmed.contains("://") {
            return Err(invalid(
                "unknown scheme; use host:port, tcp://host:port or quic://host:port",
            ));
        } else {
            (Transport::Tcp, trimmed)
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("missing ']' after an IPv6 host"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| invalid("missing :port after the host"))?;
            (host, port)
        } else {
            rest.rsplit_once(':')
                .ok_or_else(|| invalid("missing :port after the host"))?
        };
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| invalid("port is not a number between 0 and 65535"))?;
        Ok(BrokerAddress {
            transport,
            host: host.to_string(),
            port,
        })
    }
}

/// Parses a comma-separated bootstrap list such as
/// `127.0.0.1:9092,quic://10.0.0.2:9093`.
pub fn parse_bootstrap(list: &str) -> Result<Vec<BrokerAddress>> {
    let addresses: Vec<BrokerAddress> = list
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_>>()?;
    if addresses.is_empty() {
        return Err(Error::InvalidAddress {
            address: list.to_string(),
            reason: "the bootstrap list is empty".into(),
        });
    }
    Ok(addresses)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every accepted spelling parses to the right transport, host and port.
    #[test]
    fn parses_tcp_quic_and_ipv6() {
        let tcp: BrokerAddress = "127.0.0.1:9092".parse().unwrap();
        assert_eq!(tcp, BrokerAddress::tcp("127.0.0.1", 9092));
        let quic: BrokerAddress = "quic://localhost:9093".parse().unwrap();
        assert_eq!(quic, BrokerAddress::quic("localhost", 9093));
        let v6: BrokerAddress = "tcp://[::1]:1".parse().unwrap();
        assert_eq!(v6, BrokerAddress::tcp("::1", 1));
        assert_eq!(v6.to_string(), "[::1]:1");
        assert_eq!(quic.to_string(), "quic://localhost:9093");
        let list = parse_bootstrap("a:1, quic://b:2,").unwrap();
        assert_eq!(
            list,
            vec![BrokerAddress::tcp("a", 1), BrokerAddress::quic("b", 2)]
        );
    }

    /// Bad addresses are rejected with a reason, not a panic.
    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "localhost",
            "http://a:1",
            "a:port",
            "a:70000",
            ":9092",
            "[::1:9092",
            "",
        ] {
            let parsed = if bad.is_empty() {
                parse_bootstrap(bad).map(|_| ())
            } else {
                bad.parse::<BrokerAddress>().map(|_| ())
            };
            assert!(
                matches!(parsed, Err(Error::InvalidAddress { .. })),
                "{bad:?} gave {parsed:?}"
            );
        }
    }

    proptest::proptest! {
        /// Printing an address and parsing it back gives the same address.
        #[test]
        fn display_parses_back(host in "[a-z][a-z0-9.-]{0,20}|[0-9a-f:]{2,20}", port in 0u16.., quic in proptest::prelude::any::<bool>()) {
            let host = if host.contains(':') && !host.contains("::") { host.replace(':', "") } else { host };
            proptest::prop_assume!(!host.is_empty());
            let address = if quic { BrokerAddress::quic(host, port) } else { BrokerAddress::tcp(host, port) };
            let parsed: BrokerAddress = address.to_string().parse().unwrap();
            proptest::prop_assert_eq!(parsed, address);
        }
    }
}
