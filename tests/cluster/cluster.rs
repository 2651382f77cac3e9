//! The Redis Cluster mode (`--redis-mode cluster`): a six-node Redis
//! Cluster (3 primaries, 3 replicas) in one container, three groupcast
//! nodes in process, real WebSocket clients.
//!
//! * delivery across nodes through sharded pub/sub, `redis-cli -c
//!   SPUBLISH` from outside, per-publisher order over 1,000 messages, and
//!   one subscriber connection per primary needed for 1,000 groups
//!   (`CLIENT LIST`);
//! * `redis-cli --cluster reshard` of a group's slot while numbered
//!   messages flow (the losses are counted and printed), then the primary
//!   that owns it killed and its replica promoted (the time to resume is
//!   printed). Run with `--nocapture` to see the figures.
//!
//! Two containers (`REDIS_CLUSTER_IMAGE`, default `local/redis-cluster:7`
//! from `scripts/build-local-images.sh`), one per test, started at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::cluster::{TestCluster, shard_numsub};
use crate::common::multinode::{
    api_info_connections, assert_bursts_in_order, every_node_broadcasts_to_every_group,
    members_of_every_group, members_on_every_node, probe_until_each_hears,
    publish_bursts_from_a_and_b, the_binary_hears,
};
use crate::common::node::NodeProcess;
use crate::common::redis::{fast_options, three_nodes_on, wait_subscribed};
use crate::common::silence::marker_is_next;
use crate::common::{Client, TestServer, WAIT, wait_until, wait_until_async};
use groupcast::Config;
use groupcast::backend::cluster::ClusterOptions;
use groupcast::backend::cluster::slot::slot;

fn options(cluster: &TestCluster) -> ClusterOptions {
    let mut options = ClusterOptions::new(cluster.seeds());
    options.redis = fast_options(String::new());
    options
}

/// The first name `prefix-<i>` whose channel's slot satisfies `wanted`.
fn group_where(prefix: &str, wanted: impl Fn(u16) -> bool) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|name| wanted(slot(format!("group:{name}").as_bytes())))
        .expect("some name has such a slot")
}

/// One name `prefix-<i>` in each primary's slot range, as `--cluster
/// create` lays them out (0-5460, 5461-10922, 10923-16383).
fn one_group_per_primary(prefix: &str) -> [String; 3] {
    [
        group_where(prefix, |s| s <= 5460),
        group_where(prefix, |s| (5461..=10922).contains(&s)),
        group_where(prefix, |s| s >= 10923),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_pub_sub_delivers_across_nodes_in_order_over_one_connection_per_primary() {
    const N: usize = 1000;
    let cluster = TestCluster::start().await;
    let options = options(&cluster);
    let config = Config {
        queue_len: 8 * N,
        // 1,000 more clients from loopback below.
        max_connections_per_ip: 0,
        history: groupcast::history::HistoryPolicy::parse(["logs-*=100:1h"]).unwrap(),
        ..Config::default()
    };
    let nodes = three_nodes_on(|| options.clone(), |b| b.config(config.clone())).await;
    // One group in each primary's slot range (as `--cluster create` lays
    // them out), a member of each on every node.
    let groups = one_group_per_primary("chat");
    let mut members = members_of_every_group(&nodes, &groups).await;

    // Every node broadcasts to every group; each member reads its group's
    // three messages (three publishers: compared as a set).
    every_node_broadcasts_to_every_group(&nodes, &groups, &mut members).await;
    // From outside: `redis-cli -c SPUBLISH` reaches every member, and only
    // the members of that group (the marker of each group comes next).
    for group in &groups {
        let answer = cluster
            .redis_cli(
                cluster.base,
                &["-c", "SPUBLISH", &format!("group:{group}"), "hello"],
            )
            .await;
        assert_eq!(answer.trim(), "3", "one subscriber per node");
    }
    for of_group in &mut members {
        for member in of_group.iter_mut() {
            marker_is_next(member, "hello", "redis-cli SPUBLISH").await;
        }
    }

    // Per-publisher order: nodes a and b each send 1,000 messages to every
    // group at once.
    publish_bursts_from_a_and_b(&nodes, &groups, N).await;
    for (group, of_group) in groups.iter().zip(&mut members) {
        for member in of_group.iter_mut() {
            assert_bursts_in_order(member, N, group).await;
        }
    }

    // 1,000 more groups on node a: still one subscriber connection per
    // primary, none on the replicas.
    let mut many = Vec::new();
    for i in 0..1000 {
        many.push(nodes[0].connect(&format!("many-{i}")).await);
    }
    wait_until("node a subscribed 1,000 more groups", || {
        // The 1,000, the three above and the cluster channel.
        nodes[0].hub.status().subscriptions.len() == 1000 + groups.len() + 1
    })
    .await;
    let layout = cluster.nodes_from(cluster.base).await;
    let name = "groupcast-sub:node-a";
    let mut total = 0;
    for node in &layout {
        let n = cluster.clients_named(node.port, name).await;
        let expected = usize::from(node.primary);
        assert_eq!(n, expected, "subscriber connections of node a on {node:?}");
        total += n;
    }
    assert_eq!(
        total, 3,
        "1,004 channels over the 3 primaries: 3 connections"
    );
    eprintln!("cluster: node a holds {total} subscriber connections for 1,004 channels");

    // /api/info names the mode and each primary connection.
    let redis = api_info_connections(&nodes[0], "cluster").await;
    assert_eq!(redis.len(), 3, "{redis:?}");
    assert!(
        redis
            .iter()
            .all(|c| c["role"] == "primary" && c["connected"] == true)
    );
    let metrics = common::http::get_text(&nodes[0].http_url("/metrics")).await;
    let up = metrics
        .lines()
        .filter(|l| {
            l.starts_with("groupcast_redis_connection_up{mode=\"cluster\",role=\"primary\"")
                && l.ends_with(" 1")
        })
        .count();
    assert_eq!(up, 3, "{metrics}");
    drop(many);

    // The binary, in the same mode from its flags, joins a group.
    let binary = NodeProcess::start_clustered(
        "cluster-binary",
        &cluster.seeds().join(","),
        &["--redis-mode", "cluster"],
    )
    .await;
    let mut on_binary = binary.connect(&groups[0], 4).await;
    let channel = format!("group:{}", groups[0]);
    let owner = cluster
        .owner_of(slot(channel.as_bytes()), cluster.base)
        .await;
    let conn = cluster.conn(owner.port).await;
    wait_until_async("the binary subscribed on the group's primary", || {
        let mut conn = conn.clone();
        let channel = channel.clone();
        async move { shard_numsub(&mut conn, &channel).await == 4 }
    })
    .await;
    the_binary_hears(&nodes[1], &groups[0], &mut on_binary).await;

    // History on a cluster: a group in each primary's slots keeps its
    // messages (the append script's keys are in the channel's slot and it
    // SPUBLISHes); a late joiner on another node gets them, then live.
    for (i, group) in one_group_per_primary("logs").iter().enumerate() {
        for n in 1..=5u64 {
            let sent = nodes[0]
                .hub
                .to(group.as_str())
                .publish(format!("{i}:{n}"))
                .await
                .expect("publish with history");
            assert_eq!(sent.position.map(|p| p.offset), Some(n), "{group}");
        }
        let mut late = Client::connect(&format!("{}?history=5", nodes[2].ws_url(group))).await;
        for n in 1..=5 {
            assert_eq!(late.recv_text().await, format!("{i}:{n}"), "{group}");
        }
        wait_subscribed(&[&nodes[2]], &format!("group:{group}")).await;
        nodes[1].hub.to(group.as_str()).send("live").unwrap();
        assert_eq!(late.recv_text().await, "live", "{group}");
    }
}

/// Reads numbered messages from `client` until the text `end`.
fn collect_until_end(mut client: Client) -> tokio::task::JoinHandle<(Client, BTreeSet<usize>)> {
    tokio::spawn(async move {
        let mut got = BTreeSet::new();
        loop {
            let text = client.recv_text().await;
            if text == "end" {
                return (client, got);
            }
            if let Ok(i) = text.parse() {
                got.insert(i);
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_goes_on_through_a_reshard_of_the_groups_slot_and_a_primary_failover() {
    const M: usize = 1500;
    common::logs_when_asked();
    let cluster = TestCluster::start().await;
    let options = options(&cluster);
    let nodes = three_nodes_on(|| options.clone(), |b| b).await;
    // `redis-cli --cluster reshard --cluster-slots 1` moves the source's
    // lowest slot: slot 0, which this group's channel is in.
    let group = group_where("moving", |s| s == 0);
    let other = group_where("steady", |s| s >= 10923);
    let members = members_on_every_node(&nodes, &group).await;
    let mut others = members_on_every_node(&nodes, &other).await;
    let all: Vec<&TestServer> = nodes.iter().collect();
    let channel = format!("group:{group}");

    // ---- reshard while numbered messages flow -------------------------
    let source = cluster.owner_of(0, cluster.base).await;
    // To the primary of the middle range, so that `other` (in the last
    // range) stays on a primary that is neither moved nor killed below.
    let target = cluster.owner_of(5461, cluster.base).await;
    assert_ne!(target.id, source.id);
    // The readers on nodes b and c (node a's member gets every message
    // locally, Redis or not).
    let mut members = members.into_iter();
    let local = members.next().unwrap();
    let readers: Vec<_> = members.map(collect_until_end).collect();
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let hub = nodes[0].hub.clone();
        let group = group.clone();
        let published = published.clone();
        tokio::spawn(async move {
            for i in 0..M {
                hub.to(group.as_str()).send(i.to_string()).unwrap();
                published.store(i + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    wait_until("200 messages are out", || {
        published.load(Ordering::SeqCst) >= 200
    })
    .await;
    let moving_from = published.load(Ordering::SeqCst);
    let started = Instant::now();
    cluster
        .redis_cli(
            cluster.base,
            &[
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", cluster.base),
                "--cluster-from",
                &source.id,
                "--cluster-to",
                &target.id,
                "--cluster-slots",
                "1",
                "--cluster-yes",
            ],
        )
        .await;
    let moved_at = published.load(Ordering::SeqCst);
    let move_took = started.elapsed();
    assert_eq!(
        cluster.owner_of(0, target.port).await.id,
        target.id,
        "slot 0 moved"
    );
    // Resubscribed on the new owner by every node.
    let mut conn = cluster.conn(target.port).await;
    let deadline = Instant::now() + WAIT;
    while shard_numsub(&mut conn, &channel).await != 3 {
        assert!(
            Instant::now() < deadline,
            "not resubscribed on the new owner"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resubscribed_at = published.load(Ordering::SeqCst);
    let resubscribe_took = started.elapsed();
    publisher.await.unwrap();
    wait_subscribed(&all, &channel).await;
    nodes[0].hub.to(group.as_str()).send("end").unwrap();
    let mut members = vec![local];
    for (n, reader) in readers.into_iter().enumerate() {
        let (client, got) = reader.await.unwrap();
        let lost: Vec<usize> = (0..M).filter(|i| !got.contains(i)).collect();
        let lost_after_move = lost.iter().filter(|&&i| i >= moved_at).count();
        let lost_after_resubscribe = lost.iter().filter(|&&i| i >= resubscribed_at).count();
        eprintln!(
            "reshard, node {}: {} of {M} messages lost ({lost_after_move} published after \
             redis-cli returned, {lost_after_resubscribe} after every node had resubscribed); \
             lost: {:?}; the move started at message {moving_from} and took {move_took:?}, \
             resubscribed {resubscribe_took:?} after its start (message {resubscribed_at})",
            ["b", "c"][n],
            lost.len(),
            lost.first().zip(lost.last())
        );
        assert_eq!(lost_after_resubscribe, 0, "nothing lost once resubscribed");
        assert!(
            lost.iter().all(|&i| i >= moving_from.saturating_sub(1)),
            "nothing lost before the move began"
        );
        members.push(client);
    }
    // The local member got everything, in order (it never depends on Redis).
    let local = &mut members[0];
    for i in 0..M {
        assert_eq!(local.recv_text().await, i.to_string());
    }
    assert_eq!(local.recv_text().await, "end");

    // ---- the primary that owns the slot dies; its replica takes over --
    let killed = cluster.owner_of(0, cluster.base).await;
    let replica_of_killed = cluster
        .nodes_from(cluster.base)
        .await
        .into_iter()
        .find(|n| !n.primary && n.port != killed.port)
        .map(|n| n.port)
        .unwrap_or(cluster.base);
    let killed_at = cluster.kill(killed.port).await;
    // The other group (another primary) is not affected.
    nodes[1].hub.to(other.as_str()).send("steady").unwrap();
    for client in &mut others {
        marker_is_next(client, "steady", "a group on a primary that stayed").await;
    }
    // Probes every 50 ms until both remote members hear one.
    let resumed = probe_until_each_hears(&nodes[0].hub, &group, &mut members[1..], killed_at).await;
    let promoted = cluster.owner_of(0, replica_of_killed).await;
    assert_ne!(promoted.port, killed.port, "a replica was promoted");
    eprintln!(
        "failover: primary {} killed; slot 0 now on {}; delivery resumed on nodes b and c after {:?}",
        killed.port, promoted.port, resumed
    );
}
