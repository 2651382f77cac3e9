//! The admin page (`/admin`) in headless Chromium, on two clustered nodes
//! (spawned binaries, one Redis, an API key, presence kept for `adm/*`):
//! it refuses a request without the key; with it, it shows both nodes, a
//! group whose members the test connected on both nodes, its members and
//! its history; its publish form reaches a member; its disconnect button
//! closes a member on the other node; and it saves a screenshot under
//! `target/` for people to look at.
//!
//! Needs Chromium and chromedriver (see `tests/common/browser.rs`) and
//! Docker for Redis (see `tests/common/redis.rs`).

use crate::common::browser::{Chromedriver, wait_for_script};
use crate::common::node::NodeProcess;
use crate::common::redis::TestRedis;
use crate::common::{Client, wait_until_async};
use serde_json::Value;

const KEY: &str = "admin-page-test-key-0123456789";
const GROUP: &str = "adm/room";

async fn node(redis: &TestRedis, name: &str) -> NodeProcess {
    let node = NodeProcess::spawn_clustered(
        name,
        &redis.url(),
        &[
            "--api-keys",
            KEY,
            "--presence",
            "adm/*",
            "--history",
            "adm/*=100:1h",
        ],
    );
    node.wait_ready().await;
    node
}

/// The page's text, once `done` holds for it.
async fn page_text_when(
    browser: &fantoccini::Client,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let value = wait_for_script(
        browser,
        what,
        "return document.body.innerText",
        |v: &Value| v.as_str().is_some_and(&done),
    )
    .await;
    value.as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_the_cluster_publishes_and_disconnects_behind_the_api_key() {
    let redis = TestRedis::start().await;
    let a = node(&redis, "admin-a").await;
    let b = node(&redis, "admin-b").await;

    // Without the key: a challenge a browser answers, and no page.
    let http = reqwest::Client::new();
    let refused = http.get(a.url("/admin")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    assert!(
        !refused.text().await.unwrap().contains("<script"),
        "no page without the key"
    );
    // A wrong key is refused too; a cross-site request with saved
    // credentials is refused even with the right key.
    let wrong = http
        .get(a.url("/admin"))
        .basic_auth("admin", Some("not-the-key-0123456789"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let cross_site = http
        .get(a.url("/api/nodes"))
        .basic_auth("admin", Some(KEY))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);

    // Members on both nodes, and some history.
    let mut on_a = Client::connect(&a.ws_url(GROUP)).await;
    let _on_a2 = Client::connect(&a.ws_url(GROUP)).await;
    let mut on_b = Client::connect(&b.ws_url(GROUP)).await;
    wait_until_async("presence lists the three members", || async {
        let summary: Value = http
            .get(a.url(&format!("/api/groups/{GROUP}")))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        summary["presence"]["members"] == 3 && summary["members"] == 3
    })
    .await;
    let published = http
        .post(b.url(&format!("/api/groups/{GROUP}/messages")))
        .bearer_auth(KEY)
        .header("content-type", "text/plain")
        .body("an earlier line")
        .send()
        .await
        .unwrap();
    assert!(published.status().is_success());
    assert_eq!(on_a.recv_text().await, "an earlier line");

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    // Wide enough for the page's two columns (and a useful screenshot).
    browser
        .set_window_size(1400, 1200)
        .await
        .expect("size the window");
    // Without the key the browser is refused: from a page of the node,
    // /admin answers 401 with a Basic challenge (headless Chromium has no
    // prompt to show, so this asks with fetch).
    browser.goto(&a.url("/")).await.expect("open the demo page");
    let refused = browser
        .execute(
            "return fetch('/admin', {credentials: 'omit'})
               .then(r => r.text().then(body => [r.status, r.headers.get('www-authenticate'), body]))",
            vec![],
        )
        .await
        .expect("fetch /admin without the key");
    assert_eq!(refused[0], 401, "{refused}");
    assert!(
        refused[1].as_str().is_some_and(|c| c.starts_with("Basic ")),
        "{refused}"
    );
    assert!(
        refused[2]
            .as_str()
            .is_some_and(|b| b.contains("needs the node's API key")),
        "{refused}"
    );
    // The key as the password of the URL: what a user types at the
    // browser's prompt.
    let with_key = a
        .url("/admin")
        .replacen("http://", &format!("http://admin:{KEY}@"), 1);
    browser.goto(&with_key).await.expect("open the admin page");
    let text = page_text_when(&browser, "both nodes and the group", |text| {
        text.contains("admin-a (this one)") && text.contains("admin-b") && text.contains(GROUP)
    })
    .await;
    assert!(!text.contains("cannot read the node"), "{text}");
    // Every node's rates, from its heartbeats' counters.
    page_text_when(&browser, "each node's rates", |text| {
        text.contains("deliveries /s on admin-a") && text.contains("deliveries /s on admin-b")
    })
    .await;

    // One group: its members on both nodes, its history.
    browser
        .execute(
            "document.querySelector(`#groups tr[data-group='adm/room']`).click()",
            vec![],
        )
        .await
        .expect("pick the group");
    let text = page_text_when(&browser, "the group's members and history", |text| {
        text.contains("presence: 3 member(s)") && text.contains("an earlier line")
    })
    .await;
    let members = wait_for_script(
        &browser,
        "three member rows",
        "return [...document.querySelectorAll('#members tbody tr')].map(r => r.cells[1].textContent)",
        |v| v.as_array().is_some_and(|rows| rows.len() == 3),
    )
    .await;
    let mut nodes: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["admin-a", "admin-a", "admin-b"], "{text}");

    // The publish form reaches a member.
    browser
        .execute(
            "document.getElementById('publish-group').value = arguments[0];
             document.getElementById('publish-text').value = 'from the admin page';
             document.querySelector('#publish button').click();",
            vec![Value::from(GROUP)],
        )
        .await
        .expect("publish from the page");
    assert_eq!(on_a.recv_text().await, "from the admin page");
    page_text_when(&browser, "the publish confirmed", |text| {
        text.contains(&format!("published to {GROUP}"))
    })
    .await;

    // Disconnect the member on the other node from the page: it is closed
    // with 4009 (may reconnect), and the page says so.
    browser
        .execute(
            "[...document.querySelectorAll('#members tbody tr')]
               .find(r => r.cells[1].textContent === 'admin-b')
               .querySelector('button').click()",
            vec![],
        )
        .await
        .expect("click disconnect");
    on_b.expect_close_code(4009).await;
    page_text_when(&browser, "the disconnect confirmed", |text| {
        text.contains("1 connection(s) closed")
    })
    .await;

    let png = browser.screenshot().await.expect("a screenshot");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/admin-page.png");
    std::fs::write(&path, png).expect("save the screenshot");
    eprintln!("admin page screenshot: {}", path.display());
    let _ = browser.close().await;
}
