//! A real Redis for the cluster tests, in a container (testcontainers).
//!
//! The image comes from `REDIS_IMAGE` (default `redis:7-alpine`). No
//! registry is reachable on the build machines, so there the tests run with
//! `REDIS_IMAGE=local/redis:7`, built by `scripts/build-local-images.sh`.
//!
//! The container's port 6379 is published on a host port picked free
//! beforehand and fixed, not on a random one: Docker picks a new random
//! port when a stopped container starts again, and the restart test needs
//! the nodes to find Redis where it was.

use std::net::TcpListener;
use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// One Redis server in a container, removed when dropped.
pub struct TestRedis {
    container: ContainerAsync<GenericImage>,
    /// The host port Redis is published on (127.0.0.1).
    pub port: u16,
}

impl TestRedis {
    /// Starts Redis and waits until it accepts connections.
    pub async fn start() -> TestRedis {
        let image = std::env::var("REDIS_IMAGE").unwrap_or_else(|_| "redis:7-alpine".into());
        let (name, tag) = split_image(&image);
        let port = free_port();
        let container = GenericImage::new(name, tag)
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .with_mapped_port(port, 6379.tcp())
            .with_startup_timeout(Duration::from_secs(30))
            .start()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start a Redis container from {image:?}: {e}\n\
                     (no registry here? run scripts/build-local-images.sh and set \
                     REDIS_IMAGE=local/redis:7)"
                )
            });
        let redis = TestRedis { container, port };
        redis.wait_until_up().await;
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain client connection, as any program publishing to groupcast
    /// would have.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test Redis")
    }

    /// `PUBLISH channel payload`; returns how many subscribers got it.
    pub async fn publish(&self, channel: &str, payload: impl AsRef<[u8]>) -> i64 {
        let mut conn = self.client().await;
        publish(&mut conn, channel, payload).await
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`).
    pub async fn numsub(&self, channel: &str) -> i64 {
        let mut conn = self.client().await;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        n
    }

    /// Channels with at least one subscriber matching `pattern`
    /// (`PUBSUB CHANNELS`).
    pub async fn channels(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.client().await;
        redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB CHANNELS")
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> bool {
        let mut conn = self.client().await;
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut conn)
            .await
            .expect("EXISTS")
            == 1
    }

    /// Stops the container (Redis exits; its clients see their connections
    /// close, and new connections are refused).
    pub async fn stop(&self) {
        self.container
            .stop_with_timeout(Some(2))
            .await
            .expect("stop the Redis container");
    }

    /// Starts the stopped container again, on the same host port.
    pub async fn restart(&self) {
        self.container
            .start()
            .await
            .expect("start the Redis container");
        self.wait_until_up().await;
    }

    /// Freezes Redis: connections stay open, nothing answers.
    pub async fn pause(&self) {
        self.container.pause().await.expect("pause Redis");
    }

    pub async fn unpause(&self) {
        self.container.unpause().await.expect("unpause Redis");
    }

    async fn wait_until_up(&self) {
        let client = redis::Client::open(self.url()).expect("redis url");
        super::wait_until_async("Redis answers PING", || {
            let client = client.clone();
            async move {
                let Ok(Ok(mut conn)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.get_multiplexed_async_connection(),
                )
                .await
                else {
                    return false;
                };
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            }
        })
        .await;
    }
}

/// `PUBLISH channel payload` on an existing connection.
pub async fn publish(
    conn: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    payload: impl AsRef<[u8]>,
) -> i64 {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload.as_ref())
        .query_async(conn)
        .await
        .expect("PUBLISH")
}

/// `registry:5000/redis:7` → (`registry:5000/redis`, `7`); no tag → latest.
fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    }
}

/// A TCP port free on this machine right now (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("pick a free port")
}
