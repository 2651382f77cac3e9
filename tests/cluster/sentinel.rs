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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common;
use crate::common::http::get_json;
use crate::common::node::NodeProcess;
use crate::common::redis::{fast_options, three_nodes_on, wait_subscribed};
use crate::common::sentinel::{MASTER, TestSentinel};
use crate::common::silence::marker_is_next;
use crate::common::{TestServer, wait_until_async};
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
    let mut members = Vec::new();
    for node in &nodes {
        members.push(node.connect(group).await);
    }
    let all: Vec<&TestServer> = nodes.iter().collect();
    wait_subscribed(&all, "group:task-1").await;

    // On the primary the Sentinels name.
    let (_, info) = get_json(&nodes[1].http_url("/api/info")).await;
    assert_eq!(info["mode"], "sentinel");
    assert_eq!(
        info["redis"][0]["redis"],
        format!("127.0.0.1:{}", sentinel.base)
    );
    // A raw PUBLISH on the primary reaches every member.
    let mut primary = redis::Client::open(format!("redis://127.0.0.1:{}", sentinel.base))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(
        common::redis::publish(&mut primary, "group:task-1", "raw").await,
        3
    );
    for member in &mut members {
        marker_is_next(member, "raw", "a raw publish").await;
    }

    // Per-publisher order: nodes a and b, 1,000 messages each, at once.
    let publishers: Vec<_> = [("a", &nodes[0]), ("b", &nodes[1])]
        .into_iter()
        .map(|(name, node)| {
            let hub = node.hub.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    hub.to(group).send(format!("{name}:{i}")).unwrap();
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    for member in &mut members {
        let mut next: HashMap<String, usize> = HashMap::new();
        for _ in 0..2 * N {
            let text = member.recv_text().await;
            let (from, i) = text.split_once(':').expect("name:index");
            let expected = next.entry(from.to_string()).or_default();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                *expected,
                "{from} out of order"
            );
            *expected += 1;
        }
    }

    // The binary, in the same mode from its flags, finds the primary too.
    let binary = NodeProcess::spawn_clustered(
        "sentinel-binary",
        &sentinel.sentinels().join(","),
        &[
            "--redis-mode",
            "sentinel",
            "--redis-sentinel-master",
            MASTER,
        ],
    );
    binary.wait_ready().await;
    let mut on_binary = binary.connect(group, 4).await;
    wait_until_async("the binary subscribed on the primary", || {
        let mut primary = primary.clone();
        async move {
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("group:task-1")
                .query_async(&mut primary)
                .await
                .expect("PUBSUB NUMSUB");
            n == 4
        }
    })
    .await;
    nodes[1].hub.to(group).send("to the binary").unwrap();
    assert_eq!(on_binary.recv_text().await, "to the binary");
    for member in &mut members {
        marker_is_next(member, "to the binary", "the binary's check").await;
    }

    // The primary dies; the Sentinels promote the replica.
    let killed_at = sentinel.kill(sentinel.base).await;
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let hub = nodes[0].hub.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) && k < 1200 {
                let _ = hub.to(group).send(format!("probe-{k}"));
                k += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Nodes b and c hear node a's probes again once all three follow the
    // new primary (node a's own member gets them locally all along).
    let mut resumed = Vec::new();
    for member in members.iter_mut().skip(1) {
        loop {
            let text = tokio::time::timeout(Duration::from_secs(60), member.recv_text())
                .await
                .expect("delivery resumed within 60 s");
            if text.starts_with("probe-") {
                resumed.push(killed_at.elapsed());
                break;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    prober.await.unwrap();
    assert_eq!(
        sentinel.primary_port().await,
        sentinel.base + 1,
        "the replica was promoted"
    );
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
