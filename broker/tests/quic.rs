//! Kafka over QUIC with a quinn client: one bidirectional stream per request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes};
use common::{batch, record_values, Client, Skiffd};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use skiff_protocol::api::messages::{self, TopicName};
use skiff_protocol::api::{self, ApiKey, RequestKind, ResponseKind, StrBytes};
use skiff_protocol::frame::RequestHeader;

/// Connects trusting the broker's generated certificate (pinning it as a root).
async fn connect(broker: &Skiffd) -> Result<(quinn::Endpoint, quinn::Connection)> {
    connect_accepting(broker, None).await
}

/// As [`connect`], with an endpoint that accepts datagrams of up to
/// `datagram_bytes_max` bytes (quinn's default is 1472).
async fn connect_accepting(
    broker: &Skiffd,
    datagram_bytes_max: Option<u16>,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(broker.data_dir.join("quic-cert.pem"))? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![skiff_broker::server::quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    if let Some(bytes) = datagram_bytes_max {
        endpoint_config.max_udp_payload_size(bytes)?;
    }
    let mut endpoint = quinn::Endpoint::new(
        endpoint_config,
        None,
        std::net::UdpSocket::bind("127.0.0.1:0")?,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let addr = broker.quic.context("QUIC disabled")?;
    let connection = endpoint.connect(addr, "localhost")?.await?;
    Ok((endpoint, connection))
}

/// One request on its own stream; `None` when the broker sends no response (acks=0).
async fn call(
    connection: &quinn::Connection,
    key: ApiKey,
    version: i16,
    request: RequestKind,
) -> Result<Option<ResponseKind>> {
    let (mut send, recv) = connection.open_bi().await?;
    write_request(&mut send, key, version, request).await?;
    read_response(recv, key, version).await
}

/// Writes one request frame on `send` and finishes it.
async fn write_request(
    send: &mut quinn::SendStream,
    key: ApiKey,
    version: i16,
    request: RequestKind,
) -> Result<()> {
    let header = RequestHeader {
        api_key: key as i16,
        api_version: version,
        correlation_id: 7,
        client_id: Some("quic-test".to_string()),
    };
    let frame = api::encode_request(&header, &request)?;
    let mut chunks = frame.chunks;
    send.write_all_chunks(&mut chunks).await?;
    send.finish()?;
    Ok(())
}

/// Reads the response frame of a request stream, `None` if there is none.
async fn read_response(
    mut recv: quinn::RecvStream,
    key: ApiKey,
    version: i16,
) -> Result<Option<ResponseKind>> {
    let data = recv.read_to_end(64 * 1024 * 1024).await?;
    if data.is_empty() {
        return Ok(None);
    }
    let mut frame = Bytes::from(data);
    let size = frame.get_i32();
    if size as usize != frame.len() {
        bail!("frame size {size} but {} bytes", frame.len());
    }
    let correlation_id = api::decode_response_header(key, version, &mut frame)?;
    assert_eq!(correlation_id, 7);
    Ok(Some(api::decode_response_body(key, version, &mut frame)?))
}

/// Waits for the broker to close `connection` with application code 1.
async fn expect_protocol_close(connection: &quinn::Connection) -> Result<()> {
    let reason = tokio::time::timeout(Duration::from_secs(10), connection.closed()).await?;
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(1));
            Ok(())
        }
        other => bail!("closed for another reason: {other}"),
    }
}

fn produce_request(topic: &str, records: Bytes) -> RequestKind {
    let mut data = messages::produce_request::PartitionProduceData::default();
    data.index = 0;
    data.records = Some(records);
    let mut topic_data = messages::produce_request::TopicProduceData::default();
    topic_data.name = TopicName(StrBytes::from_string(topic.to_string()));
    topic_data.partition_data = vec![data];
    let mut request = messages::ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![topic_data];
    RequestKind::Produce(request)
}

async fn produce(
    connection: &quinn::Connection,
    topic: &str,
    records: Bytes,
) -> Result<(i16, i64)> {
    match call(
        connection,
        ApiKey::Produce,
        9,
        produce_request(topic, records),
    )
    .await?
    {
        Some(ResponseKind::Produce(r)) => {
            let p = &r.responses[0].partition_responses[0];
            Ok((p.error_code, p.base_offset))
        }
        other => bail!("unexpected {other:?}"),
    }
}

async fn fetch(
    connection: &quinn::Connection,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
) -> Result<(i16, Bytes)> {
    let request = Client::fetch_request(topic, 0, offset, max_wait_ms, 1);
    match call(connection, ApiKey::Fetch, 12, RequestKind::Fetch(request)).await? {
        Some(ResponseKind::Fetch(r)) => {
            let p = &r.responses[0].partitions[0];
            Ok((p.error_code, p.records.clone().unwrap_or_default()))
        }
        other => bail!("unexpected {other:?}"),
    }
}

/// ApiVersions, Produce and Fetch over QUIC; a long-poll fetch stays open on one stream
/// while produces complete on others, and wakes when its own partition gets data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_api_versions_produce_fetch_and_long_poll() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    // Produce does not create topics (only Metadata does, as in Kafka).
    let mut tcp = broker.connect()?;
    for topic in ["quic-busy", "quic-waiting"] {
        assert_eq!(tcp.create_topic(topic, 1, &[])?, 0);
    }
    let (_endpoint, connection) = connect(&broker).await?;

    let Some(ResponseKind::ApiVersions(versions)) = call(
        &connection,
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(Default::default()),
    )
    .await?
    else {
        bail!("no ApiVersions response")
    };
    assert_eq!(versions.error_code, 0);
    assert!(versions.api_keys.iter().any(|k| k.api_key == 0));

    assert_eq!(
        produce(&connection, "quic-busy", batch(&[b"one"], -1, -1, -1)).await?,
        (0, 0)
    );
    let (error, records) = fetch(&connection, "quic-busy", 0, 0).await?;
    assert_eq!(error, 0);
    assert_eq!(record_values(records)?, vec![&b"one"[..]]);
    assert_eq!(
        produce(&connection, "quic-waiting", batch(&[b"seed"], -1, -1, -1)).await?,
        (0, 0)
    );

    let poller = {
        let connection = connection.clone();
        tokio::spawn(async move { fetch(&connection, "quic-waiting", 1, 30_000).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 1..=5 {
        let value = format!("busy-{i}");
        let (error, offset) = produce(
            &connection,
            "quic-busy",
            batch(&[value.as_bytes()], -1, -1, -1),
        )
        .await?;
        assert_eq!((error, offset), (0, i));
    }
    assert!(
        !poller.is_finished(),
        "the long poll is still open after the other produces completed"
    );
    assert_eq!(
        produce(&connection, "quic-waiting", batch(&[b"wake"], -1, -1, -1)).await?,
        (0, 1)
    );
    let (error, records) = tokio::time::timeout(Duration::from_secs(10), poller).await???;
    assert_eq!(error, 0);
    assert_eq!(record_values(records)?, vec![&b"wake"[..]]);
    Ok(())
}

/// On loopback the broker's MTU discovery climbs past Ethernet's 1452 bytes
/// to whatever the client accepts, up to the loopback bound of 65 000 bytes,
/// so a fetch arrives in a few dozen times fewer datagrams; a client that
/// accepts only quinn's default gets 1452-byte ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_fetch_datagrams_grow_past_ethernet_size_on_loopback() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut tcp = broker.connect()?;
    assert_eq!(tcp.create_topic("quic-big", 1, &[])?, 0);
    let value = vec![7u8; 100_000];
    let values: Vec<&[u8]> = (0..10).map(|_| &value[..]).collect();
    let (_endpoint, connection) = connect(&broker).await?;
    assert_eq!(
        produce(&connection, "quic-big", batch(&values, -1, -1, -1)).await?,
        (0, 0)
    );
    for (accepted, smallest, largest) in [
        (None, 1_000, 1_472),
        (Some(9_000), 5_000, 9_000),
        (Some(65_000), 30_000, 65_000),
    ] {
        let (_endpoint, connection) = connect_accepting(&broker, accepted).await?;
        // MTU discovery probes in the first round trips after the handshake.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = connection.stats().udp_rx;
        let (error, records) = fetch(&connection, "quic-big", 0, 0).await?;
        let after = connection.stats().udp_rx;
        assert_eq!(error, 0);
        assert!(records.len() > 1_000_000, "{} bytes fetched", records.len());
        let mean = (after.bytes - before.bytes) / (after.datagrams - before.datagrams).max(1);
        assert!(
            (smallest..=largest).contains(&mean),
            "client accepting {accepted:?}: mean datagram {mean} bytes, expected {smallest}..={largest}"
        );
    }
    Ok(())
}

/// An oversized frame on a QUIC stream closes that connection (application code 1);
/// a new connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_oversized_frame_closes_connection() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &["--frame-bytes-max", "65536"])?;
    let (_endpoint, connection) = connect(&broker).await?;
    let (mut send, _recv) = connection.open_bi().await?;
    send.write_all(&1_000_000i32.to_be_bytes()).await?;
    expect_protocol_close(&connection).await?;
    let (_endpoint, fresh) = connect(&broker).await?;
    let response = call(
        &fresh,
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(Default::default()),
    )
    .await?;
    assert!(matches!(response, Some(ResponseKind::ApiVersions(_))));
    Ok(())
}

/// Requests on one QUIC connection are applied in the order their streams were
/// opened, not the order their bytes arrive (Kafka's per-connection ordering),
/// so a client may pipeline produces of one partition over QUIC: streams
/// opened 0..4 but written 3, 2, 1, 0 still get offsets 0..4 in stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_requests_apply_in_stream_order() -> Result<()> {
    const STREAMS: i64 = 4;
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    assert_eq!(broker.connect()?.create_topic("quic-order", 1, &[])?, 0);
    let (_endpoint, connection) = connect(&broker).await?;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(connection.open_bi().await?);
    }
    let mut answers = Vec::new();
    let opened: Vec<_> = (0..STREAMS).zip(streams).collect();
    for (index, (mut send, recv)) in opened.into_iter().rev() {
        let value = format!("stream-{index}");
        let request = produce_request("quic-order", batch(&[value.as_bytes()], -1, -1, -1));
        write_request(&mut send, ApiKey::Produce, 9, request).await?;
        answers.push((index, recv));
        // Lets the later-opened stream's request reach the broker first.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (index, recv) in answers {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            read_response(recv, ApiKey::Produce, 9),
        )
        .await??;
        let Some(ResponseKind::Produce(r)) = response else {
            bail!("unexpected {response:?}")
        };
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, index), "stream {index}");
    }
    let (error, records) = fetch(&connection, "quic-order", 0, 0).await?;
    assert_eq!(error, 0);
    let expected: Vec<String> = (0..STREAMS).map(|i| format!("stream-{i}")).collect();
    let values: Vec<String> = record_values(records)?
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(values, expected);
    Ok(())
}

/// A malformed request (a frame too short for a request header) closes the
/// QUIC connection with application code 1, and a produce on a later stream
/// of that connection is not applied, as on TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_malformed_request_closes_before_later_requests() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    assert_eq!(broker.connect()?.create_topic("quic-after-bad", 1, &[])?, 0);
    let (_endpoint, connection) = connect(&broker).await?;
    let (mut bad, _bad_recv) = connection.open_bi().await?;
    let (mut good, _good_recv) = connection.open_bi().await?;
    let request = produce_request("quic-after-bad", batch(&[b"late"], -1, -1, -1));
    write_request(&mut good, ApiKey::Produce, 9, request).await?;
    // A 3-byte frame: not even an api key, version and correlation id.
    bad.write_all(&[0, 0, 0, 3, 1, 2, 3]).await?;
    bad.finish()?;
    expect_protocol_close(&connection).await?;
    let (_endpoint, fresh) = connect(&broker).await?;
    let (error, records) = fetch(&fresh, "quic-after-bad", 0, 0).await?;
    assert_eq!(error, 0);
    assert!(
        record_values(records)?.is_empty(),
        "the produce behind the malformed request was applied"
    );
    Ok(())
}
