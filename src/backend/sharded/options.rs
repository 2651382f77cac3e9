//! The settings of the sharded backend: the shards' URLs, in order, and
//! every other knob as for one Redis.
//!
//! The knobs are a [`RedisOptions`] rather than a copy of its fields, so a
//! setting added to the single-Redis backend (a timeout, a pool size)
//! applies to every shard without being written twice; its `url` is
//! replaced by each shard's own.

use super::hash::shard_of;
use crate::backend::channels::ChannelNames;
use crate::backend::error::BackendError;
use crate::backend::redis::options::{RedisOptions, redact};
use crate::group::GroupName;

/// Settings of the sharded backend: N independent Redis, each group on
/// one of them ([`ShardedOptions::shard_of`]). Shard 0 also carries the
/// cluster channel, node presence and worker leases.
#[derive(Debug, Clone)]
pub struct ShardedOptions {
    /// The shards, in order. The order decides where each group lives:
    /// add shards at the end only.
    pub urls: Vec<String>,
    /// Everything else, for every shard (its `url` is not used).
    pub redis: RedisOptions,
}

impl ShardedOptions {
    /// Defaults ([`RedisOptions::new`]) for the shards `urls`.
    pub fn new<S: Into<String>>(urls: impl IntoIterator<Item = S>) -> Self {
        let (urls, redis) = RedisOptions::for_urls(urls);
        ShardedOptions { urls, redis }
    }

    /// The settings of shard `index`: [`ShardedOptions::redis`] with that
    /// shard's URL.
    pub fn shard(&self, index: usize) -> Option<RedisOptions> {
        Some(self.redis.at(self.urls.get(index)?))
    }

    /// Which shard `group` is on (an index into [`ShardedOptions::urls`]).
    pub fn shard_of(&self, group: &GroupName) -> usize {
        shard_of(group.as_str(), self.urls.len())
    }

    /// Checks every URL and the shared settings; returns the channel
    /// naming.
    pub fn validate(&self) -> Result<ChannelNames, BackendError> {
        let mode = ("sharded", "Redis URL");
        self.redis
            .validate_each(&self.urls, mode, |index, url, checked| {
                let names = checked?;
                if self.urls[..index].iter().any(|earlier| earlier == url) {
                    return Err(BackendError::InvalidOptions(format!(
                        "shard {index} repeats an earlier shard's URL {}",
                        redact(url)
                    )));
                }
                Ok(names)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_one_by_one() {
        assert!(
            ShardedOptions::new(["redis://a:1", "redis://b:1"])
                .validate()
                .is_ok()
        );
        assert!(matches!(
            ShardedOptions::new(Vec::<String>::new()).validate(),
            Err(BackendError::InvalidOptions(_))
        ));
        assert!(matches!(
            ShardedOptions::new(["redis://a:1", "http://b"]).validate(),
            Err(BackendError::InvalidUrl(_))
        ));
        assert!(matches!(
            ShardedOptions::new(["redis://a:1", "redis://a:1"]).validate(),
            Err(BackendError::InvalidOptions(_))
        ));
    }

    #[test]
    fn each_shard_gets_its_own_url_and_the_shared_settings() {
        let mut options = ShardedOptions::new(["redis://a:1", "redis://b:2"]);
        options.redis.pool_size = 3;
        let shard = options.shard(1).unwrap();
        assert_eq!(shard.url, "redis://b:2");
        assert_eq!(shard.pool_size, 3);
        assert!(options.shard(2).is_none());
    }
}
