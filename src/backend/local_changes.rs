//! Presence transitions standalone: the one node is the whole cluster, so
//! its own joins and leaves make the group's transitions, computed here
//! from what the hub tells the presence store (the same transitions, in
//! the same order, as the Redis scripts report: see
//! `backend/transition.rs`).
//!
//! A user's last leave and the group's vacancy wait out the grace as
//! pending entries with a generation number; a comeback within the grace
//! removes the entry (and is reported as nothing), and a timer task that
//! finds its generation still pending after the grace reports the leave.
//! Without a Tokio runtime (a hub used outside one) or with no grace, a
//! leave is final at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::transition::{PresenceChange, PresenceChanges};
use crate::group::GroupName;
use crate::session_id::SessionId;

/// One group's presence as far as transitions need it.
#[derive(Default)]
struct GroupState {
    /// The members, with their `sub`.
    sessions: HashMap<SessionId, Option<String>>,
    /// Connections per user.
    users: HashMap<String, usize>,
    /// Users whose last connection is gone, within the grace: generation.
    leaving: HashMap<String, u64>,
    /// The group emptied within the grace: generation.
    vacating: Option<u64>,
}

impl GroupState {
    fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.leaving.is_empty() && self.vacating.is_none()
    }
}

/// What is pending after a leave.
enum Pending {
    User(String),
    Group,
}

/// The standalone transitions. See the module docs.
pub(crate) struct LocalChanges {
    node: String,
    grace: Duration,
    changes: PresenceChanges,
    groups: Arc<Mutex<HashMap<GroupName, GroupState>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The position of the last report (of any group: positions only need
    /// to grow per group), moved under the `groups` lock with the report.
    seq: Arc<std::sync::atomic::AtomicU64>,
}

/// The next position, for a report made under the `groups` lock.
fn next_seq(seq: &std::sync::atomic::AtomicU64) -> u64 {
    seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

impl LocalChanges {
    pub(crate) fn new(node: String, grace: Duration, changes: PresenceChanges) -> Self {
        LocalChanges {
            node,
            grace,
            changes,
            groups: Arc::default(),
            generation: Arc::default(),
            seq: Arc::default(),
        }
    }

    /// The node whose transitions these are.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// The members of `group` (with their `sub`) at the position of the
    /// last report: they hold every change reported up to it and none
    /// after (taken under the lock the reports are made under).
    pub(crate) fn snapshot(&self, group: &GroupName) -> (u64, Vec<(SessionId, Option<String>)>) {
        let groups = self.groups.lock();
        let seq = self.seq.load(std::sync::atomic::Ordering::Relaxed);
        let members = groups
            .get(group)
            .map(|state| {
                state
                    .sessions
                    .iter()
                    .map(|(id, sub)| (id.clone(), sub.clone()))
                    .collect()
            })
            .unwrap_or_default();
        (seq, members)
    }

    /// `id` (of `sub`) joined `group`.
    pub(crate) fn joined(&self, group: &GroupName, id: &SessionId, sub: Option<String>) {
        let mut groups = self.groups.lock();
        let state = groups.entry(group.clone()).or_default();
        if state.sessions.insert(id.clone(), sub.clone()).is_some() {
            return;
        }
        let mut out = Vec::new();
        if state.sessions.len() == 1 && state.vacating.take().is_none() {
            out.push(PresenceChange::Occupied);
        }
        if let Some(sub) = &sub {
            let count = state.users.entry(sub.clone()).or_default();
            *count += 1;
            if *count == 1 && state.leaving.remove(sub).is_none() {
                out.push(PresenceChange::UserJoined(sub.clone()));
            }
        }
        out.push(PresenceChange::SessionJoined {
            id: id.clone(),
            node: self.node.clone(),
            sub,
        });
        (self.changes)(group, out, next_seq(&self.seq));
    }

    /// `id` left `group`.
    pub(crate) fn left(&self, group: &GroupName, id: &SessionId) {
        let mut groups = self.groups.lock();
        let Some(state) = groups.get_mut(group) else {
            return;
        };
        let Some(sub) = state.sessions.remove(id) else {
            return;
        };
        let mut out = vec![PresenceChange::SessionLeft {
            id: id.clone(),
            node: self.node.clone(),
            sub: sub.clone(),
        }];
        let mut pending = Vec::new();
        if let Some(sub) = sub
            && let Some(count) = state.users.get_mut(&sub)
        {
            *count -= 1;
            if *count == 0 {
                state.users.remove(&sub);
                pending.push(Pending::User(sub));
            }
        }
        if state.sessions.is_empty() {
            pending.push(Pending::Group);
        }
        let timer = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|_| !self.grace.is_zero());
        match timer {
            None => out.extend(pending.into_iter().map(final_change)),
            Some(runtime) if !pending.is_empty() => {
                // One timer for this leave's pending changes, so that they
                // are reported in order (the user, then the group).
                let generation = self
                    .generation
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for what in &pending {
                    match what {
                        Pending::User(sub) => {
                            state.leaving.insert(sub.clone(), generation);
                        }
                        Pending::Group => state.vacating = Some(generation),
                    }
                }
                runtime.spawn(self.confirm(group.clone(), pending, generation));
            }
            Some(_) => {}
        }
        if state.is_idle() {
            groups.remove(group);
        }
        (self.changes)(group, out, next_seq(&self.seq));
    }

    /// After the grace: reports each of `pending` that is still pending
    /// as `generation` (nobody came back), in order.
    fn confirm(
        &self,
        group: GroupName,
        pending: Vec<Pending>,
        generation: u64,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (grace, groups, changes) = (self.grace, self.groups.clone(), self.changes.clone());
        let seq = self.seq.clone();
        async move {
            tokio::time::sleep(grace).await;
            let mut groups = groups.lock();
            let Some(state) = groups.get_mut(&group) else {
                return;
            };
            let mut out = Vec::new();
            for what in pending {
                let still = match &what {
                    Pending::User(sub) => state.leaving.get(sub) == Some(&generation),
                    Pending::Group => state.vacating == Some(generation),
                };
                if still {
                    match &what {
                        Pending::User(sub) => {
                            state.leaving.remove(sub);
                        }
                        Pending::Group => state.vacating = None,
                    }
                    out.push(final_change(what));
                }
            }
            if state.is_idle() {
                groups.remove(&group);
            }
            if !out.is_empty() {
                changes(&group, out, next_seq(&seq));
            }
        }
    }
}

fn final_change(what: Pending) -> PresenceChange {
    match what {
        Pending::User(sub) => PresenceChange::UserLeft(sub),
        Pending::Group => PresenceChange::Vacated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording() -> (PresenceChanges, Arc<Mutex<Vec<PresenceChange>>>) {
        let seen: Arc<Mutex<Vec<PresenceChange>>> = Arc::default();
        let sink = seen.clone();
        (
            Arc::new(move |_, changes, _| sink.lock().extend(changes)),
            seen,
        )
    }

    fn id(s: &str) -> SessionId {
        SessionId::from(s)
    }

    #[test]
    fn without_grace_the_first_and_last_are_reported_at_once() {
        let (sink, seen) = recording();
        let changes = LocalChanges::new("n".into(), Duration::ZERO, sink);
        let group = GroupName::new("room").expect("a name");
        changes.joined(&group, &id("a"), Some("alice".into()));
        changes.joined(&group, &id("b"), Some("alice".into()));
        changes.left(&group, &id("a"));
        changes.left(&group, &id("b"));
        let alice = Some("alice".to_string());
        assert_eq!(
            *seen.lock(),
            [
                PresenceChange::Occupied,
                PresenceChange::UserJoined("alice".into()),
                PresenceChange::SessionJoined {
                    id: id("a"),
                    node: "n".into(),
                    sub: alice.clone()
                },
                PresenceChange::SessionJoined {
                    id: id("b"),
                    node: "n".into(),
                    sub: alice.clone()
                },
                PresenceChange::SessionLeft {
                    id: id("a"),
                    node: "n".into(),
                    sub: alice.clone()
                },
                PresenceChange::SessionLeft {
                    id: id("b"),
                    node: "n".into(),
                    sub: alice
                },
                PresenceChange::UserLeft("alice".into()),
                PresenceChange::Vacated,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_comeback_within_the_grace_is_nothing_and_a_leave_is_final_after_it() {
        let (sink, seen) = recording();
        let changes = LocalChanges::new("n".into(), Duration::from_secs(5), sink);
        let group = GroupName::new("room").expect("a name");
        changes.joined(&group, &id("a"), Some("alice".into()));
        changes.left(&group, &id("a"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        changes.joined(&group, &id("b"), Some("alice".into()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let kinds = |seen: &[PresenceChange]| {
            seen.iter()
                .filter(|c| {
                    !matches!(
                        c,
                        PresenceChange::SessionJoined { .. } | PresenceChange::SessionLeft { .. }
                    )
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(&seen.lock()),
            [
                PresenceChange::Occupied,
                PresenceChange::UserJoined("alice".into())
            ]
        );
        changes.left(&group, &id("b"));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(kinds(&seen.lock()).len(), 2, "not final within the grace");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            kinds(&seen.lock())[2..],
            [
                PresenceChange::UserLeft("alice".into()),
                PresenceChange::Vacated
            ]
        );
    }
}
