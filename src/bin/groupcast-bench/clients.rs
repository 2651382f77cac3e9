//! The WebSocket clients: connect (bounded concurrency, several source
//! addresses), then read and account until told to stop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::payload::Tally;
use crate::wire::{Counted, Event, RawWs};

/// The bench's clock: µs since it started (shared by publishers and
/// receivers, so latency needs no clock sync).
pub fn now_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Latency and delivery counts of one runtime thread. Each worker records
/// into its own shard, so recording never contends across threads.
pub struct Shard {
    pub latency: Histogram<u64>,
    pub delivered: u64,
}

static SHARDS: Mutex<Vec<Arc<Mutex<Shard>>>> = Mutex::new(Vec::new());

thread_local! {
    static SHARD: Arc<Mutex<Shard>> = {
        let shard = Arc::new(Mutex::new(Shard { latency: new_histogram(), delivered: 0 }));
        SHARDS.lock().push(shard.clone());
        shard
    };
}

fn record(latency_us: u64) {
    SHARD.with(|shard| {
        let mut shard = shard.lock();
        shard.latency.saturating_record(latency_us.max(1));
        shard.delivered += 1;
    });
}

/// (deliveries, merged latency histogram) over every thread so far.
pub fn snapshot() -> (u64, Histogram<u64>) {
    let mut merged = new_histogram();
    let mut delivered = 0;
    for shard in SHARDS.lock().iter() {
        let shard = shard.lock();
        delivered += shard.delivered;
        let _ = merged.add(&shard.latency);
    }
    (delivered, merged)
}

/// Where one client connects.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub source: Ipv4Addr,
    pub group: u32,
    pub stalled: bool,
}

/// Shared by all clients.
pub struct Shared {
    pub connect_gate: Semaphore,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    /// Clients whose connection ended before the run did.
    pub dropped: AtomicU64,
    pub connect_times: Mutex<Histogram<u64>>,
    pub stop: CancellationToken,
    /// `--compression`: offer permessage-deflate and read with [`RawWs`].
    pub compression: bool,
}

/// What one client reports at the end.
#[derive(Debug, Default)]
pub struct Outcome {
    pub group: u32,
    pub stalled: bool,
    pub connected: bool,
    pub connect_error: Option<String>,
    /// Set when the server closed or the connection failed before the end.
    pub ended_early: Option<String>,
    pub tally: Tally,
    /// Bytes read from the socket after the handshake (frame headers
    /// included; compressed bytes when compressed).
    pub wire_bytes: u64,
    /// The server accepted permessage-deflate (`--compression`).
    pub compressed: bool,
}

/// Resolves `ws://host:port` to a socket address.
pub async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let request = url
        .into_client_request()
        .with_context(|| format!("invalid --url {url}"))?;
    let uri = request.uri();
    anyhow::ensure!(
        uri.scheme_str() == Some("ws"),
        "--url {url}: only ws:// is supported"
    );
    let host = uri.host().context("--url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("--url {url}: no IPv4 address"))?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "--url {url}: the bench only targets loopback addresses"
    );
    Ok(addr)
}

/// A connected client: tungstenite's (the default) or, with
/// `--compression`, the bench's own ([`RawWs`]).
enum Conn {
    Tungstenite(Box<Ws>),
    Raw(Box<RawWs<TcpStream>>),
}

/// Connects, then reads until `shared.stop` (or the connection ends).
pub async fn run(target: Target, shared: Arc<Shared>) -> Outcome {
    let mut outcome = Outcome {
        group: target.group,
        stalled: target.stalled,
        ..Outcome::default()
    };
    let conn = {
        let Ok(_permit) = shared.connect_gate.acquire().await else {
            outcome.connect_error = Some("connect gate closed".into());
            return outcome;
        };
        if shared.stop.is_cancelled() {
            outcome.connect_error = Some("stopped before connecting".into());
            return outcome;
        }
        let started = Instant::now();
        let connecting = async {
            anyhow::Ok(if shared.compression {
                let stream = tcp_connect(&target).await?;
                let ws = RawWs::connect(stream, &target.url)
                    .await
                    .with_context(|| format!("WebSocket handshake with {}", target.url))?;
                Conn::Raw(Box::new(ws))
            } else {
                Conn::Tungstenite(Box::new(connect(&target).await?))
            })
        };
        match tokio::time::timeout(Duration::from_secs(10), connecting).await {
            Ok(Ok(conn)) => {
                let us = started.elapsed().as_micros() as u64;
                shared.connect_times.lock().saturating_record(us.max(1));
                shared.connected.fetch_add(1, Ordering::Relaxed);
                conn
            }
            Ok(Err(error)) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                outcome.connect_error = Some(format!("{error:#}"));
                return outcome;
            }
            Err(_) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                outcome.connect_error = Some("connect timed out after 10s".into());
                return outcome;
            }
        }
    };
    outcome.connected = true;
    if target.stalled {
        // Never read: the server's queue for this client fills up.
        shared.stop.cancelled().await;
        drop(conn);
        return outcome;
    }
    match conn {
        Conn::Tungstenite(ws) => read_tungstenite(*ws, &target, &shared, &mut outcome).await,
        Conn::Raw(ws) => read_raw(*ws, &target, &shared, &mut outcome).await,
    }
    if outcome.ended_early.is_some() {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
    outcome
}

async fn read_tungstenite(mut ws: Ws, target: &Target, shared: &Shared, outcome: &mut Outcome) {
    // What the handshake read (the HTTP response) is not frames.
    let handshake = ws.get_ref().read_bytes();
    loop {
        let next = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            next = ws.next() => next,
        };
        let bytes: &[u8] = match &next {
            Some(Ok(Message::Text(text))) => text.as_bytes(),
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Close(frame))) => {
                outcome.ended_early = Some(match frame {
                    Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
                    None => "closed by server".into(),
                });
                break;
            }
            Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings
            Some(Err(error)) => {
                outcome.ended_early = Some(format!("read error: {error}"));
                break;
            }
            None => {
                outcome.ended_early = Some("connection ended".into());
                break;
            }
        };
        if let Some(stamp) = outcome.tally.frame(bytes, target.group) {
            record(now_us().saturating_sub(stamp.sent_us));
        }
    }
    outcome.wire_bytes = ws.get_ref().read_bytes() - handshake;
}

async fn read_raw(
    mut ws: RawWs<TcpStream>,
    target: &Target,
    shared: &Shared,
    outcome: &mut Outcome,
) {
    outcome.compressed = ws.compressed();
    loop {
        let next = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            next = ws.next() => next,
        };
        match next {
            Ok(Event::Data) => {
                if let Some(stamp) = outcome.tally.frame(&ws.message, target.group) {
                    record(now_us().saturating_sub(stamp.sent_us));
                }
            }
            Ok(Event::Close(close)) => {
                outcome.ended_early = Some(match close {
                    Some((code, reason)) => format!("closed by server: {code} {reason}"),
                    None => "closed by server".into(),
                });
                break;
            }
            Err(error) => {
                outcome.ended_early = Some(format!("read error: {error:#}"));
                break;
            }
        }
    }
    outcome.wire_bytes = ws.stream.read_bytes() - ws.handshake_bytes;
}

type Ws = tokio_tungstenite::WebSocketStream<Counted<TcpStream>>;

/// Lets the kernel pick the source port at `connect` rather than at `bind`
/// (Linux `IP_BIND_ADDRESS_NO_PORT`). A `bind` to port 0 must find a port
/// unused by *any* socket, searching past every TIME_WAIT left by earlier
/// connections: under churn (thousands of short connections a second) that
/// search costs more CPU than everything else the tool does, and the ports
/// run out. At `connect` the port only has to make the 4-tuple unique.
/// Best effort: without it, binding still works, only slower.
fn bind_address_no_port(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, a pointer to a c_int that lives
        // through the call, and its exact size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

async fn tcp_connect(target: &Target) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    bind_address_no_port(&socket);
    socket
        .bind(SocketAddr::new(IpAddr::V4(target.source), 0))
        .with_context(|| format!("cannot bind to {}", target.source))?;
    if target.stalled {
        // A small receive buffer makes a non-reading client back up fast.
        socket.set_recv_buffer_size(4096)?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .with_context(|| format!("TCP connect to {}", target.addr))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect(target: &Target) -> anyhow::Result<Ws> {
    let stream = Counted::new(tcp_connect(target).await?);
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(config))
            .await
            .with_context(|| format!("WebSocket handshake with {}", target.url))?;
    Ok(ws)
}

/// What the churn connections did.
#[derive(Debug, Default)]
pub struct ChurnCounts {
    pub started: AtomicU64,
    pub joined: AtomicU64,
    pub failed: AtomicU64,
    /// Skipped because --churn-max-open connections were already open.
    pub skipped: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

/// One short-lived connection: connect, stay `hold` (discarding what
/// arrives), close politely.
pub async fn churn_one(
    target: Target,
    hold: Duration,
    counts: Arc<ChurnCounts>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    counts.started.fetch_add(1, Ordering::Relaxed);
    let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect(&target)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            counts
                .first_error
                .lock()
                .get_or_insert_with(|| format!("{error:#}"));
            return;
        }
        Err(_) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counts.joined.fetch_add(1, Ordering::Relaxed);
    let until = tokio::time::Instant::now() + hold;
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until, ws.next()).await {}
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}
