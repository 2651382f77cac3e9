//! ws-notifier's demo: the group `ticker_ws` gets a timestamped message
//! every 2 seconds, but only while someone listens.
//!
//! ```text
//! cargo run --example ticker               # http://127.0.0.1:5000/?group=ticker_ws
//! websocat ws://127.0.0.1:5000/ws/ticker_ws
//! ```
//!
//! The server is push-only here (as ws-notifier is): what clients send is
//! ignored. Publish to any group from outside with
//! `curl -H 'content-type: text/plain' -d hello http://127.0.0.1:5000/api/groups/ticker_ws/messages`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use groupcast::server::{self, ClientMessages, ServerOptions};
use groupcast::{GroupName, Hub};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();

    // No text handler: client messages go nowhere.
    let hub = Hub::builder().build()?;

    // The ticker: one task, publishing into the group. Publishing never
    // waits for a socket (it only queues), so a slow client cannot stall it.
    let ticker = GroupName::new("ticker_ws")?;
    let publisher = hub.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(2));
        loop {
            every.tick().await;
            // Skip the work when nobody is listening on this node.
            if publisher.member_count(&ticker) == 0 {
                continue;
            }
            let now = humantime::format_rfc3339_millis(SystemTime::now());
            if let Err(error) = publisher.broadcast_group(&ticker, format!("tick {now}")) {
                eprintln!("cannot publish: {error}");
            }
        }
    });

    // The ready-made router, told that clients only listen (the demo page
    // then hides its send box).
    let options = ServerOptions {
        client_messages: ClientMessages::None,
        ..ServerOptions::default()
    };
    let app = server::router(hub.clone(), options);

    let addr = SocketAddr::from(([127, 0, 0, 1], port_arg(5000)));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("ticker on http://{addr}/?group=ticker_ws  (ws://{addr}/ws/ticker_ws)");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        hub.shutdown().await; // closes every session with 1001
    })
    .await?;
    Ok(())
}

/// `--port N`, or `default`.
fn port_arg(default: u16) -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == "--port")
        .map(|w| w[1].parse().expect("--port takes a number"))
        .unwrap_or(default)
}
