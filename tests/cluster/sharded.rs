//! The sharded mode (`--redis-mode sharded`): three independent Redis
//! containers, three groupcast nodes in process, real WebSocket clients.
//!
//! * delivery: a broadcast on any node reaches every member of its group
//!   on every node and no one else, through the group's own shard only;
//!   a raw `PUBLISH` on the group's shard reaches its members; the cluster
//!   channel, presence and the cluster view live on shard 0;
//! * order: two publishers, 1,000 messages each, in order at every member;
//! * one shard stopped: the groups of the other shards lose nothing, the
//!   node stays ready and says which shard is down, the stopped shard's
//!   groups resume once it is back.
//!
//! Each test has its own three containers (`REDIS_IMAGE=local/redis:7`
//! where no registry is reachable), started at once.

use crate::common;
use crate::common::multinode::{
    api_info_connections, assert_bursts_in_order, every_node_broadcasts_to_every_group,
    members_of_every_group, publish_bursts_from_a_and_b, the_binary_hears,
};
use crate::common::node::NodeProcess;
use crate::common::redis::{fast_sharded, start_many, three_nodes_on, wait_subscribed};
use crate::common::silence::marker_is_next;
use crate::common::{TestServer, wait_until, wait_until_async};
use groupcast::Config;
use groupcast::backend::sharded::ShardedOptions;
use groupcast::group::GroupName;

/// The first name `prefix-<i>` that lands on `shard` of `shards`.
fn group_on(options: &ShardedOptions, shard: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|name| options.shard_of(&GroupName::new(name.as_str()).unwrap()) == shard)
        .expect("some name lands on every shard")
}

/// One group name `prefix-<i>` on each of the three shards of `options`,
/// in shard order.
fn one_group_per_shard(options: &ShardedOptions, prefix: &str) -> Vec<String> {
    (0..3).map(|s| group_on(options, s, prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_on_any_node_reaches_every_member_on_every_node_through_its_shard_only() {
    let shards = start_many(3).await;
    let options = fast_sharded(&shards);
    let nodes = three_nodes_on(|| options.clone(), |b| b).await;
    // One group per shard, a member of each on every node.
    let groups = one_group_per_shard(&options, "room");
    let mut members = members_of_every_group(&nodes, &groups).await;
    // Each group's channel is on its own shard, one subscriber per node;
    // the cluster channel on shard 0 only.
    for (s, shard) in shards.iter().enumerate() {
        for (g, group) in groups.iter().enumerate() {
            let expected = if s == g { 3 } else { 0 };
            assert_eq!(
                shard.numsub(&format!("group:{group}")).await,
                expected,
                "subscribers of {group} (shard {g}) on shard {s}"
            );
        }
        let cluster = if s == 0 { 3 } else { 0 };
        assert_eq!(shard.numsub("groupcast:cluster").await, cluster);
    }

    // Every node broadcasts to every group: each member reads exactly its
    // group's messages. (Three publishers: no order between them, so
    // compared as sets.)
    every_node_broadcasts_to_every_group(&nodes, &groups, &mut members).await;
    // A raw PUBLISH on the group's own shard reaches its members (every
    // node); on another shard it reaches no one.
    for (g, group) in groups.iter().enumerate() {
        let channel = format!("group:{group}");
        assert_eq!(shards[(g + 1) % 3].publish(&channel, "lost").await, 0);
        assert_eq!(shards[g].publish(&channel, "raw").await, 3);
    }
    for of_group in &mut members {
        for member in of_group.iter_mut() {
            marker_is_next(member, "raw", "a member of another group's message").await;
        }
    }
    // Broadcast-all goes over shard 0's cluster channel to every session.
    nodes[2].hub.all().send("everyone").unwrap();
    for of_group in &mut members {
        for member in of_group.iter_mut() {
            marker_is_next(member, "everyone", "broadcast-all").await;
        }
    }

    // Presence is on shard 0: every node sees the three nodes and the
    // members of every group.
    wait_until_async("every node sees the whole cluster", || {
        let nodes = &nodes;
        async move {
            for node in nodes {
                let Ok(view) = node.hub.nodes().await else {
                    return false;
                };
                let sessions: usize = view.iter().map(|n| n.sessions).sum();
                if view.len() != 3 || sessions != 9 {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(shards[0].exists("{groupcast:nodes}:info").await);
    assert!(!shards[1].exists("{groupcast:nodes}:info").await);

    // /api/info names the mode and each shard's connection.
    let redis = api_info_connections(&nodes[0], "sharded").await;
    assert_eq!(redis.len(), 3);
    for (s, shard) in shards.iter().enumerate() {
        assert_eq!(redis[s]["role"], format!("shard {s}"));
        assert_eq!(redis[s]["redis"], format!("127.0.0.1:{}", shard.port));
        assert_eq!(redis[s]["connected"], true);
    }

    // The binary, in the same mode from its flags, joins the same groups on
    // the same shards; its `shard-of` names the shard every node uses.
    let urls: Vec<String> = shards.iter().map(|s| s.url()).collect();
    let binary = NodeProcess::start_clustered(
        "sharded-binary",
        &urls.join(","),
        &["--redis-mode", "sharded"],
    )
    .await;
    let mut on_binary = binary.connect(&groups[1], 4).await;
    let channel = format!("group:{}", groups[1]);
    wait_until_async("the binary subscribed on the group's shard", || async {
        shards[1].numsub(&channel).await == 4
    })
    .await;
    the_binary_hears(&nodes[0], &groups[1], &mut on_binary).await;
    let output = common::node::command()
        .args(["shard-of", &groups[1], "--redis-url", &urls.join(",")])
        .output()
        .expect("run groupcast shard-of");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), urls[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_publisher_order_holds_over_1000_messages_on_every_shard() {
    const N: usize = 1000;
    let shards = start_many(3).await;
    let options = fast_sharded(&shards);
    let config = Config {
        queue_len: 8 * N,
        ..Config::default()
    };
    let nodes = three_nodes_on(|| options.clone(), |b| b.config(config.clone())).await;
    let groups = one_group_per_shard(&options, "ordered");
    // A member of every group on every node.
    let mut members = members_of_every_group(&nodes, &groups).await;
    // Two publishers at once, on nodes a and b, to every group.
    publish_bursts_from_a_and_b(&nodes, &groups, N).await;
    for (group, of_group) in groups.iter().zip(&mut members) {
        for member in of_group.iter_mut() {
            assert_bursts_in_order(member, N, group).await;
        }
    }
}

/// `value` of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shard_down_costs_only_its_own_groups_which_resume_when_it_returns() {
    const N: usize = 200;
    let shards = start_many(3).await;
    let options = fast_sharded(&shards);
    let nodes = three_nodes_on(|| options.clone(), |b| b).await;
    let groups = one_group_per_shard(&options, "outage");
    let mut members = members_of_every_group(&nodes, &groups).await;
    let all: Vec<&TestServer> = nodes.iter().collect();

    // Shard 1 goes away.
    shards[1].stop().await;
    wait_until("every node sees shard 1 down", || {
        nodes.iter().all(|n| {
            let status = n.hub.status();
            !status.connections[1].connected
                && status
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("shard 1"))
        })
    })
    .await;
    // Still ready: shard 0 (cluster channel, presence, leases) is up.
    for node in &nodes {
        assert!(node.hub.status().connected);
        let ready = common::http::status(&node.http_url("/readyz")).await;
        assert_eq!(ready, 200, "a data shard down does not fail readiness");
    }
    let metrics = common::http::get_text(&nodes[0].http_url("/metrics")).await;
    let up = |role: &str, port: u16| {
        sample(
            &metrics,
            &format!(
                "groupcast_redis_connection_up{{mode=\"sharded\",role=\"{role}\",redis=\"127.0.0.1:{port}\"}}"
            ),
        )
    };
    assert_eq!(up("shard 1", shards[1].port), Some(0.0), "{metrics}");
    assert_eq!(up("shard 0", shards[0].port), Some(1.0), "{metrics}");

    // The groups of shards 0 and 2 lose nothing, from every node.
    for i in 0..N {
        let from = &nodes[i % 3];
        for g in [0, 2] {
            from.hub
                .to(groups[g].as_str())
                .publish(format!("{i}"))
                .await
                .expect("a publish to a shard that is up");
        }
    }
    // (Three publishing nodes: compared as sets, each message once.)
    for g in [0, 2] {
        for member in members[g].iter_mut() {
            let mut got = Vec::with_capacity(N);
            for _ in 0..N {
                got.push(member.recv_text().await.parse::<usize>().unwrap());
            }
            got.sort_unstable();
            assert_eq!(got, (0..N).collect::<Vec<_>>(), "{}", groups[g]);
        }
    }
    // Shard 1's group: the publish fails (and is counted); the local
    // members still get it, the others cannot.
    let errors_before = nodes[0].hub.metrics().bus_publish_errors.get();
    let failed = nodes[0].hub.to(groups[1].as_str()).publish("during").await;
    assert!(
        failed.is_err(),
        "a publish to a stopped shard fails: {failed:?}"
    );
    assert!(nodes[0].hub.metrics().bus_publish_errors.get() > errors_before);
    assert_eq!(members[1][0].recv_text().await, "during", "local delivery");

    // Shard 1 is back: every node resubscribes its group, and delivery
    // resumes on every node.
    shards[1].restart().await;
    wait_subscribed(&all, &format!("group:{}", groups[1])).await;
    assert_eq!(shards[1].numsub(&format!("group:{}", groups[1])).await, 3);
    nodes[2]
        .hub
        .to(groups[1].as_str())
        .publish("after")
        .await
        .expect("a publish once the shard is back");
    for member in members[1].iter_mut() {
        marker_is_next(member, "after", "shard 1's group after the outage").await;
    }
    wait_until("no shard is reported down", || {
        nodes.iter().all(|n| n.hub.status().last_error.is_none())
    })
    .await;
}
