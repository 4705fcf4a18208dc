//! Fetch requests and the decoding of their answers into records.
//!
//! Records are handed out as slices of the response buffer (or of a batch's
//! decompressed block): no per-record copy or allocation.

use bytes::Bytes;
use skiff_protocol::api::messages::fetch_request::{FetchPartition, FetchTopic};
use skiff_protocol::api::messages::{FetchRequest, TopicName};
use skiff_protocol::api::StrBytes;
use std::sync::Arc;

use skiff_protocol::batch::{BatchReader, HeaderIter, HeaderRefs, RecordIter, TimestampType};

use super::{ConsumerConfig, TopicPartition};
use crate::error::Error;

/// One consumed record. Key, value and headers share the fetched buffer.
#[derive(Debug, Clone)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp (ms since the epoch).
    pub timestamp: i64,
    /// Whether the timestamp is the producer's create time or the broker's append time.
    pub timestamp_type: TimestampType,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// The headers, decoded lazily.
    pub headers: HeaderIter,
}

/// A record shown by [`Consumer::poll_with`](super::Consumer::poll_with):
/// borrowed from the fetched data, valid during the call that shows it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp (ms since the epoch).
    pub timestamp: i64,
    /// Whether the timestamp is the producer's create time or the broker's append time.
    pub timestamp_type: TimestampType,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// The headers, as `(key, value)` pairs.
    pub headers: HeaderRefs<'a>,
}

/// Builds a full (session-less) Fetch request for these positions.
pub(crate) fn fetch_request(
    config: &ConsumerConfig,
    positions: &[(TopicPartition, i64)],
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (tp, offset) in positions {
        let partition = FetchPartition::default()
            .with_partition(tp.partition)
            .with_fetch_offset(*offset)
            .with_current_leader_epoch(-1)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(config.max_partition_fetch_bytes);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == tp.topic) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(i32::try_from(config.fetch_max_wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(config.fetch_min_bytes)
        .with_max_bytes(config.fetch_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Decoding stopped at a bad batch: the records before it were decoded,
/// and the next fetch starts at `next`, the bad batch.
#[derive(Debug)]
pub(crate) struct PartialDecode {
    /// Where the bad batch starts (records before it were delivered).
    pub next: i64,
    /// What is wrong with it.
    pub error: Error,
}

/// Decodes the records at or after `position` from a partition's record
/// set, appending them to `out`. Returns the next position: one past the
/// last offset of the last whole batch (control batches and compacted-away
/// offsets are skipped over too), or `position` if there was none. A
/// corrupt batch stops decoding: the whole batches before it stay in `out`,
/// none of its records do, and `PartialDecode::next` is where it starts.
pub(crate) fn decode_records(
    topic: &Arc<str>,
    partition: i32,
    records: Bytes,
    position: i64,
    check_crcs: bool,
    out: &mut Vec<ConsumerRecord>,
) -> Result<i64, PartialDecode> {
    out.reserve(declared_records(&records));
    walk_batches(
        topic,
        partition,
        records,
        position,
        check_crcs,
        |mut batch| {
            let delivered = out.len();
            let decoded = batch.records.try_for_each(|record| {
                let record = record?;
                if record.offset >= batch.from {
                    out.push(ConsumerRecord {
                        topic: Arc::clone(topic),
                        partition,
                        offset: record.offset,
                        timestamp: record.timestamp,
                        timestamp_type: batch.timestamp_type,
                        key: record.key,
                        value: record.value,
                        headers: record.headers,
                    });
                }
                Ok(())
            });
            if decoded.is_err() {
                out.truncate(delivered);
            }
            decoded
        },
    )
}

/// Shows the records at or after `position` of a partition's record set to
/// `visit`, borrowed from it, as [`decode_records`] would decode them (the
/// same next position and errors; a batch's records are all checked before
/// any is shown). Returns the next position and how many were shown.
pub(crate) fn visit_records(
    topic: &Arc<str>,
    partition: i32,
    records: Bytes,
    position: i64,
    check_crcs: bool,
    visit: &mut impl FnMut(RecordView<'_>),
) -> Result<(i64, usize), PartialDecode> {
    let mut shown = 0;
    let next = walk_batches(topic, partition, records, position, check_crcs, |batch| {
        let mut views = Vec::with_capacity(batch.records_count);
        for record in batch.records.borrowed() {
            let record = record?;
            if record.offset >= batch.from {
                views.push(record);
            }
        }
        shown += views.len();
        for record in views {
            visit(RecordView {
                topic,
                partition,
                offset: record.offset,
                timestamp: record.timestamp,
                timestamp_type: batch.timestamp_type,
                key: record.key,
                value: record.value,
                headers: record.headers,
            });
        }
        Ok(())
    })?;
    Ok((next, shown))
}

/// The records of one data batch, for [`walk_batches`]' caller to deliver.
struct DataBatch {
    records: RecordIter,
    records_count: usize,
    timestamp_type: TimestampType,
    /// Records before this offset were delivered already.
    from: i64,
}

/// Walks the whole batches of a record set from `position`: skips those
/// before it, checks CRCs, steps over control batches, and hands each data
/// batch to `deliver`. Returns the next position, or where the first bad
/// batch starts with its error.
fn walk_batches(
    topic: &Arc<str>,
    partition: i32,
    records: Bytes,
    position: i64,
    check_crcs: bool,
    mut deliver: impl FnMut(DataBatch) -> Result<(), skiff_protocol::DecodeError>,
) -> Result<i64, PartialDecode> {
    let mut next = position;
    let stop = |next: i64, source| PartialDecode {
        next,
        error: Error::Decode {
            address: format!("fetch of {topic}-{partition}"),
            source,
        },
    };
    let total = records.len();
    let mut reader = BatchReader::new(records);
    for batch in reader.by_ref() {
        let batch = batch.map_err(|source| stop(next, source))?;
        let header = *batch.header();
        if header.last_offset() < next {
            continue;
        }
        if check_crcs {
            batch.validate().map_err(|source| stop(next, source))?;
        }
        let attributes = header.attributes;
        if !attributes.is_control() {
            // A LogAppendTime batch's records all carry its max_timestamp
            // (the iterator applies it).
            let records = batch.records().map_err(|source| stop(next, source))?;
            deliver(DataBatch {
                records,
                // What the batch's bytes could hold: a forged count must
                // not reserve much.
                records_count: (header.records_count.max(0) as usize)
                    .min(header.total_bytes() / RECORD_BYTES_MIN),
                timestamp_type: attributes.timestamp_type(),
                from: next,
            })
            .map_err(|source| stop(next, source))?;
        }
        next = header.last_offset() + 1;
    }
    if next == position && reader.partial_tail_bytes() > 0 && reader.partial_tail_bytes() == total {
        return Err(PartialDecode {
            next,
            error: Error::RecordTooLarge {
                record_bytes: total,
                limit: "max_partition_fetch_bytes (a batch did not fit)",
                limit_bytes: total,
            },
        });
    }
    Ok(next)
}

/// The smallest encoded record: length, attributes, timestamp and offset
/// deltas, null key, empty value, no headers (one byte each).
const RECORD_BYTES_MIN: usize = 7;

/// How many records the whole batches of a record set declare, for one
/// allocation up front: pushing record by record reallocated and copied the
/// growing list about log2(n) times. A count a batch's bytes could not hold
/// is cut down to what they could, so a forged header reserves little.
fn declared_records(records: &Bytes) -> usize {
    BatchReader::new(records.clone())
        .map_while(|batch| batch.ok())
        .map(|batch| {
            let header = batch.header();
            (header.records_count.max(0) as usize).min(header.total_bytes() / RECORD_BYTES_MIN)
        })
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use skiff_protocol::batch::{
        set_base_offset, Compression, RecordBatchBuilder, RecordBatchBuilderConfig,
    };

    fn batch(base_offset: i64, values: &[&[u8]], compression: Compression) -> Bytes {
        let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig {
            compression,
            ..Default::default()
        });
        for (i, value) in values.iter().enumerate() {
            builder.append(1000 + i as i64, Some(b"k"), Some(value), &[]);
        }
        let mut bytes = builder.build().unwrap().to_vec();
        set_base_offset(&mut bytes, base_offset);
        Bytes::from(bytes)
    }

    /// Records before the position are skipped, the rest come out in order
    /// with their offsets, and a truncated last batch is left for next time.
    #[test]
    fn decodes_from_position_and_ignores_partial_tail() {
        let topic: std::sync::Arc<str> = "t".into();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&batch(10, &[b"a", b"b", b"c"], Compression::None));
        buf.extend_from_slice(&batch(13, &[b"d", b"e"], Compression::Lz4));
        let third = batch(15, &[b"f"], Compression::None);
        buf.extend_from_slice(&third[..third.len() - 3]);
        let mut out = Vec::new();
        let next = decode_records(&topic, 0, buf.freeze(), 11, true, &mut out).unwrap();
        assert_eq!(next, 15);
        let got: Vec<(i64, &[u8])> = out
            .iter()
            .map(|r| (r.offset, r.value.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![(11, &b"b"[..]), (12, b"c"), (13, b"d"), (14, b"e")]
        );
        assert_eq!(out[0].timestamp, 1001);
    }

    /// The up-front reservation counts whole batches only and cannot be
    /// inflated by a forged record count.
    #[test]
    fn declared_records_are_bounded_by_the_bytes() {
        let first = batch(0, &[b"a", b"b", b"c"], Compression::None);
        let mut forged = batch(3, &[b"d"], Compression::None).to_vec();
        forged[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&first);
        assert_eq!(declared_records(&buf.clone().freeze()), 3);
        buf.extend_from_slice(&forged);
        let bound = forged.len() / RECORD_BYTES_MIN;
        assert_eq!(declared_records(&buf.clone().freeze()), 3 + bound);
        buf.extend_from_slice(&first[..20]);
        assert_eq!(
            declared_records(&buf.freeze()),
            3 + bound,
            "a partial tail adds nothing"
        );
    }

    /// A corrupted batch is an error, not garbage records.
    #[test]
    fn corrupt_batch_is_reported() {
        let topic: std::sync::Arc<str> = "t".into();
        let mut bytes = batch(0, &[b"value"], Compression::None).to_vec();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        let mut out = Vec::new();
        let partial = decode_records(&topic, 0, Bytes::from(bytes), 0, true, &mut out).unwrap_err();
        assert!(
            matches!(partial.error, Error::Decode { .. }),
            "{}",
            partial.error
        );
        assert_eq!(partial.next, 0);
        assert!(out.is_empty());
    }

    /// The records before a corrupt batch are delivered and the next fetch
    /// resumes at the corrupt batch, so nothing is delivered twice.
    #[test]
    fn corrupt_batch_stops_after_the_good_ones() {
        let topic: std::sync::Arc<str> = "t".into();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&batch(0, &[b"a", b"b"], Compression::None));
        let mut bad = batch(2, &[b"c", b"d"], Compression::None).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        buf.extend_from_slice(&bad);
        buf.extend_from_slice(&batch(4, &[b"e"], Compression::None));
        let records = buf.freeze();
        let mut out = Vec::new();
        let partial = decode_records(&topic, 0, records, 0, true, &mut out).unwrap_err();
        assert_eq!(partial.next, 2);
        let offsets: Vec<i64> = out.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 1]);
    }

    /// What `visit_records` shows and returns is what `decode_records`
    /// decodes and returns: from a position inside a batch, across codecs
    /// and a partial tail, at a bad CRC, and at a malformed record found
    /// with CRC checks off (no record of its batch shown).
    #[test]
    fn visiting_agrees_with_decoding() {
        let topic: std::sync::Arc<str> = "t".into();
        let mut good = BytesMut::new();
        good.extend_from_slice(&batch(10, &[b"a", b"b", b"c"], Compression::None));
        good.extend_from_slice(&batch(13, &[b"d", b"e"], Compression::Lz4));
        let third = batch(15, &[b"f"], Compression::None);
        good.extend_from_slice(&third[..third.len() - 3]);
        let mut bad = BytesMut::new();
        bad.extend_from_slice(&batch(0, &[b"a", b"b"], Compression::None));
        let mut malformed = batch(2, &[b"c", b"d"], Compression::None).to_vec();
        let last = malformed.len() - 1;
        malformed[last] ^= 0xff;
        bad.extend_from_slice(&malformed);
        bad.extend_from_slice(&batch(4, &[b"e"], Compression::None));
        for (records, position, check_crcs, expected) in [
            (good.clone().freeze(), 11, true, Ok(15)),
            (good.freeze(), 10, false, Ok(15)),
            (bad.clone().freeze(), 0, true, Err(2)),
            (bad.freeze(), 1, false, Err(2)),
        ] {
            let mut out = Vec::new();
            let decoded =
                decode_records(&topic, 0, records.clone(), position, check_crcs, &mut out)
                    .map_err(|partial| partial.next);
            assert_eq!(decoded, expected);
            let decoded_records: Vec<(i64, i64, Option<Vec<u8>>)> = out
                .iter()
                .map(|r| {
                    (
                        r.offset,
                        r.timestamp,
                        r.value.as_deref().map(<[u8]>::to_vec),
                    )
                })
                .collect();
            let mut shown = Vec::new();
            let visited = visit_records(&topic, 0, records, position, check_crcs, &mut |r| {
                shown.push((r.offset, r.timestamp, r.value.map(<[u8]>::to_vec)));
            })
            .map_err(|partial| partial.next);
            assert_eq!(
                visited.map(|(next, count)| (next, count == shown.len())),
                decoded.map(|next| (next, true))
            );
            assert_eq!(
                shown, decoded_records,
                "from {position}, CRC checks {check_crcs}"
            );
        }
    }
}
