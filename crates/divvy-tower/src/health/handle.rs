//! Background tasks that stop when their handle is dropped or shut down.

use std::fmt;
use std::future::Future;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Resolves when the task should stop: on [`Background::shutdown`] or when the handle is dropped
/// (the sender closes either way).
pub(crate) type Stop = oneshot::Receiver<()>;

/// A spawned task and the means to stop it. Dropping it stops the task at its next poll without
/// waiting; [`shutdown`](Self::shutdown) stops it and waits until it has ended.
pub(crate) struct Background {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Background {
    /// Spawns `run` on the current tokio runtime. `run` must return soon after its [`Stop`]
    /// resolves; tasks here select on it around every await.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`tokio::spawn`].
    pub(crate) fn spawn<F>(run: impl FnOnce(Stop) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, rx) = oneshot::channel();
        Background {
            stop,
            task: tokio::spawn(run(rx)),
        }
    }

    /// Stops the task and waits until it has ended: once this returns, the task does nothing more.
    /// A panic in the task (a panicking callback) is resumed here.
    pub(crate) async fn shutdown(self) {
        let Background { stop, task } = self;
        drop(stop);
        if let Err(e) = task.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }

    /// Whether the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl fmt::Debug for Background {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Background")
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

/// The running health checker from [`HealthChecker::spawn`](super::HealthChecker::spawn).
///
/// Dropping the handle stops the checker at its next step, without waiting;
/// [`shutdown`](Self::shutdown) stops it and waits until it has ended. Either way a probe in
/// flight is abandoned, not reported.
#[must_use = "dropping the handle stops the health checker"]
#[derive(Debug)]
pub struct HealthCheckHandle {
    pub(crate) inner: Background,
}

impl HealthCheckHandle {
    /// Stops the checker and waits until its task has ended. Once this returns no probe result
    /// is reported and no callback runs.
    pub async fn shutdown(self) {
        self.inner.shutdown().await;
    }

    /// Whether the checker's task has ended (after a shutdown, or a panic in a callback).
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
}
