//! A real Redis Sentinel set-up for the sentinel-mode tests: a primary, a
//! replica and three Sentinels in one container (testcontainers).
//!
//! The image comes from `REDIS_SENTINEL_IMAGE` (default
//! `local/redis-sentinel:7`, built by `scripts/build-local-images.sh`).
//! As with the cluster, every server listens on a port picked free here
//! and published on the same host port, and announces 127.0.0.1, so the
//! primary's address the Sentinels give out is one this machine reaches.

use std::time::{Duration, Instant};

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::redis::{connect, free_ports, query, shutdown_nosave};

/// The name the Sentinels watch the primary under.
pub const MASTER: &str = "groupcast";

/// Primary on `base`, replica on `base + 1`, Sentinels on `base + 2..=4`.
pub struct TestSentinel {
    _container: ContainerAsync<GenericImage>,
    pub base: u16,
}

impl TestSentinel {
    /// Starts the set-up and waits until the Sentinels see the replica.
    pub async fn start() -> TestSentinel {
        let image = std::env::var("REDIS_SENTINEL_IMAGE")
            .unwrap_or_else(|_| "local/redis-sentinel:7".into());
        let (name, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
        let base = free_ports(5);
        let mut request = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::message_on_stdout("Sentinel ready"))
            .with_env_var("SENTINEL_BASE_PORT", base.to_string())
            .with_env_var("SENTINEL_MASTER_NAME", MASTER)
            .with_startup_timeout(Duration::from_secs(60));
        for port in base..base + 5 {
            request = request.with_mapped_port(port, port.tcp());
        }
        let container = request.start().await.unwrap_or_else(|e| {
            panic!(
                "cannot start a Sentinel container from {image:?}: {e}\n\
                 (run scripts/build-local-images.sh first)"
            )
        });
        TestSentinel {
            _container: container,
            base,
        }
    }

    /// The three Sentinels' URLs.
    pub fn sentinels(&self) -> Vec<String> {
        (2..5)
            .map(|i| format!("redis://127.0.0.1:{}", self.base + i))
            .collect()
    }

    /// The primary's port, as the first Sentinel names it now.
    pub async fn primary_port(&self) -> u16 {
        let mut conn = connect(&format!("redis://127.0.0.1:{}", self.base + 2)).await;
        let (_, port): (String, u16) =
            query(&mut conn, &["SENTINEL", "get-master-addr-by-name", MASTER]).await;
        port
    }

    /// A plain connection to the primary as the set-up starts (`base`).
    pub async fn first_primary(&self) -> redis::aio::MultiplexedConnection {
        connect(&format!("redis://127.0.0.1:{}", self.base)).await
    }

    /// Shuts the server on `port` down as if it crashed.
    pub async fn kill(&self, port: u16) -> Instant {
        shutdown_nosave(&format!("redis://127.0.0.1:{port}")).await
    }
}
