//! A real Redis Cluster for the cluster-mode tests: six nodes (3 primaries,
//! 3 replicas) in one container (testcontainers).
//!
//! The image comes from `REDIS_CLUSTER_IMAGE` (default
//! `local/redis-cluster:7`, built by `scripts/build-local-images.sh`). Its
//! nodes listen on six consecutive ports picked free here and published on
//! the same host ports, and announce 127.0.0.1: the addresses in MOVED
//! answers and `CLUSTER SLOTS` are the ones a client on this machine
//! reaches. The cluster bus (port + 10000) stays inside the container.

use std::time::{Duration, Instant};

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::redis::{connect, free_ports, query, shutdown_nosave};

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    /// Slot ranges it serves (primaries).
    pub slots: Vec<(u16, u16)>,
    pub failed: bool,
}

/// A Redis Cluster in a container, removed when dropped.
pub struct TestCluster {
    _container: ContainerAsync<GenericImage>,
    /// The first node's port; the others follow.
    pub base: u16,
}

impl TestCluster {
    /// Starts the cluster and waits until every node says `cluster_state:ok`.
    pub async fn start() -> TestCluster {
        let image =
            std::env::var("REDIS_CLUSTER_IMAGE").unwrap_or_else(|_| "local/redis-cluster:7".into());
        let (name, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
        let base = free_ports(6);
        let mut request = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::message_on_stdout("Cluster ready"))
            .with_env_var("CLUSTER_BASE_PORT", base.to_string())
            .with_startup_timeout(Duration::from_secs(60));
        for port in base..base + 6 {
            request = request.with_mapped_port(port, port.tcp());
        }
        let container = request.start().await.unwrap_or_else(|e| {
            panic!(
                "cannot start a Redis Cluster container from {image:?}: {e}\n\
                 (run scripts/build-local-images.sh first)"
            )
        });
        TestCluster {
            _container: container,
            base,
        }
    }

    /// Seed URLs for groupcast: two of the nodes.
    pub fn seeds(&self) -> Vec<String> {
        vec![
            format!("redis://127.0.0.1:{}", self.base),
            format!("redis://127.0.0.1:{}", self.base + 1),
        ]
    }

    /// A plain connection to the node on `port`.
    pub async fn conn(&self, port: u16) -> redis::aio::MultiplexedConnection {
        connect(&format!("redis://127.0.0.1:{port}")).await
    }

    /// `CLUSTER NODES`, asked of the node on `port`.
    pub async fn nodes_from(&self, port: u16) -> Vec<ClusterNode> {
        let text: String = query(&mut self.conn(port).await, &["CLUSTER", "NODES"]).await;
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let id = fields.first()?.to_string();
                let port: u16 = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                let flags = *fields.get(2)?;
                let slots = fields
                    .iter()
                    .skip(8)
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|range| match range.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => range.parse().ok().map(|s: u16| (s, s)),
                    })
                    .collect();
                Some(ClusterNode {
                    id,
                    port,
                    primary: flags.contains("master"),
                    slots,
                    failed: flags.contains("fail") && !flags.contains("fail?"),
                })
            })
            .collect()
    }

    /// The primary serving `slot`, as the node on `ask` sees it.
    pub async fn owner_of(&self, slot: u16, ask: u16) -> ClusterNode {
        self.nodes_from(ask)
            .await
            .into_iter()
            .find(|n| {
                n.primary && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// Runs the host's `redis-cli` with `args` against the node on `port`;
    /// its stdout.
    pub async fn redis_cli(&self, port: u16, args: &[&str]) -> String {
        let mut command = tokio::process::Command::new("redis-cli");
        command.arg("-p").arg(port.to_string()).args(args);
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("redis-cli finished in time")
            .expect("redis-cli runs (apt-get install redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Clients named `name` connected to the node on `port` (`CLIENT LIST`).
    pub async fn clients_named(&self, port: u16, name: &str) -> usize {
        let list: String = query(&mut self.conn(port).await, &["CLIENT", "LIST"]).await;
        let wanted = format!("name={name}");
        list.lines()
            .filter(|line| line.split_whitespace().any(|field| field == wanted))
            .count()
    }

    /// The ports of every node.
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        self.base..self.base + 6
    }

    /// Shuts the node on `port` down (as if it crashed: no save, no
    /// handover); returns when it is gone.
    pub async fn kill(&self, port: u16) -> Instant {
        shutdown_nosave(&format!("redis://127.0.0.1:{port}")).await
    }
}

/// Subscribers of the shard channel `channel` on `conn`'s node (`PUBSUB
/// SHARDNUMSUB`).
pub async fn shard_numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let (_, n): (String, i64) = query(conn, &["PUBSUB", "SHARDNUMSUB", channel]).await;
    n
}
