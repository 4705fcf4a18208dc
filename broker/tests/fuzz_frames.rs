//! Fuzz-style: random and mutated frames thrown at a running broker must
//! neither crash it nor stop it serving a well-behaved client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Result;
use common::{batch, record_values, Client, Skiffd};
use skiff_protocol::api::{self, messages, ApiKey, RequestKind, StrBytes};
use skiff_protocol::frame::RequestHeader;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid request frames of several APIs, to be mutated.
fn seeds() -> Vec<Vec<u8>> {
    let header = |key: ApiKey, version| RequestHeader {
        api_key: key as i16,
        api_version: version,
        correlation_id: 1,
        client_id: Some("fuzz".to_string()),
    };
    let mut produce = messages::ProduceRequest::default();
    produce.acks = 1;
    produce.timeout_ms = 1000;
    let mut data = messages::produce_request::PartitionProduceData::default();
    data.records = Some(batch(&[b"fuzz-value", b"another"], 5, 0, 0));
    let mut topic = messages::produce_request::TopicProduceData::default();
    topic.name = messages::TopicName(StrBytes::from_string("fuzzed".to_string()));
    topic.partition_data = vec![data];
    produce.topic_data = vec![topic];
    let requests = [
        (
            header(ApiKey::ApiVersions, 3),
            RequestKind::ApiVersions(Default::default()),
        ),
        (
            header(ApiKey::Metadata, 9),
            RequestKind::Metadata(Default::default()),
        ),
        (
            header(ApiKey::Produce, 9),
            RequestKind::Produce(produce.clone()),
        ),
        (header(ApiKey::Produce, 3), RequestKind::Produce(produce)),
        (
            header(ApiKey::Fetch, 12),
            RequestKind::Fetch(Client::fetch_request("fuzzed", 0, 0, 10, 1)),
        ),
        (
            header(ApiKey::Fetch, 4),
            RequestKind::Fetch(Client::fetch_request("fuzzed", 0, 0, 10, 1)),
        ),
    ];
    requests
        .iter()
        .map(|(h, r)| api::encode_request(h, r).unwrap().to_contiguous().to_vec())
        .collect()
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(4) {
        // Random bytes behind an honest size prefix.
        0 => {
            let len = rng.below(300);
            let mut frame = (len as i32).to_be_bytes().to_vec();
            frame.extend((0..len).map(|_| rng.next() as u8));
            frame
        }
        // A valid frame with a few bytes flipped after the size prefix.
        1 | 2 => {
            let mut frame = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = 4 + rng.below(frame.len() - 4);
                frame[at] = rng.next() as u8;
            }
            frame
        }
        // A valid frame cut short, with its size prefix patched to match.
        _ => {
            let mut frame = seeds[rng.below(seeds.len())].clone();
            let keep = 4 + rng.below(frame.len() - 4);
            frame.truncate(keep);
            let size = (keep - 4) as i32;
            frame[0..4].copy_from_slice(&size.to_be_bytes());
            frame
        }
    }
}

/// Hundreds of hostile frames over many connections; then a normal client produces and fetches.
#[test]
fn random_and_mutated_frames_do_not_break_the_broker() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Skiffd::start(dir.path(), &["--frame-bytes-max", "65536"])?;
    let seeds = seeds();
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    for _connection in 0..150 {
        let mut stream = TcpStream::connect(broker.tcp)?;
        stream.set_read_timeout(Some(Duration::from_millis(50)))?;
        for _ in 0..20 {
            let frame = mutate(&mut rng, &seeds);
            if stream.write_all(&frame).is_err() {
                break; // the broker closed this connection, as it may
            }
        }
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
    assert!(broker.is_running(), "broker survived");
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("after-fuzz", 1, &[])?, 0);
    assert_eq!(
        client.produce("after-fuzz", 0, batch(&[b"still", b"here"], -1, -1, -1), -1)?,
        (0, 0)
    );
    let (error, _, records) = client.fetch("after-fuzz", 0, 0, 0)?;
    assert_eq!(error, 0);
    assert_eq!(record_values(records)?, vec![&b"still"[..], b"here"]);
    // Whatever the mutated produces managed to store is whole, valid batches.
    if let Ok((0, _, records)) = client.fetch("fuzzed", 0, 0, 0) {
        let mut rest = records;
        while !rest.is_empty() {
            let Some(total) = skiff_protocol::batch::BatchHeader::peek_total_bytes(&rest)? else {
                break;
            };
            let view = skiff_protocol::batch::RecordBatchView::new(rest.split_to(total))?;
            view.validate()?;
        }
    }
    Ok(())
}
