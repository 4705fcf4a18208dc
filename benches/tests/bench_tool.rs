//! The skiff-bench binary as a user runs it: tiny workloads against a real,
//! embedded skiffd, checked for internal consistency (every record sent is
//! acknowledged and consumed exactly once, no errors) and for the JSON fields
//! scripts rely on. Speed is not asserted here; BENCHMARKS.md holds figures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

fn bench_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff-bench"))
}

/// The skiffd next to skiff-bench, built on demand: `cargo test -p skiff-bench`
/// does not build other packages' binaries.
fn skiffd_binary() -> Result<PathBuf> {
    let bench = bench_binary();
    let dir = bench.parent().context("skiff-bench has a directory")?;
    let skiffd = dir.join("skiffd");
    if !skiffd.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["build", "-p", "skiff-broker", "--bin", "skiffd"]);
        if dir.ends_with("release") {
            command.arg("--release");
        }
        let status = command.status().context("running cargo build for skiffd")?;
        ensure!(status.success(), "building skiffd failed: {status}");
    }
    ensure!(skiffd.is_file(), "no skiffd at {}", skiffd.display());
    Ok(skiffd)
}

fn run_bench(args: &[&str]) -> Result<Output> {
    Ok(Command::new(bench_binary())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()?)
}

/// Runs a workload with JSON output and returns the parsed report.
fn run_json(args: &[&str], dir: &Path) -> Result<Value> {
    let json_path = dir.join("report.json");
    let json = json_path.to_str().context("utf-8 temp path")?;
    let skiffd = skiffd_binary()?;
    let skiffd = skiffd.to_str().context("utf-8 skiffd path")?;
    let broker_parent = dir.join("brokers");
    std::fs::create_dir(&broker_parent)?;
    let broker_parent_text = broker_parent.to_str().context("utf-8 temp path")?;
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "--quiet",
        "--probe-bytes",
        "8MiB",
        "--skiffd",
        skiffd,
        "--json",
        json,
        "--data-parent",
        broker_parent_text,
    ]);
    let output = run_bench(&all)?;
    if !output.status.success() {
        bail!(
            "skiff-bench {all:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The embedded broker's directory (data, log, probe files) is gone after the run.
    let left: Vec<_> = std::fs::read_dir(&broker_parent)?.collect();
    ensure!(
        left.is_empty(),
        "the run left {} entries in {}",
        left.len(),
        broker_parent.display()
    );
    let text = std::fs::read_to_string(&json_path)?;
    Ok(serde_json::from_str(&text)?)
}

fn number(report: &Value, pointer: &str) -> Result<f64> {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .with_context(|| format!("report has no number at {pointer}: {report:#}"))
}

fn check_percentiles(report: &Value, field: &str, samples: u64) -> Result<()> {
    let p = |name: &str| number(report, &format!("/{field}/{name}"));
    let (p50, p90, p99, p999, max) = (p("p50")?, p("p90")?, p("p99")?, p("p99_9")?, p("max")?);
    ensure!(
        p50 > 0.0 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{field} percentiles out of order"
    );
    ensure!(
        p("count")? as u64 == samples,
        "{field} has {} samples, expected {samples}",
        p("count")?
    );
    Ok(())
}

/// An e2e report where every one of `records` records was sent,
/// acknowledged, consumed and timed once, over `partitions` partitions.
fn check_e2e_counts(report: &Value, records: u64, partitions: usize) -> Result<()> {
    for pointer in ["/counts/sent", "/counts/acked", "/counts/consumed"] {
        ensure!(
            number(report, pointer)? as u64 == records,
            "{pointer} is not {records}: {report:#}"
        );
    }
    ensure!(
        number(report, "/counts/errors")? == 0.0,
        "errors: {:#}",
        report["errors"]
    );
    ensure!(
        report["errors"].as_array().is_some_and(Vec::is_empty),
        "errors: {:#}",
        report["errors"]
    );
    check_percentiles(report, "produce_latency_us", records)?;
    check_percentiles(report, "e2e_latency_us", records)?;
    let per_partition = report["partitions"]["records"]
        .as_array()
        .context("per-partition records")?;
    ensure!(per_partition.len() == partitions);
    let total: u64 = per_partition
        .iter()
        .filter_map(|entry| entry["records"].as_u64())
        .sum();
    ensure!(total == records, "per-partition records add up to {total}");
    Ok(())
}

/// e2e over 3 partitions with 2 producers and 2 assigned consumers: every
/// record is sent, acknowledged and consumed once, and the report carries
/// throughput, limits, latency percentiles and per-partition counts.
#[test]
fn e2e_counts_are_consistent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let report = run_json(
        &[
            "e2e",
            "--messages",
            "3000",
            "--message-size",
            "200",
            "--partitions",
            "3",
            "--producers",
            "2",
            "--consumers",
            "2",
            "--keys",
            "uniform:50",
            "--linger",
            "1ms",
        ],
        dir.path(),
    )?;
    check_e2e_counts(&report, 3000, 3)?;
    for pointer in [
        "/records_per_s",
        "/mb_per_s",
        "/loopback_limit_mb_per_s",
        "/page_cache_limit_mb_per_s",
        "/fraction_of_loopback",
    ] {
        ensure!(number(&report, pointer)? > 0.0, "{pointer} not positive");
    }
    ensure!(number(&report, "/partitions/hottest_share")? >= 1.0 / 3.0);
    ensure!(
        number(&report, "/cpu/broker_s")? >= 0.0
            && number(&report, "/broker_rss_anon_max_mib")? > 0.0
    );
    Ok(())
}

/// Records handed to the client 64 per call (its many-record send): a run of
/// a count that is not a multiple of 64 still sends, acknowledges, consumes
/// and times each record exactly once.
#[test]
fn many_records_per_send_count_every_record_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let report = run_json(
        &[
            "e2e",
            "--messages",
            "3000",
            "--message-size",
            "200",
            "--partitions",
            "3",
            "--producers",
            "2",
            "--keys",
            "uniform:50",
            "--records-per-send",
            "64",
            "--linger",
            "1ms",
        ],
        dir.path(),
    )?;
    ensure!(number(&report, "/settings/records_per_send")? == 64.0);
    check_e2e_counts(&report, 3000, 3)
}

/// consume: the tool writes the records first, then reads every one back.
#[test]
fn consume_reads_back_everything() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let report = run_json(
        &[
            "consume",
            "--total",
            "1MB",
            "--message-size",
            "1000",
            "--partitions",
            "2",
        ],
        dir.path(),
    )?;
    for pointer in ["/counts/sent", "/counts/acked", "/counts/consumed"] {
        ensure!(
            number(&report, pointer)? as u64 == 1000,
            "{pointer} is not 1000: {report:#}"
        );
    }
    ensure!(number(&report, "/consume/records")? as u64 == 1000);
    ensure!(number(&report, "/mb_per_s")? > 0.0);
    Ok(())
}

/// consume in a consumer group: two members split four partitions and
/// together read every record exactly once.
#[test]
fn group_consumers_read_back_everything() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let report = run_json(
        &[
            "consume",
            "--total",
            "1MB",
            "--message-size",
            "1000",
            "--partitions",
            "4",
            "--consumers",
            "2",
            "--consumer-mode",
            "group",
        ],
        dir.path(),
    )?;
    for pointer in ["/counts/sent", "/counts/acked", "/counts/consumed"] {
        ensure!(
            number(&report, pointer)? as u64 == 1000,
            "{pointer} is not 1000: {report:#}"
        );
    }
    Ok(())
}

/// The embedded broker's QUIC listener is trusted through its own certificate,
/// and `--durability sync` reaches skiffd under the flag name it knows.
#[test]
fn quic_and_sync_durability() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let report = run_json(
        &[
            "e2e",
            "--transport",
            "quic",
            "--durability",
            "sync",
            "--messages",
            "500",
            "--message-size",
            "100",
        ],
        dir.path(),
    )?;
    for pointer in ["/counts/sent", "/counts/acked", "/counts/consumed"] {
        ensure!(
            number(&report, pointer)? as u64 == 500,
            "{pointer} is not 500: {report:#}"
        );
    }
    let bootstrap = report["broker"]["bootstrap"].as_str().unwrap_or_default();
    ensure!(
        bootstrap.starts_with("quic://127.0.0.1:"),
        "bootstrap {bootstrap}"
    );
    ensure!(report["broker"]["durability"] == "sync");
    Ok(())
}

/// An unreachable --bootstrap fails the run with a message instead of hanging or inventing figures.
#[test]
fn unreachable_broker_fails_cleanly() -> Result<()> {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bootstrap = format!("127.0.0.1:{port}");
    let output = run_bench(&[
        "produce",
        "--bootstrap",
        &bootstrap,
        "--no-limits",
        "--quiet",
        "--messages",
        "10",
    ])?;
    ensure!(!output.status.success(), "a run without a broker must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains(&bootstrap),
        "the error names the broker: {stderr}"
    );
    Ok(())
}

/// Unknown scenarios and contradictory flags are refused before anything runs.
#[test]
fn bad_invocations_are_refused() -> Result<()> {
    let output = run_bench(&["scenario", "no-such-scenario"])?;
    ensure!(!output.status.success());
    ensure!(String::from_utf8_lossy(&output.stderr).contains("no scenario"));
    let output = run_bench(&["produce", "--duration", "1s", "--messages", "5"])?;
    ensure!(!output.status.success());
    let output = run_bench(&["e2e", "--message-size", "4", "--bootstrap", "127.0.0.1:1"])?;
    ensure!(!output.status.success());
    ensure!(String::from_utf8_lossy(&output.stderr).contains("at least 8 bytes"));
    let listed = run_bench(&["scenario", "list"])?;
    ensure!(
        listed.status.success()
            && String::from_utf8_lossy(&listed.stdout).contains("single-partition")
    );
    Ok(())
}

/// The limits subcommand measures and writes its JSON without any broker.
#[test]
fn limits_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("limits.json");
    let output = run_bench(&[
        "limits",
        "--bytes",
        "4MiB",
        "--sync-bytes",
        "1MiB",
        "--dir",
        dir.path().to_str().context("utf-8")?,
        "--json",
        json.to_str().context("utf-8")?,
    ])?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let limits: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    ensure!(number(&limits, "/loopback_tcp/mb_per_s")? > 0.0);
    ensure!(number(&limits, "/page_cache_write/bytes")? as u64 == 4 << 20);
    Ok(())
}
