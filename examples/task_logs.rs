//! The use case of the post groupcast comes from: live task logs. The task
//! id is the group; whoever watches `ws://…/ws/task/<id>` sees the task's
//! log lines as they are written.
//!
//! ```text
//! cargo run --example task_logs
//! curl -X POST http://127.0.0.1:5000/tasks
//!     {"task":1,"group":"task/1","watch":"ws://127.0.0.1:5000/ws/task/1"}
//! groupcast tail ws://127.0.0.1:5000/ws/task/1
//! ```
//!
//! Task groups keep their log (`task/*=1000:1h`), so a watcher that opens
//! the page late gets every line written so far, then the live tail:
//!
//! ```text
//! groupcast tail ws://127.0.0.1:5000/ws/task/1 --history 1000   # any time during the task
//! ```
//!
//! (`groupcast tail` is the binary's terminal client: `cargo run --release
//! -- tail …`, or any WebSocket client such as websocat.) When the task
//! ends it closes its watchers with 1000; tail, as the protocol asks of a
//! client the server closed, reconnects and resumes (nothing is missing,
//! so it prints nothing more) until Ctrl-C.
//!
//! A task starts at once, writes 20 log lines (one every 500 ms), then
//! closes its watchers with 1000. The task itself shows a late joiner: at
//! line 10 it connects a watcher of its own with `?history=1000` and prints
//! what that watcher received — lines 1 to 10 from history, then live.
//! This example mounts only the WebSocket route (`ws_router`) into the
//! application's own axum `Router`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use futures_util::StreamExt;
use groupcast::history::HistoryPolicy;
use groupcast::{Config, GroupName, Hub, close_code};
use serde_json::{Value, json};

/// The application's own state: its hub and a task counter.
#[derive(Clone)]
struct App {
    hub: Hub,
    next_id: Arc<AtomicU64>,
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();

    // Watchers only listen; a watcher is told which task it watches.
    let hub = Hub::builder()
        .config(Config {
            history: HistoryPolicy::parse(["task/*=1000:1h"])?,
            ..Config::default()
        })
        .build()?;

    let addr = SocketAddr::from(([127, 0, 0, 1], port_arg(5000)));
    let app = App {
        hub: hub.clone(),
        next_id: Arc::new(AtomicU64::new(1)),
        addr,
    };
    // The application's routes, with the hub's WebSocket route merged in.
    let router = axum::Router::new()
        .route("/tasks", post(start_task))
        .with_state(app)
        .merge(groupcast::server::ws_router(hub.clone()));

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("task logs on http://{addr}: POST /tasks, then watch ws://{addr}/ws/task/<id>");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        hub.shutdown().await;
    })
    .await?;
    Ok(())
}

/// `POST /tasks`: starts a fake task and says where to watch it.
async fn start_task(State(app): State<App>) -> Json<Value> {
    let id = app.next_id.fetch_add(1, Ordering::Relaxed);
    let group = GroupName::new(&format!("task/{id}")).expect("a valid group name");
    tokio::spawn(run_task(app.hub.clone(), id, group.clone(), app.addr));
    Json(json!({
        "task": id,
        "group": group,
        "watch": format!("ws://{}/ws/{group}", app.addr),
    }))
}

/// A pretend job that logs its progress to its group.
async fn run_task(hub: Hub, id: u64, group: GroupName, addr: SocketAddr) {
    let steps = [
        "fetching sources",
        "compiling",
        "running tests",
        "packaging",
    ];
    for line in 1..=20 {
        let step = steps[(line - 1) * steps.len() / 20];
        // Fan-out only queues: a watcher that cannot keep up is closed
        // with 1013 and never slows the task down.
        let _ = hub
            .to(&group)
            .send(format!("[task {id}] {line:>2}/20 {step}"));
        if line == 10 {
            tokio::spawn(late_watcher(format!("ws://{addr}/ws/{group}?history=1000")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = hub.to(&group).send(format!("[task {id}] done"));
    // The log is complete: end the watchers' connections normally.
    for session in hub.members(&group) {
        session.close(close_code::NORMAL, "task finished");
    }
}

/// A watcher that opens the page at line 10: prints what it receives, the
/// backlog first, then the live lines, until the task ends.
async fn late_watcher(url: String) {
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        eprintln!("late watcher: cannot connect to {url}");
        return;
    };
    println!("late watcher joined at line 10 ({url}):");
    while let Some(Ok(frame)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            println!("  late watcher got: {text}");
        }
    }
}

/// `--port N`, or `default`.
fn port_arg(default: u16) -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == "--port")
        .map(|w| w[1].parse().expect("--port takes a number"))
        .unwrap_or(default)
}
