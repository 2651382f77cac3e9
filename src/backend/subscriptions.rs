//! Which channels a node wants, and when to stop wanting them.
//!
//! The registry tells the backend "first local member of G joined" and
//! "last local member of G left". Turning that into SUBSCRIBE and
//! UNSUBSCRIBE is the same job for every backend, and none of it depends on
//! Redis, so it lives here as a plain state machine that the backend's
//! subscriber task owns:
//!
//! * a channel is **wanted** while its group has local members, and for a
//!   **linger** after the last one left, so that a client that reconnects at
//!   once does not make the subscription flap;
//! * join and leave are *counted* rather than flagged: they are sent from
//!   different threads and may arrive in the other order, and counting keeps
//!   the right answer either way;
//! * every call returns the [`Change`] the wire needs, if any; a backend
//!   without a connection at that moment ignores it, because on every
//!   (re)connect it subscribes [`Subscriptions::wanted`] whole.
//!
//! Channels are keyed by their wire name (from
//! [`ChannelNames`](super::channels::ChannelNames)), so a backend that
//! spreads channels over several connections (one per Redis shard or
//! cluster node) can group [`wanted`](Subscriptions::wanted) as it likes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::group::GroupName;

/// What the wire must do to match the wanted set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Subscribe(String),
    Unsubscribe(String),
}

/// Why this node wants (or wanted) one channel.
#[derive(Debug)]
struct Hold {
    group: GroupName,
    /// First joins minus last leaves. Normally 1 or 0.
    members: i64,
    /// When the linger after the last leave ends (key into `lingering`).
    linger: Option<(Instant, u64)>,
    /// Whether the channel is in the wanted set (and so subscribed, or
    /// about to be, on the wire).
    wanted: bool,
}

/// The wanted channels and their lingers. See the module docs.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    linger: Duration,
    holds: HashMap<String, Hold>,
    /// Lingering channels by deadline (the u64 makes keys unique).
    lingering: BTreeMap<(Instant, u64), String>,
    next_linger_id: u64,
}

impl Subscriptions {
    /// Channels stay wanted for `linger` after their last member left.
    pub(crate) fn new(linger: Duration) -> Self {
        Subscriptions {
            linger,
            holds: HashMap::new(),
            lingering: BTreeMap::new(),
            next_linger_id: 0,
        }
    }

    /// A first local member joined `group`, whose channel is `channel`.
    pub(crate) fn join(&mut self, channel: String, group: GroupName) -> Option<Change> {
        self.count(channel, group, 1)
    }

    /// The last local member of `group` left.
    pub(crate) fn leave(&mut self, channel: String, group: GroupName) -> Option<Change> {
        self.count(channel, group, -1)
    }

    fn count(&mut self, channel: String, group: GroupName, delta: i64) -> Option<Change> {
        let hold = self.holds.entry(channel.clone()).or_insert_with(|| Hold {
            group,
            members: 0,
            linger: None,
            wanted: false,
        });
        hold.members += delta;
        if hold.members > 0 {
            // Someone is back before the linger ended: no flapping.
            if let Some(key) = hold.linger.take() {
                self.lingering.remove(&key);
            }
        } else if hold.wanted && hold.linger.is_none() && !self.linger.is_zero() {
            let key = (Instant::now() + self.linger, self.next_linger_id);
            self.next_linger_id += 1;
            hold.linger = Some(key);
            self.lingering.insert(key, channel.clone());
        }
        self.reconcile(&channel)
    }

    /// When the next linger ends, if any lingers.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.lingering.first_key_value().map(|(key, _)| key.0)
    }

    /// Ends every linger due by now; returns the unsubscribes they cause.
    pub(crate) fn expire(&mut self) -> Vec<Change> {
        let now = Instant::now();
        let mut changes = Vec::new();
        while let Some(entry) = self.lingering.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, channel) = entry.remove_entry();
            if let Some(hold) = self.holds.get_mut(&channel)
                && hold.linger == Some(key)
            {
                hold.linger = None;
            }
            changes.extend(self.reconcile(&channel));
        }
        changes
    }

    /// Wanted while the channel has members or lingers.
    fn reconcile(&mut self, channel: &str) -> Option<Change> {
        let hold = self.holds.get_mut(channel)?;
        let wanted = hold.members > 0 || hold.linger.is_some();
        let change = (wanted != hold.wanted).then(|| {
            hold.wanted = wanted;
            if wanted {
                Change::Subscribe(channel.to_string())
            } else {
                Change::Unsubscribe(channel.to_string())
            }
        });
        if !hold.wanted && hold.members == 0 {
            self.holds.remove(channel);
        }
        change
    }

    /// Every wanted channel (to subscribe on a new connection).
    pub(crate) fn wanted(&self) -> impl Iterator<Item = &str> {
        self.holds
            .iter()
            .filter(|(_, hold)| hold.wanted)
            .map(|(channel, _)| channel.as_str())
    }

    /// Whether `channel` is wanted now.
    pub(crate) fn is_wanted(&self, channel: &str) -> bool {
        self.holds.get(channel).is_some_and(|hold| hold.wanted)
    }

    /// The group a wanted or lingering channel belongs to.
    pub(crate) fn group_of(&self, channel: &str) -> Option<&GroupName> {
        self.holds.get(channel).map(|hold| &hold.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> (String, GroupName) {
        (format!("group:{name}"), GroupName::new(name).unwrap())
    }

    fn subscribe(name: &str) -> Option<Change> {
        Some(Change::Subscribe(format!("group:{name}")))
    }

    fn unsubscribe(name: &str) -> Option<Change> {
        Some(Change::Unsubscribe(format!("group:{name}")))
    }

    #[test]
    fn without_linger_a_channel_follows_its_members() {
        let mut subs = Subscriptions::new(Duration::ZERO);
        let (channel, g) = group("a");
        assert_eq!(subs.join(channel.clone(), g.clone()), subscribe("a"));
        assert!(subs.is_wanted(&channel));
        assert_eq!(subs.leave(channel.clone(), g), unsubscribe("a"));
        assert!(!subs.is_wanted(&channel));
        assert_eq!(subs.wanted().count(), 0);
        assert!(subs.holds.is_empty(), "nothing is kept for a gone channel");
    }

    #[test]
    fn a_leave_that_overtakes_its_join_changes_nothing() {
        let mut subs = Subscriptions::new(Duration::ZERO);
        let (channel, g) = group("a");
        assert_eq!(subs.leave(channel.clone(), g.clone()), None);
        assert_eq!(subs.join(channel.clone(), g), None);
        assert!(!subs.is_wanted(&channel));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejoin_within_the_linger_keeps_the_subscription() {
        let linger = Duration::from_secs(2);
        let mut subs = Subscriptions::new(linger);
        let (channel, g) = group("a");
        assert_eq!(subs.join(channel.clone(), g.clone()), subscribe("a"));
        assert_eq!(subs.leave(channel.clone(), g.clone()), None, "lingers");
        assert!(subs.next_deadline().is_some());
        tokio::time::advance(linger / 2).await;
        assert_eq!(subs.join(channel.clone(), g.clone()), None, "back in time");
        assert_eq!(subs.next_deadline(), None, "the linger was cancelled");
        tokio::time::advance(linger).await;
        assert_eq!(subs.expire(), vec![]);
        assert!(subs.is_wanted(&channel));
        assert_eq!(subs.group_of(&channel), Some(&g));
    }

    #[tokio::test(start_paused = true)]
    async fn a_linger_that_ends_unsubscribes() {
        let linger = Duration::from_secs(2);
        let mut subs = Subscriptions::new(linger);
        let (a, ga) = group("a");
        let (b, gb) = group("b");
        subs.join(a.clone(), ga.clone());
        subs.join(b.clone(), gb.clone());
        subs.leave(a.clone(), ga);
        tokio::time::advance(Duration::from_secs(1)).await;
        subs.leave(b.clone(), gb);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(subs.expire(), vec![Change::Unsubscribe(a.clone())]);
        let mut wanted: Vec<_> = subs.wanted().collect();
        wanted.sort();
        assert_eq!(wanted, [b.as_str()]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(subs.expire(), vec![Change::Unsubscribe(b)]);
        assert_eq!(subs.next_deadline(), None);
    }
}
