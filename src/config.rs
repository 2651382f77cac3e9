//! The hub's knobs, with melody's names and sane defaults.
//!
//! These defaults are the only ones: the binary fills a [`Config`] from
//! flags and `GROUPCAST_*` environment variables (its `cli.rs`), and takes
//! each flag's default from [`Config::default`] rather than repeating it. A
//! library user builds one in code:
//!
//! ```
//! use std::time::Duration;
//! let config = groupcast::Config {
//!     queue_len: 512,
//!     ..groupcast::Config::default()
//! };
//! assert_eq!(config.pong_wait, Duration::from_secs(60));
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::history::HistoryPolicy;

/// What happens when a session's outbound queue is full.
///
/// Spelled `close` and `drop-oldest` (its [`Display`](fmt::Display),
/// [`FromStr`] and JSON form alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueFullPolicy {
    /// Close the slow client with 1013 ("try again later"). It can
    /// reconnect; everyone else keeps receiving.
    #[default]
    Close,
    /// Drop the oldest queued message to make room for the new one. The
    /// client stays connected and misses messages; each drop is counted.
    DropOldest,
}

impl QueueFullPolicy {
    /// Every policy, in the order a help text lists them.
    pub const ALL: [QueueFullPolicy; 2] = [QueueFullPolicy::Close, QueueFullPolicy::DropOldest];

    /// The policy's name: `close` or `drop-oldest`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueFullPolicy::Close => "close",
            QueueFullPolicy::DropOldest => "drop-oldest",
        }
    }
}

/// What happens to the text and binary messages clients send.
///
/// Spelled `group` and `none` (its [`Display`](fmt::Display), [`FromStr`]
/// and JSON form alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClientMessages {
    /// Forwarded to the sender's own group (melody's chat), unless the
    /// application handles that kind of message itself (`on_text`,
    /// `on_binary`).
    #[default]
    Group,
    /// Ignored unless the application handles them: server push only
    /// (ws-notifier).
    None,
}

impl ClientMessages {
    /// Every setting, in the order a help text lists them.
    pub const ALL: [ClientMessages; 2] = [ClientMessages::Group, ClientMessages::None];

    /// The setting's name: `group` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientMessages::Group => "group",
            ClientMessages::None => "none",
        }
    }
}

/// A setting's name that is none of its accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting} {given:?}: expected one of {}", .accepted.join(", "))]
pub struct ParseSettingError {
    /// Which setting was being parsed, e.g. `queue-full policy`.
    pub setting: &'static str,
    /// What was given.
    pub given: String,
    /// The accepted spellings.
    pub accepted: Vec<&'static str>,
}

/// `FromStr` and `Display` for a setting enum with `ALL` and `as_str`: one
/// list of spellings serves parsing, printing and the error message, so
/// they cannot drift apart.
macro_rules! spelled {
    ($type:ty, $setting:literal) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = ParseSettingError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$type>::ALL
                    .into_iter()
                    .find(|value| value.as_str() == s)
                    .ok_or_else(|| ParseSettingError {
                        setting: $setting,
                        given: s.to_string(),
                        accepted: <$type>::ALL.iter().map(|value| value.as_str()).collect(),
                    })
            }
        }
    };
}

spelled!(QueueFullPolicy, "queue-full policy");
spelled!(ClientMessages, "client-messages setting");

/// Settings of one hub. Every field has a default; see [`Config::default`].
#[derive(Debug, Clone)]
pub struct Config {
    /// How long one write (a batch of frames plus the flush) may take
    /// before the connection is considered dead. melody: `WriteWait`.
    pub write_timeout: Duration,
    /// How long to wait for any frame (normally a pong) from the client
    /// before closing it. melody: `PongWait`.
    pub pong_wait: Duration,
    /// How often to ping each client. Must be shorter than `pong_wait`.
    /// melody: `PingPeriod`.
    pub ping_period: Duration,
    /// The largest message a client may send, in bytes; larger ones close
    /// the connection with 1009. melody: `MaxMessageSize`.
    pub max_message_size: usize,
    /// How many outbound messages may wait for one session.
    /// melody: `MessageBufferSize`.
    pub queue_len: usize,
    /// What to do when a session's queue is full.
    pub queue_full: QueueFullPolicy,
    /// The most bytes read from a client's socket at once (at most 16 KiB).
    /// No read buffer is kept per connection: a read goes to a buffer on
    /// the stack, and only a frame that is not complete yet is kept (see
    /// `wire::reader`). Larger client messages still work: they are read
    /// in several reads.
    pub read_buffer_size: usize,
    /// permessage-deflate (RFC 7692) for the clients that offer it. Off by
    /// default. A broadcast is compressed once, and the same compressed
    /// frame goes to every member that negotiated it; the others get the
    /// plain frame. What clients send compressed is inflated up to
    /// `max_message_size` (beyond: closed with 1009).
    pub compression: bool,
    /// With `compression`, messages shorter than this many bytes go
    /// uncompressed (compressing them gains little or nothing).
    pub compression_threshold: usize,
    /// Most WebSocket connections this node holds (upgrades in flight
    /// included); beyond it an upgrade is refused with HTTP 503
    /// `node_full`. Each connection is a file descriptor: keep this well
    /// under the process's `RLIMIT_NOFILE`. `0`: no limit.
    pub max_connections: usize,
    /// Most connections from one client address; beyond it an upgrade is
    /// refused with HTTP 429. Behind a reverse proxy every client has the
    /// proxy's address: raise this or set it to `0` (no limit) there.
    pub max_connections_per_ip: usize,
    /// Messages (text, binary, ping) one connection may send per second on
    /// average; a client that goes faster than this plus the burst is
    /// closed with 1008 "rate limit exceeded". `0`: no limit.
    pub max_inbound_rate: u32,
    /// How many messages a connection may send at once above the rate
    /// (the token bucket's size).
    pub max_inbound_burst: u32,
    /// Most groups with members on this node; a connection to a new group
    /// beyond it is refused with HTTP 503 `too_many_groups`. Each group is
    /// one Redis subscription. `0`: no limit.
    pub max_groups: usize,
    /// What happens to the text and binary messages clients send when the
    /// application installed no handler for them: with
    /// [`ClientMessages::Group`] (the default) the WebSocket reader forwards
    /// each to the sender's own group; an `on_text` / `on_binary` handler
    /// replaces the forwarding for its kind of message.
    pub client_messages: ClientMessages,
    /// Which groups keep a history of their last messages, and how much
    /// (`--history 'task/*=1000:24h'`). Empty by default: no group does,
    /// and publishing costs what it always did. See [`crate::history`].
    pub history: HistoryPolicy,
    /// Payload bytes this node keeps of its history groups' most recent
    /// messages (the node-local tail: late joins and resumes it covers are
    /// served without a history read). `0`: no tail.
    pub history_cache: usize,
    /// Most groups one `groupcast.v1` connection may hold (its own and
    /// those it subscribes to); a subscribe beyond it is answered with an
    /// error, not a close. `0`: no limit.
    pub max_groups_per_connection: usize,
    /// Groups whose members are tracked cluster-wide (presence: who is in
    /// the group, `GET /api/groups/{group}/members`), as patterns
    /// (`--presence 'chat/*'`). None by default: presence costs a write
    /// per group and heartbeat, so it is asked for per group, as
    /// Centrifugo asks for it per namespace.
    pub presence: crate::auth::GroupPatterns,
    /// The session keys the application marks public: presence
    /// (`hub.presence(group)`, `GET /api/groups/{group}/members`) shows
    /// these keys of each member, cluster-wide, and no others. Empty by
    /// default: members show their id, node, `sub` and connection time.
    pub presence_keys: Vec<String>,
    /// How long a closed connection stays a member waiting for a comeback
    /// before its leave is final, with its user's `user_left` and the
    /// group's `group_vacated` (webhooks and frames): a client that
    /// reconnects with its session id (`?session=`) within it is reported
    /// as nothing. Default 5 s.
    pub presence_grace: Duration,
    /// Groups whose `groupcast.v1` members are sent join and leave frames
    /// (`join`, `leave` per connection, `user_joined`, `user_left` per
    /// user; docs/protocol.md), cluster-wide, once each. Only groups that
    /// also keep presence (`presence`) have them. None by default.
    pub join_leave: crate::auth::GroupPatterns,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            write_timeout: Duration::from_secs(10),
            pong_wait: Duration::from_secs(60),
            ping_period: Duration::from_secs(54),
            max_message_size: 64 * 1024,
            queue_len: 256,
            queue_full: QueueFullPolicy::Close,
            read_buffer_size: 4 * 1024,
            compression: false,
            compression_threshold: 128,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_inbound_rate: 100,
            max_inbound_burst: 200,
            max_groups: 10_000,
            client_messages: ClientMessages::Group,
            history: HistoryPolicy::default(),
            history_cache: 64 * 1024 * 1024,
            max_groups_per_connection: 100,
            presence: crate::auth::GroupPatterns::default(),
            presence_keys: Vec::new(),
            presence_grace: Duration::from_secs(5),
            join_leave: crate::auth::GroupPatterns::default(),
        }
    }
}

/// Why a [`Config`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("ping period ({ping:?}) must be shorter than pong wait ({pong:?})")]
    PingNotBeforePong { ping: Duration, pong: Duration },
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("{name} must be at most {max}")]
    TooLarge { name: &'static str, max: usize },
}

impl Config {
    /// Checks the relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ping_period >= self.pong_wait {
            return Err(ConfigError::PingNotBeforePong {
                ping: self.ping_period,
                pong: self.pong_wait,
            });
        }
        if self.queue_len == 0 {
            return Err(ConfigError::Zero("queue length"));
        }
        if self.max_message_size == 0 {
            return Err(ConfigError::Zero("max message size"));
        }
        if self.write_timeout.is_zero() {
            return Err(ConfigError::Zero("write timeout"));
        }
        if self.ping_period.is_zero() {
            return Err(ConfigError::Zero("ping period"));
        }
        if self.read_buffer_size == 0 {
            return Err(ConfigError::Zero("read buffer size"));
        }
        if self.read_buffer_size > crate::wire::MAX_READ_CHUNK {
            return Err(ConfigError::TooLarge {
                name: "read buffer size",
                max: crate::wire::MAX_READ_CHUNK,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_what_they_print() {
        for policy in QueueFullPolicy::ALL {
            assert_eq!(policy.to_string().parse::<QueueFullPolicy>(), Ok(policy));
        }
        for setting in ClientMessages::ALL {
            assert_eq!(setting.to_string().parse::<ClientMessages>(), Ok(setting));
        }
        assert_eq!("drop-oldest".parse(), Ok(QueueFullPolicy::DropOldest));
        assert_eq!("none".parse(), Ok(ClientMessages::None));
    }

    #[test]
    fn a_wrong_spelling_lists_the_accepted_ones() {
        let error = "drop_oldest".parse::<QueueFullPolicy>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid queue-full policy \"drop_oldest\": expected one of close, drop-oldest"
        );
        let error = "Group".parse::<ClientMessages>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid client-messages setting \"Group\": expected one of group, none"
        );
    }

    #[test]
    fn the_serialized_form_is_the_displayed_one() {
        for policy in QueueFullPolicy::ALL {
            assert_eq!(
                serde_json::to_value(policy).unwrap(),
                policy.to_string().as_str()
            );
        }
        for setting in ClientMessages::ALL {
            assert_eq!(
                serde_json::to_value(setting).unwrap(),
                setting.to_string().as_str()
            );
        }
    }
}
