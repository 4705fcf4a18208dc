//! Kafka messages: decode a request or response body given its API key and
//! version, encode one into frames. The message structs come from the
//! `kafka-protocol` crate and are re-exported as [`messages`]; this module is
//! the only place that knows how they meet our frames and headers.
//!
//! Encoding produces a [`Frame`]: a list of `Bytes` chunks, size prefix
//! included, ready for a vectored write. Record sets (`records` fields of
//! Produce requests and Fetch responses) are not copied into the frame: the
//! chunk list holds the very `Bytes` the message held, so a fetch can answer
//! with slices of segment mappings and a producer can send the batch it built.

use bytes::{buf::UninitSlice, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable};

pub use kafka_protocol::messages;
pub use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
pub use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::error::{DecodeError, Result};
use crate::frame::{self, RequestHeader};

/// Frames smaller than this are always copied into the header chunk; larger
/// `records` fields are referenced instead.
const ZERO_COPY_BYTES_MIN: usize = 512;

/// The API key for a number read from the wire.
pub fn api_key(api_key: i16) -> Result<ApiKey> {
    ApiKey::try_from(api_key).map_err(|()| DecodeError::UnknownApiKey { api_key })
}

/// The APIs this crate encodes and decodes: the ones the broker serves.
pub const SUPPORTED_API_KEYS: [ApiKey; 19] = [
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::SyncGroup,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::InitProducerId,
    ApiKey::DescribeConfigs,
    ApiKey::DeleteGroups,
];

/// The versions of `api_key` this codec can both decode (request) and encode
/// (response), or `None` for an API we do not serve.
///
/// This is the intersection of the request's and the response's version
/// ranges, not `ApiKey::valid_versions()`: kafka-protocol 0.18 knows e.g.
/// OffsetCommit responses up to v10 but requests only up to v9, and
/// advertising v10 would invite requests we cannot parse.
pub fn codec_versions(api_key: ApiKey) -> Option<VersionRange> {
    use kafka_protocol::protocol::Message;
    use messages::*;
    let (request, response) = match api_key {
        ApiKey::Produce => (ProduceRequest::VERSIONS, ProduceResponse::VERSIONS),
        ApiKey::Fetch => (FetchRequest::VERSIONS, FetchResponse::VERSIONS),
        ApiKey::ListOffsets => (ListOffsetsRequest::VERSIONS, ListOffsetsResponse::VERSIONS),
        ApiKey::Metadata => (MetadataRequest::VERSIONS, MetadataResponse::VERSIONS),
        ApiKey::OffsetCommit => (
            OffsetCommitRequest::VERSIONS,
            OffsetCommitResponse::VERSIONS,
        ),
        ApiKey::OffsetFetch => (OffsetFetchRequest::VERSIONS, OffsetFetchResponse::VERSIONS),
        ApiKey::FindCoordinator => (
            FindCoordinatorRequest::VERSIONS,
            FindCoordinatorResponse::VERSIONS,
        ),
        ApiKey::JoinGroup => (JoinGroupRequest::VERSIONS, JoinGroupResponse::VERSIONS),
        ApiKey::Heartbeat => (HeartbeatRequest::VERSIONS, HeartbeatResponse::VERSIONS),
        ApiKey::LeaveGroup => (LeaveGroupRequest::VERSIONS, LeaveGroupResponse::VERSIONS),
        ApiKey::SyncGroup => (SyncGroupRequest::VERSIONS, SyncGroupResponse::VERSIONS),
        ApiKey::DescribeGroups => (
            DescribeGroupsRequest::VERSIONS,
            DescribeGroupsResponse::VERSIONS,
        ),
        ApiKey::ListGroups => (ListGroupsRequest::VERSIONS, ListGroupsResponse::VERSIONS),
        ApiKey::ApiVersions => (ApiVersionsRequest::VERSIONS, ApiVersionsResponse::VERSIONS),
        ApiKey::CreateTopics => (
            CreateTopicsRequest::VERSIONS,
            CreateTopicsResponse::VERSIONS,
        ),
        ApiKey::DeleteTopics => (
            DeleteTopicsRequest::VERSIONS,
            DeleteTopicsResponse::VERSIONS,
        ),
        ApiKey::InitProducerId => (
            InitProducerIdRequest::VERSIONS,
            InitProducerIdResponse::VERSIONS,
        ),
        ApiKey::DescribeConfigs => (
            DescribeConfigsRequest::VERSIONS,
            DescribeConfigsResponse::VERSIONS,
        ),
        ApiKey::DeleteGroups => (
            DeleteGroupsRequest::VERSIONS,
            DeleteGroupsResponse::VERSIONS,
        ),
        _ => return None,
    };
    let range = VersionRange {
        min: request.min.max(response.min),
        max: request.max.min(response.max),
    };
    (range.min <= range.max).then_some(range)
}

fn check_version(key: ApiKey, version: i16) -> Result<()> {
    match codec_versions(key) {
        Some(range) if range.min <= version && version <= range.max => Ok(()),
        _ => Err(DecodeError::UnsupportedVersion {
            api_key: key as i16,
            api_version: version,
        }),
    }
}

fn malformed(what: &'static str, error: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed {
        what,
        reason: format!("{error:#}"),
    }
}

/// Decodes a request frame (without its size prefix): the header, then the body.
///
/// An unknown API key or version is reported as such, so the caller can
/// answer UNSUPPORTED_VERSION with the correlation id from
/// [`frame::peek_request_ids`].
pub fn decode_request(mut frame: Bytes) -> Result<(RequestHeader, RequestKind)> {
    let (key, version, _) = frame::peek_request_ids(&frame)?;
    let key = api_key(key)?;
    check_version(key, version)?;
    let header = frame::decode_request_header(&mut frame, key.request_header_version(version))?;
    let body =
        RequestKind::decode(key, &mut frame, version).map_err(|e| malformed("request body", e))?;
    Ok((header, body))
}

/// Decodes a response body whose header was already read.
pub fn decode_response_body(key: ApiKey, version: i16, body: &mut Bytes) -> Result<ResponseKind> {
    check_version(key, version)?;
    ResponseKind::decode(key, body, version).map_err(|e| malformed("response body", e))
}

/// Reads a response frame's header for a request of `key`/`version`,
/// returning the correlation id and leaving `frame` at the body.
pub fn decode_response_header(key: ApiKey, version: i16, frame: &mut Bytes) -> Result<i32> {
    frame::decode_response_header(frame, key.response_header_version(version))
}

/// An encoded frame as a list of chunks, size prefix first.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub chunks: Vec<Bytes>,
}

impl Frame {
    /// Total bytes on the wire, size prefix included.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Joins the chunks into one buffer (tests and small frames).
    pub fn to_contiguous(&self) -> Bytes {
        if let [only] = self.chunks.as_slice() {
            return only.clone();
        }
        let mut out = BytesMut::with_capacity(self.len());
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out.freeze()
    }
}

/// Encodes a response frame: size prefix, response header, body.
pub fn encode_response(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    response: &ResponseKind,
) -> Result<Frame> {
    check_version(key, version)?;
    let mut zero_copy = Vec::new();
    if let ResponseKind::Fetch(fetch) = response {
        for topic in &fetch.responses {
            for partition in &topic.partitions {
                zero_copy.extend(partition.records.iter().cloned());
            }
        }
    }
    let header_version = key.response_header_version(version);
    let mut out = ChunkedBuf::new(zero_copy);
    out.head.put_i32(0); // size, patched below
    frame::encode_response_header(&mut out.head, correlation_id, header_version);
    encode_body(response, version, &mut out)?;
    Ok(out.finish())
}

/// Encodes the v0 ApiVersions error response that KIP-511 prescribes when a
/// client asks for an ApiVersions version the broker does not know: a v0
/// body (error code, api_keys array) with a v0 response header, which every
/// client can decode.
pub fn encode_api_versions_fallback(
    correlation_id: i32,
    error_code: i16,
    api_keys: &[(i16, i16, i16)],
) -> Frame {
    let mut body = BytesMut::with_capacity(10 + 6 * api_keys.len());
    body.put_i32(0);
    body.put_i32(correlation_id);
    body.put_i16(error_code);
    body.put_i32(api_keys.len() as i32);
    for &(key, min, max) in api_keys {
        body.put_i16(key);
        body.put_i16(min);
        body.put_i16(max);
    }
    let size = (body.len() - 4) as i32;
    body[0..4].copy_from_slice(&size.to_be_bytes());
    Frame {
        chunks: vec![body.freeze()],
    }
}

/// Encodes a request frame: size prefix, request header, body. Produce
/// requests reference their record sets instead of copying them.
pub fn encode_request(header: &RequestHeader, request: &RequestKind) -> Result<Frame> {
    let key = api_key(header.api_key)?;
    check_version(key, header.api_version)?;
    let mut zero_copy = Vec::new();
    if let RequestKind::Produce(produce) = request {
        for topic in &produce.topic_data {
            for partition in &topic.partition_data {
                zero_copy.extend(partition.records.iter().cloned());
            }
        }
    }
    let mut out = ChunkedBuf::new(zero_copy);
    out.head.put_i32(0);
    frame::encode_request_header(
        &mut out.head,
        header,
        key.request_header_version(header.api_version),
    );
    encode_request_body(request, header.api_version, &mut out)?;
    Ok(out.finish())
}

macro_rules! encode_kind {
    ($kind:ident, $value:expr, $version:expr, $out:expr, [$($variant:ident),* $(,)?]) => {
        match $value {
            $($kind::$variant(message) => message.encode($out, $version),)*
            _ => return Err(DecodeError::Malformed {
                what: "message",
                reason: "this message type is not supported by skiff-protocol".to_string(),
            }),
        }
    };
}

/// Encodes a `RequestKind`/`ResponseKind` of any API in [`SUPPORTED_API_KEYS`]:
/// one list of variants, so requests and responses cannot drift apart.
macro_rules! encode_served_kind {
    ($kind:ident, $value:expr, $version:expr, $out:expr) => {
        encode_kind!(
            $kind,
            $value,
            $version,
            $out,
            [
                Produce,
                Fetch,
                ListOffsets,
                Metadata,
                OffsetCommit,
                OffsetFetch,
                FindCoordinator,
                JoinGroup,
                Heartbeat,
                LeaveGroup,
                SyncGroup,
                DescribeGroups,
                ListGroups,
                ApiVersions,
                CreateTopics,
                DeleteTopics,
                InitProducerId,
                DescribeConfigs,
                DeleteGroups,
            ]
        )
    };
}

fn encode_body(response: &ResponseKind, version: i16, out: &mut ChunkedBuf) -> Result<()> {
    encode_served_kind!(ResponseKind, response, version, out).map_err(|e| malformed("response", e))
}

fn encode_request_body(request: &RequestKind, version: i16, out: &mut ChunkedBuf) -> Result<()> {
    encode_served_kind!(RequestKind, request, version, out).map_err(|e| malformed("request", e))
}

/// Decodes any message struct directly, for callers that know the type.
pub fn decode_message<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T> {
    T::decode(body, version).map_err(|e| malformed(std::any::type_name::<T>(), e))
}

/// A `BufMut` that writes small fields into a growing head buffer and
/// references large registered `Bytes` (record sets) as chunks of their own.
struct ChunkedBuf {
    head: BytesMut,
    chunks: Vec<Bytes>,
    /// Bytes written into earlier chunks (for `ByteBufMut::offset`).
    flushed: usize,
    zero_copy: Vec<Bytes>,
}

impl ChunkedBuf {
    fn new(zero_copy: Vec<Bytes>) -> Self {
        ChunkedBuf {
            head: BytesMut::with_capacity(256),
            chunks: Vec::with_capacity(1 + 2 * zero_copy.len()),
            flushed: 0,
            zero_copy,
        }
    }

    fn finish(mut self) -> Frame {
        if !self.head.is_empty() {
            self.flushed += self.head.len();
            self.chunks.push(self.head.split().freeze());
        }
        let size = (self.flushed - frame::FRAME_SIZE_PREFIX_BYTES) as i32;
        // The size prefix was the first thing written into the first chunk.
        let first = self.chunks.remove(0);
        let mut patched = BytesMut::from(&first[..]);
        patched[0..4].copy_from_slice(&size.to_be_bytes());
        self.chunks.insert(0, patched.freeze());
        Frame {
            chunks: self.chunks,
        }
    }

    fn registered(&self, src: &[u8]) -> Option<Bytes> {
        if src.len() < ZERO_COPY_BYTES_MIN {
            return None;
        }
        self.zero_copy
            .iter()
            .find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())
            .cloned()
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, whose `BufMut`
// implementation upholds the trait's contract; `put_slice` only adds whole
// chunks or delegates.
unsafe impl BufMut for ChunkedBuf {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller guarantees `cnt` bytes of `chunk_mut` were initialised.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.registered(src) {
            Some(bytes) => {
                if !self.head.is_empty() {
                    self.flushed += self.head.len();
                    self.chunks.push(self.head.split().freeze());
                }
                self.flushed += bytes.len();
                self.chunks.push(bytes);
            }
            None => self.head.extend_from_slice(src),
        }
    }
}

impl ByteBufMut for ChunkedBuf {
    fn offset(&self) -> usize {
        self.flushed + self.head.len()
    }

    fn seek(&mut self, offset: usize) {
        assert!(offset >= self.flushed, "seek into a flushed chunk");
        self.head.resize(offset - self.flushed, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.flushed, "gap inside a flushed chunk");
        &mut self.head[r.start - self.flushed..r.end - self.flushed]
    }
}
