//! Named standard workloads: `benches/scenarios/NAME.toml`.
//!
//! A scenario is a workload and a table of the same flags the command line
//! takes, so `skiff-bench scenario NAME` and the equivalent flags run the
//! very same code:
//!
//! ```toml
//! description = "1 producer -> 1 partition, 1000-byte records, acks=1"
//! workload = "produce"
//! [flags]
//! partitions = 1
//! message-size = "1000"
//! total = "1GB"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Deserialize;

use crate::cli::{Cli, Command, WorkloadArgs, WorkloadKind};

/// Flags that set the amount of work; an override of one replaces all of the scenario's.
const AMOUNT_FLAGS: [&str; 3] = ["duration", "messages", "total"];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub description: String,
    pub workload: WorkloadKind,
    #[serde(default)]
    pub flags: BTreeMap<String, toml::Value>,
}

/// The scenarios directory: `--scenarios-dir`, else `$SKIFF_BENCH_SCENARIOS`,
/// else `benches/scenarios` of the source tree this binary was built from.
pub fn scenarios_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("SKIFF_BENCH_SCENARIOS").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")))
}

/// Every scenario in `dir`, by name.
pub fn list(dir: &Path) -> Result<BTreeMap<String, Scenario>> {
    let mut scenarios = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            if let Some(name) = path.file_stem().and_then(|stem| stem.to_str()) {
                scenarios.insert(name.to_string(), load(&path)?);
            }
        }
    }
    Ok(scenarios)
}

pub fn load(path: &Path) -> Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The scenario as command-line arguments (after the program name).
pub fn to_args(scenario: &Scenario, overrides: &[String]) -> Result<Vec<String>> {
    let workload = match scenario.workload {
        WorkloadKind::Produce => "produce",
        WorkloadKind::Consume => "consume",
        WorkloadKind::E2e => "e2e",
    };
    let overrides_amount = overrides.iter().any(|arg| {
        AMOUNT_FLAGS
            .iter()
            .any(|flag| arg.trim_start_matches('-') == *flag)
    });
    let mut args = vec![workload.to_string()];
    for (name, value) in &scenario.flags {
        if overrides_amount && AMOUNT_FLAGS.contains(&name.as_str()) {
            continue;
        }
        let flag = format!("--{name}");
        match value {
            toml::Value::Boolean(true) => args.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(text) => args.extend([flag, text.clone()]),
            toml::Value::Integer(number) => args.extend([flag, number.to_string()]),
            toml::Value::Float(number) => args.extend([flag, number.to_string()]),
            other => bail!("flag {name}: unsupported value {other}"),
        }
    }
    args.extend(overrides.iter().cloned());
    Ok(args)
}

/// Parses the scenario (with overrides) exactly as the command line would be.
pub fn resolve(
    scenario: &Scenario,
    overrides: &[String],
) -> Result<(WorkloadKind, WorkloadArgs, Vec<String>)> {
    let args = to_args(scenario, overrides)?;
    let cli =
        Cli::try_parse_from(std::iter::once("skiff-bench".to_string()).chain(args.iter().cloned()))
            .map_err(|error| anyhow::anyhow!("scenario flags do not parse: {error}"))?;
    let (kind, workload) = match cli.command {
        Command::Produce(workload) => (WorkloadKind::Produce, workload),
        Command::Consume(workload) => (WorkloadKind::Consume, workload),
        Command::E2e(workload) => (WorkloadKind::E2e, workload),
        _ => bail!("a scenario runs produce, consume or e2e"),
    };
    Ok((kind, workload, args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Amount;

    /// Every shipped scenario parses into valid workload flags.
    #[test]
    fn shipped_scenarios_parse() -> Result<()> {
        let scenarios = list(&scenarios_dir(None))?;
        for name in [
            "single-partition",
            "many-partitions",
            "keyed-zipf",
            "e2e-latency-at-rate",
            "consumer-group-fanout",
        ] {
            assert!(scenarios.contains_key(name), "scenario {name} missing");
        }
        for (name, scenario) in &scenarios {
            let (kind, args, _) =
                resolve(scenario, &[]).with_context(|| format!("scenario {name}"))?;
            args.validate(kind)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("scenario {name}"))?;
            assert!(
                !scenario.description.is_empty(),
                "scenario {name} needs a description"
            );
        }
        Ok(())
    }

    /// Overrides win, and overriding the amount replaces the scenario's amount.
    #[test]
    fn overrides_replace_settings() -> Result<()> {
        let scenario: Scenario = toml::from_str(
            "description = \"d\"\nworkload = \"produce\"\n[flags]\npartitions = 4\ntotal = \"1GB\"\nno-limits = true\nquiet = false\n",
        )?;
        let (kind, args, argv) = resolve(
            &scenario,
            &[
                "--partitions".into(),
                "8".into(),
                "--duration".into(),
                "2s".into(),
            ],
        )?;
        assert_eq!(kind, WorkloadKind::Produce);
        assert_eq!(args.partitions, 8);
        assert!(args.no_limits && !args.quiet);
        assert_eq!(
            args.amount(),
            Amount::Duration(std::time::Duration::from_secs(2))
        );
        assert!(!argv.contains(&"--total".to_string()));
        let bad: Scenario = toml::from_str(
            "description = \"d\"\nworkload = \"produce\"\n[flags]\nwarp-speed = 9\n",
        )?;
        assert!(resolve(&bad, &[]).is_err());
        assert!(
            toml::from_str::<Scenario>("description = \"d\"\nworkload = \"teleport\"\n").is_err()
        );
        Ok(())
    }
}
