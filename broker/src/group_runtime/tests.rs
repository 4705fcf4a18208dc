//! The runtime over a real in-process broker (real files in a temp dir):
//! failed flushes are never reported as success, requests wait for the
//! load, and expired offsets are removed durably.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::Ordering as AtomicOrdering;

use bytes::Bytes;

use super::*;
use crate::broker::Broker;
use crate::config::Config;
use crate::coordinator::{CommitPartition, GroupState, Protocol};
use crate::metrics::Metrics;

struct Running {
    broker: Arc<Broker>,
    _shutdown: watch::Sender<bool>,
}

fn open(dir: &Path, tune: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        offsets_topic_partitions: 2,
        group_initial_rebalance_delay_ms: 0,
        group_min_session_timeout_ms: 10,
        ..Config::default()
    };
    tune(&mut config);
    let (shutdown, rx) = watch::channel(false);
    let broker = Broker::open(config, 0, Arc::new(Metrics::default()), rx.clone()).unwrap();
    let broker = Arc::new(broker);
    broker.groups.start(rx);
    Running {
        broker,
        _shutdown: shutdown,
    }
}

fn simple_commit(group: &str, offset: i64) -> CommitRequest {
    CommitRequest {
        group_id: group.to_string(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        topics: vec![(
            "t".to_string(),
            vec![CommitPartition {
                partition: 0,
                offset,
                leader_epoch: -1,
                metadata: None,
            }],
        )],
    }
}

fn committed(broker: &Broker, group: &str) -> Result<Option<i64>, ErrorCode> {
    let fetched = broker.groups.with(|c| c.offset_fetch(group, None))?;
    Ok(fetched
        .first()
        .and_then(|(_, partitions)| partitions.first())
        .and_then(|(_, offset)| offset.as_ref().map(|o| o.offset)))
}

/// Makes the next fdatasync of the group's offsets partition fail.
fn fail_next_flush(broker: &Broker, group: &str) {
    let partition = broker.groups.with(|c| c.partition_for(group));
    let topic = broker.topics.get(OFFSETS_TOPIC).unwrap();
    topic.partitions[partition as usize]
        .log
        .shared()
        .fail_next_sync
        .store(true, AtomicOrdering::SeqCst);
}

fn setup(dir: &Path) -> Running {
    let running = open(dir, |_| {});
    running
        .broker
        .topics
        .create("t", 1, Default::default())
        .unwrap();
    running
        .broker
        .groups
        .ensure_topic(&running.broker.topics)
        .unwrap();
    running
}

/// A commit whose flush fails answers COORDINATOR_NOT_AVAILABLE and leaves
/// the committed offset as it was.
#[tokio::test]
async fn commit_is_acknowledged_only_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let Running { broker, .. } = &setup(dir.path());
    let results = broker.groups.commit(&simple_commit("g", 5)).await.unwrap();
    assert_eq!(results[0].1[0].1, ErrorCode::None);
    assert_eq!(committed(broker, "g"), Ok(Some(5)));

    fail_next_flush(broker, "g");
    let results = broker.groups.commit(&simple_commit("g", 6)).await.unwrap();
    assert_eq!(results[0].1[0].1, ErrorCode::CoordinatorNotAvailable);
    assert_eq!(
        committed(broker, "g"),
        Ok(Some(5)),
        "memory did not run ahead"
    );
}

fn join_request(group: &str, member_id: &str) -> JoinRequest {
    JoinRequest {
        group_id: group.to_string(),
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "c".to_string(),
        client_host: String::new(),
        session_timeout_ms: 30_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".to_string(),
        protocols: vec![Protocol {
            name: "range".to_string(),
            metadata: Bytes::from_static(b"m"),
        }],
        require_known_member_id: false,
    }
}

/// A leader's SyncGroup whose assignment cannot be stored is answered
/// COORDINATOR_NOT_AVAILABLE and the group rebalances, so no member keeps
/// an assignment that was never persisted.
#[tokio::test]
async fn unstored_assignment_is_not_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let Running { broker, .. } = &setup(dir.path());
    let joined = broker.groups.join(join_request("g", "")).await.unwrap();
    assert_eq!(joined.error, ErrorCode::None);
    let me = joined.member_id.clone();

    fail_next_flush(broker, "g");
    let synced = broker
        .groups
        .sync(SyncRequest {
            group_id: "g".to_string(),
            member_id: me.clone(),
            generation_id: joined.generation_id,
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(me.clone(), Bytes::from_static(b"a"))],
        })
        .await
        .unwrap();
    assert_eq!(synced.error, ErrorCode::CoordinatorNotAvailable);
    assert_ne!(
        broker.groups.with(|c| c.group_state("g")),
        Some(GroupState::Stable)
    );
}

/// After a restart, group requests answer COORDINATOR_LOAD_IN_PROGRESS
/// until `__consumer_offsets` is replayed, then see the stored offsets.
#[tokio::test]
async fn requests_wait_for_the_load() {
    let dir = tempfile::tempdir().unwrap();
    {
        let Running { broker, .. } = &setup(dir.path());
        let results = broker.groups.commit(&simple_commit("g", 7)).await.unwrap();
        assert_eq!(results[0].1[0].1, ErrorCode::None);
        broker.logs.shutdown().unwrap();
    }
    let (_shutdown, rx) = watch::channel(false);
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        offsets_topic_partitions: 2,
        ..Config::default()
    };
    let broker =
        Arc::new(Broker::open(config, 0, Arc::new(Metrics::default()), rx.clone()).unwrap());
    assert_eq!(
        committed(&broker, "g"),
        Err(ErrorCode::CoordinatorLoadInProgress)
    );
    assert_eq!(
        broker.groups.with(|c| c.list_groups(&[])).0,
        ErrorCode::CoordinatorLoadInProgress
    );
    broker.groups.start(rx);
    let started = std::time::Instant::now();
    while committed(&broker, "g") == Err(ErrorCode::CoordinatorLoadInProgress) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "load never finished"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(committed(&broker, "g"), Ok(Some(7)));
}

/// Offsets older than `offsets_retention_ms` are removed by the timer, and
/// the removal is stored: it holds after a restart.
#[tokio::test]
async fn expired_offsets_are_removed_durably() {
    let dir = tempfile::tempdir().unwrap();
    let short = |c: &mut Config| {
        c.offsets_retention_ms = 300;
        c.offsets_retention_check_interval_ms = 50;
    };
    {
        let Running { broker, .. } = &open(dir.path(), short);
        broker.topics.create("t", 1, Default::default()).unwrap();
        broker.groups.ensure_topic(&broker.topics).unwrap();
        let results = broker.groups.commit(&simple_commit("g", 3)).await.unwrap();
        assert_eq!(results[0].1[0].1, ErrorCode::None);
        assert_eq!(committed(broker, "g"), Ok(Some(3)));
        let started = std::time::Instant::now();
        while committed(broker, "g") == Ok(Some(3)) {
            assert!(started.elapsed() < Duration::from_secs(20), "never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(committed(broker, "g"), Ok(None));
        // The tombstone was appended with the change in memory (same
        // lock); closing the logs flushes it.
        broker.logs.shutdown().unwrap();
    }
    let Running { broker, .. } = &open(dir.path(), |c| c.offsets_retention_ms = 3_600_000);
    let started = std::time::Instant::now();
    while committed(broker, "g") == Err(ErrorCode::CoordinatorLoadInProgress) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "load never finished"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(committed(broker, "g"), Ok(None));
}

/// Found by the `offsets_records` fuzz target: a stored commit timestamp
/// far in the past (here `i64::MIN`) overflowed the retention check and
/// panicked the timer. It is simply very old: the offset expires.
#[test]
fn hostile_commit_timestamp_expires_without_overflow() {
    use crate::coordinator::{CommittedOffset, CoordinatorConfig, OffsetsRecord, SequentialIds};
    let mut coordinator = GroupCoordinator::new(
        CoordinatorConfig::default(),
        Box::<SequentialIds>::default(),
    );
    let partition = coordinator.partition_for("g");
    coordinator.begin_loading(partition);
    coordinator.replay(
        0,
        &OffsetsRecord::Offset {
            group_id: "g".to_string(),
            topic: "t".to_string(),
            partition: 0,
            value: Some(CommittedOffset {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: i64::MIN,
            }),
        },
    );
    coordinator.finish_loading(partition);
    let out = coordinator.expire_offsets(1_000);
    assert!(
        matches!(&out[..], [Output::Persist { records, .. }] if records.len() == 2),
        "the offset's tombstone and the emptied group's: {out:?}"
    );
}
