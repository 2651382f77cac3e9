//! Control on this node: running what another node asks of it (closing
//! the sessions a disconnect names) and asking every other node, counting
//! their answers. The wire format is `backend/control.rs`; the public
//! entry point, `Hub::disconnect`, is `disconnect.rs`.
//!
//! **Asking.** The asker knows which nodes are alive from the cluster view
//! (`ClusterView::nodes`), sends one request on the cluster channel and
//! waits until each of them answered, at most [`ANSWER_TIMEOUT`]. So it can
//! say "nobody has this session" truthfully: every live node said 0. A
//! node that did not answer in time (killed but not yet out of the view,
//! cut off from Redis, of an earlier version) is named in the answer, so
//! the caller knows the count may be short. A session id is unique, so a
//! disconnect of one session stops waiting at the first node that had it.
//!
//! Below the hub, like `delivery.rs`: it holds the registry and a weak
//! handle on the broker, never the hub.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::backend::control::{Command, Control, ControlReply, ControlRequest, Who};
use crate::backend::{BackendEvents, Broker, Inbound};
use crate::close::CloseReason;
use crate::delivery::Delivery;
use crate::error::HubError;
use crate::registry::Registry;

/// How long an asker waits for every live node's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the other nodes answered to one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Answers {
    /// The sum of their counts.
    pub(crate) disconnected: u64,
    /// The live nodes that did not answer within [`ANSWER_TIMEOUT`].
    pub(crate) unanswered: Vec<String>,
}

/// This node's side of control between nodes. See the module docs.
pub(crate) struct NodeControl {
    registry: Arc<Registry>,
    node_id: String,
    /// Ids of this node's requests.
    seq: AtomicU64,
    /// Requests waiting for answers: each answer (node, count) goes to
    /// its asker.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<(String, u64)>>>,
    /// Where answers are sent (weak: the backend owns this through its
    /// inbox), set once the backend has started.
    broker: OnceLock<Weak<dyn Broker>>,
}

impl NodeControl {
    pub(crate) fn new(registry: Arc<Registry>, node_id: String) -> Self {
        NodeControl {
            registry,
            node_id,
            seq: AtomicU64::new(0),
            pending: Mutex::default(),
            broker: OnceLock::new(),
        }
    }

    /// Where answers go (the started backend's broker).
    pub(crate) fn answer_through(&self, broker: &Arc<dyn Broker>) {
        let _ = self.broker.set(Arc::downgrade(broker));
    }

    /// Runs `command` on this node's sessions; returns how many it
    /// closed (a session already closing, for this or another reason, is
    /// going anyway and does not count: a second disconnect right after a
    /// first finds nobody).
    pub(crate) fn run(&self, command: &Command) -> u64 {
        match command {
            Command::Disconnect { who, code, reason } => {
                let close = CloseReason::from_websocket_code(*code, reason.clone());
                let sessions = match who {
                    Who::Session(id) => self.registry.session(id).into_iter().collect(),
                    Who::User(sub) => {
                        let mut of_user = self.registry.all_sessions();
                        of_user.retain(|s| s.claims().sub.as_deref() == Some(sub.as_str()));
                        of_user
                    }
                };
                let closed = sessions
                    .iter()
                    .filter(|session| session.close_with(close.clone()))
                    .count();
                if closed > 0 {
                    tracing::info!(?who, code, sessions = closed, "disconnected on demand");
                }
                closed as u64
            }
        }
    }

    /// Asks `nodes` (every live node but this one) to run `command` and
    /// waits for their answers, at most `timeout`; with `first_suffices`,
    /// only until one of them had something (a session id is unique).
    pub(crate) async fn ask(
        &self,
        broker: &dyn Broker,
        command: Command,
        nodes: Vec<String>,
        first_suffices: bool,
        timeout: Duration,
    ) -> Result<Answers, HubError> {
        let id = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, mut answers) = mpsc::unbounded_channel();
        self.pending.lock().insert(id, tx);
        // Taken out of `pending` however this ends (an error, a dropped
        // request), so no sender is left behind.
        let _pending = Forget { control: self, id };
        let request = Control::Request(ControlRequest {
            from: self.node_id.clone(),
            id,
            command,
        });
        broker.send_control(request.encode()?).wait().await?;
        let mut waiting: BTreeSet<String> = nodes.into_iter().collect();
        let mut result = Answers::default();
        let found = |result: &Answers| first_suffices && result.disconnected > 0;
        let deadline = tokio::time::Instant::now() + timeout;
        while !waiting.is_empty() && !found(&result) {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some((node, count))) => {
                    // A node that is not in the view yet (just started)
                    // answers too, and counts.
                    waiting.remove(&node);
                    result.disconnected += count;
                }
                Ok(None) | Err(_) => break,
            }
        }
        if !found(&result) {
            result.unanswered = waiting.into_iter().collect();
        }
        Ok(result)
    }

    /// A control message from another node: a request is run and
    /// answered; an answer goes to the request waiting for it (or is
    /// dropped: addressed to another node, or too late).
    fn on_control(&self, control: Control) {
        match control {
            Control::Request(request) => {
                if request.from == self.node_id {
                    return; // our own, echoed
                }
                let disconnected = self.run(&request.command);
                self.answer(ControlReply {
                    to: request.from,
                    id: request.id,
                    from: self.node_id.clone(),
                    disconnected,
                });
            }
            Control::Reply(reply) => {
                if reply.to != self.node_id {
                    return;
                }
                if let Some(asker) = self.pending.lock().get(&reply.id) {
                    let _ = asker.send((reply.from, reply.disconnected));
                }
            }
        }
    }

    fn answer(&self, reply: ControlReply) {
        let Some(broker) = self.broker.get().and_then(Weak::upgrade) else {
            return; // shutting down
        };
        match Control::Reply(reply).encode() {
            // Not awaited: the inbox never blocks. A lost answer is the
            // asker's `unanswered`.
            Ok(bytes) => drop(broker.send_control(bytes)),
            Err(error) => tracing::warn!(%error, "cannot encode a control answer"),
        }
    }
}

/// Removes a request from `pending` when its asker is done.
struct Forget<'a> {
    control: &'a NodeControl,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.control.pending.lock().remove(&self.id);
    }
}

/// The hub's handler of everything the backend hears: messages to
/// delivery, control to control.
pub(crate) struct NodeEvents {
    pub(crate) delivery: Arc<Delivery>,
    pub(crate) control: Arc<NodeControl>,
    /// What the hub does when the backend listens again
    /// (`Hub::refresh_snapshots`).
    pub(crate) resubscribed: Arc<dyn Fn() + Send + Sync>,
}

impl BackendEvents for NodeEvents {
    fn on_message(&self, inbound: Inbound) {
        self.delivery.on_message(inbound);
    }

    fn on_control(&self, control: Control) {
        self.control.on_control(control);
    }

    fn on_resubscribed(&self) {
        (self.resubscribed)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(node: &str) -> NodeControl {
        NodeControl::new(Arc::new(Registry::default()), node.into())
    }

    #[test]
    fn answers_reach_only_their_asker() {
        let a = control("a");
        let (tx, mut rx) = mpsc::unbounded_channel();
        a.pending.lock().insert(3, tx);
        let reply = |to: &str, id| {
            Control::Reply(ControlReply {
                to: to.into(),
                id,
                from: "b".into(),
                disconnected: 2,
            })
        };
        a.on_control(reply("c", 3));
        a.on_control(reply("a", 4));
        assert!(
            rx.try_recv().is_err(),
            "another node's, or another request's"
        );
        a.on_control(reply("a", 3));
        assert_eq!(rx.try_recv().ok(), Some(("b".to_string(), 2)));
    }

    #[test]
    fn a_disconnect_of_nobody_here_concerns_no_session() {
        let a = control("a");
        let command = Command::Disconnect {
            who: Who::User("nobody".into()),
            code: 4009,
            reason: String::new(),
        };
        assert_eq!(a.run(&command), 0);
    }
}
