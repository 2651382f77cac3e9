//! Two more reconnects across a killed node, in headless Chromium, on a
//! two-node cluster of spawned binaries sharing one Redis, with history on
//! (`--history '*=1000:1h'`); numbered messages are published through node
//! b's HTTP API at a bounded rate while node a is SIGKILLed mid-flow:
//!
//! * the browser's own `EventSource` on `/sse/<group>`: it reconnects by
//!   itself (the stream's `retry: 1000`) and sends the last id it saw as
//!   `Last-Event-ID`; node b continues right after it;
//! * the JavaScript client in five groups on one connection (the URL's,
//!   then `subscribe` ×4): it reconnects to b and resumes all five in one
//!   round trip.
//!
//! Both end with every message of every group exactly once, in order.
//!
//! An `EventSource` always reconnects to the URL it was made with, and an
//! event stream has no CORS here, so the page, and its stream, are served
//! through [`FailoverProxy`]: a TCP forwarder on one loopback port that
//! hands each new connection to the first node that accepts it, a then b,
//! as a load balancer would. Killing a cuts the connections it carries;
//! the browser's reconnect lands on b.
//!
//! Needs Chromium and chromedriver (see `tests/common/browser.rs`) and
//! Docker for Redis (see `tests/common/redis.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::WAIT;
use crate::common::browser::{Chromedriver, wait_for_script};
use crate::common::http::post_text_with;
use crate::common::node::NodeProcess;
use crate::common::redis::TestRedis;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Published after a group's numbered messages: once the page shows it,
/// anything delivered twice would already be on the page.
const END: &str = "end";

fn numbered(n: usize) -> String {
    format!("m-{n:04}")
}

/// `1..=total` numbered, then [`END`]: what a page must end with.
fn want(total: usize) -> Vec<String> {
    (1..=total).map(numbered).chain([END.to_string()]).collect()
}

/// A TCP forwarder on a loopback port: each connection goes to the first
/// of `upstreams` that accepts it, and both ends close as soon as either
/// does (so a killed node's connections end for the browser too).
struct FailoverProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FailoverProxy {
    async fn start(upstreams: Vec<SocketAddr>) -> FailoverProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let upstreams = upstreams.clone();
                tokio::spawn(async move {
                    for upstream in upstreams {
                        if let Ok(server) = TcpStream::connect(upstream).await {
                            forward(client, server).await;
                            return;
                        }
                    }
                    // No node takes it: the browser sees the connection
                    // close and retries, as with a dead backend.
                });
            }
        });
        FailoverProxy { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for FailoverProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways until either side ends, then drops both.
async fn forward(client: TcpStream, server: TcpStream) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::select! {
        _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
        _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
    }
}

/// Two clustered nodes with history on, both ready.
async fn two_nodes(redis: &TestRedis, name: &str) -> (NodeProcess, NodeProcess) {
    let history = ["--history", "*=1000:1h"];
    let a = NodeProcess::spawn_clustered(&format!("{name}-a"), &redis.url(), &history);
    let b = NodeProcess::spawn_clustered(&format!("{name}-b"), &redis.url(), &history);
    a.wait_ready().await;
    b.wait_ready().await;
    (a, b)
}

/// Publishes `total` numbered messages, then [`END`], to `group` through
/// `node`'s API, one every `every` (a paced loop, not a sleep: each tick
/// publishes one), checking that the offsets grow.
fn publish(node: &NodeProcess, group: &str, total: usize, every: Duration) -> JoinHandle<()> {
    let url = node.url(&format!("/api/groups/{group}/messages"));
    let group = group.to_string();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_offset = 0;
        for text in want(total) {
            tick.tick().await;
            let response = post_text_with(&http, &url, text.clone()).await;
            assert_eq!(response.status(), 200, "publish {text} to {group}");
            let answer: Value = response.json().await.expect("a JSON publish answer");
            let offset = answer["offset"]
                .as_u64()
                .unwrap_or_else(|| panic!("no offset in the publish answer {answer}"));
            assert!(offset > last_offset, "offsets grow in {group}: {answer}");
            last_offset = offset;
        }
    })
}

/// Panics, saying what is missing and what came twice, unless `got` is
/// exactly `want`.
fn assert_exactly_once(what: &str, got: &[String], want: &[String]) {
    if got == want {
        return;
    }
    let missing: Vec<&String> = want.iter().filter(|m| !got.contains(m)).collect();
    let mut sorted = got.to_vec();
    sorted.sort();
    let twice: Vec<&String> = sorted
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| &w[0])
        .collect();
    panic!(
        "{what}: not every message once, in order: {} received, missing {missing:?}, \
         twice {twice:?}, received {got:?}",
        got.len()
    );
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("an array: {value}"))
        .iter()
        .map(|m| m.as_str().expect("text").to_string())
        .collect()
}

// ---- EventSource --------------------------------------------------------

const SSE_GROUP: &str = "sse/browser";
/// 300 messages, one every 5 ms: the kill and the reconnect (about a
/// second: the stream's `retry: 1000`) fall in the middle of the flow.
const SSE_TOTAL: usize = 300;
const SSE_KILL_AFTER: usize = 80;

/// In the page: an `EventSource` on `arguments[0]`, recording what it
/// dispatches in `window.sseTest`.
const SSE_START: &str = r#"
    const [url] = arguments;
    const seen = { messages: [], ids: [], welcomes: [], resets: [], closes: [], opens: 0, errors: 0 };
    const source = new EventSource(url);
    source.addEventListener("welcome", (e) => seen.welcomes.push(JSON.parse(e.data)));
    source.addEventListener("reset", (e) => seen.resets.push(JSON.parse(e.data)));
    source.addEventListener("close", (e) => seen.closes.push(JSON.parse(e.data)));
    source.onmessage = (e) => {
        seen.messages.push(e.data);
        seen.ids.push(e.lastEventId);
    };
    source.onopen = () => seen.opens++;
    source.onerror = () => seen.errors++;
    window.sseTest = { source, seen };
    return true;
"#;

/// In the page: a summary cheap enough to poll.
const SSE_SUMMARY: &str = r#"
    const { source, seen } = window.sseTest;
    return {
        count: seen.messages.length,
        last: seen.messages.length ? seen.messages[seen.messages.length - 1] : null,
        welcomes: seen.welcomes,
        resets: seen.resets,
        closes: seen.closes,
        opens: seen.opens,
        errors: seen.errors,
        readyState: source.readyState,
    };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_source_reconnects_to_the_surviving_node_with_every_message_once() {
    let redis = TestRedis::start().await;
    let (mut a, b) = two_nodes(&redis, "browser-sse").await;
    let proxy = FailoverProxy::start(vec![a.addr, b.addr]).await;

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&proxy.url("/"))
        .await
        .expect("open a page through the proxy");
    // `history=` is for the first connection: the reconnect's
    // Last-Event-ID wins over it (the browser repeats the URL unchanged).
    let started = browser
        .execute(
            SSE_START,
            vec![json!(format!("/sse/{SSE_GROUP}?history=1000"))],
        )
        .await
        .expect("open the EventSource");
    assert_eq!(started, json!(true));

    let summary = wait_for_script(&browser, "the welcome from node a", SSE_SUMMARY, |s| {
        s["welcomes"].as_array().is_some_and(|w| w.len() == 1)
    })
    .await;
    let welcome = &summary["welcomes"][0];
    assert_eq!(welcome["node"], a.name, "the proxy's first node: {welcome}");
    assert_eq!(welcome["history"], true, "a history group: {welcome}");

    let publisher = publish(&b, SSE_GROUP, SSE_TOTAL, Duration::from_millis(5));
    wait_for_script(
        &browser,
        &format!("{SSE_KILL_AFTER} messages on the page"),
        SSE_SUMMARY,
        |s| s["count"].as_u64() >= Some(SSE_KILL_AFTER as u64),
    )
    .await;
    a.kill();

    // The browser reconnects by itself, through the proxy, to b.
    let summary = wait_for_script(&browser, "the welcome from node b", SSE_SUMMARY, |s| {
        s["welcomes"].as_array().is_some_and(|w| w.len() == 2)
    })
    .await;
    let welcome = &summary["welcomes"][1];
    assert_eq!(welcome["node"], b.name, "the surviving node: {welcome}");
    assert_eq!(
        welcome["recovered"], true,
        "Last-Event-ID is retained, so the resume is complete: {welcome}"
    );
    assert!(
        summary["errors"].as_u64() >= Some(1),
        "the stream broke: {summary}"
    );

    tokio::time::timeout(WAIT * 2, publisher)
        .await
        .expect("the publisher finishes")
        .expect("every publish succeeded");
    let done = wait_for_script(&browser, "the end marker on the page", SSE_SUMMARY, |s| {
        s["last"] == END
    })
    .await;
    let received = browser
        .execute(
            "const { seen } = window.sseTest; return { messages: seen.messages, ids: seen.ids };",
            vec![],
        )
        .await
        .expect("read the page");
    assert_exactly_once(
        "the EventSource",
        &strings(&received["messages"]),
        &want(SSE_TOTAL),
    );

    // Every id is `<epoch>:<offset>`: one epoch, consecutive offsets.
    let ids = strings(&received["ids"]);
    let epoch = ids[0].rsplit_once(':').expect("an epoch:offset id").0;
    let offsets: Vec<u64> = ids
        .iter()
        .map(|id| {
            let (e, offset) = id.rsplit_once(':').expect("an epoch:offset id");
            assert_eq!(e, epoch, "one epoch: {id}");
            offset.parse().expect("a numeric offset")
        })
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "offsets are consecutive: {offsets:?}"
    );
    assert_eq!(done["resets"], json!([]), "a recovered resume is no reset");
    assert_eq!(done["closes"], json!([]), "no close event: {done}");
    assert_eq!(done["readyState"], 1, "open on b");

    browser.close().await.expect("end the browser session");
}

// ---- the JS client in five groups ----------------------------------------

/// The connection's group (in the URL) and the four it subscribes.
const GROUPS: [&str; 5] = ["multi/0", "multi/1", "multi/2", "multi/3", "multi/4"];
/// Per group: 120 messages, one every 10 ms; five publishers at once.
const MULTI_TOTAL: usize = 120;
/// Node a is killed once the page has this many messages in all.
const MULTI_KILL_AFTER: usize = 150;

/// In the page: the client on `arguments[0]` (node URLs) for the first of
/// `arguments[1]` (groups), the others subscribed; messages kept per group.
const MULTI_START: &str = r#"
    const [urls, groups] = arguments;
    return import("/clients/groupcast.js").then(({ GroupcastClient }) => {
        const seen = { byGroup: {}, offsets: {}, count: 0, welcomes: [], subscribed: [], resets: [], errors: [] };
        for (const g of groups) {
            seen.byGroup[g] = [];
            seen.offsets[g] = [];
        }
        const client = new GroupcastClient(urls, { group: groups[0], backoff: { min: 50, max: 500 } });
        client.on("welcome", (w) => seen.welcomes.push(w));
        client.on("subscribed", (s) => seen.subscribed.push(s));
        client.on("reset", (r) => seen.resets.push(r));
        client.on("error", (e) => seen.errors.push(e));
        client.on("message", (m) => {
            (seen.byGroup[m.group] ??= []).push(m.data);
            (seen.offsets[m.group] ??= []).push(m.offset);
            seen.count++;
        });
        for (const g of groups.slice(1)) client.subscribe(g);
        window.multiTest = { client, seen };
        return true;
    });
"#;

const MULTI_SUMMARY: &str = r#"
    const { client, seen } = window.multiTest;
    const last = {};
    for (const [g, messages] of Object.entries(seen.byGroup)) last[g] = messages.at(-1) ?? null;
    return {
        count: seen.count,
        last,
        welcomes: seen.welcomes,
        subscribed: seen.subscribed,
        resets: seen.resets,
        errors: seen.errors,
        state: client.state,
        groups: client.groups,
        stats: client.stats,
    };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_resumes_five_groups_on_one_connection_with_every_message_once() {
    let redis = TestRedis::start().await;
    let (mut a, b) = two_nodes(&redis, "browser-multi").await;

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    // Served by b, the node that survives (see browser_resume.rs).
    browser.goto(&b.url("/")).await.expect("open a page on b");
    let urls = json!([format!("ws://{}", a.addr), format!("ws://{}", b.addr)]);
    let started = browser
        .execute(MULTI_START, vec![urls, json!(GROUPS)])
        .await
        .expect("start the client in the page");
    assert_eq!(started, json!(true));

    // Joined on a: the welcome for the first group, an answer for each of
    // the others.
    let summary = wait_for_script(&browser, "five groups joined on a", MULTI_SUMMARY, |s| {
        s["welcomes"].as_array().is_some_and(|w| w.len() == 1)
            && s["subscribed"].as_array().is_some_and(|w| w.len() == 4)
    })
    .await;
    assert_eq!(summary["welcomes"][0]["node"], a.name);
    assert_eq!(summary["groups"], json!(GROUPS));
    assert_eq!(summary["errors"], json!([]));

    let publishers: Vec<JoinHandle<()>> = GROUPS
        .iter()
        .map(|group| publish(&b, group, MULTI_TOTAL, Duration::from_millis(10)))
        .collect();
    wait_for_script(
        &browser,
        &format!("{MULTI_KILL_AFTER} messages on the page"),
        MULTI_SUMMARY,
        |s| s["count"].as_u64() >= Some(MULTI_KILL_AFTER as u64),
    )
    .await;
    a.kill();

    // On b: the URL's group in the welcome, the four others in one
    // `subscribed` each, every one recovered.
    let summary = wait_for_script(&browser, "five groups resumed on b", MULTI_SUMMARY, |s| {
        s["welcomes"].as_array().is_some_and(|w| w.len() == 2)
            && s["subscribed"].as_array().is_some_and(|w| w.len() == 8)
    })
    .await;
    let welcome = &summary["welcomes"][1];
    assert_eq!(welcome["node"], b.name, "the surviving node: {welcome}");
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let resumed = &summary["subscribed"].as_array().unwrap()[4..];
    for answer in resumed {
        assert_eq!(answer["recovered"], true, "every group resumes: {answer}");
    }
    let mut answered: Vec<&str> = resumed
        .iter()
        .map(|s| s["group"].as_str().unwrap())
        .collect();
    answered.sort();
    assert_eq!(answered, GROUPS[1..].to_vec());

    for publisher in publishers {
        tokio::time::timeout(WAIT * 2, publisher)
            .await
            .expect("the publishers finish")
            .expect("every publish succeeded");
    }
    let done = wait_for_script(
        &browser,
        "the end marker of every group",
        MULTI_SUMMARY,
        |s| GROUPS.iter().all(|g| s["last"][g] == END),
    )
    .await;
    let received = browser
        .execute(
            "const { seen } = window.multiTest; return { byGroup: seen.byGroup, offsets: seen.offsets };",
            vec![],
        )
        .await
        .expect("read the page");
    for group in GROUPS {
        assert_exactly_once(
            group,
            &strings(&received["byGroup"][group]),
            &want(MULTI_TOTAL),
        );
        let offsets: Vec<u64> = received["offsets"][group]
            .as_array()
            .expect("offsets")
            .iter()
            .map(|o| o.as_u64().expect("every message has an offset"))
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "{group}: offsets are consecutive: {offsets:?}"
        );
    }
    assert_eq!(done["resets"], json!([]), "recovered resumes are no reset");
    assert_eq!(done["stats"]["duplicates"], 0, "stats: {}", done["stats"]);
    assert_eq!(done["stats"]["gaps"], 0, "stats: {}", done["stats"]);
    assert_eq!(done["state"], "open");

    browser.close().await.expect("end the browser session");
}
