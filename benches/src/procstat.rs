//! CPU time and memory of processes, read from `/proc` (Linux).
//!
//! `/proc/<pid>/stat` fields 14 and 15 (utime, stime) are in clock ticks of
//! USER_HZ, which the kernel fixes at 100 for user space on every mainstream
//! architecture; reading them for `self` and for the broker's pid keeps both
//! measurements on the same footing (and needs no `unsafe` getrusage call).

use std::fs;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// USER_HZ: the unit of utime/stime in /proc/<pid>/stat.
const CLOCK_TICKS_PER_S: u64 = 100;

/// CPU consumed by a process so far (all threads, user + system).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// CPU used between an earlier sample and this one.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// Which process: ourselves or another pid.
#[derive(Clone, Copy, Debug)]
pub enum Process {
    Current,
    Pid(u32),
}

impl Process {
    fn path(&self, file: &str) -> String {
        match self {
            Process::Current => format!("/proc/self/{file}"),
            Process::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }

    pub fn cpu_time(&self) -> Result<CpuTime> {
        let path = self.path("stat");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_stat_cpu(&text).with_context(|| format!("parsing {path}"))
    }

    /// Resident anonymous memory (heap, stacks; not file mappings) in KiB.
    pub fn rss_anon_kib(&self) -> Result<u64> {
        let path = self.path("status");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_status_kib(&text, "RssAnon").with_context(|| format!("parsing {path}"))
    }
}

/// utime + stime from the text of /proc/<pid>/stat. The command name (field
/// 2) is in parentheses and may itself contain spaces and ')', so fields are
/// counted from the last ')'.
pub fn parse_stat_cpu(text: &str) -> Result<CpuTime> {
    let Some(close) = text.rfind(')') else {
        bail!("no ')' after the command name");
    };
    // Fields after the name start at field 3 (state); utime is 14, stime 15.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |number: usize| -> Result<u64> {
        let value = fields
            .get(number - 3)
            .with_context(|| format!("field {number} missing"))?;
        value
            .parse::<u64>()
            .with_context(|| format!("field {number} is not a number: {value:?}"))
    };
    let ticks = |count: u64| Duration::from_nanos(count * (1_000_000_000 / CLOCK_TICKS_PER_S));
    Ok(CpuTime {
        user: ticks(field(14)?),
        system: ticks(field(15)?),
    })
}

/// The value of a `Name:   123 kB` line of /proc/<pid>/status.
pub fn parse_status_kib(text: &str, name: &str) -> Result<u64> {
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
        {
            let number = rest.trim().trim_end_matches("kB").trim();
            return number
                .parse()
                .with_context(|| format!("{name} value {number:?} is not a number"));
        }
    }
    bail!("no {name} line")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime/stime are found even when the command name holds spaces and parens.
    #[test]
    fn stat_fields_after_odd_names() -> Result<()> {
        let text = "4242 (sk iff) d) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 1234 1000000 500 18446744073709551615";
        let cpu = parse_stat_cpu(text)?;
        assert_eq!(cpu.user, Duration::from_millis(2500));
        assert_eq!(cpu.system, Duration::from_millis(750));
        assert_eq!(cpu.total(), Duration::from_millis(3250));
        assert!(parse_stat_cpu("4242 (x) S 1 2").is_err());
        assert!(parse_stat_cpu("garbage").is_err());
        Ok(())
    }

    /// RssAnon is read in KiB from the status text.
    #[test]
    fn status_rss_anon() -> Result<()> {
        let text =
            "Name:\tskiffd\nVmRSS:\t   20480 kB\nRssAnon:\t    8192 kB\nRssFile:\t   12288 kB\n";
        assert_eq!(parse_status_kib(text, "RssAnon")?, 8192);
        assert_eq!(parse_status_kib(text, "RssFile")?, 12288);
        assert!(parse_status_kib(text, "RssShmem").is_err());
        Ok(())
    }

    /// Our own process's figures are readable and CPU time only grows.
    #[test]
    fn reads_own_process() -> Result<()> {
        let before = Process::Current.cpu_time()?;
        let mut spin = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        let after = Process::Current.cpu_time()?;
        assert!(after.total() >= before.total());
        assert!(Process::Current.rss_anon_kib()? > 0);
        assert!(Process::Pid(u32::MAX).cpu_time().is_err());
        Ok(())
    }
}
