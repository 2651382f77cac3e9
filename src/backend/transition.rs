//! What a presence write changed for a whole group, cluster-wide: the
//! transitions webhooks and join/leave events are made of.
//!
//! A backend reports them through the [`PresenceChanges`] the hub gives it
//! (`BackendContext::presence_changes`), each exactly once in the cluster:
//! on Redis the presence scripts compute them atomically, so whichever
//! node's script made the change reports it (a dead node's members are
//! reported by the node whose script pruned them); standalone, the one
//! node computes them from its registry. A user's leave and a group's
//! vacancy are reported only once final, after `Config::presence_grace`
//! without a comeback; a comeback within the grace is reported as nothing.

use std::sync::Arc;

use crate::group::GroupName;
use crate::session_id::SessionId;

/// One change of a group's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceChange {
    /// The group got its first member.
    Occupied,
    /// The group's last member is gone (and nobody came back in the grace).
    Vacated,
    /// A user (`sub`) got their first connection in the group.
    UserJoined(String),
    /// A user's last connection in the group is gone (after the grace).
    UserLeft(String),
    /// A connection joined the group, on `node`.
    SessionJoined {
        id: SessionId,
        node: String,
        sub: Option<String>,
    },
    /// A connection of `node` left the group (a dead node's too).
    SessionLeft {
        id: SessionId,
        node: String,
        sub: Option<String>,
    },
}

/// Where a backend reports a group's changes (in the order they happened),
/// with the group's position after them: positions grow with every report
/// of a group, and a member page read at a position holds exactly the
/// changes up to it ([`MemberPage::seq`](super::member::MemberPage::seq)).
/// Called on the backend's tasks: it must not block.
pub type PresenceChanges = Arc<dyn Fn(&GroupName, Vec<PresenceChange>, u64) + Send + Sync>;

/// Changes go nowhere: for a backend started outside a hub.
pub fn ignore_changes() -> PresenceChanges {
    Arc::new(|_, _, _| {})
}
