//! The cluster view: which nodes are alive, and which groups they hold.
//!
//! Each node knows only its own sessions. To answer "who is in group G,
//! cluster-wide?" (`GET /api/groups`, `/api/nodes`, `/debug/state`) without
//! a protocol between nodes, every node **heartbeats** a small JSON document
//! about itself ([`NodeInfo`]: its groups, their local member counts, its
//! session count) into Redis:
//!
//! ```text
//! SET {presence_prefix}{node_id} '{"node_id":…,"groups":{…},…}' PX {ttl}
//! ```
//!
//! The key lives a few heartbeats long. Reading the view is a `SCAN` for
//! the prefix plus one `MGET`. There is no membership protocol and no
//! cleanup job:
//!
//! * a node that **dies** stops writing, its key expires, and it vanishes
//!   from everyone's view within the TTL;
//! * a node that **shuts down** deletes its key at once;
//! * a node that cannot reach Redis for longer than the TTL drops out of
//!   the view, and comes back with its next heartbeat.
//!
//! Trade-offs, on purpose: counts are as fresh as the last heartbeat (this
//! node's own entry is always computed live), and `SCAN` walks the whole
//! database, which is cheap when the database holds groupcast's keys only;
//! point the URL at a database of its own (`redis://host/3`) otherwise.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_redis::Pool;
use tokio::sync::Notify;
use tokio::time::{MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;

use crate::bus::NodeInfo;
use crate::bus::redis::{command_error, pool_error};
use crate::error::BusError;
use crate::group::GroupName;

/// This node's groups and their local member counts (from the registry).
pub(crate) type LocalGroups = Arc<dyn Fn() -> Vec<(GroupName, usize)> + Send + Sync>;

/// How many keys one `SCAN` step asks for. Redis treats it as a hint.
const SCAN_COUNT: usize = 1000;

/// Writes this node's heartbeat and reads everyone's.
pub(crate) struct Presence {
    pool: Pool,
    node_id: String,
    /// `{presence_prefix}{node_id}`: where this node's heartbeat lives.
    key: String,
    /// `SCAN MATCH` pattern for every node's key (the prefix, glob-escaped).
    pattern: String,
    ttl: Duration,
    command_timeout: Duration,
    local_groups: LocalGroups,
}

impl Presence {
    pub(crate) fn new(
        pool: Pool,
        node_id: String,
        prefix: &str,
        ttl: Duration,
        command_timeout: Duration,
        local_groups: LocalGroups,
    ) -> Self {
        Presence {
            pool,
            key: format!("{prefix}{node_id}"),
            pattern: format!("{}*", glob_escape(prefix)),
            node_id,
            ttl,
            command_timeout,
            local_groups,
        }
    }

    /// This node as it is right now.
    pub(crate) fn local_info(&self) -> NodeInfo {
        let groups = (self.local_groups)();
        NodeInfo {
            node_id: self.node_id.clone(),
            sessions: groups.iter().map(|(_, n)| n).sum(),
            groups: groups
                .into_iter()
                .map(|(g, n)| (g.as_str().to_owned(), n))
                .collect(),
            last_seen_ms: now_ms(),
        }
    }

    /// Writes one heartbeat: `SET key json PX ttl`.
    pub(crate) async fn beat(&self) -> Result<(), BusError> {
        // Serializing strings and integers does not fail; mapped anyway
        // rather than unwrapped.
        let json = serde_json::to_vec(&self.local_info())
            .map_err(|e| BusError::Command(format!("encoding presence: {e}")))?;
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.key).arg(json).arg("PX").arg(ttl_ms);
        self.with_conn(|mut conn| async move {
            cmd.query_async::<redis::Value>(&mut conn)
                .await
                .map_err(command_error)
        })
        .await
        .map(drop)
    }

    /// Deletes this node's heartbeat (clean shutdown).
    pub(crate) async fn withdraw(&self) -> Result<(), BusError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&self.key);
        self.with_conn(|mut conn| async move {
            cmd.query_async::<redis::Value>(&mut conn)
                .await
                .map_err(command_error)
        })
        .await
        .map(drop)
    }

    /// Every live node, sorted by id. This node's entry is computed live
    /// rather than read back, so it is never stale and never missing.
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeInfo>, BusError> {
        let pattern = self.pattern.clone();
        let own_key = self.key.clone();
        let values: Vec<(String, Option<Vec<u8>>)> = self
            .with_conn(|mut conn| async move {
                // SCAN until the cursor comes back to 0. It may return a key
                // twice, and keys may expire between SCAN and MGET: both are
                // harmless (dedup below; MGET gives nil for a gone key).
                let mut keys: Vec<String> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut conn)
                        .await
                        .map_err(command_error)?;
                    keys.extend(batch.into_iter().filter(|k| *k != own_key));
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
                keys.sort_unstable();
                keys.dedup();
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(command_error)?;
                Ok(keys.into_iter().zip(values).collect())
            })
            .await?;

        let mut nodes = vec![self.local_info()];
        for (key, value) in values {
            let Some(bytes) = value else { continue }; // expired meanwhile
            match serde_json::from_slice::<NodeInfo>(&bytes) {
                Ok(node) => nodes.push(node),
                // Someone else's key under our prefix, or a future format:
                // skip it rather than fail the whole view.
                Err(error) => tracing::debug!(%key, %error, "ignored an unreadable presence entry"),
            }
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(nodes)
    }

    /// Heartbeats every `interval` until `cancel`, and at once whenever
    /// `wake` is notified (the subscriber does so on every (re)connect, so a
    /// node reappears in the view as soon as Redis is back).
    pub(crate) async fn run(
        self: Arc<Self>,
        interval: Duration,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Log the first failure of a streak and the recovery, not every
        // beat: while Redis is down the subscriber already says so.
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticks.tick() => {}
                _ = wake.notified() => {}
            }
            match self.beat().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("presence heartbeats are written again");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot write the presence heartbeat");
                }
                Err(error) => tracing::debug!(%error, "presence heartbeat failed again"),
            }
        }
    }

    /// Runs `f` on a pooled connection, all of it within the command timeout.
    async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T, BusError>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, BusError>>,
    {
        let work = async {
            let conn = self.pool.get().await.map_err(pool_error)?;
            f(conn).await
        };
        timeout(self.command_timeout, work)
            .await
            .map_err(|_| BusError::Timeout(self.command_timeout))?
    }
}

/// Escapes Redis glob characters, so a prefix like `app[1]:` matches itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("groupcast:node:"), "groupcast:node:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
