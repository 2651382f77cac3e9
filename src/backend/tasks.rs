//! A backend's background tasks, and the one token that stops them all.
//!
//! The parts of a Redis backend run tasks — a subscriber, a publisher, the
//! presence heartbeat, the Sentinel watcher — and those tasks hold the
//! parts (an `Arc` of the presence, a link's state), so a part cannot stop
//! its own tasks when it is dropped: it is never dropped while they run.
//! The tasks are therefore spawned here, under one token that the
//! [`Backend`](super::Backend) owns: [`Backend::shutdown`] cancels it at
//! its place in the sequence, and dropping the backend without a shutdown
//! cancels it too (the node then vanishes from the cluster view when its
//! heartbeat expires, as if it had died).
//!
//! [`Backend::shutdown`]: super::Backend::shutdown

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::error::BackendError;

/// The tasks of one backend. See the module docs.
pub(crate) struct Tasks {
    runtime: Handle,
    /// Every task watches it (or a clone of it).
    cancel: CancellationToken,
    /// How long each step of the shutdown may take: the command timeout.
    budget: Duration,
    running: Mutex<Vec<JoinHandle<()>>>,
}

impl Tasks {
    /// Tasks on the runtime this is called in. Fails outside one: a
    /// backend that talks to a server must be started inside Tokio.
    pub(crate) fn on_current_runtime(budget: Duration) -> Result<Self, BackendError> {
        let runtime = Handle::try_current().map_err(|_| BackendError::NoRuntime)?;
        Ok(Tasks {
            runtime,
            cancel: CancellationToken::new(),
            budget,
            running: Mutex::new(Vec::new()),
        })
    }

    /// The token a task watches to know it must stop.
    pub(crate) fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// How long each step of the shutdown may take.
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    /// Runs `task` in the background, in `span` (its logs say which
    /// backend, node and shard they are about).
    pub(crate) fn spawn(
        &mut self,
        task: impl Future<Output = ()> + Send + 'static,
        span: tracing::Span,
    ) {
        let handle = self.runtime.spawn(task.instrument(span));
        self.running.get_mut().push(handle);
    }

    /// Cancels every task and waits, at most the budget, until they have
    /// ended. Later calls find nothing left to wait for.
    pub(crate) async fn stop(&self) {
        self.cancel.cancel();
        let running = std::mem::take(&mut *self.running.lock());
        let _ = timeout(self.budget, futures_util::future::join_all(running)).await;
    }
}

impl Drop for Tasks {
    /// Dropped with its backend, shut down or not: no task outlives it.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
