//! Checks that several in-process nodes on one backend share (the nodes of
//! [`three_nodes`](super::redis::three_nodes) and
//! [`three_nodes_on`](super::redis::three_nodes_on)): a member of a group
//! on every node, every node broadcasting to every group, numbered bursts
//! from two publishing nodes and their per-publisher order, probes until
//! delivery resumes after a failover, and what `/api/info` says.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use groupcast::Hub;
use serde_json::Value;

use super::redis::wait_subscribed;
use super::{Client, TestServer, http};

/// Connects one member of `group` on every node of `nodes` (in their
/// order), then waits until every node is subscribed to `group:<group>`.
pub async fn members_on_every_node(nodes: &[TestServer], group: &str) -> Vec<Client> {
    let mut members = Vec::new();
    for node in nodes {
        members.push(node.connect(group).await);
    }
    let all: Vec<&TestServer> = nodes.iter().collect();
    wait_subscribed(&all, &format!("group:{group}")).await;
    members
}

/// [`members_on_every_node`] for each of `groups`: `members[g][n]` is the
/// member of `groups[g]` on `nodes[n]`.
pub async fn members_of_every_group(
    nodes: &[TestServer],
    groups: &[impl AsRef<str>],
) -> Vec<Vec<Client>> {
    let mut members = Vec::new();
    for group in groups {
        members.push(members_on_every_node(nodes, group.as_ref()).await);
    }
    members
}

/// Every node (`n`) broadcasts `<n>:<group>` to every group of `groups`;
/// each member (`members[g][n]`, as [`members_of_every_group`] connects
/// them) reads exactly its own group's message from every node. Compared
/// as a set: the nodes publish with no order between them.
pub async fn every_node_broadcasts_to_every_group(
    nodes: &[TestServer],
    groups: &[impl AsRef<str>],
    members: &mut [Vec<Client>],
) {
    for (n, node) in nodes.iter().enumerate() {
        for group in groups {
            let group = group.as_ref();
            node.hub.to(group).send(format!("{n}:{group}")).unwrap();
        }
    }
    for (group, of_group) in groups.iter().zip(members.iter_mut()) {
        let group = group.as_ref();
        let expected: Vec<String> = (0..nodes.len()).map(|n| format!("{n}:{group}")).collect();
        for member in of_group.iter_mut() {
            let mut got = Vec::new();
            for _ in 0..nodes.len() {
                got.push(member.recv_text().await);
            }
            got.sort();
            assert_eq!(got, expected, "what a member of {group} read");
        }
    }
}

/// The publishers of [`publish_bursts_from_a_and_b`]: `a` on the first
/// node, `b` on the second.
pub const BURST_PUBLISHERS: [&str; 2] = ["a", "b"];

/// Nodes a and b (`nodes[0]` and `nodes[1]`) each send `<a|b>:<i>`, `i`
/// in `0..n`, to every group of `groups`, both at once (in tasks that
/// yield now and then); returns once both have sent everything.
pub async fn publish_bursts_from_a_and_b(
    nodes: &[TestServer],
    groups: &[impl AsRef<str>],
    n: usize,
) {
    let groups: Vec<String> = groups.iter().map(|g| g.as_ref().to_string()).collect();
    let publishers: Vec<_> = BURST_PUBLISHERS
        .into_iter()
        .zip(nodes)
        .map(|(name, node)| {
            let hub = node.hub.clone();
            let groups = groups.clone();
            tokio::spawn(async move {
                for i in 0..n {
                    for group in &groups {
                        hub.to(group.as_str()).send(format!("{name}:{i}")).unwrap();
                    }
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
}

/// Reads the `2 * n` messages of [`publish_bursts_from_a_and_b`] from
/// `client` (`who` in a failure): each publisher's numbers come in the
/// order they were sent, and all `n` of each.
pub async fn assert_bursts_in_order(client: &mut Client, n: usize, who: &str) {
    let mut next: HashMap<String, usize> = HashMap::new();
    for _ in 0..BURST_PUBLISHERS.len() * n {
        let text = client.recv_text().await;
        let (from, i) = text.split_once(':').expect("name:index");
        let expected = next.entry(from.to_string()).or_default();
        assert_eq!(
            i.parse::<usize>().unwrap(),
            *expected,
            "{who}: {from}'s messages out of order"
        );
        *expected += 1;
    }
    for publisher in BURST_PUBLISHERS {
        assert_eq!(next.get(publisher), Some(&n), "{who}: {publisher}'s count");
    }
}

/// Once a Redis primary was killed at `killed_at`: `hub` sends
/// `probe-<k>` to `group` every 50 ms (1,200 at most) until each of
/// `clients` has read a probe (skipping whatever came before it; 60 s at
/// most). How long after the kill each client heard its first probe.
pub async fn probe_until_each_hears(
    hub: &Hub,
    group: &str,
    clients: &mut [Client],
    killed_at: Instant,
) -> Vec<Duration> {
    const LIMIT: Duration = Duration::from_secs(60);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let prober = {
        let hub = hub.clone();
        let group = group.to_string();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            tokio::pin!(stopped);
            for k in 0..1200 {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {}
                }
                let _ = hub.to(group.as_str()).send(format!("probe-{k}"));
            }
        })
    };
    let mut resumed = Vec::new();
    for client in clients.iter_mut() {
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = tokio::time::timeout(LIMIT, client.recv_text())
                .await
                .expect("delivery resumed within 60 s");
            if text.starts_with("probe-") {
                resumed.push(killed_at.elapsed());
                break;
            }
            assert!(Instant::now() < deadline, "delivery resumed within 60 s");
        }
    }
    let _ = stop.send(());
    prober.await.unwrap();
    resumed
}

/// `from` broadcasts `to the binary` to `group`, and `on_binary` (a
/// member of `group` on a spawned binary in the same cluster) reads it.
pub async fn the_binary_hears(from: &TestServer, group: &str, on_binary: &mut Client) {
    from.hub.to(group).send("to the binary").unwrap();
    assert_eq!(on_binary.recv_text().await, "to the binary");
}

/// `GET /api/info` of `node`: answers 200 and names `mode`; its list of
/// Redis connections.
pub async fn api_info_connections(node: &TestServer, mode: &str) -> Vec<Value> {
    let (code, info) = http::get_json(&node.http_url("/api/info")).await;
    assert_eq!(code, 200, "{info}");
    assert_eq!(info["mode"], mode, "{info}");
    info["redis"]
        .as_array()
        .unwrap_or_else(|| panic!("a list of connections: {info}"))
        .clone()
}
