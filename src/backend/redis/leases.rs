//! Worker leases on Redis: `SET NX PX` to take one, fenced scripts to renew
//! and release it (see `backend/leases.rs` for why).
//!
//! Each lease is one key, `<lease_prefix><group>`, and every command or
//! script touches that key alone, so leases work unchanged on a Redis
//! Cluster. Listing holders reads the keys of the groups the caller names
//! (one GET each, pipelined on one server), never a SCAN.

use std::time::Duration;

use super::errors::command_error;
use super::pool::RedisPool;
use crate::backend::error::BackendError;
use crate::backend::future::BoxFuture;
use crate::backend::leases::{LeaseHolder, LeaseStore, LeaseToken};
use crate::group::GroupName;

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
pub(crate) struct RedisLeases {
    pool: RedisPool,
    prefix: String,
    renew: redis::Script,
    release: redis::Script,
}

impl RedisLeases {
    /// Leases under `prefix<group>`, on the backend's pool.
    pub(crate) fn new(pool: RedisPool, prefix: impl Into<String>) -> Self {
        RedisLeases {
            pool,
            prefix: prefix.into(),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
        }
    }

    fn key(&self, group: &GroupName) -> String {
        format!("{}{}", self.prefix, group)
    }
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
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(group))
            .arg(token.as_str())
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        Box::pin(self.pool.run(|mut conn| async move {
            let set: Option<String> = cmd.query_async(&mut conn).await.map_err(command_error)?;
            Ok(set.is_some())
        }))
    }

    fn renew<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        let mut call = self.renew.prepare_invoke();
        call.key(self.key(group))
            .arg(token.as_str())
            .arg(millis(ttl));
        Box::pin(self.pool.run(|mut conn| async move {
            let kept: i64 = call.invoke_async(&mut conn).await.map_err(command_error)?;
            Ok(kept == 1)
        }))
    }

    fn release<'a>(
        &'a self,
        group: &'a GroupName,
        token: &'a LeaseToken,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let mut call = self.release.prepare_invoke();
        call.key(self.key(group)).arg(token.as_str());
        Box::pin(self.pool.run(|mut conn| async move {
            let _: i64 = call.invoke_async(&mut conn).await.map_err(command_error)?;
            Ok(())
        }))
    }

    fn holders<'a>(
        &'a self,
        groups: &'a [GroupName],
    ) -> BoxFuture<'a, Result<Vec<LeaseHolder>, BackendError>> {
        Box::pin(async move {
            if groups.is_empty() {
                return Ok(Vec::new());
            }
            // One GET per key rather than MGET: on a Redis Cluster the keys
            // live in different slots (`query_each` routes each on its own
            // there, and pipelines them on one server).
            let gets = groups.iter().map(|group| {
                let mut get = redis::cmd("GET");
                get.arg(self.key(group));
                get
            });
            let values = self.pool.query_each(gets.collect()).await?;
            let values = values.into_iter().map(|value| {
                redis::from_redis_value::<Option<String>>(value)
                    .ok()
                    .flatten()
            });
            let mut holders: Vec<LeaseHolder> = groups
                .iter()
                .zip(values)
                .filter_map(|(group, value)| LeaseToken::holder(&value?, group.as_str()))
                .collect();
            holders.sort_by(|a, b| a.group.cmp(&b.group));
            Ok(holders)
        })
    }
}
