//! The spawn seam: every task the node starts, async or blocking, goes through one [`Tasks`]
//! handle.
//!
//! Two reasons. **Shutdown knows when it is done**: after the stop signal, [`Tasks::wait`]
//! resolves when every task and every piece of blocking work has ended (a model run, a
//! discovery pass, an RPC read), so the store is free the moment it returns, without polling
//! reference counts. **Tests can run on one thread**: [`Tasks::inline`] runs blocking work
//! on the task that awaits it instead of on tokio's blocking pool, so on a current-thread
//! runtime with a manual clock everything PIPE and the drivers do happens in one seeded,
//! repeatable order.

use std::future::Future;

use futures::future::BoxFuture;
use tokio_util::task::TaskTracker;

/// Blocking work that did not finish: it panicked, or the runtime went away.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("task failed: {0}")]
pub struct TaskError(pub String);

/// Where the node's tasks run. Cheap to clone; clones share the same set of tasks.
#[derive(Clone, Debug)]
pub struct Tasks {
    tracker: TaskTracker,
    inline: bool,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    /// Async tasks on the current tokio runtime, blocking work on its blocking pool.
    pub fn new() -> Self {
        Self {
            tracker: TaskTracker::new(),
            inline: false,
        }
    }

    /// Blocking work runs on the task that awaits it, where it is awaited: with a
    /// current-thread runtime, one thread does everything, in a repeatable order.
    pub fn inline() -> Self {
        Self {
            tracker: TaskTracker::new(),
            inline: true,
        }
    }

    /// Spawns `future` as a task of this set.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(future)
    }

    /// Runs `f`, which blocks (CPU work, a model, disk), off the async workers; resolves with
    /// its result. The work counts as a task of this set until it returns, even if the
    /// future is dropped first.
    pub fn blocking<F, R>(&self, f: F) -> BoxFuture<'static, Result<R, TaskError>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        if self.inline {
            let token = self.tracker.token();
            Box::pin(async move {
                let out = f();
                drop(token);
                Ok(out)
            })
        } else {
            let handle = self.tracker.spawn_blocking(f);
            Box::pin(async move { handle.await.map_err(|e| TaskError(e.to_string())) })
        }
    }

    /// Tasks and blocking work still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Resolves once every task and piece of blocking work has ended. Tasks may still be
    /// added while it waits (a task finishing its work may start more); it resolves when
    /// there are none.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_covers_blocking_work_whose_future_was_dropped() {
        let tasks = Tasks::new();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        // Dropped at once: the work goes on, and shutdown must still wait for it.
        drop(tasks.blocking(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            d.fetch_add(1, Ordering::SeqCst);
        }));
        let d = done.clone();
        tasks.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        tasks.wait().await;
        assert_eq!(done.load(Ordering::SeqCst), 2);
        assert!(tasks.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn inline_work_runs_on_the_awaiting_thread() {
        let tasks = Tasks::inline();
        let here = std::thread::current().id();
        let ran_on = tasks
            .blocking(|| std::thread::current().id())
            .await
            .unwrap();
        assert_eq!(ran_on, here);
        tasks.wait().await;
    }
}
