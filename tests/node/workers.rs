//! Group workers: a worker runs only while its group has members —
//! exactly one per group across a cluster.
//!
//! * on one node: it starts with the first member, stops after the
//!   linger, starts again (from tick 1) with a new member, restarts with
//!   backoff after failures and panics, ends at its time-to-live, and
//!   shows in `/debug/state` and `/api/workers`;
//! * on three nodes over a real Redis: one ticker per group that follows
//!   membership, and a killed lease holder replaced within the lease TTL.
//!
//! Each cluster test starts its own Redis: `/api/workers` lists every
//! lease on it, so they cannot share one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::node::NodeProcess;
use crate::common::redis::{TestRedis, three_nodes};
use crate::common::{Client, TestServer, http, wait_until, wait_until_async};
use groupcast::workers::ticker;
use groupcast::{Hub, Worker, WorkerOptions};
use serde_json::Value;

// ----- one node ------------------------------------------------------------------

fn fast_options() -> WorkerOptions {
    WorkerOptions {
        lease_ttl: Duration::from_millis(900),
        linger: Duration::from_millis(300),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
    }
}

fn hub() -> Hub {
    Hub::builder()
        .worker_options(fast_options())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_ticker_runs_only_while_its_group_has_members() {
    let server = TestServer::start(hub()).await;
    let hub = &server.hub;
    hub.notify("ticker_ws", ticker(Duration::from_millis(100)))
        .unwrap();

    // No members anywhere: no worker runs (the start counter below proves
    // it stayed at zero until the first member came).
    assert!(
        hub.workers().is_empty(),
        "no member, yet a worker: {:?}",
        hub.workers()
    );
    assert_eq!(hub.metrics().worker_starts.get(), 0);

    // A member arrives: ticks flow, numbered from 1.
    let mut client = server.connect("ticker_ws").await;
    let first: serde_json::Value = serde_json::from_str(&client.recv_text().await).unwrap();
    assert_eq!(first["tick"], 1);
    assert_eq!(first["node"], hub.node_id());
    let second: serde_json::Value = serde_json::from_str(&client.recv_text().await).unwrap();
    assert_eq!(second["tick"], 2);
    assert_eq!(hub.workers().len(), 1);
    assert_eq!(hub.workers()[0].state, "running");

    // Everyone leaves: the worker stops after the linger.
    drop(client);
    wait_until("the worker stops after the linger", || {
        hub.workers().is_empty()
    })
    .await;
    let starts = hub.metrics().worker_starts.get();
    assert_eq!(starts, 1);

    // A new member starts it again, from tick 1.
    let mut again = server.connect("ticker_ws").await;
    let first: serde_json::Value = serde_json::from_str(&again.recv_text().await).unwrap();
    assert_eq!(first["tick"], 1, "a fresh worker starts counting again");
    assert_eq!(hub.metrics().worker_starts.get(), 2);
}

#[tokio::test]
async fn failing_and_panicking_workers_restart_with_backoff() {
    let server = TestServer::start(hub()).await;
    let hub = &server.hub;
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    hub.notify(
        "flaky",
        Worker::new(move |ctx| {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => Err("first run fails".into()),
                    1 => panic!("second run panics"),
                    _ => {
                        ctx.hub.to(&ctx.group).send(format!("run {run}"))?;
                        ctx.stop.cancelled().await;
                        Ok(())
                    }
                }
            }
        }),
    )
    .unwrap();

    let mut client = server.connect("flaky").await;
    assert_eq!(client.recv_text().await, "run 2");
    assert_eq!(hub.metrics().worker_failures.get(), 2);
    assert_eq!(hub.workers()[0].restarts, 2);
    // The node is fine: the API still answers.
    assert_eq!(http::status(&server.http_url("/healthz")).await, 200);
}

#[tokio::test]
async fn worker_time_to_live_ends_it_while_members_remain() {
    let server = TestServer::start(hub()).await;
    let hub = &server.hub;
    hub.notify(
        "short",
        ticker(Duration::from_millis(50)).ttl(Duration::from_millis(400)),
    )
    .unwrap();
    let _client = server.connect("short").await;
    wait_until("the worker runs", || {
        hub.workers().first().is_some_and(|w| w.state == "running")
    })
    .await;
    wait_until("its time-to-live ends it", || {
        hub.workers().first().is_some_and(|w| w.state == "expired")
    })
    .await;
    assert_eq!(
        hub.metrics().worker_starts.get(),
        1,
        "an expired worker is not restarted"
    );
}

#[tokio::test]
async fn workers_show_in_debug_state_and_api() {
    let server = TestServer::start(hub()).await;
    server
        .hub
        .notify("ticker_ws", ticker(Duration::from_secs(1)))
        .unwrap();
    let _client = server.connect("ticker_ws").await;
    wait_until("the worker runs", || !server.hub.workers().is_empty()).await;
    let (_, state) = http::get_json(&server.http_url("/debug/state")).await;
    assert_eq!(state["workers"][0]["group"], "ticker_ws");
    assert_eq!(state["workers"][0]["node"], server.hub.node_id());
    assert!(state["workers"][0]["since_ms"].as_u64().unwrap() > 0);
    let (_, api) = http::get_json(&server.http_url("/api/workers")).await;
    assert_eq!(api["workers"][0]["group"], "ticker_ws");
    assert_eq!(api["workers"][0]["node"], server.hub.node_id());
}

// ----- a cluster ------------------------------------------------------------------

const PERIOD: Duration = Duration::from_millis(300);
const LEASE_TTL: Duration = Duration::from_millis(1500);

/// Three nodes on `redis`, each ready to run a ticker for
/// `ticker_ws`.
async fn ticker_nodes(redis: &TestRedis) -> Vec<TestServer> {
    let nodes = three_nodes(redis, |builder| {
        builder.worker_options(WorkerOptions {
            lease_ttl: LEASE_TTL,
            linger: Duration::from_millis(600),
            ..WorkerOptions::default()
        })
    })
    .await;
    for node in &nodes {
        node.hub.notify("ticker_ws", ticker(PERIOD)).unwrap();
    }
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
async fn one_ticker_per_group_runs_across_three_nodes_and_follows_membership() {
    let redis = TestRedis::start().await;
    let nodes = ticker_nodes(&redis).await;

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
    let (_, leases) = http::get_json(&nodes[0].http_url("/api/workers")).await;
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
        "takeover_ws=300ms",
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
        clients.push(Client::connect(&node.ws_url("takeover_ws")).await);
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
