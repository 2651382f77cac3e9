//! Leases: which node may run a group's worker.
//!
//! In a cluster, a group's worker must run on exactly one node. Nodes that
//! want to run it race for a lease in Redis: `SET <key> <token> NX PX <ttl>`.
//! The winner renews it well before it expires; everyone else retries now
//! and then and wins only once the lease has expired.
//!
//! **Fencing.** Each lease value is a token unique to one acquisition.
//! Renewal and release are Lua scripts that act only if the key still holds
//! *our* token, so a node whose lease expired (a long GC pause, a network
//! partition) can never extend or delete the new holder's lease. On top of
//! that the holder stops its worker at a local deadline that is earlier
//! than the moment Redis could let anyone else in (see `workers/supervisor.rs`).
//!
//! Every backend supplies a [`LeaseStore`]: standalone nodes use
//! [`LocalLeases`] (same interface, one process), Redis backends keep
//! leases next to their other keys (`backend/redis/leases.rs`).
//!
//! A store lists holders **by group**: the caller names the groups it
//! supervises. There is no key scan, so a store works the same on one Redis
//! and on a Redis Cluster, whose keys are spread over many primaries.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::backend::error::BackendError;
use crate::backend::future::BoxFuture;
use crate::group::GroupName;

/// Who holds a group's lease, as stored in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseHolder {
    /// The group whose worker the lease is for.
    pub group: String,
    /// The node holding it.
    pub node: String,
    /// When it was acquired (Unix milliseconds).
    pub since_ms: u64,
}

/// A lease token: unique per acquisition, readable as a holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken(String);

impl LeaseToken {
    /// A fresh token for `node`, acquired now.
    pub fn new(node: &str, since_ms: u64) -> Self {
        LeaseToken(format!("{node}|{since_ms}|{:016x}", rand::random::<u64>()))
    }

    /// The token's text, as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the holder out of a stored token.
    pub(crate) fn holder(value: &str, group: &str) -> Option<LeaseHolder> {
        let mut parts = value.rsplitn(3, '|');
        let _random = parts.next()?;
        let since_ms = parts.next()?.parse().ok()?;
        let node = parts.next()?.to_string();
        Some(LeaseHolder {
            group: group.to_string(),
            node,
            since_ms,
        })
    }
}

/// Where leases live. All operations are atomic on the store's side.
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes the lease for `group` if nobody holds it.
    fn acquire<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>>;
    /// Extends the lease if `token` still holds it; false means it was lost.
    fn renew<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>>;
    /// Gives the lease up if `token` still holds it.
    fn release<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// The current holders of `groups`' leases, cluster-wide, sorted by
    /// group; a group nobody holds is left out.
    fn holders<'a>(
        &'a self,
        groups: &'a [GroupName],
    ) -> BoxFuture<'a, Result<Vec<LeaseHolder>, BackendError>>;
}

/// Leases in one process (standalone mode).
#[derive(Default)]
pub struct LocalLeases {
    leases: Mutex<HashMap<GroupName, (LeaseToken, Instant)>>,
}

impl LocalLeases {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<GroupName, (LeaseToken, Instant)>) -> R) -> R {
        let mut leases = self.leases.lock();
        let now = Instant::now();
        leases.retain(|_, (_, expires)| *expires > now);
        f(&mut leases)
    }
}

impl LeaseStore for LocalLeases {
    fn acquire<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let won = self.with(|leases| {
            if leases.contains_key(group) {
                false
            } else {
                leases.insert(group.clone(), (token.clone(), Instant::now() + ttl));
                true
            }
        });
        Box::pin(async move { Ok(won) })
    }

    fn renew<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let kept = self.with(|leases| match leases.get_mut(group) {
            Some((held, expires)) if held == token => {
                *expires = Instant::now() + ttl;
                true
            }
            _ => false,
        });
        Box::pin(async move { Ok(kept) })
    }

    fn release<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        self.with(|leases| {
            if leases.get(group).is_some_and(|(held, _)| held == token) {
                leases.remove(group);
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn holders<'a>(
        &'a self,
        groups: &'a [GroupName],
    ) -> BoxFuture<'a, Result<Vec<LeaseHolder>, BackendError>> {
        let mut holders: Vec<LeaseHolder> = self.with(|leases| {
            groups
                .iter()
                .filter_map(|group| {
                    let (token, _) = leases.get(group)?;
                    LeaseToken::holder(token.as_str(), group.as_str())
                })
                .collect()
        });
        holders.sort_by(|a, b| a.group.cmp(&b.group));
        Box::pin(async move { Ok(holders) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_holder() {
        let token = LeaseToken::new("node|with|bars", 42);
        let holder = LeaseToken::holder(token.as_str(), "g").unwrap();
        assert_eq!(holder.node, "node|with|bars");
        assert_eq!(holder.since_ms, 42);
        assert!(LeaseToken::holder("garbage", "g").is_none());
    }

    #[tokio::test]
    async fn local_leases_exclude_and_fence() {
        let leases = LocalLeases::default();
        let group = GroupName::new("g").unwrap();
        let a = LeaseToken::new("a", 1);
        let b = LeaseToken::new("b", 2);
        let ttl = Duration::from_secs(60);
        assert!(leases.acquire(&group, &a, ttl).await.unwrap());
        assert!(!leases.acquire(&group, &b, ttl).await.unwrap());
        assert!(!leases.renew(&group, &b, ttl).await.unwrap());
        leases.release(&group, &b).await.unwrap(); // not b's: no effect
        assert!(leases.renew(&group, &a, ttl).await.unwrap());
        let holders = leases.holders(std::slice::from_ref(&group)).await.unwrap();
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].node, "a");
        leases.release(&group, &a).await.unwrap();
        assert!(leases.acquire(&group, &b, ttl).await.unwrap());
    }
}
