//! Presence webhooks on real nodes (spawned binaries) sharing one Redis,
//! posting to a real HTTP receiver: each transition is sent once in the
//! cluster, by whichever node's presence script made it; a user's leave and
//! a group's vacancy wait out the grace, and a reconnect within it sends
//! nothing; a SIGKILLed node's users leave once, reported by a survivor.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use groupcast::auth::{MintRequest, mint_hs256};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::Client;
use crate::common::http::get_json;
use crate::common::node::NodeProcess;
use crate::common::redis::TestRedis;
use crate::common::webhooks::{SECRET, Shared, receiver};
use crate::common::{wait_until, wait_until_async};

/// The nodes' token secret.
const JWT: &str = "webhooks-cluster-test-secret-32-bytes-or-more";

/// How long leaves wait for a comeback in these tests.
const GRACE: Duration = Duration::from_secs(1);

/// A node on `redis_url` posting every `events` kind of the `hooks-*`
/// groups to the receiver at `hook`.
async fn hooked_node(name: &str, redis_url: &str, hook: &str, events: &str) -> NodeProcess {
    let secret = std::str::from_utf8(SECRET).expect("a text secret");
    NodeProcess::start_clustered(
        name,
        redis_url,
        &[
            "--presence",
            "hooks-*",
            "--presence-grace",
            "1s",
            "--webhook-url",
            hook,
            "--webhook-secret",
            secret,
            "--webhook-events",
            events,
            "--jwt-secret",
            JWT,
        ],
    )
    .await
}

/// A client of `sub` in `group` on `node`.
async fn member(node: &NodeProcess, group: &str, sub: &str) -> Client {
    let token = mint_hs256(JWT.as_bytes(), &MintRequest::new(sub, [group])).expect("a token");
    Client::connect(&format!("{}?token={token}", node.ws_url(group))).await
}

/// `(sub, connections)` of `group`, as `node`'s presence API lists them.
async fn users(node: &NodeProcess, group: &str) -> Vec<(String, u64)> {
    let (_, answer) = get_json(&node.url(&format!("/api/groups/{group}/users"))).await;
    answer["users"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .map(|u| {
                    let sub = u["sub"].as_str().unwrap_or_default().to_string();
                    (sub, u["connections"].as_u64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The receiver's events of `group`, in arrival order.
fn events_of(seen: &Shared, group: &str) -> Vec<Value> {
    seen.lock()
        .events
        .iter()
        .filter(|e| e["group"] == group)
        .cloned()
        .collect()
}

/// `type` or `type:sub` of each event, in arrival order.
fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["sub"].as_str() {
            Some(sub) => format!("{}:{sub}", e["type"].as_str().unwrap_or("?")),
            None => e["type"].as_str().unwrap_or("?").to_string(),
        })
        .collect()
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Waits until the receiver has `count` events of `group`.
async fn wait_for_events(seen: &Shared, group: &str, count: usize) -> Vec<Value> {
    wait_until(&format!("{count} webhook events of {group}"), || {
        events_of(seen, group).len() >= count
    })
    .await;
    events_of(seen, group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_are_sent_once_across_nodes_and_leaves_after_the_grace() {
    let redis = TestRedis::shared();
    let seen: Shared = Arc::default();
    let hook = format!(
        "http://{}/hook",
        receiver(seen.clone(), None, CancellationToken::new()).await
    );
    let events = "group_occupied,group_vacated,user_joined,user_left";
    let a = hooked_node("hooks-once-a", &redis.url(), &hook, events).await;
    let b = hooked_node("hooks-once-b", &redis.url(), &hook, events).await;
    let group = "hooks-once";

    // Alice on both nodes, Bob on one: the group is occupied once, each
    // user joins once, whichever node's write came first.
    let alice_a = member(&a, group, "alice").await;
    let alice_b = member(&b, group, "alice").await;
    let bob_b = member(&b, group, "bob").await;
    let joined = wait_for_events(&seen, group, 3).await;
    assert_eq!(
        sorted(kinds(&joined)),
        ["group_occupied", "user_joined:alice", "user_joined:bob"]
    );
    // One node's events arrive in order (nodes' senders are independent):
    // the group's occupancy and its first user come from one script call.
    let at = |list: &[String], kind: &str| list.iter().position(|k| k == kind);
    assert!(
        at(&kinds(&joined), "group_occupied") < at(&kinds(&joined), "user_joined:alice"),
        "occupied comes before the first user: {joined:?}"
    );

    // Bob reloads: gone from B, back on A within the grace. Alice closes
    // one of her two connections. Neither is a user leaving.
    drop(bob_b);
    let bob_a = member(&a, group, "bob").await;
    drop(alice_a);

    wait_until_async("presence shows one connection each", || async {
        users(&a, group).await == [("alice".to_string(), 1), ("bob".to_string(), 1)]
    })
    .await;
    assert_eq!(events_of(&seen, group).len(), 3, "only the joins so far");

    // Everyone leaves: each user once, then the group, after the grace.
    let left_at = now_ms();
    drop(alice_b);
    drop(bob_a);
    let all = wait_for_events(&seen, group, 6).await;
    assert_eq!(
        sorted(kinds(&all)),
        [
            "group_occupied",
            "group_vacated",
            "user_joined:alice",
            "user_joined:bob",
            "user_left:alice",
            "user_left:bob"
        ],
        "nothing for Bob's reconnect or Alice's second connection: {all:?}"
    );
    let vacated = all.iter().position(|e| e["type"] == "group_vacated");
    let by_its_node: Vec<&Value> = all
        .iter()
        .filter(|e| vacated.is_some_and(|v| e["node"] == all[v]["node"]))
        .collect();
    assert_eq!(
        by_its_node.last().map(|e| &e["type"]),
        Some(&Value::from("group_vacated")),
        "vacated is its node's last: {all:?}"
    );
    let grace_ms = u64::try_from(GRACE.as_millis()).expect("small");
    for event in &all[3..] {
        let at = event["at_ms"].as_u64().expect("at_ms");
        assert!(at + 100 >= left_at + grace_ms, "{event} before the grace");
        assert!(
            event["id"].as_str().is_some_and(|id| id.len() == 32),
            "{event}"
        );
    }

    // A later comeback is a new occupancy, sent once.
    let _carol = member(&b, group, "carol").await;
    let again = wait_for_events(&seen, group, 8).await;
    assert_eq!(
        sorted(kinds(&again[6..])),
        ["group_occupied", "user_joined:carol"]
    );
    assert_eq!(seen.lock().bad_signatures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_leave_once_reported_by_a_survivor() {
    let redis = TestRedis::shared();
    let seen: Shared = Arc::default();
    let hook = format!(
        "http://{}/hook",
        receiver(seen.clone(), None, CancellationToken::new()).await
    );
    let events = "group_occupied,group_vacated,user_joined,user_left,session_left";
    let survivor = hooked_node("hooks-kill-live", &redis.url(), &hook, events).await;
    let mut doomed = hooked_node("hooks-kill-dead", &redis.url(), &hook, events).await;
    let group = "hooks-killed";

    let _carol = member(&doomed, group, "carol").await;
    let dave = member(&survivor, group, "dave").await;
    let joined = wait_for_events(&seen, group, 3).await;
    assert_eq!(
        sorted(kinds(&joined)),
        ["group_occupied", "user_joined:carol", "user_joined:dave"]
    );

    // No withdrawal: Carol's session is pruned by the survivor's script
    // once the dead node's entry expires, and she leaves after the grace.
    doomed.kill();
    let gone = wait_for_events(&seen, group, 5).await;
    assert_eq!(
        sorted(kinds(&gone[3..])),
        ["session_left:carol", "user_left:carol"],
        "{gone:?}"
    );
    for event in &gone[3..] {
        assert_eq!(event["node"], "hooks-kill-live", "{event}");
    }
    assert_eq!(kinds(&gone[3..])[0], "session_left:carol");

    // The last member leaves: its session, the user, then the group, once.
    drop(dave);
    let all = wait_for_events(&seen, group, 8).await;
    assert_eq!(
        kinds(&all[5..]),
        ["session_left:dave", "user_left:dave", "group_vacated"],
        "{all:?}"
    );
    assert_eq!(seen.lock().bad_signatures, 0);
}
