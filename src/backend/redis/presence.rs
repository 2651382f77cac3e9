//! Node presence on Redis: heartbeats in, the cluster view out, no SCAN.
//!
//! Every node heartbeats a small JSON document about itself
//! ([`NodeInfo`]: its groups, their local member counts, its session count)
//! into two keys that every node shares:
//!
//! ```text
//! {groupcast:nodes}:info   hash        node id → JSON
//! {groupcast:nodes}:seen   sorted set  node id → last heartbeat (ms, Redis's clock)
//! ```
//!
//! Both are written by one script ([`BEAT`]) and read by another
//! ([`READ`]), which also prunes the nodes not heard from within the TTL.
//! Why this layout:
//!
//! * **no SCAN**: reading the view is one script call whatever else the
//!   database holds, and works unchanged on a Redis Cluster, where SCAN
//!   would see one primary only; the braces put both keys in one slot, so
//!   each script touches a single slot;
//! * **Redis's clock**: the last-seen time comes from `TIME` inside the
//!   script, so nodes whose clocks disagree still agree on who is alive;
//! * **no cleanup job**: a node that dies stops beating and the next reader
//!   prunes it; a node that shuts down withdraws at once; when every node is
//!   gone both keys expire after the TTL.
//!
//! Counts are as fresh as the last heartbeat; this node's own entry is
//! always computed live ([`NodeInfo::local`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::errors::command_error;
use super::pool::RedisPool;
use crate::backend::error::BackendError;
use crate::backend::presence::NodeInfo;
use crate::backend::seam::BackendContext;

/// Writes one node's entry: `KEYS = [info, seen]`, `ARGV = [node, json,
/// ttl_ms]`. Returns the time it recorded.
const BEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return now";

/// Prunes the nodes not seen within `ARGV[1]` ms and returns the others as
/// `[node, last_seen_ms, json, ...]`. `KEYS = [info, seen]`.
const READ: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. cutoff)
for _, node in ipairs(gone) do
  redis.call('HDEL', KEYS[1], node)
end
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. cutoff)
end
local live = redis.call('ZRANGEBYSCORE', KEYS[2], cutoff, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  local json = redis.call('HGET', KEYS[1], live[i])
  if json then
    out[#out + 1] = live[i]
    out[#out + 1] = live[i + 1]
    out[#out + 1] = json
  end
end
return out";

/// Writes this node's heartbeat and reads everyone's.
pub(crate) struct Presence {
    pool: RedisPool,
    context: BackendContext,
    info_key: String,
    seen_key: String,
    ttl: Duration,
    beat: redis::Script,
    read: redis::Script,
    /// The Redis Function's library, loaded on every (re)connect.
    function: Option<String>,
}

impl Presence {
    pub(crate) fn new(
        pool: RedisPool,
        context: BackendContext,
        presence_key: &str,
        ttl: Duration,
    ) -> Self {
        Presence {
            pool,
            context,
            info_key: format!("{{{presence_key}}}:info"),
            seen_key: format!("{{{presence_key}}}:seen"),
            ttl,
            beat: redis::Script::new(BEAT),
            read: redis::Script::new(READ),
            function: None,
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Loads the Redis Function for publishers outside groupcast, when this
    /// presence has one to load. Failures are logged, not fatal: only
    /// those publishers need it.
    async fn load_function(&self) {
        let Some(library) = &self.function else {
            return;
        };
        match super::function::load(&self.pool, library).await {
            Ok(()) => tracing::debug!(
                "loaded the Redis Function {}",
                super::function::FUNCTION_NAME
            ),
            Err(error) => tracing::warn!(
                %error,
                "cannot load the Redis Function {} (FCALL publishing with history); needs Redis 7 and FUNCTION LOAD rights",
                super::function::FUNCTION_NAME
            ),
        }
    }

    /// Also loads `library` (the Redis Function) on every (re)connect.
    pub(crate) fn with_function(mut self, library: Option<String>) -> Self {
        self.function = library;
        self
    }

    /// Writes one heartbeat.
    pub(crate) async fn beat(&self) -> Result<(), BackendError> {
        // Serializing strings and integers does not fail; mapped anyway
        // rather than unwrapped.
        let json = serde_json::to_vec(&self.context.local_node())
            .map_err(|e| BackendError::Command(format!("encoding presence: {e}")))?;
        let mut call = self.beat.prepare_invoke();
        call.key(&self.info_key)
            .key(&self.seen_key)
            .arg(&self.context.node_id)
            .arg(json)
            .arg(self.ttl_ms());
        self.pool
            .run(|mut conn| async move {
                call.invoke_async::<i64>(&mut conn)
                    .await
                    .map_err(command_error)
            })
            .await
            .map(drop)
    }

    /// Removes this node's entry (clean shutdown).
    pub(crate) async fn withdraw(&self) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(&self.info_key, &self.context.node_id)
            .zrem(&self.seen_key, &self.context.node_id);
        self.pool
            .run(|mut conn| async move {
                pipe.query_async::<redis::Value>(&mut conn)
                    .await
                    .map_err(command_error)
            })
            .await
            .map(drop)
    }

    /// Every live node, sorted by id, this one computed live.
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeInfo>, BackendError> {
        let mut call = self.read.prepare_invoke();
        call.key(&self.info_key)
            .key(&self.seen_key)
            .arg(self.ttl_ms());
        let flat: Vec<redis::Value> = self
            .pool
            .run(
                |mut conn| async move { call.invoke_async(&mut conn).await.map_err(command_error) },
            )
            .await?;
        let mut nodes = vec![self.context.local_node()];
        for entry in flat.chunks_exact(3) {
            let node_id: Option<String> = redis::from_redis_value(entry[0].clone()).ok();
            let seen: Option<u64> = redis::from_redis_value(entry[1].clone()).ok();
            let json: Option<Vec<u8>> = redis::from_redis_value(entry[2].clone()).ok();
            let (Some(node_id), Some(json)) = (node_id, json) else {
                continue;
            };
            if node_id == self.context.node_id {
                continue; // computed live above
            }
            match serde_json::from_slice::<NodeInfo>(&json) {
                Ok(mut node) => {
                    node.last_seen_ms = seen.unwrap_or(node.last_seen_ms);
                    nodes.push(node);
                }
                // A future format, or someone else's field: skip it rather
                // than fail the whole view.
                Err(error) => {
                    tracing::debug!(%node_id, %error, "ignored an unreadable presence entry")
                }
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
                _ = wake.notified() => {
                    // A (re)connect: a Redis that restarted without
                    // persistence also forgot the Function.
                    self.load_function().await;
                }
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
}
