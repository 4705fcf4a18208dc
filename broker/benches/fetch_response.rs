//! What the copy-free fetch path saves: encoding a Fetch response whose
//! records are referenced (as skiffd does, then one vectored write) against
//! joining the same frame into one buffer (what a copying encoder costs).
//!
//! `cargo bench -p skiff-broker --bench fetch_response`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use skiff_protocol::api::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use skiff_protocol::api::messages::FetchResponse;
use skiff_protocol::api::{encode_response, ApiKey, ResponseKind};

fn response(partitions: usize, records_bytes: usize) -> ResponseKind {
    let mut topic = FetchableTopicResponse::default();
    topic.partitions = (0..partitions)
        .map(|i| {
            let mut partition = PartitionData::default();
            partition.partition_index = i as i32;
            partition.records = Some(Bytes::from(vec![1u8; records_bytes]));
            partition
        })
        .collect();
    let mut response = FetchResponse::default();
    response.responses = vec![topic];
    ResponseKind::Fetch(response)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_response_encode");
    for (partitions, records_bytes) in [(1, 1 << 20), (8, 1 << 20), (64, 16 << 10)] {
        let response = response(partitions, records_bytes);
        let id = format!("{partitions}x{}KiB", records_bytes >> 10);
        group.throughput(Throughput::Bytes((partitions * records_bytes) as u64));
        group.bench_with_input(
            BenchmarkId::new("referenced", &id),
            &response,
            |b, response| {
                b.iter(|| {
                    encode_response(1, ApiKey::Fetch, 12, response).map(|frame| frame.chunks.len())
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("copied", &id), &response, |b, response| {
            b.iter(|| {
                encode_response(1, ApiKey::Fetch, 12, response)
                    .map(|frame| frame.to_contiguous().len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
