//! History on Redis: a stream per group, appended and published by one
//! script.
//!
//! Per group (channel `group:<g>`), two keys in the channel's slot (the
//! braces are a Redis Cluster hash tag):
//!
//! ```text
//! groupcast:history:{group:<g>}         stream: entry id 0-<offset>, field d = payload
//! groupcast:history-epoch:{group:<g>}   string: the epoch
//! ```
//!
//! The append ([`APPEND_FN`]) runs atomically: it starts a new epoch when the epoch key or the
//! stream is gone (Redis restarted without persistence, the history
//! expired, someone deleted it), takes the next offset, `XADD`s, trims
//! (below), renews both TTLs (so the TTL measures inactivity) and
//! `PUBLISH`es the payload behind a small header carrying offset and epoch:
//!
//! ```text
//! 0xC1 'G' 'H' <offset in decimal> ':' <epoch> ':' <payload>
//! ```
//!
//! `0xC1` never starts valid MessagePack or UTF-8, so the header cannot be
//! mistaken for a raw payload; the subscriber strips it
//! ([`split_positioned`]) and hands the payload on with its position.
//! Because the append and the publish are one script, no member sees a
//! message history lacks, or the reverse, and Redis runs scripts one at a
//! time, so every subscriber sees the offsets in order.
//!
//! The append costs Redis four calls: `GETEX meta PX <ttl>` (reads the
//! epoch and renews its TTL in one), `XADD`, `PEXPIRE stream`, `PUBLISH`;
//! every `min(16, size)`th offset adds an `XTRIM`, a new epoch a
//! `SET meta <epoch> PX <ttl>`.
//!
//! **Exact history, trimmed in steps.** A group keeps exactly its last
//! `size` messages: every read is bounded to the offsets above
//! `top - size` ([`READ`]), so `?history=N`, a resume and the API see
//! exactly what an exactly trimmed stream would hold, and an offset at or
//! below `top - size` is not recovered. The stream itself is trimmed
//! exactly to `size`, but only when the new offset is a multiple of
//! `min(16, size)`, so it holds at most 15 entries (and never more than
//! `size`) beyond what is read. The reason is Redis's cost: an exact
//! `MAXLEN` on every `XADD` marks one entry deleted in the stream's oldest
//! node and walks there over every entry deleted before it (twice: the
//! trim, then the new first id), about a third of all the instructions of
//! the append on Redis 7.0 with the default 100 entries per node. One
//! `XTRIM` of 16 entries walks once for all of them (`BENCHMARKS.md`,
//! "Exact history, trimmed in steps").
//!
//! **Upgrading from the meta hash.** Nodes before the epoch key kept the
//! epoch in a hash `groupcast:history-meta:{group:<g>}` (field `e`), a name
//! the string cannot reuse (`GETEX` on a hash is `WRONGTYPE`, and older
//! nodes still running in a rolling upgrade `HGET` it). When the epoch key
//! is missing but the stream goes on, the append and the reads take the
//! epoch from that hash, and the append copies it
//! into the epoch key; an append that starts an epoch writes it into the
//! hash too. So a rolling upgrade keeps every group's epoch, and old and
//! new nodes publish under the same one, also for groups whose epoch starts
//! during the upgrade. Once every node is upgraded nothing renews the hash:
//! it expires with the group's TTL. Both happen only on the rare path (no
//! epoch key, or a new epoch), so they cost the append nothing; a later
//! version can drop them.

use std::sync::Arc;

use bytes::Bytes;

use super::errors::command_error;
use super::pool::RedisPool;
use crate::backend::channels::ChannelNames;
use crate::backend::error::BackendError;
use crate::backend::history::{HistoryEntry, HistoryPage, HistoryQuery, MAX_PAGE};
use crate::backend::inbound::Position;
use crate::group::GroupName;
use crate::history::{HistoryLimits, HistoryPolicy};

/// The append-and-publish step, as a Lua function shared by the script
/// the nodes run ([`append_script_source`]) and the Redis Function that lets others
/// publish with history (`function.rs`). Returns `{offset, epoch}`. A new
/// epoch is made from Redis's `TIME` (seconds and microseconds in hex),
/// only when one starts: a group's epochs differ because Redis runs one
/// script at a time and its clock moves on.
pub(crate) const APPEND_FN: &str = r"
local function append(stream, meta, channel, payload, size, ttl_ms, publish)
  -- One call reads the epoch and renews its TTL.
  local epoch = redis.call('GETEX', meta, 'PX', ttl_ms)
  local id = redis.call('XADD', stream, '0-*', 'd', payload)
  local offset = string.sub(id, 3)
  local n = tonumber(offset)
  -- Exactly `size` left after every min(16, size)th offset; reads see
  -- only the last `size` (see the module docs).
  local every = tonumber(size)
  if every > 16 then every = 16 end
  if n % every == 0 then
    redis.call('XTRIM', stream, 'MAXLEN', size)
  end
  -- No epoch (the first publish, or the history expired), or a stream that
  -- starts over under a known epoch (it was deleted): a new epoch.
  if (not epoch) or id == '0-1' then
    -- The meta hash of nodes of an earlier version (a rolling upgrade).
    local legacy = 'groupcast:history-meta:' .. string.sub(meta, 25)
    epoch = false
    if id ~= '0-1' then
      -- A stream that goes on without an epoch key: its epoch may be there.
      epoch = redis.call('HGET', legacy, 'e')
    end
    if not epoch then
      local t = redis.call('TIME')
      epoch = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
      -- Told to the hash too, so that nodes of the earlier version still
      -- running publish under the same epoch (they renew its TTL).
      redis.call('HSET', legacy, 'e', epoch)
      redis.call('PEXPIRE', legacy, ttl_ms)
    end
    redis.call('SET', meta, epoch, 'PX', ttl_ms)
  end
  redis.call('PEXPIRE', stream, ttl_ms)
  redis.call(publish, channel, '\193GH' .. offset .. ':' .. epoch .. ':' .. payload)
  return {n, epoch}
end
";

/// `KEYS = [stream, meta]`, `ARGV = [channel, payload, size, ttl_ms]`;
/// returns `{offset, epoch}`. `publish` (`PUBLISH`, or `SPUBLISH` on a
/// cluster) is written into the script: every argument costs Redis a
/// little on every call.
pub(crate) fn append_script_source(publish: &str) -> String {
    format!(
        "{APPEND_FN}\nreturn append(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], '{publish}')"
    )
}

/// `KEYS = [stream, meta]`, `ARGV = [size, 'last', n]` or `[size,
/// 'after', offset, limit]`; returns `{epoch or nil, top, entries}`,
/// entries oldest first for 'after' and newest first for 'last'. Only the
/// offsets above `top - size` are read: the stream may hold up to 15
/// more (module docs). `size` 0: no bound.
const READ: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  -- As the append does: the meta hash of a node of an earlier version.
  epoch = redis.call('HGET', 'groupcast:history-meta:' .. string.sub(KEYS[2], 25), 'e')
end
if not epoch then return {false, 0, {}} end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local top = 0
if newest[1] then top = tonumber(string.sub(newest[1][1], 3)) end
local size = tonumber(ARGV[1])
local entries
if ARGV[2] == 'after' then
  local after = ARGV[3]
  if size > 0 and tonumber(after) < top - size then
    after = string.format('%d', top - size)
  end
  entries = redis.call('XRANGE', KEYS[1], '(0-' .. after, '+', 'COUNT', ARGV[4])
else
  local n = tonumber(ARGV[3])
  if size > 0 and n > size then n = size end
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', n)
end
return {epoch, top, entries}";

/// The history keys and scripts of one backend.
pub(crate) struct RedisHistory {
    pool: RedisPool,
    /// Each group's size, which bounds the reads (module docs).
    policy: HistoryPolicy,
    names: ChannelNames,
    append: redis::Script,
    append_source: String,
    read: redis::Script,
}

impl RedisHistory {
    pub(crate) fn new(
        pool: RedisPool,
        names: ChannelNames,
        policy: HistoryPolicy,
        // `PUBLISH`, or `SPUBLISH` on a Redis Cluster.
        publish: &'static str,
    ) -> Self {
        let append_source = append_script_source(publish);
        RedisHistory {
            pool,
            policy,
            names,
            append: redis::Script::new(&append_source),
            append_source,
            read: redis::Script::new(READ),
        }
    }

    /// `(stream, meta)` of `group`, in its channel's slot.
    fn keys(&self, group: &GroupName) -> (String, String) {
        keys_of(&self.names.group(group))
    }

    /// The script, for a pipeline to load before it invokes it.
    pub(crate) fn append_script(&self) -> &redis::Script {
        &self.append
    }

    /// Adds one append-and-publish to `pipe` (not ignored: its reply is
    /// the position).
    /// `inline`: as `EVAL` with the script's text (on a cluster, where
    /// the pipeline cannot carry a `SCRIPT LOAD`), else as `EVALSHA`.
    pub(crate) fn add_append(
        &self,
        pipe: &mut redis::Pipeline,
        group: &GroupName,
        limits: HistoryLimits,
        payload: &[u8],
        inline: bool,
    ) {
        let (stream, meta) = self.keys(group);
        let ttl_ms = u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX);
        let channel = self.names.group(group);
        if inline {
            pipe.cmd("EVAL")
                .arg(&self.append_source)
                .arg(2)
                .arg(stream)
                .arg(meta)
                .arg(channel)
                .arg(payload)
                .arg(limits.size)
                .arg(ttl_ms);
            return;
        }
        let mut call = self.append.prepare_invoke();
        call.key(stream)
            .key(meta)
            .arg(channel)
            .arg(payload)
            .arg(limits.size)
            .arg(ttl_ms);
        pipe.invoke_script(&call);
    }

    /// Reads a page.
    pub(crate) async fn read(
        &self,
        group: &GroupName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BackendError> {
        let (stream, meta) = self.keys(group);
        let size = self.policy.for_group(group).map_or(0, |limits| limits.size);
        let mut call = self.read.prepare_invoke();
        call.key(stream).key(meta).arg(size);
        match query {
            HistoryQuery::Last(n) => call.arg("last").arg(n.min(MAX_PAGE)),
            HistoryQuery::After { offset, limit } => {
                call.arg("after").arg(offset).arg(limit.clamp(1, MAX_PAGE))
            }
        };
        let (epoch, top, entries): (Option<String>, u64, Vec<redis::Value>) = self
            .pool
            .run(
                |mut conn| async move { call.invoke_async(&mut conn).await.map_err(command_error) },
            )
            .await?;
        let mut entries: Vec<HistoryEntry> = entries.into_iter().filter_map(entry).collect();
        if matches!(query, HistoryQuery::Last(_)) {
            entries.reverse();
        }
        Ok(HistoryPage {
            epoch: epoch.map(Arc::from),
            top,
            entries,
        })
    }
}

/// `(stream, meta)` of the group whose channel is `channel`: the braces
/// are a Redis Cluster hash tag, so both live in the channel's slot.
pub(crate) fn keys_of(channel: &str) -> (String, String) {
    (
        format!("{STREAM_PREFIX}{{{channel}}}"),
        format!("{META_PREFIX}{{{channel}}}"),
    )
}

/// Key prefixes of the streams and their epoch keys.
pub(crate) const STREAM_PREFIX: &str = "groupcast:history:";
pub(crate) const META_PREFIX: &str = "groupcast:history-epoch:";
// The meta hash (field `e`: the epoch) of nodes before the epoch key,
// `groupcast:history-meta:{channel}`, is read only when the epoch key is
// missing; its name is written into the scripts, where
// `string.sub(meta, 25)` is the `{channel}` after META_PREFIX (a test checks
// both).

/// One stream entry, `[id, [field, value, ...]]`, as a history entry.
fn entry(value: redis::Value) -> Option<HistoryEntry> {
    let (id, fields): (String, Vec<Vec<u8>>) = redis::from_redis_value(value).ok()?;
    let offset = id.split_once('-')?.1.parse().ok()?;
    let payload = fields.into_iter().nth(1)?;
    Some(HistoryEntry {
        offset,
        payload: Bytes::from(payload),
    })
}

/// The script's reply, `{offset, epoch}`, as a position.
pub(crate) fn position_of(value: redis::Value) -> Result<Position, BackendError> {
    let (offset, epoch): (u64, String) = redis::from_redis_value(value)
        .map_err(|e| BackendError::Command(format!("unexpected history reply: {e}")))?;
    Ok(Position {
        offset,
        epoch: Arc::from(epoch),
    })
}

/// Splits a positioned publish (`0xC1 'G' 'H' offset ':' epoch ':'
/// payload`) into its position and payload. `None` for anything else.
/// `epochs` remembers the last epoch seen, so that a stream of messages of
/// one epoch shares one allocation.
pub(crate) fn split_positioned<'a>(
    bytes: &'a [u8],
    epochs: &mut Option<Arc<str>>,
) -> Option<(Position, &'a [u8])> {
    let rest = bytes.strip_prefix(b"\xC1GH")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let offset: u64 = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let rest = &rest[colon + 1..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let epoch = std::str::from_utf8(&rest[..colon]).ok()?;
    let epoch = match epochs {
        Some(known) if &**known == epoch => known.clone(),
        _ => {
            let fresh: Arc<str> = Arc::from(epoch);
            *epochs = Some(fresh.clone());
            fresh
        }
    };
    Some((Position { offset, epoch }, &rest[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_find_the_legacy_meta_by_the_prefixes() {
        const LEGACY_META_PREFIX: &str = "groupcast:history-meta:";
        let legacy = format!("'{LEGACY_META_PREFIX}' .. string.sub(");
        assert!(APPEND_FN.contains(&legacy), "{APPEND_FN}");
        assert!(READ.contains(&legacy), "{READ}");
        assert_eq!(META_PREFIX.len(), 24);
        let cut = format!(", {})", META_PREFIX.len() + 1);
        assert!(APPEND_FN.contains(&format!("string.sub(meta{cut}")));
        assert!(READ.contains(&format!("string.sub(KEYS[2]{cut}")));
        let (stream, meta) = keys_of("group:a");
        assert_eq!(stream, "groupcast:history:{group:a}");
        assert_eq!(&meta[META_PREFIX.len()..], "{group:a}");
    }

    #[test]
    fn positioned_publishes_split_into_position_and_payload() {
        let mut epochs = None;
        let (position, payload) =
            split_positioned(b"\xC1GH42:abc:hello:world", &mut epochs).unwrap();
        assert_eq!(position.offset, 42);
        assert_eq!(&*position.epoch, "abc");
        assert_eq!(payload, b"hello:world");
        let (again, _) = split_positioned(b"\xC1GH43:abc:x", &mut epochs).unwrap();
        assert!(
            Arc::ptr_eq(&again.epoch, &position.epoch),
            "one epoch, one allocation"
        );
        for bad in [&b"hello"[..], b"\xC1GC1", b"\xC1GHx:e:p", b"\xC1GH1:e"] {
            assert!(split_positioned(bad, &mut epochs).is_none(), "{bad:?}");
        }
    }
}
