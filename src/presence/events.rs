//! Presence transitions as webhook events: what the hub hands its backend
//! as [`PresenceChanges`], so that each transition the backend reports
//! (once in the cluster, see `backend/transition.rs`) is POSTed once.
//!
//! Only groups with presence (`Config::presence`) have transitions at
//! all: the backend tracks no other group.

use std::sync::Arc;

use crate::backend::{PresenceChange, PresenceChanges};
use crate::webhooks::{WebhookEvent, WebhookKind, Webhooks};

/// The sink that turns `node`'s reported transitions into `webhooks`
/// events (the kinds `--webhook-events` asks for).
pub(crate) fn webhook_sink(webhooks: Webhooks, node: String) -> PresenceChanges {
    Arc::new(move |group, changes| {
        for change in changes {
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
            if webhooks.wants(kind) {
                let mut event = WebhookEvent::new(kind, group.as_str(), &node);
                event.sub = sub;
                event.session = session;
                webhooks.emit(event);
            }
        }
    })
}
