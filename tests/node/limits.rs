//! The node's admission limits, each hit on purpose: total connections,
//! connections per client address, groups per node; the flags and
//! variables that set every limit. Every refusal is an HTTP status with a
//! JSON reason before the upgrade, counted in
//! `groupcast_limit_rejections_total{limit="…"}`, and the clients within
//! the limits keep being served.
//!
//! The limits that close a connection after the upgrade (message size,
//! inbound rate) are in `close_codes.rs`.

use std::net::SocketAddr;

use crate::common::node::NodeProcess;
use crate::common::{Client, TestServer, WAIT, forwarding, http, wait_until};
use groupcast::{Config, Hub};
use tokio_tungstenite::tungstenite;

// ----- harness -----------------------------------------------------------------

/// A server whose clients' messages go to their whole group (chat).
async fn server(config: Config) -> TestServer {
    TestServer::start(forwarding(Hub::builder().config(config)).build().unwrap()).await
}

/// Connects to `server`'s `group` from the loopback address `source`
/// (127.0.0.2, …: every 127.x.y.z is this machine, but another client
/// address as far as the server can tell).
async fn connect_from(source: &str, server: &TestServer, group: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{source}:0").parse::<SocketAddr>().unwrap())
        .unwrap_or_else(|e| panic!("bind to {source}: {e}"));
    let stream = socket.connect(server.addr).await.expect("TCP connect");
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(
            server.ws_url(group),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        ),
    )
    .await
    .expect("timed out upgrading")
    .expect("upgrade");
    Client { ws }
}

// ----- total connections -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_answers_503_and_a_freed_slot_is_reused() {
    let server = server(Config {
        max_connections: 2,
        ..Config::default()
    })
    .await;
    let mut first = server.connect("room").await;
    let mut second = server.connect("room").await;

    let refusal = Client::refused(&server.ws_url("room")).await;
    assert_eq!(refusal.status, 503);
    assert_eq!(refusal.body["error"], "node_full");
    assert!(
        refusal.body["message"]
            .as_str()
            .unwrap()
            .contains("2 connections"),
        "{}",
        refusal.body
    );
    assert_eq!(refusal.header("retry-after").as_deref(), Some("5"));
    assert_eq!(server.limit_rejections("connections").await, 1);
    assert_eq!(server.hub.admitted_connections(), 2);

    // The two admitted clients are served as before.
    server.hub.to("room").send("still here").unwrap();
    assert_eq!(first.recv_text().await, "still here");
    assert_eq!(second.recv_text().await, "still here");

    // One leaves: its slot is given back and a newcomer gets it.
    first.ws.close(None).await.unwrap();
    wait_until("the closed connection's slot is free", || {
        server.hub.admitted_connections() == 1
    })
    .await;
    let mut third = server.connect("room").await;
    server.hub.to("room").send("welcome").unwrap();
    assert_eq!(third.recv_text().await, "welcome");
    assert_eq!(second.recv_text().await, "welcome");
    assert_eq!(server.limit_rejections("connections").await, 1);
}

/// Upgrades in flight hold their slot: a burst of connects at once never
/// admits more than the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connects_never_overshoots_the_limit() {
    const LIMIT: usize = 5;
    const ATTEMPTS: usize = 20;
    let server = server(Config {
        max_connections: LIMIT,
        ..Config::default()
    })
    .await;
    let attempts: Vec<_> = (0..ATTEMPTS)
        .map(|_| {
            let url = server.ws_url("burst");
            tokio::spawn(async move {
                tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
                    .await
                    .expect("timed out connecting")
            })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut full = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok((ws, _)) => admitted.push(ws),
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 503);
                full += 1;
            }
            Err(other) => panic!("unexpected connect error: {other}"),
        }
    }
    assert_eq!(admitted.len(), LIMIT, "admitted exactly the limit");
    assert_eq!(full, ATTEMPTS - LIMIT);
    wait_until("every admitted client joined", || {
        server.hub.session_count() == LIMIT
    })
    .await;
    assert_eq!(
        server.limit_rejections("connections").await,
        (ATTEMPTS - LIMIT) as u64
    );
}

// ----- connections per client address --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_its_limit_gets_429_and_others_still_connect() {
    let server = server(Config {
        max_connections_per_ip: 2,
        ..Config::default()
    })
    .await;
    let mut a = server.connect("room").await;
    let _b = server.connect("room").await;

    let refusal = Client::refused(&server.ws_url("room")).await;
    assert_eq!(refusal.status, 429);
    assert_eq!(refusal.body["error"], "too_many_connections_from_ip");
    assert_eq!(server.limit_rejections("connections_per_ip").await, 1);

    // Another client address has its own allowance.
    let mut other = connect_from("127.0.0.2", &server, "room").await;
    wait_until("the client from 127.0.0.2 joined", || {
        server.hub.session_count() == 3
    })
    .await;
    let addresses: Vec<_> = server
        .hub
        .sessions()
        .iter()
        .map(|s| s.remote_addr().unwrap().ip().to_string())
        .collect();
    assert!(
        addresses.contains(&"127.0.0.2".to_string()),
        "{addresses:?}"
    );
    server.hub.to("room").send("hello").unwrap();
    assert_eq!(a.recv_text().await, "hello");
    assert_eq!(other.recv_text().await, "hello");

    // When one of its connections ends, the address may connect again.
    a.ws.close(None).await.unwrap();
    wait_until("the slot of 127.0.0.1 is free", || {
        server.hub.admitted_connections() == 2
    })
    .await;
    let _c = server.connect("room").await;
    assert_eq!(server.limit_rejections("connections_per_ip").await, 1);
}

// ----- groups per node ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_past_the_limit_gets_503_but_existing_groups_take_members() {
    let server = server(Config {
        max_groups: 2,
        ..Config::default()
    })
    .await;
    let mut one = server.connect("one").await;
    let two = server.connect("two").await;

    let refusal = Client::refused(&server.ws_url("three")).await;
    assert_eq!(refusal.status, 503);
    assert_eq!(refusal.body["error"], "too_many_groups");
    assert_eq!(server.limit_rejections("groups").await, 1);

    // A group the node already serves still takes members.
    let mut one_more = server.connect("one").await;
    server.hub.to("one").send("one").unwrap();
    assert_eq!(one.recv_text().await, "one");
    assert_eq!(one_more.recv_text().await, "one");

    // When a group empties, a new one fits.
    drop(two);
    wait_until("group two is gone", || server.hub.group_count() == 1).await;
    let mut three = server.connect("three").await;
    server.hub.to("three").send("three").unwrap();
    assert_eq!(three.recv_text().await, "three");
    assert_eq!(server.limit_rejections("groups").await, 1);
}

// ----- configuration ---------------------------------------------------------------

// The flags' own check (each limit flag reaches `Config`, and their
// defaults are the library's) is a unit test of the binary: src/cli.rs.

/// The `GROUPCAST_*` variables reach the limits of the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_variables_set_the_limits_of_the_binary() {
    let node = NodeProcess::builder("limits-env")
        .listen_by_env()
        .env("GROUPCAST_MAX_CONNECTIONS", "1")
        .env("GROUPCAST_MAX_GROUPS", "1")
        .env("GROUPCAST_LOG", "warn")
        .spawn();
    node.wait_ready().await;
    let addr = node.addr;

    let mut only = Client::connect(&format!("ws://{addr}/ws/one")).await;
    let refusal = Client::refused(&format!("ws://{addr}/ws/one")).await;
    assert_eq!(
        (refusal.status, refusal.body["error"].as_str()),
        (503, Some("node_full"))
    );
    // The group limit answers first for a new group.
    let refusal = Client::refused(&format!("ws://{addr}/ws/two")).await;
    assert_eq!(
        (refusal.status, refusal.body["error"].as_str()),
        (503, Some("too_many_groups"))
    );
    let metrics = http::get_text(&node.url("/metrics")).await;
    assert!(
        metrics.contains("groupcast_limit_rejections_total{limit=\"connections\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("groupcast_limit_rejections_total{limit=\"groups\"} 1"),
        "{metrics}"
    );
    // And the admitted client is served.
    let (status, _) = http::post_text(&node.url("/api/groups/one/messages"), "served").await;
    assert_eq!(status, 200);
    assert_eq!(only.recv_text().await, "served");
}
