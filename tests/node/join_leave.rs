//! Join/leave frames on a standalone hub (`Config::join_leave`): a
//! `groupcast.v1` member hears who comes and goes; one whose token says
//! `presence: false`, and a raw client, hear none of it.

use std::time::Duration;

use groupcast::auth::{
    ClientAuth, GroupPatterns, KeySet, MintRequest, TokenVerifier, VerifyOptions, mint_hs256,
};
use groupcast::{Config, Hub};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::common::{Client, TestServer};

const JWT: &[u8] = b"standalone-join-leave-secret-of-32-bytes-or-more";

async fn next_json(client: &mut Client) -> Value {
    match client.next_data().await {
        Ws::Text(text) => serde_json::from_str(&text).expect("a JSON frame"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn only_v1_members_allowed_presence_hear_joins_and_leaves() {
    let mut keys = KeySet::new();
    keys.add_secret(None, JWT).expect("a secret");
    let hub = Hub::builder()
        .client_auth(ClientAuth::with_tokens(TokenVerifier::new(
            keys,
            VerifyOptions::default(),
        )))
        .config(Config {
            presence: GroupPatterns::parse(["room"]).expect("patterns"),
            join_leave: GroupPatterns::parse(["room"]).expect("patterns"),
            presence_grace: Duration::from_millis(200),
            ..Config::default()
        })
        .build()
        .expect("a hub");
    let server = TestServer::start(hub).await;
    let url = |sub: &str, presence: bool| {
        let mut request = MintRequest::new(sub, ["room"]);
        request.presence = presence;
        let token = mint_hs256(JWT, &request).expect("a token");
        format!("{}?token={token}", server.ws_url("room"))
    };
    let v1 = [("sec-websocket-protocol", "groupcast.v1")];

    let mut blind = Client::try_connect(&url("blind", false), &v1)
        .await
        .expect("admitted");
    assert_eq!(next_json(&mut blind).await["type"], "welcome");
    let mut raw = Client::connect(&url("raw", true)).await;
    let mut watcher = Client::try_connect(&url("watcher", true), &v1)
        .await
        .expect("admitted");
    assert_eq!(next_json(&mut watcher).await["type"], "welcome");
    let own = next_json(&mut watcher).await;
    assert_eq!(
        (&own["type"], &own["sub"]),
        (&"user_joined".into(), &"watcher".into()),
        "{own}"
    );
    assert_eq!(next_json(&mut watcher).await["type"], "join");

    let alice = Client::connect(&url("alice", true)).await;
    let joined = next_json(&mut watcher).await;
    assert_eq!(joined["type"], "user_joined", "{joined}");
    assert_eq!(joined["sub"], "alice");
    let join = next_json(&mut watcher).await;
    assert_eq!(join["type"], "join", "{join}");
    assert_eq!(join["group"], "room");
    assert_eq!(join["node"], server.hub.node_id());
    assert!(join["session"].as_str().is_some_and(|s| !s.is_empty()));
    drop(alice);
    assert_eq!(next_json(&mut watcher).await["type"], "leave");
    let left = next_json(&mut watcher).await;
    assert_eq!(
        (&left["type"], &left["sub"]),
        (&"user_left".into(), &"alice".into())
    );

    // The first frame the others get is a message sent now.
    server.hub.to("room").send("after").expect("sent");
    assert_eq!(next_json(&mut blind).await["data"], "after");
    match raw.next_data().await {
        Ws::Text(text) => assert_eq!(text.as_str(), "after"),
        other => panic!("{other:?}"),
    }
    assert_eq!(next_json(&mut watcher).await["data"], "after");
}
