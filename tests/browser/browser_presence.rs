//! "Who is here" in headless Chromium: the demo page (`GET /`) and its JS
//! client with `presence: true`, on two clustered in-process nodes (one
//! Redis, tokens, presence and join/leave frames for the group). Alice's
//! page on one node lists herself, then Bob joining from a page on the
//! other node (by sub, with his node), then Bob leaving, with the count
//! exact each time, and her client's `members()` agrees with
//! `GET /api/groups/{group}/members`; a screenshot goes to
//! `target/demo-presence.png`. A group without presence: the page says
//! so, connects without it, and gets messages as before
//! (`target/demo-presence-off.png`).
//!
//! Needs Chromium and chromedriver (see `tests/common/browser.rs`) and
//! Docker for Redis (see `tests/common/redis.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use fantoccini::Client as Browser;
use fantoccini::wd::WindowHandle;
use groupcast::auth::{
    ClientAuth, GroupPatterns, KeySet, MintRequest, TokenVerifier, VerifyOptions, mint_hs256,
};
use groupcast::{Config, GroupName, Hub};
use serde_json::Value;

use crate::common::browser::{Chromedriver, wait_for_script};
use crate::common::redis::{TestRedis, fast_options};
use crate::common::{TestServer, http, wait_until, wait_until_async};

const SECRET: &[u8] = b"browser-presence-secret-of-32-bytes-or-more";
const GROUP: &str = "lobby/presence-browser";

/// What the demo page shows in its "Who is here" panel, and what its
/// client's `members()` says (null without presence).
const PANEL: &str = r##"
    const client = window.groupcastDemo && window.groupcastDemo.client;
    const members = client && client.members();
    return {
        status: document.getElementById("status").textContent,
        count: document.getElementById("presenceCount").textContent,
        note: document.getElementById("presenceNote").textContent,
        shown: Array.from(document.querySelectorAll("#members li")).map((li) => ({
            sub: li.dataset.sub ?? null,
            text: li.textContent,
            me: li.classList.contains("me"),
        })),
        members: members && members.map((m) => ({ session: m.session, node: m.node, sub: m.sub })),
        messages: Array.from(document.querySelectorAll("#log li.msg")).map((li) => li.textContent),
        log: Array.from(document.querySelectorAll("#log li")).map((li) => li.textContent),
    };
"##;

/// A node on `redis` with tokens required, presence and join/leave frames
/// in [`GROUP`] and a short grace.
async fn node(redis: &TestRedis, name: &str) -> TestServer {
    let mut keys = KeySet::new();
    keys.add_secret(None, SECRET).expect("a secret");
    let hub = Hub::builder()
        .node_id(name)
        .backend(fast_options(redis.url()))
        .client_auth(ClientAuth::with_tokens(TokenVerifier::new(
            keys,
            VerifyOptions::default(),
        )))
        .config(Config {
            presence: GroupPatterns::parse([GROUP]).expect("patterns"),
            join_leave: GroupPatterns::parse([GROUP]).expect("patterns"),
            presence_grace: Duration::from_millis(200),
            max_connections_per_ip: 0,
            ..Config::default()
        })
        .build()
        .expect("a hub");
    TestServer::start(hub).await
}

/// The demo page on `node`, joining [`GROUP`] as `sub` (a link with
/// `?group=` and `?token=`).
fn demo_url(node: &TestServer, sub: &str) -> String {
    let token = mint_hs256(SECRET, &MintRequest::new(sub, [GROUP])).expect("a token");
    node.http_url(&format!("/?group={GROUP}&token={token}"))
}

async fn focus(browser: &Browser, window: &WindowHandle) {
    browser
        .switch_to_window(window.clone())
        .await
        .expect("switch tab");
}

/// The subs the panel lists, in order.
fn shown_subs(panel: &Value) -> Vec<String> {
    panel["shown"]
        .as_array()
        .map(|shown| {
            shown
                .iter()
                .map(|li| li["sub"].as_str().unwrap_or("anonymous").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the panel lists exactly `subs` (in any order), one
/// connection each, with the count `(n)` and the note "n connection(s), n
/// user(s)"; the panel then.
async fn panel_lists(browser: &Browser, subs: &[&str]) -> Value {
    let want: BTreeSet<String> = subs.iter().map(|s| s.to_string()).collect();
    let n = subs.len();
    let count = format!("({n})");
    let note = if n == 1 {
        "1 connection, 1 user".to_string()
    } else {
        format!("{n} connections, {n} users")
    };
    wait_for_script(
        browser,
        &format!("the panel to list {want:?} ({note})"),
        PANEL,
        |panel| {
            let shown = shown_subs(panel);
            shown.len() == n
                && shown.iter().cloned().collect::<BTreeSet<_>>() == want
                && panel["count"] == count.as_str()
                && panel["note"] == note.as_str()
        },
    )
    .await
}

/// (session, node, sub) of every member, as `GET /api/groups/{group}/members`
/// on `node` lists them.
async fn api_members(node: &TestServer) -> BTreeSet<(String, String, String)> {
    let (status, page) =
        http::get_json(&node.http_url(&format!("/api/groups/{GROUP}/members"))).await;
    assert_eq!(status, 200, "{page}");
    assert!(page["next_cursor"].is_null(), "one page: {page}");
    page["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_string(),
                m["node"].as_str().unwrap_or_default().to_string(),
                m["sub"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The same of the page's `members()`.
fn page_members(panel: &Value) -> BTreeSet<(String, String, String)> {
    panel["members"]
        .as_array()
        .unwrap_or_else(|| panic!("members() is null: {panel}"))
        .iter()
        .map(|m| {
            (
                m["session"].as_str().unwrap_or_default().to_string(),
                m["node"].as_str().unwrap_or_default().to_string(),
                m["sub"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until the page's `members()` (in the current tab) and the API on
/// `node` list the same members, `n` of them.
async fn members_agree_with_the_api(browser: &Browser, node: &TestServer, n: usize) {
    let deadline = tokio::time::Instant::now() + crate::common::WAIT;
    loop {
        let panel = browser.execute(PANEL, vec![]).await.expect("read the page");
        let api = api_members(node).await;
        let page = page_members(&panel);
        if page == api && page.len() == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "members() and the API disagree (or are not {n}): page {page:?}, API {api:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_who_joins_and_leaves_on_another_node_and_members_agrees_with_the_api()
{
    let redis = TestRedis::start().await;
    let a = node(&redis, "browser-presence-a").await;
    let b = node(&redis, "browser-presence-b").await;
    wait_until_async("both nodes see each other", || async {
        a.hub.nodes().await.map(|n| n.len()).unwrap_or(0) == 2
    })
    .await;

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser
        .set_window_size(1100, 800)
        .await
        .expect("size the window");
    let alice = browser.window().await.expect("the first tab");
    browser
        .goto(&demo_url(&a, "alice"))
        .await
        .expect("open alice's page on a");
    let panel = panel_lists(&browser, &["alice"]).await;
    assert_eq!(panel["shown"][0]["me"], true, "her own entry: {panel}");
    members_agree_with_the_api(&browser, &a, 1).await;

    // Bob joins from a page on the other node: alice's panel lists him,
    // by sub, on his node.
    let bob = browser.new_window(true).await.expect("a second tab").handle;
    focus(&browser, &bob).await;
    browser
        .goto(&demo_url(&b, "bob"))
        .await
        .expect("open bob's page on b");
    panel_lists(&browser, &["alice", "bob"]).await;
    focus(&browser, &alice).await;
    let panel = panel_lists(&browser, &["alice", "bob"]).await;
    let entry = panel["shown"]
        .as_array()
        .and_then(|shown| shown.iter().find(|li| li["sub"] == "bob"))
        .unwrap_or_else(|| panic!("bob's entry: {panel}"))
        .clone();
    assert_eq!(entry["me"], false, "{panel}");
    let text = entry["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("bob")
            && text.contains("node browser-presence-b")
            && text.contains("since"),
        "bob's entry says who, where and since when: {text:?}"
    );
    members_agree_with_the_api(&browser, &a, 2).await;
    members_agree_with_the_api(&browser, &b, 2).await;

    let png = browser.screenshot().await.expect("a screenshot");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo-presence.png");
    std::fs::write(&path, png).expect("save the screenshot");
    eprintln!("demo presence screenshot: {}", path.display());

    // Bob leaves (his page goes away): alice's panel is her alone again.
    focus(&browser, &bob).await;
    browser.goto("about:blank").await.expect("leave bob's page");
    focus(&browser, &alice).await;
    panel_lists(&browser, &["alice"]).await;
    members_agree_with_the_api(&browser, &a, 1).await;

    let _ = browser.close().await;
    let group = GroupName::new(GROUP).expect("a group");
    wait_until("the pages disconnect", || {
        a.hub.member_count(&group) == 0 && b.hub.member_count(&group) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_says_presence_is_off_for_a_group_without_it_and_still_gets_messages() {
    // No --presence at all: the page's `?presence=1` is refused (400).
    let server = TestServer::start(Hub::builder().build().expect("a hub")).await;
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&server.http_url("/?group=plain/no-presence"))
        .await
        .expect("open the demo");
    let panel = wait_for_script(
        &browser,
        "the page to say presence is off",
        PANEL,
        |panel| {
            panel["status"] == "connected"
                && panel["note"]
                    .as_str()
                    .is_some_and(|note| note.starts_with("presence is off for this group"))
        },
    )
    .await;
    let note = panel["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("--presence 'plain/no-presence'") && note.contains("--join-leave"),
        "says how to turn it on: {note:?}"
    );
    assert_eq!(panel["members"], Value::Null, "{panel}");
    assert_eq!(panel["shown"], serde_json::json!([]), "{panel}");
    assert_eq!(panel["count"], "", "{panel}");
    assert!(
        !panel["log"].as_array().is_some_and(|log| log
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.starts_with("closed")))),
        "the refused attempt is no line in the log: {panel}"
    );

    // It works as before: one session, which gets the group's messages.
    let group = GroupName::new("plain/no-presence").expect("a group");
    wait_until("the page's one session", || {
        server.hub.member_count(&group) == 1
    })
    .await;
    server
        .hub
        .to("plain/no-presence")
        .send("still here")
        .expect("sent");
    wait_for_script(&browser, "the message", PANEL, |panel| {
        panel["messages"] == serde_json::json!(["still here"])
    })
    .await;
    let png = browser.screenshot().await.expect("a screenshot");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo-presence-off.png");
    std::fs::write(&path, png).expect("save the screenshot");
    let _ = browser.close().await;
}
