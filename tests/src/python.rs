//! Unmodified Python Kafka clients (kafka-python, and confluent-kafka with
//! its bundled librdkafka), driven through `tests/python/kafka_clients.py`.
//!
//! They are a second and third implementation of the protocol besides
//! kcat, with their own version choices and strictness. `.ci/run` installs
//! them from `tests/python/requirements.txt`; the interpreter is
//! `$SKIFF_TEST_PYTHON`, else `python3`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// The two Python client libraries the script knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PythonClient {
    KafkaPython,
    Confluent,
}

impl PythonClient {
    pub const ALL: [PythonClient; 2] = [PythonClient::KafkaPython, PythonClient::Confluent];

    /// The name the script takes, also the prefix of the values it produces.
    pub fn name(self) -> &'static str {
        match self {
            PythonClient::KafkaPython => "kafka-python",
            PythonClient::Confluent => "confluent",
        }
    }
}

fn interpreter() -> String {
    std::env::var("SKIFF_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/kafka_clients.py")
}

/// Fails with the install command when the client libraries are missing,
/// so a missing dependency reads as such and not as a broker bug.
pub fn ensure_python_clients() -> anyhow::Result<()> {
    let python = interpreter();
    let status = Command::new(&python)
        .args([
            "-c",
            "import kafka, confluent_kafka, snappy, lz4, zstandard",
        ])
        .status()
        .with_context(|| format!("running {python}"))?;
    if !status.success() {
        bail!(
            "the Python Kafka clients are required: {python} -m pip install -r tests/python/requirements.txt \
             (or set SKIFF_TEST_PYTHON to an interpreter that has them)"
        );
    }
    Ok(())
}

/// `kafka_clients.py CLIENT COMMAND BOOTSTRAP TOPIC ARGS…` as a command to
/// spawn, for long-running commands such as `group`.
pub fn python_client_command(
    client: PythonClient,
    command: &str,
    bootstrap: &str,
    topic: &str,
    args: &[&str],
) -> Command {
    let mut process = Command::new(interpreter());
    process
        .arg(script())
        .args([client.name(), command, bootstrap, topic])
        .args(args);
    process
}

/// Runs `kafka_clients.py CLIENT COMMAND BOOTSTRAP TOPIC ARGS…` and returns
/// its stdout, one JSON document per line.
pub fn run_python_client(
    client: PythonClient,
    command: &str,
    bootstrap: &str,
    topic: &str,
    args: &[&str],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let output = python_client_command(client, command, bootstrap, topic, args)
        .output()
        .context("running kafka_clients.py")?;
    if !output.status.success() {
        bail!(
            "{} {command} {topic} {args:?} failed ({}): {}",
            client.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("parsing {line:?}")))
        .collect()
}
