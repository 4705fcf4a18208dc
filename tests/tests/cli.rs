//! The `skiff` command line, run as a user would: a subprocess with stdin
//! and stdout, against a real skiffd.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{ensure, Context};
use skiff_client::Transport;
use skiff_tests::{skiff_bin, skiffd_bin, Broker, TRANSPORTS};

fn skiff(
    broker: Option<&Broker>,
    transport: Transport,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> anyhow::Result<Output> {
    let mut command = Command::new(skiff_bin!());
    if let Some(broker) = broker {
        command.arg("--bootstrap").arg(broker.bootstrap(transport));
        if transport == Transport::Quic {
            command.arg("--quic-cert").arg(broker.cert_path());
        }
    }
    command
        .args(args)
        .env_remove("SKIFF_BOOTSTRAP")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("spawn skiff")?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin")?;
        pipe.write_all(input)?;
    }
    Ok(child.wait_with_output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// topics create/list/describe/delete, produce from stdin with a key
/// separator, and consume from the beginning as JSON, over TCP and QUIC.
#[test]
fn topics_produce_consume() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    for transport in TRANSPORTS {
        let topic = format!(
            "cli-{}",
            if transport == Transport::Tcp {
                "tcp"
            } else {
                "quic"
            }
        );
        let created = skiff(
            Some(&broker),
            transport,
            &[
                "topics",
                "create",
                &topic,
                "--partitions",
                "3",
                "--config",
                "retention.ms=600000",
            ],
            None,
        )?;
        ensure!(
            created.status.success(),
            "create failed: {}",
            text(&created.stderr)
        );
        let listed = skiff(Some(&broker), transport, &["topics", "list"], None)?;
        ensure!(
            text(&listed.stdout).lines().any(|l| l == topic),
            "list: {}",
            text(&listed.stdout)
        );
        let described = skiff(
            Some(&broker),
            transport,
            &["topics", "describe", &topic],
            None,
        )?;
        let description = text(&described.stdout);
        ensure!(
            description.contains("partitions 3") && description.contains("retention.ms=600000"),
            "{description}"
        );

        let input: String = (0..500).map(|i| format!("key{i}:value {i}\n")).collect();
        let produced = skiff(
            Some(&broker),
            transport,
            &["produce", &topic, "--key-separator", ":"],
            Some(input.as_bytes()),
        )?;
        ensure!(
            produced.status.success(),
            "produce failed: {}",
            text(&produced.stderr)
        );

        let consumed = skiff(
            Some(&broker),
            transport,
            &[
                "consume",
                &topic,
                "--from",
                "beginning",
                "--exit-at-end",
                "--json",
            ],
            None,
        )?;
        ensure!(
            consumed.status.success(),
            "consume failed: {}",
            text(&consumed.stderr)
        );
        let mut values = Vec::new();
        for line in text(&consumed.stdout).lines() {
            let record: serde_json::Value = serde_json::from_str(line)?;
            let key = record["key"].as_str().context("key")?;
            let partition = record["partition"].as_i64().context("partition")? as i32;
            ensure!(partition == skiff_protocol::partition::partition_for_key(key.as_bytes(), 3));
            ensure!(record["offset"].as_i64().is_some() && record["timestamp"].as_i64().is_some());
            values.push(record["value"].as_str().context("value")?.to_string());
        }
        values.sort();
        let mut expected: Vec<String> = (0..500).map(|i| format!("value {i}")).collect();
        expected.sort();
        ensure!(values == expected, "consumed {} records", values.len());

        let plain = skiff(
            Some(&broker),
            transport,
            &[
                "consume",
                &topic,
                "--from",
                "beginning",
                "--partition",
                "0",
                "--max-messages",
                "3",
                "-K",
                "=",
            ],
            None,
        )?;
        let lines: Vec<String> = text(&plain.stdout).lines().map(str::to_string).collect();
        ensure!(
            lines.len() == 3
                && lines
                    .iter()
                    .all(|l| l.starts_with("key") && l.contains("=value ")),
            "{lines:?}"
        );

        let deleted = skiff(
            Some(&broker),
            transport,
            &["topics", "delete", &topic],
            None,
        )?;
        ensure!(
            deleted.status.success(),
            "delete failed: {}",
            text(&deleted.stderr)
        );
    }
    Ok(())
}

/// A shell user gets a distinct exit code and an actionable message for a
/// broker that is not there, a missing topic, an existing topic, and bad usage.
#[test]
fn errors_have_exit_codes_and_hints() -> anyhow::Result<()> {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let output = Command::new(skiff_bin!())
        .args([
            "--bootstrap",
            &unused.to_string(),
            "--timeout-ms",
            "2000",
            "topics",
            "list",
        ])
        .output()?;
    ensure!(
        output.status.code() == Some(3),
        "no broker: {:?} {}",
        output.status,
        text(&output.stderr)
    );
    ensure!(
        text(&output.stderr).contains("--bootstrap"),
        "{}",
        text(&output.stderr)
    );

    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let missing = skiff(
        Some(&broker),
        Transport::Tcp,
        &["topics", "describe", "no-such-topic"],
        None,
    )?;
    ensure!(
        missing.status.code() == Some(4),
        "missing topic: {:?} {}",
        missing.status,
        text(&missing.stderr)
    );
    let created = skiff(
        Some(&broker),
        Transport::Tcp,
        &["topics", "create", "twice"],
        None,
    )?;
    ensure!(created.status.success());
    let twice = skiff(
        Some(&broker),
        Transport::Tcp,
        &["topics", "create", "twice"],
        None,
    )?;
    ensure!(
        twice.status.code() == Some(5),
        "existing topic: {:?} {}",
        twice.status,
        text(&twice.stderr)
    );
    let tolerated = skiff(
        Some(&broker),
        Transport::Tcp,
        &["topics", "create", "twice", "--if-not-exists"],
        None,
    )?;
    ensure!(tolerated.status.success());
    let usage = skiff(
        Some(&broker),
        Transport::Tcp,
        &["consume", "twice", "--from", "middle"],
        None,
    )?;
    ensure!(
        usage.status.code() == Some(2),
        "bad usage: {:?}",
        usage.status
    );
    let quic_without_cert = Command::new(skiff_bin!())
        .args([
            "--bootstrap",
            &broker.bootstrap(Transport::Quic),
            "topics",
            "list",
        ])
        .env_remove("SKIFF_QUIC_CERT")
        .output()?;
    ensure!(!quic_without_cert.status.success());
    ensure!(
        text(&quic_without_cert.stderr).contains("certificate"),
        "{}",
        text(&quic_without_cert.stderr)
    );
    Ok(())
}

/// A large stdin is produced completely, and the tool reports records/s
/// and MB/s when done (the progress bar itself only draws on a terminal).
#[test]
fn large_input_reports_throughput() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let line = format!("{}\n", "x".repeat(99));
    let input = line.repeat(20_000);
    let produced = skiff(
        Some(&broker),
        Transport::Tcp,
        &["produce", "big", "--compression", "lz4"],
        Some(input.as_bytes()),
    )?;
    ensure!(
        produced.status.success(),
        "produce failed: {}",
        text(&produced.stderr)
    );
    let report = text(&produced.stderr);
    ensure!(
        report.contains("produced 20000 records")
            && report.contains("records/s")
            && report.contains("MB/s"),
        "{report}"
    );
    let consumed = skiff(
        Some(&broker),
        Transport::Tcp,
        &["consume", "big", "--from", "beginning", "--exit-at-end"],
        None,
    )?;
    ensure!(
        consumed.status.success(),
        "consume failed: {}",
        text(&consumed.stderr)
    );
    ensure!(
        consumed.stdout == input.as_bytes(),
        "consumed {} bytes of {}",
        consumed.stdout.len(),
        input.len()
    );
    Ok(())
}

/// Over QUIC the broker's certificate can be trusted by its SHA-256
/// fingerprint; a wrong fingerprint is refused with a hint.
#[test]
fn quic_trust_by_fingerprint() -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(skiffd_bin!(), dir.path())?;
    let der = rustls::pki_types::CertificateDer::from_pem_file(broker.cert_path())?;
    let fingerprint = skiff_client::net::fingerprint_hex(der.as_ref());
    let quic = broker.bootstrap(Transport::Quic);
    let trusted = Command::new(skiff_bin!())
        .args([
            "--bootstrap",
            &quic,
            "--quic-cert-sha256",
            &fingerprint,
            "topics",
            "create",
            "pinned",
        ])
        .output()?;
    ensure!(
        trusted.status.success(),
        "pinned fingerprint refused: {}",
        text(&trusted.stderr)
    );
    let wrong = "00".repeat(32);
    let refused = Command::new(skiff_bin!())
        .args([
            "--bootstrap",
            &quic,
            "--quic-cert-sha256",
            &wrong,
            "--timeout-ms",
            "3000",
            "topics",
            "list",
        ])
        .output()?;
    ensure!(
        refused.status.code() == Some(3),
        "wrong fingerprint: {:?} {}",
        refused.status,
        text(&refused.stderr)
    );
    ensure!(
        text(&refused.stderr).contains("certificate"),
        "{}",
        text(&refused.stderr)
    );
    Ok(())
}
