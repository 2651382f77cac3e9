//! Logs with context: every line the spawned binary logs about a session
//! names the node, the session and its group — in the JSON format (the
//! `session` span's fields) and in the human one (the span's prefix).
//! The sessions here do what logs: connect, send a message over the size
//! limit (closed with 1009), fall behind until their queue is full
//! (closed with 1013), stream over SSE, disconnect.

use serde_json::Value;

use crate::common::http;
use crate::common::node::NodeProcess;
use crate::common::{Client, wait_until, wait_until_async};

/// The flags that make sessions log: debug lines, a small message limit,
/// a short queue that closes its session when full.
const LOGGING: &[&str] = &[
    "--log",
    "groupcast=debug",
    "--max-message-size",
    "1024",
    "--queue-len",
    "4",
    "--queue-full",
    "close",
];

/// A frame large enough that a client that does not read soon fills the
/// loopback buffers, then its queue.
const FRAME: usize = 64 * 1024;

/// The ids of `group`'s sessions on `node`, as its API lists them.
async fn session_ids(node: &NodeProcess, group: &str) -> Vec<String> {
    let (_, view) = http::get_json(&node.url(&format!("/api/groups/{group}"))).await;
    view["sessions"]
        .as_array()
        .map(|sessions| {
            sessions
                .iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The id of the session `group` gained on `node` since it had `before`.
async fn new_session(node: &NodeProcess, group: &str, before: &[String]) -> String {
    let found = std::sync::Mutex::new(None);
    wait_until_async(&format!("a new session in {group} is listed"), || async {
        let id = session_ids(node, group)
            .await
            .into_iter()
            .find(|id| !before.contains(id));
        let listed = id.is_some();
        *found.lock().unwrap() = id;
        listed
    })
    .await;
    found.into_inner().unwrap().unwrap()
}

/// Connects a WebSocket client to `group` and returns it with its
/// session's id.
async fn join(node: &NodeProcess, group: &str) -> (Client, String) {
    let before = session_ids(node, group).await;
    let client = Client::connect(&node.ws_url(group)).await;
    (client, new_session(node, group, &before).await)
}

/// Every JSON line of the log.
fn json_lines(node: &NodeProcess) -> Vec<Value> {
    node.log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The message of a JSON log line.
fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

/// Whether a JSON line is about session `id`: its span names it, or any
/// of its fields mentions it.
fn about(line: &Value, id: &str) -> bool {
    line["span"]["session"] == id || line["fields"].to_string().contains(id)
}

/// A context field of a JSON line: from its `session` span, or from its
/// own fields for a line logged outside the session's task (the
/// publisher's, closing a slow client).
fn context<'a>(line: &'a Value, key: &str) -> &'a Value {
    match &line["span"][key] {
        Value::Null => &line["fields"][key],
        value => value,
    }
}

#[tokio::test]
async fn every_line_about_a_session_names_node_session_and_group_in_json() {
    let node =
        NodeProcess::start("logs-json", &[LOGGING, &["--log-format", "json"]].concat()).await;

    // One session sends a message over the limit: closed with 1009.
    let (mut big, big_id) = join(&node, "logs/big").await;
    big.send_text(&"x".repeat(4096)).await;
    big.expect_close_code(1009).await;

    // One never reads: closed with 1013 once its queue is full (logged
    // by the publisher's task, which names the session in its fields).
    let (slow, slow_id) = join(&node, "logs/slow").await;
    let payload = "y".repeat(FRAME);
    let mut published = 0;
    let closed = |lines: Vec<Value>| {
        lines
            .iter()
            .any(|l| about(l, &slow_id) && message(l).contains("1013"))
    };
    while !closed(json_lines(&node)) {
        assert!(published < 2000, "the slow client's queue never filled");
        let (status, _) =
            http::post_text(&node.url("/api/groups/logs/slow/messages"), &payload).await;
        assert_eq!(status, 200);
        published += 1;
    }
    drop(slow);

    // One streams over SSE, then goes.
    let before = session_ids(&node, "logs/sse").await;
    let mut response = reqwest::get(node.url("/sse/logs/sse")).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.chunk().await;
    let sse_id = new_session(&node, "logs/sse", &before).await;
    drop(response);

    // The sessions are gone once each logged its disconnection.
    let sessions = [
        (big_id.as_str(), "logs/big", "connection error"),
        (
            slow_id.as_str(),
            "logs/slow",
            "closed a slow client with 1013: its send queue is full",
        ),
        (sse_id.as_str(), "logs/sse", "connected"),
    ];
    for (id, _, _) in sessions {
        wait_until(&format!("session {id} logs its disconnection"), || {
            json_lines(&node)
                .iter()
                .any(|l| about(l, id) && message(l) == "disconnected")
        })
        .await;
    }

    let lines = json_lines(&node);
    for (id, group, telling) in sessions {
        let about_it: Vec<&Value> = lines.iter().filter(|l| about(l, id)).collect();
        for line in &about_it {
            assert_eq!(context(line, "node"), "logs-json", "{line}");
            assert_eq!(context(line, "session"), id, "{line}");
            assert_eq!(context(line, "group"), group, "{line}");
        }
        let messages: Vec<&str> = about_it.iter().map(|l| message(l)).collect();
        for expected in ["connected", telling, "disconnected"] {
            assert!(messages.contains(&expected), "{id}: {messages:?}");
        }
    }
    // And no line of the transports goes without its session.
    for line in &lines {
        if line["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("groupcast::transport"))
        {
            assert!(line["span"]["session"].is_string(), "{line}");
        }
    }
}

/// ANSI colour sequences out of a human log line.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn the_human_format_names_node_session_and_group_too() {
    let node = NodeProcess::start(
        "logs-human",
        &[LOGGING, &["--log-format", "human"]].concat(),
    )
    .await;
    let (mut client, id) = join(&node, "logs/human").await;
    client.send_text(&"x".repeat(4096)).await;
    client.expect_close_code(1009).await;
    // The span's fields, in the order they were given (the session's id
    // is recorded last, once the session exists).
    let prefix = format!("session{{node=logs-human group=logs/human session={id}}}");
    let mut lines = Vec::new();
    wait_until("the session's lines are logged", || {
        lines = plain(&node.log())
            .lines()
            .filter(|line| line.contains(&id))
            .map(str::to_owned)
            .collect();
        lines.iter().any(|line| line.contains("disconnected"))
    })
    .await;
    for expected in ["connected", "connection error", "disconnected"] {
        assert!(
            lines
                .iter()
                .any(|line| line.contains(expected) && line.contains(&prefix)),
            "{expected}: {lines:#?}"
        );
    }
    for line in &lines {
        assert!(line.contains(&prefix), "{line}");
    }
}
