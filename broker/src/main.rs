//! `skiffd`: the Skiff broker daemon.

use clap::Parser;
use skiff_broker::config::{Cli, Config};
use skiff_broker::server;
use std::io::Write as _;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    // A write past RLIMIT_FSIZE must be an EFBIG error on that partition, not
    // a signal that kills the whole broker.
    // SAFETY: installing SIG_IGN for SIGXFSZ before any thread starts; no handler code runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    let config = Config::load(&cli)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
    let worker_threads = config.worker_threads_resolved(cpus);
    tracing::info!(cpus, worker_threads, "starting the runtime");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let running = server::start(config).await?;
        let line = running.listening_line();
        tracing::info!("{line}");
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
        wait_for_signal().await?;
        tracing::info!("shutting down");
        running.shutdown().await?;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
