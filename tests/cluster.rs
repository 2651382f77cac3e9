//! The cluster over a real Redis: three nodes, as in-process hubs and as
//! spawned `groupcast` binaries, with real WebSocket clients.
//!
//! Every test starts its own Redis container (see `common/redis.rs`; set
//! `REDIS_IMAGE=local/redis:7` where no registry is reachable). Timings are
//! shortened (linger, heartbeat, TTL, health checks) so that the whole file
//! runs in seconds. Nothing sleeps: tests wait for conditions, and prove
//! that a client did *not* get a message by checking that a later marker
//! from the same publisher is the next thing it reads.

mod common;

use common::node::NodeProcess;
use std::time::{Duration, Instant};

use common::redis::{TestRedis, fast_options, free_port, publish};
use common::{Client, TestServer, wait_until, wait_until_async};
use groupcast::bus::redis::RedisBus;
use groupcast::bus::{Bus, BusContext};
use groupcast::metrics::Metrics;
use groupcast::{Broadcast, BusError, Config, Hub, KeyFilter, RedisOptions, SessionId};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

// ----- harness -----------------------------------------------------------------

/// Three in-process nodes, `node-a`, `node-b`, `node-c`, each serving the
/// full router on loopback, all connected to Redis.
async fn three_nodes(redis: &TestRedis, config: Config) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let hub = Hub::builder()
            .node_id(format!("node-{name}"))
            .config(config.clone())
            .redis(fast_options(redis.url()))
            .build()
            .expect("build a clustered hub");
        nodes.push(TestServer::start(hub).await);
    }
    wait_until("every node is connected to Redis", || {
        nodes.iter().all(|n| n.hub.status().connected)
    })
    .await;
    nodes
}

/// Waits until every node in `nodes` is subscribed to `channel`.
async fn wait_subscribed(nodes: &[&TestServer], channel: &str) {
    wait_until(&format!("every node subscribed to {channel}"), || {
        nodes
            .iter()
            .all(|n| n.hub.status().subscriptions.iter().any(|s| s == channel))
    })
    .await;
}

fn session_of(server: &TestServer, group: &str) -> SessionId {
    let group = groupcast::GroupName::new(group).unwrap();
    let members = server.hub.members(&group);
    assert_eq!(members.len(), 1, "expected one member of {group}");
    members[0].id().clone()
}

async fn http_status(url: &str) -> u16 {
    reqwest::get(url)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

// ----- raw publishes from outside ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_publish_reaches_every_member_on_every_node_and_no_one_else() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, Config::default()).await;
    let mut members = Vec::new();
    let mut others = Vec::new();
    for node in &nodes {
        members.push(node.connect("ticker_ws").await);
        members.push(node.connect("ticker_ws").await);
        others.push(node.connect("other").await);
    }
    let all: Vec<&TestServer> = nodes.iter().collect();
    wait_subscribed(&all, "group:ticker_ws").await;
    assert_eq!(
        redis.numsub("group:ticker_ws").await,
        3,
        "one subscriber per node"
    );

    // What `redis-cli PUBLISH group:ticker_ws hello` does.
    let mut outside = redis.client().await;
    assert_eq!(publish(&mut outside, "group:ticker_ws", "hello").await, 3);
    // Not UTF-8: delivered as a binary frame.
    publish(&mut outside, "group:ticker_ws", [0xff, 0x00, 0x01]).await;
    // Same publisher, later: a raw message on the cluster channel reaches
    // everyone, and must be the next thing each client reads.
    publish(&mut outside, "groupcast:cluster", "marker").await;

    for member in &mut members {
        assert_eq!(member.recv_text().await, "hello");
        assert_eq!(
            member.next_data().await,
            Message::binary(vec![0xff, 0x00, 0x01])
        );
        assert_eq!(member.recv_text().await, "marker");
    }
    for other in &mut others {
        assert_eq!(other.recv_text().await, "marker", "a non-member got hello");
    }
}

// ----- every broadcast kind, across nodes ---------------------------------------

/// Runs `send` on `from`'s hub (a broadcast of `text`), then publishes a
/// marker to everyone from the same node. Every client reads `text` if it
/// is one of `targets`, then the marker: per-publisher order makes this a
/// proof that no one outside `targets` got `text`. Waiting for the marker's
/// publish also keeps the steps of one test from overlapping.
async fn step(
    from: &TestServer,
    send: impl FnOnce(&Hub),
    text: &str,
    clients: &mut [(&str, Client)],
    targets: &[&str],
) {
    send(&from.hub);
    let marker = format!("after {text}");
    from.hub
        .publish(Broadcast::all(), marker.as_str())
        .await
        .expect("the marker reached Redis");
    for (name, client) in clients.iter_mut() {
        if targets.contains(name) {
            assert_eq!(client.recv_text().await, text, "{name} should get {text:?}");
        }
        assert_eq!(
            client.recv_text().await,
            marker,
            "{name} got something other than the marker after {text:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broadcast_kind_works_across_nodes() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, Config::default()).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // One member of g1 and one of g2 on every node: "b1" is B's g1 member.
    let mut clients = vec![
        ("a1", a.connect("g1").await),
        ("a2", a.connect("g2").await),
        ("b1", b.connect("g1").await),
        ("b2", b.connect("g2").await),
        ("c1", c.connect("g1").await),
        ("c2", c.connect("g2").await),
    ];
    wait_subscribed(&[a, b, c], "group:g1").await;
    wait_subscribed(&[a, b, c], "group:g2").await;
    let (a1, b1, b2, c1) = (
        session_of(a, "g1"),
        session_of(b, "g1"),
        session_of(b, "g2"),
        session_of(c, "g1"),
    );
    // Keys for a cluster-wide filter: the admins are a1 and c2.
    let g1 = groupcast::GroupName::new("g1").unwrap();
    let g2 = groupcast::GroupName::new("g2").unwrap();
    a.hub.members(&g1)[0].set("role", "admin");
    b.hub.members(&g1)[0].set("role", "user");
    c.hub.members(&g2)[0].set("role", "admin");

    // A group broadcast from A reaches g1's members on A, B and C.
    step(
        a,
        |hub| {
            hub.broadcast_group("g1", "to g1").unwrap();
        },
        "to g1",
        &mut clients,
        &["a1", "b1", "c1"],
    )
    .await;
    // Everyone but b1, sent from A; b1 lives on B (melody's BroadcastOthers).
    step(
        a,
        |hub| {
            hub.broadcast_others("all but b1", &b1).unwrap();
        },
        "all but b1",
        &mut clients,
        &["a1", "a2", "b2", "c1", "c2"],
    )
    .await;
    // The same from C, skipping a session of yet another node.
    step(
        c,
        |hub| {
            hub.send(Broadcast::all().except(a1.clone()), "all but a1")
                .unwrap();
        },
        "all but a1",
        &mut clients,
        &["a2", "b1", "b2", "c1", "c2"],
    )
    .await;
    // "My group but me", from B.
    step(
        b,
        |hub| {
            hub.send(Broadcast::group(g1.clone()).except(b1.clone()), "g1 but b1")
                .unwrap();
        },
        "g1 but b1",
        &mut clients,
        &["a1", "c1"],
    )
    .await;
    // Everyone, from B.
    step(
        b,
        |hub| {
            hub.broadcast_all("everyone").unwrap();
        },
        "everyone",
        &mut clients,
        &["a1", "a2", "b1", "b2", "c1", "c2"],
    )
    .await;
    // A key filter travels: the admins live on A and C, the sender is B.
    step(
        b,
        |hub| {
            hub.broadcast_matching(KeyFilter::equals("role", "admin"), "admins")
                .unwrap();
        },
        "admins",
        &mut clients,
        &["a1", "c2"],
    )
    .await;
    // A list of sessions on other nodes, from A.
    step(
        a,
        |hub| {
            hub.broadcast_to([b2.clone(), c1.clone()], "listed")
                .unwrap();
        },
        "listed",
        &mut clients,
        &["b2", "c1"],
    )
    .await;
    // A closure filter stays local (documented): from A, only A's sessions.
    step(
        a,
        |hub| {
            hub.broadcast_filter("local only", |_| true);
        },
        "local only",
        &mut clients,
        &["a1", "a2"],
    )
    .await;
}

// ----- order ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_publisher_order_holds_over_1000_messages_on_every_node() {
    const N: usize = 1000;
    let redis = TestRedis::start().await;
    // Room for two publishers' bursts in each session's queue.
    let config = Config {
        queue_len: 4 * N,
        ..Config::default()
    };
    let nodes = three_nodes(&redis, config).await;
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.connect("ordered").await);
    }
    let all: Vec<&TestServer> = nodes.iter().collect();
    wait_subscribed(&all, "group:ordered").await;

    // Two publishers at once, on A and on B.
    let publishers: Vec<_> = [("a", &nodes[0]), ("b", &nodes[1])]
        .into_iter()
        .map(|(name, node)| {
            let hub = node.hub.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    hub.send(
                        Broadcast::group("ordered".try_into().unwrap()),
                        format!("{name}:{i}"),
                    )
                    .unwrap();
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

    for (node, client) in clients.iter_mut().enumerate() {
        let mut next = [0usize; 2];
        for _ in 0..2 * N {
            let text = client.recv_text().await;
            let (from, i) = text.split_once(':').expect("name:index");
            let slot = usize::from(from == "b");
            let i: usize = i.parse().unwrap();
            assert_eq!(
                i, next[slot],
                "client on node {node}: {from}'s messages out of order"
            );
            next[slot] += 1;
        }
        assert_eq!(next, [N, N]);
    }
}

// ----- subscriptions follow membership ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_membership() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, Config::default()).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    assert!(redis.channels("group:*").await.is_empty());

    let first = a.connect("watched").await;
    wait_until_async("A subscribes to group:watched", || async {
        redis.numsub("group:watched").await == 1
    })
    .await;
    assert_eq!(redis.channels("group:*").await, vec!["group:watched"]);
    let second = b.connect("watched").await;
    wait_until_async("B subscribes too", || async {
        redis.numsub("group:watched").await == 2
    })
    .await;

    // A's only member leaves: after the linger, A unsubscribes; B stays.
    drop(first);
    wait_until_async("A unsubscribes after the linger", || async {
        redis.numsub("group:watched").await == 1
    })
    .await;
    assert!(
        !a.hub
            .status()
            .subscriptions
            .contains(&"group:watched".to_string())
    );
    assert!(
        redis
            .channels("group:*")
            .await
            .contains(&"group:watched".to_string())
    );

    drop(second);
    wait_until_async("nobody listens to group:watched", || async {
        redis.numsub("group:watched").await == 0 && redis.channels("group:*").await.is_empty()
    })
    .await;
    // The cluster channel stays, one subscriber per node.
    assert_eq!(redis.numsub("groupcast:cluster").await, 3);
}

// ----- Redis going away ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_sessions_and_delivery_resumes() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, Config::default()).await;
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.connect("live").await);
    }
    let all: Vec<&TestServer> = nodes.iter().collect();
    wait_subscribed(&all, "group:live").await;
    redis.publish("group:live", "before").await;
    for client in &mut clients {
        assert_eq!(client.recv_text().await, "before");
    }
    let opened: Vec<u64> = nodes
        .iter()
        .map(|n| n.hub.metrics().connections_opened.get())
        .collect();
    for node in &nodes {
        assert_eq!(node.hub.metrics().bus_connects.get(), 1);
        assert_eq!(http_status(&node.http_url("/readyz")).await, 200);
    }

    redis.stop().await;
    for node in &nodes {
        let url = node.http_url("/readyz");
        wait_until_async("/readyz says not ready", || async {
            http_status(&url).await == 503
        })
        .await;
        let status = node.hub.status();
        assert!(!status.connected && status.last_error.is_some());
        assert_eq!(node.hub.session_count(), 1, "sessions stay");
    }
    // While Redis is away a broadcast still reaches local sessions, and
    // the caller learns that the other nodes were not told.
    let a = &nodes[0];
    let outcome = a
        .hub
        .publish(Broadcast::group("live".try_into().unwrap()), "while down")
        .await;
    assert!(
        matches!(outcome, Err(groupcast::HubError::Bus(_))),
        "{outcome:?}"
    );
    assert_eq!(clients[0].recv_text().await, "while down");
    assert!(a.hub.metrics().bus_publish_errors.get() >= 1);

    redis.restart().await;
    for node in &nodes {
        let url = node.http_url("/readyz");
        wait_until_async("/readyz is ready again", || async {
            http_status(&url).await == 200
        })
        .await;
    }
    wait_subscribed(&all, "group:live").await;

    // Delivery resumes everywhere, from outside and from a node, and the
    // message published while Redis was down is not replayed.
    // ("after" first on every client: B delivers "from b" to its own
    // client directly, so the two could otherwise cross there.)
    redis.publish("group:live", "after").await;
    for client in &mut clients {
        assert_eq!(client.recv_text().await, "after");
    }
    nodes[1]
        .hub
        .publish(Broadcast::group("live".try_into().unwrap()), "from b")
        .await
        .expect("B publishes again");
    for client in &mut clients {
        assert_eq!(client.recv_text().await, "from b");
    }
    // No client reconnected; every node says it reconnected.
    for (node, opened) in nodes.iter().zip(opened) {
        assert_eq!(node.hub.metrics().connections_opened.get(), opened);
        assert_eq!(node.hub.metrics().bus_connects.get(), 2);
        let metrics = reqwest::get(node.http_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("groupcast_bus_connects_total 2"),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_is_noticed_by_health_checks() {
    let redis = TestRedis::start().await;
    let hub = Hub::builder()
        .node_id("node-p")
        .redis(fast_options(redis.url()))
        .build()
        .unwrap();
    let node = TestServer::start(hub).await;
    let mut client = node.connect("paused").await;
    wait_subscribed(&[&node], "group:paused").await;

    // Paused: no socket closes, only the PINGs go unanswered.
    redis.pause().await;
    let readyz = node.http_url("/readyz");
    wait_until_async("the health check notices", || async {
        http_status(&readyz).await == 503
    })
    .await;
    let error = node.hub.status().last_error.unwrap_or_default();
    assert!(error.contains("did not answer"), "{error}");

    redis.unpause().await;
    wait_until_async("ready again", || async {
        http_status(&readyz).await == 200
    })
    .await;
    wait_subscribed(&[&node], "group:paused").await;
    redis.publish("group:paused", "awake").await;
    assert_eq!(client.recv_text().await, "awake");
    assert_eq!(node.hub.metrics().bus_connects.get(), 2);
}

// ----- the cluster view ---------------------------------------------------------

/// `{node: {group: members}}` from an `/api/nodes` answer.
fn groups_by_node(answer: &Value) -> std::collections::BTreeMap<String, Value> {
    answer["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().to_string(),
                n["groups"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_lists_every_node_and_a_clean_shutdown_leaves_it_at_once() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, Config::default()).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let _clients = [
        a.connect("alpha").await,
        a.connect("alpha").await,
        b.connect("alpha").await,
        b.connect("beta").await,
        c.connect("gamma").await,
    ];
    let expected: std::collections::BTreeMap<String, Value> = [
        ("node-a", serde_json::json!({"alpha": 2})),
        ("node-b", serde_json::json!({"alpha": 1, "beta": 1})),
        ("node-c", serde_json::json!({"gamma": 1})),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Every node sees the same cluster, once the heartbeats are in.
    for node in &nodes {
        let url = node.http_url("/api/nodes");
        wait_until_async("every node's groups are in the view", || async {
            groups_by_node(&get_json(&url).await) == expected
        })
        .await;
    }
    let groups = get_json(&b.http_url("/api/groups")).await;
    assert_eq!(groups["nodes"], 3);
    assert_eq!(
        groups["groups"],
        serde_json::json!([
            {"name": "alpha", "members": 3, "nodes": {"node-a": 2, "node-b": 1}},
            {"name": "beta", "members": 1, "nodes": {"node-b": 1}},
            {"name": "gamma", "members": 1, "nodes": {"node-c": 1}},
        ])
    );
    let alpha = get_json(&c.http_url("/api/groups/alpha")).await;
    assert_eq!(alpha["members"], 3);
    let debug = get_json(&c.http_url("/debug/state")).await;
    assert_eq!(debug["cluster"].as_array().map(Vec::len), Some(3));

    // A clean shutdown deletes the node's presence at once, not after the TTL.
    assert!(redis.exists("groupcast:node:node-c").await);
    c.hub.shutdown().await;
    assert!(!redis.exists("groupcast:node:node-c").await);
    let ids: Vec<String> = a
        .hub
        .nodes()
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(ids, ["node-a", "node-b"]);
}

// ----- spawned binaries -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_binaries_form_a_cluster_and_a_killed_node_leaves_the_view() {
    let redis = TestRedis::start().await;
    let mut nodes: Vec<NodeProcess> = ["bin-a", "bin-b", "bin-c"]
        .into_iter()
        .map(|name| NodeProcess::spawn_clustered(name, &redis.url(), &[]))
        .collect();
    for node in &nodes {
        let url = node.url("/readyz");
        wait_until_async(&format!("{} is ready", node.name), || async {
            http_status(&url).await == 200
        })
        .await;
    }

    let mut members = vec![
        Client::connect(&nodes[0].ws_url("ticker_ws")).await,
        Client::connect(&nodes[1].ws_url("ticker_ws")).await,
        Client::connect(&nodes[2].ws_url("ticker_ws")).await,
    ];
    let mut other = Client::connect(&nodes[2].ws_url("other")).await;
    wait_until_async("every binary subscribes to group:ticker_ws", || async {
        redis.numsub("group:ticker_ws").await == 3
    })
    .await;

    // redis-cli PUBLISH group:ticker_ws hello
    let mut outside = redis.client().await;
    assert_eq!(publish(&mut outside, "group:ticker_ws", "hello").await, 3);
    publish(&mut outside, "groupcast:cluster", "marker").await;
    for member in &mut members {
        assert_eq!(member.recv_text().await, "hello");
        assert_eq!(member.recv_text().await, "marker");
    }
    assert_eq!(other.recv_text().await, "marker");
    // The HTTP API of one binary publishes to members on all three.
    let answer: Value = reqwest::Client::new()
        .post(nodes[1].url("/api/groups/ticker_ws/messages"))
        .header("content-type", "text/plain")
        .body("via api")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["clustered"], true);
    for member in &mut members {
        assert_eq!(member.recv_text().await, "via api");
    }

    // The cluster view, as every binary serves it. A node's own entry is
    // live and the others' come from their last heartbeat, so wait until
    // every node sees everyone's groups.
    let expected: std::collections::BTreeMap<String, Value> = [
        ("bin-a", serde_json::json!({"ticker_ws": 1})),
        ("bin-b", serde_json::json!({"ticker_ws": 1})),
        ("bin-c", serde_json::json!({"other": 1, "ticker_ws": 1})),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for node in &nodes {
        let url = node.url("/api/nodes");
        wait_until_async(
            &format!("{} lists every binary's groups", node.name),
            || async { groups_by_node(&get_json(&url).await) == expected },
        )
        .await;
    }
    let groups = get_json(&nodes[1].url("/api/groups")).await;
    assert_eq!(
        groups["groups"],
        serde_json::json!([
            {"name": "other", "members": 1, "nodes": {"bin-c": 1}},
            {"name": "ticker_ws", "members": 3, "nodes": {"bin-a": 1, "bin-b": 1, "bin-c": 1}},
        ])
    );
    let view = nodes[0].url("/api/nodes");

    // SIGKILL bin-c: it cannot say goodbye; its entry expires within the TTL.
    nodes[2].kill();
    let killed_at = Instant::now();
    wait_until_async("the killed node leaves the view", || async {
        !groups_by_node(&get_json(&view).await).contains_key("bin-c")
    })
    .await;
    let gone_after = killed_at.elapsed();
    // Its last heartbeat was at most 200 ms before the kill and lives 1 s;
    // the rest is slack for a busy machine.
    assert!(
        gone_after <= Duration::from_secs(2),
        "a presence TTL of 1s, but the killed node stayed {gone_after:?}"
    );
    let groups = get_json(&nodes[1].url("/api/groups")).await;
    assert_eq!(
        groups["groups"],
        serde_json::json!([{"name": "ticker_ws", "members": 2, "nodes": {"bin-a": 1, "bin-b": 1}}])
    );
}

// ----- garbage on the wire ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_envelopes_are_counted_and_never_reach_clients() {
    let redis = TestRedis::start().await;
    let hub = Hub::builder()
        .node_id("node-x")
        .redis(fast_options(redis.url()))
        .build()
        .unwrap();
    let node = TestServer::start(hub).await;
    let mut client = node.connect("g").await;
    wait_subscribed(&[&node], "group:g").await;

    let mut outside = redis.client().await;
    let garbage: [&[u8]; 4] = [
        &[0xC1, b'G', b'C', 1, 0xff, 0x00, 0x13], // version 1, not MessagePack
        &[0xC1, b'G', b'C', 9, 0x80],             // a version nobody speaks
        &[0xC1, b'G'],                            // truncated
        &[0xC1, b'G', b'C', 1, 0x91, 0x01],       // MessagePack, wrong shape
    ];
    for bytes in garbage {
        publish(&mut outside, "group:g", bytes).await;
    }
    publish(&mut outside, "group:g", "still alive").await;
    assert_eq!(client.recv_text().await, "still alive");
    assert_eq!(node.hub.metrics().bus_invalid.get(), 4);
    // And the node still works both ways.
    node.hub.broadcast_group("g", "local").unwrap();
    assert_eq!(client.recv_text().await, "local");
    assert!(node.hub.is_ready());
}

// ----- without a reachable Redis -------------------------------------------------

fn lonely_context(metrics: std::sync::Arc<Metrics>) -> BusContext {
    BusContext {
        node_id: "lonely".into(),
        inbox: std::sync::Arc::new(|_: groupcast::bus::Channel, _: bytes::Bytes| {}),
        metrics,
        local_groups: std::sync::Arc::new(Vec::new),
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_not_fatal() {
    let metrics = std::sync::Arc::new(Metrics::new());
    // Nothing listens on a port that was just free.
    let mut options = RedisOptions::new(format!("redis://127.0.0.1:{}", free_port()));
    options.command_timeout = Duration::from_millis(300);
    options.backoff_max = Duration::from_millis(200);
    let bus = RedisBus::start(options, lonely_context(metrics.clone())).expect("starts anyway");
    assert!(!bus.status().connected);
    wait_until("the failure is recorded", || {
        bus.status().last_error.is_some()
    })
    .await;
    assert_eq!(bus.status().kind, "redis");

    let outcome = bus
        .publish(groupcast::bus::Channel::Cluster, "x".into())
        .wait()
        .await;
    assert!(
        matches!(outcome, Err(BusError::Unavailable(_))),
        "{outcome:?}"
    );
    assert_eq!(metrics.bus_publish_errors.get(), 1);
    assert!(bus.nodes().await.is_err());
    bus.shutdown().await;
    assert!(matches!(
        bus.publish(groupcast::bus::Channel::Cluster, "y".into())
            .wait()
            .await,
        Err(BusError::Closed)
    ));
}

#[test]
fn bad_urls_and_a_missing_runtime_are_typed_errors() {
    let metrics = std::sync::Arc::new(Metrics::new());
    let start =
        |url: &str| RedisBus::start(RedisOptions::new(url), lonely_context(metrics.clone()));
    assert!(matches!(
        start("redis://127.0.0.1:1"),
        Err(BusError::NoRuntime)
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    for url in [
        "http://127.0.0.1",
        "127.0.0.1:6379",
        "redis://",
        "redis://h:notaport",
    ] {
        assert!(
            matches!(start(url), Err(BusError::InvalidUrl(_))),
            "{url} should be rejected"
        );
    }
    assert!(start("redis://user:secret@127.0.0.1:1/2").is_ok());
    assert!(
        start("rediss://user:secret@127.0.0.1:1").is_ok(),
        "TLS is built in"
    );
    let error = start("redis://user:secret@").err().expect("no host");
    assert!(!error.to_string().contains("secret"), "{error}");
}
