//! This node's sessions, by group and by id.
//!
//! The registry answers two questions fast: "who is in group G" (fan-out)
//! and "is this the first join / last leave of G" (which tells the bus to
//! subscribe or unsubscribe). It holds sessions only; it never touches a
//! socket and never awaits, so its lock is only ever held for the length of
//! a loop over a group's members pushing into their queues.

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
    groups: HashMap<GroupName, HashMap<SessionId, Session>>,
    sessions: HashMap<SessionId, Session>,
}

/// What one local fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fanout {
    /// Sessions the message was queued for.
    pub delivered: usize,
    /// Sessions whose full queue dropped their oldest message for it.
    pub dropped_oldest: usize,
    /// Sessions closed because their queue was full.
    pub overflowed: usize,
}

impl Fanout {
    fn count(&mut self, pushed: Pushed) {
        match pushed {
            Pushed::Queued => self.delivered += 1,
            Pushed::DroppedOldest => {
                self.delivered += 1;
                self.dropped_oldest += 1;
            }
            Pushed::Overflowed => self.overflowed += 1,
            Pushed::Closed => {}
        }
    }
}

impl Registry {
    /// Adds `session`; true when it is the group's first local member.
    /// Refused when its group is new and the node already has members in
    /// `max_groups` groups (`0`: no limit).
    pub(crate) fn join(
        &self,
        session: &Session,
        max_groups: usize,
    ) -> Result<bool, LimitRejection> {
        let mut maps = self.maps.write();
        if max_groups > 0
            && maps.groups.len() >= max_groups
            && !maps.groups.contains_key(session.group())
        {
            return Err(LimitRejection::Groups { limit: max_groups });
        }
        maps.sessions.insert(session.id().clone(), session.clone());
        let members = maps.groups.entry(session.group().clone()).or_default();
        members.insert(session.id().clone(), session.clone());
        Ok(members.len() == 1)
    }

    /// Removes `session`; true when it was the group's last local member.
    pub(crate) fn leave(&self, session: &Session) -> bool {
        let mut maps = self.maps.write();
        if maps.sessions.remove(session.id()).is_none() {
            return false;
        }
        let Some(members) = maps.groups.get_mut(session.group()) else {
            return false;
        };
        members.remove(session.id());
        if members.is_empty() {
            maps.groups.remove(session.group());
            true
        } else {
            false
        }
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
                fanout.count(session.push(message.clone()));
            }
        };
        match &broadcast.target {
            Target::Group(group) => {
                if let Some(members) = maps.groups.get(group) {
                    members.values().for_each(&mut offer);
                }
            }
            Target::All => maps.sessions.values().for_each(&mut offer),
            Target::Sessions(ids) => ids
                .iter()
                .filter_map(|id| maps.sessions.get(id))
                .for_each(&mut offer),
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
            Target::All => maps.sessions.values().filter(admitted).count(),
            Target::Sessions(ids) => ids
                .iter()
                .filter_map(|id| maps.sessions.get(id))
                .filter(admitted)
                .count(),
        }
    }

    pub(crate) fn session(&self, id: &SessionId) -> Option<Session> {
        self.maps.read().sessions.get(id).cloned()
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

    pub(crate) fn members(&self, group: &GroupName) -> Vec<Session> {
        self.maps
            .read()
            .groups
            .get(group)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn all_sessions(&self) -> Vec<Session> {
        self.maps.read().sessions.values().cloned().collect()
    }
}
