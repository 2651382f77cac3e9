//! Presence transitions standalone: the one node is the whole cluster, so
//! its own joins and leaves make the group's transitions, computed here
//! from what the hub tells the presence store (the same transitions, in
//! the same order, as the Redis scripts report: see
//! `backend/transition.rs` and "The grace" in `redis/group_scripts.rs`).
//!
//! A connection that closes stays a member for the grace, as a pending
//! leave with a generation number: the same session id joining again
//! within it (a client that reconnected with its session) removes the
//! entry and is reported as nothing; a timer task that finds the
//! generation still pending after the grace reports the leave, and with
//! it the user's last leave and the group's vacancy, now final. Without a
//! Tokio runtime (a hub used outside one) or with no grace, a leave is
//! final at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::transition::{PresenceChange, PresenceChanges};
use crate::group::GroupName;
use crate::session_id::SessionId;

/// One group's presence as far as transitions need it.
#[derive(Default)]
struct GroupState {
    /// The members, with their `sub` (those within their grace too).
    sessions: HashMap<SessionId, Option<String>>,
    /// Connections per user.
    users: HashMap<String, usize>,
    /// Members whose connection closed, within the grace: generation.
    closing: HashMap<SessionId, u64>,
}

/// The standalone transitions. See the module docs.
pub(crate) struct LocalChanges {
    node: String,
    grace: Duration,
    changes: PresenceChanges,
    groups: Arc<Mutex<HashMap<GroupName, GroupState>>>,
    generation: Arc<AtomicU64>,
    /// The position of the last report (of any group: positions only need
    /// to grow per group), moved under the `groups` lock with the report.
    seq: Arc<AtomicU64>,
}

/// The next position, for a report made under the `groups` lock.
fn next_seq(seq: &AtomicU64) -> u64 {
    seq.fetch_add(1, Ordering::Relaxed) + 1
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
        let seq = self.seq.load(Ordering::Relaxed);
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

    /// `id` (of `sub`) joined `group`: a new member, or one within its
    /// grace carrying on.
    pub(crate) fn joined(&self, group: &GroupName, id: &SessionId, sub: Option<String>) {
        let mut groups = self.groups.lock();
        let state = groups.entry(group.clone()).or_default();
        let mut out = Vec::new();
        if let Some(was) = state.sessions.get(id).cloned() {
            state.closing.remove(id);
            if was == sub {
                return; // the same member carries on: nothing to report
            }
            // Another user under the same id: the old one left.
            state.sessions.remove(id);
            out.push(left_change(&self.node, id, was.clone()));
            release(state, was, &mut out);
        }
        state.sessions.insert(id.clone(), sub.clone());
        if state.sessions.len() == 1 && out.is_empty() {
            out.push(PresenceChange::Occupied);
        }
        if let Some(sub) = &sub {
            let count = state.users.entry(sub.clone()).or_default();
            *count += 1;
            if *count == 1 {
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

    /// `id`'s connection left `group`: final after the grace, unless it
    /// comes back.
    pub(crate) fn left(&self, group: &GroupName, id: &SessionId) {
        let mut groups = self.groups.lock();
        let Some(state) = groups.get_mut(group) else {
            return;
        };
        if !state.sessions.contains_key(id) || state.closing.contains_key(id) {
            return;
        }
        let timer = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|_| !self.grace.is_zero());
        if let Some(runtime) = timer {
            let generation = self.generation.fetch_add(1, Ordering::Relaxed);
            state.closing.insert(id.clone(), generation);
            runtime.spawn(self.finish_after_grace(group.clone(), id.clone(), generation));
            return;
        }
        let out = take_out(&self.node, state, id);
        if state.sessions.is_empty() {
            groups.remove(group);
        }
        (self.changes)(group, out, next_seq(&self.seq));
    }

    /// After the grace: `id` leaves for good if it is still closing as
    /// `generation` (it did not come back).
    fn finish_after_grace(
        &self,
        group: GroupName,
        id: SessionId,
        generation: u64,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (grace, groups, changes, seq) = (
            self.grace,
            self.groups.clone(),
            self.changes.clone(),
            self.seq.clone(),
        );
        let node = self.node.clone();
        async move {
            tokio::time::sleep(grace).await;
            let mut groups = groups.lock();
            let Some(state) = groups.get_mut(&group) else {
                return;
            };
            if state.closing.get(&id) != Some(&generation) {
                return; // came back
            }
            state.closing.remove(&id);
            let out = take_out(&node, state, &id);
            if state.sessions.is_empty() {
                groups.remove(&group);
            }
            changes(&group, out, next_seq(&seq));
        }
    }
}

/// Takes `id` out of `state` for good: its leave (on `node`), its user's
/// last leave, the group's vacancy.
fn take_out(node: &str, state: &mut GroupState, id: &SessionId) -> Vec<PresenceChange> {
    let mut out = Vec::new();
    if let Some(sub) = state.sessions.remove(id) {
        out.push(left_change(node, id, sub.clone()));
        release(state, sub, &mut out);
    }
    if state.sessions.is_empty() {
        out.push(PresenceChange::Vacated);
    }
    out
}

fn left_change(node: &str, id: &SessionId, sub: Option<String>) -> PresenceChange {
    PresenceChange::SessionLeft {
        id: id.clone(),
        node: node.to_string(),
        sub,
    }
}

/// One connection of `sub` fewer: its last one is the user's leave.
fn release(state: &mut GroupState, sub: Option<String>, out: &mut Vec<PresenceChange>) {
    if let Some(sub) = sub
        && let Some(count) = state.users.get_mut(&sub)
    {
        *count -= 1;
        if *count == 0 {
            state.users.remove(&sub);
            out.push(PresenceChange::UserLeft(sub));
        }
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

    #[tokio::test(start_paused = true)]
    async fn a_session_back_with_its_id_within_the_grace_never_left() {
        let (sink, seen) = recording();
        let changes = LocalChanges::new("n".into(), Duration::from_secs(5), sink);
        let group = GroupName::new("room").expect("a name");
        changes.joined(&group, &id("a"), Some("alice".into()));
        let joined = seen.lock().len();
        changes.left(&group, &id("a"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        changes.joined(&group, &id("a"), Some("alice".into()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(seen.lock().len(), joined, "no leave, no second join");
        assert_eq!(changes.snapshot(&group).1.len(), 1);
        // Gone for good: one leave, after the grace.
        changes.left(&group, &id("a"));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(
            seen.lock()[joined..],
            [
                PresenceChange::SessionLeft {
                    id: id("a"),
                    node: "n".into(),
                    sub: Some("alice".into())
                },
                PresenceChange::UserLeft("alice".into()),
                PresenceChange::Vacated
            ]
        );
        assert!(changes.snapshot(&group).1.is_empty());
    }
}
