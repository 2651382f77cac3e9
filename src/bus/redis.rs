//! PLACEHOLDER being replaced by the Redis bus implementation.

use std::time::Duration;

use bytes::Bytes;

use super::{BoxFuture, Bus, BusContext, BusStatus, Channel, NodeInfo, PublishAck};
use crate::error::BusError;
use crate::group::GroupName;

/// Settings of the Redis bus.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS.
    pub url: String,
    /// Prefix of group channels: `group:` makes `group:<name>`.
    pub channel_prefix: String,
    /// The channel every node subscribes to (broadcast-all, session lists).
    pub cluster_channel: String,
    /// How long to stay subscribed after a group's last local member left.
    pub unsubscribe_linger: Duration,
    /// How often this node writes its presence heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a heartbeat lives: a dead node vanishes after this.
    pub presence_ttl: Duration,
    /// Key prefix for presence entries.
    pub presence_prefix: String,
    /// Connections in the publishing pool.
    pub pool_size: usize,
    /// How long a Redis command (publish, ping) may take.
    pub command_timeout: Duration,
    /// How often the subscriber connection is health-checked with PING.
    pub health_interval: Duration,
    /// First and largest reconnect delay.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl RedisOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            channel_prefix: "group:".into(),
            cluster_channel: "groupcast:cluster".into(),
            unsubscribe_linger: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(6),
            presence_prefix: "groupcast:node:".into(),
            pool_size: 8,
            command_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The Redis bus.
pub struct RedisBus {}

impl RedisBus {
    /// Starts the bus's tasks.
    pub fn start(_options: RedisOptions, _context: BusContext) -> Result<Self, BusError> {
        Err(BusError::Unavailable("not yet implemented".into()))
    }
}

impl Bus for RedisBus {
    fn is_clustered(&self) -> bool {
        true
    }
    fn publish(&self, _channel: Channel, _payload: Bytes) -> PublishAck {
        PublishAck::done()
    }
    fn subscribe(&self, _group: &GroupName) {}
    fn unsubscribe(&self, _group: &GroupName) {}
    fn status(&self) -> BusStatus {
        BusStatus {
            kind: "redis",
            connected: false,
            subscriptions: vec![],
            last_error: None,
        }
    }
    fn nodes(&self) -> BoxFuture<'_, Result<Option<Vec<NodeInfo>>, BusError>> {
        Box::pin(async { Ok(None) })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
