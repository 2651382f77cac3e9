//! The Sentinel mode (`--redis-mode sentinel`): a primary, a replica and
//! three Sentinels in one container, three groupcast nodes in process,
//! real WebSocket clients.
//!
//! Delivery across nodes and per-publisher order over 1,000 messages on
//! the primary the Sentinels name; then the primary is killed, the
//! Sentinels promote the replica, and delivery resumes on every node (the
//! time it took is printed: run with `--nocapture`).
//!
//! One container (`REDIS_SENTINEL_IMAGE`, default `local/redis-sentinel:7`
//! from `scripts/build-local-images.sh`).

use crate::common;
use crate::common::http::get_json;
use crate::common::multinode::{
    api_info_connections, assert_bursts_in_order, members_on_every_node, probe_until_each_hears,
    publish_bursts_from_a_and_b, the_binary_hears,
};
use crate::common::node::NodeProcess;
use crate::common::redis::{fast_options, numsub, three_nodes_on};
use crate::common::sentinel::{MASTER, TestSentinel};
use crate::common::silence::marker_is_next;
use crate::common::wait_until_async;
use groupcast::Config;
use groupcast::backend::sentinel::SentinelOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_follows_the_primary_through_a_sentinel_failover() {
    const N: usize = 1000;
    let sentinel = TestSentinel::start().await;
    let mut options = SentinelOptions::new(sentinel.sentinels(), MASTER);
    options.redis = fast_options(String::new());
    let config = Config {
        queue_len: 4 * N,
        ..Config::default()
    };
    let nodes = three_nodes_on(|| options.clone(), |b| b.config(config.clone())).await;
    let group = "task-1";
    let mut members = members_on_every_node(&nodes, group).await;

    // On the primary the Sentinels name.
    let redis = api_info_connections(&nodes[1], "sentinel").await;
    assert_eq!(redis[0]["redis"], format!("127.0.0.1:{}", sentinel.base));
    // A raw PUBLISH on the primary reaches every member.
    let mut primary = sentinel.first_primary().await;
    assert_eq!(
        common::redis::publish(&mut primary, "group:task-1", "raw").await,
        3
    );
    for member in &mut members {
        marker_is_next(member, "raw", "a raw publish").await;
    }

    // Per-publisher order: nodes a and b, 1,000 messages each, at once.
    publish_bursts_from_a_and_b(&nodes, &[group], N).await;
    for member in &mut members {
        assert_bursts_in_order(member, N, group).await;
    }

    // The binary, in the same mode from its flags, finds the primary too.
    let binary = NodeProcess::start_clustered(
        "sentinel-binary",
        &sentinel.sentinels().join(","),
        &[
            "--redis-mode",
            "sentinel",
            "--redis-sentinel-master",
            MASTER,
        ],
    )
    .await;
    let mut on_binary = binary.connect(group, 4).await;
    wait_until_async("the binary subscribed on the primary", || {
        let mut primary = primary.clone();
        async move { numsub(&mut primary, "group:task-1").await == 4 }
    })
    .await;
    the_binary_hears(&nodes[1], group, &mut on_binary).await;
    for member in &mut members {
        marker_is_next(member, "to the binary", "the binary's check").await;
    }

    // The primary dies; the Sentinels promote the replica.
    let killed_at = sentinel.kill(sentinel.base).await;
    // Nodes b and c hear node a's probes again once all three follow the
    // new primary (node a's own member gets them locally all along).
    let resumed = probe_until_each_hears(&nodes[0].hub, group, &mut members[1..], killed_at).await;
    // The Sentinel asked here may learn of the promotion a moment after the
    // one the nodes asked (their new configuration spreads by hello
    // messages): wait for it rather than ask once.
    wait_until_async("the first Sentinel names the promoted replica", || async {
        sentinel.primary_port().await == sentinel.base + 1
    })
    .await;
    wait_until_async("every node reports the new primary", || {
        let nodes = &nodes;
        let expected = format!("127.0.0.1:{}", sentinel.base + 1);
        async move {
            for node in nodes {
                let (_, info) = get_json(&node.http_url("/api/info")).await;
                if info["redis"][0]["redis"] != expected.as_str()
                    || info["redis"][0]["connected"] != true
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    eprintln!(
        "sentinel failover: primary {} killed; delivery resumed on nodes b and c after {resumed:?}",
        sentinel.base
    );
}
