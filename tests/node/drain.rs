//! Shutdown on SIGTERM, on the real binary: every session is closed with
//! 1001 (so clients reconnect to another node) and the process exits 0
//! within the shutdown timeout. With a drain period, the node first turns
//! not-ready, keeps serving its sessions for the drain period while
//! refusing new ones with 503, and only then closes with 1001.
//!
//! This is what the Kubernetes manifests and docker-compose.yml rely on:
//! readiness drops at once, so the Service / load balancer stops sending
//! new clients before anyone is disconnected.

use std::time::{Duration, Instant};

use crate::common::node::NodeProcess;
use crate::common::{Client, WAIT, http, wait_until_async};
use groupcast::close_code;

const DRAIN: Duration = Duration::from_secs(3);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// SIGTERM without a drain period: every client gets 1001 and the process
/// exits 0 in time.
#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut server =
        NodeProcess::start("sigterm", &["--log", "warn", "--shutdown-timeout", "5s"]).await;
    let mut clients = vec![
        server.connect("shutdown/a", 1).await,
        server.connect("shutdown/a", 2).await,
        server.connect("shutdown/b", 1).await,
    ];
    server.terminate();
    for client in &mut clients {
        let reason = client.expect_close_code(close_code::GOING_AWAY).await;
        assert!(reason.contains("shutting down"), "{reason}");
    }
    let exit = server
        .wait_exit(WAIT)
        .await
        .unwrap_or_else(|| panic!("the server did not exit within {WAIT:?}"));
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn with_a_drain_period_sigterm_drains_first_then_closes_with_1001() {
    let drain = format!("{}s", DRAIN.as_secs());
    let shutdown = format!("{}s", SHUTDOWN_TIMEOUT.as_secs());
    let mut node = NodeProcess::start(
        "drain",
        &[
            "--log",
            "info",
            "--drain-period",
            &drain,
            "--shutdown-timeout",
            &shutdown,
        ],
    )
    .await;

    // A member, which learns which node took it from the upgrade response.
    let (mut client, response) = Client::connect_with_response(&node.ws_url("g")).await;
    let (_, info) = http::get_json(&node.url("/api/info")).await;
    let header = response
        .headers()
        .get("x-groupcast-node")
        .expect("the upgrade response names the node")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(info["node"], header.as_str());
    wait_until_async("the node lists the member", || async {
        http::get_json(&node.url("/api/groups/g")).await.1["members"] == 1
    })
    .await;

    // SIGTERM: not ready at once...
    let signalled = Instant::now();
    node.terminate();
    wait_until_async("/readyz answers 503 after SIGTERM", || async {
        http::status(&node.url("/readyz")).await == 503
    })
    .await;
    let (_, ready) = http::get_json(&node.url("/readyz")).await;
    assert_eq!(ready["ready"], false);
    assert!(
        signalled.elapsed() < DRAIN,
        "readiness dropped only after the drain period"
    );

    // ...but still serving its members during the drain...
    let (published, _) =
        http::post_text(&node.url("/api/groups/g/messages"), "during the drain").await;
    assert_eq!(published, 200, "publish during the drain");
    assert_eq!(client.recv_text().await, "during the drain");
    assert!(
        signalled.elapsed() < DRAIN,
        "the drain-time message came too late to prove anything"
    );

    // ...while refusing new WebSockets with 503 (go to another node).
    let refused = Client::refused(&node.ws_url("g")).await;
    assert_eq!(refused.status, 503, "a new upgrade while draining");
    assert!(
        signalled.elapsed() < DRAIN,
        "the refused upgrade came too late to prove anything"
    );

    // Then, after the drain period, 1001 to every session...
    let reason = client.expect_close_code(1001).await;
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= DRAIN,
        "sessions were closed after {closed_after:?}, before the drain period ({DRAIN:?}) ended"
    );
    assert!(!reason.is_empty(), "a 1001 close should say why");

    // ...and a clean exit, within drain + shutdown timeout (+ slack).
    let status = node
        .wait_exit(DRAIN + SHUTDOWN_TIMEOUT + Duration::from_secs(5))
        .await
        .expect("the process did not exit after the drain and the shutdown timeout");
    assert!(status.success(), "exit status {status:?}");
}
