//! The node's limits, each hit on purpose: total connections, connections
//! per client address, groups per node, inbound message rate and message
//! size. Every refusal is a clear answer — an HTTP status with a JSON
//! reason before the upgrade, or a close code with a reason after it — and
//! is counted in `groupcast_limit_rejections_total{limit="…"}`. And the
//! clients that stay within the limits keep being served.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{Client, TestServer, WAIT, wait_until, wait_until_async};
use futures_util::SinkExt;
use groupcast::{Broadcast, Config, Hub};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message as Ws};

// ----- harness -----------------------------------------------------------------

/// A server whose clients' messages go to their whole group (chat).
async fn server(config: Config) -> TestServer {
    let hub = Hub::builder()
        .config(config)
        .on_text(|hub, session, text| {
            let _ = hub.send(Broadcast::group(session.group().clone()), text.to_owned());
        })
        .build()
        .expect("build the hub");
    TestServer::start(hub).await
}

/// An upgrade the server refused: its status, JSON body and headers.
struct Refusal {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

/// Tries to connect to `url`; fails the test if the upgrade succeeds.
async fn refused(url: &str) -> Refusal {
    let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("timed out connecting");
    match attempt {
        Err(tungstenite::Error::Http(response)) => Refusal {
            status: response.status().as_u16(),
            body: serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                .expect("a JSON body"),
            retry_after: response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
        },
        Err(other) => panic!("expected an HTTP refusal from {url}, got {other}"),
        Ok(_) => panic!("expected {url} to be refused, but the upgrade succeeded"),
    }
}

/// `groupcast_limit_rejections_total{limit="<limit>"}` from `/metrics`.
async fn rejections(server: &TestServer, limit: &str) -> u64 {
    let text = reqwest::get(server.http_url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("groupcast_limit_rejections_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("a counter value"))
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

    let refusal = refused(&server.ws_url("room")).await;
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
    assert_eq!(refusal.retry_after.as_deref(), Some("5"));
    assert_eq!(rejections(&server, "connections").await, 1);
    assert_eq!(server.hub.admitted_connections(), 2);

    // The two admitted clients are served as before.
    server.hub.broadcast_group("room", "still here").unwrap();
    assert_eq!(first.recv_text().await, "still here");
    assert_eq!(second.recv_text().await, "still here");

    // One leaves: its slot is given back and a newcomer gets it.
    first.ws.close(None).await.unwrap();
    wait_until("the closed connection's slot is free", || {
        server.hub.admitted_connections() == 1
    })
    .await;
    let mut third = server.connect("room").await;
    server.hub.broadcast_group("room", "welcome").unwrap();
    assert_eq!(third.recv_text().await, "welcome");
    assert_eq!(second.recv_text().await, "welcome");
    assert_eq!(rejections(&server, "connections").await, 1);
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
        rejections(&server, "connections").await,
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

    let refusal = refused(&server.ws_url("room")).await;
    assert_eq!(refusal.status, 429);
    assert_eq!(refusal.body["error"], "too_many_connections_from_ip");
    assert_eq!(rejections(&server, "connections_per_ip").await, 1);

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
    server.hub.broadcast_group("room", "hello").unwrap();
    assert_eq!(a.recv_text().await, "hello");
    assert_eq!(other.recv_text().await, "hello");

    // When one of its connections ends, the address may connect again.
    a.ws.close(None).await.unwrap();
    wait_until("the slot of 127.0.0.1 is free", || {
        server.hub.admitted_connections() == 2
    })
    .await;
    let _c = server.connect("room").await;
    assert_eq!(rejections(&server, "connections_per_ip").await, 1);
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

    let refusal = refused(&server.ws_url("three")).await;
    assert_eq!(refusal.status, 503);
    assert_eq!(refusal.body["error"], "too_many_groups");
    assert_eq!(rejections(&server, "groups").await, 1);

    // A group the node already serves still takes members.
    let mut one_more = server.connect("one").await;
    server.hub.broadcast_group("one", "one").unwrap();
    assert_eq!(one.recv_text().await, "one");
    assert_eq!(one_more.recv_text().await, "one");

    // When a group empties, a new one fits.
    drop(two);
    wait_until("group two is gone", || server.hub.group_count() == 1).await;
    let mut three = server.connect("three").await;
    server.hub.broadcast_group("three", "three").unwrap();
    assert_eq!(three.recv_text().await, "three");
    assert_eq!(rejections(&server, "groups").await, 1);
}

// ----- inbound rate ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_closed_with_1008_and_its_group_keeps_working() {
    let server = server(Config {
        max_inbound_rate: 5,
        max_inbound_burst: 5,
        ..Config::default()
    })
    .await;
    let mut flooder = server.connect("chat").await;
    let mut polite = server.connect("chat").await;
    let mut listener = server.connect("chat").await;

    // Within the burst: nothing happens to the polite client.
    for i in 0..3 {
        polite.send_text(&format!("polite {i}")).await;
    }
    for i in 0..3 {
        assert_eq!(listener.recv_text().await, format!("polite {i}"));
    }

    // 50 at once: far past 5 plus 5/s. The client may see its writes fail
    // once the server has closed; the close frame is what counts.
    for i in 0..50 {
        if flooder
            .ws
            .send(Ws::text(format!("flood {i}")))
            .await
            .is_err()
        {
            break;
        }
    }
    let reason = flooder.expect_close_code(1008).await;
    assert!(reason.contains("rate limit"), "{reason}");
    assert_eq!(rejections(&server, "inbound_rate").await, 1);

    // The others stay, and the group works: the listener saw at most the
    // flooder's burst, then the marker.
    server.hub.broadcast_group("chat", "marker").unwrap();
    let mut flood_seen = 0;
    loop {
        let text = listener.recv_text().await;
        if text == "marker" {
            break;
        }
        assert!(text.starts_with("flood "), "{text}");
        flood_seen += 1;
        assert!(flood_seen <= 10, "more than the burst got through");
    }
    assert!(
        flood_seen >= 5,
        "the burst itself is allowed ({flood_seen})"
    );
    wait_until("the flooder left", || server.hub.session_count() == 2).await;
    polite.send_text("still polite").await;
    assert_eq!(listener.recv_text().await, "still polite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_counts_against_the_rate() {
    let server = server(Config {
        max_inbound_rate: 5,
        max_inbound_burst: 5,
        ..Config::default()
    })
    .await;
    let mut flooder = server.connect("pings").await;
    for _ in 0..50 {
        if flooder.ws.send(Ws::Ping(Vec::new().into())).await.is_err() {
            break;
        }
    }
    let reason = flooder.expect_close_code(1008).await;
    assert!(reason.contains("rate limit"), "{reason}");
    assert_eq!(rejections(&server, "inbound_rate").await, 1);
}

// ----- message size ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_counted_as_a_limit() {
    let server = server(Config {
        max_message_size: 1024,
        ..Config::default()
    })
    .await;
    let mut big = server.connect("size").await;
    big.send_text(&"x".repeat(2048)).await;
    big.expect_close_code(1009).await;
    assert_eq!(rejections(&server, "message_size").await, 1);
}

// ----- configuration ---------------------------------------------------------------

// The flags' own check (each limit flag reaches `Config`, and their
// defaults are the library's) is a unit test of the binary: src/cli.rs.

/// The `GROUPCAST_*` variables reach the limits of the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_variables_set_the_limits_of_the_binary() {
    let addr: SocketAddr = format!("127.0.0.1:{}", common::redis::free_port())
        .parse()
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_groupcast"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GROUPCAST_") {
            command.env_remove(key);
        }
    }
    let child = command
        .env("GROUPCAST_LISTEN", addr.to_string())
        .env("GROUPCAST_MAX_CONNECTIONS", "1")
        .env("GROUPCAST_MAX_GROUPS", "1")
        .env("GROUPCAST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the groupcast binary");
    let _child = KillOnDrop(child);
    let health = format!("http://{addr}/healthz");
    wait_until_async("the binary answers", || async {
        reqwest::get(&health).await.is_ok()
    })
    .await;

    let mut only = Client::connect(&format!("ws://{addr}/ws/one")).await;
    let refusal = refused(&format!("ws://{addr}/ws/one")).await;
    assert_eq!(
        (refusal.status, refusal.body["error"].as_str()),
        (503, Some("node_full"))
    );
    // The group limit answers first for a new group.
    let refusal = refused(&format!("ws://{addr}/ws/two")).await;
    assert_eq!(
        (refusal.status, refusal.body["error"].as_str()),
        (503, Some("too_many_groups"))
    );
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("groupcast_limit_rejections_total{limit=\"connections\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("groupcast_limit_rejections_total{limit=\"groups\"} 1"),
        "{metrics}"
    );
    // And the admitted client is served.
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/api/groups/one/messages"))
        .header("content-type", "text/plain")
        .body("served")
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    assert_eq!(only.recv_text().await, "served");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
