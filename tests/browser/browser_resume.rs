//! The JavaScript client (`clients/js/groupcast.js`) in headless Chromium,
//! against a two-node cluster of spawned binaries with history on
//! (`--history '*=1000:1h'`): numbered messages flow, published through
//! node b's HTTP API at a bounded rate, while the page's client is
//! connected to node a. Node a is killed (SIGKILL: no close frame, no
//! drain); the client reconnects to b, the next URL of its list, resumes
//! with `since`/`epoch` from the last message it saw, and the page ends
//! with every message exactly once, in order.
//!
//! The page is served by b, the node that survives, so the document (and
//! the module it imported) outlives a; its client is given both nodes'
//! URLs, a first.
//!
//! Needs Chromium and chromedriver (see `tests/common/browser.rs`) and
//! Docker for Redis (see `tests/common/redis.rs`).

use std::time::Duration;

use crate::common;
use crate::common::browser::{Chromedriver, wait_for_script};
use crate::common::http::post_text_with;
use crate::common::node::NodeProcess;
use crate::common::redis::TestRedis;
use crate::common::{WAIT, wait_until_async};
use fantoccini::Client as Browser;
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;

const GROUP: &str = "resume/browser";
/// How many numbered messages are published.
const TOTAL: usize = 400;
/// One publish every 5 ms: 200 messages/s, so that the kill and the
/// reconnect fall in the middle of the flow (about 2 s in all).
const PUBLISH_EVERY: Duration = Duration::from_millis(5);
/// Node a is killed once the page has this many messages.
const KILL_AFTER: usize = 100;
/// Published after the numbered ones: once the page shows it, anything
/// delivered twice would already be on the page.
const END: &str = "end";

/// In the page: imports the client from the page's server and starts it on
/// `arguments[0]` (the list of node URLs) for `arguments[1]` (the group),
/// keeping what it reports in `window.resumeTest`. WebDriver waits for the
/// promise this returns.
const START: &str = r#"
    const [urls, group] = arguments;
    return import("/clients/groupcast.js").then(({ GroupcastClient }) => {
        const seen = { messages: [], offsets: [], welcomes: [], resets: [], closes: [] };
        const client = new GroupcastClient(urls, {
            group,
            // Quick retries: the surviving node is there at once.
            backoff: { min: 50, max: 500 },
        });
        client.on("welcome", (w) => seen.welcomes.push(w));
        client.on("message", (m) => {
            seen.messages.push(m.data);
            seen.offsets.push(m.offset);
        });
        client.on("reset", (r) => seen.resets.push(r));
        client.on("closed", (c) => seen.closes.push(c));
        window.resumeTest = { client, seen };
        return true;
    });
"#;

/// In the page: a summary of what the client reported so far (cheap
/// enough to poll: no message bodies but the last).
const SUMMARY: &str = r#"
    const { client, seen } = window.resumeTest;
    return {
        count: seen.messages.length,
        last: seen.messages.length ? seen.messages[seen.messages.length - 1] : null,
        welcomes: seen.welcomes,
        resets: seen.resets,
        closes: seen.closes,
        state: client.state,
        stats: client.stats,
    };
"#;

/// In the page: everything received, in order.
const RECEIVED: &str = r#"
    const { seen } = window.resumeTest;
    return { messages: seen.messages, offsets: seen.offsets };
"#;

fn numbered(n: usize) -> String {
    format!("m-{n:04}")
}

/// Waits until the page's client has been welcomed `n` times (1: the first
/// join); the page's [`SUMMARY`] then, and that `n`th welcome.
async fn wait_for_welcome(browser: &Browser, n: usize, what: &str) -> (Value, Value) {
    let summary = wait_for_script(browser, what, SUMMARY, |s| {
        s["welcomes"].as_array().is_some_and(|w| w.len() == n)
    })
    .await;
    let welcome = summary["welcomes"][n - 1].clone();
    (summary, welcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_resumes_on_the_surviving_node_with_every_message_once() {
    let redis = TestRedis::start().await;
    let history = ["--history", "*=1000:1h"];
    let mut a = NodeProcess::spawn_clustered("browser-resume-a", &redis.url(), &history);
    let b = NodeProcess::spawn_clustered("browser-resume-b", &redis.url(), &history);
    a.wait_ready().await;
    b.wait_ready().await;

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser.goto(&b.url("/")).await.expect("open a page on b");
    let urls = json!([format!("ws://{}", a.addr), format!("ws://{}", b.addr)]);
    let started = browser
        .execute(START, vec![urls, json!(GROUP)])
        .await
        .expect("start the client in the page");
    assert_eq!(started, json!(true));

    // Joined on a, in a group that keeps history.
    let (_, welcome) = wait_for_welcome(&browser, 1, "the welcome from node a").await;
    assert_eq!(welcome["node"], a.name, "the first URL is tried first");
    assert_eq!(
        welcome["history"], true,
        "the group keeps history: {welcome}"
    );
    let url = a.url(&format!("/api/groups/{GROUP}"));
    wait_until_async("node a counts the page's session", || async {
        common::http::get_json(&url).await.1["members"].as_u64() == Some(1)
    })
    .await;

    // The messages flow through b's API, one after the other, at a
    // bounded rate (a paced loop, not a sleep: each tick publishes one).
    let publish_url = b.url(&format!("/api/groups/{GROUP}/messages"));
    let publisher = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_offset = 0;
        for n in (1..=TOTAL).map(numbered).chain([END.to_string()]) {
            tick.tick().await;
            let response = post_text_with(&http, &publish_url, n.clone()).await;
            assert_eq!(response.status(), 200, "publish {n} through b");
            let answer: Value = response.json().await.expect("a JSON publish answer");
            // History groups: the answer carries the message's offset.
            let offset = answer["offset"]
                .as_u64()
                .unwrap_or_else(|| panic!("no offset in the publish answer {answer}"));
            assert!(offset > last_offset, "offsets grow: {answer}");
            last_offset = offset;
        }
    });

    // Mid-flow, the page's node dies.
    wait_for_script(
        &browser,
        &format!("{KILL_AFTER} messages on the page"),
        SUMMARY,
        |s| s["count"].as_u64() >= Some(KILL_AFTER as u64),
    )
    .await;
    a.kill();

    // The client notices, reconnects to b and resumes.
    let (resumed, welcome) = wait_for_welcome(&browser, 2, "the welcome from node b").await;
    assert_eq!(welcome["node"], b.name, "the next URL: the surviving node");
    assert_eq!(
        welcome["recovered"], true,
        "every message since the last one seen is retained: {welcome}"
    );
    let close = &resumed["closes"][0];
    assert_eq!(
        close["reconnect"], true,
        "a lost node is not final: {close}"
    );

    tokio::time::timeout(WAIT * 2, publisher)
        .await
        .expect("the publisher finishes")
        .expect("every publish succeeded");

    let done = wait_for_script(&browser, "the end marker on the page", SUMMARY, |s| {
        s["last"] == END
    })
    .await;
    let received = browser
        .execute(RECEIVED, vec![])
        .await
        .expect("read the page");

    let mut want: Vec<String> = (1..=TOTAL).map(numbered).collect();
    want.push(END.to_string());
    let got: Vec<String> = received["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m.as_str().expect("text messages").to_string())
        .collect();
    if got != want {
        let missing: Vec<&String> = want.iter().filter(|m| !got.contains(m)).collect();
        let mut sorted = got.clone();
        sorted.sort();
        let twice: Vec<&String> = sorted
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| &w[0])
            .collect();
        panic!(
            "the page does not show every message once, in order: {} received, \
             missing {missing:?}, twice {twice:?}",
            got.len()
        );
    }

    // One epoch, consecutive offsets: nothing skipped on the wire either.
    let offsets: Vec<u64> = received["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| o.as_u64().expect("every message has an offset"))
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "offsets are consecutive: {offsets:?}"
    );
    assert_eq!(done["resets"], json!([]), "a recovered resume is no reset");
    // The client drops duplicates defensively; the server's resume must
    // not have sent any in the first place.
    assert_eq!(
        done["stats"]["duplicates"], 0,
        "client stats: {}",
        done["stats"]
    );
    assert_eq!(done["stats"]["gaps"], 0, "client stats: {}", done["stats"]);
    assert_eq!(done["state"], "open");

    browser.close().await.expect("end the browser session");
}
