//! Command-line arguments and error reporting of the `skiff` tool.

mod consume;
mod groups;
mod produce;
mod topics;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use skiff_client::{Client, ClientConfig, Error, QuicTrust};
use skiff_protocol::ErrorCode;

/// Skiff command line: topics, produce from stdin, consume to stdout.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about, after_help = EXIT_CODES)]
pub struct Args {
    /// Brokers to bootstrap from: HOST:PORT[,...]; quic://HOST:PORT for QUIC.
    #[arg(
        long,
        short = 'b',
        global = true,
        env = "SKIFF_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// PEM file with the broker's certificate, to trust it over QUIC.
    #[arg(long, global = true, env = "SKIFF_QUIC_CERT")]
    pub quic_cert: Option<PathBuf>,
    /// SHA-256 fingerprint of the broker's certificate, to trust it over QUIC.
    #[arg(
        long,
        global = true,
        env = "SKIFF_QUIC_CERT_SHA256",
        conflicts_with = "quic_cert"
    )]
    pub quic_cert_sha256: Option<String>,
    /// Request timeout in milliseconds.
    #[arg(long, global = true, default_value_t = 30_000)]
    pub timeout_ms: u64,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 error, 2 bad usage, 3 no broker reachable, \
4 topic, partition or group not found, 5 topic already exists, 6 records not delivered, 7 timed out, \
8 the group has active members.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Send stdin, one record per line, to a topic.
    Produce(produce::ProduceArgs),
    /// Print a topic's records to stdout.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset offsets of, and delete consumer groups.
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = ClientConfig::new(&args.bootstrap)?
        .client_id("skiff-cli")
        .request_timeout(Duration::from_millis(args.timeout_ms));
    if let Some(path) = &args.quic_cert {
        config = config.quic_trust(QuicTrust::CertificateFile(path.clone()));
    } else if let Some(fingerprint) = &args.quic_cert_sha256 {
        config = config.quic_trust(QuicTrust::from_fingerprint(fingerprint)?);
    }
    let client = Client::connect(config).await?;
    match args.command {
        Command::Topics(command) => topics::run(client, command).await,
        Command::Produce(produce) => produce::run(client, produce).await,
        Command::Consume(consume) => consume::run(client, consume).await,
        Command::Groups(command) => groups::run(client, command).await,
    }
}

fn client_error(error: &anyhow::Error) -> Option<&Error> {
    error.chain().find_map(|e| e.downcast_ref::<Error>())
}

/// The process exit code for an error.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    let Some(error) = client_error(error) else {
        return 1;
    };
    match error {
        Error::NoBrokerAvailable { .. } | Error::Connect { .. } | Error::Quic { .. } => 3,
        Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => 4,
        Error::Kafka {
            code: ErrorCode::UnknownTopicOrPartition,
            ..
        } => 4,
        Error::Kafka {
            code: ErrorCode::GroupIdNotFound,
            ..
        } => 4,
        Error::Kafka {
            code: ErrorCode::TopicAlreadyExists,
            ..
        } => 5,
        Error::GroupNotEmpty { .. }
        | Error::Kafka {
            code: ErrorCode::NonEmptyGroup,
            ..
        } => 8,
        Error::Undelivered { .. } => 6,
        Error::RequestTimeout { .. } | Error::DeliveryTimeout { .. } => 7,
        Error::InvalidAddress { .. } | Error::Config(_) | Error::Certificate { .. } => 2,
        _ => 1,
    }
}

/// The error message, with a hint of what to do where there is an obvious one.
pub fn describe(error: &anyhow::Error) -> String {
    const QUIC_HINT: &str =
        "\nhint: trust the broker's QUIC certificate with --quic-cert DATA_DIR/quic-cert.pem or --quic-cert-sha256 HEX (skiffd logs both).";
    let hint = match client_error(error) {
        Some(Error::NoBrokerAvailable { last_error, .. }) if last_error.contains("certificate") => QUIC_HINT,
        Some(Error::Config(message)) if message.contains("QUIC") => QUIC_HINT,
        Some(Error::NoBrokerAvailable { .. } | Error::Connect { .. }) => {
            "\nhint: is skiffd running there? Point --bootstrap (or SKIFF_BOOTSTRAP) at its address."
        }
        Some(Error::Quic { .. } | Error::Certificate { .. }) => QUIC_HINT,
        Some(Error::GroupNotEmpty { .. }) => "\nhint: `skiff groups describe GROUP` lists the members; stop them (their session must end) and retry.",
        Some(Error::UnknownTopic { .. }) => "\nhint: `skiff topics list` shows the topics; `skiff topics create NAME` makes one.",
        _ => "",
    };
    format!("{error:#}{hint}")
}
