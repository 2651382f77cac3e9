//! The soak driver: thousands of WebSocket connections joining and leaving
//! groups that appear and disappear, against running `groupcast` nodes,
//! for a bounded time; then it checks that nothing leaked.
//!
//! `scripts/soak.sh` starts Redis and two nodes and runs this; by hand:
//!
//! ```text
//! cargo run --release --example soak -- \
//!     --node http://127.0.0.1:8081 --pid 1234 \
//!     --node http://127.0.0.1:8082 --pid 1235 \
//!     --redis redis://127.0.0.1:6380 --seconds 600
//! ```
//!
//! What it does:
//!
//! * `--connections` client tasks, each in a loop: pick a node and a group
//!   of the current epoch (`soak/<epoch>/<k>`; a new epoch every
//!   `--epoch`, so groups appear and disappear), connect from one of
//!   several loopback source addresses, stay a random while reading
//!   whatever arrives, then leave — mostly with a close frame, sometimes
//!   by dropping the TCP connection;
//! * publishers, to random groups of the current epoch, through Redis and
//!   through the nodes' HTTP API;
//! * every 30 s, a progress line; at the end, once every client has left
//!   and the unsubscribe linger has passed: each node's RSS and open file
//!   descriptors (from `/proc/<pid>`) against the start, its connection
//!   and group gauges, and `PUBSUB CHANNELS group:*` in Redis.
//!
//! It exits non-zero when a node still holds connections, groups or
//! subscriptions, when Redis still has group channels, or when a node has
//! more file descriptors than at the start (plus a small slack; Redis
//! connections, a pool that grows on demand, are reported but not counted).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message as Ws;

#[derive(Debug, Parser)]
#[command(about = "groupcast soak driver (see scripts/soak.sh)")]
struct Args {
    /// A node's base URL (repeatable), e.g. http://127.0.0.1:8081.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// The node processes' pids, in the order of --node (for RSS and fds).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// The Redis the nodes use.
    #[arg(long)]
    redis: String,
    /// How long to run the load.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Client tasks, each connected most of the time.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Groups per epoch.
    #[arg(long, default_value_t = 200)]
    groups: usize,
    /// How long an epoch of groups lives.
    #[arg(long, default_value_t = 30)]
    epoch_seconds: u64,
    /// Longest stay of one connection, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    max_stay_ms: u64,
    /// Messages per second from the publishers, all together.
    #[arg(long, default_value_t = 200)]
    publish_rate: u64,
    /// Loopback source addresses to spread connections over (127.0.0.1..N).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// The nodes' unsubscribe linger, in milliseconds (waited for at the end).
    #[arg(long, default_value_t = 2000)]
    linger_ms: u64,
    /// Extra file descriptors (besides Redis connections) a node may hold at
    /// the end before it counts as a leak.
    #[arg(long, default_value_t = 4)]
    fd_slack: usize,
}

#[derive(Default)]
struct Counters {
    joins: AtomicU64,
    leaves_closed: AtomicU64,
    leaves_dropped: AtomicU64,
    connect_errors: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    published: AtomicU64,
    publish_errors: AtomicU64,
    open: AtomicU64,
}

/// One node's process figures.
#[derive(Debug, Clone, Copy)]
struct Proc {
    rss_kib: u64,
    fds: usize,
}

fn proc_stats(pid: u32) -> anyhow::Result<Proc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("list /proc/{pid}/fd"))?
        .count();
    Ok(Proc { rss_kib, fds })
}

/// How many of `pid`'s descriptors are TCP connections to `port` (its
/// Redis connections): socket inodes from `/proc/<pid>/fd`, matched with
/// the remote ports in `/proc/<pid>/net/tcp{,6}`.
fn sockets_to_port(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut count = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(inode)) = (fields.get(2), fields.get(9)) else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if remote_port == Some(port) && inodes.contains(*inode) {
                count += 1;
            }
        }
    }
    count
}

/// `pid`'s TCP sockets as `state local-port->remote-port` (state in
/// `/proc/net/tcp` hex: 01 established, 08 close-wait, 0A listen…).
fn tcp_sockets(pid: u32) -> Vec<String> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.contains(f[9]) {
                out.push(format!("{} {}->{}", f[3], port(f[1]), port(f[2])));
            }
        }
    }
    out.sort();
    out
}

/// `pid`'s descriptors by kind: `socket`, `anon_inode:[eventfd]`, `pipe`,
/// a path…, with counts (to say what any descriptor left over is).
fn fd_kinds(pid: u32) -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let kind = match target.split_once(":[") {
            Some((kind, _)) if kind != "anon_inode" => kind.to_string(),
            _ => target,
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `groupcast_<name> <value>` from a node's /metrics.
async fn gauge(http: &reqwest::Client, node: &str, name: &str) -> anyhow::Result<i64> {
    let text = http
        .get(format!("{node}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let prefix = format!("groupcast_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{name} in {node}/metrics"))
}

async fn group_channels(redis: &redis::Client) -> anyhow::Result<Vec<String>> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("group:*")
        .query_async(&mut conn)
        .await?)
}

fn group_name(started: Instant, epoch: Duration, groups: usize, rng: &mut impl Rng) -> String {
    let epoch = started.elapsed().as_secs() / epoch.as_secs().max(1);
    format!("soak/{epoch}/{}", rng.random_range(0..groups))
}

/// One client task: join, stay, leave, again, until `deadline`.
async fn client(
    index: usize,
    args: Arc<Args>,
    started: Instant,
    deadline: Instant,
    counters: Arc<Counters>,
) {
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        1 + (index % args.sources as usize) as u8,
    ));
    let epoch = Duration::from_secs(args.epoch_seconds);
    while Instant::now() < deadline {
        let (node, group, stay, abrupt) = {
            let mut rng = rand::rng();
            let node = args.nodes[rng.random_range(0..args.nodes.len())].clone();
            let group = group_name(started, epoch, args.groups, &mut rng);
            let stay = Duration::from_millis(rng.random_range(100..=args.max_stay_ms));
            (node, group, stay, rng.random_bool(0.1))
        };
        let host = node.trim_start_matches("http://");
        let Ok(addr) = host.parse::<SocketAddr>() else {
            return;
        };
        let url = format!("ws://{host}/ws/{group}");
        let connect = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            let stream = socket.connect(addr).await?;
            anyhow::Ok(tokio_tungstenite::client_async(url, stream).await?)
        };
        let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(error)) => {
                let refused = error
                    .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
                    .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::Http(_)));
                if refused {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        counters.joins.fetch_add(1, Ordering::Relaxed);
        counters.open.fetch_add(1, Ordering::Relaxed);
        let until = (Instant::now() + stay).min(deadline);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Ws::Text(_) | Ws::Binary(_)))) => {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => break,
            }
        }
        if abrupt {
            drop(ws); // no close frame: the node notices the TCP close
            counters.leaves_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                ws.send(Ws::Close(None)).await?;
                // Read until the node's close comes back.
                while let Some(frame) = ws.next().await {
                    frame?;
                }
                anyhow::Ok(())
            })
            .await;
            counters.leaves_closed.fetch_add(1, Ordering::Relaxed);
        }
        counters.open.fetch_sub(1, Ordering::Relaxed);
        let pause = rand::rng().random_range(0..200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Publishes to random groups of the current epoch, half through Redis,
/// half through the nodes' API.
async fn publisher(
    args: Arc<Args>,
    rate: u64,
    started: Instant,
    deadline: Instant,
    counters: Arc<Counters>,
) {
    let http = reqwest::Client::new();
    let redis = match redis::Client::open(args.redis.as_str()) {
        Ok(client) => client,
        Err(_) => return,
    };
    let Ok(mut conn) = redis.get_multiplexed_async_connection().await else {
        return;
    };
    let period = Duration::from_micros(1_000_000 / rate.max(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let epoch = Duration::from_secs(args.epoch_seconds);
    let mut n = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        n += 1;
        let (group, node) = {
            let mut rng = rand::rng();
            (
                group_name(started, epoch, args.groups, &mut rng),
                args.nodes[rng.random_range(0..args.nodes.len())].clone(),
            )
        };
        let ok = if n.is_multiple_of(2) {
            redis::cmd("PUBLISH")
                .arg(format!("group:{group}"))
                .arg(format!("soak {n}"))
                .query_async::<i64>(&mut conn)
                .await
                .is_ok()
        } else {
            http.post(format!("{node}/api/groups/{group}/messages"))
                .header("content-type", "text/plain")
                .body(format!("soak {n}"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        };
        let counter = if ok {
            &counters.published
        } else {
            &counters.publish_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn kib(v: u64) -> String {
    format!("{:.1} MiB", v as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if !args.pids.is_empty() && args.pids.len() != args.nodes.len() {
        bail!("give one --pid per --node, in the same order");
    }
    raise_fd_limit();
    // No keep-alive: a connection of ours left open would count as one of
    // the node's descriptors at the end.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let redis = redis::Client::open(args.redis.as_str()).context("the Redis URL")?;
    let start: Vec<Proc> = args
        .pids
        .iter()
        .map(|&pid| proc_stats(pid))
        .collect::<anyhow::Result<_>>()?;
    let channels_before = group_channels(&redis).await?.len();
    // redis://host:port[/db]
    let redis_port = args
        .redis
        .trim_end_matches(|c: char| c != ':' && !c.is_ascii_digit())
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(6379);
    let kinds_start: Vec<_> = args.pids.iter().map(|&pid| fd_kinds(pid)).collect();
    let redis_start: Vec<usize> = args
        .pids
        .iter()
        .map(|&pid| sockets_to_port(pid, redis_port))
        .collect();
    println!(
        "soak: {} s, {} connections over {} nodes, {} groups per {} s epoch, {} msg/s",
        args.seconds,
        args.connections,
        args.nodes.len(),
        args.groups,
        args.epoch_seconds,
        args.publish_rate
    );
    for (node, stats) in args.nodes.iter().zip(&start) {
        println!("start {node}: RSS {} fds {}", kib(stats.rss_kib), stats.fds);
    }

    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        tasks.push(tokio::spawn(client(
            i,
            args.clone(),
            started,
            deadline,
            counters.clone(),
        )));
    }
    for _ in 0..4 {
        tasks.push(tokio::spawn(publisher(
            args.clone(),
            (args.publish_rate / 4).max(1),
            started,
            deadline,
            counters.clone(),
        )));
    }
    let mut peak_rss = vec![0u64; args.pids.len()];
    let mut peak_fds = vec![0usize; args.pids.len()];
    let mut peak_open = 0;
    let mut next_report = started + Duration::from_secs(30);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_open = peak_open.max(counters.open.load(Ordering::Relaxed));
        for (i, &pid) in args.pids.iter().enumerate() {
            if let Ok(p) = proc_stats(pid) {
                peak_rss[i] = peak_rss[i].max(p.rss_kib);
                peak_fds[i] = peak_fds[i].max(p.fds);
            }
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(30);
            let nodes: Vec<String> = args
                .pids
                .iter()
                .filter_map(|&pid| proc_stats(pid).ok())
                .map(|p| format!("RSS {} fds {}", kib(p.rss_kib), p.fds))
                .collect();
            println!(
                "{:>4} s: open {} joins {} received {} published {} errors {}/{} | {}",
                started.elapsed().as_secs(),
                counters.open.load(Ordering::Relaxed),
                counters.joins.load(Ordering::Relaxed),
                counters.received.load(Ordering::Relaxed),
                counters.published.load(Ordering::Relaxed),
                counters.connect_errors.load(Ordering::Relaxed),
                counters.publish_errors.load(Ordering::Relaxed),
                nodes.join(" | ")
            );
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let load_ended = Instant::now();
    println!(
        "load done after {} s: {} joins ({} left with a close frame, {} dropped the TCP connection), \
         peak {} open, {} refused by a limit, {} connect errors; {} messages received, {} published, {} publish errors",
        started.elapsed().as_secs(),
        counters.joins.load(Ordering::Relaxed),
        counters.leaves_closed.load(Ordering::Relaxed),
        counters.leaves_dropped.load(Ordering::Relaxed),
        peak_open,
        counters.refused.load(Ordering::Relaxed),
        counters.connect_errors.load(Ordering::Relaxed),
        counters.received.load(Ordering::Relaxed),
        counters.published.load(Ordering::Relaxed),
        counters.publish_errors.load(Ordering::Relaxed),
    );

    // Every node lets go of every connection and group...
    let settle_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut busy = Vec::new();
        for node in &args.nodes {
            for name in ["connections", "groups"] {
                let value = gauge(&http, node, name).await?;
                if value != 0 {
                    busy.push(format!("{node} {name}={value}"));
                }
            }
        }
        if busy.is_empty() {
            break;
        }
        if Instant::now() >= settle_deadline {
            println!("still held 60 s after the load: {}", busy.join(", "));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and, after the linger, every subscription.
    tokio::time::sleep(Duration::from_millis(args.linger_ms + 1000)).await;
    let channel_deadline = Instant::now() + Duration::from_secs(30);
    let mut channels = group_channels(&redis).await?;
    while !channels.is_empty() && Instant::now() < channel_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        channels = group_channels(&redis).await?;
    }
    // Let the sockets of the last connections close on both sides: wait
    // (at most 15 s) until each node is back to its starting descriptors.
    let fd_deadline = Instant::now() + Duration::from_secs(15);
    let settled_fds = || {
        args.pids
            .iter()
            .zip(&start)
            .all(|(&pid, before)| proc_stats(pid).is_ok_and(|now| now.fds <= before.fds))
    };
    while !settled_fds() && Instant::now() < fd_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut failures = Vec::new();
    println!(
        "--- after the load, every client gone ({} s later) ---",
        load_ended.elapsed().as_secs()
    );
    for (i, node) in args.nodes.iter().enumerate() {
        let connections = gauge(&http, node, "connections").await?;
        let groups = gauge(&http, node, "groups").await?;
        let subscriptions = gauge(&http, node, "bus_subscriptions").await?;
        let opened = gauge(&http, node, "connections_opened_total").await?;
        let mut line = format!(
            "{node}: {opened} connections served; now connections {connections} groups {groups} subscriptions {subscriptions}"
        );
        if connections != 0 || groups != 0 {
            failures.push(format!("{node} still holds connections or groups"));
        }
        // One subscription stays: the cluster channel.
        if subscriptions > 1 {
            failures.push(format!("{node} still holds {subscriptions} subscriptions"));
        }
        if let (Some(&pid), Some(before)) = (args.pids.get(i), start.get(i)) {
            let after = proc_stats(pid)?;
            line.push_str(&format!(
                "; RSS {} -> {} (peak {}), fds {} -> {} (peak {}), of which Redis connections {} -> {}",
                kib(before.rss_kib),
                kib(after.rss_kib),
                kib(peak_rss[i]),
                before.fds,
                after.fds,
                peak_fds[i],
                redis_start[i],
                sockets_to_port(pid, redis_port),
            ));
            if after.fds != before.fds {
                line.push_str(&format!(
                    "; descriptors by kind {:?} -> {:?}; TCP sockets now {:?}",
                    kinds_start[i],
                    fd_kinds(pid),
                    tcp_sockets(pid)
                ));
            }
            // Redis connections are a pool that grows on demand (up to
            // --redis-pool-size): not counted as a leak.
            let redis_now = sockets_to_port(pid, redis_port);
            let others_before = before.fds.saturating_sub(redis_start[i]);
            let others_after = after.fds.saturating_sub(redis_now);
            if others_after > others_before + args.fd_slack {
                failures.push(format!(
                    "{node} holds {others_after} file descriptors besides Redis connections, \
                     {others_before} at the start"
                ));
            }
        }
        println!("{line}");
    }
    println!(
        "Redis PUBSUB CHANNELS group:* = {} (before the soak: {channels_before})",
        channels.len()
    );
    if !channels.is_empty() {
        failures.push(format!("Redis still has group channels: {channels:?}"));
    }
    if counters.joins.load(Ordering::Relaxed) == 0 {
        failures.push("no connection ever succeeded".into());
    }
    if failures.is_empty() {
        println!("soak: OK");
        Ok(())
    } else {
        for failure in &failures {
            println!("soak: FAIL: {failure}");
        }
        std::process::exit(1)
    }
}
