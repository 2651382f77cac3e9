//! Per-group presence over a real Redis: the members and users of a group
//! on three nodes, exact after joins and leaves; paging that lists each
//! member once; a killed node's members gone within the presence TTL; bad
//! cursors and limits refused; and the same on a Redis Cluster, on sharded
//! Redis (each group on its own shard) and through Sentinel.
//!
//! The tests on `TestRedis::shared()` use groups and node ids of their own
//! (`presence-*`): presence keys are per group, so they do not see each
//! other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use groupcast::auth::{
    ClientAuth, GroupPatterns, KeySet, MintRequest, TokenVerifier, VerifyOptions, mint_hs256,
};
use groupcast::backend::IntoBackend;
use groupcast::backend::cluster::ClusterOptions;
use groupcast::backend::sentinel::SentinelOptions;
use groupcast::{Config, GroupName, Hub};
use serde_json::Value;

use crate::common::cluster::TestCluster;
use crate::common::node::NodeProcess;
use crate::common::redis::{TestRedis, fast_options, fast_sharded, query, start_many};
use crate::common::sentinel::{MASTER, TestSentinel};
use crate::common::{Client, TestServer, http, wait_until, wait_until_async};

const SECRET: &[u8] = b"presence-test-secret-of-32-bytes-at-least";

/// Token mode for every group, and `name` a public key that `on_connect`
/// sets (`secret` is set too, and must stay private).
fn hub_on(backend: impl IntoBackend, node: &str) -> Hub {
    let mut keys = KeySet::new();
    keys.add_secret(None, SECRET).expect("a secret");
    let auth = ClientAuth::with_tokens(TokenVerifier::new(keys, VerifyOptions::default()))
        .anonymous_groups(GroupPatterns::parse(["anon-*"]).expect("patterns"));
    Hub::builder()
        .node_id(node)
        .backend(backend)
        .client_auth(auth)
        .config(Config {
            presence: GroupPatterns::parse(["*"]).expect("patterns"),
            presence_keys: vec!["name".into()],
            max_connections_per_ip: 0,
            ..Config::default()
        })
        .on_connect(|_, session| {
            let sub = session.claims().sub.clone().unwrap_or_default();
            session.set("name", format!("Name of {sub}"));
            session.set("secret", "not shown");
        })
        .build()
        .expect("build a hub")
}

/// Three in-process nodes `<prefix>-a`, `-b`, `-c` on `backend()`.
async fn three(prefix: &str, backend: impl Fn() -> Box<dyn IntoBackend>) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let hub = hub_on(backend(), &format!("{prefix}-{name}"));
        nodes.push(TestServer::start(hub).await);
    }
    wait_until("every node is connected", || {
        nodes.iter().all(|n| n.hub.status().connected)
    })
    .await;
    nodes
}

/// A client of `sub` in `group` on `node`.
async fn member(node: &TestServer, group: &str, sub: &str) -> Client {
    let token = mint_hs256(SECRET, &MintRequest::new(sub, [group])).expect("a token");
    Client::connect(&format!("{}?token={token}", node.ws_url(group))).await
}

async fn json_of(url: &str) -> Value {
    let (status, answer) = http::get_json(url).await;
    assert_eq!(status, 200, "GET {url}: {answer}");
    answer
}

/// Every member of `group` as `node`'s API pages it, `limit` a page: each
/// member's JSON, in page order.
async fn all_pages(node: &TestServer, group: &str, limit: usize) -> Vec<Value> {
    let mut members = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = node.http_url(&format!(
            "/api/groups/{group}/members?limit={limit}&cursor={cursor}"
        ));
        let page = json_of(&url).await;
        let got = page["members"].as_array().expect("members").clone();
        assert!(got.len() <= limit, "{page}");
        members.extend(got);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return members,
        }
    }
}

/// `sub → connections` from `GET …/users`.
async fn users(node: &TestServer, group: &str) -> BTreeMap<String, u64> {
    let answer = json_of(&node.http_url(&format!("/api/groups/{group}/users"))).await;
    answer["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["sub"].as_str().expect("sub").to_string(),
                u["connections"].as_u64().expect("connections"),
            )
        })
        .collect()
}

/// `(node, sub)` of every member, sorted.
fn who(members: &[Value]) -> Vec<(String, String)> {
    let mut who: Vec<(String, String)> = members
        .iter()
        .map(|m| {
            (
                m["node"].as_str().unwrap_or_default().to_string(),
                m["sub"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    who.sort();
    who
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = list
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    pairs.sort();
    pairs
}

/// Members and users of one group on three nodes, exact after joins and
/// leaves, seen the same from every node, and by the library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_users_are_exact_across_three_nodes() {
    let url = TestRedis::shared().url();
    let nodes = three("presence-x", || Box::new(fast_options(url.clone()))).await;
    let group = "presence-exact";
    let alice_a1 = member(&nodes[0], group, "alice").await;
    let _alice_a2 = member(&nodes[0], group, "alice").await;
    let bob_b = member(&nodes[1], group, "bob").await;
    let _alice_b = member(&nodes[1], group, "alice").await;
    let _carol_c = member(&nodes[2], group, "carol").await;

    let expected = pairs(&[
        ("presence-x-a", "alice"),
        ("presence-x-a", "alice"),
        ("presence-x-b", "alice"),
        ("presence-x-b", "bob"),
        ("presence-x-c", "carol"),
    ]);
    for node in &nodes {
        wait_until_async("every node sees the five members", || async {
            who(&all_pages(node, group, 2).await) == expected
        })
        .await;
    }
    let users_now = users(&nodes[2], group).await;
    assert_eq!(
        users_now,
        BTreeMap::from([("alice".into(), 3), ("bob".into(), 1), ("carol".into(), 1)])
    );
    let shown = json_of(&nodes[1].http_url(&format!("/api/groups/{group}"))).await;
    assert_eq!(shown["presence"]["members"], 5, "{shown}");
    assert_eq!(shown["presence"]["users"], 3, "{shown}");
    // Only the public key, and each member's own.
    for m in all_pages(&nodes[0], group, 100).await {
        let sub = m["sub"].as_str().expect("sub");
        assert_eq!(m["keys"]["name"], format!("Name of {sub}"), "{m}");
        assert!(m["keys"].get("secret").is_none(), "{m}");
        assert!(m["connected_at_ms"].as_u64().expect("since") > 0, "{m}");
    }
    // The library: the same, from the hub.
    let name = GroupName::new(group).expect("a group name");
    let listed = nodes[2].hub.presence(&name).await.expect("presence");
    assert_eq!(listed.len(), 5);
    let stats = nodes[2].hub.presence_stats(&name).await.expect("stats");
    assert_eq!((stats.members, stats.users), (5, 3));

    // Leaves on two nodes: one of alice's three sessions, and bob's only.
    drop(alice_a1);
    drop(bob_b);
    let expected = pairs(&[
        ("presence-x-a", "alice"),
        ("presence-x-b", "alice"),
        ("presence-x-c", "carol"),
    ]);
    for node in &nodes {
        wait_until_async("every node sees the leaves", || async {
            who(&all_pages(node, group, 100).await) == expected
        })
        .await;
    }
    assert_eq!(
        users(&nodes[0], group).await,
        BTreeMap::from([("alice".into(), 2), ("carol".into(), 1)])
    );
    let stats = nodes[0].hub.presence_stats(&name).await.expect("stats");
    assert_eq!((stats.members, stats.users), (3, 2));
}

/// 1,000 members on three nodes, paged by 7 while others come and go: each
/// of the 1,000 is listed exactly once, and no member twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_lists_each_member_present_throughout_once() {
    const N: usize = 1000;
    let url = TestRedis::shared().url();
    let nodes = three("presence-p", || Box::new(fast_options(url.clone()))).await;
    let group = "anon-presence-paging";
    let mut stable = Vec::with_capacity(N);
    for i in 0..N {
        stable.push(Client::connect(&nodes[i % 3].ws_url(group)).await);
    }
    let count_url = nodes[0].http_url(&format!("/api/groups/{group}"));
    wait_until_async("the 1,000 members are written", || async {
        json_of(&count_url).await["presence"]["members"] == N
    })
    .await;
    let before: BTreeSet<String> = all_pages(&nodes[1], group, 1000)
        .await
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(before.len(), N);

    // Page by 7 while 30 members come and go on the side.
    let churn = {
        let node = nodes[2].ws_url(group);
        tokio::spawn(async move {
            let mut extra = Vec::new();
            for round in 0..30 {
                extra.push(Client::connect(&node).await);
                if round % 2 == 1 {
                    extra.remove(0);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            extra
        })
    };
    let paged = all_pages(&nodes[1], group, 7).await;
    let _extra = churn.await.expect("the churn ran");
    let mut seen = BTreeMap::<String, usize>::new();
    for m in &paged {
        *seen
            .entry(m["id"].as_str().expect("id").to_string())
            .or_default() += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "a member listed twice");
    for id in &before {
        assert_eq!(seen.get(id), Some(&1), "{id} not listed exactly once");
    }
    drop(stable);
    wait_until_async("every member is gone", || async {
        json_of(&count_url).await["presence"]["members"] == 15
    })
    .await;
}

/// A node killed with SIGKILL (no withdrawal): its members leave the group
/// within the presence TTL, the others stay, the counts follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_members_leave_within_the_ttl() {
    let redis = TestRedis::shared();
    let ttl = fast_options(redis.url()).presence_ttl;
    let survivor = TestServer::start(hub_on(fast_options(redis.url()), "presence-k-live")).await;
    wait_until("the survivor is connected", || {
        survivor.hub.status().connected
    })
    .await;
    let group = "anon-presence-killed";
    // Its name is its node id.
    let mut doomed =
        NodeProcess::start_clustered("presence-k-dead", &redis.url(), &["--presence", "*"]).await;
    // The node's API counts the cluster's members: its own first.
    let _a = doomed.connect(group, 1).await;
    let _b = doomed.connect(group, 2).await;
    let _kept = Client::connect(&survivor.ws_url(group)).await;
    let name = GroupName::new(group).expect("a group name");
    wait_until_async("the three members are listed", || async {
        survivor
            .hub
            .presence_stats(&name)
            .await
            .expect("stats")
            .members
            == 3
    })
    .await;

    doomed.kill();
    let killed = Instant::now();
    wait_until_async("the dead node's members are gone", || async {
        let members = survivor.hub.presence(&name).await.expect("presence");
        members.len() == 1 && members[0].node == "presence-k-live"
    })
    .await;
    // Its last batch was at most a batch window before the kill: gone
    // within the TTL, plus the polling and a batch's slack.
    let took = killed.elapsed();
    assert!(
        took <= ttl + Duration::from_millis(700),
        "gone after {took:?} (TTL {ttl:?})"
    );
    // Pruned for good: its entries are out of Redis, not just hidden.
    let bynode: Vec<String> = redis
        .query(&[
            "ZRANGE",
            "groupcast:presence:{group:anon-presence-killed}:bynode",
            "0",
            "-1",
        ])
        .await;
    assert!(
        bynode.iter().all(|e| e.starts_with("presence-k-live\n")),
        "{bynode:?}"
    );
}

/// A cursor or limit this server would not hand out: 400 with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_and_limits_are_400() {
    let node = TestServer::start(hub_on(
        fast_options(TestRedis::shared().url()),
        "presence-q",
    ))
    .await;
    let base = node.http_url("/api/groups/anon-presence-query/members");
    for (query, code) in [
        ("cursor=!!!", "bad_cursor"),
        ("cursor=YSBi", "bad_cursor"), // base64 of "a b": no id
        ("limit=0", "bad_limit"),
        ("limit=1001", "bad_limit"),
        ("limit=ten", "bad_limit"),
        ("limit=-1", "bad_limit"),
    ] {
        let (status, answer) = http::get_json(&format!("{base}?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"], code, "{query}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    let (status, answer) = http::get_json(&format!("{base}?limit=1000&cursor=")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["next_cursor"], Value::Null);
}

/// The same on a Redis Cluster: one group's keys in one slot, groups on
/// every primary.
/// Three groups (on different slots or shards where there are several),
/// each with a member on each of the three `nodes`: every node lists each
/// group's members and users; the first node's members leave, and every
/// group lists the other two.
async fn presence_holds_across(nodes: &[TestServer], groups: &[String]) {
    let mut clients: Vec<Client> = Vec::new();
    for group in groups {
        for (i, node) in nodes.iter().enumerate() {
            clients.push(member(node, group, &format!("user-{}", i % 2)).await);
        }
    }
    for group in groups {
        wait_until_async("each group lists its three members", || async {
            all_pages(&nodes[0], group, 2).await.len() == 3
        })
        .await;
        assert_eq!(
            users(&nodes[1], group).await,
            BTreeMap::from([("user-0".into(), 2), ("user-1".into(), 1)])
        );
    }
    // The first node's members leave every group (clients are in the
    // order group × node).
    let first_node = nodes[0].hub.node_id().to_string();
    let (first, _rest): (Vec<_>, Vec<_>) = clients
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 3 == 0);
    drop(first);
    for group in groups {
        wait_until_async("the first node's members are gone", || async {
            let members = all_pages(&nodes[2], group, 100).await;
            members.len() == 2 && members.iter().all(|m| m["node"] != first_node.as_str())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_works_on_a_redis_cluster() {
    let cluster = TestCluster::start().await;
    let seeds = cluster.seeds();
    let nodes = three("presence-rc", || {
        let mut options = ClusterOptions::new(seeds.clone());
        options.redis = fast_options(String::new());
        Box::new(options)
    })
    .await;
    presence_holds_across(&nodes, &named(&["rc-one", "rc-two", "rc-three"])).await;
}

/// Each group's presence lives on its group's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_works_on_sharded_redis() {
    let shards = start_many(2).await;
    let options = fast_sharded(&shards);
    let nodes = three("presence-sh", || Box::new(options.clone())).await;
    // One group on each shard.
    let groups: Vec<String> = (0..2)
        .map(|shard| {
            (0..)
                .map(|n| format!("sh-{n}"))
                .find(|name| options.shard_of(&GroupName::new(name.as_str()).unwrap()) == shard)
                .expect("a name on every shard")
        })
        .collect();
    presence_holds_across(&nodes, &groups).await;
    // Each group's presence keys are on its own shard (waited for: under
    // load a member whose node's heartbeat was late can be pruned and
    // written back a moment later, as on any backend).
    for (shard, group) in shards.iter().zip(&groups) {
        let key = format!("groupcast:presence:{{group:{group}}}:members");
        wait_until_async("the group's presence is on its own shard", || async {
            let mut conn = shard.client().await;
            query::<i64>(&mut conn, &["HLEN", &key]).await == 2
        })
        .await;
    }
}

fn named(groups: &[&str]) -> Vec<String> {
    groups.iter().map(|g| g.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_works_through_sentinel() {
    let sentinel = TestSentinel::start().await;
    let mut options = SentinelOptions::new(sentinel.sentinels(), MASTER);
    options.redis = fast_options(String::new());
    let nodes = three("presence-st", || Box::new(options.clone())).await;
    presence_holds_across(&nodes, &named(&["st-one", "st-two", "st-three"])).await;
}

/// Presence is kept only for the groups `Config::presence` names: another
/// group's members are not written (no Redis keys, no heartbeat cost), its
/// member list is a 404 that says how to turn it on, and its summary shows
/// `presence: null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_outside_the_presence_patterns_keeps_none() {
    let redis = TestRedis::shared();
    let hub = Hub::builder()
        .node_id(format!("presence-off-{:04x}", rand::random::<u16>()))
        .backend(fast_options(redis.url()))
        .config(Config {
            presence: GroupPatterns::parse(["kept-*"]).expect("patterns"),
            ..Config::default()
        })
        .build()
        .expect("a hub");
    let server = TestServer::start(hub).await;
    let _kept = server.connect("kept-1").await;
    let _other = server.connect("unkept-1").await;
    crate::common::wait_until_async("the kept group's member is written", || async {
        server
            .hub
            .presence_stats(&"kept-1".parse().unwrap())
            .await
            .map(|s| s.members)
            .unwrap_or(0)
            == 1
    })
    .await;
    let (status, body) =
        crate::common::http::get_json(&server.http_url("/api/groups/unkept-1/members")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("presence_off")),
        "{body}"
    );
    let (status, body) =
        crate::common::http::get_json(&server.http_url("/api/groups/unkept-1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["presence"], serde_json::Value::Null);
    let mut conn = redis.client().await;
    // (EXISTS, not KEYS: other tests count KEYS and SCAN calls.)
    let existing: i64 = crate::common::redis::query(
        &mut conn,
        &[
            "EXISTS",
            "groupcast:presence:{group:unkept-1}:members",
            "groupcast:presence:{group:unkept-1}:ids",
        ],
    )
    .await;
    assert_eq!(existing, 0, "no presence keys for the unkept group");
}
