//! The Lua scripts of per-group presence (`group_presence.rs`), and the
//! keys they touch.
//!
//! One group's keys share the hash tag of its channel (`{group:<g>}`, as
//! its history stream does), so every script touches one slot of a Redis
//! Cluster, the slot the group's sharded channel is in:
//!
//! ```text
//! groupcast:presence:{group:<g>}:members  hash        session id → member JSON
//! groupcast:presence:{group:<g>}:ids      sorted set  session id, score 0 (paging by id)
//! groupcast:presence:{group:<g>}:users    hash        sub → its sessions in the group
//! groupcast:presence:{group:<g>}:nodes    sorted set  node → when its members expire (ms)
//! groupcast:presence:{group:<g>}:bynode   sorted set  "<node>\n<id>\n<sub>", score 0
//! groupcast:presence:{group:<g>}:leaving  sorted set  "g" or "u\n<sub>" → when the leave is final (ms)
//! groupcast:presence:{group:<g>}:seq      string      the position of the group's last transitions
//! ```
//!
//! `bynode` finds one node's members by a lexicographic range
//! (`[<node>\n` .. `(<node>\v`) without reading the others: what pruning a
//! dead node and withdrawing a live one need. Every script starts by
//! pruning the nodes whose expiry passed (Redis's clock), inside the
//! script, so a dead node's members are removed once, by whichever script
//! runs first after its expiry, and never shown after it.
//!
//! **Transitions.** Every script reports what it changed for the whole
//! group, so each transition is seen by exactly one script call (scripts
//! are atomic): the group's first member (`o`, occupied), a user's first
//! connection (`uj\n<sub>`), each connection joined
//! (`sj\n<id>\n<node>\n<sub>`) and left (`sl\n<id>\n<node>\n<sub>`),
//! a user's last connection gone (`ul\n<sub>`) and the group's last
//! member gone (`v`, vacated).
//!
//! **The grace.** Leaves wait out the grace (the first argument of every
//! script, in ms, which the prelude takes off `ARGV`) for a comeback:
//!
//! * a connection that closes stays a member, marked `s\n<id>` in
//!   `leaving`, due at `now + grace`. The same session id admitted again
//!   within it — a client that reconnects with its session, on any node —
//!   deletes the marker and is reported as nothing (its node is updated:
//!   the member moved). When the marker is due, the member goes, and its
//!   leave, its user's last leave and the group's vacancy are reported at
//!   once (the grace is over);
//! * a cleanly stopped node's members (`WITHDRAW`) close the same way;
//! * a dead node's members go when its entry in `nodes` expires (the
//!   TTL: its clients had that long to come back elsewhere with their
//!   sessions, which moves them to their new node), each reported left at
//!   once; their user's last leave and the group's vacancy, and those of
//!   a node's full rewrite, leave markers `u\n<sub>` and `g`: a script
//!   that brings the user (or any member) back within the grace deletes
//!   the marker and reports nothing.
//!
//! The first script that runs after a marker is due (the `CONFIRM` the
//! node that made it schedules, or any other) reports it and deletes it.
//! A member is owned by the node in its `bynode` entry: a node's leave of
//! a member another node has taken over (a resume elsewhere) changes
//! nothing. A full rewrite drops a node's members and adds them again in
//! one call: the session that comes back in the same call is reported
//! neither left nor joined.
//!
//! **Positions.** A call that reports transitions gives them the next
//! position of the group (`seq`: above the last one and at least Redis's
//! clock in microseconds, so that it keeps growing even when the key
//! expired or Redis restarted); every call answers the group's current
//! position (Redis's clock when the key is gone: it expires a minute
//! after the group's last transition, and goes at once with the group's
//! last member). A snapshot read with the members at position `s` holds every
//! transition up to `s` and none after: a client shown the snapshot is
//! sent exactly the join/leave frames above `s` (see `presence/snapshot.rs`).
//!
//! Every script answers `{payload, transitions, wait, seq}`: `wait` is the
//! grace when the call left a marker (the caller confirms after it), else
//! `-1`; `seq` the group's position after the call.

use crate::backend::transition::PresenceChange;
use crate::session_id::SessionId;

/// Where every presence key starts.
pub(crate) const PRESENCE_PREFIX: &str = "groupcast:presence:";

/// The keys of `channel`'s group, in the order the scripts take them.
pub(crate) fn keys_of(channel: &str) -> [String; 7] {
    [
        "members", "ids", "users", "nodes", "bynode", "leaving", "seq",
    ]
    .map(|name| format!("{PRESENCE_PREFIX}{{{channel}}}:{name}"))
}

/// What every script starts with: `now`, and the functions that take
/// members in and out, remove a node's members (`drop_node`) and every
/// expired node (`prune`), and answer (`finish`).
const PRELUDE: &str = r"
local members, ids, users, nodes, bynode, leaving, seqkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local grace = tonumber(table.remove(ARGV, 1))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, gone, gone_order, marked = {}, {}, {}, false
local users_gone, vacate_now = {}, false
local function mark(what)
  redis.call('ZADD', leaving, 'NX', now + grace, what)
  if redis.call('PTTL', leaving) < grace + 60000 then
    redis.call('PEXPIRE', leaving, grace + 60000)
  end
  marked = true
end
local function owner_of(id)
  local json = redis.call('HGET', members, id)
  if not json then
    return nil, nil
  end
  local m = cjson.decode(json)
  local n, sub = m['node'], m['sub']
  if type(n) ~= 'string' then n = '' end
  if type(sub) ~= 'string' then sub = '' end
  return n, sub
end
local function release(sub, final)
  if sub ~= '' and redis.call('HINCRBY', users, sub, -1) <= 0 then
    redis.call('HDEL', users, sub)
    if final then
      users_gone[#users_gone + 1] = sub
    else
      mark('u\n' .. sub)
    end
  end
end
local function removed(id, sub, n, final)
  if gone[id] == nil then
    gone_order[#gone_order + 1] = id
  end
  gone[id] = n .. '\n' .. sub
  release(sub, final)
  if redis.call('HLEN', members) == 0 then
    if final then
      vacate_now = true
    else
      mark('g')
    end
  end
end
local function take_out(id, n, sub, final)
  redis.call('HDEL', members, id)
  redis.call('ZREM', ids, id)
  redis.call('ZREM', bynode, n .. '\n' .. id .. '\n' .. sub)
  redis.call('ZREM', leaving, 's\n' .. id)
  removed(id, sub, n, final)
end
local function admitted(id, sub, n)
  if redis.call('HLEN', members) == 1 then
    if vacate_now then
      vacate_now = false -- emptied and back within this call: neither
    elseif redis.call('ZREM', leaving, 'g') == 0 then
      out[#out + 1] = 'o'
    end
  end
  if sub ~= '' and redis.call('HINCRBY', users, sub, 1) == 1
      and redis.call('ZREM', leaving, 'u\n' .. sub) == 0 then
    out[#out + 1] = 'uj\n' .. sub
  end
  if gone[id] then
    gone[id] = false
  else
    out[#out + 1] = 'sj\n' .. id .. '\n' .. n .. '\n' .. sub
  end
end
local function drop_node(n)
  local lo, hi = '[' .. n .. '\n', '(' .. n .. '\v'
  local entries = redis.call('ZRANGEBYLEX', bynode, lo, hi)
  local skip = #n + 2
  for _, e in ipairs(entries) do
    local cut = string.find(e, '\n', skip, true)
    if cut then
      local id = string.sub(e, skip, cut - 1)
      redis.call('HDEL', members, id)
      redis.call('ZREM', ids, id)
      redis.call('ZREM', leaving, 's\n' .. id)
      removed(id, string.sub(e, cut + 1), n, false)
    end
  end
  if #entries > 0 then
    redis.call('ZREMRANGEBYLEX', bynode, lo, hi)
  end
  redis.call('ZREM', nodes, n)
end
local function prune()
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. now)) do
    drop_node(n)
  end
end
local function settle()
  for _, what in ipairs(redis.call('ZRANGEBYSCORE', leaving, '-inf', now)) do
    if string.sub(what, 1, 2) == 's\n' then
      local id = string.sub(what, 3)
      local n, sub = owner_of(id)
      if n then
        take_out(id, n, sub, true)
      else
        redis.call('ZREM', leaving, what)
      end
    end
  end
end
local function finish(payload)
  settle()
  for _, id in ipairs(gone_order) do
    if gone[id] then
      out[#out + 1] = 'sl\n' .. id .. '\n' .. gone[id]
    end
  end
  for _, sub in ipairs(users_gone) do
    if redis.call('HEXISTS', users, sub) == 0 then
      out[#out + 1] = 'ul\n' .. sub
    end
  end
  local vacated = vacate_now and redis.call('HLEN', members) == 0
  for _, what in ipairs(redis.call('ZRANGEBYSCORE', leaving, '-inf', now)) do
    if what == 'g' then
      vacated = true
    elseif string.sub(what, 1, 2) == 'u\n' then
      out[#out + 1] = 'ul\n' .. string.sub(what, 3)
    end
  end
  redis.call('ZREMRANGEBYSCORE', leaving, '-inf', now)
  if vacated then
    out[#out + 1] = 'v'
  end
  local wait = -1
  if marked and redis.call('ZCARD', leaving) > 0 then
    wait = grace
  end
  -- Without a key (gone with a quiet or empty group) every transition so
  -- far was before now: now is the group's position.
  local stored = redis.call('GET', seqkey)
  local seq = now_us
  if stored then
    seq = tonumber(stored)
  end
  if #out > 0 then
    seq = math.max(seq + 1, now_us)
    if redis.call('HLEN', members) == 0 and redis.call('ZCARD', leaving) == 0 then
      -- Nobody left and nothing pending: no key stays behind (the clock
      -- keeps the next position above this one).
      redis.call('DEL', seqkey)
    else
      redis.call('SET', seqkey, string.format('%d', seq), 'PX', grace + 60000)
    end
  end
  return {payload, out, wait, seq}
end
";

/// A node's batch for one group. `ARGV = [grace, node, ttl_ms, full, n_adds,
/// (id, sub, json) × n_adds, removed id...]`. `full = 1`: the node's
/// members are written whole (its earlier entries are dropped first);
/// otherwise the batch is changes (`full = 2`: a change batch between
/// heartbeats, which leaves the keys' expiry to the heartbeat's `0`),
/// and is refused with `-1` when the
/// node's entry is gone (expired, pruned, or Redis lost it), so that the
/// node writes the group whole instead. Returns the node's members of the
/// group after the batch; at `0` the node's entry is removed, else its
/// expiry is pushed to `now + ttl`.
const WRITE: &str = r"
prune()
local node, ttl = ARGV[1], tonumber(ARGV[2])
if ARGV[3] == '1' then
  drop_node(node)
elseif not redis.call('ZSCORE', nodes, node) then
  return finish(-1)
end
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local id, sub, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local was, was_sub = owner_of(id)
  if not was then
    redis.call('HSET', members, id, json)
    redis.call('ZADD', ids, 0, id)
    redis.call('ZADD', bynode, 0, node .. '\n' .. id .. '\n' .. sub)
    admitted(id, sub, node)
  else
    -- The session again (it reconnected with its id, here or on another
    -- node): within the grace, or before its old node's leave was
    -- written, it never left.
    redis.call('ZREM', leaving, 's\n' .. id)
    redis.call('HSET', members, id, json)
    if was ~= node or was_sub ~= sub then
      redis.call('ZREM', bynode, was .. '\n' .. id .. '\n' .. was_sub)
      redis.call('ZADD', bynode, 0, node .. '\n' .. id .. '\n' .. sub)
    end
    if was_sub ~= sub then
      -- Another user under the same id: the old one left, the new one came.
      out[#out + 1] = 'sl\n' .. id .. '\n' .. was .. '\n' .. was_sub
      release(was_sub, false)
      if sub ~= '' and redis.call('HINCRBY', users, sub, 1) == 1
          and redis.call('ZREM', leaving, 'u\n' .. sub) == 0 then
        out[#out + 1] = 'uj\n' .. sub
      end
      out[#out + 1] = 'sj\n' .. id .. '\n' .. node .. '\n' .. sub
    end
  end
end
for j = i, #ARGV do
  local id = ARGV[j]
  local was, sub = owner_of(id)
  -- Only this node's: one another node took over is not this node's to end.
  if was == node then
    if grace > 0 then
      mark('s\n' .. id)
    else
      take_out(id, node, sub, false)
    end
  end
end
local mine = redis.call('ZLEXCOUNT', bynode, '[' .. node .. '\n', '(' .. node .. '\v')
if mine == 0 then
  redis.call('ZREM', nodes, node)
else
  redis.call('ZADD', nodes, now + ttl, node)
end
if ARGV[3] ~= '2' then
  for k = 1, 5 do
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
return finish(mine)";

/// A page: `ARGV = [grace, after id or '', limit]`. Returns `[members, users,
/// (id, json) × up to limit + 1]` (one more than asked: whether a next
/// page exists).
const PAGE: &str = r"
prune()
local from = '-'
if ARGV[1] ~= '' then
  from = '(' .. ARGV[1]
end
local page = redis.call('ZRANGEBYLEX', ids, from, '+', 'LIMIT', 0, tonumber(ARGV[2]) + 1)
local page_out = {redis.call('HLEN', members), redis.call('HLEN', users)}
if #page > 0 then
  local found = redis.call('HMGET', members, unpack(page))
  for k = 1, #page do
    if found[k] then
      page_out[#page_out + 1] = page[k]
      page_out[#page_out + 1] = found[k]
    end
  end
end
return finish(page_out)";

/// The counts: `[members, users]`.
const STATS: &str = r"
prune()
return finish({redis.call('HLEN', members), redis.call('HLEN', users)})";

/// The users: `[sub, count, ...]`.
const USERS: &str = r"
prune()
return finish(redis.call('HGETALL', users))";

/// A clean shutdown of the node `ARGV = [grace, node]`: each of its
/// members leaves as a closed connection does (after the grace, unless it
/// reconnects with its session elsewhere first), and the node's entry
/// lives until then.
const WITHDRAW: &str = r"
local node = ARGV[1]
if grace > 0 then
  for _, e in ipairs(redis.call('ZRANGEBYLEX', bynode, '[' .. node .. '\n', '(' .. node .. '\v')) do
    local cut = string.find(e, '\n', #node + 2, true)
    if cut then
      mark('s\n' .. string.sub(e, #node + 2, cut - 1))
    end
  end
  local at = redis.call('ZSCORE', nodes, node)
  if at and tonumber(at) < now + grace + 1000 then
    redis.call('ZADD', nodes, now + grace + 1000, node)
  end
else
  drop_node(node)
end
return finish(0)";

/// Reports the leaves whose grace is over (and prunes, as every script).
const CONFIRM: &str = r"
prune()
return finish(0)";

/// One transition as a script reports it (see the module docs); `None` for
/// a word this version does not know.
pub(crate) fn transition_of(word: &str) -> Option<PresenceChange> {
    let (kind, rest) = word.split_once('\n').unwrap_or((word, ""));
    let session = || {
        let mut parts = rest.splitn(3, '\n');
        let (id, node, sub) = (parts.next()?, parts.next()?, parts.next()?);
        let sub = (!sub.is_empty()).then(|| sub.to_string());
        Some((SessionId::from(id), node.to_string(), sub))
    };
    match kind {
        "o" if rest.is_empty() => Some(PresenceChange::Occupied),
        "v" if rest.is_empty() => Some(PresenceChange::Vacated),
        "uj" => Some(PresenceChange::UserJoined(rest.to_string())),
        "ul" => Some(PresenceChange::UserLeft(rest.to_string())),
        "sj" => session().map(|(id, node, sub)| PresenceChange::SessionJoined { id, node, sub }),
        "sl" => session().map(|(id, node, sub)| PresenceChange::SessionLeft { id, node, sub }),
        _ => None,
    }
}

/// The scripts, each with the prelude in front.
pub(crate) struct Scripts {
    pub(crate) write: redis::Script,
    pub(crate) page: redis::Script,
    pub(crate) stats: redis::Script,
    pub(crate) users: redis::Script,
    pub(crate) withdraw: redis::Script,
    pub(crate) confirm: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            write: script(WRITE),
            page: script(PAGE),
            stats: script(STATS),
            users: script(USERS),
            withdraw: script(WITHDRAW),
            confirm: script(CONFIRM),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_groups_keys_share_its_channels_hash_tag() {
        let keys = keys_of("group:chat");
        for key in &keys {
            assert!(key.starts_with("groupcast:presence:{group:chat}:"), "{key}");
        }
        assert_eq!(keys[0], "groupcast:presence:{group:chat}:members");
        assert_eq!(keys[6], "groupcast:presence:{group:chat}:seq");
    }

    #[test]
    fn transitions_are_read_from_the_scripts_words() {
        assert_eq!(transition_of("o"), Some(PresenceChange::Occupied));
        assert_eq!(transition_of("v"), Some(PresenceChange::Vacated));
        assert_eq!(
            transition_of("ul\nalice"),
            Some(PresenceChange::UserLeft("alice".into()))
        );
        assert_eq!(
            transition_of("sj\nabc\nnode-a\n"),
            Some(PresenceChange::SessionJoined {
                id: SessionId::from("abc"),
                node: "node-a".into(),
                sub: None
            })
        );
        assert_eq!(
            transition_of("sl\nabc\nnode-b\nbob"),
            Some(PresenceChange::SessionLeft {
                id: SessionId::from("abc"),
                node: "node-b".into(),
                sub: Some("bob".into())
            })
        );
        assert_eq!(transition_of("sl\nabc"), None);
        assert_eq!(transition_of("zz"), None);
    }
}
