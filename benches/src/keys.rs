//! Record keys for a workload: none, uniform over N keys, or Zipf-distributed
//! over N keys with skew S (rank k drawn with probability ∝ 1/k^S), so that a
//! few hot keys — and therefore hot partitions — appear as in real traffic.
//!
//! The generator is pure: a seeded RNG and precomputed tables, so a run is
//! repeatable and the distribution is unit-tested. Keys are slices of one
//! pre-rendered buffer, so drawing a key allocates nothing.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Most distinct keys a workload may use: the rendered keys and the Zipf CDF
/// stay in memory (about 20 bytes per key).
pub const KEYS_MAX: u64 = 1_000_000;

/// Keys when `zipf:S` names no count.
pub const ZIPF_DEFAULT_KEYS: u64 = 10_000;

/// Width of every rendered key (`k` + 10 digits), so all keys are the same size.
const KEY_BYTES: usize = 11;

/// How record keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDistribution {
    /// No key: the producer's keyless (sticky) partitioner chooses.
    None,
    /// Each of `keys` keys equally likely.
    Uniform { keys: u64 },
    /// Key of rank k (1-based) with probability ∝ 1 / k^exponent.
    Zipf { exponent: f64, keys: u64 },
}

impl FromStr for KeyDistribution {
    type Err = String;

    /// Accepts `none`, `uniform:N`, `zipf:S` and `zipf:S:N`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.trim().split(':');
        let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
        let parse_keys = |part: Option<&str>, default: Option<u64>| -> Result<u64, String> {
            let keys = match (part, default) {
                (Some(part), _) => part
                    .parse::<u64>()
                    .map_err(|_| format!("invalid key count {part:?} in {text:?}"))?,
                (None, Some(default)) => default,
                (None, None) => {
                    return Err(format!("{text:?} needs a key count, e.g. uniform:1000"))
                }
            };
            if keys == 0 || keys > KEYS_MAX {
                return Err(format!("key count {keys} must be between 1 and {KEYS_MAX}"));
            }
            Ok(keys)
        };
        let distribution = match kind.as_str() {
            "none" => KeyDistribution::None,
            "uniform" => KeyDistribution::Uniform {
                keys: parse_keys(parts.next(), None)?,
            },
            "zipf" => {
                let exponent_text = parts
                    .next()
                    .ok_or_else(|| format!("{text:?} needs a skew, e.g. zipf:1.1"))?;
                let exponent: f64 = exponent_text
                    .parse()
                    .map_err(|_| format!("invalid zipf skew {exponent_text:?}"))?;
                if !(exponent.is_finite() && exponent >= 0.0) {
                    return Err(format!(
                        "zipf skew must be a finite number >= 0, got {exponent}"
                    ));
                }
                let keys = parse_keys(parts.next(), Some(ZIPF_DEFAULT_KEYS))?;
                KeyDistribution::Zipf { exponent, keys }
            }
            _ => {
                return Err(format!(
                    "unknown key distribution {text:?}: none | uniform:N | zipf:S[:N]"
                ))
            }
        };
        if parts.next().is_some() {
            return Err(format!("too many ':' fields in key distribution {text:?}"));
        }
        Ok(distribution)
    }
}

impl fmt::Display for KeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDistribution::None => write!(f, "none"),
            KeyDistribution::Uniform { keys } => write!(f, "uniform:{keys}"),
            KeyDistribution::Zipf { exponent, keys } => write!(f, "zipf:{exponent}:{keys}"),
        }
    }
}

/// The shared, read-only part of key generation: rendered keys and the Zipf
/// CDF. Built once per run and cloned cheaply into every producer.
#[derive(Clone, Debug)]
pub struct KeySpace {
    distribution: KeyDistribution,
    rendered: Bytes,
    /// `cdf[i]` = P(rank <= i + 1); empty unless Zipf.
    cdf: std::sync::Arc<[f64]>,
}

impl KeySpace {
    pub fn new(distribution: KeyDistribution) -> Self {
        let keys = match distribution {
            KeyDistribution::None => 0,
            KeyDistribution::Uniform { keys } | KeyDistribution::Zipf { keys, .. } => keys,
        };
        assert!(keys <= KEYS_MAX, "key count checked at parse time");
        let mut rendered = Vec::with_capacity(keys as usize * KEY_BYTES);
        for index in 0..keys {
            rendered.extend_from_slice(format!("k{index:010}").as_bytes());
        }
        let cdf: Vec<f64> = match distribution {
            KeyDistribution::Zipf { exponent, keys } => {
                let weights: Vec<f64> = (1..=keys)
                    .map(|rank| (rank as f64).powf(-exponent))
                    .collect();
                let total: f64 = weights.iter().sum();
                let mut running = 0.0;
                weights
                    .iter()
                    .map(|weight| {
                        running += weight / total;
                        running
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        KeySpace {
            distribution,
            rendered: Bytes::from(rendered),
            cdf: cdf.into(),
        }
    }

    pub fn distribution(&self) -> KeyDistribution {
        self.distribution
    }

    /// A generator for one producer; distinct seeds give independent streams.
    pub fn generator(&self, seed: u64) -> KeyGenerator {
        KeyGenerator {
            space: self.clone(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The rendered key of a 0-based index (rank - 1 for Zipf).
    pub fn key(&self, index: u64) -> Bytes {
        let start = index as usize * KEY_BYTES;
        self.rendered.slice(start..start + KEY_BYTES)
    }
}

/// Draws keys for one producer.
#[derive(Debug)]
pub struct KeyGenerator {
    space: KeySpace,
    rng: SmallRng,
}

impl KeyGenerator {
    /// The 0-based index of the next key, or `None` when records have no key.
    pub fn next_index(&mut self) -> Option<u64> {
        match self.space.distribution {
            KeyDistribution::None => None,
            KeyDistribution::Uniform { keys } => Some(self.rng.random_range(0..keys)),
            KeyDistribution::Zipf { keys, .. } => {
                let draw: f64 = self.rng.random();
                // Rounding can leave the last CDF entry a hair below 1.0; clamp.
                let index = self
                    .space
                    .cdf
                    .partition_point(|&cumulative| cumulative < draw)
                    as u64;
                Some(index.min(keys - 1))
            }
        }
    }

    /// The next key's bytes (a slice of the shared buffer, no allocation).
    pub fn next_key(&mut self) -> Option<Bytes> {
        self.next_index().map(|index| self.space.key(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frequencies(distribution: KeyDistribution, draws: usize) -> Vec<f64> {
        let space = KeySpace::new(distribution);
        let mut generator = space.generator(7);
        let keys = match distribution {
            KeyDistribution::Uniform { keys } | KeyDistribution::Zipf { keys, .. } => keys,
            KeyDistribution::None => 0,
        };
        let mut counts = vec![0u64; keys as usize];
        for _ in 0..draws {
            let index = generator.next_index();
            assert!(index.is_some(), "a keyed distribution always yields a key");
            if let Some(index) = index {
                counts[index as usize] += 1;
            }
        }
        counts
            .iter()
            .map(|&count| count as f64 / draws as f64)
            .collect()
    }

    /// The text forms parse to what they say and bad ones are refused.
    #[test]
    fn distributions_parse() {
        assert_eq!("none".parse(), Ok(KeyDistribution::None));
        assert_eq!(
            "uniform:64".parse(),
            Ok(KeyDistribution::Uniform { keys: 64 })
        );
        assert_eq!(
            "zipf:1.1".parse(),
            Ok(KeyDistribution::Zipf {
                exponent: 1.1,
                keys: ZIPF_DEFAULT_KEYS
            })
        );
        assert_eq!(
            "zipf:0.9:500".parse(),
            Ok(KeyDistribution::Zipf {
                exponent: 0.9,
                keys: 500
            })
        );
        for bad in [
            "uniform",
            "uniform:0",
            "uniform:x",
            "zipf",
            "zipf:-1",
            "zipf:1:2:3",
            "gauss:3",
            "uniform:2000000",
        ] {
            assert!(
                bad.parse::<KeyDistribution>().is_err(),
                "{bad} must be rejected"
            );
        }
        let round_trip = KeyDistribution::Zipf {
            exponent: 1.2,
            keys: 77,
        };
        assert_eq!(round_trip.to_string().parse(), Ok(round_trip));
    }

    /// Uniform keys are each drawn about 1/N of the time.
    #[test]
    fn uniform_is_flat() {
        let shares = frequencies(KeyDistribution::Uniform { keys: 10 }, 200_000);
        for share in shares {
            assert!((share - 0.1).abs() < 0.01, "share {share} not near 0.1");
        }
    }

    /// Zipf rank k is drawn with probability (1/k^s) / H(N, s): check the head ranks.
    #[test]
    fn zipf_matches_its_law() {
        let keys = 100u64;
        let exponent = 1.0;
        let harmonic: f64 = (1..=keys).map(|k| (k as f64).powf(-exponent)).sum();
        let shares = frequencies(KeyDistribution::Zipf { exponent, keys }, 400_000);
        for rank in 1..=5u64 {
            let expected = (rank as f64).powf(-exponent) / harmonic;
            let observed = shares[rank as usize - 1];
            assert!(
                (observed - expected).abs() < 0.01,
                "rank {rank}: observed {observed}, expected {expected}"
            );
        }
        // Skew 0 degenerates to uniform.
        let flat = frequencies(
            KeyDistribution::Zipf {
                exponent: 0.0,
                keys: 4,
            },
            100_000,
        );
        assert!(
            flat.iter().all(|share| (share - 0.25).abs() < 0.01),
            "{flat:?}"
        );
    }

    /// The same seed gives the same keys; keys are fixed-width and distinct.
    #[test]
    fn generation_is_repeatable() {
        let space = KeySpace::new(KeyDistribution::Zipf {
            exponent: 1.1,
            keys: 1000,
        });
        let first: Vec<_> = {
            let mut generator = space.generator(42);
            (0..100).map(|_| generator.next_key()).collect()
        };
        let mut again = space.generator(42);
        let second: Vec<_> = (0..100).map(|_| again.next_key()).collect();
        assert_eq!(first, second);
        assert_eq!(space.key(0), Bytes::from_static(b"k0000000000"));
        assert_eq!(space.key(999), Bytes::from_static(b"k0000000999"));
        let mut none = KeySpace::new(KeyDistribution::None).generator(1);
        assert_eq!(none.next_key(), None);
    }
}
