//! A featureless reference broadcaster, the yardstick for BENCHMARKS.md.
//!
//! The simplest design that does the same job as a groupcast node: axum
//! WebSockets on `/ws/{*group}`, ONE Redis pub/sub connection that
//! SUBSCRIBEs `group:<name>` while the node has members of the group, and
//! one pre-built frame pushed into a bounded queue per socket of the group.
//! No envelopes, handlers, keys, pings, presence, metrics or reconnects.
//! Buffer sizes match groupcast's defaults (1 KiB read buffer, 8 KiB write
//! buffer, 256 queued messages, close when the queue is full), so that the
//! two are compared on the design, not on the knobs.
//!
//! ```text
//! cargo run --release --example reference -- --listen 127.0.0.1:8090 \
//!     --redis-url redis://127.0.0.1:6379
//! ```
//!
//! `POST /api/groups/{group}/messages` PUBLISHes the body to Redis (the node
//! delivers it when it comes back on its subscription), so the same bench
//! commands work against it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use parking_lot::RwLock;
use tokio::sync::mpsc;

const QUEUE_LEN: usize = 256;
/// groupcast's default `read_buffer_size` (change with --read-buffer-size).
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 8 * 1024;
const MAX_MESSAGE: usize = 64 * 1024;

struct Args {
    listen: String,
    redis_url: String,
    prefix: String,
    read_buffer: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        listen: "127.0.0.1:8090".into(),
        redis_url: "redis://127.0.0.1:6379".into(),
        prefix: "group:".into(),
        read_buffer: READ_BUFFER,
    };
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
            other => panic!(
                "unknown flag {other} (--listen, --redis-url, --channel-prefix, --read-buffer-size)"
            ),
        }
    }
    args
}

enum SubCommand {
    Subscribe(String),
    Unsubscribe(String),
}

/// A group's sockets on this node: (id, queue).
type Members = Vec<(u64, mpsc::Sender<Message>)>;

struct Node {
    groups: RwLock<HashMap<String, Members>>,
    subs: mpsc::UnboundedSender<SubCommand>,
    next_id: AtomicU64,
    prefix: String,
    read_buffer: usize,
    redis: redis::aio::MultiplexedConnection,
}

impl Node {
    fn join(&self, group: &str, id: u64, tx: mpsc::Sender<Message>) {
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
    fn fan_out(&self, group: &str, frame: Message) {
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
            let frame = match Utf8Bytes::try_from(payload.clone()) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(payload),
            };
            fan_node.fan_out(group, frame);
        }
        eprintln!("reference: redis subscriber connection ended");
        std::process::exit(1);
    });

    let app = Router::new()
        .route("/ws/{*group}", get(upgrade))
        .route("/api/groups/{*rest}", post(publish))
        .with_state(node);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("reference broadcaster on {}", args.listen);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn upgrade(
    State(node): State<Arc<Node>>,
    Path(group): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.read_buffer_size(node.read_buffer)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(node, group, socket))
}

async fn serve(node: Arc<Node>, group: String, socket: WebSocket) {
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

async fn publish(State(node): State<Arc<Node>>, Path(rest): Path<String>, body: Bytes) -> Response {
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
