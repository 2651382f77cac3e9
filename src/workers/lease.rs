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
//! than the moment Redis could let anyone else in (see `workers/mod.rs`).
//!
//! Standalone nodes use [`LocalLeases`]: same interface, one process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deadpool_redis::{Config as PoolConfig, Pool, Runtime};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::bus::BoxFuture;
use crate::error::BusError;
use crate::group::GroupName;

/// Who holds a group's lease, as stored in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

    fn holder(value: &str, group: &str) -> Option<LeaseHolder> {
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
    ) -> BoxFuture<'a, Result<bool, BusError>>;
    /// Extends the lease if `token` still holds it; false means it was lost.
    fn renew<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, BusError>>;
    /// Gives the lease up if `token` still holds it.
    fn release<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
    ) -> BoxFuture<'a, Result<(), BusError>>;
    /// Every current holder, cluster-wide.
    fn holders(&self) -> BoxFuture<'_, Result<Vec<LeaseHolder>, BusError>>;
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
    ) -> BoxFuture<'a, Result<bool, BusError>> {
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
    ) -> BoxFuture<'a, Result<bool, BusError>> {
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
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.with(|leases| {
            if leases.get(group).is_some_and(|(held, _)| held == token) {
                leases.remove(group);
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn holders(&self) -> BoxFuture<'_, Result<Vec<LeaseHolder>, BusError>> {
        let holders = self.with(|leases| {
            leases
                .iter()
                .filter_map(|(group, (token, _))| {
                    LeaseToken::holder(token.as_str(), group.as_str())
                })
                .collect()
        });
        Box::pin(async move { Ok(holders) })
    }
}

/// Extends the lease only while it still holds our token.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes the lease only while it still holds our token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Leases in Redis, shared by every node of the cluster.
pub struct RedisLeases {
    pool: Pool,
    prefix: String,
    renew: redis::Script,
    release: redis::Script,
}

impl RedisLeases {
    /// Leases under `prefix<group>` in the Redis at `url`.
    pub fn new(url: &str, prefix: impl Into<String>) -> Result<Self, BusError> {
        let pool = PoolConfig::from_url(url)
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| BusError::InvalidUrl(e.to_string()))?;
        Ok(RedisLeases {
            pool,
            prefix: prefix.into(),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
        })
    }

    fn key(&self, group: &GroupName) -> String {
        format!("{}{}", self.prefix, group)
    }

    async fn connection(&self) -> Result<deadpool_redis::Connection, BusError> {
        self.pool
            .get()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}

fn command_error(e: redis::RedisError) -> BusError {
    BusError::Command(e.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl LeaseStore for RedisLeases {
    fn acquire<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let set: Option<String> = redis::cmd("SET")
                .arg(self.key(group))
                .arg(token.as_str())
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut conn)
                .await
                .map_err(command_error)?;
            Ok(set.is_some())
        })
    }

    fn renew<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let kept: i64 = self
                .renew
                .key(self.key(group))
                .arg(token.as_str())
                .arg(millis(ttl))
                .invoke_async(&mut conn)
                .await
                .map_err(command_error)?;
            Ok(kept == 1)
        })
    }

    fn release<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let _: i64 = self
                .release
                .key(self.key(group))
                .arg(token.as_str())
                .invoke_async(&mut conn)
                .await
                .map_err(command_error)?;
            Ok(())
        })
    }

    fn holders(&self) -> BoxFuture<'_, Result<Vec<LeaseHolder>, BusError>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let pattern = format!("{}*", self.prefix);
            let mut keys: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            // SCAN is bounded: it stops when the cursor wraps to 0, and
            // there are only as many lease keys as groups with workers.
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await
                    .map_err(command_error)?;
                keys.extend(batch);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(command_error)?;
            let mut holders: Vec<LeaseHolder> = keys
                .iter()
                .zip(values)
                .filter_map(|(key, value)| {
                    let group = key.strip_prefix(&self.prefix)?;
                    LeaseToken::holder(&value?, group)
                })
                .collect();
            holders.sort_by(|a, b| a.group.cmp(&b.group));
            Ok(holders)
        })
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
        leases.release(&group, &a).await.unwrap();
        assert!(leases.acquire(&group, &b, ttl).await.unwrap());
    }
}
