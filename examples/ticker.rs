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

use groupcast::server::{self, ServerOptions};
use groupcast::{ClientMessages, Config, Hub, Worker, WorkerContext};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();

    // Push only: without a text or binary handler, what clients send goes
    // nowhere (the default, `ClientMessages::Group`, would forward it to
    // the sender's group). `/api/info` reports it, and the demo page then
    // hides its send box.
    let hub = Hub::builder()
        .config(Config {
            client_messages: ClientMessages::None,
            ..Config::default()
        })
        .build()?;

    // ws-notifier's `Notify(group, worker, timeout)`: the hub runs the
    // worker only while `ticker_ws` has members, stops it when the group
    // empties, and starts it again for the next member. With `.backend(RedisOptions::new(..))`
    // on the builder it would run once across the whole cluster.
    hub.notify(
        "ticker_ws",
        Worker::new(|ctx: WorkerContext| async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => return Ok(()),
                    _ = every.tick() => {}
                }
                let now = humantime::format_rfc3339_millis(SystemTime::now());
                // Publishing never waits for a socket (it only queues), so
                // a slow client cannot stall the ticker.
                ctx.hub.to(&ctx.group).send(format!("tick {now}"))?;
            }
        })
        // ws-notifier's timeout: a day at most, then it rests until the
        // group empties and fills again.
        .ttl(Duration::from_secs(24 * 3600)),
    )?;

    // The ready-made router.
    let app = server::router(hub.clone(), ServerOptions::default());

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
