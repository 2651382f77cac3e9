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
use std::sync::OnceLock;
use std::time::Duration;

use groupcast::backend::IntoBackend;
use groupcast::backend::redis::RedisOptions;
use groupcast::backend::sharded::ShardedOptions;
use groupcast::{Hub, HubBuilder};

use super::TestServer;
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
        let redis = TestRedis::start_with_cmd(&[]).await;
        redis.wait_until_up().await;
        redis
    }

    /// Starts the image with `cmd` as its command (none: the image's own),
    /// once its log says it is ready. (A server with ACLs may refuse the
    /// PING that [`TestRedis::start`] waits for.)
    pub async fn start_with_cmd(cmd: &[&str]) -> TestRedis {
        let image = std::env::var("REDIS_IMAGE").unwrap_or_else(|_| "redis:7-alpine".into());
        let (name, tag) = split_image(&image);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            let mut request = GenericImage::new(name.clone(), tag.clone())
                .with_exposed_port(6379.tcp())
                .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
                .with_mapped_port(port, 6379.tcp())
                .with_startup_timeout(Duration::from_secs(30));
            if !cmd.is_empty() {
                request = request.with_cmd(cmd.iter().map(|s| s.to_string()));
            }
            match request.start().await {
                Ok(container) => return TestRedis { container, port },
                // Something else took the port between the check and
                // Docker's bind (a load test churning through ephemeral
                // ports, another suite): pick another one.
                Err(e) if attempts < 5 && e.to_string().contains("address already in use") => {
                    continue;
                }
                Err(e) => panic!(
                    "cannot start a Redis container from {image:?}: {e}\n\
                     (no registry here? run scripts/build-local-images.sh and set \
                     REDIS_IMAGE=local/redis:7)"
                ),
            }
        }
    }

    /// One Redis for every test of this test binary that asks for it,
    /// started on first use and removed when the binary exits. A binary
    /// holds several files' tests (`tests/node/`, `tests/cluster/`), and
    /// they run concurrently: only for tests that do not interfere on it,
    /// with group names and node ids no other test of the binary uses, no
    /// broadcast to all nodes, no cluster-wide views, and never stop,
    /// restart or pause it.
    pub fn shared() -> &'static TestRedis {
        static SHARED: OnceLock<TestRedis> = OnceLock::new();
        static ID: OnceLock<String> = OnceLock::new();
        extern "C" fn remove_shared() {
            if let Some(id) = ID.get() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v", id])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        SHARED.get_or_init(|| {
            // Its own runtime on its own thread: the tests' runtimes come
            // and go, the container stays.
            std::thread::spawn(|| {
                let runtime = tokio::runtime::Runtime::new().expect("a runtime");
                let redis = runtime.block_on(TestRedis::start());
                let _ = ID.set(redis.container.id().to_string());
                // SAFETY: registers a plain function to run at exit.
                unsafe { libc::atexit(remove_shared) };
                redis
            })
            .join()
            .expect("start the shared Redis")
        })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain client connection, as any program publishing to groupcast
    /// would have.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        connect(&self.url()).await
    }

    /// Runs the command `args` (its name first) on a new connection; its
    /// answer.
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        query(&mut self.client().await, args).await
    }

    /// `PUBLISH channel payload`; returns how many subscribers got it.
    pub async fn publish(&self, channel: &str, payload: impl AsRef<[u8]>) -> i64 {
        let mut conn = self.client().await;
        publish(&mut conn, channel, payload).await
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`).
    pub async fn numsub(&self, channel: &str) -> i64 {
        numsub(&mut self.client().await, channel).await
    }

    /// Channels with at least one subscriber matching `pattern`
    /// (`PUBSUB CHANNELS`).
    pub async fn channels(&self, pattern: &str) -> Vec<String> {
        self.query(&["PUBSUB", "CHANNELS", pattern]).await
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> bool {
        self.query::<i64>(&["EXISTS", key]).await == 1
    }

    /// How often Redis has run `command` since it started (`INFO
    /// commandstats`; 0 when never).
    pub async fn command_calls(&self, command: &str) -> u64 {
        let info: String = self.query(&["INFO", "commandstats"]).await;
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        info.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0)
    }

    /// Whether the presence hash holds an entry for `node` (the default
    /// presence key).
    pub async fn presence_has(&self, node: &str) -> bool {
        self.query::<i64>(&["HEXISTS", "{groupcast:nodes}:info", node])
            .await
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

/// A plain connection to the Redis server at `url`.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap_or_else(|e| panic!("a Redis url {url:?}: {e}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Runs the command `args` (its name first, e.g. `["PUBSUB", "NUMSUB",
/// channel]`) on `conn`; its answer. Panics naming the command when it
/// fails.
pub async fn query<T: redis::FromRedisValue>(
    conn: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let (name, rest) = args.split_first().expect("a command");
    redis::cmd(name)
        .arg(rest)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

/// Subscribers of `channel` (`PUBSUB NUMSUB`) on `conn`'s server.
pub async fn numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let (_, n): (String, i64) = query(conn, &["PUBSUB", "NUMSUB", channel]).await;
    n
}

/// Shuts the server at `url` down as if it crashed (`SHUTDOWN NOSAVE`: no
/// save, no handover); the moment it was told to.
pub async fn shutdown_nosave(url: &str) -> std::time::Instant {
    let mut conn = connect(url).await;
    // The connection drops instead of answering.
    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<redis::Value>(&mut conn)
        .await;
    std::time::Instant::now()
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

/// A TCP port free on this machine right now, on every address (Docker
/// publishes on 0.0.0.0, so a port free only on 127.0.0.1 is not enough).
///
/// Picked *below* the ephemeral range (`ip_local_port_range`), so that no
/// outgoing connection of a busy machine (a load test, another suite) can
/// take it between this check and the bind of the process or container
/// that gets it — nor while a stopped Redis container waits to start again
/// on it. Never the same port twice in one test binary.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive TCP ports free right now (see
/// [`free_port`]): for a container whose ports must be the same inside
/// and outside (a Redis Cluster or Sentinel announcing them).
pub fn free_ports(n: u16) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 15000u16;
    for _ in 0..10_000 {
        let base = if ephemeral_start > low + 1000 + n {
            low + (rand::random::<u16>() % (ephemeral_start - low - n))
        } else {
            // An unusual range: let the OS pick.
            TcpListener::bind("0.0.0.0:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("pick a free port")
        };
        let ports = base..base.saturating_add(n);
        if ports
            .clone()
            .any(|p| given.contains(&p) || TcpListener::bind(("0.0.0.0", p)).is_err())
        {
            continue;
        }
        given.extend(ports);
        return base;
    }
    panic!("no free TCP port found");
}

/// Cluster timings short enough that lingers, heartbeats, presence expiry
/// and Redis outages take moments in a test: linger and heartbeat 200 ms,
/// presence TTL 1 s, command timeout 500 ms, health checks every 200 ms,
/// reconnect backoff 50–300 ms. `FAST_NODE_ARGS` is the same for spawned
/// binaries.
pub fn fast_options(url: String) -> RedisOptions {
    let mut options = RedisOptions::new(url);
    options.unsubscribe_linger = Duration::from_millis(200);
    options.heartbeat_interval = Duration::from_millis(200);
    options.presence_ttl = Duration::from_secs(1);
    options.command_timeout = Duration::from_millis(500);
    options.health_interval = Duration::from_millis(200);
    options.backoff_min = Duration::from_millis(50);
    options.backoff_max = Duration::from_millis(300);
    options
}

/// `fast_options` as command-line flags of the `groupcast` binary.
pub const FAST_NODE_ARGS: &[&str] = &[
    "--unsubscribe-linger",
    "200ms",
    "--heartbeat-interval",
    "200ms",
    "--presence-ttl",
    "1s",
    "--redis-command-timeout",
    "500ms",
    "--redis-health-interval",
    "200ms",
    "--redis-backoff-max",
    "300ms",
];

/// `n` Redis containers, started at once.
pub async fn start_many(n: usize) -> Vec<TestRedis> {
    futures_util::future::join_all((0..n).map(|_| TestRedis::start())).await
}

/// [`fast_options`] for every shard of `shards`, in order.
pub fn fast_sharded(shards: &[TestRedis]) -> ShardedOptions {
    let mut options = ShardedOptions::new(shards.iter().map(TestRedis::url));
    options.redis = fast_options(String::new());
    options
}

/// Three in-process nodes like [`three_nodes`], each on the backend
/// `backend()` makes.
pub async fn three_nodes_on<B: IntoBackend>(
    backend: impl Fn() -> B,
    configure: impl Fn(HubBuilder) -> HubBuilder,
) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let builder = Hub::builder()
            .node_id(format!("node-{name}"))
            .backend(backend());
        let hub = configure(builder).build().expect("build a clustered hub");
        nodes.push(TestServer::start(hub).await);
    }
    super::wait_until("every node is connected", || {
        nodes.iter().all(|n| n.hub.status().connected)
    })
    .await;
    nodes
}

/// Three in-process nodes, `node-a`, `node-b`, `node-c`, on `redis` with
/// [`fast_options`], each serving the full router on loopback; `configure`
/// adds to each node's builder. Returns once every node is connected.
pub async fn three_nodes(
    redis: &TestRedis,
    configure: impl Fn(HubBuilder) -> HubBuilder,
) -> Vec<TestServer> {
    three_nodes_on(|| fast_options(redis.url()), configure).await
}

/// Waits until every node in `nodes` is subscribed to `channel`.
pub async fn wait_subscribed(nodes: &[&TestServer], channel: &str) {
    super::wait_until(&format!("every node subscribed to {channel}"), || {
        nodes
            .iter()
            .all(|n| n.hub.status().subscriptions.iter().any(|s| s == channel))
    })
    .await;
}
