//! The clients: connect (bounded concurrency, several source addresses),
//! join their groups, then read and account until told to stop. A client
//! is a raw WebSocket (tungstenite's, or with `--compression` the bench's
//! own [`RawWs`]), a `groupcast.v1` WebSocket holding one or more groups
//! ([`crate::v1`]), or a Server-Sent Events stream ([`SseStream`]); all of
//! them account through the same [`Tally`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::args::Transport;
use crate::payload::{Stamp, Tally};
use crate::sse::SseStream;
use crate::v1;
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
    /// The groups it holds, (name, index): the first is its URL's, the
    /// others are subscribed to (`groupcast.v1`).
    pub groups: Vec<(String, u32)>,
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
    pub transport: Transport,
    /// Ask for `groupcast.v1` and read its message frames.
    pub v1: bool,
}

/// What one client reports at the end.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The indexes of the groups it held.
    pub groups: Vec<u32>,
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
    Sse(Box<SseStream<TcpStream>>),
}

/// Connects, then reads until `shared.stop` (or the connection ends).
pub async fn run(target: Target, shared: Arc<Shared>) -> Outcome {
    let mut outcome = Outcome {
        groups: target.groups.iter().map(|&(_, g)| g).collect(),
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
            anyhow::Ok(if shared.transport == Transport::Sse {
                let stream = tcp_connect(&target).await?;
                let sse = SseStream::connect(stream, &target.url)
                    .await
                    .with_context(|| format!("event stream from {}", target.url))?;
                Conn::Sse(Box::new(sse))
            } else if shared.compression {
                let stream = tcp_connect(&target).await?;
                let ws = RawWs::connect(stream, &target.url)
                    .await
                    .with_context(|| format!("WebSocket handshake with {}", target.url))?;
                Conn::Raw(Box::new(ws))
            } else {
                let protocol = shared.v1.then_some(v1::PROTOCOL);
                let mut ws = connect(&target, protocol).await?;
                subscribe_rest(&mut ws, &target, &mut outcome.tally).await?;
                Conn::Tungstenite(Box::new(ws))
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
        Conn::Sse(sse) => read_sse(*sse, &target, &shared, &mut outcome).await,
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
        if let Some(stamp) = account(&mut outcome.tally, target, shared.v1, bytes) {
            record(now_us().saturating_sub(stamp.sent_us));
        }
    }
    outcome.wire_bytes = ws.get_ref().read_bytes() - handshake;
}

/// Accounts one message: a raw client's is the payload itself, a
/// `groupcast.v1` client's a JSON frame naming its group.
fn account(tally: &mut Tally, target: &Target, v1: bool, bytes: &[u8]) -> Option<Stamp> {
    if v1 {
        v1::account(tally, &target.groups, bytes)
    } else {
        tally.frame(bytes, target.groups[0].1)
    }
}

/// Subscribes a `groupcast.v1` client to its groups after the first, one
/// request at a time, each waiting for its answer; what arrives meanwhile
/// is accounted. A refusal fails the client.
async fn subscribe_rest(ws: &mut Ws, target: &Target, tally: &mut Tally) -> anyhow::Result<()> {
    for (id, (group, _)) in target.groups.iter().enumerate().skip(1) {
        let id = id as u64;
        ws.send(Message::text(v1::subscribe_request(group, id)))
            .await
            .context("sending a subscribe request")?;
        loop {
            let frame = match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    anyhow::bail!("closed while subscribing: {frame:?}")
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => anyhow::bail!("read error while subscribing: {error}"),
                None => anyhow::bail!("connection ended while subscribing"),
            };
            match v1::answer_to(frame.as_bytes(), id) {
                Some(Ok(())) => break,
                Some(Err(refused)) => anyhow::bail!(refused),
                None => {
                    if let Some(stamp) = v1::account(tally, &target.groups, frame.as_bytes()) {
                        record(now_us().saturating_sub(stamp.sent_us));
                    }
                }
            }
        }
    }
    Ok(())
}

async fn read_sse(
    mut sse: SseStream<TcpStream>,
    target: &Target,
    shared: &Shared,
    outcome: &mut Outcome,
) {
    let group = target.groups[0].1;
    let (tally, ended_early) = (&mut outcome.tally, &mut outcome.ended_early);
    loop {
        let read = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            read = sse.read_events(|event| {
                let stamp = match event.kind {
                    b"message" => tally.frame(event.data, group),
                    b"binary" => match base64::engine::general_purpose::STANDARD.decode(event.data) {
                        Ok(bytes) => tally.frame(&bytes, group),
                        Err(_) => {
                            tally.invalid += 1;
                            None
                        }
                    },
                    b"close" => {
                        *ended_early = Some(format!(
                            "closed by server: {}",
                            String::from_utf8_lossy(event.data)
                        ));
                        None
                    }
                    _ => None, // welcome, reset: not deliveries
                };
                if let Some(stamp) = stamp {
                    record(now_us().saturating_sub(stamp.sent_us));
                }
            }) => read,
        };
        match read {
            Ok(true) if ended_early.is_none() => {}
            Ok(true) => break,
            Ok(false) => {
                ended_early.get_or_insert_with(|| "stream ended".into());
                break;
            }
            Err(error) => {
                *ended_early = Some(format!("read error: {error:#}"));
                break;
            }
        }
    }
    outcome.wire_bytes = sse.stream.read_bytes() - sse.head_bytes;
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
                if let Some(stamp) = outcome.tally.frame(&ws.message, target.groups[0].1) {
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

/// A tungstenite client, asking for `protocol` if given.
async fn connect(target: &Target, protocol: Option<&'static str>) -> anyhow::Result<Ws> {
    let stream = Counted::new(tcp_connect(target).await?);
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .with_context(|| format!("invalid URL {}", target.url))?;
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static(protocol),
        );
    }
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
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
    let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect(&target, None)).await {
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
