//! Bad input never crashes a node nor reaches other clients:
//!
//! * garbage on the TCP port instead of, or before, an HTTP upgrade —
//!   random bytes, half a request left hanging, a huge header, an upgrade
//!   followed by bytes that are not WebSocket frames — against the real
//!   binary, which keeps serving its clients throughout;
//! * a fragmented message that never ends: continuation frames past the
//!   maximum message size close the sender with 1009;
//! * random bytes and corrupt envelopes published on `group:*` channels:
//!   each one is either delivered exactly as the wire format says (raw
//!   payloads as text when UTF-8, as binary otherwise) or counted in
//!   `bus_invalid` and dropped, and the node keeps delivering.
//!
//! The random inputs come from a seeded generator; the seed is printed, so
//! a failure can be replayed (`BAD_INPUT_SEED=<seed>`).

mod common;

use bytes::Bytes;
use common::node::NodeProcess;
use common::redis::{TestRedis, fast_options, publish};
use common::{Client, TestServer, WAIT, wait_until, wait_until_async};
use futures_util::SinkExt;
use groupcast::envelope::{self, Decoded, Envelope, FrameKind};
use groupcast::{Config, Hub, SessionId};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

// ----- harness -----------------------------------------------------------------

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
    let http = reqwest::Client::new();
    let text = format!("still serving {round}");
    let answer = http
        .post(node.url("/api/groups/watch/messages"))
        .header("content-type", "text/plain")
        .body(text.clone())
        .send()
        .await
        .expect("the API answers");
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(old.recv_text().await, text);
    let mut newcomer = Client::connect(&node.ws_url("watch")).await;
    newcomer.ws.close(None).await.unwrap();
    let _ = newcomer.expect_close().await;
    let health = http.get(node.url("/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
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
        let state: serde_json::Value = reqwest::get(node.url("/debug/state"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state["sessions"] == 1
    })
    .await;
}

// ----- endless fragmented messages ----------------------------------------------------

/// A message in fragments that never ends is closed with 1009 once it
/// passes the maximum message size, however small each fragment is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_fragmented_message_is_closed_with_1009() {
    const LIMIT: usize = 4096;
    let hub = Hub::builder()
        .config(Config {
            max_message_size: LIMIT,
            ..Config::default()
        })
        .on_text(|hub, session, text| {
            let _ = hub.broadcast_group(session.group(), text.to_owned());
        })
        .on_binary(|hub, session, data| {
            let _ = hub.broadcast_group(session.group(), groupcast::Message::binary(data.clone()));
        })
        .build()
        .unwrap();
    let server = TestServer::start(hub).await;
    let mut listener = server.connect("frag").await;

    for (kind, chunk) in [(Data::Text, 1024), (Data::Binary, 64), (Data::Text, 1)] {
        let mut sender = server.connect("frag").await;
        let first = Frame::message(vec![b'a'; chunk], OpCode::Data(kind), false);
        sender.ws.send(Ws::Frame(first)).await.unwrap();
        // Continuation frames, none of them final: far more than the limit
        // in total, and bounded, in case the server never said stop.
        let frames = (4 * LIMIT / chunk).min(20_000);
        for _ in 0..frames {
            let next = Frame::message(vec![b'a'; chunk], OpCode::Data(Data::Continue), false);
            if sender.ws.feed(Ws::Frame(next)).await.is_err() {
                break;
            }
        }
        let _ = sender.ws.flush().await;
        let reason = sender.expect_close_code(1009).await;
        assert!(reason.contains(&LIMIT.to_string()), "{reason}");
    }
    wait_until("the senders are gone", || server.hub.session_count() == 1).await;
    let metrics = server.hub.metrics().render();
    assert!(
        metrics.contains("groupcast_limit_rejections_total{limit=\"message_size\"} 3"),
        "{metrics}"
    );
    // Nothing of it reached the listener; the group still works.
    let mut sender = server.connect("frag").await;
    sender.send_text("after").await;
    assert_eq!(listener.recv_text().await, "after");
}

// ----- garbage on the bus ----------------------------------------------------------

/// One clustered node with a member of `g` and a member of `other`.
async fn node_with_members(redis: &TestRedis) -> (TestServer, Client, Client) {
    let hub = Hub::builder()
        .node_id("node-bad")
        .config(Config {
            // The test publishes faster than a client reads.
            queue_len: 8192,
            ..Config::default()
        })
        .redis(fast_options(redis.url()))
        .build()
        .unwrap();
    let node = TestServer::start(hub).await;
    let member = node.connect("g").await;
    let bystander = node.connect("other").await;
    wait_until("subscribed to both groups", || {
        let subs = node.hub.status().subscriptions;
        subs.iter().any(|s| s == "group:g") && subs.iter().any(|s| s == "group:other")
    })
    .await;
    (node, member, bystander)
}

/// What a frame on the wire is: text or binary, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wire {
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

/// What the node must do with `bytes` published on `group:g`, worked out
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
            if env.filter.is_some() || env.except.is_some() || env.origin == "node-bad" {
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
    let redis = TestRedis::start().await;
    let (node, mut member, mut bystander) = node_with_members(&redis).await;

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
        assert_eq!(publish(&mut outside, "group:g", &bytes).await, 1);
        published += 1;
    }
    publish(&mut outside, "group:g", "end of corpus").await;
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
    // Another group's member got none of it.
    publish(&mut outside, "group:other", "marker").await;
    assert_eq!(bystander.recv_text().await, "marker");

    // The node is fine: ready, both ways.
    assert!(node.hub.is_ready());
    node.hub.broadcast_group("g", "local").unwrap();
    assert_eq!(member.recv_text().await, "local");
    publish(&mut outside, "group:g", "remote").await;
    assert_eq!(member.recv_text().await, "remote");
}

/// Bytes that are not UTF-8 published from outside are delivered as binary
/// frames, byte for byte, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_non_utf8_bytes_arrive_as_binary_frames() {
    let redis = TestRedis::start().await;
    let (node, mut member, _bystander) = node_with_members(&redis).await;
    let samples: [&[u8]; 5] = [
        &[0xff, 0xfe, 0xfd],
        &[0x00, 0x9f, 0x92, 0x96],
        &[b'h', 0xe9, b'l', b'l', b'o'], // Latin-1, not UTF-8
        &[0xed, 0xa0, 0x80],             // a UTF-16 surrogate in UTF-8 form
        &[0xf8, 0x88, 0x80, 0x80, 0x80], // a five-byte sequence
    ];
    for sample in samples {
        redis.publish("group:g", sample).await;
    }
    for sample in samples {
        match member.next_data().await {
            Ws::Binary(b) => assert_eq!(&b[..], sample),
            other => panic!("expected binary {sample:?}, got {other:?}"),
        }
    }
    assert_eq!(node.hub.metrics().bus_invalid.get(), 0);
}
