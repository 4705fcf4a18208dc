//! Group-member harness for the consumer group tests: skiff-client members
//! on their own threads (so a test can kill one), what their listeners saw,
//! and checks on what was consumed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use skiff_client::{
    Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    RebalanceListener, TopicPartition,
};
use tokio::sync::watch;

/// Broker flags that keep group tests fast: short sessions allowed, no
/// initial rebalance delay, few offsets partitions.
pub const FAST_GROUPS: &[&str] = &[
    "--group-min-session-timeout-ms",
    "500",
    "--group-initial-rebalance-delay-ms",
    "0",
    "--offsets-topic-partitions",
    "4",
];

pub fn group_config(group: &str, strategy: &str) -> ConsumerConfig {
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
pub struct Seen {
    /// (partition, offset) of every record polled, in order.
    pub records: Vec<(i32, i64)>,
    /// Partitions owned now, by the listener's account.
    pub assignment: BTreeSet<i32>,
    /// Each revocation's partitions.
    pub revoked: Vec<Vec<i32>>,
    /// Each loss's partitions.
    pub lost: Vec<Vec<i32>>,
}

pub struct Recorder(pub Arc<Mutex<Seen>>);

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
pub struct Member {
    /// What it saw so far.
    pub seen: Arc<Mutex<Seen>>,
    stop: watch::Sender<Option<bool>>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Member {
    pub async fn start(
        client_config: skiff_client::ClientConfig,
        config: ConsumerConfig,
        topic: &str,
    ) -> anyhow::Result<Member> {
        Self::start_topics(client_config, config, &[topic]).await
    }

    pub async fn start_topics(
        client_config: skiff_client::ClientConfig,
        config: ConsumerConfig,
        topics: &[&str],
    ) -> anyhow::Result<Member> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        // None: keep polling; Some(true): close (commit, leave); Some(false):
        // vanish without a word.
        let (stop, mut stopped) = watch::channel(None);
        let recorded = Arc::clone(&seen);
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(async move {
                let client = Client::connect(client_config).await?;
                let mut consumer = Consumer::new(client, config);
                consumer
                    .subscribe_with_listener(
                        &topics.iter().map(String::as_str).collect::<Vec<_>>(),
                        Box::new(Recorder(Arc::clone(&recorded))),
                    )
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

    pub fn assignment(&self) -> BTreeSet<i32> {
        self.seen.lock().unwrap().assignment.clone()
    }

    pub fn records(&self) -> Vec<(i32, i64)> {
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
    pub async fn close(self) -> anyhow::Result<Arc<Mutex<Seen>>> {
        self.finish(true).await
    }

    /// Stops heartbeating and polling without leaving the group.
    pub async fn kill(self) -> anyhow::Result<Arc<Mutex<Seen>>> {
        self.finish(false).await
    }
}

pub async fn produce(
    client: &Client,
    topic: &str,
    from: usize,
    count: usize,
) -> anyhow::Result<()> {
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

pub async fn wait_until(
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
pub fn covers(members: &[&Member], partitions: i32) -> bool {
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
pub async fn log_ends(
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
pub fn check_none_skipped(seen: &[(i32, i64)], ends: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
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

/// Keeps producing records to `topic` until told to stop; returns how many.
pub fn spawn_producer(
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
