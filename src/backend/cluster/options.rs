//! The settings of the Redis Cluster backend: seed nodes, and every other
//! knob as for one Redis.
//!
//! As in the sharded mode, the knobs are a [`RedisOptions`] (its `url` is
//! replaced by the seeds), so a setting added there applies here too.

use crate::backend::channels::ChannelNames;
use crate::backend::error::BackendError;
use crate::backend::redis::options::{RedisOptions, redact};

/// Settings of the Redis Cluster backend.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Some nodes of the cluster (primaries or replicas): the rest is
    /// learnt from them (`CLUSTER SLOTS`). Their credentials and TLS apply
    /// to every node.
    pub seeds: Vec<String>,
    /// Everything else (its `url` is not used). `pool_size` does not apply:
    /// the cluster connection multiplexes one connection per node.
    pub redis: RedisOptions,
}

impl ClusterOptions {
    /// Defaults ([`RedisOptions::new`]) for the seed nodes `seeds`.
    pub fn new<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Self {
        let (seeds, redis) = RedisOptions::for_urls(seeds);
        ClusterOptions { seeds, redis }
    }

    /// Checks every seed URL and the shared settings; returns the channel
    /// naming.
    pub fn validate(&self) -> Result<ChannelNames, BackendError> {
        let mode = ("cluster", "seed node URL");
        self.redis
            .validate_each(&self.seeds, mode, |_, url, checked| {
                let names = checked?;
                let database = url.trim_end_matches('/').rsplit_once('/');
                if database.is_some_and(|(head, db)| {
                    head.contains("://") && !head.ends_with('/') && !db.is_empty() && db != "0"
                }) {
                    return Err(BackendError::InvalidOptions(format!(
                        "{}: a Redis Cluster has database 0 only",
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
    fn seeds_are_checked() {
        assert!(
            ClusterOptions::new(["redis://a:7000", "redis://b:7001"])
                .validate()
                .is_ok()
        );
        assert!(
            ClusterOptions::new(Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(matches!(
            ClusterOptions::new(["http://a:7000"]).validate(),
            Err(BackendError::InvalidUrl(_))
        ));
        assert!(matches!(
            ClusterOptions::new(["redis://a:7000/2"]).validate(),
            Err(BackendError::InvalidOptions(_))
        ));
        assert!(
            ClusterOptions::new(["redis://u:p@a:7000/0"])
                .validate()
                .is_ok()
        );
    }
}
