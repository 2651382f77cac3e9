//! The binary's command line: every knob is a flag and a `GROUPCAST_*`
//! environment variable (clap derive), turned into the library's types.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::RedisOptions;
use crate::config::{Config, QueueFullPolicy};
use crate::server::{ClientMessages, ServerOptions};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

/// groupcast: a clustered WebSocket group broadcaster.
///
/// Clients connect to ws://HOST/ws/<group>; everything published to the
/// group reaches every member. Without --redis-url the node is standalone;
/// with it, it joins the cluster of nodes using the same Redis.
#[derive(Debug, Parser)]
#[command(name = "groupcast", version, about, long_about)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "GROUPCAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// What happens to messages clients send: `group` forwards them to the
    /// sender's group (chat), `none` ignores them (server push only).
    #[arg(
        long,
        env = "GROUPCAST_CLIENT_MESSAGES",
        value_enum,
        default_value = "group"
    )]
    pub client_messages: ClientMessages,

    /// Redis URL; makes this node a cluster member.
    /// `redis://[user:password@]host:6379[/db]`, or `rediss://` for TLS.
    #[arg(long, env = "GROUPCAST_REDIS_URL")]
    pub redis_url: Option<String>,

    /// This node's id in the cluster [default: hostname plus a random suffix].
    #[arg(long, env = "GROUPCAST_NODE_ID")]
    pub node_id: Option<String>,

    /// Prefix of group channels on Redis: `group:` gives `group:<name>`.
    #[arg(long, env = "GROUPCAST_CHANNEL_PREFIX", default_value = "group:")]
    pub channel_prefix: String,

    /// The Redis channel for broadcasts to everyone and to session lists.
    #[arg(
        long,
        env = "GROUPCAST_CLUSTER_CHANNEL",
        default_value = "groupcast:cluster"
    )]
    pub cluster_channel: String,

    /// How long to stay subscribed to a group's channel after its last local
    /// member left (avoids flapping when a client reconnects).
    #[arg(long, env = "GROUPCAST_UNSUBSCRIBE_LINGER", value_parser = duration, default_value = "2s")]
    pub unsubscribe_linger: Duration,

    /// How often this node writes its presence (groups, member counts) to Redis.
    #[arg(long, env = "GROUPCAST_HEARTBEAT_INTERVAL", value_parser = duration, default_value = "2s")]
    pub heartbeat_interval: Duration,

    /// How long a node's presence lives in Redis without a heartbeat.
    #[arg(long, env = "GROUPCAST_PRESENCE_TTL", value_parser = duration, default_value = "6s")]
    pub presence_ttl: Duration,

    /// Redis connections in the publishing pool.
    #[arg(long, env = "GROUPCAST_REDIS_POOL_SIZE", default_value_t = 8)]
    pub redis_pool_size: usize,

    /// How long one write to a client may take before it is dropped.
    #[arg(long, env = "GROUPCAST_WRITE_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub write_timeout: Duration,

    /// Close a client that sent nothing (not even a pong) for this long.
    #[arg(long, env = "GROUPCAST_PONG_WAIT", value_parser = duration, default_value = "60s")]
    pub pong_wait: Duration,

    /// How often to ping clients; must be shorter than --pong-wait.
    #[arg(long, env = "GROUPCAST_PING_PERIOD", value_parser = duration, default_value = "54s")]
    pub ping_period: Duration,

    /// Largest message a client may send, in bytes (larger: closed with 1009).
    #[arg(long, env = "GROUPCAST_MAX_MESSAGE_SIZE", default_value_t = 65536)]
    pub max_message_size: usize,

    /// Outbound messages that may wait per client.
    #[arg(long, env = "GROUPCAST_QUEUE_LEN", default_value_t = 256)]
    pub queue_len: usize,

    /// When a client's queue is full: `close` it with 1013, or `drop-oldest`.
    #[arg(
        long,
        env = "GROUPCAST_QUEUE_FULL",
        value_enum,
        default_value = "close"
    )]
    pub queue_full: QueueFullPolicy,

    /// Per-connection socket read buffer, in bytes.
    #[arg(long, env = "GROUPCAST_READ_BUFFER_SIZE", default_value_t = 4096)]
    pub read_buffer_size: usize,

    /// Per-connection socket write buffer, in bytes.
    #[arg(long, env = "GROUPCAST_WRITE_BUFFER_SIZE", default_value_t = 8192)]
    pub write_buffer_size: usize,

    /// Largest HTTP API request body, in bytes.
    #[arg(long, env = "GROUPCAST_API_MAX_BODY", default_value_t = 1048576)]
    pub api_max_body: usize,

    /// On SIGTERM, stay up but not ready for this long before closing
    /// sessions (lets a load balancer stop sending new clients).
    #[arg(long, env = "GROUPCAST_DRAIN_PERIOD", value_parser = duration, default_value = "0s")]
    pub drain_period: Duration,

    /// After closing sessions with 1001, exit at the latest after this long.
    #[arg(long, env = "GROUPCAST_SHUTDOWN_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub shutdown_timeout: Duration,

    /// Log format.
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
            write_buffer_size: self.write_buffer_size,
        }
    }

    /// The router's options.
    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            client_messages: self.client_messages,
            api_max_body: self.api_max_body,
        }
    }

    /// Redis settings, when a Redis URL is given.
    pub fn redis_options(&self) -> Option<RedisOptions> {
        let url = self.redis_url.as_ref()?;
        let mut options = RedisOptions::new(url.clone());
        options.channel_prefix = self.channel_prefix.clone();
        options.cluster_channel = self.cluster_channel.clone();
        options.unsubscribe_linger = self.unsubscribe_linger;
        options.heartbeat_interval = self.heartbeat_interval;
        options.presence_ttl = self.presence_ttl;
        options.pool_size = self.redis_pool_size;
        Some(options)
    }
}
