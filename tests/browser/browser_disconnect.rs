//! The JavaScript client (`clients/js/groupcast.js`) in headless Chromium,
//! disconnected on demand through the other node of a two-node cluster:
//! told it may come back (4009), it reconnects and is welcomed again;
//! told not to (`reconnect: false`, 4509), it stops, says why in its
//! `closed` event, and its node sees no new session.
//!
//! Needs Chromium and chromedriver (see `tests/common/browser.rs`) and
//! Docker for Redis (see `tests/common/redis.rs`).

use groupcast::Hub;
use serde_json::{Value, json};

use crate::common::browser::{Chromedriver, wait_for_script};
use crate::common::redis::{TestRedis, fast_options};
use crate::common::{TestServer, http, wait_until, wait_until_async};

const GROUP: &str = "disconnect/browser";

/// In the page: imports the client and starts it on `arguments[0]` for
/// `arguments[1]`, keeping what it reports in `window.disconnectTest`.
const START: &str = r#"
    const [url, group] = arguments;
    return import("/clients/groupcast.js").then(({ GroupcastClient }) => {
        const seen = { welcomes: [], closes: [], reconnecting: [] };
        const client = new GroupcastClient(url, { group, backoff: { min: 50, max: 500 } });
        client.on("welcome", (w) => seen.welcomes.push(w));
        client.on("closed", (c) => seen.closes.push(c));
        client.on("reconnecting", (r) => seen.reconnecting.push(r));
        window.disconnectTest = { client, seen };
        return true;
    });
"#;

/// In the page: what the client reported so far, and its state.
const SUMMARY: &str = r#"
    const { client, seen } = window.disconnectTest;
    return { ...seen, state: client.state, reconnects: client.stats.reconnects };
"#;

/// `POST /api/sessions/{id}/disconnect` on `node` with `body`: 200.
async fn disconnect(node: &TestServer, id: &str, body: &str) {
    let url = node.http_url(&format!("/api/sessions/{id}/disconnect"));
    let (status, answer) = http::post(&url, "application/json", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["disconnected"], 1, "{answer}");
}

/// The page's live session on `node` (its only one), once it is there.
async fn the_session(node: &TestServer) -> String {
    wait_until("the page's session on b", || {
        node.hub.sessions().iter().any(|s| !s.is_closed())
    })
    .await;
    let sessions = node.hub.sessions();
    let session = sessions
        .iter()
        .find(|s| !s.is_closed())
        .expect("the page's session");
    session.id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_reconnects_after_4009_and_stops_after_4509() {
    let redis = TestRedis::start().await;
    let mut nodes = Vec::new();
    for name in ["browser-disc-a", "browser-disc-b"] {
        let hub = Hub::builder()
            .node_id(name)
            .backend(fast_options(redis.url()))
            .build()
            .expect("a hub");
        nodes.push(TestServer::start(hub).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_until_async("both nodes see each other", || async {
        a.hub.nodes().await.map(|n| n.len()).unwrap_or(0) == 2
    })
    .await;

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&a.http_url("/"))
        .await
        .expect("open a page on a");
    let url = json!(format!("ws://{}", b.addr));
    let started = browser
        .execute(START, vec![url, json!(GROUP)])
        .await
        .expect("start the client in the page");
    assert_eq!(started, json!(true));
    wait_for_script(&browser, "the first welcome", SUMMARY, |s| {
        s["welcomes"].as_array().is_some_and(|w| w.len() == 1)
    })
    .await;

    // "You may come back": the client reconnects, and is welcomed again.
    let first = the_session(b).await;
    disconnect(a, &first, "").await;
    let summary = wait_for_script(&browser, "the second welcome", SUMMARY, |s| {
        s["welcomes"].as_array().is_some_and(|w| w.len() == 2)
    })
    .await;
    assert_eq!(
        summary["closes"][0],
        json!({"code": 4009, "reason": "disconnected", "reconnect": true}),
        "{summary}"
    );
    assert_eq!(summary["reconnects"], 1, "{summary}");

    // "Do not come back": the client stops and says why. (Its reconnect
    // asked for its session back, `?session=`: the live session on b may
    // have the first one's id.)
    let second = the_session(b).await;
    disconnect(a, &second, r#"{"reconnect": false, "reason": "banned"}"#).await;
    let summary: Value = wait_for_script(&browser, "the client stopped", SUMMARY, |s| {
        s["state"] == "closed"
    })
    .await;
    assert_eq!(
        summary["closes"][1],
        json!({"code": 4509, "reason": "banned", "reconnect": false}),
        "{summary}"
    );
    assert_eq!(
        summary["reconnects"], 1,
        "no reconnect after 4509: {summary}"
    );
    assert_eq!(summary["reconnecting"].as_array().map(Vec::len), Some(1));
    // A stopped client has no timer left (`_stop`); b's last session goes.
    wait_until("b has no session left", || b.hub.session_count() == 0).await;
}
