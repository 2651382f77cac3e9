//! The settings of the Sentinel backend: the Sentinels, the name of the
//! primary they watch, and every other knob as for one Redis.

use crate::backend::channels::ChannelNames;
use crate::backend::error::BackendError;
use crate::backend::redis::options::{RedisOptions, redact};

/// Settings of the Sentinel backend.
#[derive(Debug, Clone)]
pub struct SentinelOptions {
    /// The Sentinels (`redis://[user:password@]host:26379`), asked in turn.
    /// The primary is connected to with the first one's credentials, TLS
    /// and database, at the address Sentinel names.
    pub sentinels: Vec<String>,
    /// The name the Sentinels know the primary by (`sentinel monitor NAME ...`).
    pub master: String,
    /// Everything else (its `url` is not used). `health_interval` is also
    /// how often the Sentinels are asked where the primary is.
    pub redis: RedisOptions,
}

impl SentinelOptions {
    /// Defaults ([`RedisOptions::new`]) for the primary `master` watched
    /// by `sentinels`.
    pub fn new<S: Into<String>>(
        sentinels: impl IntoIterator<Item = S>,
        master: impl Into<String>,
    ) -> Self {
        let (sentinels, redis) = RedisOptions::for_urls(sentinels);
        SentinelOptions {
            sentinels,
            master: master.into(),
            redis,
        }
    }

    /// Checks the Sentinel URLs, the name and the shared settings; returns
    /// the channel naming.
    pub fn validate(&self) -> Result<ChannelNames, BackendError> {
        if self.master.trim().is_empty() {
            return Err(BackendError::InvalidOptions(
                "the sentinel mode needs the primary's name (--redis-sentinel-master)".into(),
            ));
        }
        let mode = ("sentinel", "Sentinel URL");
        self.redis
            .validate_each(&self.sentinels, mode, |_, url, checked| {
                checked.map_err(|e| match e {
                    BackendError::InvalidUrl(_) => {
                        BackendError::InvalidUrl(format!("{}: not a Sentinel URL", redact(url)))
                    }
                    other => other,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_and_the_name_are_checked() {
        assert!(
            SentinelOptions::new(["redis://s:26379"], "mymaster")
                .validate()
                .is_ok()
        );
        assert!(
            SentinelOptions::new(["redis://s:26379"], " ")
                .validate()
                .is_err()
        );
        assert!(
            SentinelOptions::new(Vec::<String>::new(), "m")
                .validate()
                .is_err()
        );
        assert!(matches!(
            SentinelOptions::new(["tcp://s:26379"], "m").validate(),
            Err(BackendError::InvalidUrl(_))
        ));
    }
}
