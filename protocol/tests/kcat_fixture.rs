//! Cross-implementation check against librdkafka (through kcat): a minimal
//! loopback responder built from this crate's codec answers kcat's
//! ApiVersions, Metadata and Produce requests, and the record batches kcat
//! sends — under every compression codec — must validate and decode to the
//! messages we fed it. This proves our frames, headers, message codec,
//! RecordBatch v2, CRC-32C and decompression (including librdkafka's LZ4 and
//! snappy framing) agree with a client we did not write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use skiff_protocol::api::{
    self, messages, ApiKey, RequestKind, ResponseKind, StrBytes, SUPPORTED_API_KEYS,
};
use skiff_protocol::batch::{BatchReader, Compression};

const TOPIC: &str = "fixture";

fn respond(
    stream: &mut TcpStream,
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    response: ResponseKind,
) {
    let frame = api::encode_response(correlation_id, key, version, &response).unwrap();
    stream.write_all(&frame.to_contiguous()).unwrap();
}

/// Serves one connection until kcat closes it, forwarding Produce record sets.
fn serve(mut stream: TcpStream, port: u16, records: mpsc::Sender<(i16, Bytes)>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    loop {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).is_err() {
            return;
        }
        let mut payload = vec![0u8; i32::from_be_bytes(size) as usize];
        stream.read_exact(&mut payload).unwrap();
        let (header, request) = api::decode_request(Bytes::from(payload)).unwrap();
        let key = api::api_key(header.api_key).unwrap();
        let (id, version) = (header.correlation_id, header.api_version);
        let response = match request {
            RequestKind::ApiVersions(_) => {
                // librdkafka enables RecordBatch v2 only if Fetch v4+ is offered
                // too, so advertise everything the codec supports.
                let api_keys = SUPPORTED_API_KEYS
                    .into_iter()
                    .map(|k| {
                        let range = api::codec_versions(k).unwrap();
                        // librdkafka <= 2.11.0 silently drops gzip/snappy/lz4 unless
                        // Produce is advertised from v0 (its codec check asks whether
                        // Produce is supported in [0, 0]); with RecordBatch v2 it then
                        // sends v3+ anyway, which is all this responder decodes.
                        let min = if k == ApiKey::Produce { 0 } else { range.min };
                        messages::api_versions_response::ApiVersion::default()
                            .with_api_key(k as i16)
                            .with_min_version(min)
                            .with_max_version(range.max)
                    })
                    .collect();
                ResponseKind::ApiVersions(
                    messages::ApiVersionsResponse::default().with_api_keys(api_keys),
                )
            }
            RequestKind::Metadata(_) => {
                let broker = messages::metadata_response::MetadataResponseBroker::default()
                    .with_node_id(messages::BrokerId(0))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(i32::from(port));
                let partition = messages::metadata_response::MetadataResponsePartition::default()
                    .with_partition_index(0)
                    .with_leader_id(messages::BrokerId(0))
                    .with_replica_nodes(vec![messages::BrokerId(0)])
                    .with_isr_nodes(vec![messages::BrokerId(0)]);
                let topic = messages::metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(messages::TopicName(StrBytes::from_static_str(TOPIC))))
                    .with_partitions(vec![partition]);
                ResponseKind::Metadata(
                    messages::MetadataResponse::default()
                        .with_brokers(vec![broker])
                        .with_controller_id(messages::BrokerId(0))
                        .with_topics(vec![topic]),
                )
            }
            RequestKind::Produce(produce) => {
                for topic in &produce.topic_data {
                    for partition in &topic.partition_data {
                        if let Some(set) = &partition.records {
                            records.send((version, set.clone())).unwrap();
                        }
                    }
                }
                let partition = messages::produce_response::PartitionProduceResponse::default()
                    .with_index(0)
                    .with_base_offset(0);
                let topic = messages::produce_response::TopicProduceResponse::default()
                    .with_name(messages::TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_responses(vec![partition]);
                ResponseKind::Produce(
                    messages::ProduceResponse::default().with_responses(vec![topic]),
                )
            }
            other => panic!("kcat sent an unexpected request: {other:?}"),
        };
        respond(&mut stream, id, key, version, response);
    }
}

/// Produces `input` with kcat under `codec` and returns the record sets it sent.
fn produce_with_kcat(codec: Compression, input: &str) -> Vec<(i16, Bytes)> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let sender = sender.clone();
            std::thread::spawn(move || serve(stream, port, sender));
        }
    });
    let mut child = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &format!("127.0.0.1:{port}"),
            "-t",
            TOPIC,
            "-p",
            "0",
            "-K",
            ":",
        ])
        .args([
            "-z",
            codec.name(),
            "-X",
            "linger.ms=50",
            "-X",
            "api.version.request=true",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat must be installed (Debian package kcat; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "kcat failed for {codec:?}: {stderr}");
    receiver.try_iter().collect()
}

/// kcat's batches, in every codec, validate and carry exactly the keys and values given.
#[test]
fn kcat_batches_decode_in_every_codec() {
    let lines: Vec<(String, String)> = (0..50)
        .map(|i| {
            (
                format!("key-{i}"),
                format!("value {i} {}", "x".repeat(i * 7)),
            )
        })
        .collect();
    let input: String = lines.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    for codec in Compression::ALL {
        let sets = produce_with_kcat(codec, &input);
        assert!(!sets.is_empty(), "{codec:?}: kcat sent no records");
        let mut got = Vec::new();
        for (version, set) in sets {
            assert!(version >= 3, "Produce v{version} carries RecordBatch v2");
            for view in BatchReader::new(set) {
                let view = view.unwrap();
                view.validate().unwrap_or_else(|e| panic!("{codec:?}: {e}"));
                view.validate_records()
                    .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
                assert_eq!(view.compression().unwrap(), codec);
                for record in view.records().unwrap() {
                    let record = record.unwrap();
                    let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
                    let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                    got.push((key, value));
                }
            }
        }
        assert_eq!(got, lines, "{codec:?}");
    }
}
