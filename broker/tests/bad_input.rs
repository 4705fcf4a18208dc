//! Every kind of bad input gets its documented answer, loses nothing, and
//! leaves the broker serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::{Buf, BufMut, BytesMut};
use common::{batch, Client, Skiffd};
use skiff_protocol::api::{ApiKey, RequestKind, ResponseKind};
use skiff_protocol::ErrorCode;

/// A raw request frame: header v1 (key, version, correlation id, client id) and `body`.
fn raw_frame(api_key: i16, api_version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    frame.put_i16(api_key);
    frame.put_i16(api_version);
    frame.put_i32(correlation_id);
    frame.put_i16(4);
    frame.put_slice(b"test");
    frame.put_slice(body);
    let size = (frame.len() - 4) as i32;
    frame[0..4].copy_from_slice(&size.to_be_bytes());
    frame.to_vec()
}

/// The connection still answers a well-formed request.
fn still_serves(client: &mut Client) -> Result<()> {
    match client.call(
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(Default::default()),
    )? {
        ResponseKind::ApiVersions(r) if r.error_code == 0 => Ok(()),
        other => bail!("unexpected {other:?}"),
    }
}

/// Reads until EOF: the broker closed the connection.
fn assert_closed(client: &mut Client) {
    let mut rest = Vec::new();
    match client.stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "unexpected bytes before close: {rest:?}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "connection not closed: {e}"
        ),
    }
}

/// Unknown API keys and unserved versions get UNSUPPORTED_VERSION (KIP-511 v0 shape) and the connection stays open.
#[test]
fn unknown_api_or_version_is_unsupported_version() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    for (key, version, correlation_id) in [
        (999, 0, 41),
        (18, 99, 42),
        (0, 2, 43),
        (1, 13, 44),
        (10, 5, 45),
        (17, 0, 46),
    ] {
        client.write_raw(&raw_frame(key, version, correlation_id, &[]))?;
        let mut frame = client.read_frame()?;
        assert_eq!(frame.get_i32(), correlation_id);
        assert_eq!(
            frame.get_i16(),
            ErrorCode::UnsupportedVersion.code(),
            "api {key} v{version}"
        );
        let count = frame.get_i32();
        assert!(count >= 9, "the v0 body lists the served APIs");
        let mut keys = Vec::new();
        for _ in 0..count {
            keys.push(frame.get_i16());
            frame.advance(4);
        }
        assert!(
            keys.contains(&18) && keys.contains(&10) && !keys.contains(&17),
            "ApiVersions and FindCoordinator are advertised, SaslHandshake is not"
        );
        still_serves(&mut client)?;
    }
    Ok(())
}

/// A frame larger than --frame-bytes-max closes that connection with a log line naming peer and size; others carry on.
#[test]
fn oversized_frame_closes_connection() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path)?;
    let broker = Skiffd::start_with(
        &dir.path().join("data"),
        &["--frame-bytes-max", "1048576"],
        |command| {
            command.stderr(log).env("SKIFF_LOG", "warn");
        },
    )?;
    let mut bystander = broker.connect()?;
    let mut client = broker.connect()?;
    let local = client.stream.local_addr()?;
    client.write_raw(&2_000_000i32.to_be_bytes())?;
    client.write_raw(&[0u8; 64])?;
    assert_closed(&mut client);
    let mut negative = broker.connect()?;
    negative.write_raw(&(-5i32).to_be_bytes())?;
    assert_closed(&mut negative);
    still_serves(&mut bystander)?;
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&log_path)?;
    assert!(
        text.contains(&local.to_string()),
        "log names the peer: {text}"
    );
    assert!(text.contains("2000000"), "log names the size: {text}");
    Ok(())
}

/// A body that does not decode closes the connection; the broker keeps serving others.
#[test]
fn malformed_body_closes_connection() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    // Metadata v1 claiming 1000 topics but carrying none.
    client.write_raw(&raw_frame(3, 1, 7, &1000i32.to_be_bytes()))?;
    assert_closed(&mut client);
    let mut other = broker.connect()?;
    still_serves(&mut other)?;
    Ok(())
}

/// A batch whose CRC does not match is CORRUPT_MESSAGE and nothing is appended.
#[test]
fn corrupt_batch_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("crc", 1, &[])?, 0);
    let good = batch(&[b"payload-one", b"payload-two"], -1, -1, -1);
    let mut bad = good.to_vec();
    let last = bad.len() - 3;
    bad[last] ^= 0x40;
    let (error, _) = client.produce("crc", 0, bad.into(), -1)?;
    assert_eq!(error, ErrorCode::CorruptMessage.code());
    // A truncated batch, and two batches in one partition, are refused too.
    let (error, _) = client.produce("crc", 0, good.slice(..good.len() - 1), -1)?;
    assert_eq!(error, ErrorCode::CorruptMessage.code());
    let mut two = good.to_vec();
    two.extend_from_slice(&good);
    let (error, _) = client.produce("crc", 0, two.into(), -1)?;
    assert_eq!(error, ErrorCode::InvalidRecord.code());
    assert_eq!(
        client.list_offset("crc", 0, -1)?,
        (0, 0),
        "nothing appended"
    );
    assert_eq!(client.produce("crc", 0, good, -1)?, (0, 0));
    Ok(())
}

/// Illegal topic names are INVALID_TOPIC_EXCEPTION on Produce and Metadata, and create nothing.
#[test]
fn invalid_topic_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    for name in ["bad/name", "..", "spaces here", &"x".repeat(250)] {
        let (error, _) = client.produce(name, 0, batch(&[b"v"], -1, -1, -1), 1)?;
        assert_eq!(error, ErrorCode::InvalidTopicException.code(), "{name}");
    }
    let listed = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(listed, 0, "no partition directory was created");
    Ok(())
}

/// A batch above the topic's max.message.bytes is MESSAGE_TOO_LARGE; unknown partitions are UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn message_too_large_and_unknown_partition() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &["--auto-create-topics", "false"])?;
    let mut client = broker.connect()?;
    assert_eq!(
        client.create_topic("small", 1, &[("max.message.bytes", "1000")])?,
        0
    );
    let big = vec![7u8; 2000];
    let (error, _) = client.produce("small", 0, batch(&[&big], -1, -1, -1), -1)?;
    assert_eq!(error, ErrorCode::MessageTooLarge.code());
    assert_eq!(client.list_offset("small", 0, -1)?, (0, 0));
    assert_eq!(
        client.produce("small", 0, batch(&[b"fits"], -1, -1, -1), -1)?,
        (0, 0)
    );
    let (error, _) = client.produce("small", 3, batch(&[b"v"], -1, -1, -1), -1)?;
    assert_eq!(error, ErrorCode::UnknownTopicOrPartition.code());
    let (error, _) = client.produce("absent", 0, batch(&[b"v"], -1, -1, -1), -1)?;
    assert_eq!(
        error,
        ErrorCode::UnknownTopicOrPartition.code(),
        "auto-creation is off"
    );
    let (error, _) = client.produce("small", 0, batch(&[b"v"], -1, -1, -1), 2)?;
    assert_eq!(error, ErrorCode::InvalidRequiredAcks.code());
    Ok(())
}

/// A storage failure on one partition is KAFKA_STORAGE_ERROR for that partition only;
/// the others keep accepting writes and the failed one keeps serving what it had.
#[test]
fn storage_error_is_isolated_to_its_partition() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(
        client.create_topic("fragile", 2, &[("segment.bytes", "1024")])?,
        0
    );
    let partition_dir = dir.path().join("fragile-0");
    assert!(
        partition_dir.is_dir(),
        "partition directory layout <topic>-<partition>"
    );
    let value = vec![b'v'; 300];
    let mut failed = None;
    for _ in 0..20 {
        // Whenever the log rolls, its new segment file's name is taken by a directory.
        let (_, end) = client.list_offset("fragile", 0, -1)?;
        let blocker = partition_dir.join(format!("{end:020}.log"));
        let blocked = !blocker.exists();
        if blocked {
            std::fs::create_dir(&blocker)?;
        }
        let (error, _) = client.produce("fragile", 0, batch(&[&value], -1, -1, -1), -1)?;
        if error != 0 {
            failed = Some((error, end));
            break;
        }
        if blocked {
            std::fs::remove_dir(&blocker)?;
        }
    }
    let Some((error, end_before)) = failed else {
        bail!("the roll never happened")
    };
    assert_eq!(error, ErrorCode::KafkaStorageError.code());
    assert_eq!(
        client.produce("fragile", 1, batch(&[b"ok"], -1, -1, -1), -1)?,
        (0, 0),
        "other partition unaffected"
    );
    let (error, high_watermark, _) = client.fetch("fragile", 0, 0, 0)?;
    assert_eq!(
        (error, high_watermark),
        (0, end_before),
        "data before the failure is served"
    );
    Ok(())
}

/// With a file size limit (RLIMIT_FSIZE), a write past it is a storage error on that
/// partition, not a SIGXFSZ that kills the broker; other partitions keep working.
#[test]
fn file_size_limit_is_an_error_not_a_signal() -> Result<()> {
    use std::os::unix::process::CommandExt;
    const FILE_BYTES_LIMIT: u64 = 24 << 20;
    let dir = tempfile::tempdir()?;
    let mut broker =
        Skiffd::start_with(dir.path(), &["--auto-create-topics", "false"], |command| {
            // SAFETY: setrlimit is async-signal-safe; it runs in the forked child before exec.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: FILE_BYTES_LIMIT,
                        rlim_max: FILE_BYTES_LIMIT,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })?;
    let mut client = broker.connect()?;
    let periodic = ("flush.ms", "1000");
    assert_eq!(
        client.create_topic(
            "small-segments",
            1,
            &[("segment.bytes", "1048576"), periodic]
        )?,
        0
    );
    assert_eq!(
        client.create_topic(
            "big-segments",
            1,
            &[("segment.bytes", "67108864"), periodic]
        )?,
        0
    );
    let big = vec![b'g'; 512 * 1024];
    let mut failure = None;
    for produced in 0..100 {
        let (error, _) = client.produce("big-segments", 0, batch(&[&big], -1, -1, -1), 1)?;
        if error != 0 {
            failure = Some((error, produced));
            break;
        }
    }
    let Some((error, produced)) = failure else {
        bail!("50 MiB went into one segment file despite the limit")
    };
    assert_eq!(error, ErrorCode::KafkaStorageError.code());
    assert!(
        produced >= 16,
        "the first {produced} appends fit under the limit"
    );
    assert!(broker.is_running(), "SIGXFSZ did not kill the broker");
    assert_eq!(
        client.list_offset("big-segments", 0, -1)?,
        (0, produced),
        "nothing of the failed append visible"
    );
    assert_eq!(
        client.produce("small-segments", 0, batch(&[b"after"], -1, -1, -1), 1)?,
        (0, 0)
    );
    Ok(())
}

/// A small compressed batch that would inflate past the broker's limit (a
/// decompression bomb) is CORRUPT_MESSAGE, and nothing is appended.
#[test]
fn decompression_bomb_is_refused() -> Result<()> {
    use skiff_protocol::batch::{Compression, RecordBatchBuilder, RecordBatchBuilderConfig};
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(client.create_topic("bomb", 1, &[])?, 0);
    let zeros = vec![0u8; 80 << 20];
    let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig {
        compression: Compression::Zstd,
        ..Default::default()
    });
    builder.append(0, None, Some(&zeros), &[]);
    let bomb = builder.build()?;
    assert!(
        bomb.len() < 1 << 20,
        "the bomb fits max.message.bytes: {} bytes",
        bomb.len()
    );
    let response = client.produce_raw("bomb", 0, bomb, -1)?;
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, ErrorCode::CorruptMessage.code());
    let message = partition
        .error_message
        .as_ref()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("decompressed"),
        "refused for the size: {message}"
    );
    assert_eq!(client.list_offset("bomb", 0, -1)?, (0, 0));
    Ok(())
}

/// A compacted topic refuses records without a key (INVALID_RECORD), as Kafka does.
#[test]
fn compacted_topic_requires_keys() -> Result<()> {
    use skiff_protocol::batch::{RecordBatchBuilder, RecordBatchBuilderConfig};
    let dir = tempfile::tempdir()?;
    let broker = Skiffd::start(dir.path(), &[])?;
    let mut client = broker.connect()?;
    assert_eq!(
        client.create_topic("table", 1, &[("cleanup.policy", "compact")])?,
        0
    );
    let mut builder = RecordBatchBuilder::new(RecordBatchBuilderConfig::default());
    builder.append(0, Some(b"key"), Some(b"keyed"), &[]);
    builder.append(0, None, Some(b"keyless"), &[]);
    let (error, _) = client.produce("table", 0, builder.build()?, -1)?;
    assert_eq!(error, ErrorCode::InvalidRecord.code());
    assert_eq!(client.list_offset("table", 0, -1)?, (0, 0));
    assert_eq!(
        client.produce("table", 0, batch(&[b"v"], -1, -1, -1), -1)?,
        (0, 0)
    );
    Ok(())
}
