//! Delivery on this node: what arrives from the backend is decoded,
//! checked for continuity (a history group's live stream must not skip
//! offsets) and fanned out into the sessions' queues.
//!
//! Out of the hub's façade so that the hub, the backend's inbox and the
//! resume path share one piece that holds no reference to the hub.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{BackendEvents, Channel, Inbound};
use crate::broadcast::{Broadcast, Target};
use crate::envelope::{self, Decoded};
use crate::group::GroupName;
use crate::history::HistoryPolicy;
use crate::history_tail::HistoryTails;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::outbound::{Queued, Stamp};
use crate::protocol::Protocol;
use crate::registry::{Fanout, Registry};
use crate::session::Session;

/// Local fan-out, shared by the hub (its own broadcasts) and the backend's
/// inbox (everyone else's). Holds no reference to the hub, so the backend
/// can own one without a cycle.
pub(crate) struct Delivery {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    node_id: String,
    /// Where this node's live stream of each history group stands: the
    /// last offset received (or the top a session's history read found,
    /// before the first), to see the stream skip (messages lost while the
    /// backend reconnected).
    offsets: parking_lot::Mutex<std::collections::HashMap<GroupName, StreamPoint>>,
    /// Which groups keep history, and how much.
    history: HistoryPolicy,
    /// The recent messages of each history group this node's live stream
    /// brought, for reads it covers (`history_tail.rs`).
    pub(crate) tails: HistoryTails,
}

/// A point in a group's history: its epoch (`None`: no history was stored
/// yet, so the first epoch to come starts after `offset`, which is 0) and
/// an offset in it.
type StreamPoint = (Option<Arc<str>>, u64);

impl Delivery {
    pub(crate) fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        node_id: String,
        (history, tail_budget): (HistoryPolicy, usize),
    ) -> Self {
        Delivery {
            registry,
            metrics,
            node_id,
            offsets: parking_lot::Mutex::default(),
            history,
            tails: HistoryTails::new(tail_budget),
        }
    }

    pub(crate) fn deliver(
        &self,
        broadcast: &Broadcast,
        message: &Queued,
        keep: &dyn Fn(&Session) -> bool,
    ) -> Fanout {
        let fanout = self.registry.fan_out(broadcast, message, keep);
        let m = &self.metrics;
        m.messages_out.inc_by(fanout.delivered as u64);
        m.bytes_out
            .inc_by((fanout.delivered * message.message().len()) as u64);
        if fanout.overflowed > 0 {
            m.queue_full_closes.inc_by(fanout.overflowed as u64);
            tracing::warn!(
                sessions = fanout.overflowed,
                "closed slow clients with 1013: send queue full"
            );
        }
        m.queue_drops.inc_by(fanout.dropped_oldest as u64);
        fanout
    }

    /// Sees whether this node's live stream of `group` skipped offsets
    /// since the last message (or changed epoch). If it did, the group's
    /// `groupcast.v1` sessions are closed with `RESUME` *before* the new
    /// message reaches them: they reconnect with the last offset they got,
    /// and history gives them what this node missed. (Raw sessions cannot
    /// resume; the gap is counted.)
    fn check_continuity(&self, group: &GroupName, position: &crate::backend::Position) {
        let broken = {
            let mut offsets = self.offsets.lock();
            let previous = offsets.insert(
                group.clone(),
                (Some(position.epoch.clone()), position.offset),
            );
            match previous {
                None => false,
                Some((epoch, last)) => {
                    epoch.is_some_and(|epoch| epoch != position.epoch)
                        || position.offset > last.saturating_add(1)
                }
            }
        };
        if broken {
            self.metrics.history_gaps.inc();
            let members = self.registry.members(group);
            let resumable: Vec<_> = members
                .iter()
                .filter(|s| s.protocol() == Protocol::V1)
                .collect();
            tracing::warn!(%group, offset = position.offset, sessions = resumable.len(),
                "this node's live stream skipped messages: groupcast.v1 sessions resume from history");
            for session in resumable {
                session.close_with(crate::CloseReason::new(
                    crate::CloseKind::Resume,
                    "messages were lost: resume with since",
                ));
            }
        }
    }

    /// Forgets `group`'s last offset (its subscription starts over).
    pub(crate) fn forget(&self, group: &GroupName) {
        self.offsets.lock().remove(group);
        self.tails.forget(group);
    }

    /// A session read `group`'s history while this node was subscribed,
    /// and found it at `top` (in `epoch`). If nothing has arrived live
    /// since the subscription began, that is where the live stream stands:
    /// every later message must reach this node, so the first one that
    /// skips past `top + 1` is a gap like any other. Without this, a
    /// subscription lost before a group's first live message would lose
    /// the messages published meanwhile unseen: there would be no last
    /// offset to compare the next one with.
    pub(crate) fn read_at(&self, group: &GroupName, epoch: Option<&str>, top: u64) {
        let epoch: Option<Arc<str>> = epoch.map(Arc::from);
        self.offsets
            .lock()
            .entry(group.clone())
            .or_insert_with(|| (epoch.clone(), top));
        self.tails.begin(group, epoch, top);
    }

    fn invalid(&self, channel: &Channel, error: &dyn std::fmt::Display) {
        self.metrics.bus_invalid.inc();
        tracing::warn!(?channel, %error, "dropped an undecodable message from the backend");
    }
}

/// The hub's handler of what the backend hears.
impl BackendEvents for Delivery {
    /// A message read from the backend: decode, skip our own, fan out.
    fn on_message(&self, inbound: Inbound) {
        self.metrics.bus_received.inc();
        let Inbound {
            channel,
            payload,
            position,
        } = inbound;
        // A history group's message is kept in its tail as history keeps
        // it: the bytes as published.
        let kept = position.as_ref().map(|_| payload.clone());
        let (broadcast, message, origin) = match decode(channel.clone(), payload) {
            Ok(decoded) => decoded,
            Err(error) => return self.invalid(&channel, &error),
        };
        // A positioned message was not delivered when it was sent (history
        // groups are delivered from the backend only, so that every member
        // sees the same offsets in the same order): our own is delivered now.
        if position.is_none() && origin.as_deref() == Some(self.node_id.as_str()) {
            return; // delivered locally when it was sent
        }
        if let (Some(position), Target::Group(group)) = (&position, &broadcast.target) {
            self.check_continuity(group, position);
            if let (Some(payload), Some(limits)) = (&kept, self.history.for_group(group)) {
                self.tails
                    .append(group, &position.epoch, position.offset, payload, limits);
            }
        }
        let queued = Queued::new(message, position.map(|p| Stamp::new(p.offset, p.epoch)));
        self.deliver(&broadcast, &queued, &|_| true);
    }
}

/// What a published payload on `channel` says: who receives it, the
/// message, and the node that sent it (`None` for a raw payload).
pub(crate) fn decode(
    channel: Channel,
    payload: Bytes,
) -> Result<(Broadcast, Message, Option<String>), envelope::EnvelopeError> {
    match envelope::decode(payload)? {
        Decoded::Raw(raw) => {
            let broadcast = match channel {
                Channel::Group(group) => Broadcast::new(Target::Group(group)),
                Channel::Cluster => Broadcast::all(),
            };
            Ok((broadcast, Message::from_raw(raw), None))
        }
        Decoded::Envelope(envelope) => {
            let message = envelope.message()?;
            let target = match (channel, envelope.sessions) {
                (Channel::Group(group), _) => Target::Group(group),
                (Channel::Cluster, Some(ids)) => Target::Sessions(ids),
                (Channel::Cluster, None) => Target::All,
            };
            let broadcast = Broadcast {
                target,
                except: envelope.except,
                filter: envelope.filter,
            };
            Ok((broadcast, message, Some(envelope.origin)))
        }
    }
}
