//! Slow and unresponsive clients never hold up the others:
//!
//! * a client that never reads is closed with 1013 once its queue is full
//!   (the `close` policy), while the others receive every message;
//! * with `drop-oldest` it stays connected, misses what was dropped (each
//!   drop counted) and gets the newest messages in order;
//! * a bounded socket send buffer (`--socket-send-buffer`) lets the queue
//!   policy catch a stalled client early;
//! * a client that stops answering pings is closed after the pong wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{Client, TestServer, WAIT, announcing_ids, connect_peer, http, wait_until};
use futures_util::StreamExt;
use groupcast::server::ServerOptions;
use groupcast::{Config, Hub, Message, QueueFullPolicy, close_code};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message as Ws;

// ----- harness -----------------------------------------------------------------

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

/// The slow-consumer setup: a small queue, small reads, 64 KiB
/// frames. `write_timeout` is long so that the blocked writer is still
/// waiting when the test starts to read.
fn slow_consumer_config(policy: QueueFullPolicy) -> Config {
    Config {
        queue_len: 8,
        queue_full: policy,
        read_buffer_size: 4096,
        write_timeout: Duration::from_secs(30),
        ..Config::default()
    }
}

const FRAME: usize = 64 * 1024;

/// Enough 64 KiB frames to fill any loopback buffers (about 25 MB).
const MAX_FRAMES: u64 = 400;

// ----- queue full ------------------------------------------------------------

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
            .to("firehose")
            .send(numbered(published, FRAME))
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
            .to("firehose")
            .send(numbered(published, FRAME))
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
        let frame = slow.next_frame().await;
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

    let metrics = http::get_text(&server.http_url("/metrics")).await;
    assert_eq!(
        http::metric(&metrics, "groupcast_queue_full_closes_total"),
        1.0
    );
    assert_eq!(http::metric(&metrics, "groupcast_queue_drops_total"), 0.0);
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
            .to("firehose")
            .send(numbered(*published, FRAME))
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
            .to("ticks")
            .send(numbered(published, 64))
            .unwrap();
        assert_eq!(recv_seq(&mut fast).await, published);
        published += 1;
    }
    wait_until("only the reading client is left", || {
        server.hub.session_count() == 1
    })
    .await;
}

// ----- keep-alive ------------------------------------------------------------

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
