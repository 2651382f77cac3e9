//! `FCALL groupcast_publish 1 <group> <payload>`: publishing with history
//! from outside groupcast.
//!
//! A plain `redis-cli PUBLISH group:<g> hello` stays live-only: it reaches
//! the members connected now and is not kept. Whoever wants a message kept
//! (a task runner writing log lines, say) calls the Redis Function every
//! node loads at start and after every reconnect:
//!
//! ```text
//! redis-cli FCALL groupcast_publish 1 task/42 "line 17"
//! ```
//!
//! It finds the group's limits by the nodes' own `--history` rules
//! (compiled into Lua patterns here), then runs the very append the nodes
//! run (`history.rs`), so its messages get offsets like any other. A group
//! no rule matches is published live only, and the function returns 0.
//! Every node loads the library with `REPLACE`: nodes are expected to share
//! one history policy, and the last one to (re)connect wins.

use super::errors::command_error;
use super::history::{APPEND_FN, keys_of};
use super::pool::RedisPool;
use crate::backend::channels::ChannelNames;
use crate::backend::error::BackendError;
use crate::history::HistoryPolicy;

/// The function's name, for `FCALL`.
pub const FUNCTION_NAME: &str = "groupcast_publish";

/// The Lua library: the shared append, the rules, and the function.
pub(crate) fn library(policy: &HistoryPolicy, names: &ChannelNames) -> String {
    let mut rules = String::new();
    for rule in policy.rules() {
        let pattern = match rule.pattern() {
            None => "^.+$".to_string(),
            Some(pattern) => lua_pattern(pattern.as_str()),
        };
        let ttl_ms = u64::try_from(rule.limits.ttl.as_millis()).unwrap_or(u64::MAX);
        rules.push_str(&format!(
            "  {{ {pattern}, {size}, {ttl_ms} }},\n",
            pattern = lua_string(&pattern),
            size = rule.limits.size,
        ));
    }
    let (stream_prefix, meta_prefix) = keys_of("");
    format!(
        r#"#!lua name=groupcast
{APPEND_FN}
local rules = {{
{rules}}}
local function limits(group)
  for _, rule in ipairs(rules) do
    if string.match(group, rule[1]) then return rule[2], rule[3] end
  end
  return nil
end
redis.register_function('{FUNCTION_NAME}', function(keys, args)
  local group, payload = keys[1], args[1]
  if not group or not payload then
    return redis.error_reply('usage: FCALL {FUNCTION_NAME} 1 <group> <payload>')
  end
  local channel = {prefix} .. group
  local size, ttl_ms = limits(group)
  if not size then
    redis.call('PUBLISH', channel, payload)
    return 0
  end
  return append({stream} .. '{{' .. channel .. '}}', {meta} .. '{{' .. channel .. '}}',
    channel, payload, size, ttl_ms, 'PUBLISH')
end)
"#,
        prefix = lua_string(names.group_prefix()),
        stream = lua_string(stream_prefix.trim_end_matches("{}")),
        meta = lua_string(meta_prefix.trim_end_matches("{}")),
    )
}

/// A group pattern (`task/*`, `logs/**`) as an anchored Lua pattern: `*`
/// within a segment is `[^/]*`, a `**` segment is one or more segments.
fn lua_pattern(pattern: &str) -> String {
    let mut out = String::from("^");
    for (i, segment) in pattern.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if segment == "**" {
            out.push_str(".+");
            continue;
        }
        for c in segment.chars() {
            match c {
                '*' => out.push_str("[^/]*"),
                c if c.is_ascii_alphanumeric() => out.push(c),
                // Every other character a group may hold is escaped: in a
                // Lua pattern `.` and `-` are magic.
                c => {
                    out.push('%');
                    out.push(c);
                }
            }
        }
    }
    out.push('$');
    out
}

/// A Lua string literal.
fn lua_string(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\'' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The library for `policy`, or `None` when no group keeps history.
pub(crate) fn library_for(policy: &HistoryPolicy, names: &ChannelNames) -> Option<String> {
    (!policy.is_empty()).then(|| library(policy, names))
}

/// Loads (or replaces) the library on the Redis behind `pool`.
pub(crate) async fn load(pool: &RedisPool, library: &str) -> Result<(), BackendError> {
    let mut cmd = redis::cmd("FUNCTION");
    cmd.arg("LOAD").arg("REPLACE").arg(library);
    pool.run(|mut conn| async move {
        cmd.query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(command_error)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_patterns_become_anchored_lua_patterns() {
        assert_eq!(lua_pattern("task/*"), "^task/[^/]*$");
        assert_eq!(lua_pattern("logs/**"), "^logs/.+$");
        assert_eq!(lua_pattern("a.b-c_d"), "^a%.b%-c%_d$");
        assert_eq!(lua_string("it's"), r"'it\'s'");
    }

    #[test]
    fn the_library_names_the_function_and_every_rule() {
        let policy = HistoryPolicy::parse(["task/*=1000:24h", "*=10:1m"]).unwrap();
        let library = library(&policy, &ChannelNames::default());
        assert!(library.starts_with("#!lua name=groupcast\n"));
        assert!(library.contains("register_function('groupcast_publish'"));
        assert!(library.contains("{ '^task/[^/]*$', 1000, 86400000 }"));
        assert!(library.contains("{ '^.+$', 10, 60000 }"));
        assert!(library.contains("'groupcast:history:' .. '{'"));
    }
}
