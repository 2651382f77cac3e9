//! Server-Sent Events (`GET /sse/<group>`), read by a plain HTTP client
//! over loopback: events with their history positions, resuming with
//! `Last-Event-ID` (header and query parameter), a `reset` when that cannot
//! be done, keep-alives, the slow-consumer policy, and the same refusals
//! as a WebSocket.

use std::time::Duration;

use groupcast::history::HistoryPolicy;
use groupcast::{Config, Hub, QueueFullPolicy};

use crate::common::http::post_text;
use crate::common::sse::{Event, EventReader};
use crate::common::{TestServer, wait_until};

/// A node whose `log/*` groups keep 100 messages.
async fn history_node(config: Config) -> TestServer {
    let hub = Hub::new(Config {
        history: HistoryPolicy::parse(["log/*=100:1h"]).unwrap(),
        ..config
    })
    .unwrap();
    TestServer::start(hub).await
}

/// Publishes `text` to `group` through the HTTP API.
async fn publish(server: &TestServer, group: &str, text: &str) {
    let (status, body) = post_text(
        &server.http_url(&format!("/api/groups/{group}/messages")),
        text,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Opens `/sse/<group>` (with `query` and `headers`) and waits for its
/// welcome.
async fn open(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> EventReader {
    let mut reader = EventReader::open(&server.http_url(&format!("/sse/{path}")), headers).await;
    let welcome = reader.next().await.expect("a welcome");
    assert_eq!(welcome.kind, "welcome", "{welcome:?}");
    reader
}

fn datas(events: &[Event]) -> Vec<&str> {
    events.iter().map(|event| event.data.as_str()).collect()
}

async fn messages(reader: &mut EventReader, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..n {
        events.push(reader.next_message().await);
    }
    events
}

#[tokio::test]
async fn events_carry_positions_and_a_reconnect_with_last_event_id_resumes_exactly() {
    let server = history_node(Config::default()).await;
    let mut reader = open(&server, "log/1", &[]).await;
    assert_eq!(reader.retry, Some(1000), "retry comes first");
    for n in 1..=5 {
        publish(&server, "log/1", &format!("line {n}")).await;
    }
    let first = messages(&mut reader, 5).await;
    assert_eq!(
        datas(&first),
        ["line 1", "line 2", "line 3", "line 4", "line 5"]
    );
    let epoch = first[0]
        .id
        .as_deref()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let ids: Vec<_> = first.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        (1..=5).map(|n| format!("{epoch}:{n}")).collect::<Vec<_>>()
    );

    // The connection is cut after the third; five more are published.
    drop(reader);
    wait_until("the session left", || server.hub.session_count() == 0).await;
    for n in 6..=10 {
        publish(&server, "log/1", &format!("line {n}")).await;
    }
    let mut resumed = open(&server, "log/1", &[("last-event-id", &ids[2])]).await;
    let rest = messages(&mut resumed, 7).await;
    assert_eq!(
        datas(&rest),
        (4..=10).map(|n| format!("line {n}")).collect::<Vec<_>>()
    );
    // Live after the backlog, nothing twice.
    publish(&server, "log/1", "line 11").await;
    assert_eq!(resumed.next_message().await.data, "line 11");
}

#[tokio::test]
async fn a_first_connection_takes_history_or_resumes_from_the_last_event_id_parameter() {
    let server = history_node(Config::default()).await;
    for n in 1..=4 {
        publish(&server, "log/2", &format!("line {n}")).await;
    }
    let mut last_two = open(&server, "log/2?history=2", &[]).await;
    let events = messages(&mut last_two, 2).await;
    assert_eq!(datas(&events), ["line 3", "line 4"]);

    let second = events[0].id.clone().unwrap().replace(":3", ":1");
    let query = format!("log/2?history=1&lastEventID={}", second.replace(':', "%3A"));
    let mut resumed = open(&server, &query, &[]).await;
    let events = messages(&mut resumed, 3).await;
    assert_eq!(
        datas(&events),
        ["line 2", "line 3", "line 4"],
        "the id wins over history="
    );
}

#[tokio::test]
async fn an_unusable_last_event_id_starts_with_a_reset_event_and_goes_on_live() {
    let server = history_node(Config::default()).await;
    publish(&server, "log/3", "before").await;

    // Not an id at all.
    let url = server.http_url("/sse/log/3");
    let mut reader = EventReader::open(&url, &[("last-event-id", "not an id")]).await;
    let reset = reader.next().await.unwrap();
    assert_eq!(reset.kind, "reset", "{reset:?}");
    assert!(reset.data.contains("Last-Event-ID"), "{reset:?}");
    assert_eq!(reader.next().await.unwrap().kind, "welcome");
    publish(&server, "log/3", "live").await;
    assert_eq!(reader.next_message().await.data, "live");

    // A well-formed id of another epoch: the welcome says so, then a reset.
    let mut other = EventReader::open(&url, &[("last-event-id", "someotherepoch:1")]).await;
    let welcome = other.next().await.unwrap();
    assert_eq!(welcome.kind, "welcome");
    assert!(welcome.data.contains(r#""recovered":false"#), "{welcome:?}");
    assert_eq!(other.next().await.unwrap().kind, "reset");
    publish(&server, "log/3", "after").await;
    assert_eq!(other.next_message().await.data, "after");
}

#[tokio::test]
async fn lines_arrive_as_lines_and_binary_as_base64() {
    let server = history_node(Config::default()).await;
    let mut reader = open(&server, "plain", &[]).await;
    server.hub.to("plain").send("one\ntwo\r\nthree").unwrap();
    server.hub.to("plain").send(vec![0u8, 255, 1]).unwrap();
    let text = reader.next_message().await;
    assert_eq!(
        (text.kind.as_str(), text.data.as_str(), text.id),
        ("message", "one\ntwo\nthree", None)
    );
    let binary = reader.next_message().await;
    assert_eq!(
        (binary.kind.as_str(), binary.data.as_str()),
        ("binary", "AP8B")
    );
}

#[tokio::test]
async fn keep_alives_arrive_every_ping_period() {
    let server = history_node(Config {
        ping_period: Duration::from_millis(100),
        pong_wait: Duration::from_millis(500),
        ..Config::default()
    })
    .await;
    let mut reader = open(&server, "quiet", &[]).await;
    reader.until_comments(3).await;
    server.hub.to("quiet").send("still here").unwrap();
    assert_eq!(reader.next_message().await.data, "still here");
}

/// A reader that never reads: its queue overflows and closes it (the
/// policy), its connection is aborted once nothing was taken for a write
/// timeout, and the other reader gets every message meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sse_reader_is_ended_by_the_queue_policy_without_delaying_others() {
    use tokio::io::AsyncWriteExt;
    let server = history_node(Config {
        queue_len: 8,
        queue_full: QueueFullPolicy::Close,
        write_timeout: Duration::from_millis(500),
        ..Config::default()
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    stalled
        .write_all(b"GET /sse/firehose HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    wait_until("the stalled reader joined", || {
        server.hub.session_count() == 1
    })
    .await;
    let mut fast = open(&server, "firehose", &[]).await;

    let payload = "x".repeat(64 * 1024);
    let mut published = 0;
    while server.hub.metrics().queue_full_closes.get() == 0 {
        assert!(published < 400, "the stalled reader's queue never filled");
        server
            .hub
            .to("firehose")
            .send(format!("{published} {payload}"))
            .unwrap();
        let event = fast.next_message().await;
        assert!(event.data.starts_with(&format!("{published} ")), "in order");
        published += 1;
    }
    wait_until("the stalled reader's connection was ended", || {
        server.hub.session_count() == 1
    })
    .await;
    assert!(server.hub.metrics().write_timeouts.get() >= 1);
    server.hub.to("firehose").send("after").unwrap();
    assert_eq!(fast.next_message().await.data, "after");
    drop(stalled);
}

#[tokio::test]
async fn refusals_are_the_json_errors_of_a_websocket() {
    let server = history_node(Config {
        max_connections: 1,
        ..Config::default()
    })
    .await;
    let bad = EventReader::request(&server.http_url("/sse/bad%20name"), &[]).await;
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"], "bad_group_name");
    let empty = EventReader::request(&server.http_url("/sse/"), &[]).await;
    assert_eq!(empty.status(), 400);
    let bad_query = EventReader::request(&server.http_url("/sse/g?history=lots"), &[]).await;
    assert_eq!(bad_query.status(), 400);

    let _first = open(&server, "g", &[]).await;
    let full = EventReader::request(&server.http_url("/sse/g"), &[]).await;
    assert_eq!(full.status(), 503);
    assert_eq!(full.headers()["retry-after"], "5");
    let body: serde_json::Value = full.json().await.unwrap();
    assert_eq!(body["error"], "node_full");
}

/// A disconnect on demand ends an SSE stream with a last `close` event
/// that says the same as the WebSocket code: 4009 may come back, 4509 (or
/// any code of 4500–4999) must not.
#[tokio::test]
async fn a_disconnect_ends_the_stream_with_a_close_event_saying_whether_to_reconnect() {
    let server = history_node(Config::default()).await;
    for (body, code, reconnect) in [
        ("", 4009, true),
        (r#"{"reconnect": false, "reason": "banned"}"#, 4509, false),
        (r#"{"code": 4600}"#, 4600, false),
    ] {
        let mut reader = open(&server, "news", &[]).await;
        let id = server.hub.sessions()[0].id().to_string();
        let url = server.http_url(&format!("/api/sessions/{id}/disconnect"));
        let (status, answer) = crate::common::http::post(&url, "application/json", body).await;
        assert_eq!(status, 200, "{answer}");
        let events = reader.ends().await;
        let close = events.last().expect("a close event");
        assert_eq!(close.kind, "close", "{events:?}");
        let close: serde_json::Value = serde_json::from_str(&close.data).unwrap();
        assert_eq!(close["code"], code, "{close}");
        assert_eq!(close["reconnect"], reconnect, "{close}");
        wait_until("the session left", || server.hub.session_count() == 0).await;
    }
}
