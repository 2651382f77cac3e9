//! This node's sessions, by group and by id.
//!
//! The registry answers three questions fast: "who is in group G"
//! (fan-out), "which groups does session S hold" (its leave), and "is this
//! the first join / last leave of G" (which tells the bus to subscribe or
//! unsubscribe). Membership is many-to-many, as in socketioxide's local
//! adapter (room → sockets and socket → rooms): a session may hold several
//! groups; one that holds one group, as every session does today, is the
//! special case. It holds sessions only; it never touches a socket and
//! never awaits, so its lock is only ever held for the length of a loop
//! over a group's members pushing into their queues.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::broadcast::{Broadcast, Target};
use crate::group::GroupName;
use crate::limits::LimitRejection;
use crate::outbound::{Pushed, Queued};
use crate::session::{Session, SessionId};

#[derive(Default)]
pub(crate) struct Registry {
    maps: RwLock<Maps>,
}

#[derive(Default)]
struct Maps {
    /// Group → its local members.
    groups: HashMap<GroupName, HashMap<SessionId, Session>>,
    /// Session → itself and the groups it holds.
    sessions: HashMap<SessionId, Member>,
}

/// A session in the registry, and the groups it holds (one today; a
/// vector, not a set: a session holds few groups, and in join order).
struct Member {
    session: Session,
    groups: Vec<GroupName>,
}

/// What one local fan-out did.
#[derive(Default)]
pub(crate) struct Fanout {
    /// Sessions the message was queued for.
    pub delivered: usize,
    /// Sessions whose full queue dropped their oldest message for it.
    pub dropped_oldest: usize,
    /// Sessions closed because their queue was full (each is logged by
    /// its id; empty, and not allocated, on every ordinary fan-out).
    pub overflowed: Vec<Session>,
}

impl Fanout {
    fn count(&mut self, session: &Session, pushed: Pushed) {
        match pushed {
            Pushed::Queued => self.delivered += 1,
            Pushed::DroppedOldest => {
                self.delivered += 1;
                self.dropped_oldest += 1;
            }
            Pushed::Overflowed => self.overflowed.push(session.clone()),
            Pushed::Closed | Pushed::Known => {}
        }
    }
}

impl Registry {
    /// Registers a connected session, before it holds any group: a
    /// session is this node's from its connection to its [`leave`], whether
    /// it holds one group, several, or none (a `groupcast.v1` connection
    /// at `/ws`, or one that unsubscribed from all), so that it can be
    /// found by id and reached by a broadcast to all.
    ///
    /// False (and nothing registered) when a live session already has its
    /// id: a client that reconnected with its session id while its old
    /// connection is still here.
    ///
    /// [`leave`]: Registry::leave
    pub(crate) fn register(&self, session: &Session) -> bool {
        match self.maps.write().sessions.entry(session.id().clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(Member {
                    session: session.clone(),
                    groups: Vec::new(),
                });
                true
            }
        }
    }

    /// `session`'s entry, made (holding no group) if it has none yet.
    fn member<'a>(maps: &'a mut Maps, session: &Session) -> &'a mut Member {
        maps.sessions
            .entry(session.id().clone())
            .or_insert_with(|| Member {
                session: session.clone(),
                groups: Vec::new(),
            })
    }

    /// Adds `session` to `group` (registering the session if it is not
    /// yet); true when it is the group's first local member. Refused when
    /// the group is new and the node already has members in `max_groups`
    /// groups (`0`: no limit). Joining a group twice changes nothing.
    pub(crate) fn join(
        &self,
        session: &Session,
        group: &GroupName,
        max_groups: usize,
    ) -> Result<bool, LimitRejection> {
        let mut maps = self.maps.write();
        if max_groups > 0 && maps.groups.len() >= max_groups && !maps.groups.contains_key(group) {
            return Err(LimitRejection::Groups { limit: max_groups });
        }
        let member = Self::member(&mut maps, session);
        if member.groups.contains(group) {
            return Ok(false);
        }
        member.groups.push(group.clone());
        let members = maps.groups.entry(group.clone()).or_default();
        members.insert(session.id().clone(), session.clone());
        Ok(members.len() == 1)
    }

    /// Removes `session` from `group` (it stays registered, holding its
    /// other groups or none, until it [`leave`](Registry::leave)s); true
    /// when it was the group's last local member.
    pub(crate) fn leave_group(&self, session: &Session, group: &GroupName) -> bool {
        let mut maps = self.maps.write();
        let Some(member) = maps.sessions.get_mut(session.id()) else {
            return false;
        };
        let Some(at) = member.groups.iter().position(|held| held == group) else {
            return false;
        };
        member.groups.remove(at);
        Self::remove_member(&mut maps, session.id(), group)
    }

    /// Removes `session` from every group it holds; returns the groups it
    /// was the last local member of.
    pub(crate) fn leave(&self, session: &Session) -> Vec<GroupName> {
        let mut maps = self.maps.write();
        let Some(member) = maps.sessions.remove(session.id()) else {
            return Vec::new();
        };
        member
            .groups
            .into_iter()
            .filter(|group| Self::remove_member(&mut maps, session.id(), group))
            .collect()
    }

    /// Takes `id` out of `group`'s members; true when that emptied it.
    fn remove_member(maps: &mut Maps, id: &SessionId, group: &GroupName) -> bool {
        let Some(members) = maps.groups.get_mut(group) else {
            return false;
        };
        members.remove(id);
        if members.is_empty() {
            maps.groups.remove(group);
            true
        } else {
            false
        }
    }

    /// The groups `id` holds, in join order.
    pub(crate) fn groups_of(&self, id: &SessionId) -> Vec<GroupName> {
        self.maps
            .read()
            .sessions
            .get(id)
            .map(|member| member.groups.clone())
            .unwrap_or_default()
    }

    /// Queues `message` for every local session `broadcast` selects that
    /// `keep` also accepts.
    pub(crate) fn fan_out(
        &self,
        broadcast: &Broadcast,
        message: &Queued,
        keep: &dyn Fn(&Session) -> bool,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        let maps = self.maps.read();
        let mut offer = |session: &Session| {
            if broadcast.admits(session) && keep(session) {
                fanout.count(session, session.push(message.clone()));
            }
        };
        match &broadcast.target {
            Target::Group(group) => {
                if let Some(members) = maps.groups.get(group) {
                    members.values().for_each(&mut offer);
                }
            }
            Target::All => maps
                .sessions
                .values()
                .for_each(|member| offer(&member.session)),
            Target::Sessions(ids) => ids
                .iter()
                .filter_map(|id| maps.sessions.get(id))
                .for_each(|member| offer(&member.session)),
        }
        fanout
    }

    /// How many local sessions `broadcast` selects, without sending.
    pub(crate) fn count(&self, broadcast: &Broadcast) -> usize {
        let maps = self.maps.read();
        let admitted = |session: &&Session| broadcast.admits(session);
        match &broadcast.target {
            Target::Group(group) => maps
                .groups
                .get(group)
                .map_or(0, |members| members.values().filter(admitted).count()),
            Target::All => maps
                .sessions
                .values()
                .filter(|member| admitted(&&member.session))
                .count(),
            Target::Sessions(ids) => ids
                .iter()
                .filter_map(|id| maps.sessions.get(id))
                .filter(|member| admitted(&&member.session))
                .count(),
        }
    }

    pub(crate) fn session(&self, id: &SessionId) -> Option<Session> {
        self.maps
            .read()
            .sessions
            .get(id)
            .map(|member| member.session.clone())
    }

    pub(crate) fn session_count(&self) -> usize {
        self.maps.read().sessions.len()
    }

    pub(crate) fn group_count(&self) -> usize {
        self.maps.read().groups.len()
    }

    pub(crate) fn member_count(&self, group: &GroupName) -> usize {
        self.maps.read().groups.get(group).map_or(0, HashMap::len)
    }

    /// Group names with their local member counts, sorted by name.
    pub(crate) fn groups(&self) -> Vec<(GroupName, usize)> {
        let mut groups: Vec<_> = self
            .maps
            .read()
            .groups
            .iter()
            .map(|(name, members)| (name.clone(), members.len()))
            .collect();
        groups.sort();
        groups
    }

    /// The session `id` when it is a local member of `group`.
    pub(crate) fn member_of(&self, group: &GroupName, id: &SessionId) -> Option<Session> {
        self.maps.read().groups.get(group)?.get(id).cloned()
    }

    pub(crate) fn members(&self, group: &GroupName) -> Vec<Session> {
        self.maps
            .read()
            .groups
            .get(group)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn all_sessions(&self) -> Vec<Session> {
        self.maps
            .read()
            .sessions
            .values()
            .map(|member| member.session.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use super::*;
    use crate::auth::Claims;
    use crate::config::Config;
    use crate::protocol::Protocol;
    use crate::session::HubHandle;

    fn session(group: &str) -> Session {
        Session::new(
            crate::session_id::SessionId::random(),
            Some(GroupName::new(group).unwrap()),
            None,
            &Config::default(),
            Claims::open(),
            HubHandle(Weak::<()>::new()),
            (Protocol::Raw, false),
        )
    }

    fn group(name: &str) -> GroupName {
        GroupName::new(name).unwrap()
    }

    #[test]
    fn a_session_may_hold_several_groups_and_leaves_them_all() {
        let registry = Registry::default();
        let alice = session("a");
        let bob = session("a");
        assert_eq!(registry.join(&alice, &group("a"), 0), Ok(true));
        assert_eq!(registry.join(&alice, &group("b"), 0), Ok(true));
        assert_eq!(
            registry.join(&alice, &group("b"), 0),
            Ok(false),
            "twice is once"
        );
        assert_eq!(registry.join(&bob, &group("a"), 0), Ok(false));
        assert_eq!(registry.groups_of(alice.id()), vec![group("a"), group("b")]);
        assert_eq!(registry.member_count(&group("b")), 1);
        assert_eq!(registry.session_count(), 2);

        // Alice leaves: "b" empties, "a" still has Bob.
        assert_eq!(registry.leave(&alice), vec![group("b")]);
        assert_eq!(registry.groups_of(alice.id()), Vec::<GroupName>::new());
        assert_eq!(registry.groups(), vec![(group("a"), 1)]);
        assert_eq!(registry.leave(&alice), Vec::<GroupName>::new(), "once");
    }

    #[test]
    fn leaving_one_group_keeps_the_others_and_the_session_stays_until_it_leaves() {
        let registry = Registry::default();
        let alice = session("a");
        registry.join(&alice, &group("a"), 0).unwrap();
        registry.join(&alice, &group("b"), 0).unwrap();
        assert!(registry.leave_group(&alice, &group("a")), "a emptied");
        assert!(
            !registry.leave_group(&alice, &group("a")),
            "not held any more"
        );
        assert_eq!(registry.groups_of(alice.id()), vec![group("b")]);
        assert!(registry.session(alice.id()).is_some());
        assert!(registry.leave_group(&alice, &group("b")));
        assert!(
            registry.session(alice.id()).is_some(),
            "a session without groups is still connected"
        );
        assert_eq!(registry.session_count(), 1);
        assert_eq!(registry.groups(), vec![]);
        assert_eq!(registry.leave(&alice), Vec::<GroupName>::new());
        assert!(registry.session(alice.id()).is_none(), "gone once it left");
    }

    #[test]
    fn a_session_without_a_group_is_registered_and_reached_by_a_broadcast_to_all() {
        let registry = Registry::default();
        let alice = session("a");
        registry.register(&alice);
        assert!(registry.session(alice.id()).is_some());
        assert_eq!(registry.groups_of(alice.id()), Vec::<GroupName>::new());
        assert_eq!(registry.count(&Broadcast::all()), 1);
        assert_eq!(registry.leave(&alice), Vec::<GroupName>::new());
        assert_eq!(registry.count(&Broadcast::all()), 0);
    }

    #[test]
    fn a_full_node_refuses_a_new_group_but_not_a_held_one() {
        let registry = Registry::default();
        let alice = session("a");
        registry.join(&alice, &group("a"), 1).unwrap();
        assert_eq!(
            registry.join(&alice, &group("b"), 1),
            Err(LimitRejection::Groups { limit: 1 })
        );
        assert_eq!(registry.join(&session("a"), &group("a"), 1), Ok(false));
    }

    #[test]
    fn a_live_sessions_id_is_not_registered_twice() {
        let registry = Registry::default();
        let first = session("room");
        assert!(registry.register(&first));
        let twin = Session::new(
            first.id().clone(),
            None,
            None,
            &Config::default(),
            Claims::open(),
            HubHandle(Weak::<()>::new()),
            (Protocol::Raw, false),
        );
        assert!(!registry.register(&twin), "the id is taken");
        registry.leave(&first);
        assert!(registry.register(&twin), "free once the first left");
    }
}
