//! Bad input never crashes a node nor reaches other clients:
//!
//! * bad group names in upgrades and API paths: 400 with a JSON reason,
//!   before any upgrade; every other bad API request (body, type, size,
//!   path) gets its own clear 4xx, one test each;
//! * garbage on the TCP port instead of, or before, an HTTP upgrade —
//!   random bytes, half a request left hanging, a huge header, an upgrade
//!   followed by bytes that are not WebSocket frames — against the real
//!   binary, which keeps serving its clients throughout;
//! * undecodable envelopes, random bytes and corrupt envelopes published
//!   on `group:*` channels: each one is either delivered exactly as the
//!   wire format says (raw payloads as text when UTF-8, as binary
//!   otherwise) or counted in `bus_invalid` and dropped, and the node keeps
//!   delivering.
//!
//! Bad frames from a client (too big, not UTF-8) are in `close_codes.rs`.
//! The bus tests share one Redis (`TestRedis::shared`), each with its own
//! node id and groups. The random inputs come from a seeded generator; the
//! seed is printed, so a failure can be replayed (`BAD_INPUT_SEED=<seed>`).

use std::net::SocketAddr;

use crate::common::node::NodeProcess;
use crate::common::redis::{TestRedis, fast_options, publish, wait_subscribed};
use crate::common::silence::{marker_is_next, quiet_after_marker};
use crate::common::{Client, TestServer, WAIT, http, wait_until_async};
use bytes::Bytes;
use groupcast::envelope::{self, Decoded, Envelope, FrameKind};
use groupcast::server::ServerOptions;
use groupcast::{Config, Hub, SessionId};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;

// ----- harness -----------------------------------------------------------------

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

fn rng(test: &str) -> StdRng {
    let seed = std::env::var("BAD_INPUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: BAD_INPUT_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Writes `bytes` on a fresh TCP connection, half-closes it, and reads what
/// the server answers until it closes (at most [`WAIT`]).
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
    // The server may close before it has read everything: that is fine.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    answer
}

/// The status line's code, if the answer is HTTP at all.
fn status_of(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// A garbage answer may be nothing (closed) or an HTTP error; never a 101.
fn assert_refused(what: &str, answer: &[u8]) {
    if let Some(status) = status_of(answer) {
        assert!(
            (400..500).contains(&status),
            "{what}: answered {status}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    } else {
        assert!(
            answer.is_empty(),
            "{what}: answered something that is not HTTP: {:?}",
            &answer[..answer.len().min(64)]
        );
    }
}

/// Checks that `node` still serves: its old client receives a message
/// published through the API, a new client can join, `/healthz` answers.
async fn still_serving(node: &NodeProcess, old: &mut Client, round: usize) {
    let text = format!("still serving {round}");
    let (status, _) = http::post_text(&node.url("/api/groups/watch/messages"), &text).await;
    assert_eq!(status, 200);
    assert_eq!(old.recv_text().await, text);
    let mut newcomer = Client::connect(&node.ws_url("watch")).await;
    newcomer.ws.close(None).await.unwrap();
    let _ = newcomer.expect_close().await;
    assert_eq!(http::status(&node.url("/healthz")).await, 200);
}

// ----- bad group names and API requests -------------------------------------------

/// Upgrades to `path` on a fresh server: 400 `bad_group_name` in JSON, a
/// message that speaks of the group name, and no session.
async fn assert_bad_name(path: &str) {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    let answer = raw_http(server.addr, &upgrade_request(path), b"").await;
    assert_json_error(path, &answer, 400, "bad_group_name");
    let message = serde_json::from_slice::<Value>(&answer.2).unwrap()["message"].to_string();
    assert!(message.contains("group name"), "{path}: {message}");
    assert_eq!(server.hub.metrics().connections_opened.get(), 0);
}

#[tokio::test]
async fn an_empty_group_name_gets_400() {
    assert_bad_name("/ws/").await;
}

#[tokio::test]
async fn a_group_name_over_200_bytes_gets_400() {
    assert_bad_name(&format!("/ws/{}", "a".repeat(201))).await;
}

#[tokio::test]
async fn control_characters_and_spaces_in_a_group_name_get_400() {
    for path in ["/ws/a%07b", "/ws/a%00b", "/ws/a%20b"] {
        assert_bad_name(path).await;
    }
}

#[tokio::test]
async fn empty_dot_and_dot_dot_segments_get_400() {
    for path in [
        "/ws/a//b",
        "/ws/..",
        "/ws/task/../42",
        "/ws/./x",
        "/ws/task/",
        "/ws/a%2F%2Fb",
    ] {
        assert_bad_name(path).await;
    }
}

/// A WebSocket client sees the refusal as an HTTP error.
#[tokio::test]
async fn a_websocket_client_sees_a_bad_name_as_http_400() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    let refused = Client::refused(&server.ws_url("a%07b")).await;
    assert_eq!(refused.status, 400);
    assert_eq!(server.hub.metrics().connections_opened.get(), 0);
}

/// A plain GET (no upgrade) on a good name is refused in JSON too.
#[tokio::test]
async fn a_get_without_upgrade_gets_400_in_json() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
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
}

/// Good names still work, nested ones included.
#[tokio::test]
async fn a_nested_group_name_is_accepted() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    let _client = server.connect("task/42").await;
    assert_eq!(server.hub.groups()[0].name.as_str(), "task/42");
}

/// A server whose API takes bodies up to 1 KiB, with a member of `g`.
struct Api {
    server: TestServer,
    member: Client,
}

impl Api {
    async fn start() -> Api {
        let options = ServerOptions {
            api_max_body: 1024,
            ..ServerOptions::default()
        };
        let server = TestServer::start_with(Hub::builder().build().unwrap(), options).await;
        let member = server.connect("g").await;
        Api { server, member }
    }

    async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        raw_http(
            self.server.addr,
            &post_request(path, content_type, body.len()),
            body,
        )
        .await
    }

    /// The member received none of the rejected requests: a marker in its
    /// group comes next; the server is still ready and broadcast once.
    async fn assert_nothing_delivered(mut self) {
        self.server.hub.to("g").send("marker").unwrap();
        marker_is_next(
            &mut self.member,
            "marker",
            "a rejected request reached a member",
        )
        .await;
        assert_eq!(http::status(&self.server.http_url("/readyz")).await, 200);
        assert_eq!(self.server.hub.metrics().broadcasts.get(), 1);
    }

    /// `POST body` to the group's messages as `content_type`: `status`
    /// and `code`, and nothing delivered.
    async fn assert_rejected(
        self,
        what: &str,
        content_type: Option<&str>,
        body: &[u8],
        status: u16,
        code: &str,
    ) {
        let answer = self
            .post("/api/groups/g/messages", content_type, body)
            .await;
        assert_json_error(what, &answer, status, code);
        self.assert_nothing_delivered().await;
    }
}

#[tokio::test]
async fn an_empty_body_gets_400() {
    Api::start()
        .await
        .assert_rejected("empty body", Some("text/plain"), b"", 400, "empty_body")
        .await;
}

#[tokio::test]
async fn invalid_json_gets_400() {
    Api::start()
        .await
        .assert_rejected(
            "invalid JSON",
            Some("application/json"),
            b"{no",
            400,
            "invalid_json",
        )
        .await;
}

#[tokio::test]
async fn a_text_body_that_is_not_utf8_gets_400() {
    Api::start()
        .await
        .assert_rejected(
            "bad UTF-8",
            Some("text/plain"),
            &[b'a', 0xff],
            400,
            "invalid_utf8",
        )
        .await;
}

#[tokio::test]
async fn an_unsupported_content_type_gets_415() {
    Api::start()
        .await
        .assert_rejected(
            "unsupported type",
            Some("image/png"),
            b"x",
            415,
            "unsupported_media_type",
        )
        .await;
}

#[tokio::test]
async fn a_body_without_a_content_type_gets_415() {
    Api::start()
        .await
        .assert_rejected("no content type", None, b"x", 415, "unsupported_media_type")
        .await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    Api::start()
        .await
        .assert_rejected(
            "too large",
            Some("text/plain"),
            &[b'x'; 2048],
            413,
            "body_too_large",
        )
        .await;
}

#[tokio::test]
async fn a_publish_to_a_bad_group_name_gets_400() {
    let api = Api::start().await;
    for path in [
        "/api/groups/a%07b/messages",
        "/api/groups//messages",
        "/api/groups/../messages",
        "/api/groups/a//b/messages",
    ] {
        let answer = api.post(path, Some("text/plain"), b"x").await;
        assert_json_error(path, &answer, 400, "bad_group_name");
    }
    api.assert_nothing_delivered().await;
}

#[tokio::test]
async fn a_post_without_messages_in_the_path_gets_405() {
    let api = Api::start().await;
    let nowhere = api.post("/api/groups/g", Some("text/plain"), b"x").await;
    assert_json_error(
        "POST without /messages",
        &nowhere,
        405,
        "method_not_allowed",
    );
    api.assert_nothing_delivered().await;
}

#[tokio::test]
async fn a_get_of_a_bad_group_name_gets_400() {
    let api = Api::start().await;
    for path in ["/api/groups/a//b", "/api/groups/a%00", "/api/groups/.."] {
        let head = format!("GET {path} HTTP/1.1\nHost: localhost\nConnection: close\n\n");
        let answer = raw_http(api.server.addr, &head, b"").await;
        assert_json_error(path, &answer, 400, "bad_group_name");
    }
    api.assert_nothing_delivered().await;
}

// ----- before the upgrade -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_an_upgrade_never_stops_the_binary() {
    let mut rng = rng("garbage_instead_of_an_upgrade");
    let node = NodeProcess::spawn(
        "bad-input-tcp",
        &["--log", "warn", "--header-read-timeout", "1s"],
    );
    node.wait_ready().await;
    let mut watcher = Client::connect(&node.ws_url("watch")).await;
    let addr = node.addr;

    // Random bytes, short and long, many connections at once.
    let sends: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let len = if i % 10 == 0 {
                rng.random_range(4096..65536)
            } else {
                rng.random_range(1..512)
            };
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            bytes
        })
        .collect();
    let tasks: Vec<_> = sends
        .into_iter()
        .map(|bytes| tokio::spawn(async move { raw_exchange(addr, &bytes).await }))
        .collect();
    for task in tasks {
        assert_refused("random bytes", &task.await.unwrap());
    }
    still_serving(&node, &mut watcher, 1).await;

    // Half a request, then the client goes away.
    let answer = raw_exchange(addr, b"GET /ws/watch HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr").await;
    assert_refused("half a request", &answer);
    // Half requests left hanging while others are served.
    let mut hanging = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /ws/watch HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgr")
            .await
            .unwrap();
        hanging.push(stream);
    }
    still_serving(&node, &mut watcher, 2).await;
    // ... and the node closes each of them once its header-read timeout
    // (1 s here) has passed, answering 408 or just closing.
    for mut stream in hanging {
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
            .await
            .expect("a half-sent request is closed after the header-read timeout")
            .ok();
        if !answer.is_empty() {
            assert_eq!(status_of(&answer), Some(408), "{answer:?}");
        }
    }

    // A header of 1 MiB.
    let mut huge = b"GET /ws/watch HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let answer = raw_exchange(addr, &huge).await;
    assert_refused("a 1 MiB header", &answer);
    // Ten thousand small headers.
    let mut many = b"GET /ws/watch HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_refused("10,000 headers", &raw_exchange(addr, &many).await);
    // A request line of garbage, a bad version, a bad WebSocket key.
    for request in [
        &b"\x00\x01\x02 / HTTP/1.1\r\n\r\n"[..],
        b"GET /ws/watch HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /ws/watch HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 99\r\nSec-WebSocket-Key: !!\r\n\r\n",
        b"GET /ws/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/groups/watch/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /api/groups/watch/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        assert_refused(
            &String::from_utf8_lossy(&request[..request.len().min(40)]),
            &raw_exchange(addr, request).await,
        );
    }
    still_serving(&node, &mut watcher, 3).await;

    // A real upgrade, then bytes that are not WebSocket frames. (In their
    // own group: random bytes can happen to form a valid frame, which
    // would be forwarded to the group.)
    for _ in 0..10 {
        let (mut client, _) = tokio_tungstenite::connect_async(node.ws_url("garbage"))
            .await
            .expect("upgrade");
        let stream = match client.get_mut() {
            tokio_tungstenite::MaybeTlsStream::Plain(stream) => stream,
            _ => unreachable!("plain TCP"),
        };
        let mut bytes = vec![0u8; rng.random_range(1..2048)];
        rng.fill_bytes(&mut bytes);
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        // The server ends the connection (a close frame or a plain close).
        let mut sink = Vec::new();
        let ended = tokio::time::timeout(WAIT, stream.read_to_end(&mut sink)).await;
        assert!(ended.is_ok(), "the server kept a garbage WebSocket open");
    }
    still_serving(&node, &mut watcher, 4).await;

    // None of it ever became a session: only the watcher and newcomers.
    wait_until_async("only the watcher is left", || async {
        http::get_json(&node.url("/debug/state")).await.1["sessions"] == 1
    })
    .await;
}

// ----- garbage on the bus ----------------------------------------------------------

/// One clustered node `node_id` on the shared Redis, with a member of
/// `group` and a member of `other`.
async fn node_with_members(
    node_id: &str,
    group: &str,
    other: &str,
) -> (TestServer, Client, Client) {
    let redis = TestRedis::shared();
    let hub = Hub::builder()
        .node_id(node_id)
        .config(Config {
            // The test publishes faster than a client reads.
            queue_len: 8192,
            ..Config::default()
        })
        .backend(fast_options(redis.url()))
        .build()
        .unwrap();
    let node = TestServer::start(hub).await;
    let member = node.connect(group).await;
    let bystander = node.connect(other).await;
    wait_subscribed(&[&node], &format!("group:{group}")).await;
    wait_subscribed(&[&node], &format!("group:{other}")).await;
    (node, member, bystander)
}

/// Envelopes that cannot be decoded (bad MessagePack, an unknown version,
/// truncated, the wrong shape) are counted and never reach a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_envelopes_are_counted_and_never_reach_clients() {
    let redis = TestRedis::shared();
    let (node, mut client, _bystander) =
        node_with_members("node-envelopes", "envelopes", "envelopes-other").await;

    let mut outside = redis.client().await;
    let garbage: [&[u8]; 4] = [
        &[0xC1, b'G', b'C', 1, 0xff, 0x00, 0x13], // version 1, not MessagePack
        &[0xC1, b'G', b'C', 9, 0x80],             // a version nobody speaks
        &[0xC1, b'G'],                            // truncated
        &[0xC1, b'G', b'C', 1, 0x91, 0x01],       // MessagePack, wrong shape
    ];
    for bytes in garbage {
        publish(&mut outside, "group:envelopes", bytes).await;
    }
    publish(&mut outside, "group:envelopes", "still alive").await;
    marker_is_next(&mut client, "still alive", "the member").await;
    assert_eq!(node.hub.metrics().bus_invalid.get(), 4);
    // And the node still works both ways.
    node.hub.to("envelopes").send("local").unwrap();
    assert_eq!(client.recv_text().await, "local");
    assert!(node.hub.is_ready());
}

/// What a frame on the wire is: text or binary, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wire {
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

/// What the node must do with `bytes` published on `group:corpus`, worked out
/// from the wire format (not from the node's code): `Some(frame)` to
/// deliver, `None` to count as invalid and drop. `Err` for inputs whose
/// outcome depends on session state (filters), which the corpus skips.
fn expected(bytes: &[u8]) -> Result<Option<Wire>, ()> {
    if bytes.first() != Some(&0xC1) {
        return Ok(Some(match std::str::from_utf8(bytes) {
            Ok(_) => Wire::Text(bytes.to_vec()),
            Err(_) => Wire::Binary(bytes.to_vec()),
        }));
    }
    // An envelope (or a broken one): the decoder is the reference for
    // MessagePack, the rules on top of it are checked here.
    match envelope::decode(Bytes::copy_from_slice(bytes)) {
        Err(_) => Ok(None),
        Ok(Decoded::Raw(_)) => panic!("0xC1 bytes decoded as raw"),
        Ok(Decoded::Envelope(env)) => {
            if env.filter.is_some() || env.except.is_some() || env.origin == "node-corpus" {
                return Err(());
            }
            Ok(match env.kind {
                FrameKind::Binary => Some(Wire::Binary(env.payload)),
                FrameKind::Text => std::str::from_utf8(&env.payload)
                    .ok()
                    .map(|_| Wire::Text(env.payload.clone())),
            })
        }
    }
}

fn valid_envelope(rng: &mut StdRng) -> Vec<u8> {
    let text = rng.random_bool(0.5);
    let payload: Vec<u8> = if text {
        let len = rng.random_range(0..64);
        (0..len)
            .map(|_| rng.random_range(b' '..=b'~'))
            .collect::<Vec<u8>>()
    } else {
        let mut p = vec![0u8; rng.random_range(0..64)];
        rng.fill_bytes(&mut p);
        p
    };
    Envelope {
        origin: "elsewhere".into(),
        id: rng.random(),
        kind: if text {
            FrameKind::Text
        } else {
            FrameKind::Binary
        },
        except: None,
        filter: None,
        sessions: rng
            .random_bool(0.2)
            .then(|| vec![SessionId::from("nobody")]),
        payload,
        presence: false,
        presence_seq: None,
    }
    .encode()
    .unwrap()
    .to_vec()
}

/// Random bytes, magic-prefixed random bytes, and valid envelopes with
/// bytes flipped, cut off or appended.
fn corpus(rng: &mut StdRng, n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff],
        vec![0x80, 0x81, 0x82],
        vec![0xC3],       // a UTF-8 lead byte without its continuation
        vec![0x00, 0xC0], // NUL and an overlong lead byte
        b"plain text".to_vec(),
        "ünïcödé ✓".as_bytes().to_vec(),
        vec![0xC1],
        vec![0xC1, b'G', b'C'],
        vec![0xC1, b'G', b'C', 1],
        vec![0xC1, b'G', b'C', 0],
        vec![0xC1, b'G', b'C', 255, 0x80],
    ];
    while out.len() < n {
        let bytes = match rng.random_range(0..5) {
            0 => {
                let mut b = vec![0u8; rng.random_range(0..256)];
                rng.fill_bytes(&mut b);
                b
            }
            1 => {
                let mut b = vec![0xC1, b'G', b'C', 1];
                let mut tail = vec![0u8; rng.random_range(0..128)];
                rng.fill_bytes(&mut tail);
                b.extend(tail);
                b
            }
            2 => {
                let mut b = valid_envelope(rng);
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(4..b.len());
                    b[at] ^= 1 << rng.random_range(0..8);
                }
                b
            }
            3 => {
                let mut b = valid_envelope(rng);
                if rng.random_bool(0.5) {
                    let keep = rng.random_range(0..b.len());
                    b.truncate(keep);
                } else {
                    let mut tail = vec![0u8; rng.random_range(1..32)];
                    rng.fill_bytes(&mut tail);
                    b.extend(tail);
                }
                b
            }
            _ => valid_envelope(rng),
        };
        out.push(bytes);
    }
    // One large random payload.
    let mut big = vec![0u8; 1024 * 1024];
    rng.fill_bytes(&mut big);
    big[0] = 0xff; // raw, not an envelope
    out.push(big);
    out
}

fn frame_of(message: Ws) -> Wire {
    match message {
        Ws::Text(t) => Wire::Text(t.as_bytes().to_vec()),
        Ws::Binary(b) => Wire::Binary(b.to_vec()),
        other => panic!("expected a data frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_corrupt_envelopes_on_a_group_channel() {
    let mut rng = rng("random_bytes_and_corrupt_envelopes");
    let redis = TestRedis::shared();
    let (node, mut member, mut bystander) =
        node_with_members("node-corpus", "corpus", "corpus-other").await;

    let mut deliveries = Vec::new();
    let mut invalid = 0u64;
    let mut published = 0u64;
    let mut outside = redis.client().await;
    for bytes in corpus(&mut rng, 1500) {
        match expected(&bytes) {
            Err(()) => continue,
            Ok(Some(frame)) => deliveries.push(frame),
            Ok(None) => invalid += 1,
        }
        assert_eq!(publish(&mut outside, "group:corpus", &bytes).await, 1);
        published += 1;
    }
    publish(&mut outside, "group:corpus", "end of corpus").await;
    eprintln!(
        "published {published}: {} to deliver, {invalid} invalid",
        deliveries.len()
    );
    assert!(invalid > 100 && deliveries.len() > 100, "a mixed corpus");

    // Everything deliverable arrives, in order, exactly as published.
    for (i, want) in deliveries.iter().enumerate() {
        let got = frame_of(member.next_data().await);
        assert_eq!(&got, want, "delivery {i}");
    }
    assert_eq!(member.recv_text().await, "end of corpus");
    assert_eq!(node.hub.metrics().bus_invalid.get(), invalid);
    // Another group's member got none of it: its own marker, then quiet.
    publish(&mut outside, "group:corpus-other", "marker").await;
    quiet_after_marker(&mut bystander, "marker", "another group's member").await;

    // The node is fine: ready, both ways.
    assert!(node.hub.is_ready());
    node.hub.to("corpus").send("local").unwrap();
    assert_eq!(member.recv_text().await, "local");
    publish(&mut outside, "group:corpus", "remote").await;
    assert_eq!(member.recv_text().await, "remote");
}

/// Bytes that are not UTF-8 published from outside are delivered as binary
/// frames, byte for byte, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_non_utf8_bytes_arrive_as_binary_frames() {
    let redis = TestRedis::shared();
    let (node, mut member, _bystander) = node_with_members("node-raw", "raw", "raw-other").await;
    let samples: [&[u8]; 5] = [
        &[0xff, 0xfe, 0xfd],
        &[0x00, 0x9f, 0x92, 0x96],
        &[b'h', 0xe9, b'l', b'l', b'o'], // Latin-1, not UTF-8
        &[0xed, 0xa0, 0x80],             // a UTF-16 surrogate in UTF-8 form
        &[0xf8, 0x88, 0x80, 0x80, 0x80], // a five-byte sequence
    ];
    for sample in samples {
        redis.publish("group:raw", sample).await;
    }
    for sample in samples {
        match member.next_data().await {
            Ws::Binary(b) => assert_eq!(&b[..], sample),
            other => panic!("expected binary {sample:?}, got {other:?}"),
        }
    }
    assert_eq!(node.hub.metrics().bus_invalid.get(), 0);
}
