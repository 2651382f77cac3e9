//! The state of one subscriber connection, as `status()` and
//! `subscribed()` read it: connected or not, the last error, the channels
//! Redis confirmed. Written by the subscriber tasks of the single-server,
//! sharded and Sentinel backends and by the cluster subscriber alike.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::backend::error::BackendError;
use crate::metrics::Metrics;

/// The connection's state, written by the subscriber and its sink worker,
/// read by `status()` and `subscribed()`.
pub(crate) struct LinkState {
    inner: Mutex<Link>,
    /// Bumped whenever a subscription is confirmed or the link breaks, so
    /// that `subscribed()` can wait for a change instead of polling.
    changed: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    /// This connection's labels in `groupcast_redis_connection_up`.
    labels: Vec<(String, String)>,
}

#[derive(Default)]
struct Link {
    connected: bool,
    last_error: Option<String>,
    /// Channels Redis confirmed we are subscribed to, on this connection.
    subscribed: BTreeSet<String>,
}

/// A snapshot for `status()`.
pub(crate) struct LinkSnapshot {
    pub connected: bool,
    pub last_error: Option<String>,
    pub subscribed: Vec<String>,
}

impl LinkState {
    /// `labels`: `mode`, `role` and `redis` of this connection, for
    /// `groupcast_redis_connection_up`.
    pub(crate) fn new(metrics: Arc<Metrics>, labels: Vec<(String, String)>) -> Self {
        metrics.bus_up.set(0);
        metrics.redis_connection_up.get_or_create(&labels).set(0);
        LinkState {
            inner: Mutex::new(Link::default()),
            changed: watch::Sender::new(0),
            metrics,
            labels,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn set_connected(&self) {
        let mut link = self.inner.lock();
        link.connected = true;
        link.last_error = None;
        self.metrics.bus_up.set(1);
        self.metrics
            .redis_connection_up
            .get_or_create(&self.labels)
            .set(1);
    }

    /// A message read on this link that no one can read: counted with the
    /// undecodable envelopes (`groupcast_bus_invalid_total`).
    pub(crate) fn count_invalid(&self) {
        self.metrics.bus_invalid.inc();
    }

    /// Not usable now, though some subscriptions may still hold (a cluster
    /// whose slot map cannot be read, a primary of several down).
    pub(crate) fn set_down(&self, error: &BackendError) {
        {
            let mut link = self.inner.lock();
            link.connected = false;
            link.last_error = Some(error.to_string());
        }
        self.metrics.bus_up.set(0);
        self.bump();
    }

    /// The connection is gone (or never came): no subscriptions any more.
    pub(crate) fn set_broken(&self, error: &BackendError) {
        {
            let mut link = self.inner.lock();
            link.connected = false;
            link.last_error = Some(error.to_string());
            link.subscribed.clear();
        }
        self.metrics.bus_up.set(0);
        self.metrics.bus_subscriptions.set(0);
        self.metrics
            .redis_connection_up
            .get_or_create(&self.labels)
            .set(0);
        self.bump();
    }

    pub(crate) fn set_subscribed(&self, channel: String, on: bool) {
        {
            let mut link = self.inner.lock();
            if on {
                link.subscribed.insert(channel);
            } else {
                link.subscribed.remove(&channel);
            }
            self.metrics
                .bus_subscriptions
                .set(i64::try_from(link.subscribed.len()).unwrap_or(i64::MAX));
        }
        self.bump();
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn snapshot(&self) -> LinkSnapshot {
        let link = self.inner.lock();
        LinkSnapshot {
            connected: link.connected,
            last_error: if link.connected {
                None
            } else {
                link.last_error.clone()
            },
            subscribed: link.subscribed.iter().cloned().collect(),
        }
    }

    /// Waits until Redis has confirmed `channel`, at most `limit`.
    pub(crate) async fn confirmed(
        &self,
        channel: &str,
        limit: Duration,
    ) -> Result<(), BackendError> {
        let mut changes = self.changed.subscribe();
        let wait = async {
            loop {
                if self.inner.lock().subscribed.contains(channel) {
                    return;
                }
                // `changed` fails only when the sender is gone, which it
                // never is while `self` lives; stop waiting if it did.
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        timeout(limit, wait).await.map_err(|_| {
            let reason = self.inner.lock().last_error.clone();
            BackendError::Unavailable(format!(
                "the subscription to {channel} was not confirmed within {limit:?}{}",
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ))
        })
    }
}
