//! Per-topic settings under their Kafka config names (`retention.ms`, …):
//! parsing CreateTopics overrides, describing them for DescribeConfigs, and
//! turning them into the storage engine's `LogConfig`.

use std::collections::BTreeMap;

use crate::config::{Cleanup, FlushMode, TopicDefaults};
use crate::storage::{CleanupPolicy, FlushPolicy, LogConfig};
use crate::topics::TopicError;

/// Every topic config name the broker understands, in DescribeConfigs order.
pub const CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "delete.retention.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
    "skiff.cache.consumed.window.bytes",
    "skiff.cache.window.bytes",
];

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, TopicError> {
    value
        .trim()
        .parse::<T>()
        .map_err(|_| TopicError::InvalidConfig {
            name: name.to_string(),
            reason: format!("{value:?} is not a valid number"),
        })
}

fn at_least<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    min: T,
) -> Result<T, TopicError> {
    if value < min {
        return Err(TopicError::InvalidConfig {
            name: name.to_string(),
            reason: format!("{value} is below the minimum {min}"),
        });
    }
    Ok(value)
}

/// Applies `overrides` over `defaults`, refusing unknown names and bad values.
pub fn resolve(
    defaults: &TopicDefaults,
    overrides: &BTreeMap<String, String>,
) -> Result<TopicDefaults, TopicError> {
    let mut settings = defaults.clone();
    for (name, value) in overrides {
        let n = name.as_str();
        match n {
            "cleanup.policy" => {
                settings.cleanup_policy = match value.trim() {
                    "delete" => Cleanup::Delete,
                    "compact" => Cleanup::Compact,
                    other => {
                        return Err(TopicError::InvalidConfig {
                            name: name.clone(),
                            reason: format!("{other:?} is not delete or compact"),
                        })
                    }
                }
            }
            "delete.retention.ms" => settings.delete_retention_ms = parse(n, value)?,
            "flush.messages" => settings.flush_messages = at_least(n, parse(n, value)?, 1)?,
            "flush.ms" => settings.flush_ms = parse(n, value)?,
            "index.interval.bytes" => {
                settings.index_interval_bytes = at_least(n, parse(n, value)?, 1)?
            }
            "max.message.bytes" => settings.max_message_bytes = at_least(n, parse(n, value)?, 64)?,
            "retention.bytes" => settings.retention_bytes = at_least(n, parse(n, value)?, -1)?,
            "retention.ms" => settings.retention_ms = at_least(n, parse(n, value)?, -1)?,
            "segment.bytes" => settings.segment_bytes = at_least(n, parse(n, value)?, 1024)?,
            "segment.ms" => settings.segment_ms = at_least(n, parse(n, value)?, 1)?,
            "skiff.cache.window.bytes" => {
                settings.cache_window_bytes = at_least(n, parse(n, value)?, -1)?
            }
            "skiff.cache.consumed.window.bytes" => {
                settings.consumed_cache_window_bytes = at_least(n, parse(n, value)?, -1)?
            }
            _ => {
                return Err(TopicError::InvalidConfig {
                    name: name.clone(),
                    reason: "unknown topic config".to_string(),
                })
            }
        }
    }
    // Kafka's flush.messages=1 means "sync every write"; any other flush
    // setting asks for periodic flushing.
    if overrides.contains_key("flush.messages") || overrides.contains_key("flush.ms") {
        settings.flush_mode = if settings.flush_messages == 1 {
            FlushMode::Sync
        } else {
            FlushMode::Periodic
        };
    }
    Ok(settings)
}

/// The value of config `name` in `settings`, as DescribeConfigs shows it.
pub fn value_of(settings: &TopicDefaults, name: &str) -> Option<String> {
    Some(match name {
        "cleanup.policy" => match settings.cleanup_policy {
            Cleanup::Delete => "delete".to_string(),
            Cleanup::Compact => "compact".to_string(),
        },
        "delete.retention.ms" => settings.delete_retention_ms.to_string(),
        "flush.messages" => match settings.flush_mode {
            FlushMode::Sync => "1".to_string(),
            FlushMode::Periodic => settings.flush_messages.to_string(),
        },
        "flush.ms" => match settings.flush_mode {
            FlushMode::Sync => "0".to_string(),
            FlushMode::Periodic => settings.flush_ms.to_string(),
        },
        "index.interval.bytes" => settings.index_interval_bytes.to_string(),
        "max.message.bytes" => settings.max_message_bytes.to_string(),
        "retention.bytes" => settings.retention_bytes.to_string(),
        "retention.ms" => settings.retention_ms.to_string(),
        "segment.bytes" => settings.segment_bytes.to_string(),
        "segment.ms" => settings.segment_ms.to_string(),
        "skiff.cache.window.bytes" => settings.cache_window_bytes.to_string(),
        "skiff.cache.consumed.window.bytes" => settings.consumed_cache_window_bytes.to_string(),
        _ => return None,
    })
}

/// The storage engine's view of a topic's settings.
#[allow(clippy::needless_update)] // the storage engine may add fields with defaults
pub fn log_config(settings: &TopicDefaults) -> LogConfig {
    LogConfig {
        segment_bytes: settings.segment_bytes,
        segment_ms: settings.segment_ms,
        retention_bytes: settings.retention_bytes,
        retention_ms: settings.retention_ms,
        index_interval_bytes: settings.index_interval_bytes,
        max_message_bytes: settings.max_message_bytes,
        cleanup_policy: match settings.cleanup_policy {
            Cleanup::Delete => CleanupPolicy::Delete,
            Cleanup::Compact => CleanupPolicy::Compact,
        },
        delete_retention_ms: settings.delete_retention_ms,
        flush: match settings.flush_mode {
            FlushMode::Sync => FlushPolicy::Sync,
            FlushMode::Periodic => FlushPolicy::Periodic {
                flush_ms: settings.flush_ms,
                flush_messages: settings.flush_messages,
            },
        },
        cache_window_bytes: u64::try_from(settings.cache_window_bytes).ok(),
        consumed_cache_window_bytes: u64::try_from(settings.consumed_cache_window_bytes).ok(),
        ..LogConfig::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Overrides change exactly the named setting and read back under the same name.
    #[test]
    fn overrides_apply_and_describe() {
        let defaults = TopicDefaults::default();
        let settings = resolve(
            &defaults,
            &overrides(&[("retention.ms", "1000"), ("cleanup.policy", "compact")]),
        )
        .unwrap();
        assert_eq!(value_of(&settings, "retention.ms").as_deref(), Some("1000"));
        assert_eq!(
            value_of(&settings, "cleanup.policy").as_deref(),
            Some("compact")
        );
        assert_eq!(settings.segment_bytes, defaults.segment_bytes);
        for name in CONFIG_NAMES {
            assert!(
                value_of(&settings, name).is_some(),
                "{name} not describable"
            );
        }
        let sync = resolve(&defaults, &overrides(&[("flush.messages", "1")])).unwrap();
        assert_eq!(sync.flush_mode, FlushMode::Sync);
        let periodic = resolve(&defaults, &overrides(&[("flush.ms", "500")])).unwrap();
        assert_eq!(periodic.flush_mode, FlushMode::Periodic);
        assert_eq!(value_of(&periodic, "flush.ms").as_deref(), Some("500"));
        assert_eq!(log_config(&defaults).cache_window_bytes, None);
        let window = resolve(
            &defaults,
            &overrides(&[("skiff.cache.window.bytes", "67108864")]),
        )
        .unwrap();
        assert_eq!(log_config(&window).cache_window_bytes, Some(64 << 20));
        assert_eq!(
            value_of(&window, "skiff.cache.window.bytes").as_deref(),
            Some("67108864")
        );
    }

    /// Unknown names and bad values are INVALID_CONFIG, not silently dropped.
    #[test]
    fn bad_overrides_are_refused() {
        let defaults = TopicDefaults::default();
        for (name, value) in [
            ("retention.mss", "1"),
            ("retention.ms", "soon"),
            ("cleanup.policy", "shred"),
            ("max.message.bytes", "1"),
            ("skiff.cache.window.bytes", "-2"),
        ] {
            assert!(
                matches!(
                    resolve(&defaults, &overrides(&[(name, value)])),
                    Err(TopicError::InvalidConfig { .. })
                ),
                "{name}={value} accepted"
            );
        }
    }
}
