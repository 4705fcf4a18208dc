//! Every API the broker serves, at every version we advertise, survives
//! encode → frame → decode; and hostile request bodies give typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use skiff_protocol::api::{self, messages, ApiKey, RequestKind, ResponseKind, SUPPORTED_API_KEYS};
use skiff_protocol::frame::{self, RequestHeader, FRAME_BYTES_MAX_DEFAULT};
use skiff_protocol::DecodeError;

macro_rules! default_kinds {
    ($key:expr, [$($variant:ident => $req:ident, $resp:ident),* $(,)?]) => {
        match $key {
            $(ApiKey::$variant => (
                RequestKind::$variant(messages::$req::default()),
                ResponseKind::$variant(messages::$resp::default()),
            ),)*
            other => panic!("no default message for {other:?}"),
        }
    };
}

/// A default request and response for `key`.
fn default_messages(key: ApiKey) -> (RequestKind, ResponseKind) {
    default_kinds!(key, [
        Produce => ProduceRequest, ProduceResponse,
        Fetch => FetchRequest, FetchResponse,
        ListOffsets => ListOffsetsRequest, ListOffsetsResponse,
        Metadata => MetadataRequest, MetadataResponse,
        OffsetCommit => OffsetCommitRequest, OffsetCommitResponse,
        OffsetFetch => OffsetFetchRequest, OffsetFetchResponse,
        FindCoordinator => FindCoordinatorRequest, FindCoordinatorResponse,
        JoinGroup => JoinGroupRequest, JoinGroupResponse,
        Heartbeat => HeartbeatRequest, HeartbeatResponse,
        LeaveGroup => LeaveGroupRequest, LeaveGroupResponse,
        SyncGroup => SyncGroupRequest, SyncGroupResponse,
        DescribeGroups => DescribeGroupsRequest, DescribeGroupsResponse,
        ListGroups => ListGroupsRequest, ListGroupsResponse,
        ApiVersions => ApiVersionsRequest, ApiVersionsResponse,
        CreateTopics => CreateTopicsRequest, CreateTopicsResponse,
        DeleteTopics => DeleteTopicsRequest, DeleteTopicsResponse,
        InitProducerId => InitProducerIdRequest, InitProducerIdResponse,
        DescribeConfigs => DescribeConfigsRequest, DescribeConfigsResponse,
        DeleteGroups => DeleteGroupsRequest, DeleteGroupsResponse,
    ])
}

/// Strips the size prefix of an encoded frame, checking it matches.
fn unframe(encoded: Bytes) -> Bytes {
    let mut buf = BytesMut::from(&encoded[..]);
    let payload = frame::read_frame(&mut buf, FRAME_BYTES_MAX_DEFAULT)
        .unwrap()
        .unwrap();
    assert!(
        buf.is_empty(),
        "size prefix does not cover the frame exactly"
    );
    payload
}

fn header(key: ApiKey, version: i16) -> RequestHeader {
    RequestHeader {
        api_key: key as i16,
        api_version: version,
        correlation_id: 0x1234_5678,
        client_id: Some("skiff-test".to_string()),
    }
}

/// Every supported API at every codec version round-trips its request and its response.
#[test]
fn every_api_round_trips_at_every_version() {
    let mut checked = 0;
    for key in SUPPORTED_API_KEYS {
        let range = api::codec_versions(key).expect("supported key has versions");
        for version in range.min..=range.max {
            let (request, response) = default_messages(key);
            let header = header(key, version);
            let encoded = api::encode_request(&header, &request).unwrap();
            let (decoded_header, decoded) = api::decode_request(unframe(encoded.to_contiguous()))
                .unwrap_or_else(|e| panic!("{key:?} v{version} request: {e}"));
            let mut expected_header = header.clone();
            if key.request_header_version(version) == 0 {
                expected_header.client_id = None;
            }
            assert_eq!(decoded_header, expected_header, "{key:?} v{version}");
            assert_eq!(decoded, request, "{key:?} v{version}");

            let encoded = api::encode_response(77, key, version, &response).unwrap();
            let mut body = unframe(encoded.to_contiguous());
            assert_eq!(
                api::decode_response_header(key, version, &mut body).unwrap(),
                77
            );
            let decoded = api::decode_response_body(key, version, &mut body)
                .unwrap_or_else(|e| panic!("{key:?} v{version} response: {e}"));
            assert!(
                body.is_empty(),
                "{key:?} v{version}: response body not fully read"
            );
            assert_eq!(decoded, response, "{key:?} v{version}");
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} API versions checked");
}

/// Advertised versions are those both the request and the response codec know:
/// kafka-protocol 0.18 has OffsetCommit/OffsetFetch responses up to v10 but
/// requests only up to v9, and InitProducerId responses to v6 but requests to v5.
#[test]
fn codec_versions_are_the_request_response_intersection() {
    assert_eq!(api::codec_versions(ApiKey::OffsetCommit).unwrap().max, 9);
    assert_eq!(api::codec_versions(ApiKey::OffsetFetch).unwrap().max, 9);
    assert_eq!(api::codec_versions(ApiKey::InitProducerId).unwrap().max, 5);
    assert_eq!(api::codec_versions(ApiKey::Produce).unwrap().min, 3);
    assert!(api::codec_versions(ApiKey::SaslHandshake).is_none());
    let header = header(ApiKey::OffsetCommit, 10);
    let request = RequestKind::OffsetCommit(messages::OffsetCommitRequest::default());
    assert!(matches!(
        api::encode_request(&header, &request),
        Err(DecodeError::UnsupportedVersion {
            api_key: 8,
            api_version: 10
        })
    ));
}

/// Every truncation of every valid request frame is a typed error, never a panic.
#[test]
fn truncated_requests_are_errors() {
    for key in SUPPORTED_API_KEYS {
        let range = api::codec_versions(key).unwrap();
        for version in range.min..=range.max {
            let (request, _) = default_messages(key);
            let full = unframe(
                api::encode_request(&header(key, version), &request)
                    .unwrap()
                    .to_contiguous(),
            );
            for cut in 0..full.len() {
                let result = api::decode_request(full.slice(..cut));
                assert!(
                    result.is_err(),
                    "{key:?} v{version} decoded from {cut} of {} bytes",
                    full.len()
                );
            }
        }
    }
}

/// A request naming an API we do not serve, or a version outside our range, is
/// reported as such with nothing decoded.
#[test]
fn unknown_keys_and_versions_are_typed_errors() {
    let frame = |key: i16, version: i16| {
        let mut b = Vec::new();
        b.extend_from_slice(&key.to_be_bytes());
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        Bytes::from(b)
    };
    assert_eq!(
        api::decode_request(frame(999, 0)).unwrap_err(),
        DecodeError::UnknownApiKey { api_key: 999 }
    );
    assert_eq!(
        api::decode_request(frame(0, 2)).unwrap_err(),
        DecodeError::UnsupportedVersion {
            api_key: 0,
            api_version: 2
        }
    );
    assert_eq!(
        api::decode_request(frame(17, 0)).unwrap_err(),
        DecodeError::UnsupportedVersion {
            api_key: 17,
            api_version: 0
        }
    );
}

/// Builds a request frame (no size prefix) of `key`/`version` from a raw body.
fn raw_request(key: ApiKey, version: i16, body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    frame::encode_request_header(
        &mut out,
        &header(key, version),
        key.request_header_version(version),
    );
    out.extend_from_slice(body);
    out.freeze()
}

/// Wire array counts far larger than the frame (i32::MAX entries, or a compact
/// count of u32::MAX) are errors, not an attempt to preallocate gigabytes.
/// kafka-protocol 0.18 as published calls `Vec::with_capacity(count)` and aborts
/// the process here; the vendored copy caps preallocation by the bytes left.
#[test]
fn huge_array_counts_do_not_preallocate() {
    // Metadata v0: topics is a non-nullable int32-counted array.
    let request = raw_request(ApiKey::Metadata, 0, &i32::MAX.to_be_bytes());
    assert!(matches!(
        api::decode_request(request),
        Err(DecodeError::Malformed { .. })
    ));
    // Metadata v9 (flexible): topics is a compact array, count + 1 as an unsigned varint.
    let request = raw_request(ApiKey::Metadata, 9, &[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(
        api::decode_request(request),
        Err(DecodeError::Malformed { .. })
    ));
    // Produce v3: topic_data count i32::MAX after transactional_id, acks, timeout.
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1000i32.to_be_bytes());
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    body.extend_from_slice(&[0; 64]);
    let request = raw_request(ApiKey::Produce, 3, &body);
    assert!(matches!(
        api::decode_request(request),
        Err(DecodeError::Malformed { .. })
    ));
    // Negative counts other than -1 are malformed too.
    let request = raw_request(ApiKey::Metadata, 0, &(-2i32).to_be_bytes());
    assert!(matches!(
        api::decode_request(request),
        Err(DecodeError::Malformed { .. })
    ));
}

/// A compact string whose varint length is u32::MAX - 1 is an error before any allocation.
#[test]
fn huge_compact_string_lengths_are_errors() {
    // FindCoordinator v3 (flexible): key is a compact string.
    let request = raw_request(
        ApiKey::FindCoordinator,
        3,
        &[0xff, 0xff, 0xff, 0xff, 0x0f, b'a'],
    );
    assert!(matches!(
        api::decode_request(request),
        Err(DecodeError::Malformed { .. })
    ));
}

/// An unsigned varint longer than 5 bytes is rejected as Kafka's
/// `ByteUtils.readUnsignedVarint` does, instead of being silently truncated.
#[test]
fn overlong_varints_in_messages_are_errors() {
    // Metadata v9 body: topics (compact array, 0x01 = empty), allow_auto_topic_creation,
    // include_cluster_authorized_operations, include_topic_authorized_operations,
    // no tagged fields.
    let valid = raw_request(ApiKey::Metadata, 9, &[0x01, 0x01, 0x00, 0x00, 0x00]);
    assert!(api::decode_request(valid).is_ok());
    // The same count 1 spelled with six bytes; a reader that stops after five
    // would take the sixth byte as the next field and accept the request.
    let overlong = raw_request(
        ApiKey::Metadata,
        9,
        &[0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01, 0x00, 0x00, 0x00],
    );
    assert!(matches!(
        api::decode_request(overlong),
        Err(DecodeError::Malformed { .. })
    ));
}

/// Record sets in Produce requests and Fetch responses are not copied into the
/// encoded frame: one of the frame's chunks is the very `Bytes` the message
/// held, and decoding gives the same records back.
#[test]
fn record_sets_are_referenced_not_copied() {
    use skiff_protocol::batch::{RecordBatchBuilder, RecordBatchBuilderConfig};
    let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig::default());
    for i in 0..16u8 {
        builder.append(1_000, Some(&[i]), Some(&[i; 100]), &[]);
    }
    let records = builder.build().unwrap();
    let topic = messages::TopicName(api::StrBytes::from_static_str("events"));

    for version in [3i16, 9, 13] {
        let partition = messages::produce_request::PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(records.clone()));
        let mut topic_data = messages::produce_request::TopicProduceData::default()
            .with_partition_data(vec![partition]);
        if version < 13 {
            topic_data = topic_data.with_name(topic.clone());
        }
        let request = RequestKind::Produce(
            messages::ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![topic_data]),
        );
        let frame = api::encode_request(&header(ApiKey::Produce, version), &request).unwrap();
        assert!(
            frame
                .chunks
                .iter()
                .any(|c| c.as_ptr() == records.as_ptr() && c.len() == records.len()),
            "Produce v{version}: records were copied into the frame"
        );
        let (_, decoded) = api::decode_request(unframe(frame.to_contiguous())).unwrap();
        assert_eq!(decoded, request, "Produce v{version}");
    }

    for version in [4i16, 12, 16] {
        let partition = messages::fetch_response::PartitionData::default()
            .with_partition_index(0)
            .with_high_watermark(16)
            .with_records(Some(records.clone()));
        let mut topic_data = messages::fetch_response::FetchableTopicResponse::default()
            .with_partitions(vec![partition]);
        if version < 13 {
            topic_data = topic_data.with_topic(topic.clone());
        }
        let response = ResponseKind::Fetch(
            messages::FetchResponse::default().with_responses(vec![topic_data]),
        );
        let frame = api::encode_response(5, ApiKey::Fetch, version, &response).unwrap();
        assert!(
            frame.chunks.iter().any(|c| c.as_ptr() == records.as_ptr()),
            "Fetch v{version}: records were copied into the frame"
        );
        let mut body = unframe(frame.to_contiguous());
        assert_eq!(
            api::decode_response_header(ApiKey::Fetch, version, &mut body).unwrap(),
            5
        );
        let decoded = api::decode_response_body(ApiKey::Fetch, version, &mut body).unwrap();
        assert_eq!(decoded, response, "Fetch v{version}");
    }
}

/// ApiVersions answers always carry a v0 response header (no tagged fields),
/// even at flexible versions, so a client can read the answer before it
/// knows which versions the broker speaks (KIP-511).
#[test]
fn api_versions_responses_use_header_v0() {
    let response = ResponseKind::ApiVersions(messages::ApiVersionsResponse::default());
    for version in 0..=4 {
        let frame = api::encode_response(9, ApiKey::ApiVersions, version, &response).unwrap();
        let mut body = unframe(frame.to_contiguous());
        assert_eq!(&body[..4], &9i32.to_be_bytes());
        body = body.slice(4..);
        let decoded = api::decode_response_body(ApiKey::ApiVersions, version, &mut body).unwrap();
        assert_eq!(decoded, response, "v{version}");
    }
}

/// The KIP-511 fallback (a v0 ApiVersions error response) decodes as a v0
/// response with the error code and the advertised ranges.
#[test]
fn api_versions_fallback_is_a_valid_v0_response() {
    let frame = api::encode_api_versions_fallback(11, 35, &[(0, 3, 11), (18, 0, 4)]);
    let mut body = unframe(frame.to_contiguous());
    assert_eq!(
        api::decode_response_header(ApiKey::ApiVersions, 0, &mut body).unwrap(),
        11
    );
    let ResponseKind::ApiVersions(decoded) =
        api::decode_response_body(ApiKey::ApiVersions, 0, &mut body).unwrap()
    else {
        panic!("not an ApiVersions response");
    };
    assert_eq!(decoded.error_code, 35);
    let ranges: Vec<(i16, i16, i16)> = decoded
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    assert_eq!(ranges, vec![(0, 3, 11), (18, 0, 4)]);
    assert!(body.is_empty());
}

/// Regression: the first input the `frame_header` fuzz target found against
/// the unpatched kafka-protocol 0.18 (10 bytes; crash-2f5807eb…): a Produce v3
/// *response* whose topic count is 0x7cd6f907 made the decoder request a
/// 201 GB allocation. Our client decodes responses from brokers it does not
/// control, so this must be an error too.
#[test]
fn fuzz_regression_produce_response_with_huge_count() {
    let mut body = Bytes::from_static(&[0x7c, 0xd6, 0xf9, 0x07]);
    assert!(matches!(
        api::decode_response_body(ApiKey::Produce, 3, &mut body),
        Err(DecodeError::Malformed { .. })
    ));
}
