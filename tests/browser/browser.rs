//! The demo page (`GET /`) in a real headless Chromium, driven through
//! chromedriver with fantoccini: two pages in one group see each other's
//! messages; a page in another group does not.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages (see
//! `tests/common/browser.rs`, which starts them).

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::browser::Chromedriver;
use crate::common::{TestServer, WAIT, wait_until};
use fantoccini::wd::WindowHandle;
use fantoccini::{Client as Browser, Locator};
use groupcast::{GroupName, Hub, Message};
use serde_json::{Value, json};
use tokio::time::Instant;

/// `hub` served on loopback, and a headless Chromium session to visit it
/// (with its chromedriver, to keep for as long as the session).
async fn serve_to_chromium(hub: Hub) -> (TestServer, Chromedriver, Browser) {
    let server = TestServer::start(hub).await;
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    (server, driver, browser)
}

/// Clicks the element with the id `id` in the current tab.
async fn click(browser: &Browser, id: &str) {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("find #{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

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
        click(browser, "connect").await;
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
        click(browser, "sendBtn").await;
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
    let (server, _driver, browser) = serve_to_chromium(hub).await;
    let addr: SocketAddr = server.addr;
    assert!(addr.ip().is_loopback());

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
    let file = include_str!("../../clients/js/groupcast.js");
    assert_eq!(body, file);
    assert!(body.contains("export class GroupcastClient"));
}

/// With `--compression`, Chromium negotiates permessage-deflate (it offers
/// it on every WebSocket), and two pages receive every text exactly, while
/// each message is compressed once for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_negotiates_compression_and_reads_every_compressed_message() {
    use crate::common::browser::wait_for_script;
    let hub = Hub::builder()
        .config(groupcast::Config {
            compression: true,
            ..groupcast::Config::default()
        })
        .build()
        .unwrap();
    let (server, _driver, browser) = serve_to_chromium(hub).await;
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

/// Chromium as an independent permessage-deflate peer in both directions:
/// a page sends text and binary messages from 0 B to 256 KiB (multilingual
/// and base64 text, random bytes, slices of a bitmap and a PDF every 32 KiB
/// through each file; Chromium compresses what it sends once deflate is
/// negotiated, the hub inflates) to a group of one, whose echo the hub
/// compresses and Chromium inflates; the page compares every echo byte for
/// byte. The compressor once ended before its sync flush was complete, and
/// some 64 KiB and 128 KiB slices came back shorter. The Python peer of
/// `tests/wire/deflate_peers.rs` does the same with fragmented messages too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_gets_every_payload_back_byte_for_byte_through_compression() {
    use crate::common::browser::wait_for_script_within;
    use base64::Engine as _;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    const SIZES: [usize; 15] = [
        0, 1, 125, 126, 127, 1000, 4096, 16384, 65535, 65536, 65537, 100000, 131072, 200000, 262144,
    ];
    const SLICE_STRIDE: usize = 32 * 1024;
    const WORDS: &[&str] = &[
        "deflate",
        "frame",
        "fragment",
        "window",
        "flush",
        "größe",
        "naïve",
        "café",
        "über",
        "сжатие",
        "сообщение",
        "συμπίεση",
        "圧縮",
        "メッセージ",
        "压缩",
        "데이터",
        "🙂",
        "🚀",
        "✓",
        "→",
        "𝄞",
    ];

    // The page's sources: every payload is a slice of one of them.
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/payloads");
    let read = |name: &str| std::fs::read(fixtures.join(name)).expect("a payload fixture");
    let mut rng = StdRng::seed_from_u64(0xDEF1A7E);
    let mut prose = String::new();
    while prose.len() < SIZES[SIZES.len() - 1] + 4096 {
        if rng.random_range(0..100) < 85 {
            prose.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        } else {
            prose.push_str(&rng.random_range(0..1u32 << 24).to_string());
        }
        prose.push(' ');
    }
    let mut random = vec![0u8; SIZES[SIZES.len() - 1]];
    rng.fill(&mut random[..]);
    let base64 = base64::engine::general_purpose::STANDARD;
    let base64_text = base64.encode(&random[..random.len() * 3 / 4]);
    let sources: Vec<(&str, Vec<u8>)> = vec![
        ("image.bmp", read("image.bmp")),
        ("document.pdf", read("document.pdf")),
        ("prose", prose.clone().into_bytes()),
        ("base64", base64_text.into_bytes()),
        ("random", random),
    ];

    // (name, source, offset, length, sent as text).
    let mut specs: Vec<(String, &str, usize, usize, bool)> = Vec::new();
    for size in SIZES {
        // Multi-byte text: an offset where both ends are char boundaries.
        let offset = (size * 7 % 4096..)
            .find(|&o| prose.is_char_boundary(o) && prose.is_char_boundary(o + size))
            .unwrap();
        specs.push((format!("text-prose/{size}"), "prose", offset, size, true));
        specs.push((format!("text-base64/{size}"), "base64", 0, size, true));
        specs.push((format!("binary-random/{size}"), "random", 0, size, false));
        for (kind, source) in [("binary-bmp", "image.bmp"), ("binary-pdf", "document.pdf")] {
            let length = sources
                .iter()
                .find(|(name, _)| *name == source)
                .unwrap()
                .1
                .len();
            for offset in (0..=length - size).step_by(SLICE_STRIDE) {
                specs.push((
                    format!("{kind}/{size}@{offset}"),
                    source,
                    offset,
                    size,
                    false,
                ));
            }
        }
    }
    let sent_bytes: usize = specs.iter().map(|spec| spec.3).sum();

    let hub = Hub::builder()
        .config(groupcast::Config {
            compression: true,
            max_message_size: 1 << 20,
            max_inbound_rate: 0,
            ..groupcast::Config::default()
        })
        .build()
        .unwrap();
    let (server, _driver, browser) = serve_to_chromium(hub).await;
    browser.goto(&server.http_url("/healthz")).await.unwrap();

    let started = Instant::now();
    // One message at a time: send, wait for its echo (10 s at most),
    // compare; a connection that ends, or that brought a wrong echo, is
    // recorded and opened again.
    let run = r#"
        const [url, encoded, specs] = arguments;
        const sources = {};
        for (const [name, b64] of Object.entries(encoded)) {
            const binary = atob(b64);
            const bytes = new Uint8Array(binary.length);
            for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
            sources[name] = bytes;
        }
        const run = window.deflateRun = {
            extensions: [], done: 0, total: specs.length, failures: [], finished: false,
        };
        const open = () => new Promise((resolve, reject) => {
            const ws = new WebSocket(url);
            ws.binaryType = "arraybuffer";
            ws.inbox = [];
            ws.onopen = () => { run.extensions.push(ws.extensions); resolve(ws); };
            ws.onmessage = (event) => {
                if (ws.waiting) { const w = ws.waiting; ws.waiting = null; w(event.data); }
                else ws.inbox.push(event.data);
            };
            ws.onclose = (event) => {
                ws.closed = `the connection closed: ${event.code} ${event.reason}`;
                if (ws.waiting) { const w = ws.waiting; ws.waiting = null; w(null); }
                reject(new Error(ws.closed));
            };
        });
        const next = (ws) => {
            if (ws.inbox.length) return Promise.resolve(ws.inbox.shift());
            if (ws.closed) return Promise.resolve(null);
            return new Promise((resolve) => {
                ws.waiting = resolve;
                setTimeout(() => { if (ws.waiting === resolve) resolve(undefined); }, 10000);
            });
        };
        const decoder = new TextDecoder("utf-8", { fatal: true });
        const encoder = new TextEncoder();
        (async () => {
            let ws = null;
            for (const [name, source, offset, length, text] of specs) {
                const sent = sources[source].subarray(offset, offset + length);
                const failure = { payload: name, sent_len: length };
                try {
                    if (!ws) ws = await open();
                    ws.send(text ? decoder.decode(sent) : sent.slice());
                    const echo = await next(ws);
                    if (echo === null) throw new Error(ws.closed);
                    if (echo === undefined) throw new Error("no echo within 10 s");
                    const gotText = typeof echo === "string";
                    const got = gotText ? encoder.encode(echo) : new Uint8Array(echo);
                    const common = Math.min(got.length, sent.length);
                    let diff = -1;
                    for (let i = 0; i < common; i++) if (got[i] !== sent[i]) { diff = i; break; }
                    if (diff < 0 && got.length !== sent.length) diff = common;
                    if (diff >= 0 || gotText !== text) {
                        failure.got_len = got.length;
                        failure.got_kind = gotText ? "text" : "binary";
                        failure.first_diff = diff;
                        run.failures.push(failure);
                        // Chromium's inflater keeps its state across
                        // messages: after a wrong one, start afresh so
                        // that the next message is judged on its own.
                        ws.close();
                        ws = null;
                    }
                } catch (error) {
                    failure.error = String(error && error.message || error);
                    run.failures.push(failure);
                    if (ws) ws.close();
                    ws = null;
                }
                run.done++;
            }
            if (ws) ws.close();
            run.finished = true;
        })();
    "#;
    let encoded: serde_json::Map<String, Value> = sources
        .iter()
        .map(|(name, bytes)| (name.to_string(), json!(base64.encode(bytes))))
        .collect();
    browser
        .execute(
            run,
            vec![
                json!(server.ws_url("echo/chromium")),
                Value::Object(encoded),
                json!(specs),
            ],
        )
        .await
        .expect("start the page's run");
    // A limit against a hang; the run takes a few seconds.
    wait_for_script_within(
        &browser,
        "the page to check every echo",
        "return { done: window.deflateRun.done, total: window.deflateRun.total,
                  finished: window.deflateRun.finished,
                  failures: window.deflateRun.failures.length };",
        Duration::from_secs(60),
        |progress| progress["finished"] == true,
    )
    .await;
    let result = browser
        .execute("return window.deflateRun;", vec![])
        .await
        .expect("read the page's run");
    println!(
        "chromium: {} messages ({sent_bytes} bytes) echoed and checked in {:.1} s; \
         connections: {}; failures: {}",
        specs.len(),
        started.elapsed().as_secs_f64(),
        result["extensions"],
        serde_json::to_string_pretty(&result["failures"]).unwrap()
    );

    let failures = result["failures"].as_array().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} messages did not come back exactly: {}",
        failures.len(),
        specs.len(),
        Value::Array(failures.clone())
    );
    let extensions = result["extensions"].as_array().unwrap();
    assert_eq!(extensions.len(), 1, "one connection for the whole run");
    assert!(
        extensions[0]
            .as_str()
            .is_some_and(|e| e.contains("permessage-deflate")),
        "negotiated: {extensions:?}"
    );
    // The hub read every message whole (inflated), and compressed the
    // echoes (not random bytes, not messages under 128 bytes).
    let metrics = server.hub.metrics();
    assert_eq!(
        (metrics.messages_in.get(), metrics.bytes_in.get()),
        (specs.len() as u64, sent_bytes as u64)
    );
    let compressed = metrics.messages_compressed.get();
    assert!(
        compressed >= specs.len() as u64 / 4,
        "only {compressed} of {} echoes were compressed",
        specs.len()
    );
    browser.close().await.expect("end the browser session");
}
