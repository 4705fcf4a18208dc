//! `skiff groups …` and `skiff consume --group` run as a user would, against
//! a real skiffd, together with kcat (librdkafka 2.0) group consumers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use skiff_client::{Producer, ProducerConfig, ProducerRecord, Transport};
use skiff_tests::groups::FAST_GROUPS;
use skiff_tests::{create_topic, kcat_available, skiff_bin, skiffd_bin, Broker};

fn skiff_command(broker: &Broker, args: &[&str]) -> Command {
    let mut command = Command::new(skiff_bin!());
    command
        .arg("--bootstrap")
        .arg(broker.bootstrap(Transport::Tcp))
        .args(args)
        .env_remove("SKIFF_BOOTSTRAP")
        .stdin(Stdio::null());
    command
}

fn skiff(broker: &Broker, args: &[&str]) -> anyhow::Result<Output> {
    Ok(skiff_command(broker, args).output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ok(output: Output) -> anyhow::Result<String> {
    ensure!(
        output.status.success(),
        "skiff failed ({:?}): {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout(&output))
}

/// The describe table: partition → (committed, log end, lag, member).
fn offsets_table(describe: &str) -> BTreeMap<i32, (String, String, String, String)> {
    describe
        .lines()
        .skip_while(|l| !l.starts_with("TOPIC\t"))
        .skip(1)
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            let [_, partition, committed, end, lag, member] = cells.as_slice() else {
                return None;
            };
            Some((
                partition.parse().ok()?,
                (
                    committed.to_string(),
                    end.to_string(),
                    lag.to_string(),
                    member.to_string(),
                ),
            ))
        })
        .collect()
}

async fn produce(broker: &Broker, topic: &str, count: usize) -> anyhow::Result<()> {
    let client = broker.client(Transport::Tcp).await?;
    let producer = Producer::new(client, ProducerConfig::default()).await?;
    let mut deliveries = Vec::new();
    for i in 0..count {
        let value = format!("value-{i:05}");
        let key = format!("key-{i}");
        deliveries.push(
            producer
                .send(ProducerRecord::new(topic, value.as_bytes()).key(key.as_bytes()))
                .await?,
        );
    }
    for delivery in deliveries {
        delivery.await?;
    }
    producer.close().await?;
    Ok(())
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A background process whose stdout lines are collected; SIGKILLed on drop.
struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Background {
    fn spawn(mut command: Command) -> anyhow::Result<Background> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let reader = child.stdout.take().context("stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Ok(Background { child, lines })
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `skiff consume --group` commits what it printed; `groups list` and
/// `groups describe` show the group, committed offsets, log ends and lag;
/// `reset-offsets` and `delete` are refused (exit 8) while a member is
/// active, work once its session expired after a SIGKILL, and a deleted
/// group is not found (exit 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_cli_describe_reset_delete() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, "orders", 3).await?;
    produce(&broker, "orders", 90).await?;

    // 50 records, then exit: commits exactly what it printed.
    let first = ok(skiff(
        &broker,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from",
            "beginning",
            "-n",
            "50",
        ],
    )?)?;
    ensure!(first.lines().count() == 50);
    let describe = ok(skiff(&broker, &["groups", "describe", "billing"])?)?;
    ensure!(
        describe.starts_with("group billing state Empty"),
        "{describe}"
    );
    let table = offsets_table(&describe);
    let committed: i64 = table
        .values()
        .map(|r| r.0.parse::<i64>().unwrap_or(0))
        .sum();
    let lag: i64 = table
        .values()
        .map(|r| r.2.parse::<i64>().unwrap_or(0))
        .sum();
    ensure!(committed == 50 && lag == 40, "{describe}");

    // The rest, then exit at the end: the two runs saw every record once.
    let second = ok(skiff(
        &broker,
        &["consume", "orders", "--group", "billing", "-e"],
    )?)?;
    let mut all: Vec<&str> = first.lines().chain(second.lines()).collect();
    all.sort_unstable();
    let expected: Vec<String> = (0..90).map(|i| format!("value-{i:05}")).collect();
    ensure!(
        all == expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "{} records",
        all.len()
    );
    let listed = ok(skiff(&broker, &["groups", "list"])?)?;
    ensure!(
        listed.lines().any(|l| l == "billing\tEmpty\tconsumer"),
        "{listed}"
    );

    ok(skiff(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-earliest",
        ],
    )?)?;
    let table = offsets_table(&ok(skiff(&broker, &["groups", "describe", "billing"])?)?);
    ensure!(
        table.len() == 3 && table.values().all(|r| r.0 == "0" && r.2 == r.1),
        "{table:?}"
    );
    ok(skiff(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-offset",
            "5",
            "-p",
            "1",
        ],
    )?)?;
    let table = offsets_table(&ok(skiff(&broker, &["groups", "describe", "billing"])?)?);
    ensure!(table[&1].0 == "5" && table[&0].0 == "0", "{table:?}");

    // A live member: its partitions show in describe, and the group's
    // offsets are its own.
    let mut member = Background::spawn(skiff_command(
        &broker,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--session-timeout-ms",
            "1500",
        ],
    ))?;
    wait_until(
        "the member to own all partitions",
        Duration::from_secs(15),
        || {
            let table = offsets_table(&stdout(&skiff(
                &broker,
                &["groups", "describe", "billing"],
            )?));
            Ok(table.len() == 3 && table.values().all(|r| r.3 != "-"))
        },
    )?;
    let refused = skiff(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-latest",
        ],
    )?;
    ensure!(refused.status.code() == Some(8), "{refused:?}");
    ensure!(
        String::from_utf8_lossy(&refused.stderr).contains("active member"),
        "{refused:?}"
    );
    let refused = skiff(&broker, &["groups", "delete", "billing"])?;
    ensure!(refused.status.code() == Some(8), "{refused:?}");

    // SIGKILL: no LeaveGroup; the coordinator drops it after its session.
    member.kill();
    wait_until(
        "the dead member's session to expire",
        Duration::from_secs(15),
        || {
            Ok(skiff(&broker, &["groups", "describe", "billing"])?
                .status
                .success()
                && stdout(&skiff(&broker, &["groups", "describe", "billing"])?)
                    .contains("members 0"))
        },
    )?;
    ok(skiff(
        &broker,
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-latest",
        ],
    )?)?;
    let table = offsets_table(&ok(skiff(&broker, &["groups", "describe", "billing"])?)?);
    ensure!(table.values().all(|r| r.2 == "0"), "{table:?}");
    ok(skiff(&broker, &["groups", "delete", "billing"])?)?;
    let gone = skiff(&broker, &["groups", "describe", "billing"])?;
    ensure!(gone.status.code() == Some(4), "{gone:?}");
    let bad = skiff(
        &broker,
        &["groups", "reset-offsets", "billing", "--topic", "orders"],
    )?;
    ensure!(
        bad.status.code() == Some(2),
        "no --to-* is bad usage: {bad:?}"
    );
    Ok(())
}

fn kcat_member(
    broker: &Broker,
    group: &str,
    topic: &str,
    strategy: &str,
) -> anyhow::Result<Background> {
    let mut command = Command::new("kcat");
    command
        .arg("-b")
        .arg(broker.bootstrap(Transport::Tcp))
        .args(["-X", "broker.address.family=v4"])
        .args(["-G", group])
        .arg("-X")
        .arg(format!("partition.assignment.strategy={strategy}"))
        .args(["-X", "session.timeout.ms=3000"])
        .args(["-X", "heartbeat.interval.ms=300"])
        .args(["-X", "auto.commit.interval.ms=200"])
        .args(["-X", "topic.auto.offset.reset=earliest"])
        .args(["-u", "-f", "%s\\n"])
        .arg(topic)
        .stdin(Stdio::null());
    Background::spawn(command)
}

fn skiff_member(
    broker: &Broker,
    group: &str,
    topic: &str,
    strategy: &str,
) -> anyhow::Result<Background> {
    Background::spawn(skiff_command(
        broker,
        &[
            "consume",
            topic,
            "--group",
            group,
            "--from",
            "beginning",
            "--assignment-strategy",
            strategy,
            "--session-timeout-ms",
            "3000",
        ],
    ))
}

/// A broker with `topic`, when kcat is installed.
async fn broker_for_kcat(
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Option<(tempfile::TempDir, Broker)>> {
    if !kcat_available() {
        eprintln!("kcat not installed; skipping");
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_with(skiffd_bin!(), dir.path(), FAST_GROUPS)?;
    create_topic(&broker.client(Transport::Tcp).await?, topic, partitions).await?;
    Ok(Some((dir, broker)))
}

/// kcat `-G` consumers (librdkafka 2.0.2, range assignor) and a skiff
/// consumer in one group split the partitions between them; kcat's
/// committed offsets show in `skiff groups describe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_and_skiff_share_a_group() -> anyhow::Result<()> {
    let Some((_dir, broker)) = broker_for_kcat("shared", 12).await? else {
        return Ok(());
    };
    let kcat_a = kcat_member(&broker, "mixed", "shared", "range")?;
    let kcat_b = kcat_member(&broker, "mixed", "shared", "range")?;
    let skiff_member = skiff_member(&broker, "mixed", "shared", "range")?;
    let mut last = String::new();
    wait_until(
        "three members to split 12 partitions",
        Duration::from_secs(20),
        || {
            last = stdout(&skiff(&broker, &["groups", "describe", "mixed"])?);
            let members: Vec<&str> = last.lines().filter(|l| l.starts_with("member ")).collect();
            let owned: Vec<&str> = members
                .iter()
                .filter_map(|l| l.split(" partitions ").nth(1))
                .flat_map(|p| p.split(','))
                .filter(|p| *p != "-")
                .collect();
            let distinct: BTreeSet<&&str> = owned.iter().collect();
            Ok(members.len() == 3
                && owned.len() == 12
                && distinct.len() == 12
                && members.iter().all(|l| !l.ends_with("partitions -"))
                && last.contains("protocol range"))
        },
    )
    .with_context(|| last.clone())?;
    ensure!(
        last.lines()
            .filter(|l| l.contains("client rdkafka"))
            .count()
            == 2,
        "{last}"
    );
    ensure!(
        last.lines()
            .filter(|l| l.contains("client skiff-cli"))
            .count()
            == 1,
        "{last}"
    );
    // Produced once the group is settled, so each member reads (and
    // commits) exactly its own share; the partitions kcat owns show kcat's
    // commits.
    produce(&broker, "shared", 600).await?;
    let mut describe = String::new();
    wait_until(
        "every record consumed and committed",
        Duration::from_secs(20),
        || {
            describe = stdout(&skiff(&broker, &["groups", "describe", "mixed"])?);
            let table = offsets_table(&describe);
            Ok(table.len() == 12 && table.values().all(|r| r.2 == "0"))
        },
    )?;
    let kcat_members: BTreeSet<&str> = describe
        .lines()
        .filter(|l| l.starts_with("member ") && l.contains("client rdkafka"))
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    let table = offsets_table(&describe);
    let by_kcat: Vec<_> = table
        .values()
        .filter(|r| kcat_members.contains(r.3.as_str()))
        .collect();
    ensure!(!by_kcat.is_empty(), "{describe}");
    ensure!(
        by_kcat.iter().all(|r| r.0 == r.1 && r.0 != "-"),
        "{describe}"
    );
    // Each kcat read its own share: 600 distinct records between the three.
    let mut values: Vec<String> = kcat_a.lines();
    values.extend(kcat_b.lines());
    ensure!(!values.is_empty(), "kcat consumed nothing");
    values.extend(skiff_member.lines());
    values.sort();
    values.dedup();
    ensure!(
        values.len() == 600,
        "{} distinct records consumed",
        values.len()
    );
    Ok(())
}

/// Incremental rebalancing with a client we did not write: kcat members
/// (librdkafka's cooperative-sticky) and a skiff consumer in one
/// cooperative group split the partitions, the skiff consumer takes over
/// when kcat is killed, and every record produced is consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_and_skiff_cooperative_group() -> anyhow::Result<()> {
    let Some((_dir, broker)) = broker_for_kcat("coop", 6).await? else {
        return Ok(());
    };
    let skiff_member = skiff_member(&broker, "coop", "coop", "cooperative-sticky")?;
    let mut kcat = kcat_member(&broker, "coop", "coop", "cooperative-sticky")?;
    let mut last = String::new();
    let owners = |describe: &str| -> BTreeMap<String, usize> {
        describe
            .lines()
            .filter(|l| l.starts_with("member "))
            .map(|l| {
                let client = l
                    .split(" client ")
                    .nth(1)
                    .and_then(|c| c.split(' ').next())
                    .unwrap_or("");
                let owned = l
                    .split(" partitions ")
                    .nth(1)
                    .map_or(0, |p| p.split(',').filter(|p| *p != "-").count());
                (client.to_string(), owned)
            })
            .collect()
    };
    wait_until(
        "kcat and skiff to share 6 partitions",
        Duration::from_secs(20),
        || {
            last = stdout(&skiff(&broker, &["groups", "describe", "coop"])?);
            let owned = owners(&last);
            Ok(owned.len() == 2
                && owned.values().all(|n| *n == 3)
                && last.contains("protocol cooperative-sticky"))
        },
    )
    .with_context(|| last.clone())?;
    produce(&broker, "coop", 300).await?;
    wait_until("the records to be read", Duration::from_secs(20), || {
        Ok(skiff_member.lines().len() + kcat.lines().len() >= 300)
    })?;
    ensure!(!kcat.lines().is_empty() && !skiff_member.lines().is_empty());
    kcat.kill();
    wait_until(
        "skiff to take over kcat's partitions",
        Duration::from_secs(20),
        || {
            last = stdout(&skiff(&broker, &["groups", "describe", "coop"])?);
            Ok(owners(&last).get("skiff-cli") == Some(&6))
        },
    )
    .with_context(|| last.clone())?;
    let mut values: Vec<String> = skiff_member
        .lines()
        .into_iter()
        .chain(kcat.lines())
        .collect();
    values.sort();
    values.dedup();
    ensure!(
        values.len() == 300,
        "{} distinct records consumed",
        values.len()
    );
    Ok(())
}
