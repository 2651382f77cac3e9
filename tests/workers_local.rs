//! Group workers on a standalone node: they run only while their group has
//! members, stop after the linger, restart on a new member, and survive
//! their own failures.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{TestServer, wait_until};
use groupcast::workers::ticker;
use groupcast::{Hub, Worker, WorkerOptions};

fn fast_options() -> WorkerOptions {
    WorkerOptions {
        lease_ttl: Duration::from_millis(900),
        linger: Duration::from_millis(300),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..WorkerOptions::default()
    }
}

fn hub() -> Hub {
    Hub::builder()
        .worker_options(fast_options())
        .build()
        .unwrap()
}

#[tokio::test]
async fn ticker_runs_only_while_the_group_has_members() {
    let server = TestServer::start(hub()).await;
    let hub = &server.hub;
    hub.notify("ticker_ws", ticker(Duration::from_millis(100)))
        .unwrap();

    // No members anywhere: no worker runs (the start counter below proves
    // it stayed at zero until the first member came).
    assert!(
        hub.workers().is_empty(),
        "no member, yet a worker: {:?}",
        hub.workers()
    );
    assert_eq!(hub.metrics().worker_starts.get(), 0);

    // A member arrives: ticks flow, numbered from 1.
    let mut client = server.connect("ticker_ws").await;
    let first: serde_json::Value = serde_json::from_str(&client.recv_text().await).unwrap();
    assert_eq!(first["tick"], 1);
    assert_eq!(first["node"], hub.node_id());
    let second: serde_json::Value = serde_json::from_str(&client.recv_text().await).unwrap();
    assert_eq!(second["tick"], 2);
    assert_eq!(hub.workers().len(), 1);
    assert_eq!(hub.workers()[0].state, "running");

    // Everyone leaves: the worker stops after the linger.
    drop(client);
    wait_until("the worker stops after the linger", || {
        hub.workers().is_empty()
    })
    .await;
    let starts = hub.metrics().worker_starts.get();
    assert_eq!(starts, 1);

    // A new member starts it again, from tick 1.
    let mut again = server.connect("ticker_ws").await;
    let first: serde_json::Value = serde_json::from_str(&again.recv_text().await).unwrap();
    assert_eq!(first["tick"], 1, "a fresh worker starts counting again");
    assert_eq!(hub.metrics().worker_starts.get(), 2);
}

#[tokio::test]
async fn failing_and_panicking_workers_restart_with_backoff() {
    let server = TestServer::start(hub()).await;
    let hub = &server.hub;
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    hub.notify(
        "flaky",
        Worker::new(move |ctx| {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => Err("first run fails".into()),
                    1 => panic!("second run panics"),
                    _ => {
                        ctx.hub.broadcast_group(&ctx.group, format!("run {run}"))?;
                        ctx.stop.cancelled().await;
                        Ok(())
                    }
                }
            }
        }),
    )
    .unwrap();

    let mut client = server.connect("flaky").await;
    assert_eq!(client.recv_text().await, "run 2");
    assert_eq!(hub.metrics().worker_failures.get(), 2);
    assert_eq!(hub.workers()[0].restarts, 2);
    // The node is fine: the API still answers.
    let health = reqwest::get(server.http_url("/healthz")).await.unwrap();
    assert!(health.status().is_success());
}

#[tokio::test]
async fn worker_time_to_live_ends_it_while_members_remain() {
    let server = TestServer::start(hub()).await;
    let hub = &server.hub;
    hub.notify(
        "short",
        ticker(Duration::from_millis(50)).ttl(Duration::from_millis(400)),
    )
    .unwrap();
    let _client = server.connect("short").await;
    wait_until("the worker runs", || {
        hub.workers().first().is_some_and(|w| w.state == "running")
    })
    .await;
    wait_until("its time-to-live ends it", || {
        hub.workers().first().is_some_and(|w| w.state == "expired")
    })
    .await;
    assert_eq!(
        hub.metrics().worker_starts.get(),
        1,
        "an expired worker is not restarted"
    );
}

#[tokio::test]
async fn workers_show_in_debug_state_and_api() {
    let server = TestServer::start(hub()).await;
    server
        .hub
        .notify("ticker_ws", ticker(Duration::from_secs(1)))
        .unwrap();
    let _client = server.connect("ticker_ws").await;
    wait_until("the worker runs", || !server.hub.workers().is_empty()).await;
    let state: serde_json::Value = reqwest::get(server.http_url("/debug/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["workers"][0]["group"], "ticker_ws");
    assert_eq!(state["workers"][0]["node"], server.hub.node_id());
    assert!(state["workers"][0]["since_ms"].as_u64().unwrap() > 0);
    let api: serde_json::Value = reqwest::get(server.http_url("/api/workers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["workers"][0]["group"], "ticker_ws");
    assert_eq!(api["workers"][0]["node"], server.hub.node_id());
}
