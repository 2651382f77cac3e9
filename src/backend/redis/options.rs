//! The settings of the Redis backend, and how they are checked.
//!
//! Every default is defined here, once: the binary's flags show these
//! values in `--help` rather than repeating them.

use std::time::Duration;

use crate::backend::channels::{ChannelNames, DEFAULT_CLUSTER_CHANNEL, DEFAULT_GROUP_PREFIX};
use crate::backend::error::BackendError;

/// Settings of the Redis backend. Build with [`RedisOptions::new`] and
/// change the fields you need; pass it to
/// [`HubBuilder::backend`](crate::HubBuilder::backend).
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
    /// How long a heartbeat counts: a node not heard from for this long is
    /// gone from the view.
    pub presence_ttl: Duration,
    /// Name of the presence keys: `{<presence_key>}:info` (a hash, node →
    /// its JSON) and `{<presence_key>}:seen` (a sorted set, node → last
    /// heartbeat). The braces put both in one Redis Cluster slot.
    pub presence_key: String,
    /// Key prefix of worker leases: `<lease_prefix><group>`.
    pub lease_prefix: String,
    /// Connections in the pool shared by publishing, presence and leases.
    pub pool_size: usize,
    /// How long a Redis command (publish, ping) may take.
    pub command_timeout: Duration,
    /// How often the subscriber connection is health-checked with PING.
    pub health_interval: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Publishes that may wait for Redis; beyond this, a publish fails at
    /// once (its ack says so) instead of piling up in memory.
    pub publish_queue_len: usize,
}

impl RedisOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            channel_prefix: DEFAULT_GROUP_PREFIX.into(),
            cluster_channel: DEFAULT_CLUSTER_CHANNEL.into(),
            unsubscribe_linger: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(6),
            presence_key: "groupcast:nodes".into(),
            lease_prefix: "groupcast:worker:".into(),
            pool_size: 8,
            command_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            publish_queue_len: 65_536,
        }
    }

    /// Checks the URL's scheme and the relations between fields; returns
    /// the channel naming they describe.
    pub fn validate(&self) -> Result<ChannelNames, BackendError> {
        let scheme = self
            .url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("redis" | "rediss")) {
            return Err(BackendError::InvalidUrl(format!(
                "{}: the scheme must be redis:// or rediss://",
                redact(&self.url)
            )));
        }
        let invalid = |what: &str| Err(BackendError::InvalidOptions(what.to_string()));
        if self.pool_size == 0 {
            return invalid("the pool size must be greater than zero");
        }
        if self.publish_queue_len == 0 {
            return invalid("the publish queue length must be greater than zero");
        }
        for (name, value) in [
            ("heartbeat interval", self.heartbeat_interval),
            ("command timeout", self.command_timeout),
            ("health interval", self.health_interval),
            ("backoff minimum", self.backoff_min),
        ] {
            if value.is_zero() {
                return Err(BackendError::InvalidOptions(format!(
                    "the {name} must be greater than zero"
                )));
            }
        }
        if self.backoff_max < self.backoff_min {
            return invalid("the backoff maximum must not be below the backoff minimum");
        }
        if self.presence_ttl <= self.heartbeat_interval {
            return invalid("the presence TTL must be longer than the heartbeat interval");
        }
        if self.presence_key.is_empty() || self.lease_prefix.is_empty() {
            return invalid("the presence key and the lease prefix must not be empty");
        }
        ChannelNames::new(&self.channel_prefix, &self.cluster_channel)
            .map_err(|e| BackendError::InvalidOptions(e.to_string()))
    }

    /// These settings at `url`: a shard's, a seed's, a Sentinel's (the
    /// modes of several servers keep one `RedisOptions` for all of them).
    pub(crate) fn at(&self, url: &str) -> RedisOptions {
        RedisOptions {
            url: url.to_string(),
            ..self.clone()
        }
    }

    /// `urls` as given, and defaults for the first of them: what the
    /// constructors of the modes of several servers start from.
    pub(crate) fn for_urls<S: Into<String>>(
        urls: impl IntoIterator<Item = S>,
    ) -> (Vec<String>, RedisOptions) {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        let first = RedisOptions::new(urls.first().cloned().unwrap_or_default());
        (urls, first)
    }

    /// Checks these settings at each of `urls` in turn, each result passed
    /// through `also` (what a mode asks more of its URLs: no repeated
    /// shard, database 0 on a cluster, the Sentinel's wording); returns
    /// the channel naming. No URL at all fails as "the `mode` mode needs at
    /// least one `what`".
    pub(crate) fn validate_each(
        &self,
        urls: &[String],
        (mode, what): (&str, &str),
        mut also: impl FnMut(
            usize,
            &str,
            Result<ChannelNames, BackendError>,
        ) -> Result<ChannelNames, BackendError>,
    ) -> Result<ChannelNames, BackendError> {
        let mut names = Err(BackendError::InvalidOptions(format!(
            "the {mode} mode needs at least one {what}"
        )));
        for (index, url) in urls.iter().enumerate() {
            names = Ok(also(index, url, self.at(url).validate())?);
        }
        names
    }
}

/// Makes TLS possible when one of `urls` asks for it (`rediss://`): rustls
/// needs a process-wide crypto provider. Ours is ring; if the application
/// installed one already, that one stays.
pub(crate) fn prepare_tls<'a>(urls: impl IntoIterator<Item = &'a String>) {
    let tls = |url: &str| {
        url.get(..9)
            .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"))
    };
    if urls.into_iter().any(|url| tls(url)) {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `redis://user:secret@host` → `redis://***@host`, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let ok = |url: &str| RedisOptions::new(url).validate();
        assert!(ok("redis://127.0.0.1:6379").is_ok());
        assert!(ok("redis://user:secret@redis.example:6379/2").is_ok());
        assert!(ok("rediss://redis.example").is_ok());
        assert!(matches!(ok("http://x"), Err(BackendError::InvalidUrl(_))));
        assert!(matches!(
            ok("127.0.0.1:6379"),
            Err(BackendError::InvalidUrl(_))
        ));
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact("redis://u:p@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let error = RedisOptions::new("http://u:secret@h")
            .validate()
            .unwrap_err();
        assert!(!error.to_string().contains("secret"));
    }

    #[test]
    fn options_are_checked() {
        let mut options = RedisOptions::new("redis://h");
        options.presence_ttl = options.heartbeat_interval;
        assert!(matches!(
            options.validate(),
            Err(BackendError::InvalidOptions(_))
        ));
        let mut options = RedisOptions::new("redis://h");
        options.cluster_channel = "group:all".into();
        assert!(matches!(
            options.validate(),
            Err(BackendError::InvalidOptions(_))
        ));
    }
}
