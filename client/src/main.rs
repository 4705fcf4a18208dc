//! `skiff`: administer topics, produce from stdin, consume to stdout.
//!
//! Exit codes: 0 success, 1 other error, 2 bad usage, 3 no broker
//! reachable, 4 topic, partition or group not found, 5 topic already
//! exists, 6 some records were not delivered, 7 timed out, 8 the group
//! has active members.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() {
    // Bulk produce and consume over QUIC; see the module.
    skiff_client::allocator::retain_freed_memory();
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli::run(args).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("skiff: {}", cli::describe(&error));
            cli::exit_code(&error)
        }
    };
    std::process::exit(code);
}
