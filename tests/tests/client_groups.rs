//! skiff-client group consumers (`Consumer::subscribe`) against a real
//! skiffd: assignment, rebalances on join / leave / session expiry, commit
//! on revoke, cooperative rebalancing, and offsets across a broker SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use skiff_client::{Consumer, ConsumerConfig, TopicPartition, Transport};
use skiff_tests::groups::{
    check_none_skipped, covers, group_config, log_ends, produce, spawn_producer, wait_until,
    Member, Recorder, Seen, FAST_GROUPS,
};
use skiff_tests::{create_topic, skiffd_bin, Broker};

/// Three members of one group on a 12-partition topic get disjoint
/// assignments covering every partition, consume every record exactly once
/// in a run without failures, and commit the log end on close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_split_twelve_partitions_exactly_once() -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = "split";
    create_topic(&client, topic, 12).await?;
    produce(&client, topic, 0, 600).await?;
    let mut members = Vec::new();
    for _ in 0..3 {
        let config = broker.client_config(Transport::Tcp)?;
        members.push(Member::start(config, group_config("three", "range"), topic).await?);
    }
    wait_until(
        "three members to split 12 partitions",
        Duration::from_secs(15),
        || {
            members.iter().all(|m| m.assignment().len() == 4)
                && covers(&members.iter().collect::<Vec<_>>(), 12)
        },
    )
    .await?;
    wait_until("600 records", Duration::from_secs(15), || {
        members.iter().map(|m| m.records().len()).sum::<usize>() >= 600
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut all: Vec<(i32, i64)> = Vec::new();
    for member in members {
        let seen = member.close().await?;
        all.extend(seen.lock().unwrap().records.iter().copied());
    }
    let distinct: BTreeSet<(i32, i64)> = all.iter().copied().collect();
    ensure!(
        distinct.len() == all.len(),
        "{} duplicates",
        all.len() - distinct.len()
    );
    let ends = log_ends(&client, topic, 12).await?;
    ensure!(all.len() as i64 == ends.values().sum::<i64>());
    check_none_skipped(&all, &ends)?;
    // close() committed the positions: the group's offsets are the log ends.
    let checker = Consumer::new(client.clone(), group_config("three", "range"));
    let partitions: Vec<TopicPartition> = (0..12).map(|p| TopicPartition::new(topic, p)).collect();
    let committed = checker.committed(&partitions).await?;
    for (tp, offset) in committed {
        ensure!(
            offset == Some(ends[&tp.partition]),
            "{tp} committed {offset:?}, log end {}",
            ends[&tp.partition]
        );
    }
    Ok(())
}

/// With cooperative-sticky, a member joining, a member leaving and a member
/// dying (its session times out) move partitions; members revoke only the
/// partitions that move, never lose any in a clean rebalance, and with
/// commit on revoke every record produced throughout is consumed at least
/// once, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_join_leave_and_death_skip_nothing() -> anyhow::Result<()> {
    join_leave_and_death("cooperative-sticky").await
}

/// The same with the eager range assignor: every rebalance revokes
/// everything (committing it first), and still nothing is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_join_leave_and_death_skip_nothing() -> anyhow::Result<()> {
    join_leave_and_death("range").await
}

async fn join_leave_and_death(strategy: &str) -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let cooperative = strategy == "cooperative-sticky";
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = &format!("moving-{strategy}");
    create_topic(&client, topic, 12).await?;
    let (stop_producing, producing) = spawn_producer(client.clone(), topic);
    let config = || group_config(strategy, strategy);
    let a = Member::start(broker.client_config(Transport::Tcp)?, config(), topic).await?;
    let b = Member::start(broker.client_config(Transport::Tcp)?, config(), topic).await?;
    wait_until(
        "a and b to split the partitions",
        Duration::from_secs(15),
        || a.assignment().len() == 6 && covers(&[&a, &b], 12),
    )
    .await?;
    let a_before = a.assignment();
    let a_revocations_before = a.seen.lock().unwrap().revoked.len();

    let c = Member::start(broker.client_config(Transport::Tcp)?, config(), topic).await?;
    wait_until("c to get its share", Duration::from_secs(15), || {
        c.assignment().len() == 4 && covers(&[&a, &b, &c], 12)
    })
    .await?;
    if cooperative {
        let seen = a.seen.lock().unwrap();
        let revoked: Vec<i32> = seen.revoked[a_revocations_before..]
            .iter()
            .flatten()
            .copied()
            .collect();
        ensure!(
            revoked.len() == 2,
            "a revoked {:?}, only the 2 moving partitions should go",
            seen.revoked
        );
        ensure!(
            seen.assignment.is_subset(&a_before),
            "a gained {:?}",
            seen.assignment
        );
        ensure!(seen.lost.is_empty());
    }

    let b_seen = b.close().await?;
    wait_until(
        "a and c to take b's partitions",
        Duration::from_secs(15),
        || covers(&[&a, &c], 12),
    )
    .await?;
    let c_kept = c.assignment();
    let c_seen = c.kill().await?;
    wait_until(
        "a to take over the dead member's partitions",
        Duration::from_secs(15),
        || a.assignment().len() == 12,
    )
    .await?;
    ensure!(c_kept.iter().all(|p| a.assignment().contains(p)));

    let _ = stop_producing.send(true);
    let produced = producing.await??;
    let ends = log_ends(&client, topic, 12).await?;
    ensure!(ends.values().sum::<i64>() == produced as i64);
    let mut all: Vec<(i32, i64)> = Vec::new();
    wait_until("a to catch up", Duration::from_secs(15), || {
        let seen: BTreeSet<(i32, i64)> = a.records().into_iter().collect();
        ends.iter()
            .all(|(p, end)| *end == 0 || seen.contains(&(*p, end - 1)))
    })
    .await?;
    let a_seen = a.close().await?;
    for seen in [a_seen, b_seen, c_seen] {
        all.extend(seen.lock().unwrap().records.iter().copied());
    }
    check_none_skipped(&all, &ends)?;
    Ok(())
}

/// Offsets committed by members survive a SIGKILL of the broker: after the
/// restart the group's committed offsets are the same, and a new member
/// resumes right after them (no record consumed twice, none skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_broker_sigkill() -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = "durable";
    create_topic(&client, topic, 4).await?;
    produce(&client, topic, 0, 200).await?;
    let member = Member::start(
        broker.client_config(Transport::Tcp)?,
        group_config("durable", "range"),
        topic,
    )
    .await?;
    wait_until("200 records", Duration::from_secs(15), || {
        member.records().len() >= 200
    })
    .await?;
    let first = member.close().await?;
    let first: Vec<(i32, i64)> = first.lock().unwrap().records.clone();
    let partitions: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new(topic, p)).collect();
    let before = Consumer::new(client.clone(), group_config("durable", "range"))
        .committed(&partitions)
        .await?;
    ensure!(before.values().all(Option::is_some), "{before:?}");

    broker.restart()?;
    let client = broker.client(Transport::Tcp).await?;
    let after = Consumer::new(client.clone(), group_config("durable", "range"))
        .committed(&partitions)
        .await?;
    ensure!(after == before, "before {before:?} after {after:?}");
    produce(&client, topic, 200, 100).await?;
    let member = Member::start(
        broker.client_config(Transport::Tcp)?,
        group_config("durable", "range"),
        topic,
    )
    .await?;
    wait_until("the 100 new records", Duration::from_secs(15), || {
        member.records().len() >= 100
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = member.close().await?;
    let second: Vec<(i32, i64)> = second.lock().unwrap().records.clone();
    ensure!(
        second.len() == 100,
        "resumed with {} records, not the 100 new ones",
        second.len()
    );
    let mut all = first;
    all.extend(second);
    let distinct: BTreeSet<(i32, i64)> = all.iter().copied().collect();
    ensure!(distinct.len() == all.len(), "records consumed twice");
    check_none_skipped(&all, &log_ends(&client, topic, 4).await?)?;
    Ok(())
}

/// A static member (group.instance.id) that restarts within its session
/// timeout gets its old partitions back without a rebalance: the other
/// member revokes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_keeps_its_partitions() -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = "static";
    create_topic(&client, topic, 6).await?;
    let config = |instance: &str| ConsumerConfig {
        group_instance_id: Some(instance.to_string()),
        session_timeout: Duration::from_secs(10),
        ..group_config("static", "range")
    };
    let a = Member::start(broker.client_config(Transport::Tcp)?, config("a"), topic).await?;
    let b = Member::start(broker.client_config(Transport::Tcp)?, config("b"), topic).await?;
    wait_until(
        "a and b to split 6 partitions",
        Duration::from_secs(15),
        || a.assignment().len() == 3 && covers(&[&a, &b], 6),
    )
    .await?;
    let a_partitions = a.assignment();
    let b_revocations = b.seen.lock().unwrap().revoked.len();
    a.close().await?;
    let a = Member::start(broker.client_config(Transport::Tcp)?, config("a"), topic).await?;
    wait_until("a to be back", Duration::from_secs(15), || {
        a.assignment().len() == 3
    })
    .await?;
    ensure!(
        a.assignment() == a_partitions,
        "{:?} != {:?}",
        a.assignment(),
        a_partitions
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        b.seen.lock().unwrap().revoked.len() == b_revocations,
        "b went through a rebalance"
    );
    a.close().await?;
    b.close().await?;
    Ok(())
}

/// A member that stops polling for longer than max_poll_interval leaves the
/// group: the others take its partitions, its late commit is refused
/// (fenced), its listener hears the partitions are lost, and it rejoins
/// when it polls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_poller_leaves_and_rejoins() -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = "slow";
    create_topic(&client, topic, 4).await?;
    produce(&client, topic, 0, 40).await?;
    let config = ConsumerConfig {
        max_poll_interval: Duration::from_millis(1500),
        ..group_config("slow", "range")
    };
    let fast = Member::start(broker.client_config(Transport::Tcp)?, config.clone(), topic).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut slow = Consumer::new(client.clone(), config);
    slow.subscribe_with_listener(&[topic], Box::new(Recorder(Arc::clone(&seen))))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(seen.lock().unwrap().assignment.len() == 2 && fast.assignment().len() == 2) {
        ensure!(Instant::now() < deadline, "no split");
        slow.poll(Duration::from_millis(100)).await?;
    }
    // Stop polling: the fast member ends up with everything.
    wait_until(
        "the fast member to take over",
        Duration::from_secs(15),
        || fast.assignment().len() == 4,
    )
    .await?;
    let late = slow.commit_sync().await;
    ensure!(
        late.is_err(),
        "a commit after leaving the group must be refused"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(seen.lock().unwrap().assignment.len() == 2 && fast.assignment().len() == 2) {
        ensure!(Instant::now() < deadline, "the slow member did not rejoin");
        slow.poll(Duration::from_millis(100)).await?;
    }
    ensure!(
        !seen.lock().unwrap().lost.is_empty(),
        "the listener was not told of the loss"
    );
    slow.close().await?;
    fast.close().await?;
    Ok(())
}

/// Bad group settings are typed errors at `subscribe`, before anything is
/// sent: no group id, no topics, an unknown assignor, a heartbeat interval
/// not below the session timeout; group calls without a group id too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_settings_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    let mut no_group = Consumer::new(client.clone(), ConsumerConfig::default());
    let refused = no_group.subscribe(&["t"]).await;
    ensure!(
        matches!(refused, Err(skiff_client::Error::NoGroup(_))),
        "{refused:?}"
    );
    ensure!(matches!(
        no_group.commit_sync().await,
        Err(skiff_client::Error::NoGroup(_))
    ));
    ensure!(matches!(
        no_group.committed(&[TopicPartition::new("t", 0)]).await,
        Err(skiff_client::Error::NoGroup(_))
    ));
    let mut consumer = Consumer::new(client.clone(), group_config("g", "range"));
    let refused = consumer.subscribe(&[]).await;
    ensure!(
        matches!(refused, Err(skiff_client::Error::Config(_))),
        "{refused:?}"
    );
    let mut consumer = Consumer::new(client.clone(), group_config("g", "fastest"));
    let refused = consumer.subscribe(&["t"]).await;
    ensure!(
        matches!(&refused, Err(skiff_client::Error::Config(m)) if m.contains("fastest")),
        "{refused:?}"
    );
    let config = ConsumerConfig {
        heartbeat_interval: Duration::from_secs(2),
        session_timeout: Duration::from_secs(2),
        ..group_config("g", "range")
    };
    let refused = Consumer::new(client, config).subscribe(&["t"]).await;
    ensure!(
        matches!(refused, Err(skiff_client::Error::Config(_))),
        "{refused:?}"
    );
    Ok(())
}

/// The eager sticky assignor keeps partitions where they were: when a third
/// member joins two that share 12 partitions, each of the two keeps 4 of its
/// 6 and only gives up 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_sticky_keeps_partitions_in_place() -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = "sticky";
    create_topic(&client, topic, 12).await?;
    let a = Member::start(
        broker.client_config(Transport::Tcp)?,
        group_config("sticky", "sticky"),
        topic,
    )
    .await?;
    let b = Member::start(
        broker.client_config(Transport::Tcp)?,
        group_config("sticky", "sticky"),
        topic,
    )
    .await?;
    wait_until("a and b to split 12", Duration::from_secs(15), || {
        a.assignment().len() == 6 && covers(&[&a, &b], 12)
    })
    .await?;
    let (a_before, b_before) = (a.assignment(), b.assignment());
    let c = Member::start(
        broker.client_config(Transport::Tcp)?,
        group_config("sticky", "sticky"),
        topic,
    )
    .await?;
    wait_until("three to split 12", Duration::from_secs(15), || {
        c.assignment().len() == 4 && covers(&[&a, &b, &c], 12)
    })
    .await?;
    ensure!(
        a.assignment().is_subset(&a_before),
        "{:?} vs {a_before:?}",
        a.assignment()
    );
    ensure!(
        b.assignment().is_subset(&b_before),
        "{:?} vs {b_before:?}",
        b.assignment()
    );
    for member in [a, b, c] {
        member.close().await?;
    }
    Ok(())
}

/// A subscribed topic created after the group settled is picked up: the
/// member sees it appear in its metadata, rejoins, and consumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_created_later_is_consumed() -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let mut flags = FAST_GROUPS.to_vec();
    flags.extend(["--auto-create-topics", "false"]);
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), &flags)?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, "early", 2).await?;
    produce(&client, "early", 0, 20).await?;
    let member_client = broker
        .client_config(Transport::Tcp)?
        .metadata_max_age(Duration::from_millis(300));
    let member = Member::start_topics(
        member_client,
        group_config("late", "range"),
        &["early", "later"],
    )
    .await?;
    wait_until("the early records", Duration::from_secs(15), || {
        member.records().len() >= 20
    })
    .await?;
    create_topic(&client, "later", 3).await?;
    produce(&client, "later", 0, 30).await?;
    wait_until("the later topic's records", Duration::from_secs(15), || {
        member.records().len() >= 50
    })
    .await?;
    // Only "early" had records before, so these 30 more came from "later".
    ensure!(
        member.records().len() == 50,
        "{} records",
        member.records().len()
    );
    member.close().await?;
    Ok(())
}

/// Two consumers with one static instance id: the newer one takes the
/// membership and the older one is fenced (FENCED_INSTANCE_ID), which its
/// `poll` reports as a fatal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_static_member_is_fenced() -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = "fenced";
    create_topic(&client, topic, 2).await?;
    let config = ConsumerConfig {
        group_instance_id: Some("only-one".into()),
        ..group_config("fenced", "range")
    };
    let mut old = Consumer::new(client.clone(), config.clone());
    old.subscribe(&[topic]).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while old.assignment().len() != 2 {
        ensure!(
            Instant::now() < deadline,
            "the first member never got its partitions"
        );
        old.poll(Duration::from_millis(100)).await?;
    }
    let new = Member::start(broker.client_config(Transport::Tcp)?, config, topic).await?;
    wait_until(
        "the new member to take over",
        Duration::from_secs(15),
        || new.assignment().len() == 2,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let error = loop {
        ensure!(Instant::now() < deadline, "the old member was never fenced");
        if let Err(error) = old.poll(Duration::from_millis(100)).await {
            break error;
        }
    };
    ensure!(
        error.code() == Some(skiff_protocol::ErrorCode::FencedInstanceId),
        "{error}"
    );
    new.close().await?;
    Ok(())
}
