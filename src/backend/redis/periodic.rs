//! The loop of a task that works on a timer: the presence heartbeat and
//! the Sentinel watcher.
//!
//! Both wake every interval (at once the first time; a tick that comes
//! late delays the next rather than being caught up on), stop when the
//! backend's token is cancelled, and, while Redis or the Sentinels fail,
//! say so once when the failures start and once when they end rather than
//! at every attempt: the subscriber already reports an outage.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Ticks until cancelled. See the module docs.
pub(crate) struct Every {
    ticks: Interval,
    cancel: CancellationToken,
}

/// Why [`Every::next`] returned.
pub(crate) enum Woken {
    /// The interval passed.
    Tick,
    /// The [`Notify`] it was given was notified.
    Notified,
}

impl Every {
    /// Every `interval` until `cancel`.
    pub(crate) fn new(interval: Duration, cancel: CancellationToken) -> Self {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Every { ticks, cancel }
    }

    /// Waits for the next tick, or for `wake` when there is one; `None`
    /// once the task must stop.
    pub(crate) async fn next(&mut self, wake: Option<&Notify>) -> Option<Woken> {
        let notified = async {
            match wake {
                Some(wake) => wake.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.cancel.cancelled() => None,
            _ = self.ticks.tick() => Some(Woken::Tick),
            _ = notified => Some(Woken::Notified),
        }
    }
}

/// Whether the attempts fail, to log a streak of failures once. See the
/// module docs.
#[derive(Default)]
pub(crate) struct Streak {
    failing: bool,
}

impl Streak {
    /// An attempt failed. True for the first failure of a streak: the one
    /// to log as a warning (the others, at debug level).
    pub(crate) fn failed(&mut self) -> bool {
        !std::mem::replace(&mut self.failing, true)
    }

    /// An attempt worked. True when it ends a streak of failures.
    pub(crate) fn worked(&mut self) -> bool {
        std::mem::replace(&mut self.failing, false)
    }
}
