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
//! ```
//!
//! `bynode` finds one node's members by a lexicographic range
//! (`[<node>\n` .. `(<node>\v`) without reading the others: what pruning a
//! dead node and withdrawing a live one need. Every script starts by
//! pruning the nodes whose expiry passed (Redis's clock), inside the
//! script, so a dead node's members are removed once, by whichever script
//! runs first after its expiry, and never shown after it.

/// Where every presence key starts.
pub(crate) const PRESENCE_PREFIX: &str = "groupcast:presence:";

/// The keys of `channel`'s group, in the order the scripts take them.
pub(crate) fn keys_of(channel: &str) -> [String; 5] {
    ["members", "ids", "users", "nodes", "bynode"]
        .map(|name| format!("{PRESENCE_PREFIX}{{{channel}}}:{name}"))
}

/// What every script starts with: `now`, and the functions that remove a
/// node's members (`drop_node`) and every expired node (`prune`).
const PRELUDE: &str = r"
local members, ids, users, nodes, bynode = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function release(sub)
  if sub ~= '' and redis.call('HINCRBY', users, sub, -1) <= 0 then
    redis.call('HDEL', users, sub)
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
      release(string.sub(e, cut + 1))
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
";

/// A node's batch for one group. `ARGV = [node, ttl_ms, full, n_adds,
/// (id, sub, json) × n_adds, removed id...]`. `full = 1`: the node's
/// members are written whole (its earlier entries are dropped first);
/// otherwise the batch is changes, and is refused with `-1` when the
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
  return -1
end
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local id, sub, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  if redis.call('HSET', members, id, json) == 1 then
    redis.call('ZADD', ids, 0, id)
    redis.call('ZADD', bynode, 0, node .. '\n' .. id .. '\n' .. sub)
    if sub ~= '' then
      redis.call('HINCRBY', users, sub, 1)
    end
  end
end
for j = i, #ARGV do
  local id = ARGV[j]
  local json = redis.call('HGET', members, id)
  if json then
    local sub = cjson.decode(json)['sub']
    if type(sub) ~= 'string' then
      sub = ''
    end
    redis.call('HDEL', members, id)
    redis.call('ZREM', ids, id)
    redis.call('ZREM', bynode, node .. '\n' .. id .. '\n' .. sub)
    release(sub)
  end
end
local mine = redis.call('ZLEXCOUNT', bynode, '[' .. node .. '\n', '(' .. node .. '\v')
if mine == 0 then
  redis.call('ZREM', nodes, node)
else
  redis.call('ZADD', nodes, now + ttl, node)
end
for _, key in ipairs(KEYS) do
  redis.call('PEXPIRE', key, ttl)
end
return mine";

/// A page: `ARGV = [after id or '', limit]`. Returns `[members, users,
/// (id, json) × up to limit + 1]` (one more than asked: whether a next
/// page exists).
const PAGE: &str = r"
prune()
local from = '-'
if ARGV[1] ~= '' then
  from = '(' .. ARGV[1]
end
local page = redis.call('ZRANGEBYLEX', ids, from, '+', 'LIMIT', 0, tonumber(ARGV[2]) + 1)
local out = {redis.call('HLEN', members), redis.call('HLEN', users)}
if #page > 0 then
  local found = redis.call('HMGET', members, unpack(page))
  for k = 1, #page do
    if found[k] then
      out[#out + 1] = page[k]
      out[#out + 1] = found[k]
    end
  end
end
return out";

/// The counts: `[members, users]`.
const STATS: &str = r"
prune()
return {redis.call('HLEN', members), redis.call('HLEN', users)}";

/// The users: `[sub, count, ...]`.
const USERS: &str = r"
prune()
return redis.call('HGETALL', users)";

/// Removes the node `ARGV[1]`'s members (a clean shutdown).
const WITHDRAW: &str = r"
drop_node(ARGV[1])
return 0";

/// The scripts, each with the prelude in front.
pub(crate) struct Scripts {
    pub(crate) write: redis::Script,
    pub(crate) page: redis::Script,
    pub(crate) stats: redis::Script,
    pub(crate) users: redis::Script,
    pub(crate) withdraw: redis::Script,
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
    }
}
