//! Many groups over one `groupcast.v1` connection on a two-node cluster:
//! `subscribe` / `unsubscribe` requests, each answered, each group's
//! messages in order and named, one group left without touching the
//! others, and the per-connection cap answered with an error.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::common::redis::{TestRedis, fast_options};
use crate::common::{Client, TestServer, wait_until, wait_until_async};
use groupcast::history::HistoryPolicy;
use groupcast::{Config, Hub};

/// Two nodes on the shared Redis; `mg-h*` groups keep history.
async fn two_nodes(config: Config) -> (TestServer, TestServer) {
    let node = |name: &str| {
        Hub::builder()
            .node_id(format!("{name}-{:04x}", rand::random::<u16>()))
            .config(Config {
                history: HistoryPolicy::parse(["mg-h*=100:1h"]).unwrap(),
                ..config.clone()
            })
            .backend(fast_options(TestRedis::shared().url()))
            .build()
            .expect("a clustered hub")
    };
    let a = TestServer::start(node("mg-a")).await;
    let b = TestServer::start(node("mg-b")).await;
    wait_until("both nodes reach Redis", || {
        a.hub.status().connected && b.hub.status().connected
    })
    .await;
    (a, b)
}

async fn v1(url: &str) -> Client {
    let mut client = Client::try_connect(url, &[("sec-websocket-protocol", "groupcast.v1")])
        .await
        .unwrap_or_else(|refused| panic!("{url}: {refused:?}"));
    assert_eq!(next_json(&mut client).await["type"], "welcome");
    client
}

async fn next_json(client: &mut Client) -> Value {
    match client.next_data().await {
        Ws::Text(text) => serde_json::from_str(&text).expect("a JSON frame"),
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

async fn request(client: &mut Client, request: Value) -> Value {
    client.send_text(&request.to_string()).await;
    next_json(client).await
}

/// Waits until `group` has a member on every node that should hear it:
/// the node subscribed (so that a publish from the other node reaches it).
async fn subscribed(server: &TestServer, group: &str) {
    wait_until_async("the node listens to the group", || async {
        TestRedis::shared().numsub(&format!("group:{group}")).await >= 1
    })
    .await;
    server
        .hub
        .subscribed(&group.parse().unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_gets_each_of_its_groups_in_order_each_named() {
    let (a, b) = two_nodes(Config::default()).await;
    let mut client = v1(&a.ws_url("mg-1")).await;
    let answer = request(
        &mut client,
        json!({"type":"subscribe","group":"mg-2","id":1}),
    )
    .await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(
        (answer["id"].as_u64(), answer["group"].as_str()),
        (Some(1), Some("mg-2"))
    );
    // A history group, with its backlog.
    for n in 1..=3 {
        b.hub
            .to("mg-h3")
            .publish(format!("early {n}"))
            .await
            .unwrap();
    }
    let answer = request(
        &mut client,
        json!({"type":"subscribe","group":"mg-h3","history":2,"id":2}),
    )
    .await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(
        (answer["offset"].as_u64(), answer["history"].as_bool()),
        (Some(3), Some(true))
    );
    for n in 2..=3 {
        let frame = next_json(&mut client).await;
        assert_eq!(
            (frame["group"].as_str(), frame["data"].as_str()),
            (Some("mg-h3"), Some(format!("early {n}").as_str()))
        );
    }
    for group in ["mg-1", "mg-2", "mg-h3"] {
        subscribed(&a, group).await;
    }
    let sessions = a.hub.sessions();
    assert_eq!(sessions[0].groups().len(), 3);

    // Interleaved from the other node: each group's messages in order.
    for n in 1..=20 {
        for group in ["mg-1", "mg-2", "mg-h3"] {
            b.hub
                .to(group)
                .publish(format!("{group} {n}"))
                .await
                .unwrap();
        }
    }
    let mut next = std::collections::HashMap::from([("mg-1", 1), ("mg-2", 1), ("mg-h3", 1)]);
    for _ in 0..60 {
        let frame = next_json(&mut client).await;
        assert_eq!(frame["type"], "message", "{frame}");
        let group = frame["group"]
            .as_str()
            .expect("every message names its group");
        let expected = next.get_mut(group).unwrap_or_else(|| panic!("{frame}"));
        assert_eq!(frame["data"], format!("{group} {expected}"));
        *expected += 1;
    }

    // Leaving one group stops it only.
    let answer = request(
        &mut client,
        json!({"type":"unsubscribe","group":"mg-2","id":3}),
    )
    .await;
    assert_eq!(
        (answer["type"].as_str(), answer["id"].as_u64()),
        (Some("unsubscribed"), Some(3))
    );
    wait_until("A left mg-2", || {
        a.hub.member_count(&"mg-2".parse().unwrap()) == 0
    })
    .await;
    b.hub.to("mg-2").publish("gone").await.unwrap();
    b.hub.to("mg-1").publish("still here").await.unwrap();
    let frame = next_json(&mut client).await;
    assert_eq!(
        (frame["group"].as_str(), frame["data"].as_str()),
        (Some("mg-1"), Some("still here"))
    );
    let answer = request(
        &mut client,
        json!({"type":"unsubscribe","group":"mg-2","id":4}),
    )
    .await;
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("not_subscribed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscribes_are_answered_with_errors_and_the_cap_holds() {
    let (a, _b) = two_nodes(Config {
        max_groups_per_connection: 2,
        ..Config::default()
    })
    .await;
    let mut client = v1(&a.ws_url("mg-cap-1")).await;
    for (request_, code) in [
        (json!({"type":"subscribe","id":1}), "bad_request"),
        (
            json!({"type":"subscribe","group":"bad name","id":2}),
            "bad_group_name",
        ),
        (
            json!({"type":"subscribe","group":"mg-cap-2","since":3,"id":3}),
            "bad_query",
        ),
        (
            json!({"type":"subscribe","group":"mg-cap-1","id":4}),
            "already_subscribed",
        ),
    ] {
        let answer = request(&mut client, request_.clone()).await;
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some("error"), Some(code)),
            "{request_}: {answer}"
        );
        assert_eq!(answer["id"], request_["id"]);
    }
    let answer = request(
        &mut client,
        json!({"type":"subscribe","group":"mg-cap-2","id":5}),
    )
    .await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    let answer = request(
        &mut client,
        json!({"type":"subscribe","group":"mg-cap-3","id":6}),
    )
    .await;
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("too_many_groups")),
        "{answer}"
    );
    // The connection goes on: its groups still get their messages.
    a.hub.to("mg-cap-2").send("fine").unwrap();
    let frame = next_json(&mut client).await;
    assert_eq!(
        (frame["group"].as_str(), frame["data"].as_str()),
        (Some("mg-cap-2"), Some("fine"))
    );
    // A raw client's JSON is data, not a request.
    let mut raw = Client::connect(&a.ws_url("mg-cap-raw")).await;
    raw.send_text(&json!({"type":"subscribe","group":"mg-cap-2"}).to_string())
        .await;
    assert_eq!(
        raw.recv_text().await,
        json!({"type":"subscribe","group":"mg-cap-2"}).to_string(),
        "forwarded to its group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_group_holds_only_what_it_subscribes_to() {
    let (a, b) = two_nodes(Config::default()).await;
    let bare = format!("ws://{}/ws", a.addr);
    let mut client = Client::try_connect(&bare, &[("sec-websocket-protocol", "groupcast.v1")])
        .await
        .unwrap_or_else(|refused| panic!("{bare}: {refused:?}"));
    let welcome = next_json(&mut client).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert!(welcome["session"].is_string() && welcome["node"].is_string());
    assert!(welcome.get("group").is_none(), "no group: {welcome}");
    let session = a
        .hub
        .session(&welcome["session"].as_str().unwrap().into())
        .expect("registered while it holds no group");
    assert_eq!(session.group(), None);
    assert!(session.groups().is_empty());

    // Its groups are those it subscribes to, history included.
    b.hub.to("mg-h-bare").publish("before").await.unwrap();
    for (id, subscribe) in [
        json!({"type":"subscribe","group":"mg-bare-1","id":1}),
        json!({"type":"subscribe","group":"mg-h-bare","history":1,"id":2}),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = request(&mut client, subscribe).await;
        assert_eq!(
            (answer["type"].as_str(), answer["id"].as_u64()),
            (Some("subscribed"), Some(id as u64 + 1)),
            "{answer}"
        );
    }
    let backlog = next_json(&mut client).await;
    assert_eq!(
        (backlog["group"].as_str(), backlog["data"].as_str()),
        (Some("mg-h-bare"), Some("before"))
    );
    for group in ["mg-bare-1", "mg-h-bare"] {
        subscribed(&a, group).await;
        b.hub
            .to(group)
            .publish(format!("to {group}"))
            .await
            .unwrap();
        let frame = next_json(&mut client).await;
        assert_eq!(
            (frame["group"].as_str(), frame["data"].as_str()),
            (Some(group), Some(format!("to {group}").as_str()))
        );
    }

    // A message of its own has no group to go to: it is told so.
    client.send_text("hello?").await;
    let answer = next_json(&mut client).await;
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("no_group")),
        "{answer}"
    );
    // Unsubscribed from everything, it stays connected and can come back.
    for group in ["mg-bare-1", "mg-h-bare"] {
        let answer = request(
            &mut client,
            json!({"type":"unsubscribe","group":group,"id":9}),
        )
        .await;
        assert_eq!(answer["type"], "unsubscribed", "{answer}");
    }
    assert!(a.hub.session(session.id()).is_some(), "still connected");
    let answer = request(
        &mut client,
        json!({"type":"subscribe","group":"mg-bare-1","id":10}),
    )
    .await;
    assert_eq!(answer["type"], "subscribed", "{answer}");

    // A raw client cannot subscribe, so /ws refuses it; and there is
    // nothing to replay without a group.
    let refused = Client::refused(&bare).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (400, Some("group_required")),
        "{:?}",
        refused.body
    );
    let refused = Client::try_connect(
        &format!("{bare}?history=5"),
        &[("sec-websocket-protocol", "groupcast.v1")],
    )
    .await
    .err()
    .expect("a replay without a group is refused");
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (400, Some("bad_query")),
        "{:?}",
        refused.body
    );
}
