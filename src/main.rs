//! The `groupcast` server: parse the command line, build the hub, serve,
//! and shut down gracefully on SIGTERM or Ctrl-C. Its subcommands are the
//! tools around a node: `token`, `shard-of`, the terminal client (`tail`,
//! `publish`, in `terminal/`), and `config` (`example`, `check`) for the
//! config file (`config_file.rs`), which sits under the flags and the
//! `GROUPCAST_*` variables.

mod cli;
mod config_file;
mod terminal;

use std::net::SocketAddr;

use anyhow::Context;
use cli::{Cli, CliCommand, ConfigCommand, LogFormat, TokenArgs};
use groupcast::Hub;
use groupcast::server;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The flags, over the GROUPCAST_* variables, over the config file.
    let cli = config_file::parse().unwrap_or_else(|error| config_exit(&error));
    match &cli.command {
        Some(CliCommand::Token(args)) => return mint_token(args),
        Some(CliCommand::ShardOf(args)) => {
            println!("{}", args.url().map_err(anyhow::Error::msg)?);
            return Ok(());
        }
        Some(CliCommand::Tail(args)) => {
            let ran = terminal::tail::run(args.clone()).await;
            return client_exit("tail", ran);
        }
        Some(CliCommand::Publish(args)) => {
            let ran = terminal::publish::run(args.clone()).await;
            return client_exit("publish", ran);
        }
        Some(CliCommand::Config(ConfigCommand::Example)) => {
            print!("{}", config_file::example());
            return Ok(());
        }
        Some(CliCommand::Config(ConfigCommand::Check(args))) => {
            let settings = config_file::check(args).unwrap_or_else(|error| config_exit(&error));
            print!("{settings}");
            return Ok(());
        }
        None => {}
    }
    init_logging(&cli)?;
    check_fd_limit(cli.max_connections);

    let client_auth = cli
        .security
        .client_auth()
        .context("invalid security settings")?;
    let options = cli.server_options().context("invalid security settings")?;
    groupcast::auth::log_posture(
        &client_auth,
        &options.api_keys,
        &options.cors,
        options.debug_endpoint,
    );

    let mut builder = Hub::builder().config(cli.config()).client_auth(client_auth);
    if let Some(id) = &cli.node_id {
        builder = builder.node_id(id.clone());
    }
    if let Some(backend) = cli.backend().map_err(anyhow::Error::msg)? {
        builder = builder.backend(backend);
    }
    // No on_text / on_binary handler: the hub applies --client-messages
    // itself (Config::client_messages), forwarding to the sender's group.
    builder = builder.worker_options(cli.worker_options());
    if !cli.join_leave.is_empty() && cli.presence.is_empty() {
        tracing::warn!(
            "--join-leave without --presence: join/leave frames come only from groups with presence"
        );
    }
    if let Some(webhooks) = cli.webhook_options() {
        if webhooks.secret.is_none() {
            tracing::warn!(
                "--webhook-url without --webhook-secret: webhook requests are not signed, \
                 and a receiver cannot tell them from forgeries"
            );
        }
        tracing::info!(url = %webhooks.url, events = ?webhooks.events, "sending webhooks");
        builder = builder.webhooks(webhooks);
    }
    let hub = builder.build().context("cannot start the hub")?;
    groupcast::memory::spawn_trimmer(&hub);
    for (group, period) in cli.tickers.iter().flatten() {
        hub.notify(group, groupcast::workers::ticker(*period))
            .context("cannot start a ticker")?;
        tracing::info!(%group, ?period, "ticker registered: runs while the group has members");
    }

    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    tracing::info!(
        listen = %cli.listen,
        node = hub.node_id(),
        mode = hub.status().kind,
        client_messages = %hub.config().client_messages,
        "groupcast is serving"
    );

    if let Some(admin) = cli.security.admin_listen {
        serve_admin(&hub, admin, options.clone()).await?;
    }

    let app = server::router(hub.clone(), options);
    let shutdown_hub = hub.clone();
    let drain_period = cli.drain_period;
    let shutdown_timeout = cli.shutdown_timeout;
    server::serve(listener, app, cli.serve_options(), async move {
        shutdown_signal().await;
        drain_and_close(&shutdown_hub, drain_period, shutdown_timeout).await;
    })
    .await
    .context("the server failed")?;
    tracing::info!("groupcast stopped");
    Ok(())
}

/// How the terminal client ends: an error is one line on stderr naming
/// the command and the whole chain of causes (`publish: message 3 was not
/// published: …: Connection refused`), and exit status 1, instead of
/// anyhow's multi-line `Error:` report, which reads like a crash.
fn client_exit(command: &str, ran: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(error) = ran {
        eprintln!("{command}: error: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// A config file or settings that cannot be used: one line on stderr
/// naming the file, line and key, and exit status 2 (as for clap's usage
/// errors), before anything is started.
fn config_exit(error: &dyn std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(2);
}

/// `groupcast token`: prints a development token.
fn mint_token(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = args.secret().context("cannot read the secret")?;
    let token = groupcast::auth::mint_hs256(&secret, &args.request())?;
    println!("{token}");
    Ok(())
}

/// Serves health, readiness and metrics on their own address, until the
/// hub shuts down (so `/readyz` keeps answering "not ready" while draining).
async fn serve_admin(
    hub: &Hub,
    addr: SocketAddr,
    options: server::ServerOptions,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?;
    tracing::info!(admin = %addr, "/healthz, /readyz and /metrics are on the admin listener only");
    let app = server::admin_router(hub.clone(), options);
    let stop = hub.shutdown_token();
    tokio::spawn(async move {
        let served = server::serve(
            listener,
            app,
            server::ServeOptions::default(),
            stop.cancelled_owned(),
        )
        .await;
        if let Err(error) = served {
            tracing::error!(%error, "the admin listener failed");
        }
    });
    Ok(())
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

/// Every connection is a file descriptor. Raises the soft `RLIMIT_NOFILE`
/// to the hard one (as Go's runtime does), then warns when
/// `--max-connections` does not leave room for Redis, the listener and the
/// HTTP API under it: past the limit, `accept` fails instead of answering.
fn check_fd_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        const HEADROOM: libc::rlim_t = 256;
        let soft = limit.rlim_cur;
        if max_connections == 0 || max_connections as libc::rlim_t + HEADROOM > soft {
            tracing::warn!(
                max_connections,
                fd_limit = soft,
                "--max-connections is not well under the file descriptor limit (ulimit -n): \
                 past it, new connections fail at accept instead of getting a 503"
            );
        } else {
            tracing::debug!(max_connections, fd_limit = soft, "file descriptor limit");
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
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
