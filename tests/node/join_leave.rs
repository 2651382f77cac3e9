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
    let server = presence_server().await;
    let url = |sub: &str, presence: bool| {
        format!(
            "{}?token={}",
            server.ws_url("room"),
            token(sub, &["room"], presence)
        )
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

/// A standalone hub with presence and join/leave frames in `room` (and
/// `quiet`: presence only), tokens required.
async fn presence_server() -> TestServer {
    let mut keys = KeySet::new();
    keys.add_secret(None, JWT).expect("a secret");
    let hub = Hub::builder()
        .client_auth(ClientAuth::with_tokens(TokenVerifier::new(
            keys,
            VerifyOptions::default(),
        )))
        .config(Config {
            presence: GroupPatterns::parse(["room", "quiet"]).expect("patterns"),
            join_leave: GroupPatterns::parse(["room"]).expect("patterns"),
            presence_grace: Duration::from_millis(200),
            ..Config::default()
        })
        .build()
        .expect("a hub");
    TestServer::start(hub).await
}

fn token(sub: &str, groups: &[&str], presence: bool) -> String {
    let mut request = MintRequest::new(sub, groups.iter().copied());
    request.presence = presence;
    mint_hs256(JWT, &request).expect("a token")
}

/// `?presence=1` gives a `presence` frame right after the welcome with
/// who is there (standalone, this session too: its join was made when it
/// joined, before the snapshot was read), then only the joins and leaves
/// after it; a `subscribe` request with `"presence": true` gets the same
/// after its `subscribed` answer.
#[tokio::test]
async fn a_presence_snapshot_follows_the_welcome_and_the_frames_follow_it() {
    let server = presence_server().await;
    let v1 = [("sec-websocket-protocol", "groupcast.v1")];
    let url = |sub: &str| {
        format!(
            "{}?token={}&presence=1",
            server.ws_url("room"),
            token(sub, &["room"], true)
        )
    };
    let mut alice = Client::try_connect(&url("alice"), &v1)
        .await
        .expect("admitted");
    let welcome = next_json(&mut alice).await;
    assert_eq!(welcome["type"], "welcome");
    let first = next_json(&mut alice).await;
    assert_eq!(first["type"], "presence", "{first}");
    assert_eq!(first["group"], "room");
    assert_eq!(
        (first["count"].as_u64(), first["users"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(first["truncated"], false);
    let listed = &first["members"][0];
    assert_eq!(listed["session"], welcome["session"]);
    assert_eq!(listed["sub"], "alice");
    assert!(listed["connected_at_ms"].as_u64() > Some(0));

    let mut bob = Client::try_connect(&url("bob"), &v1)
        .await
        .expect("admitted");
    assert_eq!(next_json(&mut bob).await["type"], "welcome");
    let snapshot = next_json(&mut bob).await;
    assert_eq!(snapshot["type"], "presence");
    assert_eq!(snapshot["count"], 2);
    assert!(
        snapshot["seq"].as_u64() > first["seq"].as_u64(),
        "{snapshot} after {first}"
    );
    // Alice's own join and user_joined were in her snapshot: her next
    // frames are Bob's, above it.
    let mut frames = Vec::new();
    for _ in 0..2 {
        let frame = next_json(&mut alice).await;
        assert_eq!(frame["seq"], snapshot["seq"], "{frame}");
        let kind = frame["type"].as_str().unwrap_or("?");
        frames.push(format!("{kind}:{}", frame["sub"].as_str().unwrap_or("?")));
    }
    frames.sort();
    assert_eq!(frames, ["join:bob", "user_joined:bob"]);

    // On a connection without a group, a subscribe asks for it.
    let groupless = format!(
        "ws://{}/ws?token={}",
        server.addr,
        token("carol", &["room"], true)
    );
    let mut carol = Client::try_connect(&groupless, &v1)
        .await
        .expect("admitted");
    assert_eq!(next_json(&mut carol).await["type"], "welcome");
    carol
        .send_text(r#"{"type":"subscribe","group":"room","id":7,"presence":true}"#)
        .await;
    let subscribed = next_json(&mut carol).await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["id"].as_u64()),
        (Some("subscribed"), Some(7))
    );
    let snapshot = next_json(&mut carol).await;
    assert_eq!(
        (snapshot["type"].as_str(), snapshot["id"].as_u64()),
        (Some("presence"), Some(7))
    );
    let subs: Vec<&str> = snapshot["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["sub"].as_str())
        .collect();
    assert_eq!(subs.len(), 3, "{snapshot}");
    assert!(
        ["alice", "bob", "carol"]
            .iter()
            .all(|sub| subs.contains(sub)),
        "{snapshot}"
    );
}

/// Asking for a snapshot wrongly is refused before the upgrade with the
/// reason: a bad value, a raw client, a group without presence, a
/// connection without a group (400), a token that denies presence (403);
/// a `subscribe` that may not have it gets an error frame and no group.
#[tokio::test]
async fn a_snapshot_asked_for_wrongly_is_refused_with_the_reason() {
    let server = presence_server().await;
    let v1 = [("sec-websocket-protocol", "groupcast.v1")];
    let ws = |group: &str, query: &str| format!("{}?{query}", server.ws_url(group));
    let allowed = token("dave", &["room", "other"], true);
    let denied = token("eve", &["room"], false);
    let cases = [
        (
            ws("room", &format!("token={allowed}&presence=yes")),
            &v1[..],
            400,
            "bad_query",
            "\"yes\"",
        ),
        (
            ws("room", &format!("token={allowed}&presence=1")),
            &[][..],
            400,
            "bad_query",
            "groupcast.v1",
        ),
        (
            ws("other", &format!("token={allowed}&presence=1")),
            &v1[..],
            400,
            "no_presence",
            "keeps no presence",
        ),
        (
            ws("room", &format!("token={denied}&presence=1")),
            &v1[..],
            403,
            "presence_not_allowed",
            "presence",
        ),
        (
            format!("ws://{}/ws?token={allowed}&presence=1", server.addr),
            &v1[..],
            400,
            "bad_query",
            "subscribe",
        ),
    ];
    for (url, headers, status, code, says) in cases {
        let refused = match Client::try_connect(&url, headers).await {
            Ok(_) => panic!("{url} was admitted"),
            Err(refused) => refused,
        };
        assert_eq!(refused.status, status, "{url}: {refused:?}");
        let body = &refused.body;
        assert_eq!(body["error"], code, "{url}: {body}");
        assert!(
            body["message"].as_str().unwrap_or_default().contains(says),
            "{url}: {body}"
        );
    }
    // Over a live connection: an error frame names the request; nothing
    // is joined.
    let groupless = format!("ws://{}/ws?token={denied}", server.addr);
    let mut eve = Client::try_connect(&groupless, &v1)
        .await
        .expect("admitted");
    assert_eq!(next_json(&mut eve).await["type"], "welcome");
    eve.send_text(r#"{"type":"subscribe","group":"room","id":3,"presence":true}"#)
        .await;
    let error = next_json(&mut eve).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("presence_not_allowed")),
        "{error}"
    );
    assert_eq!(error["id"], 3);
    assert_eq!(server.hub.session_count(), 1);
}

/// Standalone too, a client that reconnects with its session id within
/// the grace is the same member: no leave, no join. An id still connected
/// is not taken (the welcome gives another), and one this server could
/// not have given is a 400.
#[tokio::test]
async fn a_reconnect_with_the_session_id_is_the_same_member() {
    let server = presence_server().await;
    let v1 = [("sec-websocket-protocol", "groupcast.v1")];
    let url = |sub: &str, session: Option<&str>| {
        let mut url = format!(
            "{}?token={}",
            server.ws_url("room"),
            token(sub, &["room"], true)
        );
        if let Some(id) = session {
            url.push_str(&format!("&session={id}"));
        }
        url
    };
    let mut watcher = Client::try_connect(&url("watcher", None), &v1)
        .await
        .expect("admitted");
    assert_eq!(next_json(&mut watcher).await["type"], "welcome");
    for _ in 0..2 {
        next_json(&mut watcher).await; // its own join and user_joined
    }
    let mut mover = Client::try_connect(&url("mover", None), &v1)
        .await
        .expect("admitted");
    let session = next_json(&mut mover).await["session"]
        .as_str()
        .expect("an id")
        .to_string();
    let mut joined = Vec::new();
    for _ in 0..2 {
        joined.push(
            next_json(&mut watcher).await["type"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
    }
    joined.sort();
    assert_eq!(joined, ["join", "user_joined"]);

    // Still connected: its id is not taken.
    let mut twin = Client::try_connect(&url("mover", Some(&session)), &v1)
        .await
        .expect("admitted");
    let other = next_json(&mut twin).await["session"]
        .as_str()
        .expect("an id")
        .to_string();
    assert_ne!(other, session);
    assert_eq!(next_json(&mut watcher).await["type"], "join");
    drop(twin);

    drop(mover);
    let mut mover = Client::try_connect(&url("mover", Some(&session)), &v1)
        .await
        .expect("admitted");
    assert_eq!(next_json(&mut mover).await["session"], session.as_str());
    // The watcher's next frame is the twin's leave, after the grace; the
    // mover's connection never left.
    let leave = next_json(&mut watcher).await;
    assert_eq!(
        (leave["type"].as_str(), leave["session"].as_str()),
        (Some("leave"), Some(other.as_str()))
    );
    drop(mover);
    let leave = next_json(&mut watcher).await;
    assert_eq!(
        (leave["type"].as_str(), leave["session"].as_str()),
        (Some("leave"), Some(session.as_str()))
    );
    assert_eq!(next_json(&mut watcher).await["type"], "user_left");

    let refused = Client::try_connect(&url("mover", Some("not-an-id")), &v1)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"], "bad_query");
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("16 hex digits")
    );
}
