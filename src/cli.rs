//! The binary's command line: every knob is a flag and a `GROUPCAST_*`
//! environment variable (clap derive), turned into the library's types.
//!
//! It lives in the binary, not the library, so that the library does not
//! depend on clap: a library user builds [`Config`] and the other option
//! types in code. For the same reason the library's setting enums
//! ([`QueueFullPolicy`], [`ClientMessages`]) only know `FromStr` and
//! `Display`; [`setting`] turns those into clap value parsers here.
//!
//! Defaults are the library's: a flag that sets a library field takes its
//! default from the library (`Config::default()`, `RedisOptions::new`, …)
//! instead of repeating the value, so `--help` cannot drift from what a
//! library user gets. Only the binary's own settings (listen address,
//! shutdown, logging) have their defaults written here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use groupcast::auth::origin::OriginRule;
use groupcast::auth::{
    ApiKeys, AuthConfigError, ClientAuth, CorsPolicy, GroupPattern, GroupPatterns, KeyRef, KeySet,
    MintRequest, OriginPolicy, TokenVerifier, VerifyOptions,
};
use groupcast::backend::IntoBackend;
use groupcast::backend::cluster::ClusterOptions;
use groupcast::backend::redis::RedisOptions;
use groupcast::backend::sentinel::SentinelOptions;
use groupcast::backend::sharded::ShardedOptions;
use groupcast::group::GroupName;
use groupcast::history::{HistoryPolicy, HistoryRule};
use groupcast::server::{ServeOptions, ServerOptions};
use groupcast::webhooks::{WebhookKind, WebhookOptions};
use groupcast::workers::WorkerOptions;
use groupcast::{ClientMessages, Config, QueueFullPolicy};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `GROUP=PERIOD`; an empty value (`GROUPCAST_TICKERS=`) means no ticker,
/// so a deployment can turn off a demo its compose file or ConfigMap sets.
fn ticker(s: &str) -> Result<Option<(GroupName, Duration)>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    let (group, period) = s
        .split_once('=')
        .ok_or_else(|| format!("expected GROUP=PERIOD, e.g. ticker_ws=2s, got {s:?}"))?;
    let group = GroupName::new(group).map_err(|e| e.to_string())?;
    let period = duration(period)?;
    if period.is_zero() {
        return Err("the ticker period must be greater than zero".into());
    }
    Ok(Some((group, period)))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

/// `--webhook-url`: an absolute `http://` or `https://` URL.
fn webhook_url(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("the scheme must be http or https, not {other}")),
    }
}

/// A count that must be at least one.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration as `--help` shows a default and [`duration`] reads it back
/// (`10s`, `1m`, `100ms`). clap's `string` feature lets a default be an
/// owned `String`, so nothing is leaked for it.
fn shown(value: Duration) -> String {
    humantime::format_duration(value).to_string()
}

/// The library's Redis defaults: [`RedisOptions::new`] needs a URL, which
/// plays no part in them.
fn redis_defaults() -> RedisOptions {
    RedisOptions::new(String::new())
}

/// A value parser for a library setting enum, which knows only `FromStr`
/// and its spellings (`as_str`): clap checks the value against `values`
/// (so `--help` lists them, each with its help line, and a typo gets
/// clap's "possible values" error), then the library's `FromStr` makes
/// the value.
fn setting<T>(
    values: impl IntoIterator<Item = (&'static str, &'static str)>,
) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let values = values
        .into_iter()
        .map(|(name, help)| PossibleValue::new(name).help(help));
    PossibleValuesParser::new(values).try_map(|value: String| value.parse::<T>())
}

/// `--queue-full`'s values, with their help lines (the match makes a new
/// library variant a compile error here until it is described).
fn queue_full_policy() -> impl TypedValueParser<Value = QueueFullPolicy> {
    setting(QueueFullPolicy::ALL.map(|policy| {
        let help = match policy {
            QueueFullPolicy::Close => {
                "Close the slow client with 1013 (\"try again later\"). It can reconnect; \
                 everyone else keeps receiving"
            }
            QueueFullPolicy::DropOldest => {
                "Drop the oldest queued message to make room for the new one. The client \
                 stays connected and misses messages; each drop is counted"
            }
        };
        (policy.as_str(), help)
    }))
}

/// `--client-messages`' values, with their help lines.
fn client_messages() -> impl TypedValueParser<Value = ClientMessages> {
    setting(ClientMessages::ALL.map(|setting| {
        let help = match setting {
            ClientMessages::Group => "Forwarded to the sender's own group (melody's chat)",
            ClientMessages::None => "Ignored: server push only (ws-notifier)",
        };
        (setting.as_str(), help)
    }))
}

/// Shown as a default of `--socket-send-buffer`: the library's `None`
/// (the kernel's own sizing) is spelled 0 on the command line.
fn send_buffer_flag(size: Option<usize>) -> usize {
    size.unwrap_or(0)
}

/// groupcast: a clustered WebSocket group broadcaster.
///
/// Clients connect to ws://HOST/ws/<group>; everything published to the
/// group reaches every member. Without --redis-url the node is standalone;
/// with it, it joins the cluster of nodes using the same Redis.
///
/// Run without a subcommand to serve; `groupcast token --help` mints a
/// development token.
#[derive(Debug, Parser)]
#[command(
    name = "groupcast",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Something other than serving.
    #[command(subcommand)]
    pub command: Option<CliCommand>,

    /// A TOML file of settings: keys are the long flag names
    /// (`max-message-size = 65536`, `history = ["task/*=1000:24h"]`).
    /// Flags and GROUPCAST_* variables override it; `groupcast config
    /// example` prints a complete one, `groupcast config check FILE` checks
    /// one.
    #[arg(long, env = "GROUPCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on.
    // The binary's own default: the library has none (an application binds
    // its listener and hands it to `server::serve`); every interface, so
    // that the server is reachable in a container.
    #[arg(long, env = "GROUPCAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// What happens to messages clients send: `group` forwards them to the
    /// sender's group (chat), `none` ignores them (server push only).
    #[arg(
        long,
        env = "GROUPCAST_CLIENT_MESSAGES",
        value_parser = client_messages(),
        default_value_t = Config::default().client_messages
    )]
    pub client_messages: ClientMessages,

    /// Keep a history for the groups a pattern matches: `PATTERN=SIZE:TTL`,
    /// e.g. `task/*=1000:24h` keeps the last 1000 messages of each `task/*`
    /// group until 24h after its last publish (repeatable; env:
    /// comma-separated; the first matching rule decides; `*` alone matches
    /// every group). Late joiners get the backlog (`?history=N`) and
    /// `groupcast.v1` clients resume without gaps (`?since=&epoch=`)
    #[arg(
        long = "history",
        env = "GROUPCAST_HISTORY",
        value_name = "PATTERN=SIZE:TTL",
        value_delimiter = ','
    )]
    pub history: Vec<HistoryRule>,

    /// Payload bytes kept in memory of the history groups' latest
    /// messages (the node-local tail): a late join or resume whose range it
    /// covers is served without reading Redis, and identical reads of a
    /// group are merged into one. 0: off
    #[arg(long, env = "GROUPCAST_HISTORY_CACHE", value_name = "BYTES", default_value_t = Config::default().history_cache)]
    pub history_cache: usize,

    /// Most groups one groupcast.v1 connection may hold (its own and those
    /// it subscribes to); a subscribe beyond it gets an error frame. 0: no
    /// limit
    #[arg(long, env = "GROUPCAST_MAX_GROUPS_PER_CONNECTION", default_value_t = Config::default().max_groups_per_connection)]
    pub max_groups_per_connection: usize,
    /// Groups whose members are tracked cluster-wide (presence:
    /// `GET /api/groups/{group}/members`, `/users`), as patterns,
    /// comma-separated (`chat/*,task/*`). None by default
    #[arg(
        long,
        env = "GROUPCAST_PRESENCE",
        value_delimiter = ',',
        value_parser = group_pattern
    )]
    pub presence: Vec<GroupPattern>,

    /// Session keys shown in presence (GET /api/groups/{group}/members),
    /// comma-separated; the other keys stay on their node
    #[arg(long, env = "GROUPCAST_PRESENCE_KEYS", value_delimiter = ',')]
    pub presence_keys: Vec<String>,

    /// How long a closed connection stays a member, waiting for a
    /// comeback, before its leave is final (with its user's user_left and
    /// the group's group_vacated): a client that reconnects within it with
    /// its session (?session=) is reported as nothing, a user's new
    /// connection spares the user_left. 0s: at once
    #[arg(long, env = "GROUPCAST_PRESENCE_GRACE", value_parser = duration, default_value = shown(Config::default().presence_grace))]
    pub presence_grace: Duration,

    /// Groups whose groupcast.v1 members get join/leave frames (join,
    /// leave, user_joined, user_left), as patterns, comma-separated; only
    /// groups that also have --presence. None by default
    #[arg(
        long,
        env = "GROUPCAST_JOIN_LEAVE",
        value_delimiter = ',',
        value_parser = group_pattern
    )]
    pub join_leave: Vec<GroupPattern>,

    /// Where the node POSTs webhook events (`http://` or `https://`): the
    /// presence transitions of the groups with --presence. None by default
    #[arg(long, env = "GROUPCAST_WEBHOOK_URL", value_parser = webhook_url)]
    pub webhook_url: Option<url::Url>,

    /// The HMAC-SHA256 secret webhook requests are signed with
    /// (`X-Groupcast-Signature`). Visible in `ps`: prefer the env var. Without
    /// it requests are unsigned (the node warns)
    #[arg(long, env = "GROUPCAST_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Which webhook events are sent, comma-separated: group_occupied,
    /// group_vacated, user_joined, user_left, session_joined, session_left
    #[arg(
        long,
        env = "GROUPCAST_WEBHOOK_EVENTS",
        value_delimiter = ',',
        default_value = "group_occupied,group_vacated,user_joined,user_left"
    )]
    pub webhook_events: Vec<WebhookKind>,

    /// Webhook events held at most while the receiver is slow or down;
    /// beyond it they are dropped and counted
    #[arg(long, env = "GROUPCAST_WEBHOOK_QUEUE", value_parser = at_least_one, default_value = "10000")]
    pub webhook_queue: usize,

    /// Redis URL; makes this node a cluster member.
    /// `redis://[user:password@]host:6379[/db]`, or `rediss://` for TLS.
    /// Repeat it (or separate URLs with commas) for several: the shards
    /// (sharded), seed nodes (cluster), the Sentinels (sentinel).
    #[arg(long, env = "GROUPCAST_REDIS_URL", value_delimiter = ',', action = ArgAction::Append)]
    pub redis_url: Vec<String>,

    /// What the Redis URLs are.
    #[arg(long, env = "GROUPCAST_REDIS_MODE", value_enum, default_value_t = RedisMode::Single)]
    pub redis_mode: RedisMode,

    /// With `--redis-mode sentinel`: the name the Sentinels know the
    /// primary by (`sentinel monitor NAME ...`).
    #[arg(long, env = "GROUPCAST_REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,

    /// This node's id in the cluster [default: hostname plus a random suffix].
    #[arg(long, env = "GROUPCAST_NODE_ID")]
    pub node_id: Option<String>,

    /// Prefix of group channels on Redis: `group:` gives `group:<name>`.
    #[arg(long, env = "GROUPCAST_CHANNEL_PREFIX", default_value = redis_defaults().channel_prefix)]
    pub channel_prefix: String,

    /// The Redis channel for broadcasts to everyone and to session lists.
    #[arg(
        long,
        env = "GROUPCAST_CLUSTER_CHANNEL",
        default_value = redis_defaults().cluster_channel
    )]
    pub cluster_channel: String,

    /// How long to stay subscribed to a group's channel after its last local
    /// member left (avoids flapping when a client reconnects).
    #[arg(long, env = "GROUPCAST_UNSUBSCRIBE_LINGER", value_parser = duration, default_value = shown(redis_defaults().unsubscribe_linger))]
    pub unsubscribe_linger: Duration,

    /// How often this node writes its presence (groups, member counts) to Redis.
    #[arg(long, env = "GROUPCAST_HEARTBEAT_INTERVAL", value_parser = duration, default_value = shown(redis_defaults().heartbeat_interval))]
    pub heartbeat_interval: Duration,

    /// How long a node's presence lives in Redis without a heartbeat.
    #[arg(long, env = "GROUPCAST_PRESENCE_TTL", value_parser = duration, default_value = shown(redis_defaults().presence_ttl))]
    pub presence_ttl: Duration,

    /// Redis connections in the publishing pool.
    #[arg(long, env = "GROUPCAST_REDIS_POOL_SIZE", default_value_t = redis_defaults().pool_size)]
    pub redis_pool_size: usize,

    /// Name of the nodes' presence keys in Redis (`{NAME}:info`, `{NAME}:seen`).
    #[arg(
        long,
        env = "GROUPCAST_PRESENCE_KEY",
        default_value = redis_defaults().presence_key
    )]
    pub presence_key: String,

    /// How long one Redis command (publish, ping, heartbeat) may take.
    #[arg(long, env = "GROUPCAST_REDIS_COMMAND_TIMEOUT", value_parser = duration, default_value = shown(redis_defaults().command_timeout))]
    pub redis_command_timeout: Duration,

    /// How often the subscriber connection is checked with PING (a paused
    /// or unreachable Redis is noticed within this plus the command timeout).
    #[arg(long, env = "GROUPCAST_REDIS_HEALTH_INTERVAL", value_parser = duration, default_value = shown(redis_defaults().health_interval))]
    pub redis_health_interval: Duration,

    /// First delay before reconnecting to Redis; it doubles on each failure.
    #[arg(long, env = "GROUPCAST_REDIS_BACKOFF_MIN", value_parser = duration, default_value = shown(redis_defaults().backoff_min))]
    pub redis_backoff_min: Duration,

    /// Largest delay between reconnection attempts.
    #[arg(long, env = "GROUPCAST_REDIS_BACKOFF_MAX", value_parser = duration, default_value = shown(redis_defaults().backoff_max))]
    pub redis_backoff_max: Duration,

    /// Publishes that may wait for Redis; beyond this, broadcasts reach
    /// this node's sessions only (and are counted as publish errors).
    #[arg(long, env = "GROUPCAST_REDIS_PUBLISH_QUEUE", default_value_t = redis_defaults().publish_queue_len)]
    pub redis_publish_queue: usize,

    /// How long one write to a client may take before it is dropped.
    #[arg(long, env = "GROUPCAST_WRITE_TIMEOUT", value_parser = duration, default_value = shown(Config::default().write_timeout))]
    pub write_timeout: Duration,

    /// Close a client that sent nothing (not even a pong) for this long.
    #[arg(long, env = "GROUPCAST_PONG_WAIT", value_parser = duration, default_value = shown(Config::default().pong_wait))]
    pub pong_wait: Duration,

    /// How often to ping clients; must be shorter than --pong-wait.
    #[arg(long, env = "GROUPCAST_PING_PERIOD", value_parser = duration, default_value = shown(Config::default().ping_period))]
    pub ping_period: Duration,

    /// Largest message a client may send, in bytes (larger: closed with 1009).
    #[arg(long, env = "GROUPCAST_MAX_MESSAGE_SIZE", default_value_t = Config::default().max_message_size)]
    pub max_message_size: usize,

    /// Outbound messages that may wait per client.
    #[arg(long, env = "GROUPCAST_QUEUE_LEN", default_value_t = Config::default().queue_len)]
    pub queue_len: usize,

    /// When a client's queue is full: `close` it with 1013, or `drop-oldest`.
    #[arg(
        long,
        env = "GROUPCAST_QUEUE_FULL",
        value_parser = queue_full_policy(),
        default_value_t = Config::default().queue_full
    )]
    pub queue_full: QueueFullPolicy,

    /// The most bytes read from a client socket at once (at most 16384; a
    /// stack buffer, not kept per connection; larger frames still work).
    #[arg(long, env = "GROUPCAST_READ_BUFFER_SIZE", default_value_t = Config::default().read_buffer_size)]
    pub read_buffer_size: usize,

    /// permessage-deflate for clients that offer it (browsers do): each
    /// broadcast is compressed once and the same bytes go to every member
    /// that negotiated it.
    #[arg(long, env = "GROUPCAST_COMPRESSION")]
    pub compression: bool,

    /// With --compression, messages shorter than this (bytes) go uncompressed.
    #[arg(long, env = "GROUPCAST_COMPRESSION_THRESHOLD", default_value_t = Config::default().compression_threshold)]
    pub compression_threshold: usize,

    /// Most WebSocket connections on this node; beyond it upgrades get HTTP
    /// 503 `node_full`. Each is a file descriptor: stay well under
    /// `ulimit -n`. 0: no limit.
    #[arg(long, env = "GROUPCAST_MAX_CONNECTIONS", default_value_t = Config::default().max_connections)]
    pub max_connections: usize,

    /// Most connections from one client address; beyond it upgrades get
    /// HTTP 429. Behind a reverse proxy all clients share the proxy's
    /// address: raise it or set 0 (no limit) there.
    #[arg(
        long,
        env = "GROUPCAST_MAX_CONNECTIONS_PER_IP",
        default_value_t = Config::default().max_connections_per_ip
    )]
    pub max_connections_per_ip: usize,

    /// Messages per second one connection may send on average (text,
    /// binary, ping); faster clients are closed with 1008 "rate limit
    /// exceeded". 0: no limit.
    #[arg(long, env = "GROUPCAST_MAX_INBOUND_RATE", default_value_t = Config::default().max_inbound_rate)]
    pub max_inbound_rate: u32,

    /// Messages a connection may send at once above --max-inbound-rate.
    #[arg(long, env = "GROUPCAST_MAX_INBOUND_BURST", default_value_t = Config::default().max_inbound_burst)]
    pub max_inbound_burst: u32,

    /// Most groups with members on this node; a connection to a new group
    /// beyond it gets HTTP 503 `too_many_groups`. 0: no limit.
    #[arg(long, env = "GROUPCAST_MAX_GROUPS", default_value_t = Config::default().max_groups)]
    pub max_groups: usize,

    /// Largest HTTP API request body, in bytes.
    #[arg(long, env = "GROUPCAST_API_MAX_BODY", default_value_t = ServerOptions::default().api_max_body)]
    pub api_max_body: usize,

    /// How long a client may take to send a request's headers (the first
    /// request, or the next one on a keep-alive connection); slower
    /// connections are closed, so half-sent requests cannot pile up and
    /// exhaust file descriptors.
    #[arg(long, env = "GROUPCAST_HEADER_READ_TIMEOUT", value_parser = duration, default_value = shown(ServeOptions::default().header_read_timeout))]
    pub header_read_timeout: Duration,

    /// Kernel send buffer per client socket (SO_SNDBUF), in bytes; 0 keeps
    /// the kernel's self-tuning default (up to 4 MiB on Linux). A client
    /// that stops reading fills this before its send queue, so a bound
    /// here makes --queue-full act within a known number of bytes (and
    /// bounds the kernel memory a stalled client holds).
    #[arg(long, env = "GROUPCAST_SOCKET_SEND_BUFFER", default_value_t = send_buffer_flag(ServeOptions::default().send_buffer_size))]
    pub socket_send_buffer: usize,

    /// On SIGTERM, stay up but not ready for this long before closing
    /// sessions (lets a load balancer stop sending new clients).
    // This and the shutdown timeout are the binary's own (main.rs drains);
    // the library has no default for them.
    #[arg(long, env = "GROUPCAST_DRAIN_PERIOD", value_parser = duration, default_value = "0s")]
    pub drain_period: Duration,

    /// After closing sessions with 1001, exit at the latest after this long.
    #[arg(long, env = "GROUPCAST_SHUTDOWN_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub shutdown_timeout: Duration,

    /// Run ws-notifier's ticker demo for a group while it has members:
    /// `--ticker ticker_ws=2s` (repeatable; env: comma-separated). One
    /// ticker runs per group across the whole cluster.
    #[arg(long = "ticker", env = "GROUPCAST_TICKERS", value_delimiter = ',', value_parser = ticker)]
    pub tickers: Vec<Option<(GroupName, Duration)>>,

    /// How long a group worker's lease lives without renewal; a dead
    /// holder's worker restarts elsewhere within this plus a third of it.
    #[arg(long, env = "GROUPCAST_WORKER_LEASE_TTL", value_parser = duration, default_value = shown(WorkerOptions::default().lease_ttl))]
    pub worker_lease_ttl: Duration,

    /// How long a group must be empty cluster-wide before its worker stops.
    #[arg(long, env = "GROUPCAST_WORKER_LINGER", value_parser = duration, default_value = shown(WorkerOptions::default().linger))]
    pub worker_linger: Duration,

    /// Log format.
    // Logging is the binary's own: the library only emits `tracing` events.
    #[arg(
        long,
        env = "GROUPCAST_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `groupcast=debug,info`.
    #[arg(long, env = "GROUPCAST_LOG", default_value = "info")]
    pub log: String,

    /// Tokens, API keys, origins: see docs/security.md.
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl Cli {
    /// The hub's configuration.
    pub fn config(&self) -> Config {
        Config {
            write_timeout: self.write_timeout,
            pong_wait: self.pong_wait,
            ping_period: self.ping_period,
            max_message_size: self.max_message_size,
            queue_len: self.queue_len,
            queue_full: self.queue_full,
            read_buffer_size: self.read_buffer_size,
            compression: self.compression,
            compression_threshold: self.compression_threshold,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_inbound_rate: self.max_inbound_rate,
            max_inbound_burst: self.max_inbound_burst,
            max_groups: self.max_groups,
            client_messages: self.client_messages,
            history_cache: self.history_cache,
            max_groups_per_connection: self.max_groups_per_connection,
            presence_keys: self.presence_keys.clone(),
            presence: GroupPatterns::from(self.presence.clone()),
            presence_grace: self.presence_grace,
            join_leave: GroupPatterns::from(self.join_leave.clone()),
            history: HistoryPolicy::new(self.history.iter().cloned()),
        }
    }

    /// The webhook sender's settings, when `--webhook-url` is given.
    pub fn webhook_options(&self) -> Option<WebhookOptions> {
        let mut options = WebhookOptions::new(self.webhook_url.clone()?);
        options.secret = self
            .webhook_secret
            .as_ref()
            .map(|secret| Arc::from(secret.as_bytes()));
        options.events = self.webhook_events.clone();
        options.queue = self.webhook_queue;
        Some(options)
    }

    /// The router's options. Reads the API key file, hence fallible.
    pub fn server_options(&self) -> Result<ServerOptions, AuthConfigError> {
        let security = &self.security;
        Ok(ServerOptions {
            api_max_body: self.api_max_body,
            api_keys: Arc::new(security.api_keys()?),
            cors: CorsPolicy::parse(&security.cors_origins)?,
            debug_endpoint: security.debug_endpoint,
            health_endpoints: security.admin_listen.is_none(),
        })
    }

    /// How the accept loop treats each connection.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            header_read_timeout: self.header_read_timeout,
            send_buffer_size: (self.socket_send_buffer > 0).then_some(self.socket_send_buffer),
        }
    }

    /// Timing of group workers.
    pub fn worker_options(&self) -> WorkerOptions {
        WorkerOptions {
            lease_ttl: self.worker_lease_ttl,
            linger: self.worker_linger,
            ..WorkerOptions::default()
        }
    }

    /// The backend the flags describe: none without a Redis URL
    /// (standalone), else the one `--redis-mode` names.
    pub fn backend(&self) -> Result<Option<Box<dyn IntoBackend>>, String> {
        let Some(options) = self.redis_options() else {
            if self.redis_mode != RedisMode::Single {
                return Err(format!(
                    "--redis-mode {} needs --redis-url",
                    self.redis_mode.as_str()
                ));
            }
            return Ok(None);
        };
        Ok(Some(match self.redis_mode {
            RedisMode::Single => {
                if self.redis_url.len() > 1 {
                    return Err(format!(
                        "{} Redis URLs given: the single mode takes one (several independent \
                         Redis are --redis-mode sharded)",
                        self.redis_url.len()
                    ));
                }
                Box::new(options)
            }
            RedisMode::Sharded => Box::new(ShardedOptions {
                urls: self.redis_url.clone(),
                redis: options,
            }),
            RedisMode::Cluster => Box::new(ClusterOptions {
                seeds: self.redis_url.clone(),
                redis: options,
            }),
            RedisMode::Sentinel => {
                let Some(master) = self.redis_sentinel_master.clone() else {
                    return Err("--redis-mode sentinel needs --redis-sentinel-master NAME".into());
                };
                Box::new(SentinelOptions {
                    sentinels: self.redis_url.clone(),
                    master,
                    redis: options,
                })
            }
        }))
    }

    /// Redis settings (for the first Redis URL), when one is given.
    pub fn redis_options(&self) -> Option<RedisOptions> {
        let url = self.redis_url.first()?;
        let mut options = RedisOptions::new(url.clone());
        options.channel_prefix = self.channel_prefix.clone();
        options.cluster_channel = self.cluster_channel.clone();
        options.unsubscribe_linger = self.unsubscribe_linger;
        options.heartbeat_interval = self.heartbeat_interval;
        options.presence_ttl = self.presence_ttl;
        options.pool_size = self.redis_pool_size;
        options.presence_key = self.presence_key.clone();
        options.command_timeout = self.redis_command_timeout;
        options.health_interval = self.redis_health_interval;
        options.backoff_min = self.redis_backoff_min;
        options.backoff_max = self.redis_backoff_max;
        options.publish_queue_len = self.redis_publish_queue;
        Some(options)
    }
}

/// What `groupcast` can do besides serving.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Mint a client token (HS256) for development and print it.
    ///
    /// Example: `groupcast token --secret-file secret.txt --sub alice
    /// --groups 'chat,task/*' --publish --ttl 1h`. In production, your
    /// backend mints tokens; see docs/security.md for the claims.
    Token(TokenArgs),
    /// Print the URL of the shard a group is on (`--redis-mode sharded`),
    /// so you know where to `redis-cli PUBLISH` to it.
    ///
    /// Example: `groupcast shard-of ticker_ws --redis-url redis://r0:6379
    /// --redis-url redis://r1:6379` (or with GROUPCAST_REDIS_URL set, as in
    /// the node's own environment).
    ShardOf(ShardOfArgs),
    /// Print a group's messages as they arrive, one line each.
    ///
    /// Example: `groupcast tail task/42 --history 100` (the last 100
    /// retained lines, then live). Reconnects with backoff when the
    /// connection drops and, for groups with history, resumes where it was:
    /// no line lost, none printed twice. Ctrl-C stops it.
    Tail(TailArgs),
    /// Publish a message, or stdin's lines, to a group.
    ///
    /// Through a node's HTTP API (`--url`, `--api-key`), or straight to
    /// Redis (`--redis-url`; with history through the nodes' Redis
    /// Function). Example: `make 2>&1 | groupcast publish task/42 -
    /// --rate 200`.
    Publish(PublishArgs),
    /// Print an example config file, or check one.
    ///
    /// `groupcast config example > groupcast.toml` writes every setting,
    /// commented, at its default; `groupcast config check groupcast.toml`
    /// validates a file and prints the settings a node would run with.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `groupcast config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a complete config file: every setting with its help and
    /// environment variable, at its default (commented out where there is
    /// none). Generated from the flags' own definitions.
    Example,
    /// Validate a config file and print the effective settings: each key
    /// with its value and where it came from (flag, env, file or default),
    /// secrets masked.
    ///
    /// GROUPCAST_* variables apply as they would on a node; flags after
    /// `--` too: `groupcast config check groupcast.toml -- --queue-len 64`.
    Check(ConfigCheckArgs),
}

/// `groupcast config check`.
#[derive(Debug, Clone, Args)]
pub struct ConfigCheckArgs {
    /// The config file.
    pub file: PathBuf,
    /// Serving flags, after `--`, applied over the file and environment.
    #[arg(last = true, value_name = "FLAGS")]
    pub flags: Vec<std::ffi::OsString>,
}

/// Where the terminal client finds a node when given a bare group: the
/// binary's own default listen port, on this machine.
pub const DEFAULT_NODE_URL: &str = "http://127.0.0.1:8080";

/// `groupcast tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// A WebSocket URL (`ws://host:8080/ws/task/42`, any query kept) or a
    /// bare group name (`task/42`, joined on `--url`).
    #[arg(value_name = "WS-URL|GROUP")]
    pub target: String,

    /// The node a bare group is joined on (http:// or ws://).
    #[arg(long, env = "GROUPCAST_URL", default_value = DEFAULT_NODE_URL)]
    pub url: String,

    /// First print up to the last N retained messages of the group (groups
    /// with history), then the live ones.
    #[arg(long, value_name = "N")]
    pub history: Option<u64>,

    /// One JSON object per message: `group`, `offset`, `epoch` (null for
    /// groups without history), `data` (and `binary: true`, base64 data,
    /// for binary messages).
    #[arg(long)]
    pub json: bool,

    /// A client token, when the node requires one (sent as
    /// `Authorization: Bearer`).
    #[arg(long, env = "GROUPCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// No notes on stderr (joins, reconnects); errors are still printed.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `groupcast publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The group.
    pub group: String,

    /// The message; `-` (the default) publishes stdin, one message per
    /// line (empty lines are skipped).
    #[arg(value_name = "MESSAGE|-", default_value = "-")]
    pub message: String,

    /// The node whose HTTP API to publish through.
    #[arg(long, env = "GROUPCAST_URL", default_value = DEFAULT_NODE_URL)]
    pub url: String,

    /// The API key, when the node requires one (`--api-keys` on the node).
    #[arg(long, env = "GROUPCAST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Publish straight to this Redis (single or sentinel-managed primary)
    /// instead of through a node: with `FCALL groupcast_publish`, so that
    /// history groups keep the message, or a plain PUBLISH when no node
    /// has loaded the function. `--url` and `--api-key` are then unused.
    #[arg(long)]
    pub redis_url: Option<String>,

    /// With --redis-url: the nodes' --channel-prefix.
    #[arg(long, default_value = redis_defaults().channel_prefix, requires = "redis_url")]
    pub channel_prefix: String,

    /// At most this many messages per second (e.g. 50, or 0.5).
    #[arg(long, value_name = "PER-SECOND", value_parser = rate)]
    pub rate: Option<f64>,

    /// No progress line and no summary on stderr; errors are still printed.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--rate`: a positive, finite number of messages per second.
fn rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("expected messages per second, e.g. 50 or 0.5, got {s:?}"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err("the rate must be greater than zero".into())
    }
}

/// What `--redis-url` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisMode {
    /// One Redis server (one URL).
    Single,
    /// Independent Redis servers, each group on one of them by a
    /// consistent hash of its name; shard 0 also holds presence and leases.
    /// Add servers at the end of the list only
    Sharded,
    /// A Redis Cluster (the URLs are seed nodes), with sharded pub/sub
    /// (SSUBSCRIBE / SPUBLISH): one subscriber connection per primary
    Cluster,
    /// One primary found and followed through Redis Sentinel (the URLs are
    /// Sentinels; name the primary with --redis-sentinel-master)
    Sentinel,
}

impl RedisMode {
    fn as_str(self) -> &'static str {
        match self {
            RedisMode::Single => "single",
            RedisMode::Sharded => "sharded",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

/// `groupcast shard-of`.
#[derive(Debug, Clone, Args)]
pub struct ShardOfArgs {
    /// The group.
    pub group: String,
    /// The shards, in the nodes' order (repeat, or separate with commas).
    #[arg(long, env = "GROUPCAST_REDIS_URL", value_delimiter = ',', action = ArgAction::Append, required = true)]
    pub redis_url: Vec<String>,
}

impl ShardOfArgs {
    /// The URL of the group's shard.
    pub fn url(&self) -> Result<&str, String> {
        let group = GroupName::new(&self.group).map_err(|e| e.to_string())?;
        let options = ShardedOptions::new(self.redis_url.clone());
        options.validate().map_err(|e| e.to_string())?;
        Ok(&self.redis_url[options.shard_of(&group)])
    }
}

/// `groupcast token`.
#[derive(Debug, Clone, Args)]
#[command(group(
    clap::ArgGroup::new("secret_source")
        .required(true)
        .args(["secret", "secret_file"])
))]
pub struct TokenArgs {
    /// The HS256 secret (at least 32 bytes). Visible in `ps`: prefer
    /// --secret-file.
    #[arg(long)]
    pub secret: Option<String>,

    /// A file holding the HS256 secret (a trailing newline is ignored).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,

    /// The key id to put in the token's header (must match the server's
    /// `--jwt-secret-file KID:PATH`).
    #[arg(long)]
    pub kid: Option<String>,

    /// The subject: who the client is.
    #[arg(long)]
    pub sub: String,

    /// Groups the client may join: names and patterns, comma-separated
    /// (`chat,task/*`; `*` stays within a segment, `**` spans segments).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,

    /// Allow the client to send messages into its group.
    #[arg(long)]
    pub publish: bool,

    /// Deny the client the presence of its groups (the claim
    /// `presence: false`): it will not be shown who else is there.
    #[arg(long)]
    pub no_presence: bool,

    /// How long the token is valid.
    #[arg(long, value_parser = duration, default_value = shown(MintRequest::new("", Vec::<String>::new()).ttl))]
    pub ttl: Duration,

    /// Make the token valid only from this long after now (sets `nbf`).
    #[arg(long, value_parser = duration)]
    pub not_before: Option<Duration>,

    /// The issuer (`iss`), when the server checks --jwt-issuer.
    #[arg(long)]
    pub issuer: Option<String>,

    /// The audience (`aud`), when the server checks --jwt-audience.
    #[arg(long)]
    pub audience: Option<String>,
}

impl TokenArgs {
    /// The secret, from --secret or --secret-file.
    pub fn secret(&self) -> Result<Vec<u8>, AuthConfigError> {
        match (&self.secret, &self.secret_file) {
            (Some(secret), _) => Ok(secret.as_bytes().to_vec()),
            (None, Some(path)) => groupcast::auth::keys::read_secret_file(path),
            // clap's ArgGroup requires one of the two.
            (None, None) => Err(AuthConfigError::Sign(
                "give --secret or --secret-file".into(),
            )),
        }
    }

    /// What to put in the token.
    pub fn request(&self) -> MintRequest {
        MintRequest {
            sub: self.sub.clone(),
            groups: self.groups.clone(),
            publish: self.publish,
            presence: !self.no_presence,
            ttl: self.ttl,
            not_before: self.not_before,
            kid: self.kid.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        }
    }
}

fn group_pattern(s: &str) -> Result<GroupPattern, String> {
    GroupPattern::new(s).map_err(|e| e.to_string())
}

fn origin_rule(s: &str) -> Result<OriginRule, String> {
    s.parse::<OriginRule>().map_err(|e| e.to_string())
}

/// Security settings (see docs/security.md). With no JWT key the server is
/// open: anyone may join any group and publish.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// An HS256 secret verifying client tokens, `[KID:]SECRET`, at least 32
    /// bytes (repeatable; env: comma-separated). Visible in `ps`: prefer
    /// --jwt-secret-file or the env var.
    #[arg(
        long = "jwt-secret",
        env = "GROUPCAST_JWT_SECRETS",
        value_name = "[KID:]SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub jwt_secrets: Vec<KeyRef>,

    /// A file holding an HS256 secret, `[KID:]PATH` (repeatable).
    #[arg(
        long = "jwt-secret-file",
        env = "GROUPCAST_JWT_SECRET_FILES",
        value_name = "[KID:]PATH",
        value_delimiter = ','
    )]
    pub jwt_secret_files: Vec<KeyRef>,

    /// A PEM public key verifying client tokens, `[KID:]PATH`: RSA keys
    /// verify RS256 only, EC P-256 keys ES256 only (repeatable).
    #[arg(
        long = "jwt-public-key",
        env = "GROUPCAST_JWT_PUBLIC_KEYS",
        value_name = "[KID:]PATH",
        value_delimiter = ','
    )]
    pub jwt_public_keys: Vec<KeyRef>,

    /// A JWKS file (`{"keys": [...]}`) of verification keys, picked by the
    /// token's `kid` (repeatable).
    #[arg(
        long = "jwt-jwks-file",
        env = "GROUPCAST_JWT_JWKS_FILES",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub jwt_jwks_files: Vec<PathBuf>,

    /// Accepted token issuers (`iss`); unset: not checked.
    #[arg(
        long = "jwt-issuer",
        env = "GROUPCAST_JWT_ISSUERS",
        value_delimiter = ','
    )]
    pub jwt_issuers: Vec<String>,

    /// Accepted token audiences (`aud`); unset: not checked. Set it when
    /// the signing keys also sign tokens for other services.
    #[arg(
        long = "jwt-audience",
        env = "GROUPCAST_JWT_AUDIENCES",
        value_delimiter = ','
    )]
    pub jwt_audiences: Vec<String>,

    /// Clock difference tolerated on `exp` and `nbf`; a connection closes
    /// (4001) at `exp` plus this.
    #[arg(long, env = "GROUPCAST_JWT_LEEWAY", value_parser = duration, default_value = shown(VerifyOptions::default().leeway))]
    pub jwt_leeway: Duration,

    /// Groups clients may join without a token (patterns, comma-separated:
    /// `public,news/*`). Only meaningful with keys configured.
    #[arg(
        long,
        env = "GROUPCAST_ANONYMOUS_GROUPS",
        value_delimiter = ',',
        value_parser = group_pattern
    )]
    pub anonymous_groups: Vec<GroupPattern>,

    /// Whether clients without a token may publish into anonymous groups.
    #[arg(
        long,
        env = "GROUPCAST_ANONYMOUS_PUBLISH",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = ClientAuth::open().allows_anonymous_publish(),
        default_missing_value = "true"
    )]
    pub anonymous_publish: bool,

    /// Browser origins allowed to open WebSockets (`https://app.example.com`,
    /// `https://*.example.com`; comma-separated). Others get 403; requests
    /// without an Origin header (non-browsers) pass. Unset: any origin.
    #[arg(
        long,
        env = "GROUPCAST_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_parser = origin_rule
    )]
    pub allowed_origins: Vec<OriginRule>,

    /// API keys for /api/* and /debug/state (`Authorization: Bearer KEY`),
    /// at least 16 characters, comma-separated. Unset (and no
    /// --api-keys-file): the API is open.
    #[arg(
        long,
        env = "GROUPCAST_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// A file of API keys, one per line (`#` comments).
    #[arg(long, env = "GROUPCAST_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Origins whose pages may call the HTTP API (CORS), comma-separated,
    /// or `*`. Unset: no CORS headers.
    #[arg(long, env = "GROUPCAST_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Serve /debug/state (behind the API key): `--debug-endpoint false`
    /// turns it off.
    #[arg(
        long,
        env = "GROUPCAST_DEBUG_ENDPOINT",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = ServerOptions::default().debug_endpoint,
        default_missing_value = "true"
    )]
    pub debug_endpoint: bool,

    /// Serve /healthz, /readyz and /metrics on this separate address
    /// (e.g. 127.0.0.1:9090) instead of the main port.
    #[arg(long, env = "GROUPCAST_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
}

impl SecurityArgs {
    /// The client policy: keys (open mode without any), anonymous groups,
    /// origins. Reads the key files.
    pub fn client_auth(&self) -> Result<ClientAuth, AuthConfigError> {
        let mut keys = KeySet::new();
        for secret in &self.jwt_secrets {
            keys.add_secret(secret.kid.clone(), secret.value.as_bytes())?;
        }
        for file in &self.jwt_secret_files {
            keys.add_secret_file(file.kid.clone(), file.value.as_ref())?;
        }
        for file in &self.jwt_public_keys {
            keys.add_public_key_file(file.kid.clone(), file.value.as_ref())?;
        }
        for path in &self.jwt_jwks_files {
            keys.add_jwks_file(path)?;
        }
        let verifier = TokenVerifier::new(
            keys,
            VerifyOptions {
                leeway: self.jwt_leeway,
                issuers: self.jwt_issuers.clone(),
                audiences: self.jwt_audiences.clone(),
            },
        );
        Ok(ClientAuth::with_tokens(verifier)
            .anonymous_groups(GroupPatterns::from(self.anonymous_groups.clone()))
            .anonymous_publish(self.anonymous_publish)
            .allowed_origins(OriginPolicy::only(self.allowed_origins.clone())))
    }

    /// The API keys, from --api-keys and --api-keys-file.
    pub fn api_keys(&self) -> Result<ApiKeys, AuthConfigError> {
        let mut keys = ApiKeys::new(&self.api_keys)?;
        if let Some(path) = &self.api_keys_file {
            keys.add_file(path)?;
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The command line, failing the test on a parse error. Only flags:
    /// `try_parse_from` also reads `GROUPCAST_*` variables, and the
    /// environment of `cargo test` sets none (tests/node/limits.rs runs the
    /// real binary with them).
    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).expect("the flags parse")
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    // Moved from tests/limits.rs (now tests/node/limits.rs) when the command line left the library.
    #[test]
    fn flags_set_every_limit_and_the_defaults_match_the_library() {
        let defaults = parse(&["groupcast"]).config();
        let library = Config::default();
        assert_eq!(defaults.max_connections, library.max_connections);
        assert_eq!(
            defaults.max_connections_per_ip,
            library.max_connections_per_ip
        );
        assert_eq!(defaults.max_inbound_rate, library.max_inbound_rate);
        assert_eq!(defaults.max_inbound_burst, library.max_inbound_burst);
        assert_eq!(defaults.max_groups, library.max_groups);
        // The defaults are safe: limited, and under the usual fd limits.
        assert_eq!(library.max_connections, 10_000);
        assert_eq!(library.max_connections_per_ip, 1_000);
        assert_eq!(library.max_inbound_rate, 100);
        assert_eq!(library.max_inbound_burst, 200);
        assert_eq!(library.max_groups, 10_000);

        let config = parse(&[
            "groupcast",
            "--max-connections",
            "7",
            "--max-connections-per-ip",
            "3",
            "--max-inbound-rate",
            "0",
            "--max-inbound-burst",
            "9",
            "--max-groups",
            "4",
        ])
        .config();
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.max_connections_per_ip, 3);
        assert_eq!(config.max_inbound_rate, 0);
        assert_eq!(config.max_inbound_burst, 9);
        assert_eq!(config.max_groups, 4);
    }

    /// Every option type the flags fill, left to its defaults, is the
    /// library's default, field for field (compared through `Debug`, which
    /// every field has; a new field shows up here too).
    #[test]
    fn without_flags_every_setting_is_the_librarys_default() {
        let cli = parse(&["groupcast", "--redis-url", "redis://localhost:6379"]);
        let same = |ours: &dyn std::fmt::Debug, library: &dyn std::fmt::Debug| {
            assert_eq!(format!("{ours:?}"), format!("{library:?}"));
        };
        same(&cli.config(), &Config::default());
        same(
            &cli.redis_options().expect("a Redis URL is given"),
            &RedisOptions::new("redis://localhost:6379"),
        );
        same(&cli.worker_options(), &WorkerOptions::default());
        same(&cli.serve_options(), &ServeOptions::default());
        let options = cli.server_options().expect("no key files to read");
        let library = ServerOptions::default();
        assert_eq!(options.api_max_body, library.api_max_body);
        assert_eq!(options.debug_endpoint, library.debug_endpoint);
        assert_eq!(cli.security.jwt_leeway, VerifyOptions::default().leeway);
        assert_eq!(
            cli.security.anonymous_publish,
            ClientAuth::open().allows_anonymous_publish()
        );
    }

    #[test]
    fn help_shows_the_library_defaults_and_the_accepted_values() {
        let help = Cli::command().render_long_help().to_string();
        for expected in [
            "[default: 1m]",    // --pong-wait, humantime's spelling of 60s
            "[default: 100ms]", // --redis-backoff-min
            "[default: 65536]", // --max-message-size
            "[default: close]",
            "[default: group]",
            "- drop-oldest: Drop the oldest queued message",
            "Ignored: server push only (ws-notifier)",
            "[default: 0.0.0.0:8080]",
        ] {
            assert!(help.contains(expected), "no {expected:?} in:\n{help}");
        }
    }

    #[test]
    fn settings_take_every_library_spelling_and_refuse_others() {
        for policy in QueueFullPolicy::ALL {
            let cli = parse(&["groupcast", "--queue-full", policy.as_str()]);
            assert_eq!(cli.config().queue_full, policy);
        }
        for setting in ClientMessages::ALL {
            let cli = parse(&["groupcast", "--client-messages", setting.as_str()]);
            assert_eq!(cli.config().client_messages, setting);
        }
        let error = Cli::try_parse_from(["groupcast", "--queue-full", "drop_oldest"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("[possible values: close, drop-oldest]"),
            "{error}"
        );
    }

    #[test]
    fn the_redis_mode_picks_the_backend() {
        let cli = parse(&[
            "groupcast",
            "--redis-mode",
            "sharded",
            "--redis-url",
            "redis://a:1,redis://b:2",
            "--redis-url",
            "redis://c:3",
        ]);
        assert_eq!(cli.redis_url, ["redis://a:1", "redis://b:2", "redis://c:3"]);
        assert!(cli.backend().unwrap().is_some());
        let several = parse(&["groupcast", "--redis-url", "redis://a:1,redis://b:2"]);
        assert!(several.backend().err().unwrap().contains("sharded"));
        let no_url = parse(&["groupcast", "--redis-mode", "sharded"]);
        assert!(no_url.backend().err().unwrap().contains("--redis-url"));
        assert!(parse(&["groupcast"]).backend().unwrap().is_none());
        for mode in ["cluster", "sentinel"] {
            let cli = parse(&[
                "groupcast",
                "--redis-mode",
                mode,
                "--redis-url",
                "redis://a:1",
                "--redis-sentinel-master",
                "mymaster",
            ]);
            assert!(cli.backend().unwrap().is_some(), "{mode}");
        }
        let nameless = parse(&[
            "groupcast",
            "--redis-mode",
            "sentinel",
            "--redis-url",
            "redis://s:1",
        ]);
        assert!(
            nameless
                .backend()
                .err()
                .unwrap()
                .contains("--redis-sentinel-master")
        );
    }

    #[test]
    fn shard_of_names_the_url_every_node_computes() {
        let urls = ["redis://a:1", "redis://b:2", "redis://c:3"];
        let cli = Cli::try_parse_from([
            "groupcast",
            "shard-of",
            "ticker_ws",
            "--redis-url",
            &urls.join(","),
        ])
        .unwrap();
        let Some(CliCommand::ShardOf(args)) = cli.command else {
            panic!("not shard-of: {:?}", cli.command);
        };
        let group = GroupName::new("ticker_ws").unwrap();
        let expected = ShardedOptions::new(urls).shard_of(&group);
        assert_eq!(args.url().unwrap(), urls[expected]);
        let bad = ShardOfArgs {
            group: "bad\u{7}name".into(),
            redis_url: vec!["redis://a:1".into()],
        };
        assert!(bad.url().is_err());
    }

    #[test]
    fn tickers_parse_and_an_empty_value_means_none() {
        let (group, period) = ticker("ticker_ws=2s").unwrap().unwrap();
        assert_eq!(group.as_str(), "ticker_ws");
        assert_eq!(period, Duration::from_secs(2));
        assert_eq!(ticker("").unwrap(), None);
        assert!(ticker("ticker_ws").unwrap_err().contains("GROUP=PERIOD"));
        assert!(
            ticker("ticker_ws=0s")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(ticker("bad\u{7}name=1s").is_err());
    }
}
