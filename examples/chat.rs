//! melody's chat example, in groupcast: whatever a client sends goes to
//! everyone in its group (itself included).
//!
//! ```text
//! cargo run --example chat               # http://127.0.0.1:5000
//! cargo run --example chat -- --port 8000
//! ```
//!
//! Open the page in two browser tabs, join the same group and talk; or use
//! websocat: `websocat ws://127.0.0.1:5000/ws/lobby`.

use std::net::SocketAddr;

use groupcast::Hub;
use groupcast::server::{self, ServerOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();

    let hub = Hub::builder()
        // Tell the others in the group that someone arrived (melody's
        // `BroadcastOthers`, narrowed to one group).
        .on_connect(|_hub, session| {
            let _ = session.broadcast(format!("* {} joined", short(session.id().as_str())));
        })
        // melody: `m.HandleMessage(func(s, msg) { m.Broadcast(msg) })`, per
        // group; the sender sees its own line come back.
        .on_text(|hub, session, text| {
            let _ = hub.to(session.group()).send(text);
        })
        .on_disconnect(|hub, session| {
            let _ = hub
                .to(session.group())
                .send(format!("* {} left", short(session.id().as_str())));
        })
        .build()?;

    // The ready-made router: /ws/{group}, the demo page at /, the HTTP API,
    // /healthz, /metrics. The hub's `Config::client_messages` is left at
    // `group` (our `on_text` replaces the forwarding it would do), so the
    // demo page shows its send box.
    let app = server::router(hub.clone(), ServerOptions::default());
    serve(app, hub, port_arg(5000)).await
}

/// The first characters of a session id, as a nickname.
fn short(id: &str) -> &str {
    &id[..id.len().min(6)]
}

/// `--port N`, or `default`.
fn port_arg(default: u16) -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == "--port")
        .map(|w| w[1].parse().expect("--port takes a number"))
        .unwrap_or(default)
}

/// Serves `app` on loopback until Ctrl-C, then closes sessions with 1001.
async fn serve(app: axum::Router, hub: Hub, port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("chat on http://{addr}/  (ws://{addr}/ws/<group>)");
    axum::serve(
        listener,
        // Connect info gives sessions their remote address.
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        hub.shutdown().await;
    })
    .await?;
    Ok(())
}
