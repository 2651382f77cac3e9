//! Close codes for what a client sends: each violation closes the sender
//! with its code and a reason, reaches no one else, and leaves the group
//! working.
//!
//! * 1009: a message over `max_message_size` (text, binary, or fragments
//!   that never end), counted as a limit;
//! * 1007: a text frame that is not UTF-8;
//! * 1008: a client over its inbound rate (messages or pings).
//!
//! Other close codes live with their behaviour: 1013 in `slow_clients.rs`,
//! 1001 in `drain.rs`, 1008 for a publish without permission and
//! 4001/4003 (token expiry, bad refresh) in `auth.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::silence::marker_is_next;
use crate::common::{TestServer, forwarding, wait_until};
use futures_util::SinkExt;
use groupcast::{Config, Hub, SessionError, close_code};
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// A server whose clients' messages go to their whole group (chat).
async fn chat_server(config: Config) -> TestServer {
    TestServer::start(forwarding(Hub::builder().config(config)).build().unwrap()).await
}

// ----- 1009: too big ------------------------------------------------------------------

/// Messages over `max_message_size` close the connection with 1009; a
/// message of exactly the limit goes through.
#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_one_at_the_limit_passes() {
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
    server.hub.to("limits").send("marker").unwrap();
    marker_is_next(&mut listener, "marker", "the listener").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_counted_as_a_message_size_rejection() {
    let server = chat_server(Config {
        max_message_size: 1024,
        ..Config::default()
    })
    .await;
    let mut big = server.connect("size").await;
    big.send_text(&"x".repeat(2048)).await;
    big.expect_close_code(1009).await;
    assert_eq!(server.limit_rejections("message_size").await, 1);
}

/// A message in fragments that never ends is closed with 1009 once it
/// passes the maximum message size, however small each fragment is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_fragmented_message_is_closed_with_1009() {
    const LIMIT: usize = 4096;
    let server = chat_server(Config {
        max_message_size: LIMIT,
        ..Config::default()
    })
    .await;
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
    marker_is_next(&mut listener, "after", "the listener").await;
}

// ----- 1007: not UTF-8 -------------------------------------------------------------

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

// ----- 1008: over the inbound rate ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_closed_with_1008_and_its_group_keeps_working() {
    let server = chat_server(Config {
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
    assert_eq!(server.limit_rejections("inbound_rate").await, 1);

    // The others stay, and the group works: the listener saw at most the
    // flooder's burst, then the marker.
    server.hub.to("chat").send("marker").unwrap();
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
async fn a_ping_flood_closes_with_1008_too() {
    let server = chat_server(Config {
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
    assert_eq!(server.limit_rejections("inbound_rate").await, 1);
}
