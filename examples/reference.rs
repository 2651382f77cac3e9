//! A featureless reference broadcaster, the yardstick for BENCHMARKS.md.
//!
//! The simplest design that does the same job as a groupcast node: WebSockets
//! on `/ws/{*group}`, ONE Redis pub/sub connection that SUBSCRIBEs
//! `group:<name>` while the node has members of the group, and one message
//! pushed into a bounded queue per socket of the group. No envelopes,
//! handlers, keys, pings, presence, metrics or reconnects. Two modes:
//!
//! - `--mode tungstenite` (the default): axum WebSockets (tungstenite), a
//!   reader and a writer task per socket. Buffer sizes match groupcast's
//!   defaults (1 KiB read buffer, 8 KiB write buffer, 256 queued messages,
//!   close when the queue is full), so that the two are compared on the
//!   design, not on the knobs.
//! - `--mode prebuilt`: the cheapest design there is. The handshake is done
//!   here (no tungstenite), each broadcast's frame (header and payload in
//!   one `Bytes`) is built ONCE when it arrives from Redis and the same
//!   buffer is queued to every member; ONE task per socket writes whatever
//!   is queued with one `write_vectored`, and reads only to notice a close,
//!   into a stack buffer: no per-socket read or write buffer. Same queue
//!   length and close-on-full as the tungstenite mode. With `--deflate
//!   per-socket` it accepts `permessage-deflate` (no context takeover either
//!   way) and compresses every message again for every socket: the design
//!   that compressing once per broadcast is measured against.
//!
//! ```text
//! cargo run --release --example reference -- --listen 127.0.0.1:8090 \
//!     --redis-url redis://127.0.0.1:6379 [--mode prebuilt [--deflate per-socket]]
//! ```
//!
//! `POST /api/groups/{group}/messages` PUBLISHes the body to Redis (the node
//! delivers it when it comes back on its subscription), so the same bench
//! commands work against it.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::ServiceExt;

const QUEUE_LEN: usize = 256;
/// groupcast's default `read_buffer_size` (change with --read-buffer-size).
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 8 * 1024;
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tungstenite,
    Prebuilt,
}

struct Args {
    listen: String,
    redis_url: String,
    prefix: String,
    read_buffer: usize,
    mode: Mode,
    /// Compression level when `--deflate per-socket` (else `None`).
    deflate: Option<u32>,
    deflate_level: u32,
}

fn parse_args() -> Args {
    let mut args = Args {
        listen: "127.0.0.1:8090".into(),
        redis_url: "redis://127.0.0.1:6379".into(),
        prefix: "group:".into(),
        read_buffer: READ_BUFFER,
        mode: Mode::Tungstenite,
        deflate: None,
        deflate_level: 6,
    };
    let mut per_socket = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value,
            "--redis-url" => args.redis_url = value,
            "--channel-prefix" => args.prefix = value,
            "--read-buffer-size" => {
                args.read_buffer = value.parse().expect("--read-buffer-size: bytes")
            }
            "--mode" => {
                args.mode = match value.as_str() {
                    "tungstenite" => Mode::Tungstenite,
                    "prebuilt" => Mode::Prebuilt,
                    _ => panic!("--mode tungstenite|prebuilt"),
                }
            }
            "--deflate" => {
                per_socket = match value.as_str() {
                    "none" => false,
                    "per-socket" => true,
                    _ => panic!("--deflate none|per-socket"),
                }
            }
            "--deflate-level" => {
                args.deflate_level = value.parse().expect("--deflate-level: 0 to 9")
            }
            other => panic!(
                "unknown flag {other} (--listen, --redis-url, --channel-prefix, \
                 --read-buffer-size, --mode, --deflate, --deflate-level)"
            ),
        }
    }
    assert!(
        !per_socket || args.mode == Mode::Prebuilt,
        "--deflate per-socket needs --mode prebuilt"
    );
    args.deflate = per_socket.then_some(args.deflate_level.min(9));
    args
}

enum SubCommand {
    Subscribe(String),
    Unsubscribe(String),
}

/// A group's sockets on this node: (id, queue). `T`: what is queued, a
/// tungstenite `Message` or a pre-built frame.
type Members<T> = Vec<(u64, mpsc::Sender<T>)>;

struct Node<T> {
    groups: RwLock<HashMap<String, Members<T>>>,
    subs: mpsc::UnboundedSender<SubCommand>,
    next_id: AtomicU64,
    prefix: String,
    read_buffer: usize,
    deflate: Option<u32>,
    redis: redis::aio::MultiplexedConnection,
}

impl<T: Clone> Node<T> {
    fn join(&self, group: &str, id: u64, tx: mpsc::Sender<T>) {
        let mut groups = self.groups.write();
        let members = groups.entry(group.to_string()).or_default();
        members.push((id, tx));
        if members.len() == 1 {
            let _ = self.subs.send(SubCommand::Subscribe(group.to_string()));
        }
    }

    fn leave(&self, group: &str, id: u64) {
        let mut groups = self.groups.write();
        if let Some(members) = groups.get_mut(group) {
            members.retain(|(m, _)| *m != id);
            if members.is_empty() {
                groups.remove(group);
                let _ = self.subs.send(SubCommand::Unsubscribe(group.to_string()));
            }
        }
    }

    /// One frame, built once, pushed to every member's queue.
    fn fan_out(&self, group: &str, frame: T) {
        let mut full = Vec::new();
        if let Some(members) = self.groups.read().get(group) {
            for (id, tx) in members {
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(frame.clone()) {
                    full.push(*id);
                }
            }
        }
        // A full queue: drop the member; its writer sees the channel close
        // and sends 1013.
        for id in full {
            self.leave(group, id);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args();
    match args.mode {
        Mode::Tungstenite => {
            let node = start(&args, |payload| {
                match Utf8Bytes::try_from(payload.clone()) {
                    Ok(text) => Message::Text(text),
                    Err(_) => Message::Binary(payload),
                }
            })
            .await?;
            let app = Router::new()
                .route("/ws/{*group}", get(upgrade))
                .route("/api/groups/{*rest}", post(publish::<Message>))
                .with_state(node);
            let listener = TcpListener::bind(&args.listen).await?;
            eprintln!("reference broadcaster (tungstenite) on {}", args.listen);
            axum::serve(listener, app).await?;
        }
        Mode::Prebuilt => {
            let node = start(&args, |payload| {
                let opcode = if std::str::from_utf8(&payload).is_ok() {
                    OP_TEXT
                } else {
                    OP_BINARY
                };
                frame(opcode, false, &[&payload])
            })
            .await?;
            let app = Router::new()
                .route("/ws/{*group}", get(upgrade_prebuilt))
                .route("/api/groups/{*rest}", post(publish::<Bytes>))
                .with_state(node);
            let listener = TcpListener::bind(&args.listen).await?;
            eprintln!(
                "reference broadcaster (prebuilt frames, deflate {}) on {}",
                if args.deflate.is_some() {
                    "per socket"
                } else {
                    "off"
                },
                args.listen
            );
            serve_http1(listener, app).await;
        }
    }
    Ok(())
}

/// Connects to Redis and starts the subscription and fan-out tasks; `make`
/// turns each message's payload into what is queued to every member.
async fn start<T: Clone + Send + Sync + 'static>(
    args: &Args,
    make: fn(Bytes) -> T,
) -> anyhow::Result<Arc<Node<T>>> {
    let client = redis::Client::open(args.redis_url.as_str())?;
    let redis = client.get_multiplexed_async_connection().await?;
    let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
    let (subs_tx, mut subs_rx) = mpsc::unbounded_channel();
    let node = Arc::new(Node {
        groups: RwLock::new(HashMap::new()),
        subs: subs_tx,
        next_id: AtomicU64::new(0),
        prefix: args.prefix.clone(),
        read_buffer: args.read_buffer,
        deflate: args.deflate,
        redis,
    });

    // Subscriptions follow membership, in order.
    let prefix = args.prefix.clone();
    tokio::spawn(async move {
        while let Some(command) = subs_rx.recv().await {
            let result = match command {
                SubCommand::Subscribe(g) => sink.subscribe(format!("{prefix}{g}")).await,
                SubCommand::Unsubscribe(g) => sink.unsubscribe(format!("{prefix}{g}")).await,
            };
            if let Err(error) = result {
                eprintln!("reference: redis subscription command failed: {error}");
            }
        }
    });
    // The one subscriber connection: every message becomes one frame.
    let fan_node = node.clone();
    tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let Some(group) = msg.get_channel_name().strip_prefix(&fan_node.prefix) else {
                continue;
            };
            let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
            fan_node.fan_out(group, make(payload));
        }
        eprintln!("reference: redis subscriber connection ended");
        std::process::exit(1);
    });
    Ok(node)
}

async fn publish<T>(
    State(node): State<Arc<Node<T>>>,
    Path(rest): Path<String>,
    body: Bytes,
) -> Response {
    let Some(group) = rest.strip_suffix("/messages") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut redis = node.redis.clone();
    let channel = format!("{}{group}", node.prefix);
    match redis::cmd("PUBLISH")
        .arg(channel)
        .arg(body.as_ref())
        .query_async::<i64>(&mut redis)
        .await
    {
        Ok(_) => (StatusCode::OK, "{\"ok\":true}").into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

// ----- --mode tungstenite -----

async fn upgrade(
    State(node): State<Arc<Node<Message>>>,
    Path(group): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.read_buffer_size(node.read_buffer)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(node, group, socket))
}

async fn serve(node: Arc<Node<Message>>, group: String, socket: WebSocket) {
    let id = node.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(QUEUE_LEN);
    node.join(&group, id, tx);
    let (mut sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64);
        loop {
            if rx.recv_many(&mut batch, QUEUE_LEN).await == 0 {
                let close = Message::Close(Some(CloseFrame {
                    code: 1013,
                    reason: "slow consumer".into(),
                }));
                let _ = sink.send(close).await;
                return;
            }
            for frame in batch.drain(..) {
                if sink.feed(frame).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let reader = async {
        while let Some(Ok(frame)) = stream.next().await {
            if let Message::Close(_) = frame {
                break;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = &mut writer => {}
    }
    writer.abort();
    node.leave(&group, id);
}

// ----- --mode prebuilt -----

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const RSV1: u8 = 0x40;

/// One unmasked server frame, FIN set: a 2 to 10 byte header and the
/// concatenated `parts`, in one contiguous buffer.
fn frame(opcode: u8, rsv1: bool, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(10 + len);
    out.push(0x80 | if rsv1 { RSV1 } else { 0 } | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out.into()
}

/// (opcode, payload) of a frame built by [`frame`].
fn parse_frame(frame: &[u8]) -> (u8, &[u8]) {
    let header = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    (frame[0] & 0x0f, &frame[header..])
}

thread_local! {
    /// `--deflate per-socket`: with no context takeover a compressor keeps
    /// nothing between messages, so one per thread, reset before each
    /// message, does the same work as one per socket without its memory.
    static COMPRESS: std::cell::RefCell<Option<flate2::Compress>> =
        const { std::cell::RefCell::new(None) };
}

/// permessage-deflate (RFC 7692) of one message: raw deflate, sync flush,
/// the trailing `00 00 ff ff` stripped, RSV1 set. Done for every socket.
fn deflate_frame(level: u32, queued: &[u8]) -> Bytes {
    let (opcode, payload) = parse_frame(queued);
    COMPRESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compress = cell
            .get_or_insert_with(|| flate2::Compress::new(flate2::Compression::new(level), false));
        compress.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let consumed = compress.total_in() as usize;
            compress
                .compress_vec(&payload[consumed..], &mut out, flate2::FlushCompress::Sync)
                .expect("deflate into a Vec cannot fail");
            // Done once all input is in and the flush fitted.
            if compress.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&[0, 0, 0xff, 0xff]) {
            out.truncate(out.len() - 4);
        }
        frame(opcode, true, &[&out])
    })
}

/// Whether `headers` carry an acceptable `permessage-deflate` offer (one
/// that does not ask for a smaller server window than ours).
fn offers_deflate(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|offer| {
            let mut params = offer.split(';').map(str::trim);
            params.next() == Some("permessage-deflate")
                && params.all(|p| !p.starts_with("server_max_window_bits"))
        })
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The WebSocket handshake, by hand: check the upgrade request, answer 101
/// and take the raw `TcpStream` over once hyper lets go of it.
async fn upgrade_prebuilt(
    State(node): State<Arc<Node<Bytes>>>,
    Path(group): Path<String>,
    request: Request,
) -> Response {
    let headers = request.headers();
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let (Some(key), true, true, true) = (
        key,
        has_token(headers, header::UPGRADE, "websocket"),
        has_token(headers, header::CONNECTION, "upgrade"),
        headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13"),
    ) else {
        return (StatusCode::BAD_REQUEST, "not a WebSocket upgrade").into_response();
    };
    let deflate = node.deflate.filter(|_| offers_deflate(headers));
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            tungstenite::handshake::derive_accept_key(key.as_bytes()),
        );
    if deflate.is_some() {
        response = response.header(
            header::SEC_WEBSOCKET_EXTENSIONS,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
    }
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        // Served by `serve_http1`, so the connection is a bare TcpStream.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            eprintln!("reference: upgraded connection is not a TcpStream");
            return;
        };
        let id = node.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        node.join(&group, id, tx);
        let _ = connection(parts.io.into_inner(), parts.read_buf, rx, deflate).await;
        node.leave(&group, id);
    });
    response.body(Body::empty()).expect("valid response")
}

/// The one task of a socket: writes what is queued, reads only to notice a
/// close. Ends when either side closes, on an I/O error, or (after sending
/// 1013) when the fan-out dropped this socket for a full queue.
async fn connection(
    mut stream: TcpStream,
    already_read: Bytes,
    mut rx: mpsc::Receiver<Bytes>,
    deflate: Option<u32>,
) -> io::Result<()> {
    let mut reader = CloseWatch::default();
    let closed = reader.feed(&already_read);
    // A slice of hyper's read buffer: keeping it would keep that alive.
    drop(already_read);
    if closed {
        return write_all(&mut stream, &[close_frame(1000, "")]).await;
    }
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, QUEUE_LEN) => {
                if n == 0 {
                    return write_all(&mut stream, &[close_frame(1013, "slow consumer")]).await;
                }
                if let Some(level) = deflate {
                    for frame in &mut batch {
                        *frame = deflate_frame(level, frame);
                    }
                }
                write_all(&mut stream, &batch).await?;
                batch.clear();
                // Keep no large array of handles while idle.
                if batch.capacity() > 16 {
                    batch = Vec::new();
                }
            }
            closed = poll_fn(|cx| poll_read_close(&mut stream, &mut reader, cx)) => {
                if closed? {
                    // Reply to the client's close (best effort) and end.
                    let _ = write_all(&mut stream, &[close_frame(1000, "")]).await;
                }
                return Ok(());
            }
        }
    }
}

fn close_frame(code: u16, reason: &str) -> Bytes {
    frame(OP_CLOSE, false, &[&code.to_be_bytes(), reason.as_bytes()])
}

/// Writes every frame: `write_vectored` of the shared buffers (one IoSlice
/// each, 64 at a time), resumed where a partial write stopped.
async fn write_all(stream: &mut TcpStream, frames: &[Bytes]) -> io::Result<()> {
    let (mut i, mut offset) = (0, 0); // the next byte to write: frames[i][offset..]
    while i < frames.len() {
        let written = poll_fn(|cx| {
            // On the stack, inside the poll: nothing kept across awaits.
            let mut slices = [IoSlice::new(&[]); 64];
            let mut n = 0;
            for (k, frame) in frames[i..].iter().take(slices.len()).enumerate() {
                slices[k] = IoSlice::new(if k == 0 { &frame[offset..] } else { frame });
                n = k + 1;
            }
            Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n])
        })
        .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += written;
        while i < frames.len() && offset >= frames[i].len() {
            offset -= frames[i].len();
            i += 1;
        }
    }
    Ok(())
}

/// Reads what the client sent into a stack buffer and follows the frame
/// boundaries, ignoring the contents: Ready(Ok(true)) on a close frame,
/// Ready(Ok(false)) at the end of the stream.
fn poll_read_close(
    stream: &mut TcpStream,
    reader: &mut CloseWatch,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>> {
    let mut buf = [0u8; 1024];
    loop {
        let mut read = ReadBuf::new(&mut buf);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        if read.filled().is_empty() {
            return Poll::Ready(Ok(false));
        }
        if reader.feed(read.filled()) {
            return Poll::Ready(Ok(true));
        }
    }
}

/// Where the client's byte stream is: in a frame header (collected in
/// `head`) or skipping `skip` payload bytes.
#[derive(Default)]
struct CloseWatch {
    head: [u8; 14],
    have: usize,
    skip: u64,
}

impl CloseWatch {
    /// Consumes `bytes`; true once a close frame's header went by.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() as u64);
                self.skip -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            self.head[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            let h = &self.head[..self.have];
            if h.len() < 2 {
                continue;
            }
            let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
            let (ext, len) = match h[1] & 0x7f {
                126 => (2, None),
                127 => (8, None),
                n => (0, Some(n as u64)),
            };
            if h.len() < 2 + ext + mask {
                continue;
            }
            if h[0] & 0x0f == OP_CLOSE {
                return true;
            }
            self.skip = len.unwrap_or_else(|| {
                h[2..2 + ext]
                    .iter()
                    .fold(0u64, |acc, b| (acc << 8) | *b as u64)
            });
            self.have = 0;
        }
        false
    }
}

/// The accept loop of `--mode prebuilt`: hyper's HTTP/1.1 connection
/// directly on the `TcpStream` (`axum::serve` wraps it in a type an upgrade
/// cannot be downcast from), one task per connection.
async fn serve_http1(listener: TcpListener, app: Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                eprintln!("reference: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            app.clone().oneshot(request.map(Body::new))
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
