//! Disconnect on demand across nodes over a real Redis: a session closed
//! through another node's API, every connection of a user on two nodes,
//! the close codes that say whether to come back (4009, 4509, the
//! caller's own), 404 for a session or user no node has, 400 for a bad
//! body, 401 without the API key, a live node that does not answer named
//! (504 when nobody can say), and the same on sharded Redis, a Redis
//! Cluster and behind Sentinel.
//!
//! Each test's nodes form a cluster of their own on the shared Redis: a
//! cluster view key and a cluster channel of their own (`isolated`), so
//! that no other test's node is asked, or counted as not answering.

use std::sync::Arc;

use groupcast::auth::{
    ApiKeys, ClientAuth, KeySet, MintRequest, TokenVerifier, VerifyOptions, mint_hs256,
};
use groupcast::backend::IntoBackend;
use groupcast::backend::cluster::ClusterOptions;
use groupcast::backend::redis::RedisOptions;
use groupcast::backend::sentinel::SentinelOptions;
use groupcast::server::ServerOptions;
use groupcast::{CloseReason, Hub, Who};
use serde_json::{Value, json};

use crate::common::cluster::TestCluster;
use crate::common::redis::{TestRedis, fast_options, fast_sharded, start_many};
use crate::common::sentinel::{MASTER, TestSentinel};
use crate::common::{Client, TestServer, wait_until_async};

const SECRET: &[u8] = b"disconnect-test-secret-of-32-bytes-at-least";
const API_KEY: &str = "disconnect-test-api-key";

/// `fast_options` on `url`, in a cluster of its own named `tag`.
fn isolated(url: String, tag: &str) -> RedisOptions {
    let mut options = fast_options(url);
    options.presence_key = format!("disconnect:{tag}");
    options.cluster_channel = format!("groupcast:disconnect:{tag}");
    options
}

/// A node `<tag>-<name>` on `backend`: tokens for every group, the API
/// behind [`API_KEY`].
async fn node(backend: impl IntoBackend, tag: &str, name: &str) -> TestServer {
    let mut keys = KeySet::new();
    keys.add_secret(None, SECRET).expect("a secret");
    let hub = Hub::builder()
        .node_id(format!("{tag}-{name}"))
        .backend(backend)
        .client_auth(ClientAuth::with_tokens(TokenVerifier::new(
            keys,
            VerifyOptions::default(),
        )))
        .config(groupcast::Config {
            max_connections_per_ip: 0,
            ..groupcast::Config::default()
        })
        .build()
        .expect("a hub");
    let options = ServerOptions {
        api_keys: Arc::new(ApiKeys::new([API_KEY]).expect("a key")),
        ..ServerOptions::default()
    };
    TestServer::start_with(hub, options).await
}

/// Three nodes `<tag>-a`, `-b`, `-c`, once each sees the other two.
async fn three(tag: &str, backend: impl Fn() -> Box<dyn IntoBackend>) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(node(backend(), tag, name).await);
    }
    for n in &nodes {
        wait_until_async("every node sees the three", || async {
            n.hub.nodes().await.map(|v| v.len()).unwrap_or(0) == 3
        })
        .await;
    }
    nodes
}

/// A `groupcast.v1`-less client of `sub` in `group` on `node`.
async fn member(node: &TestServer, group: &str, sub: &str) -> Client {
    let token = mint_hs256(SECRET, &MintRequest::new(sub, [group])).expect("a token");
    Client::connect(&format!("{}?token={token}", node.ws_url(group))).await
}

/// The id of `sub`'s session in `group` on `node` (from its API).
async fn session_id(node: &TestServer, group: &str, sub: &str) -> String {
    let (status, shown) = call(
        reqwest::Method::GET,
        node,
        &format!("/api/groups/{group}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    shown["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["auth"]["sub"] == sub)
        .and_then(|s| s["id"].as_str())
        .unwrap_or_else(|| panic!("no session of {sub}: {shown}"))
        .to_string()
}

/// `method path` on `node` with the API key and `body` (none: empty),
/// the status and the JSON answer.
async fn call(
    method: reqwest::Method,
    node: &TestServer,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let url = node.http_url(path);
    let response = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body.unwrap_or("").to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `client`, a member of `group`, still gets what is published there
/// (through `node`'s API): it was not disconnected.
async fn still_connected(client: &mut Client, node: &TestServer, group: &str) {
    let path = format!("/api/groups/{group}/messages");
    let response = reqwest::Client::new()
        .post(node.http_url(&path))
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body("still here")
        .send()
        .await
        .expect("a publish");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(client.recv_text().await, "still here");
}

async fn post(node: &TestServer, path: &str, body: Option<&str>) -> (u16, Value) {
    call(reqwest::Method::POST, node, path, body).await
}

/// A session connected to one node, disconnected through another node's
/// API: 4009 by default (may reconnect), 4509 with `reconnect: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_another_node_is_disconnected_with_the_code_asked() {
    let url = TestRedis::shared().url();
    let nodes = three("disc-s", || Box::new(isolated(url.clone(), "disc-s"))).await;
    let group = "disc-session";
    let mut first = member(&nodes[1], group, "alice").await;
    let id = session_id(&nodes[1], group, "alice").await;

    let (status, answer) = post(&nodes[0], &format!("/api/sessions/{id}/disconnect"), None).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"disconnected": 1, "unanswered": []}))
    );
    assert_eq!(first.expect_close_code(4009).await, "disconnected");

    let mut second = member(&nodes[2], group, "alice").await;
    let id = session_id(&nodes[2], group, "alice").await;
    let body = r#"{"reconnect": false, "reason": "account closed"}"#;
    let (status, answer) = post(
        &nodes[0],
        &format!("/api/sessions/{id}/disconnect"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["disconnected"], 1);
    assert_eq!(second.expect_close_code(4509).await, "account closed");

    // The caller's own code, on the node the session is on.
    let mut third = member(&nodes[0], group, "alice").await;
    let id = session_id(&nodes[0], group, "alice").await;
    let body = r#"{"code": 4600, "reason": "banned"}"#;
    let (status, _) = post(
        &nodes[0],
        &format!("/api/sessions/{id}/disconnect"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(third.expect_close_code(4600).await, "banned");
}

/// Every connection of a user, on two nodes, through the third node's
/// API; another user's connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_a_user_is_disconnected_on_every_node() {
    let url = TestRedis::shared().url();
    let nodes = three("disc-u", || Box::new(isolated(url.clone(), "disc-u"))).await;
    let group = "disc-user";
    let mut on_b = member(&nodes[1], group, "mallory").await;
    let mut on_c = member(&nodes[2], group, "mallory").await;
    let mut bob = member(&nodes[1], group, "bob").await;

    let body = r#"{"reconnect": false, "reason": "banned"}"#;
    let (status, answer) = post(&nodes[0], "/api/users/mallory/disconnect", Some(body)).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"disconnected": 2, "unanswered": []}))
    );
    assert_eq!(on_b.expect_close_code(4509).await, "banned");
    assert_eq!(on_c.expect_close_code(4509).await, "banned");

    still_connected(&mut bob, &nodes[0], group).await;

    // The library's call does the same.
    let mut again = member(&nodes[2], group, "mallory").await;
    let done = nodes[1]
        .hub
        .disconnect(
            Who::User("mallory".into()),
            CloseReason::from_websocket_code(4009, "bye"),
        )
        .await
        .expect("disconnect");
    assert_eq!(done.disconnected, 1);
    assert_eq!(again.expect_close_code(4009).await, "bye");
}

/// A session or a user no node has: 404 with the JSON error, after every
/// node said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sessions_and_users_are_404() {
    let url = TestRedis::shared().url();
    let nodes = three("disc-404", || Box::new(isolated(url.clone(), "disc-404"))).await;
    let mut bystander = member(&nodes[1], "disc-404", "bob").await;
    let (status, answer) = post(&nodes[0], "/api/sessions/00000000deadbeef/disconnect", None).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"], "unknown_session", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .expect("a message")
            .contains("00000000deadbeef")
    );
    let (status, answer) = post(&nodes[2], "/api/users/nobody/disconnect", None).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"], "unknown_user", "{answer}");
    still_connected(&mut bystander, &nodes[0], "disc-404").await;
}

/// Bad bodies are 400 with the reason, before anything is closed; no API
/// key is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_400_and_a_missing_key_is_401() {
    let url = TestRedis::shared().url();
    let node = node(isolated(url, "disc-400"), "disc-400", "a").await;
    let mut alice = member(&node, "disc-400", "alice").await;
    let long = format!(r#"{{"reason": "{}"}}"#, "x".repeat(124));
    for (body, says) in [
        ("{", "not"),
        (r#"{"code": "4009"}"#, "not"),
        (r#"{"code": 3000}"#, "4000 to 4999"),
        (r#"{"code": 5000}"#, "4000 to 4999"),
        (r#"{"code": 4003}"#, "groupcast's own"),
        (r#"{"code": 4600, "reconnect": true}"#, "do not reconnect"),
        (r#"{"colour": "red"}"#, "colour"),
        (long.as_str(), "124 bytes"),
    ] {
        let (status, answer) = post(&node, "/api/users/alice/disconnect", Some(body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_body", "{body}: {answer}");
        let message = answer["message"].as_str().expect("a message");
        assert!(message.contains(says), "{body}: {message}");
    }
    let response = reqwest::Client::new()
        .post(node.http_url("/api/users/alice/disconnect"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 401);
    // Nothing above closed her.
    still_connected(&mut alice, &node, "disc-400").await;
    let (status, _) = post(&node, "/api/users/alice/disconnect", Some(" ")).await;
    assert_eq!(status, 200, "an empty body is all defaults");
    alice.expect_close_code(4009).await;
}

/// A node in the cluster view that does not answer (here a ghost entry
/// that no process serves) is named: 200 with the count when someone had
/// the user, 504 when nobody that answered had it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_is_named() {
    let redis = TestRedis::shared();
    let tag = "disc-ghost";
    let a = node(isolated(redis.url(), tag), tag, "a").await;
    let mut alice = member(&a, tag, "alice").await;
    // A live entry far in the future, as a frozen node's would be.
    let info = json!({"node_id": "ghost", "groups": {}, "sessions": 0, "last_seen_ms": 0});
    let _: i64 = redis
        .query(&[
            "HSET",
            &format!("{{disconnect:{tag}}}:info"),
            "ghost",
            &info.to_string(),
        ])
        .await;
    let _: i64 = redis
        .query(&[
            "ZADD",
            &format!("{{disconnect:{tag}}}:seen"),
            "99999999999999",
            "ghost",
        ])
        .await;
    wait_until_async("the ghost is in the view", || async {
        a.hub.nodes().await.map(|v| v.len()).unwrap_or(0) == 2
    })
    .await;

    let (status, answer) = post(&a, "/api/users/nobody/disconnect", None).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["error"], "no_answer");
    assert!(
        answer["message"]
            .as_str()
            .expect("message")
            .contains("ghost"),
        "{answer}"
    );

    let (status, answer) = post(&a, "/api/users/alice/disconnect", None).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"disconnected": 1, "unanswered": ["ghost"]}))
    );
    alice.expect_close_code(4009).await;
}

/// A user on two nodes of a sharded cluster (control on shard 0), of a
/// Redis Cluster (the cluster channel a shard channel) and behind
/// Sentinel (the primary it names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_disconnected_across_nodes_in_the_other_redis_modes() {
    let shards = start_many(2).await;
    let sharded = three("disc-sh", || Box::new(fast_sharded(&shards))).await;
    let cluster = TestCluster::start().await;
    let seeds = cluster.seeds();
    let on_cluster = three("disc-rc", || {
        let mut options = ClusterOptions::new(seeds.clone());
        options.redis = fast_options(String::new());
        Box::new(options)
    })
    .await;
    let sentinel = TestSentinel::start().await;
    let mut options = SentinelOptions::new(sentinel.sentinels(), MASTER);
    options.redis = fast_options(String::new());
    let behind_sentinel = three("disc-sen", || Box::new(options.clone())).await;
    for nodes in [&sharded, &on_cluster, &behind_sentinel] {
        let mut on_b = member(&nodes[1], "disc-modes", "eve").await;
        let mut on_c = member(&nodes[2], "disc-modes", "eve").await;
        let (status, answer) = post(&nodes[0], "/api/users/eve/disconnect", None).await;
        assert_eq!(
            (status, &answer),
            (200, &json!({"disconnected": 2, "unanswered": []}))
        );
        on_b.expect_close_code(4009).await;
        on_c.expect_close_code(4009).await;
        let (status, answer) = post(&nodes[0], "/api/users/eve/disconnect", None).await;
        assert_eq!(status, 404, "{answer}");
    }
}
