//! The app's background tasks (LISTEN listener, announcer, heads check, retention, feed
//! pumps, …). Every long-lived task is spawned through the one [`Tasks`] the app holds,
//! so shutdown can tell them all to stop and wait for them, with a deadline.
//!
//! Per-request work stays in its request; sockets run in the tasks axum spawns for them
//! and are counted by the server's connection slots instead.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` in the background until it returns. Tasks that loop watch
    /// [`Tasks::stopping`] and return when it fires.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Fires when the app is stopping.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// The stop signal, for tasks that outlive a borrow of `self`.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Tells every task to stop and waits for them for at most `within`; true when all
    /// ended in time. Tasks still running are left to the runtime's shutdown.
    pub async fn stop(&self, within: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        let stopped = tokio::time::timeout(within, self.tracker.wait()).await.is_ok();
        if !stopped {
            tracing::warn!(running = self.tracker.len(), "background tasks still running at the shutdown deadline");
        }
        stopped
    }

    /// Tasks still running (spawned and not yet ended).
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_waits_for_tasks_that_watch_the_signal_and_gives_up_on_the_others() {
        let tasks = Tasks::new();
        let watcher = tasks.clone();
        tasks.spawn(async move { watcher.stopping().await });
        assert!(tasks.stop(Duration::from_secs(5)).await);
        assert_eq!(tasks.running(), 0);

        let tasks = Tasks::new();
        tasks.spawn(std::future::pending::<()>());
        assert!(!tasks.stop(Duration::from_millis(50)).await);
        assert_eq!(tasks.running(), 1);
    }
}
