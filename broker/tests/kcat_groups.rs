//! Consumer groups with a client we did not write: kcat (librdkafka 2.0)
//! balanced consumers (`kcat -G`) against a real skiffd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod group_util;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::Skiffd;
use group_util::{fetch_after_load, FAST_GROUPS};

const PARTITIONS: i32 = 6;

/// A `kcat -G` consumer whose output lines are collected as they come.
struct GroupConsumer {
    child: Child,
    /// Partitions of the consumed records (`-f '%p\n'`).
    consumed: Arc<Mutex<Vec<String>>>,
    /// librdkafka's rebalance lines on stderr.
    events: Arc<Mutex<Vec<String>>>,
}

fn collect(reader: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl GroupConsumer {
    fn start(broker: &Skiffd, group: &str, topic: &str) -> Result<GroupConsumer> {
        let mut child = Command::new("kcat")
            .arg("-b")
            .arg(broker.bootstrap())
            .args(["-X", "broker.address.family=v4"])
            .args(["-G", group])
            .args(["-X", "session.timeout.ms=2000"])
            .args(["-X", "heartbeat.interval.ms=300"])
            .args(["-X", "topic.auto.offset.reset=earliest"])
            .args(["-u", "-f", "%p %s\\n"])
            .arg(topic)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kcat (Debian package kcat)")?;
        let consumed = collect(child.stdout.take().context("stdout")?);
        let events = collect(child.stderr.take().context("stderr")?);
        Ok(GroupConsumer {
            child,
            consumed,
            events,
        })
    }

    /// The partitions of the last assignment kcat reported, if any since
    /// the last revocation.
    fn assignment(&self) -> BTreeSet<i32> {
        let events = self.events.lock().unwrap();
        let Some(last) = events
            .iter()
            .rev()
            .find(|l| l.contains("assigned:") || l.contains("revoked:"))
        else {
            return BTreeSet::new();
        };
        if last.contains("revoked:") {
            return BTreeSet::new();
        }
        let list = last.split("assigned:").nth(1).unwrap_or_default();
        list.split(',')
            .filter_map(|p| {
                let inside = p.split('[').nth(1)?.split(']').next()?;
                inside.trim().parse().ok()
            })
            .collect()
    }

    fn consumed_values(&self) -> BTreeSet<String> {
        self.consumed
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.split_once(' ').map(|(_, v)| v.to_string()))
            .collect()
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces `values` to `partition` with kcat.
fn produce(broker: &Skiffd, topic: &str, partition: i32, values: &[String]) -> Result<()> {
    let mut child = Command::new("kcat")
        .arg("-b")
        .arg(broker.bootstrap())
        .args(["-X", "broker.address.family=v4", "-P", "-t", topic])
        .arg("-p")
        .arg(partition.to_string())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = String::new();
    for value in values {
        input.push_str(value);
        input.push('\n');
    }
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "kcat -P failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Waits until the consumers' current assignments are disjoint, each
/// non-empty, and together cover every partition.
fn wait_for_split(consumers: &[&GroupConsumer], what: &str) -> Result<Vec<BTreeSet<i32>>> {
    let started = Instant::now();
    loop {
        let sets: Vec<BTreeSet<i32>> = consumers.iter().map(|c| c.assignment()).collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let all: BTreeSet<i32> = (0..PARTITIONS).collect();
        if total == all.len() && union == all && sets.iter().all(|s| !s.is_empty()) {
            return Ok(sets);
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{what}: no disjoint covering assignment, last {sets:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the consumers together have consumed every one of `values`.
fn wait_consumed(consumers: &[GroupConsumer], values: &[String], failure: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let seen: BTreeSet<String> = consumers.iter().flat_map(|c| c.consumed_values()).collect();
        if values.iter().all(|v| seen.contains(v)) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{failure}: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three kcat consumers split six partitions disjointly; when one is
/// killed (no LeaveGroup), its session times out and the other two take
/// over its partitions and consume what is produced there.
#[test]
fn kcat_consumers_split_partitions_and_take_over() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("shared", PARTITIONS, &[])?, 0);
    let consumers: Vec<GroupConsumer> = (0..3)
        .map(|_| GroupConsumer::start(&broker, "kgroup", "shared"))
        .collect::<Result<_>>()?;
    let refs: Vec<&GroupConsumer> = consumers.iter().collect();
    let split = wait_for_split(&refs, "three consumers")?;
    assert!(
        split.iter().all(|s| s.len() == 2),
        "range gives 2 each: {split:?}"
    );

    let before: Vec<String> = (0..PARTITIONS).map(|p| format!("before-{p}")).collect();
    for (p, value) in before.iter().enumerate() {
        produce(&broker, "shared", p as i32, std::slice::from_ref(value))?;
    }
    wait_consumed(&consumers, &before, "not every record consumed")?;

    let mut consumers = consumers;
    let mut victim = consumers.remove(0);
    let orphaned = victim.assignment();
    victim.child.kill()?;
    victim.child.wait()?;
    let killed_at = Instant::now();
    let refs: Vec<&GroupConsumer> = consumers.iter().collect();
    let split = wait_for_split(&refs, "after the kill")?;
    assert!(
        killed_at.elapsed() >= Duration::from_millis(1000),
        "takeover waited for the session timeout"
    );
    assert_eq!(split.iter().map(BTreeSet::len).sum::<usize>(), 6);

    let after: Vec<String> = orphaned.iter().map(|p| format!("after-{p}")).collect();
    for (p, value) in orphaned.iter().zip(&after) {
        produce(&broker, "shared", *p, std::slice::from_ref(value))?;
    }
    wait_consumed(
        &consumers,
        &after,
        "the killed consumer's partitions were not taken over",
    )?;
    Ok(())
}

/// Runs `kcat -G group -e` until every assigned partition is at its end;
/// returns the consumed values.
fn consume_to_end(broker: &Skiffd, group: &str, topic: &str) -> Result<Vec<String>> {
    let output = Command::new("kcat")
        .arg("-b")
        .arg(broker.bootstrap())
        .args(["-X", "broker.address.family=v4", "-G", group, "-e"])
        .args(["-X", "topic.auto.offset.reset=earliest"])
        .args(["-f", "%s\\n", topic])
        .stdin(Stdio::null())
        .output()
        .context("running kcat")?;
    if !output.status.success() {
        bail!(
            "kcat -G -e failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut values: Vec<String> = String::from_utf8(output.stdout)?
        .lines()
        .map(str::to_string)
        .collect();
    values.sort();
    Ok(values)
}

/// kcat's committed offsets survive SIGKILL of the broker: after a
/// restart the group resumes where it stopped, reading only new records.
#[test]
fn kcat_committed_offsets_survive_broker_sigkill() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("resume", 3, &[])?, 0);
    let first: Vec<String> = (0..30).map(|i| format!("first-{i:02}")).collect();
    for p in 0..3 {
        let part: Vec<String> = first.iter().skip(p).step_by(3).cloned().collect();
        produce(&broker, "resume", p as i32, &part)?;
    }
    let mut expected = first.clone();
    expected.sort();
    assert_eq!(consume_to_end(&broker, "resumers", "resume")?, expected);
    let committed = fetch_after_load(&mut client, "resumers")?;
    assert_eq!(
        committed.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
        vec![(0, 10), (1, 10), (2, 10)],
        "kcat committed the end of each partition"
    );
    drop(client);
    broker.kill()?;

    let broker = Skiffd::start(dir.path(), FAST_GROUPS)?;
    let mut client = broker.connect()?;
    assert_eq!(fetch_after_load(&mut client, "resumers")?, committed);
    let second: Vec<String> = (0..6).map(|i| format!("second-{i}")).collect();
    for p in 0..3 {
        let part: Vec<String> = second.iter().skip(p).step_by(3).cloned().collect();
        produce(&broker, "resume", p as i32, &part)?;
    }
    assert_eq!(
        consume_to_end(&broker, "resumers", "resume")?,
        second,
        "only the records after the committed offsets"
    );
    Ok(())
}
