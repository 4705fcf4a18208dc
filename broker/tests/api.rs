//! Kafka APIs against a real `skiffd` process, through a minimal client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{batch, record_values, Client, Skiffd};
use skiff_protocol::api::messages::{self, TopicName};
use skiff_protocol::api::{ApiKey, RequestKind, ResponseKind, StrBytes};
use skiff_protocol::ErrorCode;

fn metadata(
    client: &mut Client,
    version: i16,
    topics: Option<&[&str]>,
    auto_create: bool,
) -> Result<messages::MetadataResponse> {
    let mut request = messages::MetadataRequest::default();
    request.topics = topics.map(|names| {
        names
            .iter()
            .map(|n| {
                let mut t = messages::metadata_request::MetadataRequestTopic::default();
                t.name = Some(TopicName(StrBytes::from_string(n.to_string())));
                t
            })
            .collect()
    });
    request.allow_auto_topic_creation = auto_create;
    match client.call(ApiKey::Metadata, version, RequestKind::Metadata(request))? {
        ResponseKind::Metadata(r) => Ok(r),
        other => bail!("unexpected {other:?}"),
    }
}

/// ApiVersions advertises exactly the served APIs, at every version 0–4.
#[test]
fn api_versions_lists_served_apis() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    for version in 0..=4 {
        let response = client.call(
            ApiKey::ApiVersions,
            version,
            RequestKind::ApiVersions(Default::default()),
        )?;
        let ResponseKind::ApiVersions(response) = response else {
            bail!("not ApiVersions")
        };
        assert_eq!(response.error_code, 0);
        let mut keys: Vec<i16> = response.api_keys.iter().map(|k| k.api_key).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 32, 42],
            "v{version}"
        );
        let metadata = response.api_keys.iter().find(|k| k.api_key == 3).unwrap();
        assert!(metadata.min_version == 0 && metadata.max_version >= 4);
    }
    Ok(())
}

/// Metadata names this broker at its real port and the topics; auto-creation follows the client's wish.
#[test]
fn metadata_and_auto_creation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &["--topic-partitions", "3"])?;
    let mut client = broker.connect()?;
    for version in [0, 1, 4, 9, 12] {
        let response = metadata(&mut client, version, Some(&["auto-made"]), true)?;
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].port, i32::from(broker.tcp.port()));
        assert_eq!(response.topics[0].error_code, 0, "v{version}");
        assert_eq!(response.topics[0].partitions.len(), 3);
    }
    // Produce never creates a topic, even with auto-creation on: Kafka
    // creates topics only on Metadata, which clients send first.
    let (error, _) = client.produce("produced-to", 0, batch(&[b"x"], -1, -1, -1), 1)?;
    assert_eq!(error, ErrorCode::UnknownTopicOrPartition.code());
    let refused = metadata(&mut client, 9, Some(&["not-made"]), false)?;
    assert_eq!(
        refused.topics[0].error_code,
        ErrorCode::UnknownTopicOrPartition.code()
    );
    let all = metadata(&mut client, 9, None, true)?;
    let names: Vec<_> = all
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().as_str().to_string())
        .collect();
    assert_eq!(names, vec!["auto-made"]);
    Ok(())
}

/// CreateTopics applies overrides that DescribeConfigs reads back; DeleteTopics removes the topic.
#[test]
fn create_describe_delete_topics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &["--auto-create-topics", "false"])?;
    let mut client = broker.connect()?;
    assert_eq!(
        client.create_topic("orders", 4, &[("retention.ms", "60000")])?,
        0
    );
    assert_eq!(
        client.create_topic("orders", 4, &[])?,
        ErrorCode::TopicAlreadyExists.code()
    );
    assert_eq!(
        client.create_topic("bad name", 1, &[])?,
        ErrorCode::InvalidTopicException.code()
    );
    assert_eq!(
        client.create_topic("cfg", 1, &[("retention.mss", "1")])?,
        ErrorCode::InvalidConfig.code()
    );
    assert_eq!(
        client.create_topic("zero", 0, &[])?,
        ErrorCode::InvalidPartitions.code()
    );

    let mut resource = messages::describe_configs_request::DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_string("orders".to_string());
    let mut request = messages::DescribeConfigsRequest::default();
    request.resources = vec![resource];
    let ResponseKind::DescribeConfigs(described) = client.call(
        ApiKey::DescribeConfigs,
        4,
        RequestKind::DescribeConfigs(request),
    )?
    else {
        bail!("not DescribeConfigs")
    };
    let configs = &described.results[0].configs;
    let retention = configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .unwrap();
    assert_eq!(retention.value.as_ref().unwrap().as_str(), "60000");
    assert_eq!(retention.config_source, 1);
    assert!(configs
        .iter()
        .any(|c| c.name.as_str() == "cleanup.policy" && c.config_source == 5));

    let mut delete = messages::DeleteTopicsRequest::default();
    delete.topic_names = vec![
        TopicName(StrBytes::from_string("orders".to_string())),
        TopicName(StrBytes::from_string("nope".to_string())),
    ];
    let ResponseKind::DeleteTopics(deleted) =
        client.call(ApiKey::DeleteTopics, 4, RequestKind::DeleteTopics(delete))?
    else {
        bail!("not DeleteTopics")
    };
    assert_eq!(deleted.responses[0].error_code, 0);
    assert_eq!(
        deleted.responses[1].error_code,
        ErrorCode::UnknownTopicOrPartition.code()
    );
    let all = metadata(&mut client, 9, None, false)?;
    assert!(all.topics.is_empty());
    // A deleted topic can be created again, empty.
    assert_eq!(client.create_topic("orders", 1, &[])?, 0);
    assert_eq!(client.list_offset("orders", 0, -1)?, (0, 0));
    Ok(())
}

/// Produced batches come back from Fetch byte for byte, with offsets assigned in order.
#[test]
fn produce_then_fetch_round_trip() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("events", 2, &[])?, 0);
    let first = batch(&[b"a", b"bb", b"ccc"], -1, -1, -1);
    let second = batch(&[b"dddd"], -1, -1, -1);
    assert_eq!(client.produce("events", 1, first.clone(), -1)?, (0, 0));
    assert_eq!(client.produce("events", 1, second.clone(), 1)?, (0, 3));
    let (error, high_watermark, records) = client.fetch("events", 1, 0, 0)?;
    assert_eq!((error, high_watermark), (0, 4));
    // Bytes after base offset and leader epoch (which the broker assigns) are the client's, unchanged.
    assert_eq!(&records[16..first.len()], &first[16..]);
    assert_eq!(&records[first.len() + 16..], &second[16..]);
    let values = record_values(records)?;
    assert_eq!(values, vec![&b"a"[..], b"bb", b"ccc", b"dddd"]);
    // Fetching from the middle starts at the batch holding the offset.
    let (_, _, tail) = client.fetch("events", 1, 3, 0)?;
    assert_eq!(record_values(tail)?, vec![&b"dddd"[..]]);
    // Past the end is OFFSET_OUT_OF_RANGE; the other partition is empty.
    assert_eq!(
        client.fetch("events", 1, 99, 0)?.0,
        ErrorCode::OffsetOutOfRange.code()
    );
    assert_eq!(client.fetch("events", 0, 0, 0)?.2.len(), 0);
    assert_eq!(client.list_offset("events", 1, -2)?, (0, 0));
    assert_eq!(client.list_offset("events", 1, -1)?, (0, 4));
    assert_eq!(client.list_offset("events", 1, 1_700_000_000_001)?, (0, 1));
    assert_eq!(client.list_offset("events", 1, 1_800_000_000_000)?, (0, -1));
    Ok(())
}

/// A long-poll fetch returns as soon as a produce lands, well before max_wait_ms.
#[test]
fn long_poll_wakes_on_append() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut setup = broker.connect()?;
    assert_eq!(setup.create_topic("poll", 1, &[])?, 0);
    let addr = broker.tcp;
    let waiter = std::thread::spawn(move || -> Result<(Duration, usize)> {
        let mut client = Client::connect(addr)?;
        let started = Instant::now();
        let (error, _, records) = client.fetch("poll", 0, 0, 20_000)?;
        assert_eq!(error, 0);
        Ok((started.elapsed(), record_values(records)?.len()))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        setup
            .produce("poll", 0, batch(&[b"wake"], -1, -1, -1), 1)?
            .0,
        0
    );
    let (elapsed, count) = waiter.join().expect("waiter thread")?;
    assert_eq!(count, 1);
    assert!(
        elapsed < Duration::from_secs(15),
        "fetch waited {elapsed:?} despite the append"
    );
    // With nothing to wake it, the poll lasts max_wait_ms and returns empty.
    let started = Instant::now();
    let (error, _, records) = setup.fetch("poll", 0, 1, 200)?;
    assert_eq!((error, records.len()), (0, 0));
    assert!(started.elapsed() >= Duration::from_millis(190));
    Ok(())
}

/// Pipelined requests are answered in request order even when an earlier one long-polls.
#[test]
fn pipelined_responses_keep_request_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("order", 1, &[])?, 0);
    let slow = client.send(
        ApiKey::Fetch,
        12,
        &RequestKind::Fetch(Client::fetch_request("order", 0, 0, 500, 1)),
    )?;
    let fast = client.send(
        ApiKey::ApiVersions,
        3,
        &RequestKind::ApiVersions(Default::default()),
    )?;
    let first = client.receive(ApiKey::Fetch, 12, slow)?;
    assert!(matches!(first, ResponseKind::Fetch(_)));
    let second = client.receive(ApiKey::ApiVersions, 3, fast)?;
    assert!(matches!(second, ResponseKind::ApiVersions(_)));

    // A burst of pipelined produces: answered in order, offsets in request order.
    let mut ids = Vec::new();
    for i in 0..200 {
        let value = format!("burst-{i}");
        let request =
            Client::produce_request("order", 0, batch(&[value.as_bytes()], -1, -1, -1), 1);
        ids.push(client.send(ApiKey::Produce, 9, &RequestKind::Produce(request))?);
    }
    let expected: Vec<(i16, i64)> = (0..200).map(|offset| (0, offset)).collect();
    assert_eq!(client.receive_produced(ids)?, expected);
    Ok(())
}

/// SIGTERM exits 0 after a clean shutdown, and a restart serves everything acknowledged before.
#[test]
fn graceful_shutdown_and_restart_keep_data() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(
        client.create_topic("durable", 1, &[("retention.ms", "-1")])?,
        0
    );
    for i in 0..20 {
        let value = format!("value-{i}");
        assert_eq!(
            client
                .produce("durable", 0, batch(&[value.as_bytes()], -1, -1, -1), -1)?
                .0,
            0
        );
    }
    drop(client);
    assert_eq!(broker.stop()?, 0);
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    let (error, high_watermark, records) = client.fetch("durable", 0, 0, 0)?;
    assert_eq!((error, high_watermark), (0, 20));
    let values = record_values(records)?;
    assert_eq!(values.len(), 20);
    assert_eq!(values[19], &b"value-19"[..]);
    let ResponseKind::DescribeConfigs(described) = client.call(
        ApiKey::DescribeConfigs,
        4,
        RequestKind::DescribeConfigs({
            let mut resource =
                messages::describe_configs_request::DescribeConfigsResource::default();
            resource.resource_type = 2;
            resource.resource_name = StrBytes::from_string("durable".to_string());
            let mut request = messages::DescribeConfigsRequest::default();
            request.resources = vec![resource];
            request
        }),
    )?
    else {
        bail!("not DescribeConfigs")
    };
    let retention = described.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .unwrap();
    assert_eq!(
        retention.value.as_ref().unwrap().as_str(),
        "-1",
        "topic override survives restart"
    );
    Ok(())
}

/// /metrics serves Prometheus text with per-partition traffic, per-API requests and log end offsets.
#[test]
fn metrics_endpoint_reports_traffic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("metered", 1, &[])?, 0);
    let records = batch(&[b"x", b"y"], -1, -1, -1);
    let size = records.len();
    client.produce("metered", 0, records, 1)?;
    client.fetch("metered", 0, 0, 0)?;
    let text = broker.scrape()?;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains(&format!(
            "skiff_partition_bytes_in_total{{topic=\"metered\",partition=\"0\"}} {size}"
        )),
        "{text}"
    );
    assert!(text.contains("skiff_partition_records_in_total{topic=\"metered\",partition=\"0\"} 2"));
    assert!(text.contains("skiff_partition_records_out_total{topic=\"metered\",partition=\"0\"} 2"));
    assert!(text.contains("skiff_log_end_offset{topic=\"metered\",partition=\"0\"} 2"));
    assert!(text.contains("skiff_requests_total{api=\"Produce\",api_key=\"0\"} 1"));
    assert!(text.contains("skiff_request_duration_seconds_count{api=\"Fetch\"} 1"));
    assert!(text.contains("skiff_connections_open 1"));
    Ok(())
}

/// Settings layer as documented: TOML file < SKIFF_* environment < flags;
/// --help names every setting's default.
#[test]
fn config_layers_and_help() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("skiff.toml");
    std::fs::write(
        &file,
        "auto_create_topics = true\n[topic]\npartitions = 2\n",
    )?;
    let file = file.to_str().unwrap().to_string();
    let cases: [(&[&str], Option<&str>, usize); 3] = [
        (&["--config", &file], None, 2),
        (&["--config", &file], Some("5"), 5),
        (
            &["--config", &file, "--topic-partitions", "7"],
            Some("5"),
            7,
        ),
    ];
    for (i, (flags, env, expected)) in cases.into_iter().enumerate() {
        let data = dir.path().join(format!("data-{i}"));
        let broker = Skiffd::start_with(&data, flags, |command| {
            if let Some(value) = env {
                command.env("SKIFF_TOPIC_PARTITIONS", value);
            }
        })?;
        let mut client = broker.connect()?;
        let response = metadata(&mut client, 9, Some(&["layered"]), true)?;
        assert_eq!(
            response.topics[0].partitions.len(),
            expected,
            "flags {flags:?} env {env:?}"
        );
    }

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_skiffd"))
        .arg("--help")
        .output()?;
    let help = String::from_utf8(help.stdout)?;
    for flag in [
        "--listen",
        "--quic-listen",
        "--data-dir",
        "--metrics-listen",
        "--config",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert!(help.contains("127.0.0.1:9092") && help.contains("./skiff-data"));
    Ok(())
}

/// Every advertised version of every API answers, including with error fields set
/// (a field a version lacks must not break the encoding).
#[test]
fn every_served_version_answers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("versions", 1, &[])?, 0);
    let name = |n: &str| TopicName(StrBytes::from_string(n.to_string()));
    for version in 3..=11 {
        for topic in ["versions", "bad name"] {
            let mut data = messages::produce_request::PartitionProduceData::default();
            data.records = Some(batch(&[b"v"], -1, -1, -1));
            let mut topic_data = messages::produce_request::TopicProduceData::default();
            topic_data.name = name(topic);
            topic_data.partition_data = vec![data];
            let mut request = messages::ProduceRequest::default();
            request.acks = 1;
            request.timeout_ms = 5000;
            request.topic_data = vec![topic_data];
            let ResponseKind::Produce(r) =
                client.call(ApiKey::Produce, version, RequestKind::Produce(request))?
            else {
                bail!("produce v{version}")
            };
            let expected = if topic == "versions" {
                0
            } else {
                ErrorCode::InvalidTopicException.code()
            };
            assert_eq!(
                r.responses[0].partition_responses[0].error_code, expected,
                "produce v{version}"
            );
        }
    }
    for version in 4..=12 {
        for (topic, offset) in [("versions", 0), ("versions", 999), ("missing", 0)] {
            let request = Client::fetch_request(topic, 0, offset, 0, 1);
            let ResponseKind::Fetch(r) =
                client.call(ApiKey::Fetch, version, RequestKind::Fetch(request))?
            else {
                bail!("fetch v{version}")
            };
            let error = r.responses[0].partitions[0].error_code;
            assert_eq!(
                error == 0,
                offset == 0 && topic == "versions",
                "fetch v{version} {topic}@{offset}: {error}"
            );
        }
    }
    for version in 1..=6 {
        for timestamp in [-1, -2, 0] {
            let mut p = messages::list_offsets_request::ListOffsetsPartition::default();
            p.timestamp = timestamp;
            let mut t = messages::list_offsets_request::ListOffsetsTopic::default();
            t.name = name("versions");
            t.partitions = vec![p];
            let mut request = messages::ListOffsetsRequest::default();
            request.replica_id = messages::BrokerId(-1);
            request.topics = vec![t];
            let ResponseKind::ListOffsets(r) = client.call(
                ApiKey::ListOffsets,
                version,
                RequestKind::ListOffsets(request),
            )?
            else {
                bail!("list v{version}")
            };
            assert_eq!(
                r.topics[0].partitions[0].error_code, 0,
                "list_offsets v{version}"
            );
        }
    }
    for version in 0..=12 {
        let response = metadata(&mut client, version, Some(&["versions", "bad name"]), true)?;
        assert_eq!(response.topics[0].error_code, 0, "metadata v{version}");
        assert_eq!(
            response.topics[1].error_code,
            ErrorCode::InvalidTopicException.code()
        );
    }
    let mut request = messages::MetadataRequest::default();
    request.topics = None;
    request.include_topic_authorized_operations = true;
    let ResponseKind::Metadata(r) =
        client.call(ApiKey::Metadata, 9, RequestKind::Metadata(request))?
    else {
        bail!("metadata")
    };
    let operations = r.topics[0].topic_authorized_operations;
    assert!(
        operations & (1 << 3) != 0 && operations & (1 << 4) != 0,
        "READ and WRITE allowed: {operations:#x}"
    );
    for version in 2..=6 {
        let mut topic = messages::create_topics_request::CreatableTopic::default();
        topic.name = name(&format!("created-v{version}"));
        topic.num_partitions = 1;
        topic.replication_factor = 1;
        let mut bad = messages::create_topics_request::CreatableTopic::default();
        bad.name = name("bad name");
        bad.num_partitions = 1;
        bad.replication_factor = 3;
        let mut request = messages::CreateTopicsRequest::default();
        request.topics = vec![topic, bad];
        let ResponseKind::CreateTopics(r) = client.call(
            ApiKey::CreateTopics,
            version,
            RequestKind::CreateTopics(request),
        )?
        else {
            bail!("create v{version}")
        };
        assert_eq!(r.topics[0].error_code, 0, "create_topics v{version}");
        assert_eq!(
            r.topics[1].error_code,
            ErrorCode::InvalidReplicationFactor.code()
        );
    }
    for version in 1..=5 {
        let mut request = messages::DeleteTopicsRequest::default();
        request.topic_names = vec![
            name(&format!("created-v{}", version + 1)),
            name("never-existed"),
        ];
        let ResponseKind::DeleteTopics(r) = client.call(
            ApiKey::DeleteTopics,
            version,
            RequestKind::DeleteTopics(request),
        )?
        else {
            bail!("delete v{version}")
        };
        assert_eq!(r.responses[0].error_code, 0, "delete_topics v{version}");
        assert_eq!(
            r.responses[1].error_code,
            ErrorCode::UnknownTopicOrPartition.code()
        );
    }
    for version in 1..=4 {
        let resources =
            [(2, "versions"), (2, "never-existed"), (4, "0"), (7, "x")].map(|(kind, n)| {
                let mut resource =
                    messages::describe_configs_request::DescribeConfigsResource::default();
                resource.resource_type = kind;
                resource.resource_name = StrBytes::from_string(n.to_string());
                resource
            });
        let mut request = messages::DescribeConfigsRequest::default();
        request.resources = resources.to_vec();
        request.include_synonyms = version >= 1;
        let ResponseKind::DescribeConfigs(r) = client.call(
            ApiKey::DescribeConfigs,
            version,
            RequestKind::DescribeConfigs(request),
        )?
        else {
            bail!("describe v{version}")
        };
        let errors: Vec<i16> = r.results.iter().map(|r| r.error_code).collect();
        assert_eq!(errors[0], 0, "describe_configs v{version}");
        assert_eq!(errors[2], 0);
        assert!(errors[1] != 0 && errors[3] != 0);
    }
    for version in 0..=4 {
        let mut request = messages::InitProducerIdRequest::default();
        request.transactional_id = None;
        request.producer_id = messages::ProducerId(-1);
        request.producer_epoch = -1;
        let ResponseKind::InitProducerId(r) = client.call(
            ApiKey::InitProducerId,
            version,
            RequestKind::InitProducerId(request),
        )?
        else {
            bail!("init v{version}")
        };
        assert_eq!(r.error_code, 0, "init_producer_id v{version}");
    }
    Ok(())
}
