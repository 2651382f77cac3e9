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
use tokio_util::sync::CancellationToken;

use super::errors::command_error;
use super::link::{LinkStart, RedisLink};
use super::periodic::{Every, Streak, Woken};
use super::pool::RedisPool;
use crate::backend::cluster_view::ClusterView;
use crate::backend::error::BackendError;
use crate::backend::future::BoxFuture;
use crate::backend::presence::NodeInfo;
use crate::backend::seam::BackendContext;
use crate::backend::tasks::Tasks;

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

/// Writes this node's heartbeat and reads everyone's: the
/// [`ClusterView`] of every Redis backend.
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
    /// The presence on `link`'s pool, with the heartbeat running in
    /// `tasks`, at once whenever the link (re)connects. `function`: the
    /// Redis Function's library, loaded on every (re)connect, when there is
    /// one to load (the backends of one server).
    pub(crate) fn start(
        link: &RedisLink,
        start: &LinkStart<'_>,
        function: Option<String>,
        tasks: &mut Tasks,
    ) -> Arc<Self> {
        let options = start.options;
        let presence_key = &options.presence_key;
        let presence = Arc::new(Presence {
            pool: link.pool(),
            context: start.context.clone(),
            info_key: format!("{{{presence_key}}}:info"),
            seen_key: format!("{{{presence_key}}}:seen"),
            ttl: options.presence_ttl,
            beat: redis::Script::new(BEAT),
            read: redis::Script::new(READ),
            function,
        });
        let heartbeat = presence.clone().run(
            options.heartbeat_interval,
            link.reconnected(),
            tasks.token(),
        );
        tasks.spawn(heartbeat, start.span.clone());
        presence
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

    /// Writes one heartbeat.
    async fn beat(&self) -> Result<(), BackendError> {
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

    /// Heartbeats every `interval` until `cancel`, and at once whenever
    /// `wake` is notified (the subscriber does so on every (re)connect, so a
    /// node reappears in the view as soon as Redis is back).
    async fn run(
        self: Arc<Self>,
        interval: Duration,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        let mut every = Every::new(interval, cancel);
        let mut streak = Streak::default();
        while let Some(woken) = every.next(Some(&wake)).await {
            if let Woken::Notified = woken {
                // A (re)connect: a Redis that restarted without
                // persistence also forgot the Function.
                self.load_function().await;
            }
            match self.beat().await {
                Ok(()) => {
                    if streak.worked() {
                        tracing::info!("presence heartbeats are written again");
                    }
                }
                Err(error) => {
                    if streak.failed() {
                        tracing::warn!(%error, "cannot write the presence heartbeat");
                    } else {
                        tracing::debug!(%error, "presence heartbeat failed again");
                    }
                }
            }
        }
    }
}

impl ClusterView for Presence {
    /// Every live node, sorted by id, this one computed live.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>> {
        Box::pin(async move {
            let mut call = self.read.prepare_invoke();
            call.key(&self.info_key)
                .key(&self.seen_key)
                .arg(self.ttl_ms());
            let flat: Vec<redis::Value> =
                self.pool
                    .run(|mut conn| async move {
                        call.invoke_async(&mut conn).await.map_err(command_error)
                    })
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
                    // A future format, or someone else's field: skip it
                    // rather than fail the whole view.
                    Err(error) => {
                        tracing::debug!(%node_id, %error, "ignored an unreadable presence entry")
                    }
                }
            }
            nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            Ok(nodes)
        })
    }

    /// Removes this node's entry (clean shutdown).
    fn withdraw(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(&self.info_key, &self.context.node_id)
            .zrem(&self.seen_key, &self.context.node_id);
        Box::pin(self.pool.run(|mut conn| async move {
            pipe.query_async::<redis::Value>(&mut conn)
                .await
                .map(drop)
                .map_err(command_error)
        }))
    }
}
