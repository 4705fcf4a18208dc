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
/// What the responder holds for the fixture partition: batches to serve on
/// Fetch and the high watermark after them.
#[derive(Clone, Default)]
struct Log {
    batches: Bytes,
    high_watermark: i64,
}

fn serve(mut stream: TcpStream, port: u16, records: mpsc::Sender<(i16, Bytes)>, log: Log) {
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
            RequestKind::ListOffsets(request) => {
                let topics = request
                    .topics
                    .iter()
                    .map(|topic| {
                        let partitions = topic
                            .partitions
                            .iter()
                            .map(|p| {
                                // -2 asks for the earliest offset, -1 for the latest.
                                let offset = if p.timestamp == -2 { 0 } else { log.high_watermark };
                                messages::list_offsets_response::ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_timestamp(-1)
                                    .with_offset(offset)
                            })
                            .collect();
                        messages::list_offsets_response::ListOffsetsTopicResponse::default()
                            .with_name(topic.name.clone())
                            .with_partitions(partitions)
                    })
                    .collect();
                ResponseKind::ListOffsets(
                    messages::ListOffsetsResponse::default().with_topics(topics),
                )
            }
            RequestKind::Fetch(request) => {
                let responses = request
                    .topics
                    .iter()
                    .map(|topic| {
                        let partitions = topic
                            .partitions
                            .iter()
                            .map(|p| {
                                let records = (p.fetch_offset < log.high_watermark)
                                    .then(|| log.batches.clone());
                                messages::fetch_response::PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_high_watermark(log.high_watermark)
                                    .with_last_stable_offset(log.high_watermark)
                                    .with_log_start_offset(0)
                                    .with_records(Some(records.unwrap_or_default()))
                            })
                            .collect();
                        messages::fetch_response::FetchableTopicResponse::default()
                            .with_topic(topic.topic.clone())
                            .with_topic_id(topic.topic_id)
                            .with_partitions(partitions)
                    })
                    .collect();
                ResponseKind::Fetch(messages::FetchResponse::default().with_responses(responses))
            }
            other => panic!("kcat sent an unexpected request: {other:?}"),
        };
        respond(&mut stream, id, key, version, response);
    }
}

/// Starts a loopback responder; returns its port and the Produce record sets it receives.
fn start_responder(log: Log) -> (u16, mpsc::Receiver<(i16, Bytes)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (sender, log) = (sender.clone(), log.clone());
            std::thread::spawn(move || serve(stream, port, sender, log));
        }
    });
    (port, receiver)
}

/// Produces `input` with kcat under `codec` and returns the record sets it sent.
fn produce_with_kcat(codec: Compression, input: &str) -> Vec<(i16, Bytes)> {
    let (port, receiver) = start_responder(Log::default());
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

/// Batches built by our RecordBatchBuilder, in every codec, are read back by
/// kcat (librdkafka) through Fetch: our CRC, varints, LZ4 frame descriptor,
/// xerial snappy framing, gzip and zstd are accepted by a consumer we did not write.
#[test]
fn kcat_consumes_our_batches_in_every_codec() {
    use skiff_protocol::batch::{RecordBatchBuilder, RecordBatchBuilderConfig};
    let lines: Vec<(String, String)> = (0..40)
        .map(|i| (format!("k{i}"), format!("v{i}-{}", "y".repeat(i * 11))))
        .collect();
    for codec in Compression::ALL {
        // Two batches, so that offsets continue across a batch boundary.
        let mut batches = Vec::new();
        for (half, base_offset) in [(&lines[..25], 0i64), (&lines[25..], 25)] {
            let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig {
                compression: codec,
                base_offset,
                ..Default::default()
            });
            for (k, v) in half {
                builder.append(
                    1_700_000_000_000,
                    Some(k.as_bytes()),
                    Some(v.as_bytes()),
                    &[],
                );
            }
            batches.extend_from_slice(&builder.build().unwrap());
        }
        let (port, _) = start_responder(Log {
            batches: Bytes::from(batches),
            high_watermark: lines.len() as i64,
        });
        let output = Command::new("kcat")
            .args([
                "-C",
                "-b",
                &format!("127.0.0.1:{port}"),
                "-t",
                TOPIC,
                "-p",
                "0",
            ])
            .args(["-o", "beginning", "-e", "-f", "%o %k:%s\\n"])
            .stdin(Stdio::null())
            .output()
            .expect("kcat must be installed (Debian package kcat; .ci/run installs it)");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "kcat -C failed for {codec:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let expected: String = lines
            .iter()
            .enumerate()
            .map(|(i, (k, v))| format!("{i} {k}:{v}\n"))
            .collect();
        assert_eq!(stdout, expected, "{codec:?}");
    }
}
