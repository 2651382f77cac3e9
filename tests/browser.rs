//! The demo page (`GET /`) in a real headless Chromium, driven through
//! chromedriver with fantoccini: two pages in one group see each other's
//! messages; a page in another group does not.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages: run
//! `scripts/install-test-deps.sh`. Without them this test fails (it does
//! not skip), saying so.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestServer, WAIT, wait_until};
use fantoccini::wd::WindowHandle;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use groupcast::{GroupName, Hub, Message};
use serde_json::{Value, json};
use tokio::time::Instant;

/// The first of `names` found on `PATH`.
fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn require(names: &[&str], package: &str) -> PathBuf {
    find_on_path(names).unwrap_or_else(|| {
        panic!(
            "{} not found on PATH: the browser test needs Debian's `{package}` package. \
             Run scripts/install-test-deps.sh (as root) and try again.",
            names.join(" / ")
        )
    })
}

/// chromedriver on a free loopback port, in its own process group so that
/// dropping it also ends the browsers it started.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        use std::os::unix::process::CommandExt;
        let binary = require(&["chromedriver"], "chromium-driver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(exit) = driver.child.try_wait().unwrap() {
                panic!("chromedriver exited at start: {exit}");
            }
            if let Ok(response) = reqwest::get(&status).await {
                let body: Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A headless Chromium session.
    async fn browser(&self) -> Browser {
        let chromium = require(&["chromium", "chromium-browser"], "chromium");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    // Background tabs must keep handling socket events.
                    "--disable-background-timer-throttling",
                    "--disable-renderer-backgrounding",
                    "--disable-backgrounding-occluded-windows",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        tokio::time::timeout(
            WAIT,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&self.url),
        )
        .await
        .expect("timed out starting Chromium")
        .expect("start a Chromium session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The process group we created: chromedriver and its browsers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
