//! `skiff-bench`: see `skiff-bench --help` and BENCHMARKS.md.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Parser;

use skiff_bench::cli::{Cli, Command, LimitsArgs, ScenarioArgs, WorkloadArgs, WorkloadKind};
use skiff_bench::limits;
use skiff_bench::report::Report;
use skiff_bench::run::{run_workload, Target};
use skiff_bench::scenario;
use skiff_bench::workload::skiff::SkiffConnector;

fn main() -> Result<()> {
    // The client side of every workload keeps its freed heap memory, as an
    // application moving bulk data would (QUIC consume: page faults were
    // 8 % of the client's samples).
    skiff_client::allocator::retain_freed_memory();
    let cli = Cli::parse();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    match cli.command {
        Command::Limits(args) => run_limits(&args),
        Command::Produce(args) => workload(WorkloadKind::Produce, &args, None, command_line),
        Command::Consume(args) => workload(WorkloadKind::Consume, &args, None, command_line),
        Command::E2e(args) => workload(WorkloadKind::E2e, &args, None, command_line),
        Command::Scenario(args) => run_scenario(&args, command_line),
    }
}

fn workload(
    kind: WorkloadKind,
    args: &WorkloadArgs,
    scenario: Option<String>,
    command: String,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads(kind))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let run = run_workload(kind, args, scenario, command, |target: Target| async move {
        SkiffConnector::connect(
            &target.bootstrap,
            target.quic_cert,
            args.partition_fetch_bytes(),
        )
        .await
    });
    // Ctrl-C drops the run, and with it the embedded broker (killed, its data removed).
    let report: Report = runtime.block_on(async {
        tokio::select! {
            report = run => report,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    if !report.is_consistent() {
        bail!("the run is not consistent (see the errors above): its figures must not be used");
    }
    Ok(())
}

fn run_scenario(args: &ScenarioArgs, command_line: String) -> Result<()> {
    let dir = scenario::scenarios_dir(args.scenarios_dir.as_deref());
    if args.name == "list" {
        let mut stdout = std::io::stdout().lock();
        for (name, scenario) in scenario::list(&dir)? {
            // A closed pipe (`| head`) ends the listing quietly.
            if writeln!(stdout, "{name:<32} {}", scenario.description).is_err() {
                break;
            }
        }
        return Ok(());
    }
    let path = dir.join(format!("{}.toml", args.name));
    if !path.is_file() {
        bail!(
            "no scenario {:?} in {} (try `skiff-bench scenario list`)",
            args.name,
            dir.display()
        );
    }
    let loaded = scenario::load(&path)?;
    let (kind, workload_args, argv) = scenario::resolve(&loaded, &args.overrides)?;
    eprintln!(
        "scenario {}: {}\n  = skiff-bench {}",
        args.name,
        loaded.description,
        argv.join(" ")
    );
    let command = format!("{command_line}  (= skiff-bench {})", argv.join(" "));
    workload(kind, &workload_args, Some(args.name.clone()), command)
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

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
