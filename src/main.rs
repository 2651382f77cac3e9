//! The `groupcast` server: parse the command line, build the hub, serve,
//! and shut down gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use groupcast::cli::{Cli, LogFormat};
use groupcast::server::{self, ClientMessages};
use groupcast::{Broadcast, Hub, Message};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli)?;

    let mut builder = Hub::builder().config(cli.config());
    if let Some(id) = &cli.node_id {
        builder = builder.node_id(id.clone());
    }
    if let Some(redis) = cli.redis_options() {
        builder = builder.redis(redis);
    }
    if cli.client_messages == ClientMessages::Group {
        // melody's chat: what a client sends goes to its whole group.
        builder = builder
            .on_text(|hub, session, text| forward(hub, session, Message::text(text)))
            .on_binary(|hub, session, data| forward(hub, session, Message::Binary(data.clone())));
    }
    let hub = builder.build().context("cannot start the hub")?;

    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    tracing::info!(
        listen = %cli.listen,
        node = hub.node_id(),
        mode = hub.status().kind,
        client_messages = ?cli.client_messages,
        "groupcast is serving"
    );

    let app = server::router(hub.clone(), cli.server_options());
    let shutdown_hub = hub.clone();
    let drain_period = cli.drain_period;
    let shutdown_timeout = cli.shutdown_timeout;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        drain_and_close(&shutdown_hub, drain_period, shutdown_timeout).await;
    })
    .await
    .context("the server failed")?;
    tracing::info!("groupcast stopped");
    Ok(())
}

fn forward(hub: &Hub, session: &groupcast::Session, message: Message) {
    if let Err(error) = hub.send(Broadcast::group(session.group().clone()), message) {
        tracing::warn!(session = %session.id(), %error, "could not forward a client message");
    }
}

/// Not ready first (so load balancers stop sending clients), then 1001 to
/// every session, then wait for them to go, all within the deadlines.
async fn drain_and_close(hub: &Hub, drain: std::time::Duration, deadline: std::time::Duration) {
    hub.begin_drain();
    if !drain.is_zero() {
        tracing::info!(
            ?drain,
            sessions = hub.session_count(),
            "draining: not ready, still serving"
        );
        tokio::time::sleep(drain).await;
    }
    tracing::info!(sessions = hub.session_count(), "closing sessions with 1001");
    hub.shutdown().await;
    if tokio::time::timeout(deadline, hub.connections_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            left = hub.session_count(),
            ?deadline,
            "shutdown deadline passed; exiting anyway"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cli.log)
        .with_context(|| format!("invalid --log filter {:?}", cli.log))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
