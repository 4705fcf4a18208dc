//! Kafka compatibility with a client we did not write: kcat (librdkafka).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use common::Skiffd;
use skiff_protocol::partition::partition_for_key;

fn kcat(broker: &Skiffd, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut command = Command::new("kcat");
    command
        .arg("-b")
        .arg(broker.bootstrap())
        .args(["-X", "broker.address.family=v4"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .context("running kcat (Debian package kcat)")?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "kcat {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

fn lines(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            (
                format!("key-{i}"),
                format!("value {i} \u{00e9}\u{2603} {}", "x".repeat(i % 50)),
            )
        })
        .collect()
}

/// Reads every partition back; returns partition → [(key, value)] in offset order.
fn consume_all(
    broker: &Skiffd,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, Vec<(String, String)>>> {
    let mut out = BTreeMap::new();
    for partition in 0..partitions {
        let text = kcat(
            broker,
            &[
                "-C",
                "-t",
                topic,
                "-p",
                &partition.to_string(),
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%k\t%s\n",
            ],
            None,
        )?;
        let records = text
            .lines()
            .map(|line| {
                let (key, value) = line.split_once('\t').unwrap_or((line, ""));
                (key.to_string(), value.to_string())
            })
            .collect();
        out.insert(partition, records);
    }
    Ok(out)
}

/// kcat -L lists the broker and topics; keyed records produced with the murmur2 partitioner
/// land where Kafka's partitioner says; every record reads back byte-identical, also after a restart.
#[test]
fn kcat_metadata_produce_consume_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &["--topic-partitions", "4"])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("kcat-topic", 4, &[])?, 0);

    let listing = kcat(&broker, &["-L"], None)?;
    assert!(
        listing.contains("topic \"kcat-topic\" with 4 partitions"),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("broker 0 at 127.0.0.1:{}", broker.tcp.port())),
        "{listing}"
    );

    let records = lines(200);
    let input: String = records.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    kcat(
        &broker,
        &[
            "-P",
            "-t",
            "kcat-topic",
            "-K:",
            "-X",
            "topic.partitioner=murmur2_random",
            "-X",
            "acks=all",
        ],
        Some(&input),
    )?;

    let check = |broker: &Skiffd| -> Result<()> {
        let consumed = consume_all(broker, "kcat-topic", 4)?;
        let mut total = 0;
        for (partition, got) in &consumed {
            for (key, _) in got {
                assert_eq!(
                    partition_for_key(key.as_bytes(), 4),
                    *partition,
                    "key {key} on the wrong partition"
                );
            }
            // Per partition, the order of production is kept.
            let expected: Vec<_> = records
                .iter()
                .filter(|(k, _)| partition_for_key(k.as_bytes(), 4) == *partition)
                .cloned()
                .collect();
            assert_eq!(got, &expected, "partition {partition}");
            total += got.len();
        }
        assert_eq!(total, records.len());
        Ok(())
    };
    check(&broker)?;
    drop(client);
    assert_eq!(broker.stop()?, 0);
    let broker = Skiffd::start(dir.path(), &[])?;
    check(&broker)?;
    Ok(())
}

/// Compressed batches from librdkafka are validated (decompressed) and served back intact.
#[test]
fn kcat_compressed_produce() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("compressed-{codec}");
        let input: String = (0..50)
            .map(|i| format!("{codec} record {i} {}\n", "y".repeat(100)))
            .collect();
        kcat(
            &broker,
            &["-P", "-t", &topic, "-z", codec, "-X", "acks=all"],
            Some(&input),
        )?;
        let text = kcat(
            &broker,
            &["-C", "-t", &topic, "-o", "beginning", "-e", "-q"],
            None,
        )?;
        assert_eq!(text, input, "{codec}");
    }
    Ok(())
}

/// librdkafka's idempotent producer (InitProducerId, sequences, 5 requests in flight)
/// gets every record stored exactly once, in order.
#[test]
fn kcat_idempotent_producer() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let input: String = (0..20_000)
        .map(|i| format!("idempotent record {i:06}\n"))
        .collect();
    kcat(
        &broker,
        &[
            "-P",
            "-t",
            "idem",
            "-X",
            "enable.idempotence=true",
            "-X",
            "acks=all",
            "-X",
            "linger.ms=2",
            "-X",
            "batch.num.messages=500",
        ],
        Some(&input),
    )?;
    let text = kcat(
        &broker,
        &["-C", "-t", "idem", "-o", "beginning", "-e", "-q"],
        None,
    )?;
    assert_eq!(text, input);
    let metrics = broker.scrape()?;
    assert!(
        metrics.contains("skiff_requests_total{api=\"InitProducerId\",api_key=\"22\"} 1"),
        "{metrics}"
    );
    Ok(())
}

/// Pages of `path` in the page cache (mincore over a fresh mapping).
fn resident_pages(path: &std::path::Path) -> Result<usize> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a read-only shared mapping of a file this test only reads.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    // SAFETY: sysconf has no preconditions.
    let page_bytes = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })?;
    let mut resident = vec![0u8; len.div_ceil(page_bytes)];
    // SAFETY: the pointer and length describe the mapping; `resident` has a
    // byte per page of it.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            len,
            resident.as_mut_ptr(),
        )
    };
    if rc != 0 {
        bail!("mincore: {}", std::io::Error::last_os_error());
    }
    Ok(resident.iter().filter(|&&page| page & 1 == 1).count())
}

/// With `--topic-cache-window-bytes`, the broker drops the page cache of
/// old segments (checked with mincore where the filesystem has a disk), and
/// kcat still reads every record back from the start (from disk).
#[test]
fn kcat_reads_back_through_a_dropped_cache_window() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(
        dir.path(),
        &[
            "--topic-segment-bytes",
            "65536",
            "--topic-cache-window-bytes",
            "131072",
        ],
    )?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("windowed", 1, &[])?, 0);
    let records = kilobyte_records(1_500);
    produce_in_small_batches(&broker, "windowed", &records)?;

    let partition_dir = dir.path().join("windowed-0");
    let logs = segment_logs(&partition_dir)?;
    assert!(logs.len() > 10, "{} segments", logs.len());
    if !on_tmpfs(&partition_dir)? {
        wait_uncached(&logs[0])?;
        let newest = &logs[logs.len() - 1];
        assert!(
            resident_pages(newest)? > 0,
            "the window itself stays cached"
        );
    }

    let consumed = consume_all(&broker, "windowed", 1)?;
    assert_eq!(consumed.get(&0), Some(&records));
    drop(client);
    assert_eq!(broker.stop()?, 0);
    Ok(())
}

/// Whether `dir` is on tmpfs, where the page cache is the file and is never dropped.
fn on_tmpfs(dir: &std::path::Path) -> Result<bool> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs on a valid path into a zeroed struct.
    Ok(unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut stat) == 0 && stat.f_type == libc::TMPFS_MAGIC
    })
}

/// Waits until no page of `log` is cached (the background pass runs every
/// 100 ms).
fn wait_uncached(log: &std::path::Path) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while resident_pages(log)? > 0 {
        if std::time::Instant::now() > deadline {
            bail!("{} still cached", log.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// `count` keyed records of about 1 KB each.
fn kilobyte_records(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| (format!("key-{i}"), format!("{i:04}-{}", "v".repeat(1_000))))
        .collect()
}

/// Produces `records` to partition 0 of `topic` with kcat, 10 to a batch so
/// that small segments roll often.
fn produce_in_small_batches(
    broker: &Skiffd,
    topic: &str,
    records: &[(String, String)],
) -> Result<()> {
    let input: String = records.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let args = ["-P", "-t", topic, "-p", "0", "-K:", "-X", "acks=all"];
    let args = [&args[..], &["-X", "batch.num.messages=10"]].concat();
    kcat(broker, &args, Some(&input)).map(|_| ())
}

/// The `.log` files of a partition directory, oldest first.
fn segment_logs(partition_dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut logs: Vec<_> = std::fs::read_dir(partition_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    Ok(logs)
}

/// With the consumed window (on by default, set small here), data kcat has
/// not read keeps its page cache; once it has been read and more is
/// appended, the old segments' cache goes, and kcat still reads every
/// record back from the start.
#[test]
fn kcat_reads_back_through_a_dropped_consumed_window() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(
        dir.path(),
        &[
            "--topic-segment-bytes",
            "65536",
            "--topic-consumed-cache-window-bytes",
            "131072",
        ],
    )?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("consumed", 1, &[])?, 0);
    let records = kilobyte_records(1_500);
    produce_in_small_batches(&broker, "consumed", &records[..750])?;
    let partition_dir = dir.path().join("consumed-0");
    let logs = segment_logs(&partition_dir)?;
    assert!(logs.len() > 5, "{} segments", logs.len());
    let tmpfs = on_tmpfs(&partition_dir)?;
    // Several background passes.
    std::thread::sleep(std::time::Duration::from_millis(500));
    if !tmpfs {
        assert!(resident_pages(&logs[0])? > 0, "unread data keeps its cache");
    }

    let consumed = consume_all(&broker, "consumed", 1)?;
    assert_eq!(consumed.get(&0).map(Vec::len), Some(750));
    produce_in_small_batches(&broker, "consumed", &records[750..])?;
    if !tmpfs {
        wait_uncached(&logs[0])?;
        let logs = segment_logs(&partition_dir)?;
        let newest = &logs[logs.len() - 1];
        assert!(resident_pages(newest)? > 0, "unread data keeps its cache");
    }

    let consumed = consume_all(&broker, "consumed", 1)?;
    assert_eq!(consumed.get(&0), Some(&records));
    drop(client);
    assert_eq!(broker.stop()?, 0);
    Ok(())
}
