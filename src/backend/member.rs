//! Per-group presence as data: one member, a page of members, the counts,
//! and the cursor a page continues from.
//!
//! Plain data so that every backend stores and answers the same thing and
//! the hub and the API show it without knowing where it came from. A
//! member is what another node may learn about a session: its id, its
//! node, the token's `sub`, when it connected, and only the session keys
//! the application marked public (`Config::presence_keys`); the rest of a
//! session (its queue, its address, its other keys) stays on its node.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::group::GroupName;
use crate::session_id::SessionId;

/// One member of a group, cluster-wide.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Member {
    /// The session's id.
    pub id: SessionId,
    /// The node it is connected to.
    pub node: String,
    /// The token's subject, when it came with a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// When the session connected (Unix milliseconds).
    pub connected_at_ms: u64,
    /// Its public keys (the names in `Config::presence_keys`), as they were
    /// when its node wrote it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, serde_json::Value>,
}

/// How many members a group has, and how many distinct users (`sub`)
/// among them, read without reading the members.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PresenceStats {
    /// Members (sessions) on every node.
    pub members: u64,
    /// Distinct `sub` among them (sessions without one are not counted).
    pub users: u64,
}

/// One user of a group: a `sub` and how many of its sessions are members.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UserCount {
    /// The token's subject.
    pub sub: String,
    /// Its sessions in the group.
    pub connections: u64,
}

/// Where a page of members starts: after the member a previous page ended
/// with (members are in the order of their ids), or at the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(Option<SessionId>);

/// A cursor that is not one this server handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor this server handed out")]
pub struct BadCursor;

/// The longest session id a cursor may carry (ours are 16 characters; a
/// longer one is not ours).
const MAX_CURSOR_ID: usize = 128;

impl Cursor {
    /// The first page.
    pub fn start() -> Self {
        Cursor(None)
    }

    /// The page after the one that ended with `id`.
    pub fn after(id: SessionId) -> Self {
        Cursor(Some(id))
    }

    /// The last id of the previous page, if any.
    pub fn last(&self) -> Option<&SessionId> {
        self.0.as_ref()
    }

    /// The cursor as the API hands it out: opaque (URL-safe base64 of the
    /// last id), so that clients do not build one.
    pub fn encode(&self) -> String {
        self.0
            .as_ref()
            .map(|id| URL_SAFE_NO_PAD.encode(id.as_str()))
            .unwrap_or_default()
    }

    /// Reads a cursor [`encode`](Self::encode) made (empty: the start).
    pub fn decode(text: &str) -> Result<Self, BadCursor> {
        if text.is_empty() {
            return Ok(Cursor::start());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| BadCursor)?;
        let id = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        let plausible =
            !id.is_empty() && id.len() <= MAX_CURSOR_ID && id.bytes().all(|b| b.is_ascii_graphic());
        if plausible {
            Ok(Cursor::after(SessionId::from(id)))
        } else {
            Err(BadCursor)
        }
    }
}

/// A page of a group's members, in the order of their ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberPage {
    /// The members of this page.
    pub members: Vec<Member>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
    /// The group's counts, read with the page.
    pub stats: PresenceStats,
    /// The group's position among its presence transitions when the page
    /// was read: the page holds every join and leave up to it and none
    /// after (what a gapless snapshot needs; `presence/snapshot.rs`).
    pub seq: u64,
}

/// The most members one page holds.
pub const MAX_MEMBER_PAGE: usize = 1000;

/// This node's members of a group, for the backend that writes them
/// elsewhere (and the standalone one, which answers with them): built by
/// the hub from its registry with the public keys it was configured with.
pub trait LocalMembers: Send + Sync + 'static {
    /// Every local member of `group`.
    fn members(&self, group: &GroupName) -> Vec<Member>;

    /// The local member `id` of `group`, if it is one.
    fn member(&self, group: &GroupName, id: &SessionId) -> Option<Member>;
}

/// No local members: for a backend started outside a hub.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMembers;

impl LocalMembers for NoMembers {
    fn members(&self, _: &GroupName) -> Vec<Member> {
        Vec::new()
    }

    fn member(&self, _: &GroupName, _: &SessionId) -> Option<Member> {
        None
    }
}

/// The page of `members` (any order) that `cursor` and `limit` select, with
/// the counts of all of them: what a backend that holds the whole list in
/// memory answers.
pub fn page_of(mut members: Vec<Member>, cursor: &Cursor, limit: usize) -> MemberPage {
    let stats = stats_of(&members);
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let start = match cursor.last() {
        Some(last) => members.partition_point(|m| &m.id <= last),
        None => 0,
    };
    let limit = limit.clamp(1, MAX_MEMBER_PAGE);
    let mut page: Vec<Member> = members.into_iter().skip(start).take(limit + 1).collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|m| Cursor::after(m.id.clone()))
    } else {
        None
    };
    MemberPage {
        members: page,
        next,
        stats,
        seq: 0,
    }
}

/// The counts of `members`.
pub fn stats_of(members: &[Member]) -> PresenceStats {
    let users = users_of(members).len();
    PresenceStats {
        members: members.len() as u64,
        users: users as u64,
    }
}

/// The distinct `sub` of `members` with their sessions, sorted by `sub`.
pub fn users_of(members: &[Member]) -> Vec<UserCount> {
    let mut users: BTreeMap<&str, u64> = BTreeMap::new();
    for sub in members.iter().filter_map(|m| m.sub.as_deref()) {
        *users.entry(sub).or_default() += 1;
    }
    users
        .into_iter()
        .map(|(sub, connections)| UserCount {
            sub: sub.to_owned(),
            connections,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, sub: Option<&str>) -> Member {
        Member {
            id: SessionId::from(id),
            node: "n".into(),
            sub: sub.map(str::to_owned),
            connected_at_ms: 1,
            keys: BTreeMap::new(),
        }
    }

    #[test]
    fn a_cursor_reads_what_it_wrote() {
        let cursor = Cursor::after(SessionId::from("00ab"));
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        assert_eq!(Cursor::decode(""), Ok(Cursor::start()));
        assert_eq!(Cursor::decode("!!"), Err(BadCursor));
        // Valid base64 of something that is no id.
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode("a b")),
            Err(BadCursor)
        );
    }

    #[test]
    fn pages_list_each_member_once_in_id_order() {
        let members: Vec<Member> = (0..25)
            .rev()
            .map(|i| member(&format!("{i:04}"), Some(&format!("u{}", i % 4))))
            .collect();
        let (mut seen, mut cursor) = (Vec::new(), Cursor::start());
        loop {
            let page = page_of(members.clone(), &cursor, 7);
            assert!(page.members.len() <= 7);
            assert_eq!(
                page.stats,
                PresenceStats {
                    members: 25,
                    users: 4
                }
            );
            seen.extend(page.members.iter().map(|m| m.id.to_string()));
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).map(|i| format!("{i:04}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn users_count_sessions_per_sub_and_skip_anonymous_ones() {
        let members = [
            member("1", Some("alice")),
            member("2", Some("bob")),
            member("3", Some("alice")),
            member("4", None),
        ];
        let users = users_of(&members);
        assert_eq!(
            users,
            [
                UserCount {
                    sub: "alice".into(),
                    connections: 2
                },
                UserCount {
                    sub: "bob".into(),
                    connections: 1
                },
            ]
        );
        assert_eq!(
            stats_of(&members),
            PresenceStats {
                members: 4,
                users: 2
            }
        );
    }
}
