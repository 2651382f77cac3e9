//! permessage-deflate (`--compression`): negotiated per client, a broadcast
//! compressed once for every member that negotiated it, plain frames for
//! the others, client frames inflated within the size limit.
//!
//! The compressing clients here are raw TCP clients reading with the
//! library's own `wire::FrameReader` in the client role (tungstenite, the
//! usual test client, cannot read compressed frames); the plain members are
//! tungstenite clients. Chromium's side is in `tests/browser/browser.rs`.

use std::time::Duration;

use crate::common::frames::masked_client_frame;
use crate::common::{TestServer, WAIT, wait_until};
use groupcast::wire::{FrameReader, Incoming, Limits, Role, deflate};
use groupcast::{Config, GroupName, Hub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A client that speaks permessage-deflate, over a raw socket.
struct DeflateClient {
    stream: TcpStream,
    reader: FrameReader,
    /// The extensions the server's 101 answer named.
    extensions: Option<String>,
    /// Every byte received after the handshake, as it came.
    raw: Vec<u8>,
}

impl DeflateClient {
    /// Upgrades with `offer` as `Sec-WebSocket-Extensions` (none if empty).
    async fn connect(server: &TestServer, group: &str, offer: &str) -> DeflateClient {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let extensions = if offer.is_empty() {
            String::new()
        } else {
            format!("Sec-WebSocket-Extensions: {offer}\r\n")
        };
        let request = format!(
            "GET /ws/{group} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extensions}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // The answer's head, byte by byte: nothing of the frames after it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = timeout(WAIT, stream.read_u8())
                .await
                .expect("a 101")
                .unwrap();
            head.push(byte);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_string())
        });
        let limits = Limits {
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
        };
        DeflateClient {
            stream,
            reader: FrameReader::new(Role::Client, limits).with_deflate(extensions.is_some()),
            extensions,
            raw: Vec::new(),
        }
    }

    /// The next text, binary or close frame (pings are skipped).
    async fn next(&mut self) -> Incoming {
        timeout(WAIT, async {
            loop {
                match self.reader.read().expect("valid frames") {
                    Some(Incoming::Ping(_) | Incoming::Pong(_)) => continue,
                    Some(incoming) => return incoming,
                    None => {}
                }
                let mut buffer = [0u8; 4096];
                let read = self.stream.read(&mut buffer).await.expect("read");
                assert!(read > 0, "the server closed the socket");
                self.raw.extend_from_slice(&buffer[..read]);
                self.reader.feed(&buffer[..read]);
            }
        })
        .await
        .expect("a frame within the wait")
    }

    async fn next_text(&mut self) -> String {
        match self.next().await {
            Incoming::Text(text) => text.to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Sends one masked frame with `first` as its first byte.
    async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let frame = masked_client_frame(first, [0x12, 0x34, 0x56, 0x78], payload);
        self.stream.write_all(&frame).await.unwrap();
    }
}

fn compressing_hub() -> Hub {
    Hub::builder()
        .config(Config {
            compression: true,
            ..Config::default()
        })
        .build()
        .unwrap()
}

/// A line like the ones a task log carries (about 200 bytes).
fn log_line(n: usize) -> String {
    format!(
        "2026-12-01T10:{:02}:{:02}.{:03}Z INFO task/42 build: Compiling groupcast v0.2.0 \
         (/work/main) step {n} of 400, 3 warnings emitted; target/release/deps/groupcast-{n:08x}.rlib",
        n / 60 % 60,
        n % 60,
        n % 1000
    )
}

async fn members_of(server: &TestServer, group: &str, count: usize) {
    let name = GroupName::new(group).unwrap();
    wait_until("every member joined", || {
        server.hub.member_count(&name) == count
    })
    .await;
}

#[tokio::test]
async fn a_broadcast_is_compressed_once_and_the_same_bytes_reach_every_compressing_member() {
    let server = TestServer::start(compressing_hub()).await;
    let offer = "permessage-deflate; client_max_window_bits";
    let mut first = DeflateClient::connect(&server, "logs", offer).await;
    let mut second = DeflateClient::connect(&server, "logs", offer).await;
    let mut plain = server.connect("logs").await;
    members_of(&server, "logs", 3).await;
    assert_eq!(first.extensions.as_deref(), Some(deflate::RESPONSE));

    let lines: Vec<String> = (0..20).map(log_line).collect();
    for line in &lines {
        server.hub.to("logs").send(line.as_str()).unwrap();
    }
    for line in &lines {
        assert_eq!(&first.next_text().await, line);
        assert_eq!(&second.next_text().await, line);
        assert_eq!(&plain.recv_text().await, line);
    }
    // Compressed once each, and the same frames, byte for byte, reached
    // both compressing members.
    assert_eq!(server.hub.metrics().messages_compressed.get(), 20);
    assert_eq!(first.raw, second.raw);
    assert_eq!(first.raw[0], 0xC1, "FIN + RSV1 (compressed) + text");
    let text_bytes: usize = lines.iter().map(String::len).sum();
    // Lines this short, each compressed on its own (no context taken
    // over), shrink by about a sixth.
    assert!(
        first.raw.len() < text_bytes,
        "{} bytes on the wire for {text_bytes} bytes of text",
        first.raw.len()
    );
}

#[tokio::test]
async fn messages_below_the_threshold_go_uncompressed() {
    let server = TestServer::start(compressing_hub()).await;
    let mut client = DeflateClient::connect(&server, "short", "permessage-deflate").await;
    members_of(&server, "short", 1).await;
    server.hub.to("short").send("ok").unwrap();
    assert_eq!(client.next_text().await, "ok");
    assert_eq!(client.raw, b"\x81\x02ok");
}

#[tokio::test]
async fn without_the_setting_no_client_gets_compression() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    let mut client = DeflateClient::connect(&server, "plain", "permessage-deflate").await;
    assert_eq!(client.extensions, None);
    members_of(&server, "plain", 1).await;
    let line = log_line(1);
    server.hub.to("plain").send(line.as_str()).unwrap();
    assert_eq!(client.next_text().await, line);
    assert_eq!(client.raw[0], 0x81);
}

#[tokio::test]
async fn an_offer_the_server_cannot_honour_is_declined_not_failed() {
    let server = TestServer::start(compressing_hub()).await;
    let mut client = DeflateClient::connect(
        &server,
        "narrow",
        "permessage-deflate; server_max_window_bits=9",
    )
    .await;
    assert_eq!(client.extensions, None);
    members_of(&server, "narrow", 1).await;
    server.hub.to("narrow").send(log_line(2).as_str()).unwrap();
    assert_eq!(client.next_text().await, log_line(2));
}

#[tokio::test]
async fn what_a_client_sends_compressed_is_inflated_for_the_group() {
    let server = TestServer::start(compressing_hub()).await;
    let mut sender = DeflateClient::connect(&server, "chat", "permessage-deflate").await;
    let mut plain = server.connect("chat").await;
    members_of(&server, "chat", 2).await;
    let line = log_line(7);
    let compressed = deflate::compress(line.as_bytes()).unwrap();
    sender.send_frame(0xC1, &compressed).await;
    assert_eq!(plain.recv_text().await, line);
    assert_eq!(
        sender.next_text().await,
        line,
        "forwarded to the sender too"
    );
}

#[tokio::test]
async fn a_decompression_bomb_is_closed_with_1009_and_counted() {
    let server = TestServer::start(compressing_hub()).await;
    let mut sender = DeflateClient::connect(&server, "bomb", "permessage-deflate").await;
    members_of(&server, "bomb", 1).await;
    // 32 MiB of zeros in about 32 KiB (deflate's best ratio is about
    // 1:1000); the limit is 64 KiB inflated.
    let bomb = {
        use flate2::{Compress, Compression, FlushCompress};
        let mut compressor = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(1 << 20);
        compressor
            .compress_vec(&vec![0u8; 32 << 20], &mut out, FlushCompress::Sync)
            .unwrap();
        out
    };
    assert!(bomb.len() < Config::default().max_message_size);
    sender.send_frame(0xC2, &bomb).await;
    match sender.next().await {
        Incoming::Close(Some(close)) => assert_eq!(close.code, 1009),
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(server.hub.metrics().inflate_too_big.get(), 1);
    timeout(Duration::from_secs(5), async {
        while server.hub.member_count(&GroupName::new("bomb").unwrap()) > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the session left");
}

#[tokio::test]
async fn a_compressed_message_that_does_not_inflate_is_closed_with_1007() {
    let server = TestServer::start(compressing_hub()).await;
    let mut sender = DeflateClient::connect(&server, "corrupt", "permessage-deflate").await;
    members_of(&server, "corrupt", 1).await;
    sender.send_frame(0xC1, &[0xff; 32]).await;
    match sender.next().await {
        Incoming::Close(Some(close)) => assert_eq!(close.code, 1007),
        other => panic!("expected a close, got {other:?}"),
    }
}
