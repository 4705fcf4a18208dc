//! Micro-benchmarks of the skiff-protocol hot paths: validating, building and
//! iterating RecordBatch v2, and murmur2 partitioning.
//!
//! Run: `cargo bench -p skiff-bench --bench protocol` (figures in BENCHMARKS.md).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use skiff_protocol::batch::{
    BatchReader, RecordBatchBuilder, RecordBatchBuilderConfig, RecordBatchView,
};
use skiff_protocol::partition::murmur2;

const RECORDS: usize = 1000;
const VALUE_BYTES: usize = 1024;
const KEY_BYTES: usize = 16;

fn value(i: usize) -> Vec<u8> {
    (0..VALUE_BYTES).map(|j| (i * 31 + j) as u8).collect()
}

/// One uncompressed batch of `records` records with 16-byte keys and 1 KiB values.
fn batch(records: usize) -> Bytes {
    let mut builder = RecordBatchBuilder::with_capacity(
        RecordBatchBuilderConfig::default(),
        records * (VALUE_BYTES + 32),
    );
    for i in 0..records {
        let key = format!("key-{i:012}");
        builder.append(
            1_700_000_000_000 + i as i64,
            Some(key.as_bytes()),
            Some(&value(i)),
            &[],
        );
    }
    match builder.build() {
        Ok(bytes) => bytes,
        Err(error) => panic!("building an uncompressed batch cannot fail: {error}"),
    }
}

fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    // One batch of 1000 x 1 KiB records (~1.03 MiB): header checks + CRC-32C.
    let one = batch(RECORDS);
    group.throughput(Throughput::Bytes(one.len() as u64));
    group.bench_function("one_1MiB_batch", |b| {
        b.iter(|| {
            let view = RecordBatchView::new(black_box(one.clone())).map_err(|e| e.to_string());
            view.and_then(|v| v.validate().map_err(|e| e.to_string()))
        })
    });
    // 1 MiB made of 64 batches of 16 records each, walked with BatchReader.
    let mut many = Vec::new();
    while many.len() < 1024 * 1024 {
        many.extend_from_slice(&batch(16));
    }
    let many = Bytes::from(many);
    group.throughput(Throughput::Bytes(many.len() as u64));
    group.bench_function("1MiB_of_16_record_batches", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for view in BatchReader::new(black_box(many.clone())) {
                if view.and_then(|v| v.validate()).is_ok() {
                    ok += 1;
                }
            }
            ok
        })
    });
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    let keys: Vec<String> = (0..RECORDS).map(|i| format!("key-{i:012}")).collect();
    let values: Vec<Vec<u8>> = (0..RECORDS).map(value).collect();
    group.throughput(Throughput::Bytes((RECORDS * VALUE_BYTES) as u64));
    group.bench_function("1000x1KiB_uncompressed", |b| {
        b.iter(|| {
            let mut builder = RecordBatchBuilder::with_capacity(
                RecordBatchBuilderConfig::default(),
                RECORDS * (VALUE_BYTES + 32),
            );
            for (i, (key, value)) in keys.iter().zip(&values).enumerate() {
                builder.append(
                    1_700_000_000_000 + i as i64,
                    Some(key.as_bytes()),
                    Some(value),
                    &[],
                );
            }
            builder
                .build()
                .map(|bytes| bytes.len())
                .map_err(|e| e.to_string())
        })
    });
    group.finish();
}

fn iterate(c: &mut Criterion) {
    let mut group = c.benchmark_group("iterate");
    let one = batch(RECORDS);
    let view = match RecordBatchView::new(one.clone()) {
        Ok(view) => view,
        Err(error) => panic!("benchmark batch is valid: {error}"),
    };
    group.throughput(Throughput::Bytes(one.len() as u64));
    group.bench_function("1000_records", |b| {
        b.iter_batched(
            || view.clone(),
            |view| {
                let mut value_bytes = 0usize;
                if let Ok(records) = view.records() {
                    for record in records.flatten() {
                        value_bytes += record.value.map_or(0, |v| v.len());
                    }
                }
                value_bytes
            },
            BatchSize::SmallInput,
        )
    });
    // What `Consumer::poll_with` walks: the same records, borrowed.
    group.bench_function("1000_records_borrowed", |b| {
        b.iter_batched(
            || view.clone(),
            |view| {
                let mut value_bytes = 0usize;
                if let Ok(records) = view.records() {
                    for record in records.borrowed().flatten() {
                        value_bytes += record.value.map_or(0, <[u8]>::len);
                    }
                }
                value_bytes
            },
            BatchSize::SmallInput,
        )
    });
    // What a broker does on produce after the CRC: walk every record's
    // structure, counting keyless records.
    group.bench_function("validate_1000_records", |b| {
        b.iter_batched(
            || view.clone(),
            |view| view.validate_records(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn partition(c: &mut Criterion) {
    let key = *b"user-0000012345a";
    const _: () = assert!(KEY_BYTES == 16);
    c.bench_function("murmur2/16_byte_key", |b| {
        b.iter(|| murmur2(black_box(&key)))
    });
}

criterion_group!(benches, validate, build, iterate, partition);
criterion_main!(benches);
