//! Group workers in a cluster: exactly one ticker per group across three
//! nodes sharing a real Redis (testcontainers).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::node::NodeProcess;
use common::redis::{TestRedis, fast_options};
use common::{Client, TestServer, wait_until, wait_until_async};
use groupcast::workers::ticker;
use groupcast::{Hub, WorkerOptions};
use serde_json::Value;

const PERIOD: Duration = Duration::from_millis(300);
const LEASE_TTL: Duration = Duration::from_millis(1500);

async fn three_nodes(redis: &TestRedis) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let hub = Hub::builder()
            .node_id(format!("node-{name}"))
            .redis(fast_options(redis.url()))
            .worker_options(WorkerOptions {
                lease_ttl: LEASE_TTL,
                linger: Duration::from_millis(600),
                ..WorkerOptions::default()
            })
            .build()
            .unwrap();
        hub.notify("ticker_ws", ticker(PERIOD)).unwrap();
        nodes.push(TestServer::start(hub).await);
    }
    wait_until("every node reaches Redis", || {
        nodes.iter().all(|n| n.hub.status().connected)
    })
    .await;
    nodes
}

/// A tick: (node that sent it, its number).
async fn next_tick(client: &mut Client) -> (String, u64) {
    let tick: Value = serde_json::from_str(&client.recv_text().await).unwrap();
    (
        tick["node"].as_str().unwrap().to_string(),
        tick["tick"].as_u64().unwrap(),
    )
}

fn running_anywhere(nodes: &[TestServer]) -> usize {
    nodes.iter().map(|n| n.hub.workers().len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticker_per_group_across_three_nodes_and_it_follows_membership() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis).await;

    // No members anywhere: no lease is taken, no worker runs.
    assert_eq!(running_anywhere(&nodes), 0);
    assert!(!redis.exists("groupcast:worker:ticker_ws").await);

    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.connect("ticker_ws").await);
    }

    // Over ten periods every member gets one tick per period from one
    // node: consecutive numbers, no repeats (three workers would send
    // every number three times, from three nodes).
    for client in &mut clients {
        let (node, mut last) = next_tick(client).await;
        for _ in 0..10 {
            let (from, tick) = next_tick(client).await;
            assert_eq!(from, node, "ticks came from two nodes");
            assert_eq!(tick, last + 1, "a tick was repeated or skipped");
            last = tick;
        }
    }
    assert_eq!(running_anywhere(&nodes), 1, "exactly one worker runs");
    let leases: Value = reqwest::get(nodes[0].http_url("/api/workers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(leases["workers"].as_array().unwrap().len(), 1);
    assert_eq!(leases["workers"][0]["group"], "ticker_ws");

    // Everyone leaves: the worker stops everywhere after the linger, and
    // its lease is released.
    drop(clients);
    wait_until("the worker stops everywhere", || {
        running_anywhere(&nodes) == 0
    })
    .await;
    wait_until_async("the lease is released", || async {
        !redis.exists("groupcast:worker:ticker_ws").await
    })
    .await;

    // A new member, on any node, starts it again.
    let mut again = nodes[2].connect("ticker_ws").await;
    let (_, tick) = next_tick(&mut again).await;
    assert_eq!(tick, 1, "a fresh worker starts from tick 1");
    assert_eq!(running_anywhere(&nodes), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_is_replaced_within_the_lease_ttl_plus_a_period() {
    let redis = TestRedis::start().await;
    let url = redis.url();
    let args = [
        "--redis-url",
        &url,
        "--client-messages",
        "none",
        "--ticker",
        "ticker_ws=300ms",
        "--worker-lease-ttl",
        "1500ms",
        "--worker-linger",
        "1s",
        "--heartbeat-interval",
        "200ms",
        "--presence-ttl",
        "1s",
    ];
    let mut nodes: Vec<NodeProcess> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| NodeProcess::spawn(name, &args))
        .collect();
    for node in &nodes {
        node.wait_ready().await;
    }
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(Client::connect(&node.ws_url("ticker_ws")).await);
    }
    let (holder, _) = next_tick(&mut clients[0]).await;
    let holder_index = nodes
        .iter()
        .position(|n| n.name == holder)
        .expect("the holder is one of ours");

    // SIGKILL the holder: no release, its lease must expire.
    nodes[holder_index].kill();
    let killed_at = Instant::now();
    clients.remove(holder_index);

    // The survivors' clients: ticks from the dead node may still be in
    // flight; the first tick from another node must come within the lease
    // TTL plus a poll (a third of it) plus one period, and from then on
    // every tick comes from that one node, one per number.
    let bound = LEASE_TTL + LEASE_TTL / 3 + PERIOD + Duration::from_millis(500);
    let mut successors = BTreeSet::new();
    for client in &mut clients {
        let (mut from, mut last) = next_tick(client).await;
        while from == holder {
            (from, last) = next_tick(client).await;
        }
        assert!(
            killed_at.elapsed() <= bound + Duration::from_secs(1),
            "takeover took {:?}",
            killed_at.elapsed()
        );
        for _ in 0..5 {
            let (next_from, tick) = next_tick(client).await;
            assert_eq!(next_from, from, "two live holders ticked");
            assert_eq!(tick, last + 1, "a period got two ticks or none");
            last = tick;
        }
        successors.insert(from);
    }
    assert_eq!(
        successors.len(),
        1,
        "both survivors' clients hear the same new holder: {successors:?}"
    );
    let new_holder = successors.into_iter().next().unwrap();
    assert_ne!(new_holder, holder);
}
