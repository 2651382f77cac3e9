//! History and gapless resume: a late joiner gets the backlog
//! (`?history=N`), a `groupcast.v1` client that reconnects gets exactly
//! what it missed (`?since=&epoch=`, `recovered: true`), or is told it
//! cannot (`recovered: false`), and an idle group's history expires.
//! Standalone (history in memory) and over a real Redis with two nodes.
//!
//! Tests that only publish to their own groups share one Redis; those that
//! restart it start their own.

use std::time::Duration;

use crate::common;
use crate::common::redis::{TestRedis, fast_options, query};
use crate::common::{Client, TestServer, http, wait_until_async};
use groupcast::history::HistoryPolicy;
use groupcast::{Config, Hub};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as Ws;

/// A config whose groups keep history by `rules`.
fn config(rules: &[&str]) -> Config {
    Config {
        history: HistoryPolicy::parse(rules).expect("valid rules"),
        ..Config::default()
    }
}

/// A standalone node keeping history by `rules`.
async fn standalone(rules: &[&str]) -> TestServer {
    TestServer::start(Hub::builder().config(config(rules)).build().unwrap()).await
}

/// Two nodes on `redis`, keeping history by `rules`.
async fn two_nodes(redis: &TestRedis, rules: &[&str]) -> (TestServer, TestServer) {
    let node = |name: &str| {
        Hub::builder()
            .node_id(format!("{name}-{:04x}", rand::random::<u16>()))
            .config(config(rules))
            .backend(fast_options(redis.url()))
            .build()
            .expect("a clustered hub")
    };
    let a = TestServer::start(node("hist-a")).await;
    let b = TestServer::start(node("hist-b")).await;
    common::wait_until("both nodes reach Redis", || {
        a.hub.status().connected && b.hub.status().connected
    })
    .await;
    (a, b)
}

/// Publishes `m<from>` … `m<to>` to `group` through `server`, each one
/// acknowledged (so it is in history) before the next.
async fn publish_numbered(server: &TestServer, group: &str, from: u64, to: u64) {
    for n in from..=to {
        let sent = server
            .hub
            .to(group)
            .publish(format!("m{n}"))
            .await
            .expect("publish");
        assert_eq!(
            sent.position.map(|p| p.offset),
            Some(n),
            "the publish answer carries the offset"
        );
    }
}

/// A task that publishes `m1` … `m<total>` to `group` through `hub`, one
/// every `every` (each acknowledged before the next).
fn publish_paced(
    hub: &Hub,
    group: &'static str,
    total: u64,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let hub = hub.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        for n in 1..=total {
            tick.tick().await;
            hub.to(group)
                .publish(format!("m{n}"))
                .await
                .expect("publish");
        }
    })
}

/// A `groupcast.v1` client at `url`.
async fn v1(url: &str) -> Client {
    Client::try_connect(url, &[("sec-websocket-protocol", "groupcast.v1")])
        .await
        .unwrap_or_else(|refused| panic!("{url}: {refused:?}"))
}

/// A `groupcast.v1` client at `url`, and the welcome it reads first.
async fn v1_welcomed(url: &str) -> (Client, Value) {
    let mut client = v1(url).await;
    let welcome = next_json(&mut client).await;
    assert_eq!(welcome["type"], "welcome", "{url}: {welcome}");
    (client, welcome)
}

/// A `groupcast.v1` client of the group at `ws_url` resuming after offset
/// `since` of `epoch` (`?since=&epoch=`), and its welcome.
async fn resume_v1(ws_url: &str, since: u64, epoch: &str) -> (Client, Value) {
    v1_welcomed(&format!("{ws_url}?since={since}&epoch={epoch}")).await
}

/// The next frame as JSON (a `groupcast.v1` client's frames all are).
async fn next_json(client: &mut Client) -> Value {
    match client.next_data().await {
        Ws::Text(text) => serde_json::from_str(&text).expect("a JSON frame"),
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

/// The next `n` message frames' `(offset, data)`.
async fn messages(client: &mut Client, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let frame = next_json(client).await;
        assert_eq!(frame["type"], "message", "{frame}");
        got.push(entry(&frame));
    }
    got
}

/// A message frame's `(offset, data)`.
fn entry(frame: &Value) -> (u64, String) {
    (
        frame["offset"].as_u64().expect("an offset"),
        frame["data"].as_str().expect("text data").to_string(),
    )
}

fn numbered(from: u64, to: u64) -> Vec<(u64, String)> {
    (from..=to).map(|n| (n, format!("m{n}"))).collect()
}

// ----- late joiners ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_on_another_node_gets_the_last_20_then_live() {
    let redis = TestRedis::shared();
    let (a, b) = two_nodes(redis, &["task/*=1000:1h"]).await;
    publish_numbered(&a, "task/late", 1, 50).await;

    // A raw client (websocat's view): plain frames, backlog then live.
    let mut late = Client::connect(&format!("{}?history=20", b.ws_url("task/late"))).await;
    for n in 31..=50 {
        assert_eq!(late.recv_text().await, format!("m{n}"));
    }
    publish_numbered(&a, "task/late", 51, 51).await;
    assert_eq!(late.recv_text().await, "m51");
}

#[tokio::test]
async fn a_late_joiner_gets_the_backlog_standalone_and_more_than_kept_is_capped() {
    let server = standalone(&["*=10:1h"]).await;
    publish_numbered(&server, "logs", 1, 25).await;
    let mut late = Client::connect(&format!("{}?history=500", server.ws_url("logs"))).await;
    for n in 16..=25 {
        assert_eq!(late.recv_text().await, format!("m{n}"), "the last 10 kept");
    }
    server.hub.to("logs").send("live").unwrap();
    assert_eq!(late.recv_text().await, "live");
}

#[tokio::test]
async fn a_group_without_a_history_rule_behaves_as_before() {
    let server = standalone(&["task/*=10:1h"]).await;
    server.hub.to("chat").send("before").unwrap();
    let (mut client, welcome) = v1_welcomed(&format!("{}?history=5", server.ws_url("chat"))).await;
    assert_eq!(welcome["history"], false);
    assert_eq!(welcome["epoch"], Value::Null);
    assert_eq!(welcome["offset"], Value::Null);
    let sent = server.hub.to("chat").publish("after").await.unwrap();
    assert_eq!(sent.position, None, "no offset without history");
    let frame = next_json(&mut client).await;
    assert_eq!(
        frame,
        serde_json::json!({"type": "message", "group": "chat", "data": "after"}),
        "nothing replayed, no offset"
    );
}

// ----- resuming ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_client_resumes_on_another_node_with_exactly_what_it_missed() {
    let redis = TestRedis::shared();
    let (a, b) = two_nodes(redis, &["task/**=1000:1h"]).await;
    let (mut first, welcome) = v1_welcomed(&a.ws_url("task/resume")).await;
    assert_eq!(welcome["group"], "task/resume");
    assert_eq!(welcome["history"], true);
    assert!(welcome.get("recovered").is_none(), "no resume asked");
    publish_numbered(&b, "task/resume", 1, 5).await;
    assert_eq!(messages(&mut first, 5).await, numbered(1, 5));
    let (_, last) = http::get_json(&a.http_url("/api/groups/task/resume/history?limit=1")).await;
    let epoch = last["epoch"].as_str().expect("an epoch").to_string();
    drop(first);

    publish_numbered(&a, "task/resume", 6, 205).await;
    let (mut back, welcome) = resume_v1(&b.ws_url("task/resume"), 5, &epoch).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(welcome["epoch"], epoch.as_str());
    assert_eq!(welcome["offset"], 205);
    assert_eq!(messages(&mut back, 200).await, numbered(6, 205));
    publish_numbered(&a, "task/resume", 206, 206).await;
    assert_eq!(messages(&mut back, 1).await, numbered(206, 206));
    assert_eq!(b.hub.metrics().resumes_recovered.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_under_continuous_publishing_has_no_gap_and_no_duplicate() {
    let redis = TestRedis::shared();
    let (a, b) = two_nodes(redis, &["busy=100000:1h"]).await;
    const TOTAL: u64 = 3000;
    // ≥ 500 messages/s through node A for the whole test, bounded in count.
    let publisher = publish_paced(&a.hub, "busy", TOTAL, Duration::from_micros(1500));
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut epoch = String::new();
    // Connect, read a while, drop, resume on the other node; four times.
    for round in 0..4 {
        let server = if round % 2 == 0 { &b } else { &a };
        let url = if seen.is_empty() {
            server.ws_url("busy")
        } else {
            format!(
                "{}?since={}&epoch={epoch}",
                server.ws_url("busy"),
                seen.last().unwrap().0
            )
        };
        let (mut client, welcome) = v1_welcomed(&url).await;
        if !seen.is_empty() {
            assert_eq!(welcome["recovered"], true, "round {round}: {welcome}");
        }
        let batch = messages(&mut client, 300).await;
        if epoch.is_empty() {
            // The first welcome may come before the first publish (no
            // epoch yet): read it once messages exist.
            let url = server.http_url("/api/groups/busy/history?limit=1");
            let (_, page) = http::get_json(&url).await;
            epoch = page["epoch"].as_str().expect("an epoch").to_string();
        }
        seen.extend(batch);
    }
    publisher.await.unwrap();
    // The last client's view continues into the rest.
    let offsets: Vec<u64> = seen.iter().map(|(o, _)| *o).collect();
    let first = offsets[0];
    let expected: Vec<u64> = (first..first + offsets.len() as u64).collect();
    assert_eq!(
        offsets, expected,
        "no gap, no duplicate across four resumes"
    );
    for (offset, data) in &seen {
        assert_eq!(data, &format!("m{offset}"));
    }
}

#[tokio::test]
async fn a_trimmed_offset_or_another_epoch_is_not_recovered_and_goes_on_live() {
    let server = standalone(&["small=10:1h"]).await;
    publish_numbered(&server, "small", 1, 30).await;
    let (_, page) = http::get_json(&server.http_url("/api/groups/small/history")).await;
    let epoch = page["epoch"].as_str().unwrap().to_string();

    for (top, query) in [
        (30, format!("since=5&epoch={epoch}")), // 6 to 20 were trimmed
        (31, "since=30&epoch=someotherepoch".to_string()),
        (32, format!("since=40&epoch={epoch}")), // from the future
    ] {
        let (mut client, welcome) =
            v1_welcomed(&format!("{}?{query}", server.ws_url("small"))).await;
        assert_eq!(welcome["recovered"], false, "{query}: {welcome}");
        assert_eq!(welcome["offset"], top, "continue from the top");
        server.hub.to("small").send("live").unwrap();
        let frame = next_json(&mut client).await;
        assert_eq!(
            frame["data"], "live",
            "{query}: nothing replayed, then live"
        );
    }
    // Nothing missed at all: recovered, nothing replayed.
    let (_client, welcome) = resume_v1(&server.ws_url("small"), 33, &epoch).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(server.hub.metrics().resumes_not_recovered.get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_from_before_a_redis_restart_without_persistence_is_not_recovered() {
    let redis = TestRedis::start().await;
    let (a, b) = two_nodes(&redis, &["*=1000:1h"]).await;
    publish_numbered(&a, "restarted", 1, 10).await;
    let (_, page) = http::get_json(&b.http_url("/api/groups/restarted/history")).await;
    let old_epoch = page["epoch"].as_str().unwrap().to_string();
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(10));

    redis.stop().await;
    redis.restart().await; // no persistence: every key is gone
    wait_until_async("both nodes are back on Redis", || async {
        a.hub.status().connected && b.hub.status().connected
    })
    .await;
    wait_until_async("a publish works again", || async {
        a.hub.to("restarted").publish("fresh").await.is_ok()
    })
    .await;
    let (mut client, welcome) = resume_v1(&b.ws_url("restarted"), 10, &old_epoch).await;
    assert_eq!(welcome["recovered"], false, "{welcome}");
    assert_ne!(welcome["epoch"], old_epoch.as_str(), "a new epoch");
    let sent = a.hub.to("restarted").publish("live").await.unwrap();
    let frame = next_json(&mut client).await;
    assert_eq!(frame["data"], "live");
    assert_eq!(frame["offset"], sent.position.unwrap().offset);
}

/// The keys behind a group's history: a stream and an epoch string, both
/// with the group's TTL renewed by every publish. A group whose epoch an
/// earlier version kept in the meta hash (`groupcast:history-meta:`, field
/// `e`) keeps it across the upgrade; losing the epoch key or the stream
/// starts a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_epoch_key_survives_an_upgrade_from_the_meta_hash_and_its_loss_is_a_new_epoch() {
    let redis = TestRedis::shared();
    let (a, b) = two_nodes(redis, &["layout/*=100:1h"]).await;
    let mut conn = redis.client().await;
    let stream = "groupcast:history:{group:layout/old}";
    let epoch_key = "groupcast:history-epoch:{group:layout/old}";
    let legacy = "groupcast:history-meta:{group:layout/old}";
    // What an earlier version left: entries 0-1..0-3 and the meta hash.
    for n in 1..=3 {
        let (id, data) = (format!("0-{n}"), format!("m{n}"));
        let _: String = query(&mut conn, &["XADD", stream, &id, "d", &data]).await;
    }
    let _: i64 = query(&mut conn, &["HSET", legacy, "e", "oldepoch"]).await;
    let (_, page) = http::get_json(&b.http_url("/api/groups/layout/old/history")).await;
    assert_eq!(page["epoch"], "oldepoch", "{page}");
    assert_eq!(page["offset"], 3, "{page}");
    let sent = a.hub.to("layout/old").publish("m4").await.unwrap();
    let position = sent.position.unwrap();
    assert_eq!((position.offset, &*position.epoch), (4, "oldepoch"));
    let stored: Option<String> = query(&mut conn, &["GET", epoch_key]).await;
    assert_eq!(
        stored.as_deref(),
        Some("oldepoch"),
        "copied into the epoch key"
    );
    for key in [stream, epoch_key] {
        let ttl: i64 = query(&mut conn, &["PTTL", key]).await;
        assert!((1..=3_600_000).contains(&ttl), "{key}: PTTL {ttl}");
    }
    // The epoch key and the hash gone, the stream still there: a new epoch.
    let _: i64 = query(&mut conn, &["DEL", epoch_key, legacy]).await;
    let sent = a.hub.to("layout/old").publish("m5").await.unwrap();
    let renewed = sent.position.unwrap();
    assert_eq!(renewed.offset, 5);
    assert_ne!(&*renewed.epoch, "oldepoch", "the epoch key was lost");
    // The stream gone, the epoch key still there: a new epoch from 1.
    let _: i64 = query(&mut conn, &["DEL", stream]).await;
    let sent = a.hub.to("layout/old").publish("m6").await.unwrap();
    let restarted = sent.position.unwrap();
    assert_eq!(restarted.offset, 1);
    assert_ne!(restarted.epoch, renewed.epoch, "the stream was lost");
    // A new epoch is told to the hash too, for nodes of the earlier version
    // still running in a rolling upgrade, with the same TTL.
    let told: Option<String> = query(&mut conn, &["HGET", legacy, "e"]).await;
    assert_eq!(told.as_deref(), Some(&*restarted.epoch));
    let ttl: i64 = query(&mut conn, &["PTTL", legacy]).await;
    assert!((1..=3_600_000).contains(&ttl), "{legacy}: PTTL {ttl}");
    let (_, page) = http::get_json(&b.http_url("/api/groups/layout/old/history")).await;
    assert_eq!(page["epoch"], &*restarted.epoch, "{page}");
    assert_eq!(
        page["messages"],
        serde_json::json!([{"offset": 1, "data": "m6"}])
    );
}

/// Over Redis a group's history is exactly its last `size` messages for
/// every reader (`?history=`, the API, a resume), although the stream is
/// trimmed exactly only at every `min(16, size)`th offset and so holds a
/// few more entries in between; it never holds more than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_history_reads_exactly_the_last_size_messages_between_trims() {
    let redis = TestRedis::shared();
    let (a, b) = two_nodes(redis, &["steps/*=10:1h"]).await;
    let conn = redis.client().await;
    let stream = "groupcast:history:{group:steps/log}";
    let xlen = |mut conn: redis::aio::MultiplexedConnection| async move {
        query::<u64>(&mut conn, &["XLEN", stream]).await
    };
    // Trimmed to 10 at offset 20; 21..25 appended since.
    publish_numbered(&a, "steps/log", 1, 25).await;
    assert_eq!(xlen(conn.clone()).await, 15, "entries 11..25 are stored");

    // A late joiner gets the last 10, not the 15 stored.
    let mut late = Client::connect(&format!("{}?history=500", b.ws_url("steps/log"))).await;
    for n in 16..=25 {
        assert_eq!(late.recv_text().await, format!("m{n}"));
    }
    // The API: the last 10, also when asked from an older offset.
    for since in ["", "?since=3", "?since=12"] {
        let (status, page) =
            http::get_json(&b.http_url(&format!("/api/groups/steps/log/history{since}"))).await;
        assert_eq!(status, 200, "{page}");
        let offsets: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, (16..=25).collect::<Vec<_>>(), "since {since:?}");
    }
    let (_, page) = http::get_json(&b.http_url("/api/groups/steps/log/history")).await;
    let epoch = page["epoch"].as_str().unwrap().to_string();
    // Offset 14 is stored but no longer in the last 10: not recovered.
    let (_client, welcome) = resume_v1(&b.ws_url("steps/log"), 14, &epoch).await;
    assert_eq!(welcome["recovered"], false, "{welcome}");
    assert_eq!(welcome["offset"], 25);
    // From 15 on, 16..25 is the whole of what was missed: recovered.
    let (mut client, welcome) = resume_v1(&b.ws_url("steps/log"), 15, &epoch).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(messages(&mut client, 10).await, numbered(16, 25));

    // However long it runs, the stream holds at most size + 9 entries
    // (size 10 trims every 10th offset).
    publish_numbered(&a, "steps/log", 26, 1_007).await;
    let stored = xlen(conn.clone()).await;
    assert!((10..=19).contains(&stored), "{stored} entries stored");
    let (_, page) = http::get_json(&a.http_url("/api/groups/steps/log/history")).await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(10));
    assert_eq!(page["messages"][0]["offset"], 998);
}

// ----- expiry, API -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_groups_history_is_gone_after_its_ttl() {
    let redis = TestRedis::shared();
    let (a, _b) = two_nodes(redis, &["brief=100:1s"]).await;
    publish_numbered(&a, "brief", 1, 3).await;
    let url = a.http_url("/api/groups/brief/history");
    let (status, page) = http::get_json(&url).await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(3));
    // Redis expires the keys 1 s after the last publish; poll (bounded by
    // the harness's wait) until it has.
    wait_until_async("the history expired", || async {
        let (_, page) = http::get_json(&url).await;
        page["epoch"].is_null() && page["messages"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    let sent = a.hub.to("brief").publish("again").await.unwrap();
    assert_eq!(sent.position.unwrap().offset, 1, "a new epoch starts at 1");
}

#[tokio::test]
async fn the_history_api_pages_with_since_and_limit() {
    let server = standalone(&["api/*=100:1h"]).await;
    let (status, answer) =
        http::post_text(&server.http_url("/api/groups/api/x/messages"), "one").await;
    assert_eq!(status, 200);
    assert_eq!(answer["offset"], 1);
    assert!(answer["epoch"].is_string());
    publish_numbered(&server, "api/x", 2, 7).await;
    let (status, page) =
        http::get_json(&server.http_url("/api/groups/api/x/history?since=2&limit=3")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["offset"], 7);
    assert_eq!(page["epoch"], answer["epoch"]);
    assert_eq!(
        page["messages"],
        serde_json::json!([
            {"offset": 3, "data": "m3"},
            {"offset": 4, "data": "m4"},
            {"offset": 5, "data": "m5"},
        ])
    );
    let (status, page) =
        http::get_json(&server.http_url("/api/groups/api/x/history?limit=100000")).await;
    assert_eq!(status, 200, "a large limit is capped, not an error");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(7));
}

// ----- bad input -----------------------------------------------------------------------

#[tokio::test]
async fn bad_replay_parameters_get_400_before_the_upgrade() {
    let server = standalone(&["*=10:1h"]).await;
    for query in [
        "history=-1",
        "history=many",
        "since=1",
        "epoch=e",
        "since=x&epoch=e",
        "since=1&epoch=",
        "since=1&epoch=a%20b",
        "history=1&since=1&epoch=e",
    ] {
        let refused = Client::refused(&format!("{}?{query}", server.ws_url("g"))).await;
        assert_eq!(refused.status, 400, "{query}");
        assert_eq!(refused.body["error"], "bad_query", "{query}");
        assert!(
            refused.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{query}: a reason"
        );
    }
    assert_eq!(server.hub.metrics().connections_opened.get(), 0);
}

#[tokio::test]
async fn bad_history_api_parameters_get_400_and_groups_without_history_404() {
    let server = standalone(&["kept=10:1h"]).await;
    for query in ["since=-1", "since=x", "limit=0", "limit=lots"] {
        let url = server.http_url(&format!("/api/groups/kept/history?{query}"));
        let (status, answer) = http::get_json(&url).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"], "bad_query");
    }
    let (status, answer) = http::get_json(&server.http_url("/api/groups/other/history")).await;
    assert_eq!(status, 404);
    assert_eq!(answer["error"], "no_history");
    let (status, answer) = http::get_json(&server.http_url("/api/groups/a//b/history")).await;
    assert_eq!(status, 400, "{answer}");
}

// ----- a rolling restart, with resume ------------------------------------------------

/// One resuming `groupcast.v1` client: follows the live nodes, and on every
/// close reconnects to another with `since`/`epoch` of the last message it
/// saw (or, before its first message, asks for the whole history again).
/// Returns once it has `total` messages.
async fn resuming_client(
    index: usize,
    live: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    total: u64,
) -> Resumed {
    use futures_util::StreamExt;
    let mut got: Vec<(u64, String)> = Vec::new();
    let mut epoch: Option<String> = None;
    let mut resumes = 0;
    let mut told_to_resume = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut attempt = 0usize;
    while (got.len() as u64) < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client {index} never finished"
        );
        attempt += 1;
        let urls = live.lock().clone();
        let base = &urls[(index + attempt) % urls.len()];
        let url = match (&epoch, got.last()) {
            (Some(epoch), Some((offset, _))) => format!("{base}?since={offset}&epoch={epoch}"),
            // Nothing seen yet: whatever the group has so far, then live.
            _ => format!("{base}?history={total}"),
        };
        let Ok(mut client) =
            Client::try_connect(&url, &[("sec-websocket-protocol", "groupcast.v1")]).await
        else {
            // A node that began draining between the list and the upgrade.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        loop {
            let frame = match tokio::time::timeout(Duration::from_secs(10), client.ws.next()).await
            {
                Ok(Some(Ok(frame))) => frame,
                _ => break, // closed (1001 at shutdown) or reset: go elsewhere
            };
            let Ws::Text(text) = frame else {
                if let Ws::Close(close) = frame {
                    if close.is_some_and(|c| u16::from(c.code) == 4010) {
                        told_to_resume += 1;
                    }
                    break;
                }
                continue;
            };
            let json: Value = serde_json::from_str(&text).expect("a JSON frame");
            match json["type"].as_str() {
                Some("welcome") => {
                    if json.get("recovered").is_some() {
                        assert_eq!(json["recovered"], true, "client {index}: {json}");
                        resumes += 1;
                    }
                    if epoch.is_none() {
                        epoch = json["epoch"].as_str().map(str::to_string);
                    }
                }
                Some("message") => {
                    epoch = json["epoch"].as_str().map(str::to_string);
                    got.push(entry(&json));
                    if got.len() as u64 == total {
                        break;
                    }
                }
                other => panic!("client {index}: unexpected frame {other:?}: {json}"),
            }
        }
    }
    Resumed {
        got,
        resumes,
        told_to_resume,
    }
}

/// What a [`resuming_client`] saw.
struct Resumed {
    /// `(offset, data)` of every message received, in order.
    got: Vec<(u64, String)>,
    /// Welcomes that answered a resume (`recovered: true`).
    resumes: usize,
    /// Closes with 4010: the node saw its live stream skip.
    told_to_resume: usize,
}

/// Cuts every node's subscriber connection (Redis closes them at once;
/// the nodes reconnect and resubscribe on their own).
async fn cut_subscriber_connections(conn: &mut redis::aio::MultiplexedConnection) {
    let _: i64 = query(conn, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
}

/// A node that has received nothing of a group live since it subscribed
/// still knows where its stream stands: the top its session's history read
/// found. So when its subscription drops before the first live message,
/// the messages published meanwhile are a gap, repaired by the node from
/// history, and not lost unseen. (Each try takes a fresh group, so that the node has
/// received nothing of it live; a try shows something only when the node
/// missed messages, that is when its subscriber was still reconnecting as
/// they were published: bounded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_lost_before_the_first_live_message_is_a_gap_too() {
    use futures_util::StreamExt;
    let redis = TestRedis::start().await;
    let (a, b) = two_nodes(&redis, &["early-*=100:1h"]).await;
    let mut conn = redis.client().await;
    for attempt in 1..=10 {
        let group = format!("early-{attempt}");
        publish_numbered(&a, &group, 1, 1).await;
        let (mut client, welcome) = v1_welcomed(&format!("{}?history=10", b.ws_url(&group))).await;
        assert_eq!(welcome["offset"], 1, "{welcome}");
        let epoch = welcome["epoch"].as_str().expect("an epoch").to_string();
        assert_eq!(messages(&mut client, 1).await, numbered(1, 1));

        let gaps = b.hub.metrics().history_gaps.get();
        let connects = b.hub.metrics().bus_connects.get();
        cut_subscriber_connections(&mut conn).await;
        publish_numbered(&a, &group, 2, 4).await;
        wait_until_async("B resubscribed", || async {
            b.hub.metrics().bus_connects.get() > connects
                && redis.numsub(&format!("group:{group}")).await == 1
        })
        .await;
        publish_numbered(&a, &group, 5, 5).await;

        // Whatever B saw, the client gets m2..m5 once each, in order:
        // live, or through a resume from the last offset it got.
        let mut got = Vec::new();
        let mut resumed = false;
        while got.len() < 4 {
            let frame = tokio::time::timeout(Duration::from_secs(10), client.ws.next())
                .await
                .unwrap_or_else(|_| panic!("try {attempt}: stuck after {got:?}"));
            match frame {
                Some(Ok(Ws::Text(text))) => {
                    let json: Value = serde_json::from_str(&text).expect("a JSON frame");
                    match json["type"].as_str() {
                        Some("message") => got.push(entry(&json)),
                        Some("welcome") => assert_eq!(json["recovered"], true, "{json}"),
                        _ => panic!("unexpected frame {json}"),
                    }
                }
                Some(Ok(Ws::Close(close))) => {
                    let close = close.expect("a close code");
                    assert_eq!(u16::from(close.code), 4010, "{close:?}");
                    assert!(!resumed, "one resume is enough: {got:?}");
                    resumed = true;
                    let last = got.last().map_or(1, |(offset, _)| *offset);
                    client = v1(&format!("{}?since={last}&epoch={epoch}", b.ws_url(&group))).await;
                }
                Some(Ok(_)) => {}
                other => panic!("try {attempt}: the connection ended: {other:?}"),
            }
        }
        assert_eq!(
            got,
            numbered(2, 5),
            "try {attempt}: everything once, in order"
        );
        if b.hub.metrics().history_gaps.get() > gaps {
            assert!(!resumed, "B saw the gap and repaired it: no resume");
            assert!(b.hub.metrics().history_gaps_repaired.get() >= 1);
            return;
        }
    }
    panic!("in 10 tries B never missed a message while it resubscribed");
}

/// Three spawned nodes restarted one at a time (SIGTERM → drain → 1001 →
/// exit → start again) while a fourth, in-process node publishes 1,000
/// numbered messages to a history group: every resuming `groupcast.v1`
/// client gets all 1,000, in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_clients_lose_nothing_across_a_rolling_restart() {
    use crate::common::node::{NodeProcess, start_clustered_nodes};
    const CLIENTS: usize = 4;
    const TOTAL: u64 = 1000;
    const NAMES: [&str; 3] = ["hroll-a", "hroll-b", "hroll-c"];
    let redis = TestRedis::start().await;
    let args = [
        "--history",
        "roll=5000:1h",
        "--drain-period",
        "200ms",
        "--shutdown-timeout",
        "5s",
    ];
    let mut nodes = start_clustered_nodes(&NAMES, &redis.url(), &args).await;
    let publisher_node = TestServer::start(
        Hub::builder()
            .node_id("hroll-publisher")
            .config(config(&["roll=5000:1h"]))
            .backend(fast_options(redis.url()))
            .build()
            .unwrap(),
    )
    .await;
    let live = std::sync::Arc::new(parking_lot::Mutex::new(
        nodes.iter().map(|n| n.ws_url("roll")).collect::<Vec<_>>(),
    ));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(resuming_client(i, live.clone(), TOTAL)))
        .collect();
    wait_until_async("every client has joined", || async {
        redis.numsub("group:roll").await >= 1
    })
    .await;

    // 1,000 messages at ~250/s, through the restarts.
    let publisher = publish_paced(&publisher_node.hub, "roll", TOTAL, Duration::from_millis(4));
    for (i, name) in NAMES.iter().enumerate() {
        live.lock().retain(|url| url != &nodes[i].ws_url("roll"));
        nodes[i].terminate();
        nodes[i]
            .wait_exit(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{name} did not exit"));
        nodes[i] = NodeProcess::start_clustered(name, &redis.url(), &args).await;
        live.lock().push(nodes[i].ws_url("roll"));
    }
    publisher.await.unwrap();
    for (i, client) in clients.into_iter().enumerate() {
        let Resumed { got, resumes, .. } = client.await.unwrap();
        eprintln!(
            "client {i}: {} of {TOTAL} received, {resumes} resumes",
            got.len()
        );
        assert_eq!(
            got,
            numbered(1, TOTAL),
            "client {i}: everything once, in order"
        );
        assert!(resumes >= 1, "client {i} never had to resume");
    }
}

// ----- publishing with history from outside -------------------------------------------

/// `redis-cli FCALL groupcast_publish 1 <group> <payload>` appends to the
/// group's history like a node's own publish (an offset, a backlog for late
/// joiners); for a group no rule names it is a plain live PUBLISH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_publish_with_history_through_the_redis_function() {
    let redis = TestRedis::start().await; // its own: the library is per Redis
    let (a, _b) = two_nodes(&redis, &["jobs/*=100:1h"]).await;
    let mut member = v1(&a.ws_url("jobs/7")).await;
    assert_eq!(next_json(&mut member).await["type"], "welcome");
    let mut conn = redis.client().await;
    let fcall = |group: &'static str, payload: &'static str| {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("groupcast_publish").arg(1).arg(group).arg(payload);
        cmd
    };
    // Loaded by the nodes when they connected; poll until it is there.
    wait_until_async("the function is loaded", || {
        let mut conn = conn.clone();
        let cmd = fcall("jobs/none", "probe");
        async move { cmd.query_async::<redis::Value>(&mut conn).await.is_ok() }
    })
    .await;
    let (offset, epoch): (u64, String) = fcall("jobs/7", "line 1")
        .query_async(&mut conn)
        .await
        .expect("FCALL");
    assert_eq!(offset, 1);
    let frame = next_json(&mut member).await;
    assert_eq!(
        frame,
        serde_json::json!({"type": "message", "group": "jobs/7", "offset": 1, "epoch": epoch, "data": "line 1"})
    );
    let mut late = Client::connect(&format!("{}?history=10", a.ws_url("jobs/7"))).await;
    assert_eq!(late.recv_text().await, "line 1");
    // No rule for `other`: live only, and the function says 0.
    let mut other = Client::connect(&a.ws_url("other")).await;
    common::redis::wait_subscribed(&[&a], "group:other").await;
    let answer: i64 = fcall("other", "live only")
        .query_async(&mut conn)
        .await
        .expect("FCALL");
    assert_eq!(answer, 0);
    assert_eq!(other.recv_text().await, "live only");
}

/// When a node's own live stream skips (its subscriber connection dropped
/// and messages were published before it was back), the node reads what
/// it missed from history and delivers it in order before anything later:
/// a raw client and a `groupcast.v1` client on that node each get every
/// message once, in order, and nobody is told to resume (no 4010).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_a_nodes_live_stream_is_repaired_by_the_node_for_every_client() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const TOTAL: u64 = 3000;
    common::logs_when_asked();
    let redis = TestRedis::start().await;
    let (a, b) = two_nodes(&redis, &["gappy=10000:1h"]).await;
    let live = std::sync::Arc::new(parking_lot::Mutex::new(vec![b.ws_url("gappy")]));
    let client = tokio::spawn(resuming_client(0, live, TOTAL));
    let mut raw = Client::connect(&b.ws_url("gappy")).await;
    let raw_hub = b.hub.clone();
    let raw_reader = tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut got = Vec::with_capacity(TOTAL as usize);
        while (got.len() as u64) < TOTAL {
            let next = tokio::time::timeout(common::WAIT, raw.ws.next()).await;
            match next {
                Ok(Some(Ok(Ws::Text(text)))) => got.push(text.to_string()),
                Ok(Some(Ok(Ws::Ping(_) | Ws::Pong(_)))) => {}
                Ok(other) => panic!("a raw client got {other:?}"),
                Err(_) => {
                    let seen: std::collections::BTreeSet<&str> =
                        got.iter().map(String::as_str).collect();
                    let missing: Vec<u64> = (1..=TOTAL)
                        .filter(|n| !seen.contains(format!("m{n}").as_str()))
                        .collect();
                    let m = raw_hub.metrics();
                    panic!(
                        "the raw client waited {:?} after {} messages ({} distinct), \
                         the last {:?}; missing {missing:?}; B's gaps {} repaired {} unrepaired {}",
                        common::WAIT,
                        got.len(),
                        seen.len(),
                        got.last(),
                        m.history_gaps.get(),
                        m.history_gaps_repaired.get(),
                        m.history_gaps_unrepaired.get(),
                    )
                }
            }
        }
        got
    });
    wait_until_async("B listens to the group", || async {
        redis.numsub("group:gappy").await == 1
    })
    .await;
    common::wait_until("both of B's clients joined", || b.hub.session_count() == 2).await;
    // As fast as acks come back: a reconnect of a few milliseconds misses
    // some of them for sure.
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let publisher = {
        let (hub, sent) = (a.hub.clone(), sent.clone());
        tokio::spawn(async move {
            for n in 1..=TOTAL {
                hub.to("gappy")
                    .publish(format!("m{n}"))
                    .await
                    .expect("publish");
                sent.store(n, Ordering::SeqCst);
            }
        })
    };
    // Cut B's subscriber connection while messages flow, until B has seen
    // its live stream skip twice (a cut that happens to fall between two
    // publishes loses nothing, so it may take more than two; bounded).
    let mut conn = redis.client().await;
    let mut cuts = 0;
    while b.hub.metrics().history_gaps.get() < 2 && sent.load(Ordering::SeqCst) < TOTAL * 3 / 4 {
        cuts += 1;
        assert!(cuts <= 30, "30 cuts and B never saw its stream skip twice");
        let connects = b.hub.metrics().bus_connects.get();
        cut_subscriber_connections(&mut conn).await;
        wait_until_async("B reconnected", || async {
            b.hub.metrics().bus_connects.get() > connects
        })
        .await;
        let now = sent.load(Ordering::SeqCst);
        common::wait_until("a few more messages went out", || {
            sent.load(Ordering::SeqCst) >= now + 20
        })
        .await;
    }
    let gaps = b.hub.metrics().history_gaps.get();
    assert!(gaps >= 1, "B never saw a gap in {cuts} cuts");
    publisher.await.unwrap();
    let Resumed {
        got,
        told_to_resume,
        ..
    } = client.await.unwrap();
    assert_eq!(got, numbered(1, TOTAL), "everything once, in order");
    assert_eq!(told_to_resume, 0, "the node repaired its gaps itself");
    let raw_got = raw_reader.await.unwrap();
    let expected: Vec<String> = (1..=TOTAL).map(|n| format!("m{n}")).collect();
    assert!(
        raw_got == expected,
        "the raw client got every message once, in order"
    );
    let metrics = b.hub.metrics();
    assert!(metrics.history_gaps_repaired.get() >= 1);
    assert_eq!(metrics.history_gaps_unrepaired.get(), 0);
}

// ----- the node's tail ---------------------------------------------------------

/// A node whose live stream of a history group is continuous serves late
/// joiners and resumes from its tail: exactly what Redis holds (the last
/// `size`, trimmed alike), without a history read. The other node, which
/// holds no member of the group, reads Redis and gets the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_and_resumes_are_served_from_the_nodes_tail_as_history_holds_them() {
    let redis = TestRedis::shared();
    let (a, b) = two_nodes(redis, &["tail-*=30:1h"]).await;
    // A member on A: A listens to the group, and its tail begins.
    let (mut watcher, _) = v1_welcomed(&a.ws_url("tail-1")).await;
    publish_numbered(&b, "tail-1", 1, 50).await;
    assert_eq!(messages(&mut watcher, 50).await, numbered(1, 50));

    let metrics = a.hub.metrics();
    let (store, tail) = (
        metrics.history_reads_store.get(),
        metrics.history_reads_tail.get(),
    );
    let mut epoch = String::new();
    for _ in 0..20 {
        let (mut joiner, welcome) =
            v1_welcomed(&format!("{}?history=30", a.ws_url("tail-1"))).await;
        assert_eq!(welcome["offset"], 50, "{welcome}");
        epoch = welcome["epoch"].as_str().expect("an epoch").to_owned();
        assert_eq!(
            messages(&mut joiner, 30).await,
            numbered(21, 50),
            "the last 30, as kept"
        );
    }
    let (mut resumed, welcome) = resume_v1(&a.ws_url("tail-1"), 40, &epoch).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(messages(&mut resumed, 10).await, numbered(41, 50));
    // Trimmed: not the tail's to answer, nor history's.
    let (_, trimmed) = resume_v1(&a.ws_url("tail-1"), 5, &epoch).await;
    assert_eq!(trimmed["recovered"], false, "{trimmed}");

    assert_eq!(
        metrics.history_reads_store.get(),
        store + 1,
        "only the trimmed resume asked Redis"
    );
    assert_eq!(metrics.history_reads_tail.get(), tail + 21);

    // B has no tail of the group: it reads Redis, and gets the same.
    let (mut elsewhere, welcome) = v1_welcomed(&format!("{}?history=30", b.ws_url("tail-1"))).await;
    assert_eq!(welcome["epoch"], epoch.as_str());
    assert_eq!(messages(&mut elsewhere, 30).await, numbered(21, 50));
    assert!(b.hub.metrics().history_reads_store.get() >= 1);
}

/// Without a tail, a storm of identical late joins is merged into few
/// Redis reads, and every joiner gets the same backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_identical_late_joins_shares_its_redis_reads() {
    let redis = TestRedis::shared();
    let node = Hub::builder()
        .node_id(format!("storm-{:04x}", rand::random::<u16>()))
        .config(Config {
            history_cache: 0,
            ..config(&["storm-*=100:1h"])
        })
        .backend(fast_options(redis.url()))
        .build()
        .unwrap();
    let a = TestServer::start(node).await;
    common::wait_until("the node reaches Redis", || a.hub.status().connected).await;
    publish_numbered(&a, "storm-1", 1, 40).await;
    let url = format!("{}?history=40", a.ws_url("storm-1"));
    let joiners: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let (mut client, _) = v1_welcomed(&url).await;
                messages(&mut client, 40).await
            })
        })
        .collect();
    for joiner in joiners {
        assert_eq!(joiner.await.unwrap(), numbered(1, 40));
    }
    let metrics = a.hub.metrics();
    let (store, merged, tail) = (
        metrics.history_reads_store.get(),
        metrics.history_reads_merged.get(),
        metrics.history_reads_tail.get(),
    );
    assert_eq!(tail, 0, "no tail");
    assert_eq!(
        store + merged,
        50,
        "one read per joiner, to Redis or merged"
    );
}

/// When history no longer holds what the node missed (here it keeps one
/// message), the node cannot repair the gap: its `groupcast.v1` sessions
/// are told to resume (4010), as before, and the loss is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_history_no_longer_holds_falls_back_to_resuming() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let redis = TestRedis::start().await;
    let (a, b) = two_nodes(&redis, &["tiny=1:1h"]).await;
    let (mut client, _) = v1_welcomed(&b.ws_url("tiny")).await;
    // Read all along (a full queue would close it with 1013 instead).
    let closed = tokio::spawn(async move { client.expect_close_code(4010).await });
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let publisher = {
        let (hub, stop) = (a.hub.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < 100_000 {
                n += 1;
                hub.to("tiny")
                    .publish(format!("m{n}"))
                    .await
                    .expect("publish");
            }
        })
    };
    let mut conn = redis.client().await;
    let mut cuts = 0;
    while b.hub.metrics().history_gaps_unrepaired.get() == 0 {
        cuts += 1;
        assert!(cuts <= 30, "30 cuts and B never missed a message");
        let connects = b.hub.metrics().bus_connects.get();
        cut_subscriber_connections(&mut conn).await;
        wait_until_async("B reconnected", || async {
            b.hub.metrics().bus_connects.get() > connects
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    publisher.await.unwrap();
    assert_eq!(
        closed.await.unwrap(),
        "messages were lost: resume with since"
    );
}

/// What can happen to a history group in [`tail_against_redis`].
#[derive(Debug, Clone)]
enum TailStep {
    /// `n` messages published through the other node, heard live.
    Publish(u8),
    /// Every subscriber connection cut, then `n` published at once: the
    /// tail's node may miss some (a gap, repaired from Redis, or, when more
    /// than history holds, skipped), then one more once it listens again.
    CutThenPublish(u8),
    /// The group's history lost in Redis (a new epoch), then one message.
    NewEpoch,
    /// A's member leaves (A unsubscribes and forgets its tail), `n`
    /// messages are published that A does not hear, the member comes back
    /// (a tail that begins mid-history), then one message heard live.
    Rejoin(u8),
    /// A reader asks both nodes.
    Read(groupcast::backend::history::HistoryQuery),
}

fn tail_step() -> impl proptest::strategy::Strategy<Value = TailStep> {
    use groupcast::backend::history::HistoryQuery;
    use proptest::prelude::*;
    prop_oneof![
        4 => (1u8..6).prop_map(TailStep::Publish),
        1 => (1u8..12).prop_map(TailStep::CutThenPublish),
        1 => Just(TailStep::NewEpoch),
        1 => (1u8..10).prop_map(TailStep::Rejoin),
        3 => (0usize..14).prop_map(|n| TailStep::Read(HistoryQuery::Last(n))),
        3 => (0u64..40, 1usize..14)
            .prop_map(|(offset, limit)| TailStep::Read(HistoryQuery::After { offset, limit })),
    ]
}

/// Publishes the next numbered message (`p<n>`) to `group` through
/// `node`, counting it in `published`.
async fn publish_next(node: &TestServer, group: &str, published: &mut u64) {
    *published += 1;
    node.hub
        .to(group)
        .publish(format!("p{published}"))
        .await
        .expect("publish");
}

/// The node-local tail against Redis itself: random publishes (trimmed at
/// a history size of 8), gaps in the tail node's live stream (its
/// subscriber connection cut while messages are published), new epochs
/// (the stream lost in Redis) and reads. Node A keeps a tail (it has a
/// member); node B keeps none (`history_cache: 0`), so every read of B is
/// a read of Redis. Once A has delivered everything published, every read
/// on A — from its tail or, where the tail does not cover it, from Redis —
/// answers exactly what B reads from Redis. Reads the tail served are
/// counted, so the test fails if the tail never served any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_answers_exactly_what_redis_history_holds_under_random_publishes_gaps_and_epochs()
{
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config as Cases, TestRunner};

    let redis = TestRedis::start().await;
    let node = |name: &str, history_cache: usize| {
        Hub::builder()
            .node_id(format!("{name}-{:04x}", rand::random::<u16>()))
            .config(Config {
                history_cache,
                ..config(&["tailprop-*=8:1h"])
            })
            .backend(fast_options(redis.url()))
            .build()
            .expect("a clustered hub")
    };
    let a = TestServer::start(node("tailprop-a", 1 << 20)).await;
    let b = TestServer::start(node("tailprop-b", 0)).await;
    common::wait_until("both nodes reach Redis", || {
        a.hub.status().connected && b.hub.status().connected
    })
    .await;
    let mut conn = redis.client().await;
    let mut runner = TestRunner::new(Cases {
        cases: 8,
        ..Cases::default()
    });
    let steps = proptest::collection::vec(tail_step(), 10..40);
    let (mut tail_reads, mut compared) = (0, 0);
    for case in 0..8 {
        let plan = steps
            .new_tree(&mut runner)
            .expect("a plan of steps")
            .current();
        let group = format!("tailprop-{case}");
        // A raw member: it keeps A subscribed and its tail going whatever
        // happens (a `groupcast.v1` client would be closed with 4010 when a
        // gap is larger than what history holds).
        let mut watcher = Client::connect(&a.ws_url(&group)).await;
        wait_until_async("A listens to the group", || async {
            redis.numsub(&format!("group:{group}")).await == 1
        })
        .await;
        let mut published = 0u64;
        for step in &plan {
            match step {
                TailStep::Publish(n) | TailStep::CutThenPublish(n) => {
                    if matches!(step, TailStep::CutThenPublish(_)) {
                        cut_subscriber_connections(&mut conn).await;
                    }
                    for _ in 0..*n {
                        publish_next(&b, &group, &mut published).await;
                    }
                    if matches!(step, TailStep::CutThenPublish(_)) {
                        // Once A listens again, one more message heard
                        // live shows A any gap, which it repairs.
                        wait_until_async("A listens to the group again", || async {
                            redis.numsub(&format!("group:{group}")).await == 1
                        })
                        .await;
                        publish_next(&b, &group, &mut published).await;
                    }
                }
                TailStep::Rejoin(n) => {
                    drop(watcher);
                    wait_until_async("A leaves the group", || async {
                        redis.numsub(&format!("group:{group}")).await == 0
                    })
                    .await;
                    // Unheard by A, kept by Redis.
                    for _ in 0..*n {
                        publish_next(&b, &group, &mut published).await;
                    }
                    watcher = Client::connect(&a.ws_url(&group)).await;
                    wait_until_async("A listens to the group again", || async {
                        redis.numsub(&format!("group:{group}")).await == 1
                    })
                    .await;
                    publish_next(&b, &group, &mut published).await;
                }
                TailStep::NewEpoch => {
                    let stream = format!("groupcast:history:{{group:{group}}}");
                    let epoch = format!("groupcast:history-epoch:{{group:{group}}}");
                    let _: i64 = query(&mut conn, &["DEL", &stream, &epoch]).await;
                    publish_next(&b, &group, &mut published).await;
                }
                TailStep::Read(read) => {
                    let group = groupcast::GroupName::new(&group).unwrap();
                    let before = a.hub.metrics().history_reads_tail.get();
                    let on_a = a.hub.history(&group, *read).await.unwrap().unwrap();
                    let from_redis = b.hub.history(&group, *read).await.unwrap().unwrap();
                    tail_reads += a.hub.metrics().history_reads_tail.get() - before;
                    compared += 1;
                    let shown = |h: &groupcast::resume::History| {
                        let messages: Vec<(u64, String)> = h
                            .messages
                            .iter()
                            .map(|(offset, m)| (*offset, m.as_text().unwrap_or("?").to_string()))
                            .collect();
                        (h.epoch.clone(), h.top, messages)
                    };
                    assert_eq!(
                        shown(&on_a),
                        shown(&from_redis),
                        "case {case}, {read:?} after {plan:?}"
                    );
                    continue;
                }
            }
            // Whatever happened, A delivers every message (a gap is
            // repaired from Redis) before the next step, so its tail, if it
            // serves, is as current as Redis.
            let last = format!("p{published}");
            while watcher.recv_text().await != last {}
        }
    }
    eprintln!("{compared} reads compared, {tail_reads} served by A's tail");
    assert!(tail_reads > 0, "the tail served no read: nothing was shown");
}
