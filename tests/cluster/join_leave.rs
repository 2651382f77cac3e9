//! Join/leave frames (`--join-leave`) on real nodes (spawned binaries)
//! sharing one Redis: a `groupcast.v1` member hears each connection join
//! and leave once and each user join and leave once (after the grace),
//! whichever node the other members are on; a raw client hears none.

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::common::Client;
use crate::common::http::post_text;
use crate::common::node::NodeProcess;
use crate::common::redis::TestRedis;
use groupcast::auth::{MintRequest, mint_hs256};

const JWT: &str = "join-leave-cluster-test-secret-32-bytes-or-more";

async fn node(name: &str, redis_url: &str) -> NodeProcess {
    NodeProcess::start_clustered(
        name,
        redis_url,
        &[
            "--presence",
            "jl-*",
            "--join-leave",
            "jl-*",
            "--presence-grace",
            "1s",
            "--jwt-secret",
            JWT,
        ],
    )
    .await
}

fn url(node: &NodeProcess, group: &str, sub: &str) -> String {
    let token = mint_hs256(JWT.as_bytes(), &MintRequest::new(sub, [group])).expect("a token");
    format!("{}?token={token}", node.ws_url(group))
}

async fn next_text(client: &mut Client) -> String {
    match client.next_data().await {
        Ws::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// `type:sub` (and `@node` for connection frames) of the next frame.
async fn next_frame(client: &mut Client) -> String {
    let frame: Value = serde_json::from_str(&next_text(client).await).expect("JSON");
    let kind = frame["type"].as_str().unwrap_or("?");
    let sub = frame["sub"].as_str().unwrap_or("");
    match frame["session"].as_str() {
        Some(_) => format!("{kind}:{sub}@{}", frame["node"].as_str().unwrap_or("?")),
        None => format!("{kind}:{sub}"),
    }
}

/// The next `count` frames, sorted (frames of one transition batch come
/// in order, those of different nodes may interleave).
async fn next_frames(client: &mut Client, count: usize) -> Vec<String> {
    let mut frames = Vec::new();
    for _ in 0..count {
        frames.push(next_frame(client).await);
    }
    frames.sort();
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_members_hear_each_join_and_leave_once_and_raw_clients_none() {
    let redis = TestRedis::shared();
    let a = node("jl-a", &redis.url()).await;
    let b = node("jl-b", &redis.url()).await;
    let group = "jl-room";

    let mut watcher = Client::try_connect(
        &url(&a, group, "watcher"),
        &[("sec-websocket-protocol", "groupcast.v1")],
    )
    .await
    .unwrap_or_else(|refused| panic!("{refused:?}"));
    assert!(next_text(&mut watcher).await.contains("\"welcome\""));
    // Its own arrival, like anyone's.
    assert_eq!(
        next_frames(&mut watcher, 2).await,
        ["join:watcher@jl-a", "user_joined:watcher"]
    );
    let mut raw = Client::connect(&url(&a, group, "raw")).await;
    assert_eq!(
        next_frames(&mut watcher, 2).await,
        ["join:raw@jl-a", "user_joined:raw"]
    );

    // Bob twice on the other node: one user_joined, two joins.
    let bob_1 = Client::connect(&url(&b, group, "bob")).await;
    let bob_2 = Client::connect(&url(&b, group, "bob")).await;
    assert_eq!(
        next_frames(&mut watcher, 3).await,
        ["join:bob@jl-b", "join:bob@jl-b", "user_joined:bob"]
    );

    // One of Bob's goes: a leave, no user_left; then the other: a leave
    // and, after the grace, user_left, once.
    drop(bob_1);
    assert_eq!(next_frame(&mut watcher).await, "leave:bob@jl-b");
    drop(bob_2);
    assert_eq!(next_frame(&mut watcher).await, "leave:bob@jl-b");
    assert_eq!(next_frame(&mut watcher).await, "user_left:bob");

    // Nothing more came, and the raw client heard none of it: the next
    // frame each gets is a message sent now.
    let (status, _) = post_text(&a.url(&format!("/api/groups/{group}/messages")), "after").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut raw).await, "after");
    let message: Value = serde_json::from_str(&next_text(&mut watcher).await).expect("JSON");
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["data"], "after");
}
