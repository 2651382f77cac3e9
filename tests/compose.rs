//! End-to-end test of the docker-compose cluster: three `ws` replicas
//! behind the load balancer, Redis in between.
//!
//! Ignored by default: it needs the stack running. `scripts/compose-test.sh`
//! builds the images, starts the stack and runs it with
//!
//!   GROUPCAST_COMPOSE_ADDR=127.0.0.1:<lb port> GROUPCAST_COMPOSE_PROJECT=<project> \
//!   cargo test --test compose -- --ignored --nocapture
//!
//! Every check prints a `PASS:` or `FAIL:` line. The stack is changed: one
//! `ws` replica is stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

const GROUP: &str = "ticker_ws";
const CHANNEL: &str = "group:ticker_ws";
/// Longest wait for any one expectation.
const WAIT: Duration = Duration::from_secs(20);

fn pass(what: &str) {
    println!("PASS: {what}");
}

/// Prints PASS or FAIL for `what`; a FAIL ends the test.
fn check(ok: bool, what: &str) {
    if ok {
        pass(what);
    } else {
        println!("FAIL: {what}");
        panic!("check failed: {what}");
    }
}

fn fail(what: &str) -> ! {
    println!("FAIL: {what}");
    panic!("check failed: {what}");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/compose-test.sh, which starts the stack")
    })
}

/// Runs `docker ARGS`, bounded; its trimmed stdout, or a failure.
async fn docker(args: &[&str]) -> String {
    let output = timeout(
        Duration::from_secs(60),
        Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| fail(&format!("docker {} timed out", args.join(" "))))
    .unwrap_or_else(|e| fail(&format!("cannot run docker: {e}")));
    if !output.status.success() {
        fail(&format!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The ids of the project's running containers of `service`.
async fn containers(project: &str, service: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ])
    .await
    .lines()
    .map(str::to_string)
    .collect()
}

/// What one client saw, filled in by its reader task.
#[derive(Default)]
struct Seen {
    texts: Vec<String>,
    /// The server's close frame (code, reason), or (0, "") if the
    /// connection ended without one.
    closed: Option<(u16, String)>,
}

/// A WebSocket client through the load balancer, read by its own task so
/// that nothing it is sent waits on the test.
struct Tracked {
    node: String,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracked {
    /// Connects, retrying for a while (the balancer may still be catching up).
    async fn connect(url: &str) -> Tracked {
        let deadline = Instant::now() + WAIT;
        loop {
            let last_error = match timeout(
                Duration::from_secs(5),
                tokio_tungstenite::connect_async(url),
            )
            .await
            {
                Ok(Ok((ws, response))) => {
                    let node = response
                        .headers()
                        .get("x-groupcast-node")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let seen = Arc::new(Mutex::new(Seen::default()));
                    let sink = seen.clone();
                    let task = tokio::spawn(async move {
                        let (_write, mut read) = ws.split();
                        while let Some(frame) = read.next().await {
                            match frame {
                                Ok(Message::Text(text)) => {
                                    sink.lock().unwrap().texts.push(text.to_string())
                                }
                                Ok(Message::Close(frame)) => {
                                    sink.lock().unwrap().closed =
                                        Some(frame.map_or((0, String::new()), |f| {
                                            (u16::from(f.code), f.reason.to_string())
                                        }));
                                    break;
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                        let mut seen = sink.lock().unwrap();
                        if seen.closed.is_none() {
                            seen.closed = Some((0, String::new()));
                        }
                    });
                    return Tracked { node, seen, task };
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            if Instant::now() >= deadline {
                fail(&format!("connect to {url}: {last_error}"));
            }
            sleep(Duration::from_millis(200)).await;
        }
    }

    fn texts(&self) -> Vec<String> {
        self.seen.lock().unwrap().texts.clone()
    }

    fn has(&self, text: &str) -> bool {
        self.seen.lock().unwrap().texts.iter().any(|t| t == text)
    }

    fn closed(&self) -> Option<(u16, String)> {
        self.seen.lock().unwrap().closed.clone()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` every 50 ms for at most [`WAIT`]; whether it held.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// The numbers of the `seq-N` messages a client got, in arrival order.
fn sequence(texts: &[String]) -> Vec<u64> {
    texts
        .iter()
        .filter_map(|t| t.strip_prefix("seq-"))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Whether `numbers` is exactly `first..=last`, in order.
fn contiguous(numbers: &[u64], first: u64, last: u64) -> bool {
    numbers.iter().copied().eq(first..=last)
}

/// A long-running `redis-cli` inside the Redis container, fed one command
/// per line: publishes at a steady pace without a `docker exec` each.
struct Publisher {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
}

impl Publisher {
    fn start(redis: &str) -> Publisher {
        let mut child = Command::new("docker")
            .args(["exec", "-i", redis, "redis-cli"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot start redis-cli: {e}")));
        let stdin = child.stdin.take().expect("stdin");
        Publisher { child, stdin }
    }

    async fn publish(&mut self, text: &str) {
        let line = format!("PUBLISH {CHANNEL} {text}\n");
        if let Err(e) = self.stdin.write_all(line.as_bytes()).await {
            fail(&format!("redis-cli went away: {e}"));
        }
        let _ = self.stdin.flush().await;
    }

    async fn finish(mut self) {
        drop(self.stdin);
        match timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            other => fail(&format!("redis-cli did not end cleanly: {other:?}")),
        }
    }
}

#[tokio::test]
#[ignore = "needs the compose stack: run scripts/compose-test.sh"]
async fn compose_cluster_spreads_broadcasts_and_drains() {
    let addr = env("GROUPCAST_COMPOSE_ADDR");
    let project = env("GROUPCAST_COMPOSE_PROJECT");
    let clients: usize = std::env::var("GROUPCAST_COMPOSE_CLIENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let url = format!("ws://{addr}/ws/{GROUP}");

    let redis = containers(&project, "redis").await;
    check(redis.len() == 1, "the stack has one redis container");
    let redis = redis[0].clone();
    let ws = containers(&project, "ws").await;
    check(
        ws.len() >= 3,
        &format!("the stack runs {} ws replicas (>= 3)", ws.len()),
    );
    // Node ids are `<hostname>-<suffix>`, and a container's hostname is
    // the start of its id: that maps a node to its container.
    let mut hostnames = BTreeMap::new();
    for id in &ws {
        let hostname = docker(&["inspect", "--format", "{{.Config.Hostname}}", id]).await;
        hostnames.insert(hostname, id.clone());
    }
    let container_of = |node: &str| -> Option<String> {
        let host = node.rsplit_once('-').map_or(node, |(host, _)| host);
        hostnames.get(host).cloned()
    };

    // 1. Clients through the load balancer land on several replicas.
    let mut members = Vec::new();
    for _ in 0..clients {
        members.push(Tracked::connect(&url).await);
    }
    check(
        members.iter().all(|m| !m.node.is_empty()),
        &format!(
            "{clients} clients connected through the load balancer at {addr}, each upgrade names its node (X-Groupcast-Node)"
        ),
    );
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for m in &members {
        *per_node.entry(m.node.clone()).or_default() += 1;
    }
    check(
        per_node.len() >= 2,
        &format!(
            "clients landed on {} distinct replicas (>= 2): {per_node:?}",
            per_node.len()
        ),
    );
    check(
        per_node.keys().all(|node| container_of(node).is_some()),
        "every node id is a ws container of the stack",
    );

    // 2. redis-cli PUBLISH inside the Redis container reaches every client.
    // First wait until every node has subscribed the group (SUBSCRIBE
    // follows the first join asynchronously): publish markers until every
    // client has seen one.
    let mut synced = false;
    for attempt in 0..60 {
        let marker = format!("sync-{attempt}");
        docker(&["exec", &redis, "redis-cli", "PUBLISH", CHANNEL, &marker]).await;
        sleep(Duration::from_millis(300)).await;
        if members
            .iter()
            .all(|m| m.texts().iter().any(|t| t.starts_with("sync-")))
        {
            synced = true;
            break;
        }
    }
    check(
        synced,
        "every replica subscribed the group (each client got a sync marker)",
    );
    let receivers = docker(&["exec", &redis, "redis-cli", "PUBLISH", CHANNEL, "hello"]).await;
    let all_hello = eventually(|| members.iter().all(|m| m.has("hello"))).await;
    check(
        all_hello,
        &format!(
            "`redis-cli PUBLISH {CHANNEL} hello` in the redis container reached all {clients} clients ({receivers} subscribed nodes)"
        ),
    );
    check(
        receivers.parse::<usize>().ok() == Some(per_node.len()),
        &format!(
            "Redis counted one subscriber per replica with members ({receivers} == {})",
            per_node.len()
        ),
    );

    // 3. Stop one replica while a numbered sequence is being published.
    let (victim_node, _) = per_node
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(node, n)| (node.clone(), *n))
        .expect("a node");
    let victim = container_of(&victim_node).expect("victim container");
    let (mut victims, survivors): (Vec<_>, Vec<_>) =
        members.into_iter().partition(|m| m.node == victim_node);
    println!(
        "stopping replica {victim_node} (container {}) with {} clients; {} clients on the others",
        &victim[..12],
        victims.len(),
        survivors.len()
    );

    let mut publisher = Publisher::start(&redis);
    let mut next: u64 = 1;
    // A few before the stop, everyone gets them.
    for _ in 0..10 {
        publisher.publish(&format!("seq-{next}")).await;
        next += 1;
        sleep(Duration::from_millis(50)).await;
    }
    let before = next - 1;
    let got_before = eventually(|| {
        victims
            .iter()
            .chain(survivors.iter())
            .all(|m| m.has(&format!("seq-{before}")))
    })
    .await;
    check(
        got_before,
        &format!("all clients got seq-1..{before} before the stop"),
    );

    let stop_started = Instant::now();
    let first_after_stop = next;
    let victim_for_stop = victim.clone();
    let stop = tokio::spawn(async move {
        // docker stop: SIGTERM, then SIGKILL after 30 s (never reached).
        docker(&["stop", "-t", "30", &victim_for_stop]).await
    });
    // Keep publishing while the replica drains and closes.
    let closed = loop {
        publisher.publish(&format!("seq-{next}")).await;
        next += 1;
        sleep(Duration::from_millis(50)).await;
        if victims.iter().all(|m| m.closed().is_some()) {
            break true;
        }
        if stop_started.elapsed() > Duration::from_secs(40) {
            break false;
        }
    };
    check(
        closed,
        &format!(
            "the stopped replica's {} clients were disconnected ({:.1?} after docker stop)",
            victims.len(),
            stop_started.elapsed()
        ),
    );
    let codes: BTreeSet<u16> = victims
        .iter()
        .map(|m| m.closed().map_or(0, |(code, _)| code))
        .collect();
    check(
        codes == BTreeSet::from([1001]),
        &format!("they were closed with 1001 going away (codes seen: {codes:?})"),
    );
    let lasts: Vec<u64> = victims
        .iter()
        .map(|m| {
            let seq = sequence(&m.texts());
            let last = seq.last().copied().unwrap_or(0);
            if seq.first() == Some(&1) && contiguous(&seq, 1, last) {
                last
            } else {
                0
            }
        })
        .collect();
    check(
        lasts.iter().all(|&last| last >= first_after_stop + 10),
        &format!(
            "while draining they were still served: an unbroken sequence up to the close, including the 10+ messages from seq-{first_after_stop} on, sent after docker stop (last received: {lasts:?})"
        ),
    );

    // They reconnect through the load balancer, to the other replicas.
    let mut reconnected = Vec::new();
    for _ in 0..victims.len() {
        publisher.publish(&format!("seq-{next}")).await;
        next += 1;
        reconnected.push(Tracked::connect(&url).await);
    }
    victims.clear();
    let new_nodes: BTreeSet<String> = reconnected.iter().map(|m| m.node.clone()).collect();
    check(
        !new_nodes.contains(&victim_node) && !new_nodes.contains(""),
        &format!("they reconnected through the load balancer to the other replicas: {new_nodes:?}"),
    );

    let stopped = timeout(WAIT * 2, stop)
        .await
        .map(|joined| joined.is_ok())
        .unwrap_or(false);
    check(stopped, "docker stop returned");
    let exit = docker(&["inspect", "--format", "{{.State.ExitCode}}", &victim]).await;
    check(
        exit == "0",
        &format!(
            "the stopped replica exited 0 (drain + close, not killed) after {:.1?}",
            stop_started.elapsed()
        ),
    );

    // A little more, then the end marker; the survivors must have it all.
    for _ in 0..10 {
        publisher.publish(&format!("seq-{next}")).await;
        next += 1;
        sleep(Duration::from_millis(50)).await;
    }
    let last = next - 1;
    publisher.publish("end").await;
    publisher.finish().await;

    let everyone_ended = eventually(|| {
        survivors
            .iter()
            .chain(reconnected.iter())
            .all(|m| m.has("end"))
    })
    .await;
    check(
        everyone_ended,
        "every survivor and every reconnected client got the final marker",
    );
    let gaps: Vec<String> = survivors
        .iter()
        .filter(|m| !contiguous(&sequence(&m.texts()), 1, last))
        .map(|m| {
            let seq = sequence(&m.texts());
            format!("{}: {} messages", m.node, seq.len())
        })
        .collect();
    check(
        gaps.is_empty(),
        &format!(
            "the {} clients of the other replicas missed nothing: seq-1..{last} in order ({gaps:?})",
            survivors.len()
        ),
    );
    let reconnected_ok = reconnected.iter().all(|m| {
        let seq = sequence(&m.texts());
        !seq.is_empty() && contiguous(&seq, seq[0], last)
    });
    check(
        reconnected_ok,
        &format!(
            "the reconnected clients get an unbroken sequence from their reconnect to seq-{last}"
        ),
    );

    // The load balancer serves HTTP from the remaining replicas too.
    let info = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://{addr}/api/info"))
        .send()
        .await
        .ok();
    let info_ok = match info {
        Some(response) if response.status().is_success() => response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["node"].as_str().map(|n| n != victim_node))
            .unwrap_or(false),
        _ => false,
    };
    check(
        info_ok,
        "GET /api/info through the load balancer answers from a remaining replica",
    );
    drop(survivors);
    drop(reconnected);

    // 6. History survives a Redis restart: the stack's Redis keeps an
    // append-only file on a volume, so the epoch and the messages of a
    // history group (task/**) are still there after `docker restart`.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for n in 1..=3 {
        let published = http
            .post(format!("http://{addr}/api/groups/task/compose/messages"))
            .header("content-type", "text/plain")
            .body(format!("line {n}"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        check(
            published,
            &format!("published line {n} to the history group task/compose"),
        );
    }
    let history = || async {
        let answer = http
            .get(format!("http://{addr}/api/groups/task/compose/history"))
            .send()
            .await
            .ok()?;
        answer.json::<serde_json::Value>().await.ok()
    };
    let before = history().await.unwrap_or_default();
    let epoch = before["epoch"].as_str().unwrap_or_default().to_string();
    check(
        !epoch.is_empty() && before["messages"].as_array().map(Vec::len) == Some(3),
        "the history group holds its 3 lines under one epoch",
    );
    docker(&["restart", &redis]).await;
    let mut kept = false;
    for _ in 0..50 {
        if let Some(after) = history().await
            && after["epoch"] == epoch.as_str()
            && after["messages"].as_array().map(Vec::len) == Some(3)
        {
            kept = true;
            break;
        }
        sleep(Duration::from_millis(200)).await;
    }
    check(
        kept,
        "after a Redis restart the history group has the same epoch and its 3 lines (append-only file)",
    );
}
