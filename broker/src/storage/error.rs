//! Errors of the storage engine.

use std::path::PathBuf;

/// What can go wrong in the storage engine. The broker maps `DiskFull`,
/// `Io`, `Poisoned` and `Corrupt` to KAFKA_STORAGE_ERROR.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No space (ENOSPC, EDQUOT) or the file size limit was hit (EFBIG):
    /// nothing of the failed append was made visible.
    #[error("disk full while writing {path}: {source}")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk fail their checks; they are never served.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },
    /// The bytes handed to `append` are not whole, well-formed v2 batches.
    #[error("invalid record batch at byte {position} of the append: {reason}")]
    InvalidBatch { position: usize, reason: String },
    #[error("invalid log configuration: {reason}")]
    InvalidConfig { reason: String },
    /// An fsync failed earlier; the partition accepts no more writes (the
    /// page cache may have dropped the dirty pages, so retrying could
    /// acknowledge data that is not on disk).
    #[error("partition {topic}-{partition} is poisoned by a failed sync; restart to recover")]
    Poisoned { topic: String, partition: i32 },
    #[error("the log is closed")]
    Closed,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Classifies an I/O error on `path`: out-of-space conditions become `DiskFull`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
                StorageError::DiskFull { path, source }
            }
            _ => StorageError::Io { path, source },
        }
    }

    pub fn corrupt(path: impl Into<PathBuf>, position: u64, reason: impl Into<String>) -> Self {
        StorageError::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }
}
