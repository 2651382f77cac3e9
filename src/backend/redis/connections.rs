//! A link's connections as `status()` shows them, whatever the transport.
//!
//! Every Redis backend answers `status()` from the same two things: the
//! link's [`LinkState`](super::link_state::LinkState) (connected, the last
//! error, the channels Redis confirmed) and the list of its subscriber
//! connections. Only the list differs — one connection to one server, or
//! one per Redis Cluster primary the subscriber needs — so it is one
//! [`Connections`] value that the link's broker reads, and the summary is
//! written once. (The sharded backend adds its shards' summaries up.)

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::link_state::LinkSnapshot;
use super::target::CurrentServer;
use crate::backend::status::{BackendStatus, ConnectionStatus};

/// Where a link's subscriber connections go.
pub(crate) enum Connections {
    /// One connection, to the server `target` names; `role` is what it is
    /// for (`redis`, `shard 2`, `primary`).
    One {
        target: Arc<CurrentServer>,
        role: String,
    },
    /// One connection per Redis Cluster primary, as the cluster subscriber
    /// keeps them.
    Primaries(Arc<PrimaryConnections>),
}

impl Connections {
    /// The link's `status()` in `kind` mode, its state being `link`.
    pub(crate) fn status(&self, kind: &'static str, link: LinkSnapshot) -> BackendStatus {
        match self {
            Connections::One { target, role } => BackendStatus {
                kind,
                connected: link.connected,
                connections: vec![ConnectionStatus {
                    role: role.clone(),
                    redis: target.address(),
                    connected: link.connected,
                    subscriptions: link.subscribed.len(),
                }],
                subscriptions: link.subscribed,
                last_error: link.last_error,
            },
            Connections::Primaries(primaries) => {
                let connections = primaries.snapshot();
                let down: Vec<String> = connections
                    .iter()
                    .filter(|c| !c.connected)
                    .map(|c| format!("primary {} down", c.redis))
                    .collect();
                // The slot map's or the cluster channel's trouble first;
                // else the primaries that are down.
                let last_error = link
                    .last_error
                    .or_else(|| (!down.is_empty()).then(|| down.join("; ")));
                BackendStatus {
                    kind,
                    connected: link.connected,
                    subscriptions: link.subscribed,
                    last_error,
                    connections,
                }
            }
        }
    }
}

/// The cluster subscriber's connections, one per primary (`host:port`):
/// up or not, and how many channels each carries. Written by the
/// subscriber, read by `status()`.
#[derive(Default)]
pub(crate) struct PrimaryConnections {
    inner: Mutex<HashMap<String, (bool, usize)>>,
}

impl PrimaryConnections {
    /// Every primary connection, sorted by address.
    pub(crate) fn snapshot(&self) -> Vec<ConnectionStatus> {
        let mut out: Vec<ConnectionStatus> = self
            .inner
            .lock()
            .iter()
            .map(|(node, &(connected, subscriptions))| ConnectionStatus {
                role: "primary".into(),
                redis: node.clone(),
                connected,
                subscriptions,
            })
            .collect();
        out.sort_by(|a, b| a.redis.cmp(&b.redis));
        out
    }

    /// `node`'s connection was closed: not needed any more.
    pub(crate) fn forget(&self, node: &str) {
        self.inner.lock().remove(node);
    }

    /// `node`'s connection was lost: shown down, carrying nothing.
    pub(crate) fn lost(&self, node: &str) {
        self.inner.lock().insert(node.to_string(), (false, 0));
    }

    /// Shows `now` (primary → up, channels), and keeps the primaries it
    /// does not name only while `keep` says so (a lost primary stays
    /// visible, down, until the slot map drops it).
    pub(crate) fn show(&self, now: HashMap<String, (bool, usize)>, keep: impl Fn(&str) -> bool) {
        let mut shown = self.inner.lock();
        shown.retain(|node, _| now.contains_key(node) || keep(node));
        shown.extend(now);
    }
}
