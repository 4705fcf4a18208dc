//! skiff-client group consumers (`Consumer::subscribe`) against a real
//! skiffd: assignment, rebalances on join / leave / session expiry, commit
//! on revoke, cooperative rebalancing, and offsets across a broker SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use skiff_client::{
    Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    RebalanceListener, TopicPartition, Transport,
};
use skiff_tests::{create_topic, skiffd_bin, Broker};
use tokio::sync::watch;

/// Broker flags that keep group tests fast: short sessions allowed, no
/// initial rebalance delay, few offsets partitions.
const FAST_GROUPS: &[&str] = &[
    "--group-min-session-timeout-ms",
    "500",
    "--group-initial-rebalance-delay-ms",
    "0",
    "--offsets-topic-partitions",
    "4",
];

fn group_config(group: &str, strategy: &str) -> ConsumerConfig {
    ConsumerConfig {
        group_id: Some(group.to_string()),
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait: Duration::from_millis(50),
        session_timeout: Duration::from_millis(1500),
        heartbeat_interval: Duration::from_millis(200),
        max_poll_interval: Duration::from_secs(10),
        auto_commit_interval: Duration::from_millis(300),
        partition_assignment_strategy: vec![strategy.to_string()],
        ..ConsumerConfig::default()
    }
}

/// What the listener and the poll loop of one member saw.
#[derive(Debug, Default)]
struct Seen {
    /// (partition, offset) of every record polled, in order.
    records: Vec<(i32, i64)>,
    assignment: BTreeSet<i32>,
    revoked: Vec<Vec<i32>>,
    lost: Vec<Vec<i32>>,
}

struct Recorder(Arc<Mutex<Seen>>);

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        let mut seen = self.0.lock().unwrap();
        seen.assignment
            .extend(partitions.iter().map(|tp| tp.partition));
    }
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        let mut seen = self.0.lock().unwrap();
        for tp in partitions {
            seen.assignment.remove(&tp.partition);
        }
        seen.revoked
            .push(partitions.iter().map(|tp| tp.partition).collect());
    }
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        let mut seen = self.0.lock().unwrap();
        for tp in partitions {
            seen.assignment.remove(&tp.partition);
        }
        seen.lost
            .push(partitions.iter().map(|tp| tp.partition).collect());
    }
}

/// One group member polling on its own thread and runtime until stopped.
/// Its own runtime lets a test kill it: dropping the runtime stops the
/// heartbeats and fetches without a LeaveGroup, like a killed process.
struct Member {
    seen: Arc<Mutex<Seen>>,
    stop: watch::Sender<Option<bool>>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Member {
    async fn start(
        client_config: skiff_client::ClientConfig,
        config: ConsumerConfig,
        topic: &str,
    ) -> anyhow::Result<Member> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        // None: keep polling; Some(true): close (commit, leave); Some(false):
        // vanish without a word.
        let (stop, mut stopped) = watch::channel(None);
        let recorded = Arc::clone(&seen);
        let topic = topic.to_string();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(async move {
                let client = Client::connect(client_config).await?;
                let mut consumer = Consumer::new(client, config);
                consumer
                    .subscribe_with_listener(&[&topic], Box::new(Recorder(Arc::clone(&recorded))))
                    .await?;
                let _ = started_tx.send(());
                loop {
                    let how = *stopped.borrow_and_update();
                    match how {
                        Some(true) => return Ok(consumer.close().await?),
                        Some(false) => {
                            std::mem::forget(consumer);
                            return Ok(());
                        }
                        None => {}
                    }
                    let records = consumer.poll(Duration::from_millis(100)).await?;
                    let mut seen = recorded.lock().unwrap();
                    seen.records
                        .extend(records.iter().map(|r| (r.partition, r.offset)));
                }
            });
            runtime.shutdown_background();
            outcome
        });
        let _ = started_rx.await;
        Ok(Member { seen, stop, thread })
    }

    fn assignment(&self) -> BTreeSet<i32> {
        self.seen.lock().unwrap().assignment.clone()
    }

    fn records(&self) -> Vec<(i32, i64)> {
        self.seen.lock().unwrap().records.clone()
    }

    async fn finish(self, close: bool) -> anyhow::Result<Arc<Mutex<Seen>>> {
        let _ = self.stop.send(Some(close));
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("member thread panicked"))??;
        Ok(self.seen)
    }

    /// Commits, leaves the group, and stops.
    async fn close(self) -> anyhow::Result<Arc<Mutex<Seen>>> {
        self.finish(true).await
    }

    /// Stops heartbeating and polling without leaving the group.
    async fn kill(self) -> anyhow::Result<Arc<Mutex<Seen>>> {
        self.finish(false).await
    }
}

async fn produce(client: &Client, topic: &str, from: usize, count: usize) -> anyhow::Result<()> {
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    let mut deliveries = Vec::with_capacity(count);
    for i in from..from + count {
        let value = format!("record-{i}");
        let key = format!("key-{i}");
        let record = ProducerRecord::new(topic, value.as_bytes()).key(key.as_bytes());
        deliveries.push(producer.send(record).await?);
    }
    for delivery in deliveries {
        delivery.await?;
    }
    producer.close().await?;
    Ok(())
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Whether the members' assignments are disjoint and cover `0..partitions`.
fn covers(members: &[&Member], partitions: i32) -> bool {
    let mut all = BTreeSet::new();
    for member in members {
        for p in member.assignment() {
            if !all.insert(p) {
                return false;
            }
        }
    }
    all == (0..partitions).collect()
}

/// Log end offset per partition.
async fn log_ends(
    client: &Client,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let asks: Vec<_> = (0..partitions)
        .map(|p| {
            (
                TopicPartition::new(topic, p),
                skiff_client::OffsetSpec::Latest,
            )
        })
        .collect();
    Ok(skiff_client::consumer::list_offsets(client, &asks)
        .await?
        .into_iter()
        .map(|(tp, listed)| (tp.partition, listed.offset))
        .collect())
}

/// Every offset below the log end was seen at least once (none skipped).
fn check_none_skipped(seen: &[(i32, i64)], ends: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
    let set: BTreeSet<(i32, i64)> = seen.iter().copied().collect();
    for (partition, end) in ends {
        for offset in 0..*end {
            ensure!(
                set.contains(&(*partition, offset)),
                "record {partition}@{offset} was never consumed"
            );
        }
    }
    Ok(())
}

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

/// Keeps producing records to `topic` until told to stop; returns how many.
fn spawn_producer(
    client: Client,
    topic: &str,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<usize>>,
) {
    let (stop, stopped) = watch::channel(false);
    let topic = topic.to_string();
    let task = tokio::spawn(async move {
        let mut sent = 0;
        while !*stopped.borrow() {
            produce(&client, &topic, sent, 24).await?;
            sent += 24;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(sent)
    });
    (stop, task)
}

/// With cooperative-sticky, a member joining, a member leaving and a member
/// dying (its session times out) move partitions; members revoke only the
/// partitions that move, never lose any in a clean rebalance, and with
/// commit on revoke every record produced throughout is consumed at least
/// once, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_join_leave_and_death_skip_nothing() -> anyhow::Result<()> {
    skiff_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    let topic = "moving";
    create_topic(&client, topic, 12).await?;
    let (stop_producing, producing) = spawn_producer(client.clone(), topic);
    let config = || group_config("coop", "cooperative-sticky");
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
    {
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
