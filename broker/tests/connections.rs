//! Connection handling: limits, idle timeout, back-pressure, acks=0, fetch
//! size limits and sessions, crash recovery through the broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{batch, count_records, Client, Skiffd};
use skiff_protocol::api::messages::{self, TopicName};
use skiff_protocol::api::{ApiKey, RequestKind, ResponseKind, StrBytes};
use skiff_protocol::ErrorCode;

fn closed_by_broker(client: &mut Client) -> bool {
    let mut rest = Vec::new();
    match client.stream.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

/// A connection without requests is closed after --idle-timeout-ms; a busy one is not.
#[test]
fn idle_connections_are_closed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &["--idle-timeout-ms", "500"])?;
    let mut busy = broker.connect()?;
    let mut idle = broker.connect()?;
    // A frame that stalls half-way is not activity (no slowloris).
    let mut stalled = broker.connect()?;
    stalled.write_raw(&1000i32.to_be_bytes())?;
    stalled.write_raw(&[0u8; 10])?;
    let started = Instant::now();
    // A fetch long-polling past the idle timeout keeps its connection.
    assert_eq!(busy.create_topic("idle", 1, &[])?, 0);
    let (error, _, _) = busy.fetch("idle", 0, 0, 1500)?;
    assert_eq!(error, 0);
    assert!(closed_by_broker(&mut idle));
    assert!(closed_by_broker(&mut stalled));
    assert!(started.elapsed() >= Duration::from_millis(490));
    assert_eq!(
        busy.list_offset("idle", 0, -1)?,
        (0, 0),
        "the busy connection survived"
    );
    Ok(())
}

/// Beyond --connections-max, new connections are closed at once; existing ones keep working.
#[test]
fn connection_limit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &["--connections-max", "1"])?;
    let mut first = broker.connect()?;
    let unknown = ErrorCode::UnknownTopicOrPartition.code();
    assert_eq!(first.list_offset("x", 0, -1)?.0, unknown);
    let mut second = broker.connect()?;
    assert!(closed_by_broker(&mut second));
    assert_eq!(first.list_offset("x", 0, -1)?.0, unknown);
    drop(first);
    // The slot frees up once the first connection is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut third = broker.connect()?;
        if third.list_offset("x", 0, -1).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("connection slot never freed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A request larger than the per-connection in-flight budget still goes through (it takes the whole budget).
#[test]
fn request_larger_than_inflight_budget() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(
        dir.path(),
        &[
            "--connection-inflight-bytes-max",
            "1024",
            "--connection-inflight-requests-max",
            "1",
        ],
    )?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("budget", 1, &[])?, 0);
    let value = vec![b'z'; 8000];
    for i in 0..5 {
        assert_eq!(
            client.produce("budget", 0, batch(&[&value], -1, -1, -1), 1)?,
            (0, i)
        );
    }
    Ok(())
}

/// Pipelined requests beyond the in-flight budget wait in the socket until
/// earlier responses are written, and a client that reads late (the
/// broker's writes block) still gets every response in order.
#[test]
fn pipelined_requests_beyond_the_budget_are_answered_in_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(
        dir.path(),
        &[
            "--connection-inflight-bytes-max",
            "4096",
            "--connection-inflight-requests-max",
            "2",
        ],
    )?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("pipelined", 1, &[])?, 0);
    let value = vec![b'p'; 1500];
    let mut ids = Vec::new();
    for _ in 0..60 {
        let request = Client::produce_request("pipelined", 0, batch(&[&value], -1, -1, -1), 1);
        ids.push(client.send(ApiKey::Produce, 9, &RequestKind::Produce(request))?);
    }
    let expected: Vec<(i16, i64)> = (0..60).map(|offset| (0, offset)).collect();
    assert_eq!(client.receive_produced(ids)?, expected);

    // 120 fetches of the whole log (~90 KB each): more than the socket
    // buffers hold while the client is not reading.
    let mut fetcher = broker.connect()?;
    let mut ids = Vec::new();
    for _ in 0..120 {
        let request = Client::fetch_request("pipelined", 0, 0, 0, 1);
        ids.push(fetcher.send(ApiKey::Fetch, 12, &RequestKind::Fetch(request))?);
    }
    std::thread::sleep(Duration::from_millis(300));
    for id in ids {
        let ResponseKind::Fetch(response) = fetcher.receive(ApiKey::Fetch, 12, id)? else {
            bail!("not fetch")
        };
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        assert_eq!(
            count_records(partition.records.clone().unwrap_or_default())?,
            60
        );
    }
    Ok(())
}

/// acks=0 gets no response; the next request's response is the next frame on the wire.
#[test]
fn acks_zero_sends_no_response() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("acks0", 1, &[])?, 0);
    let mut data = messages::produce_request::PartitionProduceData::default();
    data.records = Some(batch(&[b"fire", b"forget"], -1, -1, -1));
    let mut topic = messages::produce_request::TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_string("acks0".to_string()));
    topic.partition_data = vec![data];
    let mut request = messages::ProduceRequest::default();
    request.acks = 0;
    request.timeout_ms = 1000;
    request.topic_data = vec![topic];
    client.send(ApiKey::Produce, 9, &RequestKind::Produce(request))?;
    let id = client.send(
        ApiKey::ListOffsets,
        6,
        &RequestKind::ListOffsets(Default::default()),
    )?;
    assert!(matches!(
        client.receive(ApiKey::ListOffsets, 6, id)?,
        ResponseKind::ListOffsets(_)
    ));
    assert_eq!(client.list_offset("acks0", 0, -1)?, (0, 2));

    // A failed acks=0 produce closes the connection (the client's only signal, as in Kafka).
    let mut data = messages::produce_request::PartitionProduceData::default();
    data.records = Some(batch(&[b"lost"], -1, -1, -1));
    let mut topic = messages::produce_request::TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_string("bad topic".to_string()));
    topic.partition_data = vec![data];
    let mut request = messages::ProduceRequest::default();
    request.acks = 0;
    request.timeout_ms = 1000;
    request.topic_data = vec![topic];
    client.send(ApiKey::Produce, 9, &RequestKind::Produce(request))?;
    assert!(closed_by_broker(&mut client));
    Ok(())
}

/// partition_max_bytes and max_bytes bound a fetch, except that the first batch is always returned whole.
#[test]
fn fetch_size_limits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("sizes", 2, &[])?, 0);
    let value = vec![b's'; 1000];
    for partition in 0..2 {
        for _ in 0..3 {
            assert_eq!(
                client
                    .produce("sizes", partition, batch(&[&value], -1, -1, -1), 1)?
                    .0,
                0
            );
        }
    }
    let fetch = |client: &mut Client, partition_max: i32, max: i32| -> Result<Vec<usize>> {
        let mut request = Client::fetch_request("sizes", 0, 0, 0, 1);
        request.max_bytes = max;
        let mut second = request.topics[0].partitions[0].clone();
        second.partition = 1;
        request.topics[0].partitions.push(second);
        for p in &mut request.topics[0].partitions {
            p.partition_max_bytes = partition_max;
        }
        let ResponseKind::Fetch(r) = client.call(ApiKey::Fetch, 12, RequestKind::Fetch(request))?
        else {
            bail!("fetch")
        };
        r.responses[0]
            .partitions
            .iter()
            .map(|p| count_records(p.records.clone().unwrap_or_default()))
            .collect()
    };
    assert_eq!(fetch(&mut client, 1_000_000, 1_000_000)?, vec![3, 3]);
    assert_eq!(fetch(&mut client, 2500, 1_000_000)?, vec![2, 2]);
    assert_eq!(
        fetch(&mut client, 10, 1_000_000)?,
        vec![1, 0],
        "first batch whole, then the limit holds"
    );
    assert_eq!(fetch(&mut client, 1_000_000, 2500)?, vec![2, 0]);
    Ok(())
}

/// Incremental fetch sessions are declined: session id 0 in answers, unknown sessions refused.
#[test]
fn fetch_sessions_are_declined() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    let mut request = Client::fetch_request("sessions", 0, 0, 0, 1);
    request.session_epoch = 0; // asks for a new session
    let ResponseKind::Fetch(r) =
        client.call(ApiKey::Fetch, 12, RequestKind::Fetch(request.clone()))?
    else {
        bail!("fetch")
    };
    assert_eq!((r.error_code, r.session_id), (0, 0));
    request.session_id = 77;
    request.session_epoch = 1;
    let ResponseKind::Fetch(r) = client.call(ApiKey::Fetch, 12, RequestKind::Fetch(request))?
    else {
        bail!("fetch")
    };
    assert_eq!(r.error_code, ErrorCode::FetchSessionIdNotFound.code());
    Ok(())
}

/// kill -9 after acks=all acknowledgements loses nothing acknowledged; topic settings survive too.
#[test]
fn kill_nine_keeps_acknowledged_records() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(
        client.create_topic("crash", 1, &[("max.message.bytes", "2000")])?,
        0
    );
    for i in 0..50 {
        let value = format!("acked-{i}");
        assert_eq!(
            client.produce("crash", 0, batch(&[value.as_bytes()], -1, -1, -1), -1)?,
            (0, i)
        );
    }
    broker.kill()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    let (error, high_watermark, records) = client.fetch("crash", 0, 0, 0)?;
    assert_eq!((error, high_watermark), (0, 50));
    assert_eq!(count_records(records)?, 50);
    let big = vec![0u8; 3000];
    assert_eq!(
        client
            .produce("crash", 0, batch(&[&big], -1, -1, -1), -1)?
            .0,
        ErrorCode::MessageTooLarge.code()
    );
    Ok(())
}

/// SIGTERM during a 30 s long poll: the poll is answered early, then the broker exits 0.
#[test]
fn shutdown_answers_in_flight_long_poll() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("draining", 1, &[])?, 0);
    let id = client.send(
        ApiKey::Fetch,
        12,
        &RequestKind::Fetch(Client::fetch_request("draining", 0, 0, 30_000, 1)),
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let stopper = std::thread::spawn(move || broker.stop());
    let ResponseKind::Fetch(response) = client.receive(ApiKey::Fetch, 12, id)? else {
        bail!("not a fetch response")
    };
    assert_eq!(response.responses[0].partitions[0].error_code, 0);
    assert_eq!(stopper.join().expect("stopper thread")?, 0);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "shutdown waited for the poll to time out"
    );
    Ok(())
}
