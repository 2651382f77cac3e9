//! The HTTP side of a node: `/healthz`, `/readyz` (and readiness while
//! draining), `/metrics` in Prometheus text, the session keys that
//! `GET /api/groups/{group}`, `/api/groups` and `/debug/state` show, and
//! `ws_router` mounted into an application's own axum `Router`.
//!
//! Bad requests to the API are in `bad_input.rs`; the API key in
//! `auth.rs`; the cluster-wide views in `cluster_view.rs`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::http::{self, get_json, metric};
use crate::common::{Client, TestServer, connect_peer, wait_until, wait_until_async};
use groupcast::Hub;
use serde_json::json;

// ----- health, readiness, metrics -------------------------------------------------

/// `/healthz` says ok and `/readyz` says ready, on the local bus.
#[tokio::test]
async fn health_and_readiness_answer_on_a_fresh_node() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    let healthz = reqwest::get(server.http_url("/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200);
    assert_eq!(healthz.text().await.unwrap().trim(), "ok");
    let (status, ready) = get_json(&server.http_url("/readyz")).await;
    assert_eq!(
        (status, &ready["ready"], &ready["bus"]),
        (200, &json!(true), &json!("local"))
    );
}

/// `/metrics` counts connections, groups, messages and bytes both ways.
#[tokio::test]
async fn metrics_count_connections_groups_messages_and_bytes() {
    // Push only, so that the message a client sends below is counted in
    // and not forwarded out (the default, `ClientMessages::Group`, would).
    let config = groupcast::Config {
        client_messages: groupcast::ClientMessages::None,
        ..groupcast::Config::default()
    };
    let server = TestServer::start(Hub::builder().config(config).build().unwrap()).await;
    let mut a = server.connect("metrics").await;
    let mut b = server.connect("metrics").await;
    let (status, _) =
        http::post_text(&server.http_url("/api/groups/metrics/messages"), "12345").await;
    assert_eq!(status, 200);
    assert_eq!(a.recv_text().await, "12345");
    assert_eq!(b.recv_text().await, "12345");
    a.send_text("in").await;

    let scrape = || async {
        let response = reqwest::get(server.http_url("/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        response.text().await.unwrap()
    };
    wait_until_async("the incoming message is counted", || async {
        metric(&scrape().await, "groupcast_messages_in_total") == 1.0
    })
    .await;
    let text = scrape().await;
    for (name, value) in [
        ("groupcast_connections", 2.0),
        ("groupcast_groups", 1.0),
        ("groupcast_connections_opened_total", 2.0),
        ("groupcast_messages_out_total", 2.0),
        ("groupcast_bytes_out_total", 10.0),
        ("groupcast_messages_in_total", 1.0),
        ("groupcast_bytes_in_total", 2.0),
        ("groupcast_queue_full_closes_total", 0.0),
        ("groupcast_queue_drops_total", 0.0),
        ("groupcast_bus_up", 1.0),
    ] {
        assert_eq!(metric(&text, name), value, "{name}");
    }
    assert!(
        text.contains("# TYPE groupcast_messages_out counter"),
        "{text}"
    );
}

/// Draining: not ready any more, but still alive.
#[tokio::test]
async fn a_draining_node_is_alive_but_not_ready() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    server.hub.begin_drain();
    let (status, ready) = get_json(&server.http_url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["reason"], "shutting down");
    assert_eq!(http::status(&server.http_url("/healthz")).await, 200);
}

// ----- session keys ---------------------------------------------------------------

/// Keys an `on_connect` handler sets show up in `GET /api/groups/{group}`
/// and `GET /debug/state`; keys removed there do not.
#[tokio::test]
async fn keys_set_in_a_handler_are_visible_in_the_api() {
    let joined = Arc::new(AtomicUsize::new(0));
    let counter = joined.clone();
    let hub = Hub::builder()
        .on_connect(move |_hub, session| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            session.set("user", format!("user-{n}"));
            session.set("port", session.remote_addr().map(|a| a.port()));
            session.set("scratch", true);
            session.remove("scratch");
            session.send(format!("id:{}", session.id()));
        })
        .build()
        .unwrap();
    let server = TestServer::start(hub).await;
    let mut peers = Vec::new();
    for _ in 0..2 {
        peers.push(connect_peer(&server, "team/red").await);
    }
    let lone = connect_peer(&server, "team/blue").await;
    // Keys set later by the application show up too.
    server
        .hub
        .session(&lone.id)
        .unwrap()
        .set("late", json!({"x": 1}));

    let (status, red) = get_json(&server.http_url("/api/groups/team/red")).await;
    assert_eq!(status, 200, "{red}");
    assert_eq!(red["name"], "team/red");
    assert_eq!(red["members"], 2);
    let sessions = red["sessions"].as_array().unwrap();
    let users: BTreeSet<&str> = sessions
        .iter()
        .map(|s| s["keys"]["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, BTreeSet::from(["user-1", "user-2"]));
    let listed: BTreeSet<&str> = sessions.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let announced: BTreeSet<&str> = peers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(listed, announced);
    for session in sessions {
        assert!(session["keys"].get("scratch").is_none(), "{session}");
        let port = session["keys"]["port"].as_u64().unwrap();
        assert!(
            session["remote_addr"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{port}")),
            "{session}"
        );
    }

    // The encoded form of a nested group works too.
    let (_, encoded) = get_json(&server.http_url("/api/groups/team%2Fblue")).await;
    assert_eq!(encoded["sessions"][0]["keys"]["late"], json!({"x": 1}));
    assert_eq!(encoded["sessions"][0]["keys"]["user"], "user-3");

    let (status, state) = get_json(&server.http_url("/debug/state")).await;
    assert_eq!(status, 200);
    assert_eq!(state["sessions"], 3);
    let red_users: BTreeSet<&str> = state["groups"]["team/red"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["keys"]["user"].as_str().unwrap())
        .collect();
    assert_eq!(red_users, BTreeSet::from(["user-1", "user-2"]));
    assert_eq!(state["groups"]["team/blue"][0]["id"], lone.id.as_str());
    assert_eq!(state["groups"]["team/blue"][0]["keys"]["late"]["x"], 1);

    let (_, groups) = get_json(&server.http_url("/api/groups")).await;
    let listed: Vec<(String, u64)> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_string(),
                g["members"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![("team/blue".to_string(), 1), ("team/red".to_string(), 2)]
    );
}

// ----- embedding --------------------------------------------------------------------

/// `ws_router` mounts the hub into an application's own axum `Router`.
#[tokio::test]
async fn ws_router_mounts_into_a_user_router() {
    use axum::routing::get;
    let hub = Hub::builder().build().unwrap();
    let app = axum::Router::new()
        .route("/hello", get(|| async { "hi" }))
        .merge(groupcast::server::ws_router(hub.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let mut client = Client::connect(&format!("ws://{addr}/ws/app/room")).await;
    wait_until("the session joins", || hub.session_count() == 1).await;
    assert_eq!(hub.to("app/room").send("from the app").unwrap(), 1);
    assert_eq!(client.recv_text().await, "from the app");
    let hello = reqwest::get(format!("http://{addr}/hello")).await.unwrap();
    assert_eq!(hello.text().await.unwrap(), "hi");
    // Only the WebSocket route was mounted.
    assert_eq!(
        http::status(&format!("http://{addr}/api/groups")).await,
        404
    );
    serving.abort();
}
