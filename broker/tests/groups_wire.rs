//! The group coordinator over the Kafka wire protocol, against a real
//! skiffd: every group API with its error codes, rebalances between two
//! connections, session expiry, and committed offsets across SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod group_util;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::{batch, Client, Skiffd};
use group_util::*;
use skiff_protocol::api::messages::{self, TopicName};
use skiff_protocol::api::{ApiKey, RequestKind, ResponseKind};
use skiff_protocol::ErrorCode;

const SESSION_MS: i32 = 1_500;

fn code(error: ErrorCode) -> i16 {
    error.code()
}

/// One member through join, sync, heartbeat, commit, fetch, describe, list,
/// leave and delete, with each refusal Kafka defines along the way.
#[test]
fn one_member_lifecycle_and_error_codes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("t", 2, &[])?, 0);

    for version in 0..=3 {
        let found = find_coordinator(&mut client, version, 0, &["g"])?;
        assert_eq!(found.error_code, 0, "v{version}");
        assert_eq!(found.port, i32::from(broker.tcp.port()));
    }
    let found = find_coordinator(&mut client, 4, 0, &["g", "other"])?;
    assert_eq!(found.coordinators.len(), 2);
    assert!(found
        .coordinators
        .iter()
        .all(|c| c.error_code == 0 && c.port > 0));
    let txn = find_coordinator(&mut client, 4, 1, &["txn"])?;
    assert_eq!(
        txn.coordinators[0].error_code,
        code(ErrorCode::CoordinatorNotAvailable)
    );

    let empty = join(&mut client, "", "", SESSION_MS)?;
    assert_eq!(empty.error_code, code(ErrorCode::InvalidGroupId));

    let joined = join_new(&mut client, "g", SESSION_MS)?;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, joined.member_id, "the only member leads");
    assert_eq!(joined.members.len(), 1);
    let me = joined.member_id.to_string();
    assert!(me.starts_with("skiff-test-"), "member id {me}");

    let synced = sync(&mut client, "g", &me, 1, &[(&me, b"assignment")])?;
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"assignment");
    assert_eq!(heartbeat(&mut client, "g", &me, 1)?, 0);
    let metrics = broker.scrape()?;
    for series in [
        "skiff_groups 1\n",
        "skiff_group_members 1\n",
        "skiff_group_rebalances_total 1\n",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    assert_eq!(
        heartbeat(&mut client, "g", "stranger", 1)?,
        code(ErrorCode::UnknownMemberId)
    );

    // Commits: good, repeated (idempotent), stale, unknown member, unknown topic.
    let ok = commit(&mut client, "g", &me, 1, &[("t", 0, 5), ("t", 1, 7)])?;
    assert!(ok.iter().all(|(_, _, e)| *e == 0), "{ok:?}");
    let again = commit(&mut client, "g", &me, 1, &[("t", 0, 5), ("t", 1, 7)])?;
    assert_eq!(again, ok);
    let expected = vec![
        ("t".to_string(), 0, 5, "meta".to_string()),
        ("t".to_string(), 1, 7, "meta".to_string()),
    ];
    assert_eq!(fetch_offsets(&mut client, "g")?, (0, expected.clone()));
    let stale = commit(&mut client, "g", &me, 0, &[("t", 0, 99)])?;
    assert_eq!(stale[0].2, code(ErrorCode::IllegalGeneration));
    let unknown = commit(&mut client, "g", "stranger", 1, &[("t", 0, 99)])?;
    assert_eq!(unknown[0].2, code(ErrorCode::UnknownMemberId));
    let mixed = commit(
        &mut client,
        "g",
        &me,
        1,
        &[("nope", 0, 1), ("t", 9, 1), ("t", 0, 6)],
    )?;
    assert_eq!(
        mixed.iter().map(|x| x.2).collect::<Vec<_>>(),
        vec![
            code(ErrorCode::UnknownTopicOrPartition),
            code(ErrorCode::UnknownTopicOrPartition),
            0
        ]
    );
    let (_, after) = fetch_offsets(&mut client, "g")?;
    assert_eq!(
        after[0].2, 6,
        "refused commits changed nothing, the good one applied"
    );
    assert_eq!(after.len(), 2, "no offsets stored for unknown partitions");

    let described = describe_group(&mut client, "g")?;
    assert_eq!(described.error_code, 0);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.protocol_type.as_str(), "consumer");
    assert_eq!(described.protocol_data.as_str(), "range");
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].client_id.as_str(), "skiff-test");
    assert_eq!(described.members[0].client_host.as_str(), "/127.0.0.1");
    assert_eq!(&described.members[0].member_assignment[..], b"assignment");
    let unknown_group = describe_group(&mut client, "never")?;
    assert_eq!(unknown_group.group_state.as_str(), "Dead");

    let (error, stable) = list_groups(&mut client, &["Stable"])?;
    assert_eq!(error, 0);
    assert_eq!(
        stable,
        vec![("g".into(), "consumer".into(), "Stable".into())]
    );
    assert!(list_groups(&mut client, &["Empty"])?.1.is_empty());

    assert_eq!(
        delete_groups(&mut client, &["g", "never"])?,
        vec![
            ("g".to_string(), code(ErrorCode::NonEmptyGroup)),
            ("never".to_string(), code(ErrorCode::GroupIdNotFound)),
        ]
    );
    let (error, members) = leave(&mut client, "g", &[&me, "stranger"])?;
    assert_eq!(error, 0);
    assert_eq!(members, vec![0, code(ErrorCode::UnknownMemberId)]);
    assert_eq!(
        describe_group(&mut client, "g")?.group_state.as_str(),
        "Empty"
    );
    assert_eq!(list_groups(&mut client, &["empty"])?.1.len(), 1);
    assert_eq!(
        delete_groups(&mut client, &["g"])?,
        vec![("g".to_string(), 0)]
    );
    assert_eq!(fetch_offsets(&mut client, "g")?, (0, Vec::new()));
    Ok(())
}

/// A second member makes the first rejoin; both get the new generation,
/// the old generation is fenced; a member that stops heartbeating is
/// dropped after its session timeout.
#[test]
fn rebalance_between_two_connections_and_session_expiry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut a = broker.connect()?;
    let mut b = broker.connect()?;
    assert_eq!(a.create_topic("t", 2, &[])?, 0);

    let first = join_new(&mut a, "g", SESSION_MS)?;
    let a_id = first.member_id.to_string();
    assert_eq!(
        sync(&mut a, "g", &a_id, 1, &[(&a_id, b"01")])?.error_code,
        0
    );

    // B's join parks until A rejoins.
    let b_first = join(&mut b, "g", "", SESSION_MS)?;
    let b_id = b_first.member_id.to_string();
    let b_join = send_join(&mut b, "g", &b_id, SESSION_MS)?;
    // B's request travels on another connection: A learns of the
    // rebalance from a heartbeat once the broker has taken B's join.
    assert_eq!(
        heartbeat_until_error(&mut a, &a_id, 1)?,
        code(ErrorCode::RebalanceInProgress)
    );
    let a_second = join(&mut a, "g", &a_id, SESSION_MS)?;
    let b_second = receive_join(&mut b, b_join)?;
    assert_eq!((a_second.error_code, b_second.error_code), (0, 0));
    assert_eq!(a_second.generation_id, 2);
    assert_eq!(b_second.generation_id, 2);
    assert_eq!(
        a_second.leader.as_str(),
        a_id,
        "the first member stays leader"
    );
    assert_eq!(a_second.members.len(), 2, "the leader sees every member");
    assert!(b_second.members.is_empty(), "followers see none");

    // B's sync waits for the leader's assignment.
    let b_sync = send_sync(&mut b, "g", &b_id, 2, &[])?;
    let a_sync = sync(&mut a, "g", &a_id, 2, &[(&a_id, b"0"), (&b_id, b"1")])?;
    assert_eq!(&a_sync.assignment[..], b"0");
    assert_eq!(&receive_sync(&mut b, b_sync)?.assignment[..], b"1");
    let stale = commit(&mut a, "g", &a_id, 1, &[("t", 0, 1)])?;
    assert_eq!(stale[0].2, code(ErrorCode::IllegalGeneration));
    assert_eq!(commit(&mut b, "g", &b_id, 2, &[("t", 1, 3)])?[0].2, 0);

    // B goes silent; A keeps heartbeating until told to rejoin.
    let started = Instant::now();
    let error = heartbeat_until_error(&mut a, &a_id, 2)?;
    assert_eq!(error, code(ErrorCode::RebalanceInProgress));
    assert!(started.elapsed() >= Duration::from_millis(SESSION_MS as u64 / 2));
    let alone = join(&mut a, "g", &a_id, SESSION_MS)?;
    assert_eq!(alone.generation_id, 3);
    assert_eq!(alone.members.len(), 1, "B was removed");
    assert_eq!(
        heartbeat(&mut b, "g", &b_id, 2)?,
        code(ErrorCode::UnknownMemberId)
    );
    Ok(())
}

/// Heartbeats group "g" every 100 ms until the answer is an error.
fn heartbeat_until_error(client: &mut Client, member_id: &str, generation: i32) -> Result<i16> {
    let started = Instant::now();
    loop {
        let error = heartbeat(client, "g", member_id, generation)?;
        if error != 0 {
            return Ok(error);
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("no error from heartbeats within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Acknowledged commits are on disk: they survive SIGKILL of the broker,
/// including the last of many commits to the same partition and a deleted
/// group's tombstones.
#[test]
fn committed_offsets_survive_sigkill() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("t", 3, &[])?, 0);
    for offset in 0..50 {
        let result = commit(
            &mut client,
            "simple",
            "",
            -1,
            &[("t", 0, offset), ("t", 2, 1000 + offset)],
        )?;
        assert!(result.iter().all(|r| r.2 == 0), "{result:?}");
    }
    assert_eq!(commit(&mut client, "gone", "", -1, &[("t", 1, 4)])?[0].2, 0);
    assert_eq!(delete_groups(&mut client, &["gone"])?[0].1, 0);
    let member = join_new(&mut client, "members", 30_000)?;
    let id = member.member_id.to_string();
    assert_eq!(
        sync(&mut client, "members", &id, 1, &[(&id, b"x")])?.error_code,
        0
    );
    assert_eq!(
        commit(&mut client, "members", &id, 1, &[("t", 1, 42)])?[0].2,
        0
    );
    broker.kill()?;

    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    assert_eq!(
        fetch_after_load(&mut client, "simple")?,
        vec![
            ("t".to_string(), 0, 49, "meta".to_string()),
            ("t".to_string(), 2, 1049, "meta".to_string()),
        ]
    );
    assert!(fetch_after_load(&mut client, "gone")?.is_empty());
    assert_eq!(fetch_after_load(&mut client, "members")?[0].2, 42);
    // The member and its generation were stored with the assignment.
    let described = describe_group(&mut client, "members")?;
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(&described.members[0].member_assignment[..], b"x");
    assert_eq!(heartbeat(&mut client, "members", &id, 1)?, 0);
    Ok(())
}

/// `__consumer_offsets` is internal: listed as such, and clients can
/// neither write to it nor delete it.
#[test]
fn offsets_topic_is_internal() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    // Neither auto-creation (Metadata, Produce) nor CreateTopics makes it:
    // only the coordinator does, with its partition count and compaction.
    let mut request = messages::MetadataRequest::default();
    let mut wanted = messages::metadata_request::MetadataRequestTopic::default();
    wanted.name = Some(TopicName(s("__consumer_offsets")));
    request.topics = Some(vec![wanted]);
    request.allow_auto_topic_creation = true;
    let ResponseKind::Metadata(metadata) =
        client.call(ApiKey::Metadata, 9, RequestKind::Metadata(request))?
    else {
        bail!("not Metadata")
    };
    assert_eq!(
        metadata.topics[0].error_code,
        code(ErrorCode::UnknownTopicOrPartition)
    );
    let (error, _) = client.produce("__consumer_offsets", 0, batch(&[b"x"], -1, -1, -1), -1)?;
    assert_eq!(error, code(ErrorCode::InvalidTopicException));
    assert_eq!(
        client.create_topic("__consumer_offsets", 50, &[])?,
        code(ErrorCode::InvalidRequest)
    );
    assert_eq!(find_coordinator(&mut client, 3, 0, &["g"])?.error_code, 0);
    assert_eq!(
        client.create_topic("__consumer_offsets", 50, &[])?,
        code(ErrorCode::TopicAlreadyExists)
    );

    let mut request = messages::MetadataRequest::default();
    request.topics = None;
    let ResponseKind::Metadata(metadata) =
        client.call(ApiKey::Metadata, 9, RequestKind::Metadata(request))?
    else {
        bail!("not Metadata")
    };
    let offsets = metadata
        .topics
        .iter()
        .find(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| n.0.as_str() == "__consumer_offsets")
        })
        .expect("__consumer_offsets listed");
    assert!(offsets.is_internal);
    assert_eq!(offsets.partitions.len(), 4);

    let (error, _) = client.produce("__consumer_offsets", 0, batch(&[b"x"], -1, -1, -1), -1)?;
    assert_eq!(error, code(ErrorCode::InvalidTopicException));

    let mut request = messages::DeleteTopicsRequest::default();
    request.topic_names = vec![TopicName(s("__consumer_offsets"))];
    request.timeout_ms = 10_000;
    let ResponseKind::DeleteTopics(deleted) =
        client.call(ApiKey::DeleteTopics, 5, RequestKind::DeleteTopics(request))?
    else {
        bail!("not DeleteTopics")
    };
    assert_eq!(
        deleted.responses[0].error_code,
        code(ErrorCode::InvalidRequest)
    );
    assert_eq!(find_coordinator(&mut client, 3, 0, &["g"])?.error_code, 0);
    Ok(())
}

/// Deleting a topic drops the groups' committed offsets for it.
#[test]
fn deleted_topic_offsets_are_dropped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("doomed", 1, &[])?, 0);
    assert_eq!(client.create_topic("kept", 1, &[])?, 0);
    let result = commit(
        &mut client,
        "g",
        "",
        -1,
        &[("doomed", 0, 3), ("kept", 0, 4)],
    )?;
    assert!(result.iter().all(|r| r.2 == 0));

    let mut request = messages::DeleteTopicsRequest::default();
    request.topic_names = vec![TopicName(s("doomed"))];
    request.timeout_ms = 10_000;
    let ResponseKind::DeleteTopics(deleted) =
        client.call(ApiKey::DeleteTopics, 5, RequestKind::DeleteTopics(request))?
    else {
        bail!("not DeleteTopics")
    };
    assert_eq!(deleted.responses[0].error_code, 0);
    assert_eq!(
        fetch_offsets(&mut client, "g")?.1,
        vec![("kept".to_string(), 0, 4, "meta".to_string())]
    );
    broker.kill()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    assert_eq!(
        fetch_after_load(&mut client, "g")?,
        vec![("kept".to_string(), 0, 4, "meta".to_string())],
        "the removal was persisted"
    );
    Ok(())
}

/// A graceful stop does not wait for parked JoinGroups: they are answered
/// NOT_COORDINATOR (or their connection closes) and skiffd exits cleanly
/// well within the 30 s it would otherwise wait for in-flight requests.
#[test]
fn shutdown_releases_parked_joins() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut a = broker.connect()?;
    let mut b = broker.connect()?;
    let first = join_new(&mut a, "g", 60_000)?;
    let a_id = first.member_id.to_string();
    assert_eq!(sync(&mut a, "g", &a_id, 1, &[(&a_id, b"x")])?.error_code, 0);
    let b_first = join(&mut b, "g", "", 60_000)?;
    let parked = send_join(&mut b, "g", b_first.member_id.as_str(), 60_000)?;
    // The join is parked once A hears of the rebalance.
    assert_eq!(
        heartbeat_until_error(&mut a, &a_id, 1)?,
        code(ErrorCode::RebalanceInProgress)
    );
    let started = Instant::now();
    assert_eq!(broker.stop()?, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        started.elapsed()
    );
    if let Ok(response) = receive_join(&mut b, parked) {
        assert_eq!(response.error_code, code(ErrorCode::NotCoordinator));
    }
    Ok(())
}
