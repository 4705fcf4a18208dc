//! [`LogManager`]: every partition log under one data directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::background::BackgroundWorker;
use super::cache_window::Windows;
use super::error::{Result, StorageError};
use super::format::{parse_partition_dir_name, partition_dir_name, CLEAN_SHUTDOWN_FILE};
use super::log::PartitionLog;
use super::recovery::{open_partition, RecoveryReport};
use super::segment::{remove_if_exists, sync_dir, write_file_atomically};
use super::{system_clock, CleanupPolicy, Clock, FlushPolicy, LogConfig};

type Key = (String, i32);

/// Owns `<data_dir>/<topic>-<partition>/` directories.
pub struct LogManager {
    data_dir: PathBuf,
    defaults: LogConfig,
    clock: Clock,
    logs: RwLock<HashMap<Key, Arc<PartitionLog>>>,
    recovery: HashMap<Key, RecoveryReport>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl LogManager {
    /// Opens the data directory, recovering every partition found in it.
    pub fn open(data_dir: &Path, defaults: LogConfig) -> Result<Arc<LogManager>> {
        Self::open_with_clock(data_dir, defaults, system_clock())
    }

    pub fn open_with_clock(
        data_dir: &Path,
        defaults: LogConfig,
        clock: Clock,
    ) -> Result<Arc<LogManager>> {
        defaults.validate()?;
        std::fs::create_dir_all(data_dir).map_err(|e| StorageError::io(data_dir, e))?;
        let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let mut logs = HashMap::new();
        let mut recovery = HashMap::new();
        let entries = std::fs::read_dir(data_dir).map_err(|e| StorageError::io(data_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(data_dir, e))?;
            if !entry.path().is_dir() {
                continue;
            }
            let Some((topic, partition)) =
                parse_partition_dir_name(&entry.file_name().to_string_lossy())
            else {
                continue;
            };
            let (log, report) = open_partition(
                &entry.path(),
                &topic,
                partition,
                defaults.clone(),
                clock.clone(),
                clean,
            )?;
            if report != RecoveryReport::default() {
                tracing::info!(topic = %topic, partition, ?report, "partition recovered");
            }
            recovery.insert((topic.clone(), partition), report);
            logs.insert((topic, partition), Arc::new(log));
        }
        // The marker vouches only for the state it was written over.
        remove_if_exists(&marker)?;
        sync_dir(data_dir)?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Ok(Arc::new(LogManager {
            data_dir: data_dir.to_path_buf(),
            defaults,
            clock,
            logs: RwLock::new(logs),
            recovery,
            shutdown,
        }))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn defaults(&self) -> &LogConfig {
        &self.defaults
    }

    /// What recovery did to a partition when the manager opened.
    pub fn recovery_report(&self, topic: &str, partition: i32) -> Option<RecoveryReport> {
        self.recovery.get(&(topic.to_string(), partition)).cloned()
    }

    /// Creates the partition, or returns the existing one with `config` applied.
    pub fn create_partition(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<Arc<PartitionLog>> {
        config.validate()?;
        if topic.is_empty() || topic.contains('/') || topic == "." || topic == ".." || partition < 0
        {
            return Err(StorageError::InvalidConfig {
                reason: format!("invalid topic partition {topic:?}-{partition}"),
            });
        }
        let mut logs = self
            .logs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(log) = logs.get(&(topic.to_string(), partition)) {
            log.set_config(config)?;
            return Ok(log.clone());
        }
        let dir = self.data_dir.join(partition_dir_name(topic, partition));
        let (log, _) = open_partition(&dir, topic, partition, config, self.clock.clone(), false)?;
        sync_dir(&self.data_dir)?;
        let log = Arc::new(log);
        logs.insert((topic.to_string(), partition), log.clone());
        Ok(log)
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
        let logs = self
            .logs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        logs.get(&(topic.to_string(), partition)).cloned()
    }

    pub fn partitions(&self) -> Vec<(String, i32, Arc<PartitionLog>)> {
        let logs = self
            .logs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<_> = logs
            .iter()
            .map(|((t, p), log)| (t.clone(), *p, log.clone()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Removes every partition of `topic` and its files. Readers holding
    /// `Bytes` from it keep valid memory.
    pub fn delete_topic(&self, topic: &str) -> Result<()> {
        let removed: Vec<Arc<PartitionLog>> = {
            let mut logs = self
                .logs
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let keys: Vec<Key> = logs.keys().filter(|(t, _)| t == topic).cloned().collect();
            keys.iter().filter_map(|k| logs.remove(k)).collect()
        };
        for log in removed {
            log.abandon();
            let _maintenance = super::log::lock(&log.shared().maintenance);
            std::fs::remove_dir_all(log.dir()).map_err(|e| StorageError::io(log.dir(), e))?;
        }
        sync_dir(&self.data_dir)
    }

    /// Flushes and closes every partition, then writes the clean-shutdown marker.
    pub fn shutdown(&self) -> Result<()> {
        self.shutdown.send_replace(true);
        let mut first_error = None;
        for (_, _, log) in self.partitions() {
            if let Err(error) = log.close() {
                tracing::error!(topic = log.topic(), partition = log.partition(), %error, "close failed");
                first_error.get_or_insert(error);
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        write_file_atomically(&self.data_dir.join(CLEAN_SHUTDOWN_FILE), b"")?;
        sync_dir(&self.data_dir)
    }

    /// Starts the background tasks: periodic flush, retention, compaction.
    /// They stop at [`shutdown`](Self::shutdown). Call from within a tokio runtime.
    pub fn start_background(self: &Arc<Self>) {
        let manager = self.clone();
        let started_ms = (self.clock)();
        tokio::spawn(async move { manager.background_loop(started_ms).await });
    }

    async fn background_loop(self: Arc<Self>, started_ms: i64) {
        let mut shutdown = self.shutdown.subscribe();
        let tick = Duration::from_millis(BACKGROUND_TICK_MS);
        let mut last_maintenance_ms = started_ms;
        let worker = match BackgroundWorker::start("skiff-storage") {
            Ok(worker) => Some(worker),
            Err(error) => {
                tracing::warn!(%error, "no storage background thread; passes run on the blocking pool");
                None
            }
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let now_ms = (self.clock)();
            let run_maintenance = now_ms - last_maintenance_ms >= MAINTENANCE_INTERVAL_MS;
            if run_maintenance {
                last_maintenance_ms = now_ms;
            }
            let manager = self.clone();
            let pass = move || manager.background_pass(now_ms, run_maintenance);
            let failure = match &worker {
                Some(worker) => worker.run(pass).await.err().map(|e| e.to_string()),
                None => tokio::task::spawn_blocking(pass)
                    .await
                    .err()
                    .map(|e| e.to_string()),
            };
            if let Some(error) = failure {
                tracing::error!(%error, "storage background pass failed");
            }
        }
    }

    /// One pass of background work over all partitions (public for tests,
    /// which drive it with their own clock).
    pub fn background_pass(&self, now_ms: i64, run_maintenance: bool) {
        for (topic, partition, log) in self.partitions() {
            let config = log.config();
            let shared = log.shared();
            let due = match config.flush {
                FlushPolicy::Periodic {
                    flush_ms,
                    flush_messages,
                } => {
                    // A roll leaves the old segment to trim and sync (as
                    // Kafka flushes a rolled segment at once, in the background).
                    let since = now_ms
                        - shared
                            .last_flush_ms
                            .load(std::sync::atomic::Ordering::Relaxed);
                    since >= flush_ms as i64
                        || shared
                            .batches_since_flush
                            .load(std::sync::atomic::Ordering::Relaxed)
                            >= flush_messages
                        || shared.has_pending_closed()
                }
                // Sync-mode syncs happen on demand; this only completes rolls
                // that no producer waited for (acks=0).
                FlushPolicy::Sync => shared.has_pending_closed(),
            };
            if due {
                // Submitted in steps first: the fdatasync then mostly waits.
                shared.start_active_writeback();
                if let Err(error) = log.flush() {
                    tracing::error!(topic = %topic, partition, %error, "flush failed");
                }
            }
            // Failing here (a full disk) is not an error of its own: the
            // roll then creates the segment and reports what it finds.
            if let Err(error) = shared.prepare_next_segment(now_ms) {
                tracing::debug!(topic = %topic, partition, %error, "next segment not prepared");
            }
            // After the preparation, which appends may be waiting for: the
            // trim can wait for the disk.
            let windows = Windows {
                all_bytes: config.cache_window_bytes,
                consumed_bytes: config.consumed_cache_window_bytes,
            };
            if windows.all_bytes.is_some() || windows.consumed_bytes.is_some() {
                shared.trim_page_cache(windows);
            }
            if !run_maintenance {
                continue;
            }
            if let Err(error) = log.apply_retention(now_ms) {
                tracing::error!(topic = %topic, partition, %error, "retention failed");
            }
            if config.cleanup_policy == CleanupPolicy::Compact {
                if let Err(error) = log.compact(now_ms) {
                    tracing::error!(topic = %topic, partition, %error, "compaction failed");
                }
            }
        }
    }
}

/// How often the background task looks for due flushes.
pub const BACKGROUND_TICK_MS: u64 = 100;
/// How often retention and compaction run (Kafka: 5 minutes for retention;
/// we check more often because a check of an idle partition is cheap).
pub const MAINTENANCE_INTERVAL_MS: i64 = 30_000;
