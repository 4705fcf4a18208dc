//! `skiff-bench`: see `skiff-bench --help` and BENCHMARKS.md.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use skiff_bench::cli::{Cli, Command, LimitsArgs};
use skiff_bench::limits;

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Limits(args) => run_limits(&args),
        Command::Produce(_) | Command::Consume(_) | Command::E2e(_) | Command::Scenario(_) => {
            anyhow::bail!("workloads are not wired to skiff-client yet")
        }
    }
}

fn run_limits(args: &LimitsArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let measured = limits::measure(args.bytes, args.sync_bytes, &dir)?;
    println!(
        "loopback TCP       {:>10.1} MB/s",
        measured.loopback_tcp.mb_per_s
    );
    println!(
        "page-cache write   {:>10.1} MB/s  ({})",
        measured.page_cache_write.mb_per_s,
        dir.display()
    );
    println!(
        "write + fdatasync  {:>10.1} MB/s",
        measured.fdatasync_write.mb_per_s
    );
    if let Some(path) = &args.json {
        write_json(path, &measured)?;
    }
    Ok(())
}

fn write_json<T: serde::Serialize>(path: &PathBuf, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
