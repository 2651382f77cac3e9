//! The accept loop: what `axum::serve` does, plus a deadline on reading a
//! request's headers.
//!
//! Why not `axum::serve`? It gives hyper no timer, so hyper cannot time out
//! a client that sends half a request and then nothing: each such
//! connection holds a file descriptor forever, and WebSocket connection
//! limits cannot see it (it never becomes a session). A few thousand of
//! them would exhaust the node's descriptors. Here every connection gets
//! hyper's `header_read_timeout`: a request head (the first, or the next
//! one on a keep-alive connection) must arrive completely within it, or
//! the connection is closed.
//!
//! Everything else follows `axum::serve`: one task per connection, HTTP/1.1
//! with upgrades (WebSockets), the peer's address as
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), accept errors
//! (such as running out of descriptors) logged and retried after a pause,
//! and a graceful shutdown that stops accepting, lets requests in flight
//! finish and waits for their connections to close. Upgraded connections
//! leave hyper at the upgrade; the hub closes those (with 1001).

use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;

use crate::transport::ConnectionAbort;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Default for [`ServeOptions::header_read_timeout`].
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`serve`] treats each accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// A client must send each request's complete head within this long;
    /// otherwise its connection is closed (hyper answers
    /// `408 Request Timeout` when it can).
    pub header_read_timeout: Duration,
    /// The kernel send buffer of each accepted socket (`SO_SNDBUF`), or
    /// `None` for the kernel's default, which grows on its own (up to
    /// `net.ipv4.tcp_wmem`'s maximum, 4 MiB on most Linux systems).
    ///
    /// Why set it: a client that stops reading first fills the kernel's
    /// buffers, and only then its session's queue, where the full-queue
    /// policy (close with 1013, or drop the oldest) applies. With small
    /// frames the kernel can absorb megabytes — tens of thousands of
    /// messages, minutes at a modest rate — per stalled client before the
    /// policy sees it. A bound here makes the policy act within a known
    /// number of bytes, and bounds the kernel memory a slow client holds.
    /// It also caps what one socket can have in flight, so keep it well
    /// above a burst (64 KiB and up) for clients far away.
    pub send_buffer_size: Option<usize>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            send_buffer_size: None,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for the
/// HTTP connections in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let ServeOptions {
        header_read_timeout,
        send_buffer_size,
    } = options;
    // Connections hold a `signal_tx` clone and watch it close: dropping
    // `signal_rx` tells them to finish gracefully. They also hold a
    // `close_rx` clone: `close_tx.closed()` resolves when the last is gone.
    let (signal_tx, signal_rx) = watch::channel(());
    let (close_tx, close_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);

    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Frames are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        if let Some(size) = send_buffer_size
            && let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(size)
        {
            tracing::debug!(%remote, %error, "cannot set the socket's send buffer size");
        }

        let app = app.clone();
        // A transport whose writes hyper drives (Server-Sent Events) cannot
        // see a stalled client from inside its body: it ends the connection
        // through this instead (`transport::ConnectionAbort`).
        let abort = ConnectionAbort::default();
        let abort_request = abort.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            request.extensions_mut().insert(abort_request.clone());
            app.clone().oneshot(request.map(Body::new))
        });
        let signal_tx = signal_tx.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = pin!(connection);
            let mut stopping = pin!(signal_tx.closed());
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%remote, %error, "HTTP connection ended with an error");
                        }
                        break;
                    }
                    () = &mut stopping => connection.as_mut().graceful_shutdown(),
                    () = abort.aborted() => {
                        tracing::debug!(%remote, "HTTP connection aborted by its transport");
                        break;
                    }
                }
            }
            drop(close_rx);
        });
    }

    drop(listener);
    drop(signal_rx);
    drop(close_rx);
    close_tx.closed().await;
    Ok(())
}

/// Logs a failed `accept` and, unless the error concerns only that one
/// connection, pauses: out of descriptors (`EMFILE`), retrying at once
/// would spin a core while nothing can be accepted anyway.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
