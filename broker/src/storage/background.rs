//! The thread that runs the storage background pass, below the priority of
//! request handling.
//!
//! The pass (periodic flushes, the page-cache window's writeback and drop,
//! preparing the next segment) is kernel work of a few milliseconds at a
//! time under a steady producer: submitting writeback, freeing pages. On a
//! small machine a request-handling thread woken behind it waited for it
//! (3–6 ms, sometimes with the other CPU idle), which set the 99th
//! percentile of produce and end-to-end latency. A kernel built without
//! preemption does not stop work inside a syscall for a woken thread, so
//! the pass works in steps of [`BACKGROUND_STEP_BYTES`] and yields between
//! them (`Segment::drop_cache_below`, `Segment::start_writeback`); the
//! raised nice value makes the scheduler pick the request threads at those
//! points and gives the pass a small share of a contended CPU, which still
//! keeps flushes going. Nothing on the request path waits for this thread
//! (sync-mode producers flush on tokio's blocking pool).
//!
//! [`BACKGROUND_STEP_BYTES`]: super::BACKGROUND_STEP_BYTES

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

/// Nice value of the background thread (request threads run at 0). At 10
/// the thread weighs about a tenth of a request thread when the CPU is
/// contended.
pub const BACKGROUND_NICE: i32 = 10;

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("the background job panicked")]
    Panicked,
    #[error("the background thread is gone")]
    Gone,
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// One long-lived thread at [`BACKGROUND_NICE`], running jobs in the order
/// given. It ends when the worker is dropped, after the job it is running.
pub struct BackgroundWorker {
    jobs: mpsc::Sender<Job>,
}

impl BackgroundWorker {
    pub fn start(name: &str) -> std::io::Result<BackgroundWorker> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                lower_own_priority(BACKGROUND_NICE);
                while let Ok(job) = queue.recv() {
                    job();
                }
            })?;
        Ok(BackgroundWorker { jobs })
    }

    /// Runs `work` on the thread and waits for it. A panic in `work` is
    /// reported, not propagated; the thread goes on with the next job.
    pub async fn run<T, F>(&self, work: F) -> Result<T, BackgroundError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(work));
            let _ = done.send(result);
        });
        self.jobs.send(job).map_err(|_| BackgroundError::Gone)?;
        match outcome.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_panic)) => Err(BackgroundError::Panicked),
            Err(_) => Err(BackgroundError::Gone),
        }
    }
}

/// Raises the calling thread's nice value to `nice` (never lowers it: an
/// unprivileged process could not take it back). On Linux the nice value
/// of `PRIO_PROCESS` with `who = 0` is the calling thread's own.
fn lower_own_priority(nice: i32) {
    let current = own_nice();
    if current >= nice {
        return;
    }
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, nice, "storage background thread keeps its priority");
    }
}

/// The calling thread's nice value.
fn own_nice() -> i32 {
    // SAFETY: getpriority takes plain integers and touches no memory of ours.
    // (-1 is also a valid answer; errno is not needed for PRIO_PROCESS of
    // the calling thread, which cannot fail.)
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_named_thread_at_the_lower_priority() {
        let own_before = own_nice();
        let worker = BackgroundWorker::start("test-background").unwrap();
        let nice = worker.run(own_nice).await.unwrap();
        assert!(nice >= BACKGROUND_NICE, "job ran at nice {nice}");
        let name = worker
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("test-background"));
        // The caller's thread keeps its priority.
        assert_eq!(own_nice(), own_before);
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_the_thread_goes_on() {
        let worker = BackgroundWorker::start("test-background").unwrap();
        let panicked = worker.run(|| panic!("job fails")).await;
        assert!(matches!(panicked, Err(BackgroundError::Panicked)));
        assert_eq!(worker.run(|| 7).await.unwrap(), 7);
    }
}
