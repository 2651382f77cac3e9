//! The cluster view over a real Redis: which nodes exist and which groups
//! they serve (`/api/nodes`, `/api/groups`, `/debug/state`), as in-process
//! hubs and as spawned binaries; a clean shutdown leaves it at once, a
//! killed node within its presence TTL; and the Redis subscriptions that
//! follow membership (`PUBSUB` shows a node subscribed exactly while its
//! group has local members, after the linger).
//!
//! Each test starts its own Redis (`REDIS_IMAGE=local/redis:7` where no
//! registry is reachable): they count every node and channel on it.

use std::time::{Duration, Instant};

use crate::common::node::start_clustered_nodes;
use crate::common::redis::{TestRedis, publish, three_nodes};
use crate::common::silence::{marker_is_next, quiet_after_marker};
use crate::common::{Client, http, wait_until_async};
use serde_json::Value;

/// The JSON answer of `GET url`.
async fn json_of(url: &str) -> Value {
    let (status, answer) = http::get_json(url).await;
    assert_eq!(status, 200, "GET {url}: {answer}");
    answer
}

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
async fn redis_subscriptions_follow_local_membership() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, |b| b).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_lists_every_node_and_a_clean_shutdown_leaves_it_at_once() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, |b| b).await;
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
            groups_by_node(&json_of(&url).await) == expected
        })
        .await;
    }
    let groups = json_of(&b.http_url("/api/groups")).await;
    assert_eq!(groups["nodes"], 3);
    assert_eq!(
        groups["groups"],
        serde_json::json!([
            {"name": "alpha", "members": 3, "nodes": {"node-a": 2, "node-b": 1}},
            {"name": "beta", "members": 1, "nodes": {"node-b": 1}},
            {"name": "gamma", "members": 1, "nodes": {"node-c": 1}},
        ])
    );
    let alpha = json_of(&c.http_url("/api/groups/alpha")).await;
    assert_eq!(alpha["members"], 3);
    let debug = json_of(&c.http_url("/debug/state")).await;
    assert_eq!(debug["cluster"].as_array().map(Vec::len), Some(3));
    // All of it without walking the keyspace: a shared database, or a
    // Redis Cluster (where SCAN sees one primary), gives the same view.
    assert_eq!(redis.command_calls("scan").await, 0);
    assert_eq!(redis.command_calls("keys").await, 0);

    // A clean shutdown deletes the node's presence at once, not after the TTL.
    assert!(redis.presence_has("node-c").await);
    c.hub.shutdown().await;
    assert!(!redis.presence_has("node-c").await);
    let ids: Vec<String> = a
        .hub
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(ids, ["node-a", "node-b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_binaries_form_a_cluster_and_a_killed_node_leaves_the_view() {
    let redis = TestRedis::start().await;
    let mut nodes = start_clustered_nodes(&["bin-a", "bin-b", "bin-c"], &redis.url(), &[]).await;

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
    wait_until_async("bin-c subscribes to group:other", || async {
        redis.numsub("group:other").await == 1
    })
    .await;

    // redis-cli PUBLISH group:ticker_ws hello
    let mut outside = redis.client().await;
    assert_eq!(publish(&mut outside, "group:ticker_ws", "hello").await, 3);
    for member in &mut members {
        assert_eq!(member.recv_text().await, "hello");
    }
    // Once every member has it: a marker on each group's own channel.
    publish(&mut outside, "group:ticker_ws", "marker").await;
    publish(&mut outside, "group:other", "marker").await;
    for member in &mut members {
        marker_is_next(member, "marker", "a member").await;
    }
    quiet_after_marker(&mut other, "marker", "a non-member got hello").await;
    // The HTTP API of one binary publishes to members on all three.
    let (_, answer) =
        http::post_text(&nodes[1].url("/api/groups/ticker_ws/messages"), "via api").await;
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
            || async { groups_by_node(&json_of(&url).await) == expected },
        )
        .await;
    }
    let groups = json_of(&nodes[1].url("/api/groups")).await;
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
        !groups_by_node(&json_of(&view).await).contains_key("bin-c")
    })
    .await;
    let gone_after = killed_at.elapsed();
    // Its last heartbeat was at most 200 ms before the kill and lives 1 s;
    // the rest is slack for a busy machine.
    assert!(
        gone_after <= Duration::from_secs(2),
        "a presence TTL of 1s, but the killed node stayed {gone_after:?}"
    );
    let groups = json_of(&nodes[1].url("/api/groups")).await;
    assert_eq!(
        groups["groups"],
        serde_json::json!([{"name": "ticker_ws", "members": 2, "nodes": {"bin-a": 1, "bin-b": 1}}])
    );
}

/// `Hub::subscribed` resolves once Redis has confirmed the group's channel,
/// so whatever is published from then on reaches the new member: the
/// guarantee a history read after a join will stand on. With Redis gone it
/// fails within the command timeout instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_subscription_hears_the_very_next_publish() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, |b| b).await;
    let a = &nodes[0];
    let group = groupcast::GroupName::new("fresh").unwrap();

    let mut member = a.connect("fresh").await;
    a.hub.subscribed(&group).await.expect("confirmed");
    assert_eq!(redis.numsub("group:fresh").await, 1);
    assert_eq!(redis.publish("group:fresh", "first").await, 1);
    assert_eq!(member.recv_text().await, "first");

    redis.stop().await;
    let other = groupcast::GroupName::new("later").unwrap();
    let _late = a.connect("later").await;
    let started = Instant::now();
    let outcome = a.hub.subscribed(&other).await;
    assert!(
        matches!(outcome, Err(groupcast::HubError::Backend(_))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "bounded wait");
}
