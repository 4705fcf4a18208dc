//! The 16-bit attributes word of a record batch.

use crate::error::{DecodeError, Result};

/// Compression codec of a batch's records block (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec's id in the attribute bits.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn from_id(id: u8) -> Result<Self> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            codec => return Err(DecodeError::UnknownCompression { codec }),
        })
    }

    /// The name Kafka uses in `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Compression::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Whether `max_timestamp` was set by the producer or by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

/// The attributes word, kept raw so that unknown bits survive a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attributes(pub i16);

impl Attributes {
    const COMPRESSION_MASK: i16 = 0x07;
    const TIMESTAMP_TYPE: i16 = 0x08;
    const TRANSACTIONAL: i16 = 0x10;
    const CONTROL: i16 = 0x20;
    const DELETE_HORIZON: i16 = 0x40;

    pub fn new(
        compression: Compression,
        timestamp_type: TimestampType,
        transactional: bool,
        control: bool,
    ) -> Self {
        let mut bits = i16::from(compression.id());
        if timestamp_type == TimestampType::LogAppendTime {
            bits |= Self::TIMESTAMP_TYPE;
        }
        if transactional {
            bits |= Self::TRANSACTIONAL;
        }
        if control {
            bits |= Self::CONTROL;
        }
        Attributes(bits)
    }

    pub fn compression(self) -> Result<Compression> {
        Compression::from_id((self.0 & Self::COMPRESSION_MASK) as u8)
    }

    pub fn timestamp_type(self) -> TimestampType {
        if self.0 & Self::TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(self) -> bool {
        self.0 & Self::TRANSACTIONAL != 0
    }

    pub fn is_control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }

    /// Set when compaction stamped `base_timestamp` with a tombstone delete horizon (KIP-534).
    pub fn has_delete_horizon(self) -> bool {
        self.0 & Self::DELETE_HORIZON != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every codec maps to its Kafka id and back, and each flag lands on its own bit.
    #[test]
    fn attribute_bits_round_trip() {
        for codec in Compression::ALL {
            let attrs = Attributes::new(codec, TimestampType::LogAppendTime, true, false);
            assert_eq!(attrs.compression(), Ok(codec));
            assert_eq!(attrs.timestamp_type(), TimestampType::LogAppendTime);
            assert!(attrs.is_transactional());
            assert!(!attrs.is_control());
            assert_eq!(Compression::from_name(codec.name()), Some(codec));
        }
        assert_eq!(
            Attributes::new(Compression::Zstd, TimestampType::CreateTime, false, true).0,
            0x24
        );
        assert_eq!(
            Attributes(5).compression(),
            Err(DecodeError::UnknownCompression { codec: 5 })
        );
    }
}
