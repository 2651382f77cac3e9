//! Who is here when a client joins: the presence snapshot, then only what
//! changed after it.
//!
//! A `groupcast.v1` client asks with `?presence=1` on the URL (or
//! `"presence": true` in a `subscribe` request) and gets a `presence`
//! frame right after its welcome: the group's members (at most
//! [`SNAPSHOT_CAP`], with a flag when cut) and the group's *position*.
//! Every join/leave frame carries the group's position after it (see
//! `backend/transition.rs`), and a member page read at a position holds
//! exactly the changes up to it. So the snapshot plus the frames after it
//! is the membership, with nothing missed and nothing twice:
//!
//! 1. the session joined held (its writer waits), and the node is
//!    **subscribed** to the group before the page is read: every frame
//!    made after the read reaches this node;
//! 2. the page is **read in one step** (one script on Redis, under the
//!    transitions' lock standalone), with its position `s`;
//! 3. the session's queue **drops the frames at or before `s`**, queued
//!    or to come ([`Outbound::presence_from`]), and the snapshot goes in
//!    front with the welcome when the queue is released.
//!
//! Sessions of one group asking at once (a join storm) share one read
//! that began after each was subscribed (`history_reads.rs`'s merging):
//! any snapshot read while subscribed is a valid one.
//!
//! A frame above `s` that arrived early waits in the held queue behind
//! the snapshot; one at or below `s` that arrives late (from a slower
//! node) is dropped. Frames of one node keep their order; frames of
//! different nodes may interleave, and the position tells their order.
//!
//! [`Outbound::presence_from`]: crate::outbound::Outbound::presence_from

use serde::Serialize;

use crate::auth::Claims;
use crate::backend::member::{Cursor, Member, MemberPage};
use crate::group::GroupName;
use crate::hub::Hub;
use crate::outbound::Queued;
use crate::protocol::error_frame;
use crate::session::Session;

/// The most members a snapshot lists; past it the frame says `truncated`
/// (the counts are still whole) and the client pages the rest through the
/// API if it needs them.
pub const SNAPSHOT_CAP: usize = 1000;

/// How long a snapshot keeps trying a read that fails before the client
/// is sent `presence_unavailable` (its welcome waits that long at most).
const SNAPSHOT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a client may not have a group's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SnapshotRefusal {
    #[error("{0} keeps no presence (the server's --presence names the groups that do)")]
    NoPresence(GroupName),
    #[error("this token does not allow seeing presence (\"presence\": false)")]
    NotAllowed,
}

impl SnapshotRefusal {
    /// The code clients are told (`error` frames, HTTP error bodies).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            SnapshotRefusal::NoPresence(_) => "no_presence",
            SnapshotRefusal::NotAllowed => "presence_not_allowed",
        }
    }

    /// The status of a refused upgrade: the group's setting is the
    /// request's mistake (400), the token's denial a refusal (403).
    pub(crate) fn status(&self) -> axum::http::StatusCode {
        match self {
            SnapshotRefusal::NoPresence(_) => axum::http::StatusCode::BAD_REQUEST,
            SnapshotRefusal::NotAllowed => axum::http::StatusCode::FORBIDDEN,
        }
    }
}

/// Reads `presence` from a query string: `1`/`true` asks for a snapshot,
/// `0`/`false` or nothing does not; anything else says why not.
pub(crate) fn presence_query(query: Option<&str>) -> Result<bool, String> {
    let mut asked = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key != "presence" {
            continue;
        }
        let wants = match value.as_ref() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => return Err(format!("presence must be 1 or 0, not {other:?}")),
        };
        if asked.replace(wants).is_some() {
            return Err("presence is given twice".into());
        }
    }
    Ok(asked.unwrap_or(false))
}

/// Whether a client with `claims` may have `group`'s snapshot: the group
/// keeps presence (`--presence`) and the token does not deny it
/// (`"presence": false`).
pub(crate) fn may_have_snapshot(
    hub: &Hub,
    group: &GroupName,
    claims: &Claims,
) -> Result<(), SnapshotRefusal> {
    if !hub.config().presence.matches(group) {
        return Err(SnapshotRefusal::NoPresence(group.clone()));
    }
    if !claims.may_see_presence() {
        return Err(SnapshotRefusal::NotAllowed);
    }
    Ok(())
}

/// One member as a snapshot lists it: named like the join/leave frames.
#[derive(Serialize)]
struct SnapshotMember<'a> {
    session: &'a str,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    connected_at_ms: u64,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    keys: &'a std::collections::BTreeMap<String, serde_json::Value>,
}

/// The `presence` frame (docs/protocol.md).
#[derive(Serialize)]
struct SnapshotFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    group: &'a str,
    seq: u64,
    members: Vec<SnapshotMember<'a>>,
    /// All the group's members and distinct users, however many are listed.
    count: u64,
    users: u64,
    truncated: bool,
}

impl Hub {
    /// The backend listens again after its subscriber connection was lost:
    /// join/leave frames published meanwhile never reached this node, so
    /// every session holding a snapshot is sent a new one (read once per
    /// group), which replaces its list; frames above it follow as usual.
    pub(crate) fn refresh_snapshots(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = self.clone();
        runtime.spawn(async move {
            for info in hub.groups() {
                let group = info.name;
                if !hub.config().presence.matches(&group) {
                    continue;
                }
                let holders: Vec<Session> = hub
                    .members(&group)
                    .into_iter()
                    .filter(|s| s.outbound().holds_presence(&group))
                    .collect();
                if holders.is_empty() {
                    continue;
                }
                let page = match hub.read_snapshot(&group).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(%group, %error, "cannot refresh the presence snapshots after a reconnect");
                        continue;
                    }
                };
                let frame = Queued::protocol(snapshot_frame(&group, None, &page));
                let refreshed = holders
                    .iter()
                    .filter(|s| s.outbound().refresh_presence(&group, page.seq, frame.clone()))
                    .count();
                tracing::debug!(%group, refreshed, "presence snapshots refreshed after a reconnect");
            }
        });
    }

    /// `group`'s snapshot page, once subscribed: merged with a read in
    /// flight that began after that, tried again for up to
    /// [`SNAPSHOT_PATIENCE`].
    async fn read_snapshot(&self, group: &GroupName) -> Result<MemberPage, crate::HubError> {
        self.subscribed(group).await?;
        // A join storm asks for the same snapshot many times at once:
        // one read serves every session subscribed before it began.
        // The storm also keeps Redis and the node busy: a read that
        // fails is tried again, a few times, before the client is told.
        let mut retry = crate::backoff::Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_millis(500),
        );
        let give_up = tokio::time::Instant::now() + SNAPSHOT_PATIENCE;
        loop {
            let subscribed = tokio::time::Instant::now();
            let (hub, owned) = (self.clone(), group.clone());
            let (page, _) = self
                .snapshot_reads()
                .read_key(group.clone(), subscribed, move || async move {
                    hub.presence_page(&owned, &Cursor::start(), SNAPSHOT_CAP)
                        .await
                })
                .await;
            match page {
                Ok(page) => return Ok(page),
                Err(error) => {
                    let delay = retry.next_delay();
                    if tokio::time::Instant::now() + delay > give_up {
                        return Err(crate::HubError::from(error));
                    }
                    tracing::debug!(%group, %error, ?delay, "reading the presence snapshot failed; trying again");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The snapshot of `group` for `session`, whose queue is held by its
    /// catch-up: read once the node is subscribed, with the session's
    /// queue told to drop the join/leave frames it holds (see the module
    /// docs). When it cannot be read, an `error` frame
    /// (`presence_unavailable`) instead, and the frames flow unfiltered.
    /// `request` is the id of the `subscribe` request that asked.
    pub(crate) async fn presence_snapshot(
        &self,
        session: &Session,
        group: &GroupName,
        request: Option<u64>,
    ) -> Queued {
        let read = self.read_snapshot(group);
        let page = match read.await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(session = %session.id(), %group, %error, "cannot read the presence snapshot");
                return Queued::protocol(error_frame(
                    request,
                    Some(group.as_str()),
                    "presence_unavailable",
                    &format!("the members cannot be read now ({error}); join/leave frames follow"),
                ));
            }
        };
        session.outbound().presence_from(group, page.seq);
        Queued::protocol(snapshot_frame(group, request, &page))
    }
}

/// The `presence` frame of `page`, answering `request` if one asked.
fn snapshot_frame(group: &GroupName, request: Option<u64>, page: &MemberPage) -> String {
    let members: Vec<SnapshotMember<'_>> = page.members.iter().map(listed).collect();
    let frame = SnapshotFrame {
        kind: "presence",
        id: request,
        group: group.as_str(),
        seq: page.seq,
        count: page.stats.members,
        users: page.stats.users,
        truncated: page.next.is_some(),
        members,
    };
    serde_json::to_string(&frame).unwrap_or_else(|error| {
        // Strings, numbers and JSON values only: cannot fail; said rather
        // than unwrapped all the same.
        error_frame(
            request,
            Some(group.as_str()),
            "presence_unavailable",
            &error.to_string(),
        )
    })
}

fn listed(member: &Member) -> SnapshotMember<'_> {
    SnapshotMember {
        session: member.id.as_str(),
        node: &member.node,
        sub: member.sub.as_deref(),
        connected_at_ms: member.connected_at_ms,
        keys: &member.keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_is_asked_with_1_or_true_and_anything_else_says_why() {
        assert_eq!(presence_query(None), Ok(false));
        assert_eq!(presence_query(Some("history=5")), Ok(false));
        assert_eq!(presence_query(Some("presence=1")), Ok(true));
        assert_eq!(presence_query(Some("token=x&presence=true")), Ok(true));
        assert_eq!(presence_query(Some("presence=0")), Ok(false));
        assert!(
            presence_query(Some("presence=yes"))
                .unwrap_err()
                .contains("\"yes\"")
        );
        assert!(
            presence_query(Some("presence=1&presence=1"))
                .unwrap_err()
                .contains("twice")
        );
    }
}
