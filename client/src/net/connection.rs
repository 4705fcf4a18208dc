//! A negotiated connection to one broker: the transport, the API versions
//! both sides speak, and typed request/response round trips.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skiff_protocol::api::messages::{ApiVersionsRequest, ApiVersionsResponse};
use skiff_protocol::api::{self, ApiKey, RequestKind, StrBytes};
use skiff_protocol::frame::RequestHeader;
use skiff_protocol::ErrorCode;

use super::address::{BrokerAddress, Transport};
use super::quic::{QuicLink, QuicTrust};
use super::tcp::TcpLink;
use crate::error::{Error, Result};

/// The codec's request trait: each request type names its API key and response type.
pub use kafka_protocol::protocol::Request;

/// Settings every connection shares.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Sent in every request header, shows up in broker logs.
    pub client_id: String,
    /// How long to wait for a response before failing the request.
    pub request_timeout: Duration,
    /// How long to wait for a TCP or QUIC handshake.
    pub connect_timeout: Duration,
    /// Largest response frame accepted.
    pub frame_bytes_max: usize,
    /// Trust settings for `quic://` brokers; required to use QUIC.
    pub quic_trust: Option<QuicTrust>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "skiff".to_string(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            frame_bytes_max: skiff_protocol::frame::FRAME_BYTES_MAX_DEFAULT,
            quic_trust: None,
        }
    }
}

/// The newest version of each API this client has been written against.
/// Newer versions may change semantics (e.g. topic ids instead of names),
/// so the codec's range alone is not enough.
fn client_max_version(key: ApiKey) -> i16 {
    match key {
        ApiKey::Produce => 11,
        ApiKey::Fetch => 12,
        ApiKey::ListOffsets => 7,
        ApiKey::Metadata => 12,
        ApiKey::ApiVersions => 3,
        ApiKey::CreateTopics => 7,
        ApiKey::DeleteTopics => 5,
        ApiKey::InitProducerId => 4,
        ApiKey::DescribeConfigs => 4,
        ApiKey::FindCoordinator => 4,
        ApiKey::JoinGroup => 9,
        ApiKey::SyncGroup => 5,
        ApiKey::Heartbeat => 4,
        ApiKey::LeaveGroup => 5,
        ApiKey::OffsetCommit => 8,
        ApiKey::OffsetFetch => 7,
        ApiKey::ListGroups => 4,
        ApiKey::DescribeGroups => 5,
        ApiKey::DeleteGroups => 2,
        _ => api::codec_versions(key).map_or(-1, |range| range.max),
    }
}

enum Link {
    Tcp(TcpLink),
    Quic(QuicLink),
}

/// A connection to one broker, shared by everything that talks to it.
pub struct BrokerConnection {
    address: BrokerAddress,
    address_text: String,
    link: Link,
    config: ConnectionConfig,
    correlation_id: AtomicI32,
    /// The broker's (min, max) per API key, from ApiVersions.
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl std::fmt::Debug for BrokerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("address", &self.address_text)
            .finish_non_exhaustive()
    }
}

impl BrokerConnection {
    /// Dials `address` and negotiates API versions.
    pub async fn connect(address: &BrokerAddress, config: &ConnectionConfig) -> Result<Arc<Self>> {
        let address_text = address.to_string();
        let dial = async {
            let addrs = address.resolve().await?;
            Ok::<_, Error>(match address.transport {
                Transport::Tcp => Link::Tcp(
                    TcpLink::connect(address_text.clone(), &addrs, config.frame_bytes_max).await?,
                ),
                Transport::Quic => {
                    let trust = config.quic_trust.as_ref().ok_or_else(|| {
                        Error::Config(format!(
                            "{address_text} is a QUIC broker: give its certificate (PEM file) or SHA-256 fingerprint to trust it"
                        ))
                    })?;
                    let quic_config = super::quic::client_config(trust)?;
                    Link::Quic(
                        QuicLink::connect(
                            address_text.clone(),
                            &address.host,
                            &addrs,
                            quic_config,
                            config.frame_bytes_max,
                        )
                        .await?,
                    )
                }
            })
        };
        let link = tokio::time::timeout(config.connect_timeout, dial)
            .await
            .map_err(|_| Error::Connect {
                address: address_text.clone(),
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", config.connect_timeout),
                )),
            })??;
        let mut connection = BrokerConnection {
            address: address.clone(),
            address_text,
            link,
            config: config.clone(),
            correlation_id: AtomicI32::new(0),
            broker_versions: HashMap::new(),
        };
        connection.broker_versions = connection.negotiate().await?;
        Ok(Arc::new(connection))
    }

    /// The address this connection was dialled at.
    pub fn address(&self) -> &BrokerAddress {
        &self.address
    }

    /// Whether the connection has failed; a new one must be made.
    pub fn is_closed(&self) -> bool {
        match &self.link {
            Link::Tcp(link) => link.is_closed(),
            Link::Quic(link) => link.is_closed(),
        }
    }

    /// Closes the connection; requests in flight fail.
    pub fn close(&self, reason: &str) {
        match &self.link {
            Link::Tcp(link) => link.close(reason),
            Link::Quic(link) => link.close(reason),
        }
    }

    /// The version of `key` to use: the newest both sides speak.
    pub fn version(&self, key: ApiKey) -> Result<i16> {
        let codec = api::codec_versions(key).ok_or_else(|| self.unsupported(key))?;
        let (broker_min, broker_max) = self
            .broker_versions
            .get(&(key as i16))
            .copied()
            .ok_or_else(|| self.unsupported(key))?;
        let max = broker_max.min(codec.max).min(client_max_version(key));
        let min = broker_min.max(codec.min);
        if max < min {
            return Err(self.unsupported(key));
        }
        Ok(max)
    }

    /// Whether the broker supports `key` at `version` or newer.
    pub fn supports(&self, key: ApiKey, version: i16) -> bool {
        self.version(key).map(|v| v >= version).unwrap_or(false)
    }

    fn unsupported(&self, key: ApiKey) -> Error {
        Error::UnsupportedVersion {
            address: self.address_text.clone(),
            api: api_name(key),
        }
    }

    /// Sends `request` at the negotiated version and waits for its response.
    pub async fn request<R>(&self, request: R) -> Result<R::Response>
    where
        R: Request + Into<RequestKind>,
    {
        let key = api::api_key(R::KEY).map_err(Error::Encode)?;
        let version = self.version(key)?;
        self.request_at(request, version).await
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn request_at<R>(&self, request: R, version: i16) -> Result<R::Response>
    where
        R: Request + Into<RequestKind>,
    {
        let key = api::api_key(R::KEY).map_err(Error::Encode)?;
        let mut frame = self
            .round_trip(key, version, request.into(), true)
            .await?
            .unwrap_or_default();
        self.decode_response(key, version, &mut frame)
    }

    /// Sends `request` without waiting for a response (Produce with acks=0,
    /// for which the broker sends none).
    pub async fn send_only<R>(&self, request: R) -> Result<i16>
    where
        R: Request + Into<RequestKind>,
    {
        let key = api::api_key(R::KEY).map_err(Error::Encode)?;
        let version = self.version(key)?;
        self.round_trip(key, version, request.into(), false).await?;
        Ok(version)
    }

    fn decode_response<T: kafka_protocol::protocol::Decodable>(
        &self,
        key: ApiKey,
        version: i16,
        frame: &mut Bytes,
    ) -> Result<T> {
        let decode_error = |source| Error::Decode {
            address: self.address_text.clone(),
            source,
        };
        api::decode_response_header(key, version, frame).map_err(decode_error)?;
        api::decode_message::<T>(frame, version).map_err(decode_error)
    }

    async fn round_trip(
        &self,
        key: ApiKey,
        version: i16,
        request: RequestKind,
        expect_response: bool,
    ) -> Result<Option<Bytes>> {
        let sent = self.write(key, version, &request, expect_response).await?;
        self.wait(sent, self.config.request_timeout).await
    }

    /// Writes a request (size prefix, header, body) and returns what to
    /// wait on for its response. Requests written one after the other from
    /// one task reach the connection in that order.
    async fn write(
        &self,
        key: ApiKey,
        version: i16,
        request: &RequestKind,
        expect_response: bool,
    ) -> Result<Sent> {
        let correlation_id = self.correlation_id.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let header = RequestHeader {
            api_key: key as i16,
            api_version: version,
            correlation_id,
            client_id: Some(self.config.client_id.clone()),
        };
        let frame = api::encode_request(&header, request).map_err(Error::Encode)?;
        let timeout = self.config.request_timeout;
        let waiter = match &self.link {
            Link::Tcp(link) => match link
                .send(&frame.chunks, expect_response.then_some(correlation_id))
                .await?
            {
                Some(receiver) => Waiter::Tcp(receiver),
                None => Waiter::Nothing,
            },
            Link::Quic(link) => {
                let written = tokio::time::timeout(timeout, link.write(&frame.chunks)).await;
                let receive = written.map_err(|_| self.timed_out())??;
                if expect_response {
                    Waiter::Quic(receive)
                } else {
                    Waiter::Nothing
                }
            }
        };
        Ok(Sent {
            correlation_id,
            waiter,
        })
    }

    /// Waits for the response of a written request, up to `timeout`.
    async fn wait(&self, sent: Sent, timeout: Duration) -> Result<Option<Bytes>> {
        match (sent.waiter, &self.link) {
            (Waiter::Nothing, _) => Ok(None),
            (Waiter::Tcp(receiver), Link::Tcp(link)) => {
                match tokio::time::timeout(timeout, receiver).await {
                    Ok(Ok(response)) => response.map(Some),
                    Ok(Err(_)) => Err(Error::Disconnected {
                        address: self.address_text.clone(),
                        reason: "connection dropped".into(),
                    }),
                    Err(_) => {
                        link.forget(sent.correlation_id);
                        Err(self.timed_out_after(timeout))
                    }
                }
            }
            (Waiter::Quic(mut receive), Link::Quic(link)) => {
                tokio::time::timeout(timeout, link.read_response(&mut receive))
                    .await
                    .map_err(|_| self.timed_out_after(timeout))?
                    .map(Some)
            }
            _ => unreachable!("a waiter always matches the link that made it"),
        }
    }

    fn timed_out(&self) -> Error {
        self.timed_out_after(self.config.request_timeout)
    }

    fn timed_out_after(&self, timeout: Duration) -> Error {
        Error::RequestTimeout {
            address: self.address_text.clone(),
            timeout,
        }
    }

    /// Writes `request` at the negotiated version now and returns a future
    /// of its response. Calls made one after another from one task put
    /// their requests on the connection in call order, which the producer
    /// relies on to keep a partition's batches in order.
    pub async fn send<R>(self: &Arc<Self>, request: R) -> Result<ResponseFuture<R::Response>>
    where
        R: Request + Into<RequestKind>,
    {
        let key = api::api_key(R::KEY).map_err(Error::Encode)?;
        let version = self.version(key)?;
        let sent = self.write(key, version, &request.into(), true).await?;
        Ok(ResponseFuture {
            connection: Arc::clone(self),
            key,
            version,
            sent,
            _response: std::marker::PhantomData,
        })
    }

    /// ApiVersions per KIP-511: ask at our newest version; a broker that
    /// does not know it answers UNSUPPORTED_VERSION in a v0 body listing its
    /// own range, and we ask again at a version it knows.
    async fn negotiate(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let mut version = client_max_version(ApiKey::ApiVersions);
        for _ in 0..2 {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("skiff-client"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let mut frame = self
                .round_trip(ApiKey::ApiVersions, version, request.into(), true)
                .await?
                .unwrap_or_default();
            let fallback = frame.clone();
            let response: ApiVersionsResponse =
                match self.decode_response(ApiKey::ApiVersions, version, &mut frame) {
                    Ok(response) => response,
                    Err(error) => {
                        let mut v0 = fallback;
                        self.decode_response(ApiKey::ApiVersions, 0, &mut v0)
                            .map_err(|_| error)?
                    }
                };
            let ranges: HashMap<i16, (i16, i16)> = response
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            match ErrorCode::from_code(response.error_code) {
                ErrorCode::None => return Ok(ranges),
                ErrorCode::UnsupportedVersion => {
                    let Some(&(_, broker_max)) = ranges.get(&(ApiKey::ApiVersions as i16)) else {
                        break;
                    };
                    version = broker_max.min(version - 1).max(0);
                }
                code => {
                    return Err(Error::kafka(
                        code,
                        format!("ApiVersions from {}", self.address_text),
                        None,
                    ))
                }
            }
        }
        Err(self.unsupported(ApiKey::ApiVersions))
    }
}

/// What a written request waits on.
enum Waiter {
    Tcp(tokio::sync::oneshot::Receiver<Result<Bytes>>),
    Quic(quinn::RecvStream),
    Nothing,
}

struct Sent {
    correlation_id: i32,
    waiter: Waiter,
}

/// The response of a request already written by [`BrokerConnection::send`].
pub struct ResponseFuture<T> {
    connection: Arc<BrokerConnection>,
    key: ApiKey,
    version: i16,
    sent: Sent,
    _response: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("connection", &self.connection)
            .field("correlation_id", &self.sent.correlation_id)
            .finish_non_exhaustive()
    }
}

impl<T: kafka_protocol::protocol::Decodable> ResponseFuture<T> {
    /// Waits for the response, up to the connection's request timeout.
    pub async fn response(self) -> Result<T> {
        let timeout = self.connection.config.request_timeout;
        self.response_within(timeout).await
    }

    /// Waits for the response, up to `timeout`.
    pub async fn response_within(self, timeout: Duration) -> Result<T> {
        let mut frame = self
            .connection
            .wait(self.sent, timeout)
            .await?
            .unwrap_or_default();
        self.connection
            .decode_response(self.key, self.version, &mut frame)
    }

    /// The connection the request went to.
    pub fn connection(&self) -> &Arc<BrokerConnection> {
        &self.connection
    }
}

/// Kafka's name of an API, for messages.
pub(crate) fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        _ => "an API",
    }
}
