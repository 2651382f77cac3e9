//! The demo page (`GET /`) in a real headless Chromium, driven through
//! chromedriver with fantoccini: two pages in one group see each other's
//! messages; a page in another group does not.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages (see
//! `tests/common/browser.rs`, which starts them).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::browser::Chromedriver;
use common::{TestServer, WAIT, wait_until};
use fantoccini::wd::WindowHandle;
use fantoccini::{Client as Browser, Locator};
use groupcast::{GroupName, Hub, Message};
use serde_json::{Value, json};
use tokio::time::Instant;

/// One tab of the browser, showing the demo page.
struct Page {
    window: WindowHandle,
    name: &'static str,
}

impl Page {
    async fn focus(&self, browser: &Browser) {
        browser
            .switch_to_window(self.window.clone())
            .await
            .expect("switch tab");
    }

    /// Joins `group` through the page's form, as a user would.
    async fn join(&self, browser: &Browser, server: &TestServer, group: &str) {
        self.focus(browser).await;
        browser
            .goto(&server.http_url("/"))
            .await
            .expect("open the demo");
        let input = browser.find(Locator::Id("group")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(group).await.unwrap();
        browser
            .find(Locator::Id("connect"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for(browser, "the page to connect", |state| {
            state["status"] == "connected" && state["canSend"] == true
        })
        .await;
    }

    /// Types `text` into the message box and presses Send.
    async fn send(&self, browser: &Browser, text: &str) {
        self.focus(browser).await;
        let input = browser.find(Locator::Id("text")).await.unwrap();
        input.send_keys(text).await.unwrap();
        browser
            .find(Locator::Id("sendBtn"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// What the page shows: connection status and the received messages.
    async fn state(&self, browser: &Browser) -> Value {
        self.focus(browser).await;
        browser
            .execute(
                r##"return {
                    status: document.getElementById("status").textContent,
                    canSend: !document.getElementById("sendBtn").disabled,
                    messages: Array.from(document.querySelectorAll("#log li.msg"))
                        .map((li) => li.textContent),
                };"##,
                vec![],
            )
            .await
            .expect("read the page")
    }

    async fn wait_for(&self, browser: &Browser, what: &str, done: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.state(browser).await;
            if done(&state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}; the page shows {state}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page shows exactly `expected`, in order.
    async fn wait_messages(&self, browser: &Browser, expected: &[&str]) {
        let want = json!(expected);
        self.wait_for(browser, &format!("messages {want}"), |state| {
            state["messages"] == want
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_chats_within_a_group_only() {
    // The binary's `--client-messages group`: pages can send.
    let hub = Hub::builder()
        .on_text(|hub, session, text| {
            let _ = hub.to(session.group()).send(Message::text(text));
        })
        .build()
        .unwrap();
    let server = TestServer::start(hub).await;
    let addr: SocketAddr = server.addr;
    assert!(addr.ip().is_loopback());

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    let first = browser.window().await.unwrap();
    let second = browser.new_window(true).await.unwrap().handle;
    let third = browser.new_window(true).await.unwrap().handle;
    let alice = Page {
        window: first,
        name: "alice (room/1)",
    };
    let bob = Page {
        window: second,
        name: "bob (room/1)",
    };
    let carol = Page {
        window: third,
        name: "carol (room/2)",
    };

    alice.join(&browser, &server, "room/1").await;
    bob.join(&browser, &server, "room/1").await;
    carol.join(&browser, &server, "room/2").await;
    let room1 = GroupName::new("room/1").unwrap();
    let room2 = GroupName::new("room/2").unwrap();
    wait_until("the hub sees the three pages", || {
        server.hub.member_count(&room1) == 2 && server.hub.member_count(&room2) == 1
    })
    .await;

    // Each page in room/1 sees both pages' messages (its own included).
    alice.send(&browser, "hello from alice").await;
    bob.wait_messages(&browser, &["hello from alice"]).await;
    bob.send(&browser, "hi alice, bob here").await;
    alice
        .wait_messages(&browser, &["hello from alice", "hi alice, bob here"])
        .await;
    bob.wait_messages(&browser, &["hello from alice", "hi alice, bob here"])
        .await;

    // room/2 saw none of it: carol's own message is the first thing she
    // sees (anything from room/1 would have been queued before it).
    carol.send(&browser, "anyone in room 2?").await;
    carol.wait_messages(&browser, &["anyone in room 2?"]).await;

    // And room/1 did not see carol's: a later marker comes right after.
    server.hub.to("room/1").send("marker").unwrap();
    for page in [&alice, &bob] {
        page.wait_messages(
            &browser,
            &["hello from alice", "hi alice, bob here", "marker"],
        )
        .await;
    }
    carol.wait_messages(&browser, &["anyone in room 2?"]).await;

    // A link with ?group= joins at once.
    carol.focus(&browser).await;
    browser
        .goto(&server.http_url("/?group=room/1"))
        .await
        .unwrap();
    wait_until("the link joins room/1", || {
        server.hub.member_count(&room1) == 3 && server.hub.member_count(&room2) == 0
    })
    .await;
    server.hub.to("room/1").send("welcome").unwrap();
    carol.wait_messages(&browser, &["welcome"]).await;

    browser.close().await.expect("end the browser session");
    wait_until("the pages disconnect", || server.hub.session_count() == 0).await;
}

/// The page's client is served by the binary, as a JavaScript module
/// (browsers refuse module scripts of any other MIME type), and it is the
/// one in `clients/js/`.
#[tokio::test]
async fn the_js_client_is_served_as_a_module() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    let response = reqwest::get(server.http_url("/clients/groupcast.js"))
        .await
        .expect("GET /clients/groupcast.js");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/javascript"),
        "content-type {content_type}"
    );
    let body = response.text().await.unwrap();
    let file = include_str!("../clients/js/groupcast.js");
    assert_eq!(body, file);
    assert!(body.contains("export class GroupcastClient"));
}

/// With `--compression`, Chromium negotiates permessage-deflate (it offers
/// it on every WebSocket), and two pages receive every text exactly, while
/// each message is compressed once for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_negotiates_compression_and_reads_every_compressed_message() {
    use common::browser::wait_for_script;
    let hub = Hub::builder()
        .config(groupcast::Config {
            compression: true,
            ..groupcast::Config::default()
        })
        .build()
        .unwrap();
    let server = TestServer::start(hub).await;
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    let first = browser.window().await.unwrap();
    let second = browser.new_window(true).await.unwrap().handle;
    let open = format!(
        "window.got = {{ messages: [], extensions: null }};
         const ws = new WebSocket('ws://{}/ws/logs');
         ws.onopen = () => {{ window.got.extensions = ws.extensions; }};
         ws.onmessage = (event) => window.got.messages.push(event.data);",
        server.addr
    );
    for window in [&first, &second] {
        browser.switch_to_window(window.clone()).await.unwrap();
        browser.goto(&server.http_url("/healthz")).await.unwrap();
        browser.execute(&open, vec![]).await.unwrap();
    }
    let logs = GroupName::new("logs").unwrap();
    wait_until("both pages joined", || server.hub.member_count(&logs) == 2).await;

    let lines: Vec<String> = (0..40)
        .map(|n| {
            format!(
                "2026-12-01T10:00:{n:02}Z INFO task/7 step {n}: Compiling crate-{n} v1.0.{n} \
                 (registry+https://github.com/rust-lang/crates.io-index) — ünïcödé ✓ {}",
                "=".repeat(n * 7)
            )
        })
        .collect();
    for line in &lines {
        server.hub.to("logs").send(line.as_str()).unwrap();
    }
    for window in [&first, &second] {
        browser.switch_to_window(window.clone()).await.unwrap();
        let got = wait_for_script(
            &browser,
            "every message on the page",
            "return window.got;",
            |got| {
                got["messages"]
                    .as_array()
                    .is_some_and(|m| m.len() >= lines.len())
            },
        )
        .await;
        let extensions = got["extensions"].as_str().unwrap_or_default();
        assert!(
            extensions.contains("permessage-deflate"),
            "negotiated: {extensions:?}"
        );
        let messages: Vec<&str> = got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert_eq!(
            messages,
            lines.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        server.hub.metrics().messages_compressed.get(),
        lines.len() as u64,
        "each message compressed once for both pages"
    );
    browser.close().await.expect("end the browser session");
}
