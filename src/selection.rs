//! Sending: pick the receivers, then send — `hub.to(group).except(id).send(msg)`.
//!
//! Every way of broadcasting goes through one builder, [`Selection`], made
//! by [`Hub::to`] (a group), [`Hub::all`] (every session),
//! [`Hub::to_sessions`] (a list of ids, wherever they are connected) or
//! [`Hub::select`] (a [`Broadcast`] built as data). It narrows with
//! [`except`](Selection::except) and [`matching`](Selection::matching), both
//! of which travel to the other nodes, and ends with
//! [`send`](Selection::send) (queue it now, don't wait) or
//! [`publish`](Selection::publish) (wait until the other nodes' channel has
//! it, and learn its history position). melody's names map onto it:
//!
//! | melody / ws-notifier | groupcast |
//! | --- | --- |
//! | `Broadcast` | `hub.all().send(m)` |
//! | `BroadcastOthers(m, s)` | `hub.all().except(s.id()).send(m)` |
//! | `BroadcastMultiple(m, ss)` | `hub.to_sessions(ids).send(m)` |
//! | `BroadcastFilter(m, f)` | `hub.all().local_filter(f).send(m)` (this node only) |
//! | `GroupBroadcast(g, m)` | `hub.to(g).send(m)` |
//! | chat: my group but me | `session.broadcast(m)` |
//!
//! Every variant returns the same `Result`: the number of **local**
//! sessions the message was queued for; other nodes deliver to theirs.

use crate::backend::Position;
use crate::broadcast::{Broadcast, KeyFilter};
use crate::error::HubError;
use crate::group::GroupNameError;
use crate::hub::Hub;
use crate::message::Message;
use crate::session::{Session, SessionId};

type Keep<'h> = Box<dyn Fn(&Session) -> bool + Send + Sync + 'h>;

/// The receivers of a message, not yet sent. See the module docs.
#[must_use = "a selection does nothing until `send` or `publish`"]
pub struct Selection<'h> {
    hub: &'h Hub,
    /// An invalid group name is reported by `send`, so that the chain
    /// stays one expression.
    broadcast: Result<Broadcast, GroupNameError>,
    /// A closure that cannot travel: set, the message stays on this node.
    keep: Option<Keep<'h>>,
}

/// What [`Selection::publish`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Local sessions the message was queued for.
    pub local: usize,
    /// Where it stands in its group's history, for groups that keep one.
    pub position: Option<Position>,
}

/// The closure as the hub takes it (without the auto traits).
fn keep_of<'a>(keep: &'a Option<Keep<'_>>) -> Option<&'a dyn Fn(&Session) -> bool> {
    match keep {
        Some(keep) => Some(keep.as_ref()),
        None => None,
    }
}

impl<'h> Selection<'h> {
    pub(crate) fn new(hub: &'h Hub, broadcast: Result<Broadcast, GroupNameError>) -> Self {
        Selection {
            hub,
            broadcast,
            keep: None,
        }
    }

    /// Skips one session (melody: `BroadcastOthers`). Works cluster-wide.
    pub fn except(mut self, id: &SessionId) -> Self {
        self.broadcast = self.broadcast.map(|b| b.except(id.clone()));
        self
    }

    /// Keeps only sessions whose keys match `filter`. Works cluster-wide:
    /// the filter is data and is evaluated on every node.
    pub fn matching(mut self, filter: KeyFilter) -> Self {
        self.broadcast = self.broadcast.map(|b| b.matching(filter));
        self
    }

    /// Keeps only the sessions **of this node** for which `keep` returns
    /// true (melody: `BroadcastFilter`). A closure cannot travel to other
    /// nodes, so with it the message is not published at all; use
    /// [`matching`](Selection::matching) for a cluster-wide selection.
    pub fn local_filter(mut self, keep: impl Fn(&Session) -> bool + Send + Sync + 'h) -> Self {
        self.keep = Some(Box::new(keep));
        self
    }

    /// Queues `message` for the selected local sessions at once and hands
    /// it to the backend for the other nodes, without waiting. The order of
    /// sends from one caller is kept everywhere.
    pub fn send(self, message: impl Into<Message>) -> Result<usize, HubError> {
        let broadcast = self.broadcast?;
        let (local, _ack) = self
            .hub
            .dispatch(broadcast, message.into(), keep_of(&self.keep))?;
        Ok(local)
    }

    /// Like [`send`](Selection::send), but waits until the backend has
    /// taken the message, so that a failure to reach the other nodes is
    /// reported.
    pub async fn publish(self, message: impl Into<Message>) -> Result<Sent, HubError> {
        let broadcast = self.broadcast?;
        let (local, ack) = self
            .hub
            .dispatch(broadcast, message.into(), keep_of(&self.keep))?;
        let published = ack.wait().await?;
        Ok(Sent {
            local,
            position: published.position,
        })
    }
}
