//! Human-friendly quantities on the command line and in scenario files:
//! byte sizes (`1000`, `1KiB`, `1GB`) and durations (`5ms`, `10s`, `0`).
//!
//! Decimal units (`KB`, `MB`, `GB`) are powers of 1000 and binary units
//! (`KiB`, `MiB`, `GiB`) powers of 1024, as the issue's figures ("1 GB of
//! payload", "MB/s") are decimal. Throughputs are always reported in decimal
//! MB/s (10^6 bytes per second).

use std::time::Duration;

/// Bytes in one decimal megabyte, the unit of every reported MB/s figure.
pub const BYTES_PER_MB: f64 = 1_000_000.0;

/// Parses a byte size such as `1000`, `16KiB`, `1MB` or `5GB` (case-insensitive units).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split_at = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split_at);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected a number with an optional unit"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(format!("invalid size unit {other:?} in {text:?}")),
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {text:?} out of range"));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("size {text:?} is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// Parses a duration such as `0`, `250us`, `5ms`, `10s`, `2m` or `1.5s`.
/// A bare number means milliseconds, as Kafka's `linger.ms` does.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let split_at = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split_at);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 5ms, 10s, 2m"))?;
    let seconds_per_unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => 1e-3,
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("invalid duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("duration {text:?} out of range"))
}

/// Formats a byte count for humans with a binary unit (`1.5 GiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Bytes per second in decimal MB/s.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    bytes as f64 / BYTES_PER_MB / seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes accept decimal and binary units and reject garbage with a message.
    #[test]
    fn bytes_parse_units() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("1KiB"), Ok(1024));
        assert_eq!(parse_bytes("1kb"), Ok(1000));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("5 GiB"), Ok(5 << 30));
        assert_eq!(parse_bytes("1.5MB"), Ok(1_500_000));
        assert!(parse_bytes("1.5B").is_err());
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("10 parsecs").is_err());
        assert!(parse_bytes("").is_err());
    }

    /// Durations default to milliseconds and accept the usual suffixes.
    #[test]
    fn durations_parse_units() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }

    /// Throughput arithmetic is in decimal MB and survives a zero interval.
    #[test]
    fn throughput_in_decimal_megabytes() {
        assert_eq!(mb_per_s(2_000_000, Duration::from_secs(2)), 1.0);
        assert_eq!(mb_per_s(2_000_000, Duration::ZERO), 0.0);
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
    }
}
