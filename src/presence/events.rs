//! Presence transitions as the application and clients see them: what the
//! hub hands its backend as [`PresenceChanges`], so that each transition
//! the backend reports (once in the cluster, see
//! `backend/transition.rs`) is POSTed once as a webhook and, in the
//! `--join-leave` groups, sent once as a `groupcast.v1` frame to the
//! group's members on every node (`Hub::send_presence_frame`).
//!
//! Only groups with presence (`Config::presence`) have transitions at
//! all: the backend tracks no other group.

use std::sync::Arc;

use serde::Serialize;

use crate::auth::GroupPatterns;
use crate::backend::{PresenceChange, PresenceChanges};
use crate::group::GroupName;
use crate::webhooks::{WebhookEvent, WebhookKind, Webhooks};

/// Sends a frame to a group's members on every node (set once the hub
/// exists), with the group's position after it (see
/// [`PresenceChanges`]): a member shown a snapshot at a position is sent
/// only the frames above it.
pub(crate) type FrameSender = Arc<dyn Fn(&GroupName, String, u64) + Send + Sync>;

/// Where `node`'s reported transitions go.
pub(crate) struct Sinks {
    pub(crate) node: String,
    pub(crate) webhooks: Webhooks,
    /// The groups whose members get frames, and how they are sent.
    pub(crate) join_leave: GroupPatterns,
    pub(crate) frames: FrameSender,
}

/// A `groupcast.v1` join/leave frame (docs/protocol.md).
#[derive(Serialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    group: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    node: &'a str,
    /// The group's position after this change (docs/protocol.md,
    /// "Who is here").
    seq: u64,
}

impl Sinks {
    /// The sink the backend reports to.
    pub(crate) fn into_changes(self) -> PresenceChanges {
        Arc::new(move |group, changes, seq| {
            let frames = self.join_leave.matches(group);
            for change in changes {
                if frames {
                    self.send_frame(group, &change, seq);
                }
                self.post(group, change);
            }
        })
    }

    /// The frame of `change` (none for occupied and vacated).
    fn send_frame(&self, group: &GroupName, change: &PresenceChange, seq: u64) {
        let (kind, session, sub, node) = match change {
            PresenceChange::Occupied | PresenceChange::Vacated => return,
            PresenceChange::UserJoined(sub) => ("user_joined", None, Some(sub), &self.node),
            PresenceChange::UserLeft(sub) => ("user_left", None, Some(sub), &self.node),
            PresenceChange::SessionJoined { id, node, sub } => {
                ("join", Some(id), sub.as_ref(), node)
            }
            PresenceChange::SessionLeft { id, node, sub } => {
                ("leave", Some(id), sub.as_ref(), node)
            }
        };
        let frame = Frame {
            kind,
            group: group.as_str(),
            session: session.map(|id| id.as_str()),
            sub: sub.map(String::as_str),
            node,
            seq,
        };
        match serde_json::to_string(&frame) {
            Ok(text) => (self.frames)(group, text, seq),
            Err(error) => tracing::warn!(%group, %error, "cannot encode a join/leave frame"),
        }
    }

    /// The webhook of `change`, when its kind is asked for.
    fn post(&self, group: &GroupName, change: PresenceChange) {
        let (kind, sub, session) = match change {
            PresenceChange::Occupied => (WebhookKind::GroupOccupied, None, None),
            PresenceChange::Vacated => (WebhookKind::GroupVacated, None, None),
            PresenceChange::UserJoined(sub) => (WebhookKind::UserJoined, Some(sub), None),
            PresenceChange::UserLeft(sub) => (WebhookKind::UserLeft, Some(sub), None),
            PresenceChange::SessionJoined { id, sub, .. } => {
                (WebhookKind::SessionJoined, sub, Some(id.to_string()))
            }
            PresenceChange::SessionLeft { id, sub, .. } => {
                (WebhookKind::SessionLeft, sub, Some(id.to_string()))
            }
        };
        if self.webhooks.wants(kind) {
            let mut event = WebhookEvent::new(kind, group.as_str(), &self.node);
            event.sub = sub;
            event.session = session;
            self.webhooks.emit(event);
        }
    }
}
