//! The clients, publishers and checker of the chaos run
//! (`scripts/chaos.sh`, which also starts the stack and injects the
//! faults): every message is numbered, every client records what it got,
//! and at the end each client's sequence is compared with the groups'
//! history.
//!
//! * `groupcast.v1` clients (`--v1`) reconnect to any node after a
//!   disconnect and resume with `since`/`epoch`;
//! * SSE clients (`--sse`, `GET /sse/<group>`) resume with
//!   `Last-Event-ID`;
//! * raw WebSocket clients (`--raw`) reconnect and take what comes: losses
//!   are allowed, counted and reported;
//! * publishers (`--http-publishers` through a random node's HTTP API,
//!   `--fcall-publishers` through `FCALL groupcast_publish` on Redis),
//!   each numbering its messages (`<publisher>:<n>:<ms since start>`),
//!   round-robin over the groups, never retrying (a message is published
//!   once, whatever the answer).
//!
//! What counts as expected is what history holds at the end (read through
//! the HTTP history API), not what the publishers were told: a publish
//! that timed out may still have been kept, and a kept message must reach
//! every resuming client. So history must hold the whole run (the chaos
//! compose file keeps a million messages per group for a day). The run
//! fails (exit 1) when a resuming client (v1, SSE) missed, got twice or
//! out of order a message history holds, or got a payload other than
//! history's for an offset; or when a publisher was given an offset that
//! history does not hold. Resumes told `recovered: false` and welcomes
//! without a position (the node could not read history) are counted.
//!
//! ```text
//! cargo run --example chaos_clients -- --nodes 127.0.0.1:18081,127.0.0.1:18082,127.0.0.1:18083 \
//!   --redis-url redis://127.0.0.1:16379 --seconds 60 --seed 7 --out chaos.json
//! ```

#[path = "shared/mod.rs"]
mod shared;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use shared::{Positioned, Welcome, arg, arg_or, backoff_delay};

/// Reconnect delays: the JavaScript client's formula with a shorter
/// ceiling than its 30 s, so that a run of a few minutes sees many faults
/// and not mostly waiting.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection attempt (upgrade and welcome) that takes longer failed.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// A connection on which nothing arrived for this long is given up and
/// made again (messages flow several times a second; the server pings).
const IDLE_LIMIT: Duration = Duration::from_secs(45);
/// One publish (HTTP request or FCALL) that takes longer failed.
const PUBLISH_LIMIT: Duration = Duration::from_secs(5);

/// The run's settings (flags).
struct Options {
    nodes: Vec<String>,
    redis_url: String,
    groups: Vec<String>,
    v1: usize,
    sse: usize,
    raw: usize,
    http_publishers: usize,
    fcall_publishers: usize,
    rate: f64,
    seconds: u64,
    settle: Duration,
    seed: u64,
    faults_log: Option<String>,
    ready_file: Option<String>,
    out: String,
    table: Option<String>,
}

impl Options {
    fn from_args() -> anyhow::Result<Options> {
        let nodes: Vec<String> = arg("--nodes")
            .ok_or_else(|| anyhow::anyhow!("--nodes host:port,host:port,..."))?
            .split(',')
            .map(str::to_string)
            .collect();
        let group_count: usize = arg_or("--groups", 3)?;
        Ok(Options {
            nodes,
            redis_url: arg("--redis-url")
                .ok_or_else(|| anyhow::anyhow!("--redis-url redis://host:port"))?,
            groups: (1..=group_count).map(|g| format!("chaos/g{g}")).collect(),
            v1: arg_or("--v1", 9)?,
            sse: arg_or("--sse", 6)?,
            raw: arg_or("--raw", 6)?,
            http_publishers: arg_or("--http-publishers", 2)?,
            fcall_publishers: arg_or("--fcall-publishers", 2)?,
            rate: arg_or("--rate", 5.0)?,
            seconds: arg_or("--seconds", 60)?,
            settle: Duration::from_secs(arg_or("--settle-secs", 90)?),
            seed: arg_or("--seed", rand::rng().random::<u32>() as u64)?,
            faults_log: arg("--faults-log"),
            ready_file: arg("--ready-file"),
            out: arg_or("--out", "chaos.json".to_string())?,
            table: arg("--table"),
        })
    }
}

/// What every task shares: the clock, the counters of the progress line,
/// and the two stop signals.
struct Run {
    options: Options,
    started: Instant,
    published: AtomicU64,
    publish_errors: AtomicU64,
    received: AtomicU64,
    /// Clients that had their first welcome (or, raw, first connection).
    joined: AtomicU64,
    stop_publishing: CancellationToken,
    stop: CancellationToken,
}

impl Run {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The backoff before a client's next attempt: from the start again
    /// after a connection that joined, one step longer after one that did
    /// not; cut short when the run stops.
    async fn pause_before_retry(&self, attempt: &mut u32, joined: bool, rng: &mut StdRng) {
        *attempt = if joined { 0 } else { *attempt + 1 };
        let delay = backoff_delay(*attempt, BACKOFF_MIN, BACKOFF_MAX, rng);
        self.stop
            .run_until_cancelled(tokio::time::sleep(delay))
            .await;
    }
}

/// The three kinds of client.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Class {
    V1,
    Sse,
    Raw,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::V1 => "groupcast.v1 (since/epoch)",
            Class::Sse => "SSE (Last-Event-ID)",
            Class::Raw => "raw WebSocket (no resume)",
        }
    }
    fn resumes(self) -> bool {
        self != Class::Raw
    }
}

/// One message as a client got it.
struct Receipt {
    epoch: Option<Arc<str>>,
    offset: Option<u64>,
    payload: String,
    at_ms: u64,
}

/// Everything one client saw.
struct Record {
    class: Class,
    id: usize,
    group: usize,
    receipts: Vec<Receipt>,
    /// Positions taken from a welcome: the first, and every one after a
    /// resume that was not recovered.
    positions: Vec<(Arc<str>, u64)>,
    /// Welcomes of a resume with `recovered: false`.
    unrecovered: u64,
    /// Welcomes without a position (history unreadable on that node).
    no_position: u64,
    /// SSE `reset` events.
    resets: u64,
    /// Disconnects, and for each the time until the next welcome (raw:
    /// until the next connection).
    recoveries_ms: Vec<u64>,
    connect_failures: u64,
    idle_timeouts: u64,
    close_codes: BTreeMap<String, u64>,
    /// The last offset received (or taken), for the end of the run.
    last: Arc<AtomicU64>,
}

impl Record {
    fn new(class: Class, id: usize, group: usize) -> Record {
        Record {
            class,
            id,
            group,
            receipts: Vec::new(),
            positions: Vec::new(),
            unrecovered: 0,
            no_position: 0,
            resets: 0,
            recoveries_ms: Vec::new(),
            connect_failures: 0,
            idle_timeouts: 0,
            close_codes: BTreeMap::new(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn close(&mut self, why: impl Into<String>) {
        *self.close_codes.entry(why.into()).or_default() += 1;
    }
}

/// A resuming client's position and its reconnect bookkeeping.
#[derive(Default)]
struct Resume {
    position: Option<(Arc<str>, u64)>,
    /// When the last connection ended, until the next welcome.
    down_since: Option<u64>,
}

impl Resume {
    /// Takes a welcome: the recovery time, the position, what was lost.
    fn welcome(&mut self, run: &Run, record: &mut Record, welcome: &Welcome) {
        if let Some(down) = self.down_since.take() {
            record.recoveries_ms.push(run.now_ms().saturating_sub(down));
        }
        let (Some(epoch), Some(offset)) = (&welcome.epoch, welcome.offset) else {
            record.no_position += 1;
            return;
        };
        let first = self.position.is_none();
        if first {
            run.joined.fetch_add(1, Ordering::Relaxed);
        }
        if welcome.recovered == Some(false) {
            record.unrecovered += 1;
        }
        if first || welcome.recovered == Some(false) {
            let position: (Arc<str>, u64) = (epoch.as_str().into(), offset);
            record.positions.push(position.clone());
            record.last.store(offset, Ordering::Relaxed);
            self.position = Some(position);
        }
    }

    /// Takes a message with a position.
    fn message(
        &mut self,
        run: &Run,
        record: &mut Record,
        epoch: Option<&str>,
        offset: Option<u64>,
        data: String,
    ) {
        let epoch: Option<Arc<str>> = match (epoch, &self.position) {
            (Some(e), Some((current, _))) if **current == *e => Some(current.clone()),
            (Some(e), _) => Some(e.into()),
            (None, _) => None,
        };
        if let (Some(e), Some(o)) = (&epoch, offset) {
            self.position = Some((e.clone(), o));
            record.last.store(o, Ordering::Relaxed);
        }
        record.receipts.push(Receipt {
            epoch,
            offset,
            payload: data,
            at_ms: run.now_ms(),
        });
        run.received.fetch_add(1, Ordering::Relaxed);
    }

    fn disconnected(&mut self, run: &Run) {
        self.down_since.get_or_insert(run.now_ms());
    }
}

/// How a connection ended.
struct Ended {
    /// It got a welcome (or, raw, connected): the backoff starts over.
    joined: bool,
    /// Reconnect at once (4010: "resume with since").
    at_once: bool,
}

/// Reads frames until the connection ends, handing each text frame to
/// `on_text`; counts why it ended.
async fn read_ws(
    ws: &mut shared::Ws,
    record: &mut Record,
    mut on_text: impl FnMut(&mut Record, String),
) -> bool {
    loop {
        match tokio::time::timeout(IDLE_LIMIT, ws.next()).await {
            Err(_) => {
                record.idle_timeouts += 1;
                record.close("idle");
                return false;
            }
            Ok(None) => {
                record.close("eof");
                return false;
            }
            Ok(Some(Err(e))) => {
                record.close(error_kind(&e.to_string()));
                return false;
            }
            Ok(Some(Ok(Message::Text(text)))) => on_text(record, text.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                record.close(code.to_string());
                return code == 4010;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A short name for a connection error, to count them.
fn error_kind(error: &str) -> String {
    let short: String = error.chars().take(40).collect();
    format!("error: {short}")
}

fn pick<'a>(nodes: &'a [String], rng: &mut StdRng) -> &'a str {
    &nodes[rng.random_range(0..nodes.len())]
}

/// A `groupcast.v1` client: joins, and after any disconnect resumes with
/// `since`/`epoch` on a random node.
async fn v1_client(run: Arc<Run>, mut record: Record, mut rng: StdRng) -> Record {
    let group = run.options.groups[record.group].clone();
    let mut resume = Resume::default();
    let mut attempt = 0u32;
    while !run.stop.is_cancelled() {
        let node = pick(&run.options.nodes, &mut rng).to_string();
        let url = match &resume.position {
            Some((epoch, offset)) => format!(
                "ws://{node}/ws/{group}?{}",
                shared::resume_query(epoch, *offset)
            ),
            None => format!("ws://{node}/ws/{group}"),
        };
        let session = async {
            let (mut ws, welcome) = match shared::connect_v1(&url, CONNECT_LIMIT).await {
                Ok(connected) => connected,
                Err(_) => {
                    record.connect_failures += 1;
                    return Ended {
                        joined: false,
                        at_once: false,
                    };
                }
            };
            resume.welcome(&run, &mut record, &welcome);
            let at_once = read_ws(&mut ws, &mut record, |record, text| {
                let Ok(json) = serde_json::from_str::<Value>(&text) else {
                    record.close("bad json");
                    return;
                };
                if let Some(m) = Positioned::parse(&json) {
                    resume.message(&run, record, m.epoch.as_deref(), m.offset, m.data);
                }
            })
            .await;
            Ended {
                joined: true,
                at_once,
            }
        };
        let Some(ended) = run.stop.run_until_cancelled(session).await else {
            break;
        };
        resume.disconnected(&run);
        if !ended.at_once {
            run.pause_before_retry(&mut attempt, ended.joined, &mut rng)
                .await;
        }
    }
    record
}

/// One Server-Sent Event.
#[derive(Default)]
struct Event {
    kind: Option<String>,
    id: Option<String>,
    data: Vec<String>,
}

/// Splits an SSE byte stream into events (the parts of the format the
/// server uses: `event`, `id`, `data`, comments, `retry`).
#[derive(Default)]
struct SseParser {
    buffer: String,
    event: Event,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8], events: &mut Vec<Event>) {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        while let Some(end) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.event.data.is_empty() || self.event.kind.is_some() {
                    events.push(std::mem::take(&mut self.event));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event.kind = Some(value.to_string()),
                "id" => self.event.id = Some(value.to_string()),
                "data" => self.event.data.push(value.to_string()),
                _ => {}
            }
        }
    }
}

/// An SSE client: `GET /sse/<group>`, resuming with `Last-Event-ID`.
async fn sse_client(run: Arc<Run>, mut record: Record, mut rng: StdRng) -> Record {
    let group = run.options.groups[record.group].clone();
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_LIMIT)
        .build()
        .unwrap_or_default();
    let mut resume = Resume::default();
    let mut attempt = 0u32;
    while !run.stop.is_cancelled() {
        let node = pick(&run.options.nodes, &mut rng).to_string();
        let mut request = http
            .get(format!("http://{node}/sse/{group}"))
            .header("accept", "text/event-stream");
        if let Some((epoch, offset)) = &resume.position {
            request = request.header("last-event-id", format!("{epoch}:{offset}"));
        }
        let session = async {
            let response = match tokio::time::timeout(CONNECT_LIMIT, request.send()).await {
                Ok(Ok(r)) if r.status().is_success() => r,
                _ => {
                    record.connect_failures += 1;
                    return false;
                }
            };
            let mut response = response;
            let mut parser = SseParser::default();
            let mut joined = false;
            loop {
                let chunk = match tokio::time::timeout(IDLE_LIMIT, response.chunk()).await {
                    Err(_) => {
                        record.idle_timeouts += 1;
                        record.close("idle");
                        return joined;
                    }
                    Ok(Ok(Some(chunk))) => chunk,
                    Ok(Ok(None)) => {
                        record.close("eof");
                        return joined;
                    }
                    Ok(Err(e)) => {
                        record.close(error_kind(&e.to_string()));
                        return joined;
                    }
                };
                let mut events = Vec::new();
                parser.push(&chunk, &mut events);
                for event in events {
                    let data = event.data.join("\n");
                    match event.kind.as_deref() {
                        Some("welcome") => {
                            if let Some(welcome) = serde_json::from_str::<Value>(&data)
                                .ok()
                                .as_ref()
                                .and_then(Welcome::parse)
                            {
                                resume.welcome(&run, &mut record, &welcome);
                                joined = true;
                            }
                        }
                        Some("reset") => record.resets += 1,
                        Some("close") => {
                            let kind = serde_json::from_str::<Value>(&data)
                                .ok()
                                .and_then(|v| v["kind"].as_str().map(str::to_string))
                                .unwrap_or_default();
                            record.close(format!("sse close {kind}"));
                        }
                        None | Some("message") => {
                            let position = event.id.as_deref().and_then(|id| id.rsplit_once(':'));
                            let (epoch, offset) = match position {
                                Some((e, o)) => (Some(e), o.parse().ok()),
                                None => (None, None),
                            };
                            resume.message(&run, &mut record, epoch, offset, data);
                        }
                        Some(_) => {}
                    }
                }
            }
        };
        let Some(joined) = run.stop.run_until_cancelled(session).await else {
            break;
        };
        resume.disconnected(&run);
        run.pause_before_retry(&mut attempt, joined, &mut rng).await;
    }
    record
}

/// A raw WebSocket client: no subprotocol, no positions, no resume.
async fn raw_client(run: Arc<Run>, mut record: Record, mut rng: StdRng) -> Record {
    let group = run.options.groups[record.group].clone();
    let mut down_since: Option<u64> = None;
    let mut first = true;
    let mut attempt = 0u32;
    while !run.stop.is_cancelled() {
        let url = format!("ws://{}/ws/{group}", pick(&run.options.nodes, &mut rng));
        let session = async {
            let connected = tokio::time::timeout(
                CONNECT_LIMIT,
                tokio_tungstenite::connect_async(url.as_str()),
            )
            .await;
            let Ok(Ok((mut ws, _))) = connected else {
                record.connect_failures += 1;
                return false;
            };
            if let Some(down) = down_since.take() {
                record.recoveries_ms.push(run.now_ms().saturating_sub(down));
            }
            if std::mem::take(&mut first) {
                run.joined.fetch_add(1, Ordering::Relaxed);
            }
            read_ws(&mut ws, &mut record, |record, payload| {
                record.receipts.push(Receipt {
                    epoch: None,
                    offset: None,
                    payload,
                    at_ms: run.now_ms(),
                });
                run.received.fetch_add(1, Ordering::Relaxed);
            })
            .await;
            true
        };
        let Some(joined) = run.stop.run_until_cancelled(session).await else {
            break;
        };
        down_since.get_or_insert(run.now_ms());
        run.pause_before_retry(&mut attempt, joined, &mut rng).await;
    }
    record
}

/// One publish and what its publisher was told.
struct Sent {
    group: usize,
    payload: String,
    /// The position it was given, if the publish was acknowledged.
    acked: Option<(String, u64)>,
    error: Option<String>,
}

/// A publisher's messages, in order.
struct Publisher {
    name: String,
    via: &'static str,
    sent: Vec<Sent>,
}

/// Paces a publisher: `rate` per second, numbered from 1, round-robin over
/// the groups, until publishing stops; `publish(group, payload)` answers
/// the position or the error.
async fn publish_loop<F, Fut>(run: &Run, publisher: &mut Publisher, offset: usize, mut publish: F)
where
    F: FnMut(usize, String) -> Fut,
    Fut: std::future::Future<Output = Result<(String, u64), String>>,
{
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / run.options.rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        if run
            .stop_publishing
            .run_until_cancelled(pace.tick())
            .await
            .is_none()
        {
            return;
        }
        n += 1;
        let group = (offset + n as usize) % run.options.groups.len();
        let payload = format!("{}:{n}:{}", publisher.name, run.now_ms());
        let outcome = publish(group, payload.clone()).await;
        run.published.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            run.publish_errors.fetch_add(1, Ordering::Relaxed);
        }
        let (acked, error) = match outcome {
            Ok(position) => (Some(position), None),
            Err(e) => (None, Some(e)),
        };
        publisher.sent.push(Sent {
            group,
            payload,
            acked,
            error,
        });
    }
}

/// Publishes through a random node's `POST /api/groups/<g>/messages`.
async fn http_publisher(run: Arc<Run>, index: usize, mut rng: StdRng) -> Publisher {
    let mut publisher = Publisher {
        name: format!("http{}", index + 1),
        via: "HTTP API",
        sent: Vec::new(),
    };
    let http = reqwest::Client::builder()
        .timeout(PUBLISH_LIMIT)
        .build()
        .unwrap_or_default();
    let nodes = run.options.nodes.clone();
    let groups = run.options.groups.clone();
    publish_loop(&run, &mut publisher, index, |group, payload| {
        let url = format!(
            "http://{}/api/groups/{}/messages",
            pick(&nodes, &mut rng),
            groups[group]
        );
        let request = http
            .post(url)
            .header("content-type", "text/plain")
            .body(payload);
        async move {
            let response = request
                .send()
                .await
                .map_err(|e| error_kind(&e.to_string()))?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                return Err(format!(
                    "{} {}",
                    status.as_u16(),
                    body["error"].as_str().unwrap_or("")
                ));
            }
            match (body["epoch"].as_str(), body["offset"].as_u64()) {
                (Some(epoch), Some(offset)) => Ok((epoch.to_string(), offset)),
                _ => Err(format!("{status}: no position in {body}")),
            }
        }
    })
    .await;
    publisher
}

/// Publishes with `FCALL groupcast_publish 1 <group> <payload>` straight to
/// Redis (as `groupcast publish --redis-url` does), reconnecting after any
/// error.
async fn fcall_publisher(run: Arc<Run>, index: usize) -> Publisher {
    let mut publisher = Publisher {
        name: format!("fcall{}", index + 1),
        via: "FCALL",
        sent: Vec::new(),
    };
    let client = match redis::Client::open(run.options.redis_url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("fcall publisher: {e}");
            return publisher;
        }
    };
    let groups = run.options.groups.clone();
    let connection: Arc<tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>> =
        Arc::default();
    publish_loop(&run, &mut publisher, index + 1, |group, payload| {
        let (client, connection, group) =
            (client.clone(), connection.clone(), groups[group].clone());
        async move {
            let mut slot = connection.lock().await;
            let outcome = tokio::time::timeout(PUBLISH_LIMIT, async {
                if slot.is_none() {
                    *slot = Some(
                        client
                            .get_multiplexed_async_connection()
                            .await
                            .map_err(|e| e.to_string())?,
                    );
                }
                let Some(conn) = slot.as_mut() else {
                    return Err("no connection".to_string());
                };
                redis::cmd("FCALL")
                    .arg("groupcast_publish")
                    .arg(1)
                    .arg(&group)
                    .arg(&payload)
                    .query_async::<(u64, String)>(conn)
                    .await
                    .map(|(offset, epoch)| (epoch, offset))
                    .map_err(|e| error_kind(&e.to_string()))
            })
            .await
            .unwrap_or_else(|_| Err("timeout".to_string()));
            if outcome.is_err() {
                *slot = None;
            }
            outcome
        }
    })
    .await;
    publisher
}

/// A group's history at the end: its epoch and every retained message.
struct History {
    epoch: String,
    top: u64,
    by_offset: BTreeMap<u64, String>,
    by_payload: HashMap<String, u64>,
}

/// Reads a group's whole history through a node's HTTP API, page by page.
async fn read_history(http: &reqwest::Client, node: &str, group: &str) -> anyhow::Result<History> {
    let mut since = 0u64;
    let mut history = History {
        epoch: String::new(),
        top: 0,
        by_offset: BTreeMap::new(),
        by_payload: HashMap::new(),
    };
    loop {
        let page: Value = http
            .get(format!(
                "http://{node}/api/groups/{group}/history?since={since}&limit=1000"
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        history.epoch = page["epoch"].as_str().unwrap_or_default().to_string();
        history.top = page["offset"].as_u64().unwrap_or(0);
        let messages = page["messages"].as_array().cloned().unwrap_or_default();
        for message in &messages {
            let offset = message["offset"].as_u64().unwrap_or(0);
            let data = message["data"].as_str().unwrap_or_default().to_string();
            history.by_payload.insert(data.clone(), offset);
            history.by_offset.insert(offset, data);
            since = since.max(offset);
        }
        if messages.len() < 1000 || since >= history.top {
            return Ok(history);
        }
    }
}

/// Polls every node's `/readyz` until all answer 200, up to `limit`.
async fn wait_ready(http: &reqwest::Client, nodes: &[String], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let mut ready = 0;
        for node in nodes {
            if let Ok(r) = http.get(format!("http://{node}/readyz")).send().await
                && r.status().is_success()
            {
                ready += 1;
            }
        }
        if ready == nodes.len() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// The faults the injector logged (`<unix time> <kind> <target>` lines).
fn read_faults(path: Option<&str>) -> Vec<String> {
    path.and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// One client's sequence checked against its group's history.
#[derive(Default, Clone)]
struct Checked {
    expected: u64,
    received: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    not_in_history: u64,
    wrong_payload: u64,
    unrecovered: u64,
    no_position: u64,
    reconnects: u64,
    longest_recovery_ms: u64,
    max_latency_ms: u64,
    lost_offsets: Vec<u64>,
}

impl Checked {
    fn add(&mut self, other: &Checked) {
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.not_in_history += other.not_in_history;
        self.wrong_payload += other.wrong_payload;
        self.unrecovered += other.unrecovered;
        self.no_position += other.no_position;
        self.reconnects += other.reconnects;
        self.longest_recovery_ms = self.longest_recovery_ms.max(other.longest_recovery_ms);
        self.max_latency_ms = self.max_latency_ms.max(other.max_latency_ms);
    }

    /// Whether a resuming client's record breaks the guarantee: a
    /// message history holds missed, doubled or out of order, or not the
    /// payload history holds. (A resume told `recovered: false`, or a
    /// welcome without a position, is reported, and fails the run only
    /// through what it made the client miss.)
    fn fails(&self) -> bool {
        self.lost + self.duplicated + self.reordered + self.wrong_payload > 0
    }
}

/// The publisher's clock in a payload (`<publisher>:<n>:<ms>`).
fn sent_at(payload: &str) -> Option<u64> {
    payload.rsplit(':').next()?.parse().ok()
}

/// Compares one client's receipts with history.
fn check(record: &Record, history: &History) -> Checked {
    let mut checked = Checked {
        received: record.receipts.len() as u64,
        unrecovered: record.unrecovered,
        no_position: record.no_position,
        reconnects: record.recoveries_ms.len() as u64,
        longest_recovery_ms: record.recoveries_ms.iter().copied().max().unwrap_or(0),
        ..Checked::default()
    };
    // Each receipt's offset in the final epoch: its own (resuming
    // clients), or found by payload (raw clients).
    let mut offsets = Vec::with_capacity(record.receipts.len());
    for receipt in &record.receipts {
        if let Some(at) = sent_at(&receipt.payload) {
            checked.max_latency_ms = checked.max_latency_ms.max(receipt.at_ms.saturating_sub(at));
        }
        let offset = if record.class.resumes() {
            match (&receipt.epoch, receipt.offset) {
                (Some(e), Some(o)) if **e == *history.epoch => {
                    if history
                        .by_offset
                        .get(&o)
                        .is_some_and(|p| *p != receipt.payload)
                    {
                        checked.wrong_payload += 1;
                    }
                    Some(o)
                }
                _ => None,
            }
        } else {
            history.by_payload.get(&receipt.payload).copied()
        };
        match offset {
            Some(o) => offsets.push(o),
            None => checked.not_in_history += 1,
        }
    }
    // From where the client stood in this epoch to the end of history.
    let start = if record.class.resumes() {
        record
            .positions
            .iter()
            .find(|(e, _)| **e == *history.epoch)
            .map(|(_, o)| *o + 1)
    } else {
        offsets.first().copied()
    };
    let Some(start) = start else {
        checked.expected = history.by_offset.len() as u64;
        checked.lost = checked.expected;
        return checked;
    };
    let mut seen = HashSet::with_capacity(offsets.len());
    let mut highest = 0u64;
    for &o in &offsets {
        if !seen.insert(o) {
            checked.duplicated += 1;
        } else if o < highest {
            checked.reordered += 1;
        }
        highest = highest.max(o);
    }
    for &o in history.by_offset.range(start..).map(|(o, _)| o) {
        checked.expected += 1;
        if !seen.contains(&o) {
            checked.lost += 1;
            if checked.lost_offsets.len() < 50 {
                checked.lost_offsets.push(o);
            }
        }
    }
    checked
}

fn checked_json(c: &Checked) -> Value {
    json!({
        "expected": c.expected, "received": c.received, "lost": c.lost,
        "duplicated": c.duplicated, "reordered": c.reordered,
        "not_in_history": c.not_in_history, "wrong_payload": c.wrong_payload,
        "unrecovered_resumes": c.unrecovered, "welcomes_without_position": c.no_position,
        "reconnects": c.reconnects,
        "longest_recovery_ms": c.longest_recovery_ms, "max_latency_ms": c.max_latency_ms,
    })
}

fn row(name: &str, clients: usize, c: &Checked) -> String {
    format!(
        "| {name} | {clients} | {} | {} | {} | {} | {} | {} / {} | {} | {:.1} s | {:.1} s |",
        c.expected,
        c.received,
        c.lost,
        c.duplicated,
        c.reordered,
        c.unrecovered,
        c.no_position,
        c.reconnects,
        c.longest_recovery_ms as f64 / 1000.0,
        c.max_latency_ms as f64 / 1000.0
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::from_args()?;
    let seed = options.seed;
    eprintln!("chaos clients: seed {seed}");
    let run = Arc::new(Run {
        options,
        started: Instant::now(),
        published: AtomicU64::new(0),
        publish_errors: AtomicU64::new(0),
        received: AtomicU64::new(0),
        joined: AtomicU64::new(0),
        stop_publishing: CancellationToken::new(),
        stop: CancellationToken::new(),
    });
    let o = &run.options;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    anyhow::ensure!(
        wait_ready(&http, &o.nodes, Duration::from_secs(60)).await,
        "the nodes are not ready"
    );

    // One message in each group first: a history group without any has
    // no epoch yet, and a client needs one to resume from.
    for group in &o.groups {
        http.post(format!("http://{}/api/groups/{group}/messages", o.nodes[0]))
            .header("content-type", "text/plain")
            .body("start:0:0")
            .send()
            .await?
            .error_for_status()?;
    }
    // Then the clients, each on a random node, every one joined before
    // the first numbered message.
    let mut seeds = StdRng::seed_from_u64(seed);
    let mut clients = Vec::new();
    let mut lasts = Vec::new();
    let classes = [(Class::V1, o.v1), (Class::Sse, o.sse), (Class::Raw, o.raw)];
    for (class, count) in classes {
        for id in 0..count {
            let record = Record::new(class, id, id % o.groups.len());
            if class.resumes() {
                lasts.push((record.group, record.last.clone()));
            }
            let rng = StdRng::seed_from_u64(seeds.random());
            let run = run.clone();
            clients.push(match class {
                Class::V1 => tokio::spawn(v1_client(run, record, rng)),
                Class::Sse => tokio::spawn(sse_client(run, record, rng)),
                Class::Raw => tokio::spawn(raw_client(run, record, rng)),
            });
        }
    }
    let all = (o.v1 + o.sse + o.raw) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.joined.load(Ordering::Relaxed) < all && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(
        run.joined.load(Ordering::Relaxed) == all,
        "not every client joined within 30 s"
    );

    if let Some(path) = &o.ready_file {
        std::fs::write(path, "joined\n")?;
    }
    eprintln!(
        "[chaos] {all} clients joined; publishing for {} s",
        o.seconds
    );
    let began = run.now_ms();
    let mut publishers = Vec::new();
    for i in 0..o.http_publishers {
        publishers.push(tokio::spawn(http_publisher(
            run.clone(),
            i,
            StdRng::seed_from_u64(seeds.random()),
        )));
    }
    for i in 0..o.fcall_publishers {
        publishers.push(tokio::spawn(fcall_publisher(run.clone(), i)));
    }
    let progress = {
        let run = run.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                let secs = (run.now_ms() - began) / 1000;
                eprintln!(
                    "[chaos] {:02}:{:02}:{:02} faults {} published {} ({} errors) received {}",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60,
                    read_faults(run.options.faults_log.as_deref()).len(),
                    run.published.load(Ordering::Relaxed),
                    run.publish_errors.load(Ordering::Relaxed),
                    run.received.load(Ordering::Relaxed),
                );
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    run.stop_publishing.cancel();
    let mut published = Vec::new();
    for p in publishers {
        published.push(p.await?);
    }
    eprintln!("[chaos] publishing ended; waiting for the nodes and the clients to catch up");

    // Every node back, then every resuming client caught up with its
    // group's last offset (or the settle time is up).
    let ready = wait_ready(&http, &o.nodes, o.settle).await;
    let mut histories = Vec::new();
    for group in &o.groups {
        let mut read = Err(anyhow::anyhow!("no node answered"));
        for node in &o.nodes {
            read = read_history(&http, node, group).await;
            if read.is_ok() {
                break;
            }
        }
        histories.push(read?);
    }
    let deadline = Instant::now() + o.settle;
    while Instant::now() < deadline
        && lasts
            .iter()
            .any(|(g, last)| last.load(Ordering::Relaxed) < histories[*g].top)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Raw clients have no position to wait for: a moment for the last
    // live messages.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.stop.cancel();
    progress.abort();
    let mut records = Vec::new();
    for c in clients {
        records.push(c.await?);
    }
    let duration_s = (run.now_ms() - began) as f64 / 1000.0;

    // The check.
    let mut by_class: BTreeMap<Class, (usize, Checked)> = BTreeMap::new();
    let mut total = Checked::default();
    let mut failures = Vec::new();
    let mut per_client = Vec::new();
    for record in &records {
        let checked = check(record, &histories[record.group]);
        if record.class.resumes() && checked.fails() {
            failures.push(format!(
                "{:?} client {} ({}): lost {}, duplicated {}, reordered {}, wrong payload {} (first lost offsets {:?})",
                record.class, record.id, o.groups[record.group], checked.lost, checked.duplicated,
                checked.reordered, checked.wrong_payload, checked.lost_offsets
            ));
        }
        let entry = by_class.entry(record.class).or_default();
        entry.0 += 1;
        entry.1.add(&checked);
        total.add(&checked);
        per_client.push(json!({
            "class": format!("{:?}", record.class), "id": record.id, "group": o.groups[record.group],
            "check": checked_json(&checked), "lost_offsets": checked.lost_offsets,
            "resets": record.resets, "connect_failures": record.connect_failures,
            "idle_timeouts": record.idle_timeouts, "ends": record.close_codes,
            "recoveries_ms": record.recoveries_ms,
        }));
    }
    let mut publisher_rows = Vec::new();
    let mut publisher_json = Vec::new();
    for p in &published {
        let acked = p.sent.iter().filter(|s| s.acked.is_some()).count();
        let mut acked_missing = 0;
        let mut errored_kept = 0;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for s in &p.sent {
            let history = &histories[s.group];
            let kept = history.by_payload.get(&s.payload);
            match &s.acked {
                Some((epoch, offset)) => {
                    if *epoch != history.epoch || kept != Some(offset) {
                        acked_missing += 1;
                    }
                }
                None => {
                    if kept.is_some() {
                        errored_kept += 1;
                    }
                }
            }
            if let Some(e) = &s.error {
                *errors.entry(e.clone()).or_default() += 1;
            }
        }
        if acked_missing > 0 {
            failures.push(format!(
                "{}: {acked_missing} acknowledged messages are not in history at their offset",
                p.name
            ));
        }
        publisher_rows.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            p.via,
            p.sent.len(),
            acked,
            p.sent.len() - acked,
            errored_kept,
            acked_missing
        ));
        publisher_json.push(json!({
            "name": p.name, "via": p.via, "sent": p.sent.len(), "acknowledged": acked,
            "errors": errors, "errored_but_kept": errored_kept, "acknowledged_not_in_history": acked_missing,
        }));
    }
    let faults = read_faults(o.faults_log.as_deref());
    let mut fault_counts: BTreeMap<String, u64> = BTreeMap::new();
    for line in &faults {
        if let Some(kind) = line.split_whitespace().nth(1) {
            *fault_counts.entry(kind.to_string()).or_default() += 1;
        }
    }
    if !ready {
        failures.push("not every node was ready again after the faults".into());
    }

    let mut table = String::new();
    table.push_str(&format!(
        "Seed {seed}; {duration_s:.0} s of publishing and catching up; {} groups; {} publishers at {}/s each; {} faults.\n\n",
        o.groups.len(),
        published.len(),
        o.rate,
        faults.len()
    ));
    table.push_str("| fault | injected |\n| --- | ---: |\n");
    for (kind, count) in &fault_counts {
        table.push_str(&format!("| {kind} | {count} |\n"));
    }
    table.push_str("\n| clients | n | expected | received | lost | duplicated | reordered | not recovered / no position | reconnects | longest recovery | longest delivery delay |\n");
    table.push_str(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (class, (n, c)) in &by_class {
        table.push_str(&row(class.name(), *n, c));
        table.push('\n');
    }
    table.push_str(&row("**total**", records.len(), &total));
    table.push_str("\n\n| publisher | via | sent | acknowledged | errors | errored but kept | acknowledged, not in history |\n");
    table.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for r in &publisher_rows {
        table.push_str(r);
        table.push('\n');
    }
    let verdict = if failures.is_empty() { "PASS" } else { "FAIL" };
    println!("{table}");
    println!("{verdict}");
    for f in &failures {
        println!("  {f}");
    }
    if let Some(path) = &o.table {
        std::fs::write(path, &table)?;
    }
    let report = json!({
        "seed": seed, "seconds": o.seconds, "duration_s": duration_s, "rate_per_publisher": o.rate,
        "groups": histories.iter().zip(&o.groups).map(|(h, g)| json!({
            "group": g, "epoch": h.epoch, "top": h.top, "retained": h.by_offset.len(),
        })).collect::<Vec<_>>(),
        "faults": fault_counts, "fault_log": faults,
        "classes": by_class.iter().map(|(c, (n, k))| (format!("{c:?}"), json!({"clients": n, "check": checked_json(k)}))).collect::<serde_json::Map<_, _>>(),
        "total": checked_json(&total),
        "publishers": publisher_json, "clients": per_client,
        "verdict": verdict, "failures": failures,
    });
    std::fs::write(&o.out, serde_json::to_string_pretty(&report)?)?;
    if !failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
