//! `__consumer_offsets` record codec round trips, tombstones, replay
//! idempotence, and the group → partition mapping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use proptest::prelude::*;

use super::load::java_string_hash;
use super::records::{GROUP_METADATA_KEY_VERSION, OFFSET_COMMIT_KEY_VERSION};
use super::tests_membership::{coordinator, stable_group, GROUP};
use super::*;

fn round_trip(record: &OffsetsRecord) -> OffsetsRecord {
    let key = record.key_bytes();
    let value = record.value_bytes();
    OffsetsRecord::decode(&key, value.as_deref())
        .expect("decodes")
        .expect("known key version")
}

fn bytes_strategy() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn member_strategy() -> impl Strategy<Value = MemberMetadata> {
    (
        ".{0,24}",
        proptest::option::of(".{0,12}"),
        ".{0,12}",
        ".{0,12}",
        any::<i32>().prop_filter("negative means absent", |t| *t >= 0),
        any::<i32>(),
        bytes_strategy(),
        bytes_strategy(),
    )
        .prop_map(
            |(member_id, group_instance_id, client_id, client_host, rebalance, session, s, a)| {
                MemberMetadata {
                    member_id,
                    group_instance_id,
                    client_id,
                    client_host,
                    rebalance_timeout_ms: rebalance,
                    session_timeout_ms: session,
                    subscription: s,
                    assignment: a,
                }
            },
        )
}

proptest! {
    #[test]
    fn offset_commit_record_round_trips(
        group_id in ".{0,32}",
        topic in ".{0,32}",
        partition in any::<i32>(),
        offset in any::<i64>(),
        leader_epoch in any::<i32>(),
        metadata in ".{0,64}",
        commit_timestamp_ms in any::<i64>(),
    ) {
        let record = OffsetsRecord::Offset {
            group_id,
            topic,
            partition,
            value: Some(CommittedOffset { offset, leader_epoch, metadata, commit_timestamp_ms }),
        };
        let key = record.key_bytes();
        prop_assert_eq!(i16::from_be_bytes([key[0], key[1]]), OFFSET_COMMIT_KEY_VERSION);
        prop_assert_eq!(round_trip(&record), record);
    }

    #[test]
    fn group_metadata_record_round_trips(
        group_id in ".{0,32}",
        protocol_type in ".{0,16}",
        generation_id in any::<i32>(),
        protocol_name in proptest::option::of(".{0,16}"),
        leader_id in proptest::option::of(".{0,24}"),
        current_state_timestamp_ms in any::<i64>(),
        members in proptest::collection::vec(member_strategy(), 0..4),
    ) {
        let record = OffsetsRecord::Group {
            group_id,
            value: Some(GroupMetadata {
                protocol_type,
                generation_id,
                protocol_name,
                leader_id,
                current_state_timestamp_ms,
                members,
            }),
        };
        let key = record.key_bytes();
        prop_assert_eq!(i16::from_be_bytes([key[0], key[1]]), GROUP_METADATA_KEY_VERSION);
        prop_assert_eq!(round_trip(&record), record);
    }

    /// Decoding arbitrary bytes returns a value or a typed error, never panics.
    #[test]
    fn decode_of_garbage_does_not_panic(
        key in proptest::collection::vec(any::<u8>(), 0..64),
        value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..128)),
    ) {
        let _ = OffsetsRecord::decode(&key, value.as_deref());
    }
}

#[test]
fn tombstones_round_trip_with_no_value() {
    let offset = OffsetsRecord::Offset {
        group_id: "g".to_owned(),
        topic: "t".to_owned(),
        partition: 3,
        value: None,
    };
    assert_eq!(offset.value_bytes(), None);
    assert_eq!(round_trip(&offset), offset);
    let group = OffsetsRecord::Group {
        group_id: "g".to_owned(),
        value: None,
    };
    assert_eq!(group.value_bytes(), None);
    assert_eq!(round_trip(&group), group);
}

#[test]
fn truncated_value_is_a_typed_error() {
    let record = OffsetsRecord::Offset {
        group_id: "g".to_owned(),
        topic: "t".to_owned(),
        partition: 0,
        value: Some(CommittedOffset {
            offset: 1,
            leader_epoch: 0,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        }),
    };
    let key = record.key_bytes();
    let value = record.value_bytes().unwrap();
    let cut = &value[..value.len() - 1];
    assert!(matches!(
        OffsetsRecord::decode(&key, Some(cut)),
        Err(RecordError::UnexpectedEof { .. })
    ));
    let mut bad_version = value.to_vec();
    bad_version[0..2].copy_from_slice(&9i16.to_be_bytes());
    assert!(matches!(
        OffsetsRecord::decode(&key, Some(&bad_version)),
        Err(RecordError::UnknownVersion { version: 9, .. })
    ));
    // An unknown key version is skipped (Kafka ignores such records).
    let mut unknown_key = key.to_vec();
    unknown_key[0..2].copy_from_slice(&7i16.to_be_bytes());
    assert_eq!(OffsetsRecord::decode(&unknown_key, Some(&value)), Ok(None));
}

/// Replays every record a stable group with committed offsets produced,
/// into a fresh coordinator, once and twice: the states must match.
#[test]
fn replay_twice_is_idempotent_and_tombstones_remove() {
    // Build a realistic log from a coordinator driven to Stable.
    let mut live = coordinator();
    let (leader, _follower, generation) = stable_group(&mut live);
    let pending = live.offset_commit(
        7_000,
        &CommitRequest {
            group_id: GROUP.to_owned(),
            generation_id: generation,
            member_id: leader.clone(),
            group_instance_id: None,
            topics: vec![(
                "t".to_owned(),
                vec![CommitPartition {
                    partition: 0,
                    offset: 9,
                    leader_epoch: 1,
                    metadata: None,
                }],
            )],
        },
    );
    live.complete_commit(7_000, &pending);
    let describe_live = live.describe_group(GROUP);
    let group_record = OffsetsRecord::Group {
        group_id: GROUP.to_owned(),
        value: Some(GroupMetadata {
            protocol_type: "consumer".to_owned(),
            generation_id: generation,
            protocol_name: Some("range".to_owned()),
            leader_id: Some(leader.clone()),
            current_state_timestamp_ms: 6_200,
            members: describe_live
                .members
                .iter()
                .map(|m| MemberMetadata {
                    member_id: m.member_id.clone(),
                    group_instance_id: None,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: 60_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from_static(b"s"),
                    assignment: Bytes::from_static(b"a"),
                })
                .collect(),
        }),
    };
    let mut log = vec![group_record];
    log.extend(pending.records.iter().cloned());

    let mut once = coordinator();
    for r in &log {
        once.replay(8_000, r);
    }
    let mut twice = coordinator();
    for r in log.iter().chain(log.iter()) {
        twice.replay(8_000, r);
    }
    for c in [&once, &twice] {
        assert_eq!(c.group_state(GROUP), Some(GroupState::Stable));
        assert_eq!(c.generation(GROUP), Some(generation));
        let fetched = c.offset_fetch(GROUP, None).unwrap();
        assert_eq!(fetched.len(), 1);
        assert_eq!(fetched[0].1[0].1.as_ref().map(|o| o.offset), Some(9));
    }
    assert_eq!(
        format!("{:?}", once.describe_group(GROUP)),
        format!("{:?}", twice.describe_group(GROUP))
    );
    assert_eq!(
        once.offset_fetch(GROUP, None),
        twice.offset_fetch(GROUP, None)
    );

    // Replaying through the byte codec gives the same state.
    let mut raw = coordinator();
    for r in &log {
        raw.replay_raw(8_000, &r.key_bytes(), r.value_bytes().as_ref())
            .unwrap();
    }
    assert_eq!(
        raw.offset_fetch(GROUP, None),
        once.offset_fetch(GROUP, None)
    );

    // Tombstones: the offset, then the group, disappear (twice is harmless).
    let offset_tombstone = OffsetsRecord::Offset {
        group_id: GROUP.to_owned(),
        topic: "t".to_owned(),
        partition: 0,
        value: None,
    };
    let group_tombstone = OffsetsRecord::Group {
        group_id: GROUP.to_owned(),
        value: None,
    };
    for _ in 0..2 {
        once.replay(9_000, &offset_tombstone);
        once.replay(9_000, &group_tombstone);
    }
    assert_eq!(once.offset_fetch(GROUP, None), Ok(Vec::new()));
    assert_eq!(once.group_state(GROUP), None);
}

/// Golden values from Java's `String.hashCode` (s[0]*31^(n-1) + … + s[n-1],
/// wrapping i32, over UTF-16 units) and Kafka's
/// `Utils.abs(hash) % 50` where `Utils.abs(n) = n & 0x7fffffff`:
/// - ""    → 0                                   → 0
/// - "a"   → 97                                  → 97 % 50 = 47
/// - "ab"  → 97*31 + 98 = 3105                   → 5
/// - "abc" → 3105*31 + 99 = 96354                → 4
/// - "g1"  → 103*31 + 49 = 3242                  → 42
/// - "é" (U+00E9) → 233                          → 33
/// - "😀" (UTF-16 D83D DE00) → 55357*31 + 56832 = 1772899 → 49
/// - "polygenelubricants" → i32::MIN (well-known Java case) → & 0x7fffffff = 0 → 0
/// - "my-group" → -1906497762 (wraps); & 0x7fffffff = 2^31 - 1906497762
///   = 240985886 → 36 (Math.abs would give 1906497762 → 12, which is wrong)
#[test]
fn partition_for_matches_kafka() {
    assert_eq!(java_string_hash(""), 0);
    assert_eq!(java_string_hash("a"), 97);
    assert_eq!(java_string_hash("ab"), 3105);
    assert_eq!(java_string_hash("abc"), 96354);
    assert_eq!(java_string_hash("g1"), 3242);
    assert_eq!(java_string_hash("\u{e9}"), 233);
    assert_eq!(java_string_hash("\u{1f600}"), 1_772_899);
    assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    assert_eq!(java_string_hash("my-group"), -1_906_497_762);

    let cases = [
        ("", 0),
        ("a", 47),
        ("ab", 5),
        ("abc", 4),
        ("g1", 42),
        ("\u{e9}", 33),
        ("\u{1f600}", 49),
        ("polygenelubricants", 0),
        ("my-group", 36),
    ];
    for (group_id, partition) in cases {
        assert_eq!(partition_for(group_id, 50), partition, "{group_id:?}");
    }
    assert_eq!(partition_for("abc", 1), 0);
    let c = coordinator();
    assert_eq!(c.partition_for("g1"), 42);
}
