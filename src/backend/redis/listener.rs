//! What the two subscribers have in common: the hub's subscribe and
//! unsubscribe calls, the wanted set they change, and the inbox every
//! message read goes to.
//!
//! The single-server subscriber (`subscriber.rs`: one connection, SUBSCRIBE)
//! and the Redis Cluster's (`cluster/subscriber.rs`: one connection per
//! primary, SSUBSCRIBE) differ in how they reach Redis and nothing else.
//! What they do with a command from the hub and with a message from Redis
//! is the same, so it is written once, here, and each subscriber owns one
//! [`Listener`]: the link that starts the subscriber makes it
//! (`link.rs`), so the subscriber itself is given only what is its own.

use std::sync::Arc;

use redis::Msg;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::inbound::inbound_of;
use super::link_state::LinkState;
use crate::backend::channels::ChannelNames;
use crate::backend::control::Control;
use crate::backend::inbound::{Channel, Inbox};
use crate::backend::subscriptions::{Change, Subscriptions};
use crate::group::GroupName;

/// What the hub asks of a subscriber (through its link's broker).
pub(crate) enum SubscriptionCommand {
    /// A first local member joined `group` (the registry said so).
    Subscribe(GroupName),
    /// The last local member of `group` left.
    Unsubscribe(GroupName),
}

/// A subscriber's dealings with the hub. See the module docs.
pub(crate) struct Listener {
    pub names: ChannelNames,
    /// Where every message read goes.
    pub inbox: Inbox,
    /// What `status()` and `subscribed()` read: written as Redis confirms.
    pub state: Arc<LinkState>,
    /// The hub's subscribe / unsubscribe calls.
    pub commands: mpsc::UnboundedReceiver<SubscriptionCommand>,
    pub cancel: CancellationToken,
    /// Notified on every (re)connect, so presence is written at once (and
    /// the Redis Function loaded again).
    pub wake_presence: Arc<Notify>,
    /// What this node wants to hear.
    pub wanted: Subscriptions,
    /// The epoch of the last positioned message (shared, not re-allocated).
    last_epoch: Option<Arc<str>>,
}

impl Listener {
    /// A listener that wants nothing yet.
    pub(crate) fn new(
        names: ChannelNames,
        inbox: Inbox,
        state: Arc<LinkState>,
        commands: mpsc::UnboundedReceiver<SubscriptionCommand>,
        cancel: CancellationToken,
        wake_presence: Arc<Notify>,
        wanted: Subscriptions,
    ) -> Self {
        Listener {
            names,
            inbox,
            state,
            commands,
            cancel,
            wake_presence,
            wanted,
            last_epoch: None,
        }
    }

    /// Applies a command from the hub to the wanted set; returns the change
    /// the wire needs, if any.
    pub(crate) fn on_command(&mut self, command: SubscriptionCommand) -> Option<Change> {
        match command {
            SubscriptionCommand::Subscribe(group) => {
                let channel = self.names.group(&group);
                self.wanted.join(channel, group)
            }
            SubscriptionCommand::Unsubscribe(group) => {
                let channel = self.names.group(&group);
                self.wanted.leave(channel, group)
            }
        }
    }

    /// Hands one message to the hub's inbox. A control message on the
    /// cluster channel goes to `on_control` (`backend/control.rs`);
    /// everything else to `on_message`, where the hub decodes it (envelope
    /// or raw payload) and counts what it cannot read.
    pub(crate) fn deliver(&mut self, message: &Msg) {
        let Some(inbound) = inbound_of(message, &self.wanted, &self.names, &mut self.last_epoch)
        else {
            return;
        };
        if inbound.channel == Channel::Cluster
            && let Some(control) = Control::decode(&inbound.payload)
        {
            match control {
                Ok(control) => self.inbox.on_control(control),
                Err(error) => {
                    self.state.count_invalid();
                    tracing::warn!(%error, "dropped an unreadable control message");
                }
            }
            return;
        }
        self.inbox.on_message(inbound);
    }
}
