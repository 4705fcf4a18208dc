//! One consumer group, three unmodified Kafka clients: kafka-python,
//! confluent-kafka (librdkafka 2.16) and kcat (librdkafka 2.0), all with the
//! range assignor. The broker must run their join/sync/heartbeat protocol,
//! store what they commit, and describe the group to a fourth client.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use skiff_client::{Producer, ProducerConfig, ProducerRecord, Transport};
use skiff_tests::python::{
    ensure_python_clients, python_client_command, run_python_client, PythonClient,
};
use skiff_tests::{create_topic, kcat_available, skiffd_bin, Broker};

const PARTITIONS: i32 = 12;
const RECORDS: usize = 1200;
const GROUP: &str = "mixed";
const TOPIC: &str = "mixed-events";

/// A group member process whose stdout goes to a file; killed on drop.
struct Member {
    name: &'static str,
    child: Child,
    output: PathBuf,
}

impl Member {
    fn spawn(name: &'static str, mut command: Command, dir: &Path) -> anyhow::Result<Member> {
        let output = dir.join(format!("{name}.out"));
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&output)?)
            .stderr(File::create(dir.join(format!("{name}.err")))?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Member {
            name,
            child,
            output,
        })
    }

    /// Waits for a clean exit (the member commits and leaves on the way out).
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let stderr = std::fs::read_to_string(self.output.with_extension("err"))?;
                ensure!(status.success(), "{} exited {status}: {stderr}", self.name);
                return Ok(std::fs::read_to_string(&self.output)?);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, serde::Deserialize)]
struct Described {
    state: String,
    members: Vec<DescribedMember>,
    offsets: BTreeMap<String, i64>,
}

#[derive(Debug, serde::Deserialize)]
struct DescribedMember {
    client_id: String,
    partitions: Vec<i32>,
}

fn describe(bootstrap: &str) -> anyhow::Result<Described> {
    let rows = run_python_client(PythonClient::KafkaPython, "describe", bootstrap, GROUP, &[])?;
    let row = rows
        .into_iter()
        .next()
        .context("describe printed nothing")?;
    Ok(serde_json::from_value(row)?)
}

/// Polls the group description until `done` holds or `timeout` passes.
fn describe_until(
    bootstrap: &str,
    timeout: Duration,
    done: impl Fn(&Described) -> bool,
) -> anyhow::Result<Described> {
    let deadline = Instant::now() + timeout;
    loop {
        // Errors are retried: right after a restart the coordinator may
        // still be loading.
        let last = match describe(bootstrap) {
            Ok(described) if done(&described) => return Ok(described),
            Ok(described) => format!("{described:?}"),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("group never reached the expected state: {last}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// (partition, offset) -> value of every record a member printed.
fn consumed(member: &str, output: &str) -> anyhow::Result<Vec<((i32, i64), String)>> {
    let mut records = Vec::new();
    for line in output.lines() {
        if member == "kcat" {
            let mut fields = line.splitn(3, ' ');
            let partition = fields.next().context("partition")?.parse()?;
            let offset = fields.next().context("offset")?.parse()?;
            let value = fields.next().context("value")?.to_owned();
            records.push(((partition, offset), value));
        } else {
            let row: serde_json::Value = serde_json::from_str(line)?;
            if row.get("assigned").is_some() {
                continue;
            }
            let partition = row["partition"].as_i64().context("partition")? as i32;
            let offset = row["offset"].as_i64().context("offset")?;
            let value = row["value"].as_str().context("value")?.to_owned();
            records.push(((partition, offset), value));
        }
    }
    Ok(records)
}

/// kafka-python, confluent-kafka and kcat split 12 partitions 4/4/4, consume
/// every record exactly once, and their commits are what the group
/// describes, also after a SIGKILL of the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kafka_clients_share_one_group() -> anyhow::Result<()> {
    ensure_python_clients()?;
    ensure!(
        kcat_available(),
        "kcat is required for the Kafka compatibility tests"
    );
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(skiffd_bin!(), &dir.path().join("data"))?;
    let client = broker.client(Transport::Tcp).await?;
    create_topic(&client, TOPIC, PARTITIONS).await?;
    let bootstrap = broker.tcp.to_string();
    let stop_file = dir.path().join("stop");
    let stop = stop_file.to_string_lossy().into_owned();

    let mut members = Vec::new();
    for python in PythonClient::ALL {
        let command =
            python_client_command(python, "group", &bootstrap, TOPIC, &[GROUP, "range", &stop]);
        members.push(Member::spawn(python.name(), command, dir.path())?);
    }
    let mut kcat = Command::new("kcat");
    kcat.args(["-b", &bootstrap, "-G", GROUP, "-q", "-f", "%p %o %s\n"])
        .args(["-X", "partition.assignment.strategy=range"])
        .args([
            "-X",
            "session.timeout.ms=10000",
            "-X",
            "auto.commit.interval.ms=200",
        ])
        .args(["-X", "auto.offset.reset=earliest", TOPIC]);
    members.push(Member::spawn("kcat", kcat, dir.path())?);

    // Range over 12 partitions and 3 members: 4 contiguous partitions each.
    let stable = describe_until(&bootstrap, Duration::from_secs(40), |d| {
        d.state == "Stable"
            && d.members.len() == 3
            && d.members.iter().all(|m| !m.partitions.is_empty())
    })?;
    let mut owned = BTreeSet::new();
    for member in &stable.members {
        ensure!(
            member.partitions.len() == 4,
            "uneven range assignment: {stable:?}"
        );
        ensure!(
            member.partitions.windows(2).all(|w| w[1] == w[0] + 1),
            "range assigns contiguous partitions: {stable:?}"
        );
        for &partition in &member.partitions {
            ensure!(
                owned.insert(partition),
                "partition {partition} assigned twice: {stable:?}"
            );
        }
    }
    ensure!(
        owned == (0..PARTITIONS).collect(),
        "not every partition assigned: {stable:?}"
    );
    let client_ids: BTreeSet<_> = stable
        .members
        .iter()
        .map(|m| m.client_id.as_str())
        .collect();
    ensure!(
        client_ids == BTreeSet::from(["confluent", "kafka-python", "rdkafka"]),
        "{client_ids:?}"
    );

    // Produced only once the group is stable: one generation, so exactly once.
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let key = format!("key-{i}");
        let value = format!("record-{i}");
        let record = ProducerRecord::new(TOPIC, value.as_bytes()).key(key.as_bytes());
        let delivery = producer.send(record).await?;
        deliveries.push((value, delivery));
    }
    producer.flush().await?;
    let mut produced = BTreeMap::new();
    let mut end_offsets: BTreeMap<String, i64> =
        (0..PARTITIONS).map(|p| (p.to_string(), 0)).collect();
    for (value, delivery) in deliveries {
        let metadata = delivery.await?;
        produced.insert((metadata.partition, metadata.offset), value);
        let end = end_offsets
            .entry(metadata.partition.to_string())
            .or_default();
        *end = (*end).max(metadata.offset + 1);
    }

    describe_until(&bootstrap, Duration::from_secs(40), |d| {
        d.offsets == end_offsets
    })?;
    std::fs::write(&stop_file, b"")?;
    for member in &mut members {
        if member.name == "kcat" {
            // kcat commits and leaves the group on SIGTERM.
            // SAFETY: kill(2) with a pid we spawned; no memory is involved.
            let rc = unsafe { libc::kill(member.child.id() as libc::pid_t, libc::SIGTERM) };
            ensure!(rc == 0, "cannot signal kcat");
        }
    }
    let mut seen: BTreeMap<(i32, i64), (String, &'static str)> = BTreeMap::new();
    for member in &mut members {
        let output = member.wait(Duration::from_secs(30))?;
        for (position, value) in consumed(member.name, &output)? {
            if let Some((_, first)) = seen.insert(position, (value, member.name)) {
                bail!("{position:?} consumed by both {first} and {}", member.name);
            }
        }
    }
    ensure!(
        seen.len() == produced.len(),
        "consumed {} of {}",
        seen.len(),
        produced.len()
    );
    for (position, value) in &produced {
        let (got, by) = seen
            .get(position)
            .with_context(|| format!("{position:?} never consumed"))?;
        ensure!(
            got == value,
            "{position:?}: {by} read {got:?}, produced {value:?}"
        );
    }

    let empty = describe_until(&bootstrap, Duration::from_secs(20), |d| {
        d.members.is_empty()
    })?;
    ensure!(
        empty.state == "Empty" && empty.offsets == end_offsets,
        "{empty:?}"
    );
    broker.kill();
    broker.restart()?;
    let restarted = describe_until(&broker.tcp.to_string(), Duration::from_secs(20), |d| {
        d.state == "Empty"
    })?;
    ensure!(
        restarted.offsets == end_offsets,
        "after SIGKILL: {restarted:?}"
    );
    Ok(())
}
