//! RecordBatch v2: builder → view round trips, zero-copy reads, and a typed
//! error (never a panic) for every kind of malformed batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use proptest::prelude::*;
use skiff_protocol::batch::{
    set_base_offset, set_log_append_time, set_partition_leader_epoch, BatchReader, Compression,
    Header, RecordBatchBuilder, RecordBatchBuilderConfig, RecordBatchView, TimestampType,
    CRC_COVERED_FROM, CRC_OFFSET,
};
use skiff_protocol::DecodeError;

type TestHeader = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Clone)]
struct TestRecord {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<TestHeader>,
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

fn arb_record() -> impl Strategy<Value = TestRecord> {
    (
        -1_000_000i64..2_000_000_000_000,
        prop::option::of(arb_bytes()),
        prop::option::of(arb_bytes()),
        prop::collection::vec((arb_bytes(), prop::option::of(arb_bytes())), 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| TestRecord {
            timestamp,
            key,
            value,
            headers,
        })
}

fn arb_config() -> impl Strategy<Value = RecordBatchBuilderConfig> {
    (
        prop::sample::select(Compression::ALL.to_vec()),
        0i64..i64::MAX / 2,
        any::<i32>(),
        any::<i64>(),
        any::<i16>(),
        0i32..i32::MAX,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                compression,
                base_offset,
                epoch,
                producer_id,
                producer_epoch,
                base_sequence,
                transactional,
                control,
            )| {
                RecordBatchBuilderConfig {
                    compression,
                    base_offset,
                    partition_leader_epoch: epoch,
                    producer_id,
                    producer_epoch,
                    base_sequence,
                    transactional,
                    control,
                    timestamp_type: TimestampType::CreateTime,
                }
            },
        )
}

fn build(config: RecordBatchBuilderConfig, records: &[TestRecord]) -> Bytes {
    let mut builder = RecordBatchBuilder::new(config);
    for r in records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        builder.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    builder.build().unwrap()
}

/// A small valid uncompressed batch for the malformed-input tests.
fn sample_batch() -> Vec<u8> {
    let records = vec![
        TestRecord {
            timestamp: 10,
            key: Some(b"key".to_vec()),
            value: Some(b"value".to_vec()),
            headers: vec![(b"h".to_vec(), None)],
        },
        TestRecord {
            timestamp: 12,
            key: None,
            value: Some(b"v2".to_vec()),
            headers: vec![],
        },
    ];
    build(RecordBatchBuilderConfig::default(), &records).to_vec()
}

/// Recomputes the CRC after a test corrupted a covered field on purpose, so
/// that the test reaches the check it is about.
fn fix_crc(buf: &mut [u8]) {
    let crc = skiff_protocol::batch::crc32c(&buf[CRC_COVERED_FROM..]);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Decodes every record of a buffer that claims to be one batch; the first error wins.
/// `records` as the records block of a batch whose header (length and
/// CRC included) is valid.
fn behind_valid_header(records: &[u8]) -> Bytes {
    let mut batch = sample_batch()[..61].to_vec();
    batch.extend_from_slice(records);
    let total = batch.len() as i32 - 12;
    batch[8..12].copy_from_slice(&total.to_be_bytes());
    fix_crc(&mut batch);
    Bytes::from(batch)
}

fn decode_all(buf: Vec<u8>) -> Result<usize, DecodeError> {
    let view = RecordBatchView::new(Bytes::from(buf))?;
    view.validate()?;
    view.validate_records()?;
    Ok(view.records()?.count())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever the builder writes, the view reads back: every header field,
    /// every record field, under every compression codec; and the CRC holds.
    #[test]
    fn builder_to_view_round_trip(config in arb_config(), records in prop::collection::vec(arb_record(), 1..20)) {
        let bytes = build(config, &records);
        let view = RecordBatchView::new(bytes.clone()).unwrap();
        view.validate().unwrap();
        view.validate_records().unwrap();
        let h = *view.header();
        prop_assert_eq!(h.base_offset, config.base_offset);
        prop_assert_eq!(h.total_bytes(), bytes.len());
        prop_assert_eq!(h.partition_leader_epoch, config.partition_leader_epoch);
        prop_assert_eq!(h.magic, 2);
        prop_assert_eq!(h.attributes.compression().unwrap(), config.compression);
        prop_assert_eq!(h.attributes.timestamp_type(), TimestampType::CreateTime);
        prop_assert_eq!(h.attributes.is_transactional(), config.transactional);
        prop_assert_eq!(h.attributes.is_control(), config.control);
        prop_assert_eq!(h.last_offset_delta, records.len() as i32 - 1);
        prop_assert_eq!(h.base_timestamp, records[0].timestamp);
        prop_assert_eq!(h.max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap());
        prop_assert_eq!(h.producer_id, config.producer_id);
        prop_assert_eq!(h.producer_epoch, config.producer_epoch);
        prop_assert_eq!(h.base_sequence, config.base_sequence);
        prop_assert_eq!(h.records_count, records.len() as i32);
        let mut count = 0;
        for (i, (read, wrote)) in view.records().unwrap().zip(&records).enumerate() {
            let read = read.unwrap();
            prop_assert_eq!(read.offset, config.base_offset + i as i64);
            prop_assert_eq!(read.offset_delta, i as i32);
            prop_assert_eq!(read.timestamp, wrote.timestamp);
            prop_assert_eq!(read.key.as_deref(), wrote.key.as_deref());
            prop_assert_eq!(read.value.as_deref(), wrote.value.as_deref());
            let headers: Vec<Header> = read.headers.map(Result::unwrap).collect();
            prop_assert_eq!(headers.len(), wrote.headers.len());
            for (got, want) in headers.iter().zip(&wrote.headers) {
                prop_assert_eq!(&got.key[..], &want.0[..]);
                prop_assert_eq!(got.value.as_deref(), want.1.as_deref());
            }
            count += 1;
        }
        prop_assert_eq!(count, records.len());
    }

    /// `try_append` takes a record exactly when `record_bytes` says it fits
    /// under the limit (or the batch is empty), and a batch filled by it is
    /// the batch `append` builds from the records it took.
    #[test]
    fn try_append_takes_what_fits_as_append_would(
        config in arb_config(),
        records in prop::collection::vec(arb_record(), 1..20),
        limit_bytes in 0usize..400,
    ) {
        let mut trying = RecordBatchBuilder::new(config);
        let mut taken = Vec::new();
        for r in &records {
            let headers: Vec<(&[u8], Option<&[u8]>)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            let (key, value) = (r.key.as_deref(), r.value.as_deref());
            let fits = trying.is_empty()
                || trying.estimated_bytes() + trying.record_bytes(r.timestamp, key, value, &headers)
                    <= limit_bytes;
            let before = trying.estimated_bytes();
            prop_assert_eq!(trying.try_append(limit_bytes, r.timestamp, key, value, &headers), fits);
            if fits {
                taken.push(r.clone());
            } else {
                prop_assert_eq!(trying.estimated_bytes(), before);
            }
        }
        prop_assert_eq!(trying.build().unwrap(), build(config, &taken));
    }

    /// Batches of many kilobytes whose records are checksummed in steps as
    /// they are appended (in a fresh or a reused buffer, compressed or not,
    /// prefetched ahead of appends) carry the CRC a single pass over the
    /// finished batch computes.
    #[test]
    fn large_batches_carry_the_one_pass_crc(
        config in arb_config(),
        values in prop::collection::vec(0usize..3_000, 1..40),
        reused in any::<bool>(),
    ) {
        let mut builder = match reused {
            true => RecordBatchBuilder::with_buffer(config, vec![0xA5; 50_000]),
            false => RecordBatchBuilder::new(config),
        };
        builder.checksum_while_appending();
        for (i, len) in values.iter().enumerate() {
            let value = vec![i as u8; *len];
            // A prefetch ahead of an append (of any reach) changes nothing.
            builder.prefetch_append(if i % 2 == 0 { *len } else { usize::MAX });
            builder.append(i as i64, Some(b"k"), Some(&value), &[]);
        }
        let bytes = builder.build().unwrap();
        let crc = u32::from_be_bytes(bytes[CRC_OFFSET..CRC_OFFSET + 4].try_into().unwrap());
        prop_assert_eq!(crc, skiff_protocol::batch::crc32c(&bytes[CRC_COVERED_FROM..]));
        let view = RecordBatchView::new(bytes).unwrap();
        view.validate().unwrap();
        prop_assert_eq!(view.records().unwrap().count(), values.len());
    }

    /// Any single-byte corruption of a batch is either caught (typed error) or,
    /// for the bytes the CRC does not cover, changes only those fields.
    #[test]
    fn corrupting_any_byte_never_panics(at in 0usize..200, xor in 1u8..=255) {
        let mut buf = sample_batch();
        let at = at % buf.len();
        buf[at] ^= xor;
        let result = decode_all(buf);
        if at >= CRC_OFFSET {
            prop_assert!(result.is_err(), "corruption at byte {} went unnoticed", at);
        }
    }

    /// A record's shape (what validation walks) and the record itself agree
    /// on every record and on the first error, for built batches and for
    /// arbitrary record bytes behind a valid header.
    #[test]
    fn shapes_agree_with_records(
        config in arb_config(),
        records in prop::collection::vec(arb_record(), 1..8),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        for batch in [build(config, &records), behind_valid_header(&bytes)] {
            let Ok(view) = RecordBatchView::new(batch) else { continue };
            let (Ok(full), Ok(mut shapes)) = (view.records(), view.records()) else { continue };
            for record in full {
                let shape = shapes.next_shape();
                match (record, shape) {
                    (Ok(record), Some(Ok(shape))) => {
                        prop_assert_eq!(record.offset_delta, shape.offset_delta);
                        prop_assert_eq!(record.timestamp_delta, shape.timestamp_delta);
                        prop_assert_eq!(record.key.map(|k| k.len()), shape.key.map(|k| k.len()));
                        prop_assert_eq!(record.value.map(|v| v.len()), shape.value.map(|v| v.len()));
                        prop_assert_eq!(record.headers.len(), shape.header_count as usize);
                    }
                    (Err(a), Some(Err(b))) => prop_assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => prop_assert!(false, "record {:?} but shape {:?}", a, b),
                }
            }
            prop_assert!(shapes.next_shape().is_none());
        }
    }

    /// Borrowed records (`RecordIter::borrowed`) are the owned ones, part
    /// for part and header for header, and stop at the same first error, for
    /// built batches in every codec and for arbitrary record bytes.
    #[test]
    fn borrowed_records_agree_with_owned(
        config in arb_config(),
        records in prop::collection::vec(arb_record(), 1..8),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        for batch in [build(config, &records), behind_valid_header(&bytes)] {
            let Ok(view) = RecordBatchView::new(batch) else { continue };
            let Ok(owned) = view.records() else { continue };
            let borrowing = owned.clone();
            let mut borrowed = borrowing.borrowed();
            for record in owned {
                match (record, borrowed.next()) {
                    (Ok(record), Some(Ok(view))) => {
                        prop_assert_eq!((record.offset, record.timestamp), (view.offset, view.timestamp));
                        prop_assert_eq!(record.key.as_deref(), view.key);
                        prop_assert_eq!(record.value.as_deref(), view.value);
                        let headers: Vec<_> = record.headers.map(|h| h.map(|h| (h.key.to_vec(), h.value.map(|v| v.to_vec())))).collect::<Result<_, _>>().map_err(|e| TestCaseError::fail(e.to_string()))?;
                        let viewed: Vec<_> = view.headers.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
                        prop_assert_eq!(headers, viewed);
                    }
                    (Err(a), Some(Err(b))) => prop_assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => prop_assert!(false, "record {:?} but borrowed {:?}", a, b),
                }
            }
            prop_assert!(borrowed.next().is_none());
        }
    }

    /// Arbitrary bytes never panic the view, the validator or the iterators.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut with_header = sample_batch()[..61].to_vec();
        with_header.extend_from_slice(&bytes);
        let total = with_header.len() as i32 - 12;
        with_header[8..12].copy_from_slice(&total.to_be_bytes());
        fix_crc(&mut with_header);
        let _ = decode_all(with_header);
        let _ = decode_all(bytes.clone());
        for view in BatchReader::new(Bytes::from(bytes)) {
            let Ok(view) = view else { break };
            let _ = view.validate_records();
        }
    }
}

/// Key and value slices of an uncompressed batch point into the batch's own
/// buffer: reading records copies no record data.
#[test]
fn records_are_zero_copy_slices_of_the_batch() {
    let bytes = Bytes::from(sample_batch());
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    let view = RecordBatchView::new(bytes.clone()).unwrap();
    let mut slices = 0;
    for record in view.records().unwrap() {
        let record = record.unwrap();
        for slice in [record.key, record.value].into_iter().flatten() {
            assert!(
                range.contains(&(slice.as_ptr() as usize)),
                "record bytes were copied"
            );
            slices += 1;
        }
        for header in record.headers {
            let header = header.unwrap();
            assert!(
                range.contains(&(header.key.as_ptr() as usize)),
                "header bytes were copied"
            );
        }
    }
    assert_eq!(slices, 3);
    assert_eq!(view.raw_records().as_ptr(), bytes[61..].as_ptr());
}

/// Every truncation of a batch is UnexpectedEof (or, under 12 bytes, not yet a batch).
#[test]
fn truncated_batches_are_unexpected_eof() {
    let full = sample_batch();
    for cut in 0..full.len() {
        let result = RecordBatchView::new(Bytes::copy_from_slice(&full[..cut]));
        assert!(
            matches!(result, Err(DecodeError::UnexpectedEof { .. })),
            "cut at {cut}: {result:?}"
        );
        let mut reader = BatchReader::new(Bytes::copy_from_slice(&full[..cut]));
        assert!(reader.next().is_none(), "a partial batch is not yielded");
        assert_eq!(reader.partial_tail_bytes(), cut);
    }
}

/// A batch_length that disagrees with the buffer, or is below the header size
/// or above the cap, is InvalidLength.
#[test]
fn wrong_batch_lengths_are_errors() {
    let full = sample_batch();
    let mut longer = full.clone();
    longer.push(0);
    assert!(matches!(
        RecordBatchView::new(Bytes::from(longer)),
        Err(DecodeError::InvalidLength {
            field: "batch_length",
            ..
        })
    ));
    for bad in [-1i32, 0, 48, i32::MAX] {
        let mut buf = full.clone();
        buf[8..12].copy_from_slice(&bad.to_be_bytes());
        assert!(
            matches!(
                RecordBatchView::new(Bytes::from(buf)),
                Err(DecodeError::InvalidLength {
                    field: "batch_length",
                    ..
                })
            ),
            "batch_length {bad}"
        );
    }
}

/// A flipped bit in the covered region is a CrcMismatch naming both CRCs.
#[test]
fn bad_crc_is_crc_mismatch() {
    let mut buf = sample_batch();
    let last = buf.len() - 1;
    buf[last] ^= 0x01;
    let view = RecordBatchView::new(Bytes::from(buf)).unwrap();
    let error = view.validate().unwrap_err();
    assert!(matches!(error, DecodeError::CrcMismatch { expected, actual } if expected != actual));
}

/// Magic bytes other than 2 are UnsupportedMagic.
#[test]
fn bad_magic_is_unsupported_magic() {
    for magic in [0u8, 1, 3, 0xff] {
        let mut buf = sample_batch();
        buf[16] = magic;
        assert_eq!(
            RecordBatchView::new(Bytes::from(buf)).unwrap_err(),
            DecodeError::UnsupportedMagic { magic: magic as i8 }
        );
    }
}

/// Negative counts (records, last offset delta, record length, header count)
/// are InvalidLength, found where they sit.
#[test]
fn negative_counts_are_invalid_lengths() {
    let mut buf = sample_batch();
    buf[57..61].copy_from_slice(&(-1i32).to_be_bytes());
    fix_crc(&mut buf);
    assert!(matches!(
        decode_all(buf),
        Err(DecodeError::InvalidLength {
            field: "records_count",
            ..
        })
    ));

    let mut buf = sample_batch();
    buf[23..27].copy_from_slice(&(-5i32).to_be_bytes());
    fix_crc(&mut buf);
    assert!(matches!(
        decode_all(buf),
        Err(DecodeError::InvalidLength {
            field: "last_offset_delta",
            ..
        })
    ));

    // First record's length varint sits at byte 61; zig-zag 0x01 is -1.
    let mut buf = sample_batch();
    buf[61] = 0x01;
    fix_crc(&mut buf);
    assert!(matches!(
        decode_all(buf),
        Err(DecodeError::InvalidLength {
            field: "record_length",
            ..
        })
    ));

    // Second record (no key, value "v2", no headers): its header count is the last byte.
    let mut buf = sample_batch();
    let last = buf.len() - 1;
    buf[last] = 0x01; // -1
    fix_crc(&mut buf);
    assert!(matches!(
        decode_all(buf),
        Err(DecodeError::InvalidLength {
            field: "header_count",
            ..
        })
    ));
}

/// A record length varint that never ends is VarintOverflow.
#[test]
fn varint_overflow_in_a_record_is_an_error() {
    let mut buf = sample_batch();
    buf.truncate(61);
    buf.extend_from_slice(&[0xff; 12]);
    let total = buf.len() as i32 - 12;
    buf[8..12].copy_from_slice(&total.to_be_bytes());
    fix_crc(&mut buf);
    assert!(matches!(
        decode_all(buf),
        Err(DecodeError::VarintOverflow {
            offset: 0,
            max_bytes: 5
        })
    ));
}

/// A records_count that disagrees with the records present is an error both ways.
#[test]
fn records_count_mismatch_is_an_error() {
    let mut fewer = sample_batch();
    fewer[57..61].copy_from_slice(&1i32.to_be_bytes());
    fix_crc(&mut fewer);
    assert!(matches!(
        decode_all(fewer),
        Err(DecodeError::Malformed {
            what: "records block",
            ..
        })
    ));
    let mut more = sample_batch();
    more[57..61].copy_from_slice(&3i32.to_be_bytes());
    fix_crc(&mut more);
    assert!(matches!(
        decode_all(more),
        Err(DecodeError::UnexpectedEof { .. })
    ));
}

/// Unknown compression ids (5-7) are UnknownCompression, on validate and on read.
#[test]
fn unknown_compression_is_an_error() {
    let mut buf = sample_batch();
    buf[22] |= 0x07;
    fix_crc(&mut buf);
    let view = RecordBatchView::new(Bytes::from(buf)).unwrap();
    assert_eq!(
        view.validate().unwrap_err(),
        DecodeError::UnknownCompression { codec: 7 }
    );
    assert!(matches!(
        view.records(),
        Err(DecodeError::UnknownCompression { codec: 7 })
    ));
}

/// A BatchReader walks concatenated batches, stops before a partial tail and
/// reports its size; base offsets and epochs are rewritten without breaking the CRC.
#[test]
fn reader_walks_concatenated_batches() {
    let mut buf = Vec::new();
    for base_offset in [0i64, 2, 4] {
        let mut batch = sample_batch();
        set_base_offset(&mut batch, base_offset);
        set_partition_leader_epoch(&mut batch, 9);
        buf.extend_from_slice(&batch);
    }
    buf.extend_from_slice(&sample_batch()[..30]);
    let mut reader = BatchReader::new(Bytes::from(buf));
    let offsets: Vec<i64> = reader
        .by_ref()
        .map(|v| {
            let v = v.unwrap();
            v.validate().unwrap();
            assert_eq!(v.header().partition_leader_epoch, 9);
            v.header().base_offset
        })
        .collect();
    assert_eq!(offsets, vec![0, 2, 4]);
    assert_eq!(reader.partial_tail_bytes(), 30);
}

/// After a broker stamps LogAppendTime, the CRC still holds, every record
/// reports the append time (as Kafka's DefaultRecordBatch does), and a
/// following batch in the same buffer is untouched.
#[test]
fn log_append_time_applies_to_every_record() {
    let first = sample_batch();
    let mut buf = first.clone();
    buf.extend_from_slice(&sample_batch());
    set_log_append_time(&mut buf, 1_700_000_000_000);
    let mut views = BatchReader::new(Bytes::from(buf));
    let stamped = views.next().unwrap().unwrap();
    stamped.validate().unwrap();
    assert_eq!(
        stamped.header().attributes.timestamp_type(),
        TimestampType::LogAppendTime
    );
    assert_eq!(stamped.header().max_timestamp, 1_700_000_000_000);
    assert_eq!(stamped.log_append_time(), Some(1_700_000_000_000));
    for record in stamped.records().unwrap() {
        assert_eq!(record.unwrap().timestamp, 1_700_000_000_000);
    }
    let untouched = views.next().unwrap().unwrap();
    untouched.validate().unwrap();
    assert_eq!(untouched.bytes()[..], first[..]);
    let times: Vec<i64> = untouched
        .records()
        .unwrap()
        .map(|r| r.unwrap().timestamp)
        .collect();
    assert_eq!(times, vec![10, 12]);
}

/// A compressed batch whose records inflate past the caller's limit is
/// DecompressedTooLarge; the same batch reads fine under a larger limit.
#[test]
fn decompression_limit_is_enforced_per_call() {
    let records: Vec<TestRecord> = (0..100)
        .map(|i| TestRecord {
            timestamp: i,
            key: None,
            value: Some(vec![0u8; 1000]),
            headers: vec![],
        })
        .collect();
    for codec in Compression::ALL.into_iter().skip(1) {
        let config = RecordBatchBuilderConfig {
            compression: codec,
            ..Default::default()
        };
        let view = RecordBatchView::new(build(config, &records)).unwrap();
        assert_eq!(
            view.records_with_limit(50_000).err(),
            Some(DecodeError::DecompressedTooLarge { max: 50_000 }),
            "{codec:?}"
        );
        assert_eq!(
            view.records_with_limit(200_000).unwrap().count(),
            100,
            "{codec:?}"
        );
    }
}
