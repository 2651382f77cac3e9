//! Issue 2, shown end to end: one standalone node, real WebSocket clients
//! over loopback.
//!
//! Most tests serve a hub in-process (`common::TestServer`), so they can
//! tune its `Config` and look at its state; the ones about the binary
//! itself (client messages, SIGTERM) spawn the real `groupcast` executable.
//!
//! Absence is never shown with a sleep: after the message a client must not
//! get, a later marker is sent, and the marker must be the next thing it
//! reads.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Client, TestServer, WAIT, wait_until, wait_until_async};
use futures_util::{SinkExt, StreamExt};
use groupcast::server::ServerOptions;
use groupcast::{
    Broadcast, Config, GroupName, Hub, HubBuilder, KeyFilter, Message, QueueFullPolicy,
    SessionError, SessionId, close_code,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

// ----- helpers ---------------------------------------------------------------

fn group(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

/// A hub whose `on_connect` tells each client its session id (`id:<id>`),
/// so tests can address sessions the way an application would.
fn announcing_ids() -> HubBuilder {
    Hub::builder().on_connect(|_hub, session| {
        session.send(format!("id:{}", session.id()));
    })
}

/// The handlers `main.rs` installs for `--client-messages group`.
fn forwarding(builder: HubBuilder) -> HubBuilder {
    builder
        .on_text(|hub, session, text| {
            let _ = hub.send(Broadcast::group(session.group().clone()), text.to_owned());
        })
        .on_binary(|hub, session, data| {
            let _ = hub.send(
                Broadcast::group(session.group().clone()),
                Message::Binary(data.clone()),
            );
        })
}

/// A connected client and the id the server announced for it.
struct Peer {
    client: Client,
    id: SessionId,
}

async fn connect_peer(server: &TestServer, group: &str) -> Peer {
    let mut client = server.connect(group).await;
    let hello = client.recv_text().await;
    let id = hello
        .strip_prefix("id:")
        .unwrap_or_else(|| panic!("expected the id announcement, got {hello:?}"))
        .into();
    Peer { client, id }
}

/// `delivered` must equal `expected.len()`; then a marker goes to everyone,
/// and exactly the peers in `expected` must read `message` before it.
async fn assert_delivery(
    server: &TestServer,
    peers: &mut [Peer],
    what: &str,
    delivered: usize,
    expected: &[usize],
    message: Ws,
) {
    assert_eq!(delivered, expected.len(), "{what}: sessions queued for");
    let marker = format!("marker after {what}");
    assert_eq!(
        server.hub.broadcast_all(marker.as_str()).unwrap(),
        peers.len()
    );
    for (i, peer) in peers.iter_mut().enumerate() {
        if expected.contains(&i) {
            assert_eq!(peer.client.next_data().await, message, "{what}: peer {i}");
        }
        assert_eq!(
            peer.client.next_data().await,
            Ws::text(marker.clone()),
            "{what}: peer {i} read something other than the marker"
        );
    }
}

/// Reads a JSON body, with the status.
async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// An HTTP/1.1 exchange over a raw socket: the path goes out byte for byte
/// (no client-side normalisation of `..` or `//`). Returns the status, the
/// lower-cased head and the body (as long as its `Content-Length` says).
async fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request = head.replace('\n', "\r\n").into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        // Bounded by the timeout around this block.
        loop {
            if let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if answer.len() >= split + 4 + length {
                    let body = answer[split + 4..split + 4 + length].to_vec();
                    return (head, body);
                }
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-answer: {answer:?}");
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    let (head, body) = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("timed out on a raw HTTP exchange");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head, body)
}

/// A WebSocket upgrade request for `path`, as a browser would send it.
fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\nHost: localhost\nConnection: Upgrade\nUpgrade: websocket\n\
         Sec-WebSocket-Version: 13\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n\n"
    )
}

/// A POST to `path` with an optional content type, `Connection: close`.
fn post_request(path: &str, content_type: Option<&str>, body_len: usize) -> String {
    let content_type = content_type
        .map(|ct| format!("Content-Type: {ct}\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\nHost: localhost\nConnection: close\n{content_type}\
         Content-Length: {body_len}\n\n"
    )
}

/// Asserts a JSON error answer with `status` and machine code `code`.
fn assert_json_error(what: &str, answer: &(u16, String, Vec<u8>), status: u16, code: &str) {
    let (got, head, body) = answer;
    let text = String::from_utf8_lossy(body);
    assert_eq!(*got, status, "{what}: status (body: {text})");
    assert!(
        head.contains("content-type: application/json"),
        "{what}: not JSON: {head}"
    );
    let json: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(json["error"], code, "{what}: {json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: no message in {json}");
}

/// The value of an unlabelled Prometheus sample.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// A binary payload of `len` bytes starting with its big-endian sequence
/// number, large enough to fill kernel buffers quickly.
fn numbered(seq: u64, len: usize) -> Message {
    let mut payload = vec![0u8; len];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    Message::binary(payload)
}

fn seq_of(frame: &Ws) -> u64 {
    match frame {
        Ws::Binary(b) => u64::from_be_bytes(b[..8].try_into().unwrap()),
        other => panic!("expected a numbered binary frame, got {other:?}"),
    }
}

/// Reads numbered frames in a background task and reports their numbers.
fn numbered_reader(mut client: Client) -> mpsc::UnboundedReceiver<u64> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seq = seq_of(&client.next_data().await);
            if tx.send(seq).is_err() {
                return;
            }
        }
    });
    rx
}

async fn recv_seq(rx: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a fast client")
        .expect("a fast client's reader ended")
}

/// A client whose socket receive buffer is tiny and which is never polled
/// until the test says so: the slowest possible consumer.
async fn tiny_buffer_client(server: &TestServer, group: &str) -> (Client, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(server.ws_url(group), MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
    wait_until("the slow client's session is registered", || {
        server
            .hub
            .sessions()
            .iter()
            .any(|s| s.remote_addr() == Some(local))
    })
    .await;
    (Client { ws }, local)
}

/// The real `groupcast` binary on a free loopback port; killed on drop.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    /// Starts the binary with `args` and waits until `/readyz` answers 200.
    async fn spawn(args: &[&str]) -> Process {
        for _attempt in 0..3 {
            // Another process may grab the port between this probe and the
            // binary's bind; the binary then exits and we try another one.
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let mut command = Command::new(env!("CARGO_BIN_EXE_groupcast"));
            for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("GROUPCAST_")) {
                command.env_remove(key);
            }
            let child = command
                .args(["--listen", &addr.to_string(), "--log", "warn"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn the groupcast binary");
            let mut process = Process { child, addr };
            if process.wait_ready().await {
                return process;
            }
        }
        panic!("the groupcast binary did not start on a free port in 3 attempts");
    }

    async fn wait_ready(&mut self) -> bool {
        let url = self.http_url("/readyz");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the groupcast binary was not ready within {WAIT:?}");
    }

    fn ws_url(&self, group: &str) -> String {
        format!("ws://{}/ws/{}", self.addr, group)
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects to `group` and waits until the server counts `expected`
    /// sessions in it.
    async fn connect(&self, group: &str, expected: u64) -> Client {
        let client = Client::connect(&self.ws_url(group)).await;
        let url = self.http_url(&format!("/api/groups/{group}"));
        wait_until_async("the binary registers the session", || async {
            let (_, json) = get_json(&url).await;
            json["members"].as_u64() == Some(expected)
        })
        .await;
        client
    }

    async fn post_text(&self, group: &str, text: &str) -> Value {
        reqwest::Client::new()
            .post(self.http_url(&format!("/api/groups/{group}/messages")))
            .header("content-type", "text/plain")
            .body(text.to_owned())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ----- group isolation ---------------------------------------------------------

/// 20 groups × 10 clients at once: each client reads exactly its own
/// group's messages, in order, and then the final marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_isolated_with_many_groups_and_clients() {
    const GROUPS: usize = 20;
    const CLIENTS: usize = 10;
    const MESSAGES: usize = 6;
    let server = TestServer::start(Hub::builder().build().unwrap()).await;

    let mut connecting = Vec::new();
    for g in 0..GROUPS {
        for _ in 0..CLIENTS {
            let url = server.ws_url(&format!("iso/{g}"));
            connecting.push(async move { (g, Client::connect(&url).await) });
        }
    }
    let mut clients = futures_util::future::join_all(connecting).await;
    wait_until("every client is registered", || {
        server.hub.session_count() == GROUPS * CLIENTS
    })
    .await;
    assert_eq!(server.hub.group_count(), GROUPS);
    for g in 0..GROUPS {
        assert_eq!(
            server.hub.member_count(&group(&format!("iso/{g}"))),
            CLIENTS
        );
    }

    // Interleave the groups; alternate text and binary frames.
    let expected = |g: usize, k: usize| -> Ws {
        let body = format!("group {g} message {k}");
        if k.is_multiple_of(2) {
            Ws::text(body)
        } else {
            Ws::binary(body.into_bytes())
        }
    };
    for k in 0..MESSAGES {
        for g in 0..GROUPS {
            let body = format!("group {g} message {k}");
            let message = if k.is_multiple_of(2) {
                Message::text(body)
            } else {
                Message::binary(body.into_bytes())
            };
            let delivered = server
                .hub
                .broadcast_group(format!("iso/{g}"), message)
                .unwrap();
            assert_eq!(delivered, CLIENTS);
        }
    }
    assert_eq!(server.hub.broadcast_all("end").unwrap(), GROUPS * CLIENTS);

    let reading = clients.iter_mut().map(|(g, client)| {
        let g = *g;
        async move {
            for k in 0..MESSAGES {
                assert_eq!(
                    client.next_data().await,
                    expected(g, k),
                    "a member of group {g}"
                );
            }
            assert_eq!(client.recv_text().await, "end", "a member of group {g}");
        }
    });
    futures_util::future::join_all(reading).await;
}

// ----- broadcast variants ------------------------------------------------------

/// Every way of addressing sessions reaches exactly the sessions it names,
/// with text and binary frames.
#[tokio::test]
async fn each_broadcast_variant_reaches_exactly_the_sessions_it_names() {
    let server = TestServer::start(announcing_ids().build().unwrap()).await;
    let hub = server.hub.clone();
    // 0, 1, 2 in room/a; 3, 4, 5 in room/b; 6, 7 in lobby.
    let mut peers = Vec::new();
    for name in [
        "room/a", "room/a", "room/a", "room/b", "room/b", "room/b", "lobby", "lobby",
    ] {
        peers.push(connect_peer(&server, name).await);
    }
    let ids: Vec<SessionId> = peers.iter().map(|p| p.id.clone()).collect();
    let session = |i: usize| hub.session(&ids[i]).expect("a live session");
    session(0).set("role", "admin");
    session(3).set("role", "admin");
    session(3).set("vip", true);
    session(6).set("role", "user");
    let room_a = group("room/a");
    let room_b = group("room/b");
    let bin = |bytes: &[u8]| Ws::binary(bytes.to_vec());

    let n = hub.broadcast_group("room/a", "to room/a").unwrap();
    assert_delivery(
        &server,
        &mut peers,
        "group text",
        n,
        &[0, 1, 2],
        Ws::text("to room/a"),
    )
    .await;

    let n = hub.broadcast_group(&room_b, vec![1u8, 2, 3]).unwrap();
    assert_delivery(
        &server,
        &mut peers,
        "group binary",
        n,
        &[3, 4, 5],
        bin(&[1, 2, 3]),
    )
    .await;

    let n = hub.broadcast_group("nobody-here", "lost").unwrap();
    assert_delivery(&server, &mut peers, "empty group", n, &[], Ws::text("lost")).await;

    let all: Vec<usize> = (0..8).collect();
    let n = hub.broadcast_all("to all").unwrap();
    assert_delivery(&server, &mut peers, "all text", n, &all, Ws::text("to all")).await;

    let n = hub.broadcast_all(vec![0u8, 255]).unwrap();
    assert_delivery(&server, &mut peers, "all binary", n, &all, bin(&[0, 255])).await;

    let n = hub.broadcast_others("not to 4", &ids[4]).unwrap();
    let others = [0, 1, 2, 3, 5, 6, 7];
    assert_delivery(
        &server,
        &mut peers,
        "others",
        n,
        &others,
        Ws::text("not to 4"),
    )
    .await;

    let n = hub
        .send(
            Broadcast::group(room_a.clone()).except(ids[1].clone()),
            "room/a but 1",
        )
        .unwrap();
    assert_delivery(
        &server,
        &mut peers,
        "group except",
        n,
        &[0, 2],
        Ws::text("room/a but 1"),
    )
    .await;

    let n = hub
        .send(
            Broadcast::group(room_b.clone()).except(ids[3].clone()),
            vec![7u8],
        )
        .unwrap();
    assert_delivery(
        &server,
        &mut peers,
        "group except binary",
        n,
        &[4, 5],
        bin(&[7]),
    )
    .await;

    let n = hub.broadcast_filter("admins by closure", |s| {
        s.get("role") == Some(json!("admin"))
    });
    assert_delivery(
        &server,
        &mut peers,
        "filter closure",
        n,
        &[0, 3],
        Ws::text("admins by closure"),
    )
    .await;

    let skip = ids[5].clone();
    let n = hub.broadcast_filter(vec![9u8, 9], |s| {
        s.group().as_str().starts_with("room/") && *s.id() != skip
    });
    assert_delivery(
        &server,
        &mut peers,
        "filter binary",
        n,
        &[0, 1, 2, 3, 4],
        bin(&[9, 9]),
    )
    .await;

    let n = hub
        .broadcast_matching(KeyFilter::equals("role", "admin"), "admins by key")
        .unwrap();
    assert_delivery(
        &server,
        &mut peers,
        "matching",
        n,
        &[0, 3],
        Ws::text("admins by key"),
    )
    .await;

    let n = hub
        .broadcast_matching(KeyFilter::has("role").not(), vec![4u8])
        .unwrap();
    assert_delivery(
        &server,
        &mut peers,
        "matching not",
        n,
        &[1, 2, 4, 5, 7],
        bin(&[4]),
    )
    .await;

    let vip_admins_or_users = KeyFilter::equals("role", "admin")
        .and(KeyFilter::has("vip"))
        .or(KeyFilter::equals("role", "user"));
    let n = hub
        .broadcast_matching(vip_admins_or_users, "vip admins or users")
        .unwrap();
    assert_delivery(
        &server,
        &mut peers,
        "matching and/or",
        n,
        &[3, 6],
        Ws::text("vip admins or users"),
    )
    .await;

    let n = hub
        .send(
            Broadcast::group(room_b.clone()).matching(KeyFilter::equals("role", "admin")),
            "room/b admins",
        )
        .unwrap();
    assert_delivery(
        &server,
        &mut peers,
        "group matching",
        n,
        &[3],
        Ws::text("room/b admins"),
    )
    .await;

    let n = hub
        .broadcast_to([ids[1].clone(), ids[4].clone(), ids[7].clone()], "listed")
        .unwrap();
    assert_delivery(
        &server,
        &mut peers,
        "to list",
        n,
        &[1, 4, 7],
        Ws::text("listed"),
    )
    .await;

    let n = hub
        .broadcast_to(
            [ids[2].clone(), SessionId::from("no-such-session")],
            vec![2u8],
        )
        .unwrap();
    assert_delivery(&server, &mut peers, "to list binary", n, &[2], bin(&[2])).await;

    let n = usize::from(session(6).send("just you"));
    assert_delivery(
        &server,
        &mut peers,
        "session send",
        n,
        &[6],
        Ws::text("just you"),
    )
    .await;

    // The HTTP API publishes to a group: text, JSON (as text), and binary.
    let http = reqwest::Client::new();
    let url = server.http_url("/api/groups/room/b/messages");
    for (content_type, body, frame) in [
        (
            "text/plain; charset=utf-8",
            b"api text".to_vec(),
            Ws::text("api text"),
        ),
        (
            "application/json",
            br#"{"n":1}"#.to_vec(),
            Ws::text(r#"{"n":1}"#),
        ),
        (
            "application/octet-stream",
            vec![0xc1, 0, 0xff],
            bin(&[0xc1, 0, 0xff]),
        ),
    ] {
        let answer: Value = http
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = answer["delivered"].as_u64().unwrap() as usize;
        assert_eq!(answer["group"], "room/b");
        assert_delivery(&server, &mut peers, content_type, n, &[3, 4, 5], frame).await;
    }
}

// ----- order -------------------------------------------------------------------

/// Three publishers at once — the library, the HTTP API and a client — each
/// send 1,000 messages to one group; every member sees each publisher's
/// messages in the order they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_publisher_order_holds_over_1000_messages() {
    const N: usize = 1000;
    const PUBLISHERS: [&str; 3] = ["hub", "api", "client"];
    const TOTAL: usize = PUBLISHERS.len() * N;
    let config = Config {
        // Room for a reader that falls behind all three bursts at once.
        queue_len: 4 * N,
        // The client's burst of 1,000 messages is the point here.
        max_inbound_rate: 0,
        ..Config::default()
    };
    let hub = forwarding(Hub::builder().config(config)).build().unwrap();
    let server = TestServer::start(hub).await;

    let sender = server.connect("order").await;
    let (mut sink, sender_stream) = sender.ws.split();
    let mut checks = vec![check_order(
        sender_stream,
        "the sending client".into(),
        TOTAL,
    )];
    for i in 0..3 {
        let member = server.connect("order").await;
        checks.push(check_order(member.ws, format!("member {i}"), TOTAL));
    }

    let from_hub = {
        let hub = server.hub.clone();
        tokio::spawn(async move {
            for i in 0..N {
                hub.broadcast_group("order", format!("hub {i}")).unwrap();
            }
        })
    };
    let from_api = {
        let url = server.http_url("/api/groups/order/messages");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..N {
                let status = http
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body(format!("api {i}"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert!(status.is_success());
            }
        })
    };
    let from_client = tokio::spawn(async move {
        for i in 0..N {
            sink.send(Ws::text(format!("client {i}"))).await.unwrap();
        }
        sink
    });
    from_hub.await.unwrap();
    from_api.await.unwrap();
    let _sink = from_client.await.unwrap();
    for check in checks {
        let counts = check.await.unwrap();
        for publisher in PUBLISHERS {
            assert_eq!(counts.get(publisher), Some(&N), "{publisher}");
        }
    }
    assert_eq!(server.hub.metrics().queue_full_closes.get(), 0);
}

/// Reads `total` text frames `"<publisher> <seq>"` in a task and checks
/// that each publisher's numbers come in order; returns the counts.
fn check_order<S>(
    mut stream: S,
    who: String,
    total: usize,
) -> tokio::task::JoinHandle<HashMap<String, usize>>
where
    S: futures_util::Stream<Item = Result<Ws, tokio_tungstenite::tungstenite::Error>>
        + Unpin
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let mut next_seq: HashMap<String, usize> = HashMap::new();
        let mut read = 0;
        while read < total {
            let frame = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap_or_else(|_| panic!("{who}: timed out after {read} messages"))
                .unwrap_or_else(|| panic!("{who}: stream ended"))
                .unwrap_or_else(|e| panic!("{who}: {e}"));
            let text = match frame {
                Ws::Ping(_) | Ws::Pong(_) => continue,
                Ws::Text(text) => text,
                other => panic!("{who}: expected text, got {other:?}"),
            };
            let (publisher, seq) = text.split_once(' ').expect("publisher seq");
            let expected = next_seq.entry(publisher.to_string()).or_default();
            assert_eq!(
                seq.parse::<usize>().unwrap(),
                *expected,
                "{who}: {publisher}"
            );
            *expected += 1;
            read += 1;
        }
        next_seq
    })
}

// ----- keys --------------------------------------------------------------------

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

// ----- the binary: client messages ---------------------------------------------

/// `--client-messages group` (the default): what a client sends reaches its
/// whole group, itself included, and no other group.
#[tokio::test]
async fn binary_forwards_client_messages_to_their_group() {
    let server = Process::spawn(&["--client-messages", "group"]).await;
    let (_, info) = get_json(&server.http_url("/api/info")).await;
    assert_eq!(info["client_messages"], "group");
    assert_eq!(info["mode"], "local");

    let mut alice = server.connect("chat/a", 1).await;
    let mut bob = server.connect("chat/a", 2).await;
    let mut carol = server.connect("chat/b", 1).await;

    alice.send_text("hello from alice").await;
    assert_eq!(alice.recv_text().await, "hello from alice");
    assert_eq!(bob.recv_text().await, "hello from alice");
    bob.ws.send(Ws::binary(vec![1u8, 2, 3])).await.unwrap();
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.next_data().await, Ws::binary(vec![1u8, 2, 3]));
    }
    carol.send_text("hello from carol").await;
    assert_eq!(carol.recv_text().await, "hello from carol");

    // Nothing crossed groups: each one's next frame is its own marker.
    assert_eq!(server.post_text("chat/a", "marker a").await["delivered"], 2);
    assert_eq!(server.post_text("chat/b", "marker b").await["delivered"], 1);
    assert_eq!(alice.recv_text().await, "marker a");
    assert_eq!(bob.recv_text().await, "marker a");
    assert_eq!(carol.recv_text().await, "marker b");
}

/// `--client-messages none` (ws-notifier): clients only listen.
#[tokio::test]
async fn binary_ignores_client_messages_when_push_only() {
    let server = Process::spawn(&["--client-messages", "none"]).await;
    let (_, info) = get_json(&server.http_url("/api/info")).await;
    assert_eq!(info["client_messages"], "none");
    let mut alice = server.connect("news", 1).await;
    let mut bob = server.connect("news", 2).await;
    alice.send_text("nobody hears this").await;
    alice.ws.send(Ws::binary(vec![0u8])).await.unwrap();
    // The server read both (it counts them), and forwarded neither.
    wait_until_async("the server counted both client messages", || async {
        let text = reqwest::get(server.http_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric(&text, "groupcast_messages_in_total") == 2.0
    })
    .await;
    assert_eq!(
        server.post_text("news", "from the server").await["delivered"],
        2
    );
    assert_eq!(alice.recv_text().await, "from the server");
    assert_eq!(bob.recv_text().await, "from the server");
}

// ----- keep-alive and limits ---------------------------------------------------

/// A client that stops answering pings is dropped once the pong wait has
/// passed; a client that answers stays.
#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_after_the_pong_wait() {
    // Generous margins: the answering client must never miss a deadline,
    // even on a loaded machine.
    let pong_wait = Duration::from_millis(1000);
    let ping_period = Duration::from_millis(200);
    let pongs = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let (pong_count, error_log) = (pongs.clone(), errors.clone());
    let hub = announcing_ids()
        .config(Config {
            pong_wait,
            ping_period,
            ..Config::default()
        })
        .on_pong(move |_, _| {
            pong_count.fetch_add(1, Ordering::SeqCst);
        })
        .on_error(move |_, session, error| {
            error_log.lock().push(format!("{}: {error}", session.id()));
        })
        .build()
        .unwrap();
    let server = TestServer::start(hub).await;

    let started = Instant::now();
    // Never polled: tungstenite answers pings only while it is read.
    let mut silent = connect_peer(&server, "pings").await;
    let mut active = connect_peer(&server, "pings").await;
    let active_id = active.id.clone();
    let reader = tokio::spawn(async move {
        // Reading drives the automatic pong replies.
        while let Some(Ok(frame)) = active.client.ws.next().await {
            assert!(
                !matches!(frame, Ws::Close(_)),
                "the active client was closed"
            );
        }
    });

    wait_until("the silent client is dropped", || {
        server.hub.session_count() == 1
    })
    .await;
    assert!(
        started.elapsed() >= pong_wait,
        "dropped after {:?}, before the pong wait",
        started.elapsed()
    );
    assert!(server.hub.session(&silent.id).is_none());
    assert!(server.hub.session(&active_id).is_some());
    assert!(
        errors
            .lock()
            .iter()
            .any(|e| e.starts_with(silent.id.as_str()) && e.contains("pong wait")),
        "{:?}",
        errors.lock()
    );

    // The server closed the silent client's TCP connection: reading it now
    // yields what was queued (pings) and then the end of the stream.
    let ended = async {
        for _ in 0..1000 {
            match silent.client.ws.next().await {
                Some(Ok(Ws::Ping(_) | Ws::Close(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(_)) | None => return,
            }
        }
        panic!("too many frames");
    };
    tokio::time::timeout(WAIT, ended)
        .await
        .expect("the server did not close the silent client's connection");

    // The answering client outlives several pong waits.
    let enough = (2 * pong_wait.as_millis() / ping_period.as_millis()) as usize;
    wait_until("the active client answered many pings", || {
        pongs.load(Ordering::SeqCst) >= enough
    })
    .await;
    assert!(started.elapsed() >= 2 * pong_wait);
    assert!(server.hub.session(&active_id).is_some());
    assert!(!reader.is_finished());
}

/// Messages over `max_message_size` close the connection with 1009; a
/// message of exactly the limit goes through.
#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let error_log = errors.clone();
    let hub = forwarding(Hub::builder())
        .config(Config {
            max_message_size: 1024,
            ..Config::default()
        })
        .on_error(move |_, _, error| {
            assert!(
                matches!(error, SessionError::MessageTooBig { limit: 1024 }),
                "{error}"
            );
            error_log.lock().push(error.to_string());
        })
        .build()
        .unwrap();
    let server = TestServer::start(hub).await;
    let mut sender = server.connect("limits").await;
    let mut listener = server.connect("limits").await;

    let at_limit = "x".repeat(1024);
    sender.send_text(&at_limit).await;
    assert_eq!(listener.recv_text().await, at_limit);
    assert_eq!(sender.recv_text().await, at_limit);

    sender.send_text(&"y".repeat(1025)).await;
    let reason = sender.expect_close_code(close_code::TOO_BIG).await;
    assert!(reason.contains("1024"), "{reason}");

    let mut binary_sender = server.connect("limits").await;
    binary_sender
        .ws
        .send(Ws::binary(vec![0u8; 64 * 1024]))
        .await
        .unwrap();
    binary_sender.expect_close_code(close_code::TOO_BIG).await;

    wait_until("both senders are gone", || server.hub.session_count() == 1).await;
    assert_eq!(errors.lock().len(), 2);
    // The listener got neither oversized message.
    server.hub.broadcast_group("limits", "marker").unwrap();
    assert_eq!(listener.recv_text().await, "marker");
}

/// A text frame that is not UTF-8 closes the connection with 1007 and never
/// reaches the text handler.
#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let texts = Arc::new(AtomicUsize::new(0));
    let counter = texts.clone();
    let hub = Hub::builder()
        .on_text(move |_, _, _| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let server = TestServer::start(hub).await;
    let mut client = server.connect("utf8").await;
    let frame = Frame::message(vec![b'o', b'k', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    client.ws.send(Ws::Frame(frame)).await.unwrap();
    client.expect_close_code(close_code::INVALID_PAYLOAD).await;
    wait_until("the session is gone", || server.hub.session_count() == 0).await;
    assert_eq!(texts.load(Ordering::SeqCst), 0);
}

// ----- slow consumers ----------------------------------------------------------

/// The slow-consumer setup: a small queue, small socket buffers, 64 KiB
/// frames. `write_timeout` is long so that the blocked writer is still
/// waiting when the test starts to read.
fn slow_consumer_config(policy: QueueFullPolicy) -> Config {
    Config {
        queue_len: 8,
        queue_full: policy,
        write_buffer_size: 4096,
        read_buffer_size: 4096,
        write_timeout: Duration::from_secs(30),
        ..Config::default()
    }
}

const FRAME: usize = 64 * 1024;
/// Enough 64 KiB frames to fill any loopback buffers (about 25 MB).
const MAX_FRAMES: u64 = 400;

/// A client that never reads is closed with 1013 once its queue is full,
/// and the others receive every message, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_1013_while_others_keep_receiving() {
    let hub = Hub::new(slow_consumer_config(QueueFullPolicy::Close)).unwrap();
    let server = TestServer::start(hub).await;
    let (mut slow, slow_addr) = tiny_buffer_client(&server, "firehose").await;
    let slow_session = server
        .hub
        .sessions()
        .into_iter()
        .find(|s| s.remote_addr() == Some(slow_addr))
        .unwrap();
    let mut fast = Vec::new();
    for _ in 0..2 {
        fast.push(numbered_reader(server.connect("firehose").await));
    }

    // Publish one frame at a time, each read by the fast clients before the
    // next, until the slow client overflows.
    let mut published = 0;
    while server.hub.metrics().queue_full_closes.get() == 0 {
        assert!(published < MAX_FRAMES, "the slow client never overflowed");
        server
            .hub
            .broadcast_group("firehose", numbered(published, FRAME))
            .unwrap();
        for rx in &mut fast {
            assert_eq!(recv_seq(rx).await, published);
        }
        published += 1;
    }
    assert!(slow_session.is_closed());
    assert_eq!(server.hub.metrics().queue_full_closes.get(), 1);

    // The others keep receiving every message.
    for _ in 0..20 {
        let delivered = server
            .hub
            .broadcast_group("firehose", numbered(published, FRAME))
            .unwrap();
        assert_eq!(delivered, 2, "the closing slow client is not counted");
        for rx in &mut fast {
            assert_eq!(recv_seq(rx).await, published);
        }
        published += 1;
    }

    // The slow client finally reads: a gap-free prefix of the frames (what
    // was already in the socket), then the close frame with 1013.
    let mut next = 0;
    let close = loop {
        let frame = tokio::time::timeout(WAIT, slow.ws.next())
            .await
            .expect("timed out reading the slow client")
            .expect("the slow client's stream ended without a close frame")
            .expect("the slow client's stream failed");
        match frame {
            Ws::Binary(_) => {
                assert_eq!(seq_of(&frame), next);
                next += 1;
            }
            Ws::Close(close) => break close.expect("a close frame with a code"),
            Ws::Ping(_) | Ws::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        u16::from(close.code),
        close_code::TRY_AGAIN_LATER,
        "{}",
        close.reason
    );
    assert!(
        next < published,
        "the slow client cannot have read everything"
    );
    wait_until("the slow session is gone", || {
        server.hub.session_count() == 2
    })
    .await;

    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&metrics, "groupcast_queue_full_closes_total"), 1.0);
    assert_eq!(metric(&metrics, "groupcast_queue_drops_total"), 0.0);
}

/// With the drop-oldest policy the slow client stays connected, misses the
/// dropped messages (each one counted), and gets the newest ones in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_a_slow_client_connected_and_counts_drops() {
    let hub = Hub::new(slow_consumer_config(QueueFullPolicy::DropOldest)).unwrap();
    let server = TestServer::start(hub).await;
    let (mut slow, slow_addr) = tiny_buffer_client(&server, "firehose").await;
    let mut fast = numbered_reader(server.connect("firehose").await);

    let mut published = 0;
    let mut publish = async |published: &mut u64| {
        let delivered = server
            .hub
            .broadcast_group("firehose", numbered(*published, FRAME))
            .unwrap();
        assert_eq!(delivered, 2);
        assert_eq!(recv_seq(&mut fast).await, *published);
        *published += 1;
    };
    while server.hub.metrics().queue_drops.get() == 0 {
        assert!(
            published < MAX_FRAMES,
            "the slow client's queue never filled"
        );
        publish(&mut published).await;
    }
    for _ in 0..20 {
        publish(&mut published).await;
    }
    assert_eq!(server.hub.metrics().queue_full_closes.get(), 0);
    let session = server
        .hub
        .sessions()
        .into_iter()
        .find(|s| s.remote_addr() == Some(slow_addr))
        .expect("the slow client is still connected");
    assert!(!session.is_closed());

    // Reading now: increasing numbers up to the last one published; what is
    // missing is exactly what was counted as dropped.
    let last = published - 1;
    let mut received = 0;
    let mut previous = None;
    loop {
        let seq = seq_of(&slow.next_data().await);
        assert!(
            previous.is_none_or(|p| seq > p),
            "out of order: {previous:?} then {seq}"
        );
        previous = Some(seq);
        received += 1;
        if seq == last {
            break;
        }
    }
    let drops = server.hub.metrics().queue_drops.get();
    assert!(drops >= 21, "{drops} drops");
    assert_eq!(
        received + drops,
        published,
        "every message is either received or counted as dropped"
    );

    // Still connected and receiving.
    assert_eq!(server.hub.session_count(), 2);
    assert!(session.send("still here"));
    assert_eq!(slow.recv_text().await, "still here");
}

/// With small frames, the kernel's self-tuned send buffer absorbs hundreds
/// of kilobytes for a client that never reads before its queue sees any
/// backpressure. A bounded send buffer (`--socket-send-buffer`) makes the
/// queue policy catch it after a known number of bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_send_buffer_lets_the_queue_policy_catch_a_stalled_client_early() {
    let hub = Hub::new(Config::default()).unwrap();
    let serve = groupcast::server::ServeOptions {
        send_buffer_size: Some(8192),
        ..Default::default()
    };
    let server = TestServer::start_serving(hub, ServerOptions::default(), serve).await;
    let (_slow, _) = tiny_buffer_client(&server, "ticks").await;
    let mut fast = numbered_reader(server.connect("ticks").await);

    // 64-byte frames (66 on the wire). What the stalled client can hold:
    // the send buffer (8 KiB, doubled by Linux), its 4 KiB receive buffer,
    // the 8 KiB write buffer and 256 queued frames: under 60 KB, about 900
    // frames. 3,000 frames are 200 KB, which a self-tuned send buffer
    // swallows without a full queue.
    const LIMIT: u64 = 3000;
    let mut published = 0;
    while server.hub.metrics().queue_full_closes.get() == 0 {
        assert!(
            published < LIMIT,
            "{LIMIT} frames of 64 bytes did not fill the stalled client's queue"
        );
        server
            .hub
            .broadcast_group("ticks", numbered(published, 64))
            .unwrap();
        assert_eq!(recv_seq(&mut fast).await, published);
        published += 1;
    }
    wait_until("only the reading client is left", || {
        server.hub.session_count() == 1
    })
    .await;
}

// ----- bad input ---------------------------------------------------------------

/// Bad group names are answered with 400 and a JSON message, never upgraded.
#[tokio::test]
async fn bad_group_names_get_400_before_any_upgrade() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    let too_long = format!("/ws/{}", "a".repeat(201));
    for path in [
        "/ws/",
        too_long.as_str(),
        "/ws/a%07b",
        "/ws/a%00b",
        "/ws/a%20b",
        "/ws/a//b",
        "/ws/..",
        "/ws/task/../42",
        "/ws/./x",
        "/ws/task/",
        "/ws/a%2F%2Fb",
    ] {
        let answer = raw_http(server.addr, &upgrade_request(path), b"").await;
        assert_json_error(path, &answer, 400, "bad_group_name");
        let message = serde_json::from_slice::<Value>(&answer.2).unwrap()["message"].to_string();
        assert!(message.contains("group name"), "{path}: {message}");
    }

    // A WebSocket client sees the refusal as an HTTP error.
    match tokio_tungstenite::connect_async(server.ws_url("a%07b")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!(
            "expected an HTTP 400, got {:?}",
            other.map(|_| "an upgrade")
        ),
    }
    assert_eq!(server.hub.metrics().connections_opened.get(), 0);

    // A plain GET (no upgrade) on a good name is refused in JSON too.
    let answer = raw_http(
        server.addr,
        "GET /ws/fine HTTP/1.1\nHost: localhost\nConnection: close\n\n",
        b"",
    )
    .await;
    assert_json_error(
        "GET without upgrade",
        &answer,
        400,
        "not_a_websocket_request",
    );

    // Good names still work, nested ones included.
    let _client = server.connect("task/42").await;
    assert_eq!(server.hub.groups()[0].name.as_str(), "task/42");
}

/// Bad API requests get a JSON error with a status that says why; a
/// member of the group receives none of them; the server stays up.
#[tokio::test]
async fn bad_api_requests_get_clear_4xx_json() {
    let options = ServerOptions {
        api_max_body: 1024,
        ..ServerOptions::default()
    };
    let server = TestServer::start_with(Hub::builder().build().unwrap(), options).await;
    let mut member = server.connect("g").await;
    let publish = "/api/groups/g/messages";
    let too_big = vec![b'x'; 2048];
    let post = async |path: &str, content_type: Option<&str>, body: &[u8]| {
        raw_http(
            server.addr,
            &post_request(path, content_type, body.len()),
            body,
        )
        .await
    };
    let (text, json) = (Some("text/plain"), Some("application/json"));
    let check = assert_json_error;
    check(
        "empty body",
        &post(publish, text, b"").await,
        400,
        "empty_body",
    );
    check(
        "invalid JSON",
        &post(publish, json, b"{no").await,
        400,
        "invalid_json",
    );
    check(
        "bad UTF-8",
        &post(publish, text, &[b'a', 0xff]).await,
        400,
        "invalid_utf8",
    );
    let png = post(publish, Some("image/png"), b"x").await;
    check("unsupported type", &png, 415, "unsupported_media_type");
    let untyped = post(publish, None, b"x").await;
    check("no content type", &untyped, 415, "unsupported_media_type");
    check(
        "too large",
        &post(publish, text, &too_big).await,
        413,
        "body_too_large",
    );
    for path in [
        "/api/groups/a%07b/messages",
        "/api/groups//messages",
        "/api/groups/../messages",
        "/api/groups/a//b/messages",
    ] {
        check(path, &post(path, text, b"x").await, 400, "bad_group_name");
    }
    let nowhere = post("/api/groups/g", text, b"x").await;
    check("POST without /messages", &nowhere, 404, "not_found");
    for path in ["/api/groups/a//b", "/api/groups/a%00", "/api/groups/.."] {
        let head = format!("GET {path} HTTP/1.1\nHost: localhost\nConnection: close\n\n");
        let answer = raw_http(server.addr, &head, b"").await;
        assert_json_error(path, &answer, 400, "bad_group_name");
    }

    server.hub.broadcast_group("g", "marker").unwrap();
    assert_eq!(
        member.recv_text().await,
        "marker",
        "a rejected request reached a member"
    );
    let (status, _) = get_json(&server.http_url("/readyz")).await;
    assert_eq!(status, 200);
    assert_eq!(server.hub.metrics().broadcasts.get(), 1);
}

// ----- operations --------------------------------------------------------------

/// SIGTERM: every client gets 1001 and the process exits 0 in time.
#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits() {
    let server = Process::spawn(&["--shutdown-timeout", "5s"]).await;
    let mut clients = vec![
        server.connect("shutdown/a", 1).await,
        server.connect("shutdown/a", 2).await,
        server.connect("shutdown/b", 1).await,
    ];
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    for client in &mut clients {
        let reason = client.expect_close_code(close_code::GOING_AWAY).await;
        assert!(reason.contains("shutting down"), "{reason}");
    }
    let mut server = server;
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}");
}

/// `/healthz`, `/readyz` and `/metrics` (Prometheus text).
#[tokio::test]
async fn health_readiness_and_metrics() {
    // Push only, so that the message a client sends below is counted in
    // and not forwarded out (the default, `ClientMessages::Group`, would).
    let config = Config {
        client_messages: groupcast::ClientMessages::None,
        ..Config::default()
    };
    let server = TestServer::start(Hub::builder().config(config).build().unwrap()).await;
    let healthz = reqwest::get(server.http_url("/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200);
    assert_eq!(healthz.text().await.unwrap().trim(), "ok");
    let (status, ready) = get_json(&server.http_url("/readyz")).await;
    assert_eq!(
        (status, &ready["ready"], &ready["bus"]),
        (200, &json!(true), &json!("local"))
    );

    let mut a = server.connect("metrics").await;
    let mut b = server.connect("metrics").await;
    let answer = reqwest::Client::new()
        .post(server.http_url("/api/groups/metrics/messages"))
        .header("content-type", "text/plain")
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
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

    // Draining: not ready any more, but still alive.
    server.hub.begin_drain();
    let (status, ready) = get_json(&server.http_url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["reason"], "shutting down");
    assert_eq!(
        reqwest::get(server.http_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

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
    assert_eq!(hub.broadcast_group("app/room", "from the app").unwrap(), 1);
    assert_eq!(client.recv_text().await, "from the app");
    let hello = reqwest::get(format!("http://{addr}/hello")).await.unwrap();
    assert_eq!(hello.text().await.unwrap(), "hi");
    // Only the WebSocket route was mounted.
    let api = reqwest::get(format!("http://{addr}/api/groups"))
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    serving.abort();
}

/// A handler that panics ends only its own connection, and the session
/// still leaves the hub (no ghost member in counts or the API).
#[tokio::test]
async fn a_panicking_handler_ends_only_its_connection_and_leaves_no_ghost() {
    let hub = Hub::builder()
        .on_text(|_hub, _session, text| {
            assert!(text != "boom", "handler panics on purpose");
        })
        .build()
        .unwrap();
    let server = TestServer::start(hub).await;
    let mut victim = server.connect("room").await;
    let mut bystander = server.connect("room").await;
    victim.send_text("boom").await;
    wait_until("the panicking connection leaves the hub", || {
        server.hub.session_count() == 1
    })
    .await;
    assert_eq!(server.hub.member_count(&"room".parse().unwrap()), 1);
    // The victim's connection ends (with or without a close frame).
    victim.expect_close().await;
    server.hub.broadcast_group("room", "still here").unwrap();
    assert_eq!(bystander.recv_text().await, "still here");
}
