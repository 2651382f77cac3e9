//! Faults, and what they cost, with a real Redis (testcontainers) and
//! real `groupcast` processes:
//!
//! * a handler that panics ends only its own connection (no Redis);
//! * Redis stopped and started again: sessions stay, `/readyz` follows,
//!   delivery resumes; a paused Redis is noticed by the health checks; an
//!   unreachable Redis and bad URLs are typed errors, not crashes;
//! * a node SIGKILLed while its clients are connected: the clients of the
//!   other nodes miss nothing (numbered messages, contiguous), and the
//!   cluster view drops the dead node within its presence TTL;
//! * a rolling restart of three nodes (SIGTERM, drain, restart, one at a
//!   time) with clients that reconnect to another live node when theirs
//!   closes: every client finds a node again, and no client ever receives a
//!   message twice;
//! * Redis stopped while a node's API publishes at a steady rate: the
//!   node's own members get everything, sessions stay, and what the other
//!   node's members lost is counted and printed (pub/sub is at-most-once;
//!   docs/reliability.md records the figure).
//!
//! Run with `REDIS_IMAGE=local/redis:7` where no registry is reachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::http::post_text_with;
use crate::common::multinode::members_on_every_node;
use crate::common::node::{NodeProcess, start_clustered_nodes};
use crate::common::redis::{TestRedis, fast_options, free_port, three_nodes, wait_subscribed};
use crate::common::{Client, TestServer, WAIT, http, wait_until, wait_until_async};
use futures_util::StreamExt;
use groupcast::backend::redis::RedisOptions;
use groupcast::backend::{Backend, BackendContext, Channel, Inbound, IntoBackend};
use groupcast::metrics::Metrics;
use groupcast::{BackendError, Hub};
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message as Ws;

// ----- harness -----------------------------------------------------------------

/// Node ids in a node's `/api/nodes` answer.
async fn cluster_view(node: &NodeProcess) -> Vec<String> {
    let (_, answer) = http::get_json(&node.url("/api/nodes")).await;
    answer["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["node_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads text frames until `marker`; panics if the connection ends first.
/// Hands the client back with what it read, so that it stays a member
/// for as long as the caller keeps it.
async fn collect_until(mut client: Client, marker: &str, who: String) -> (Client, Vec<String>) {
    let mut got = Vec::new();
    loop {
        let frame = tokio::time::timeout(WAIT, client.ws.next())
            .await
            .unwrap_or_else(|_| panic!("{who}: nothing for {WAIT:?} (after {} frames)", got.len()));
        match frame {
            Some(Ok(Ws::Text(text))) if text.as_str() == marker => return (client, got),
            Some(Ok(Ws::Text(text))) => got.push(text.to_string()),
            Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => continue,
            other => panic!(
                "{who}: connection ended after {} frames: {other:?}",
                got.len()
            ),
        }
    }
}

/// The numbers of `prefix`-tagged messages (`r:17` → 17), in arrival order.
fn numbers(messages: &[String], prefix: &str) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| m.strip_prefix(prefix))
        .map(|n| n.parse().expect("a number"))
        .collect()
}

// ----- a panicking handler ------------------------------------------------------------

/// A handler that panics ends only its own connection, and the session
/// still leaves the hub (no ghost member in counts or the API).
#[tokio::test]
async fn a_panicking_handler_ends_only_its_connection_and_leaves_no_ghost() {
    let hub = Hub::builder()
        .on_text(|_hub, _session, text| {
            assert!(text != "boom", "handler panics on purpose");
        })
        .build()
        .unwrap();
    let server = TestServer::start(hub).await;
    let mut victim = server.connect("room").await;
    let mut bystander = server.connect("room").await;
    victim.send_text("boom").await;
    wait_until("the panicking connection leaves the hub", || {
        server.hub.session_count() == 1
    })
    .await;
    assert_eq!(server.hub.member_count(&"room".parse().unwrap()), 1);
    // The victim's connection ends (with or without a close frame).
    victim.expect_close().await;
    server.hub.to("room").send("still here").unwrap();
    assert_eq!(bystander.recv_text().await, "still here");
}

// ----- Redis going away ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_sessions_and_delivery_resumes() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, |b| b).await;
    let mut clients = members_on_every_node(&nodes, "live").await;
    let all: Vec<&TestServer> = nodes.iter().collect();
    redis.publish("group:live", "before").await;
    for client in &mut clients {
        assert_eq!(client.recv_text().await, "before");
    }
    let opened: Vec<u64> = nodes
        .iter()
        .map(|n| n.hub.metrics().connections_opened.get())
        .collect();
    for node in &nodes {
        assert_eq!(node.hub.metrics().bus_connects.get(), 1);
        assert_eq!(http::status(&node.http_url("/readyz")).await, 200);
    }

    redis.stop().await;
    for node in &nodes {
        node.wait_readyz(503).await;
        let status = node.hub.status();
        assert!(!status.connected && status.last_error.is_some());
        assert_eq!(node.hub.session_count(), 1, "sessions stay");
    }
    // While Redis is away a broadcast still reaches local sessions, and
    // the caller learns that the other nodes were not told.
    let a = &nodes[0];
    let outcome = a.hub.to("live").publish("while down").await;
    assert!(
        matches!(outcome, Err(groupcast::HubError::Backend(_))),
        "{outcome:?}"
    );
    assert_eq!(clients[0].recv_text().await, "while down");
    assert!(a.hub.metrics().bus_publish_errors.get() >= 1);

    redis.restart().await;
    for node in &nodes {
        node.wait_readyz(200).await;
    }
    wait_subscribed(&all, "group:live").await;

    // Delivery resumes everywhere, from outside and from a node, and the
    // message published while Redis was down is not replayed.
    // ("after" first on every client: B delivers "from b" to its own
    // client directly, so the two could otherwise cross there.)
    redis.publish("group:live", "after").await;
    for client in &mut clients {
        assert_eq!(client.recv_text().await, "after");
    }
    nodes[1]
        .hub
        .to("live")
        .publish("from b")
        .await
        .expect("B publishes again");
    for client in &mut clients {
        assert_eq!(client.recv_text().await, "from b");
    }
    // No client reconnected; every node says it reconnected.
    for (node, opened) in nodes.iter().zip(opened) {
        assert_eq!(node.hub.metrics().connections_opened.get(), opened);
        assert_eq!(node.hub.metrics().bus_connects.get(), 2);
        let metrics = http::get_text(&node.http_url("/metrics")).await;
        assert!(
            metrics.contains("groupcast_bus_connects_total 2"),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_is_noticed_by_health_checks() {
    let redis = TestRedis::start().await;
    let hub = Hub::builder()
        .node_id("node-p")
        .backend(fast_options(redis.url()))
        .build()
        .unwrap();
    let node = TestServer::start(hub).await;
    let mut client = node.connect("paused").await;
    wait_subscribed(&[&node], "group:paused").await;

    // Paused: no socket closes, only the PINGs go unanswered.
    redis.pause().await;
    // The health check notices.
    node.wait_readyz(503).await;
    let error = node.hub.status().last_error.unwrap_or_default();
    assert!(error.contains("did not answer"), "{error}");

    redis.unpause().await;
    node.wait_readyz(200).await;
    wait_subscribed(&[&node], "group:paused").await;
    redis.publish("group:paused", "awake").await;
    assert_eq!(client.recv_text().await, "awake");
    assert_eq!(node.hub.metrics().bus_connects.get(), 2);
}

/// A single-Redis backend started alone, outside a hub.
fn start_redis(options: RedisOptions, context: BackendContext) -> Result<Backend, BackendError> {
    Box::new(options).start(context)
}

fn lonely_context(metrics: std::sync::Arc<Metrics>) -> BackendContext {
    BackendContext {
        node_id: "lonely".into(),
        inbox: std::sync::Arc::new(|_: Inbound| {}),
        metrics,
        local_groups: std::sync::Arc::new(Vec::new),
        presence_groups: std::sync::Arc::new(Vec::new),
        members: std::sync::Arc::new(groupcast::backend::NoMembers),
        history: Default::default(),
        presence_grace: Duration::ZERO,
        presence_changes: groupcast::backend::ignore_changes(),
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_not_fatal() {
    let metrics = std::sync::Arc::new(Metrics::new());
    // Nothing listens on a port that was just free.
    let mut options = RedisOptions::new(format!("redis://127.0.0.1:{}", free_port()));
    options.command_timeout = Duration::from_millis(300);
    options.backoff_max = Duration::from_millis(200);
    let bus = start_redis(options, lonely_context(metrics.clone())).expect("starts anyway");
    assert!(!bus.broker().status().connected);
    wait_until("the failure is recorded", || {
        bus.broker().status().last_error.is_some()
    })
    .await;
    assert_eq!(bus.broker().status().kind, "redis");

    let outcome = bus
        .broker()
        .publish(Channel::Cluster, "x".into())
        .wait()
        .await;
    assert!(
        matches!(outcome, Err(BackendError::Unavailable(_))),
        "{outcome:?}"
    );
    assert_eq!(metrics.bus_publish_errors.get(), 1);
    assert!(bus.cluster().nodes().await.is_err());
    bus.shutdown().await;
    assert!(matches!(
        bus.broker()
            .publish(Channel::Cluster, "y".into())
            .wait()
            .await,
        Err(BackendError::Closed)
    ));
}

#[test]
fn bad_urls_and_a_missing_runtime_are_typed_errors() {
    let metrics = std::sync::Arc::new(Metrics::new());
    let start = |url: &str| start_redis(RedisOptions::new(url), lonely_context(metrics.clone()));
    assert!(matches!(
        start("redis://127.0.0.1:1"),
        Err(BackendError::NoRuntime)
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    for url in [
        "http://127.0.0.1",
        "127.0.0.1:6379",
        "redis://",
        "redis://h:notaport",
    ] {
        assert!(
            matches!(start(url), Err(BackendError::InvalidUrl(_))),
            "{url} should be rejected"
        );
    }
    assert!(start("redis://user:secret@127.0.0.1:1/2").is_ok());
    assert!(
        start("rediss://user:secret@127.0.0.1:1").is_ok(),
        "TLS is built in"
    );
    let error = start("redis://user:secret@").err().expect("no host");
    assert!(!error.to_string().contains("secret"), "{error}");
}

// ----- a node killed ---------------------------------------------------------------

/// Three nodes, three clients each, two publishers (from outside on Redis,
/// and through node A's API) at a steady rate; node C is SIGKILLed halfway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_costs_the_other_nodes_clients_nothing() {
    const N: u64 = 300;
    let redis = TestRedis::start().await;
    let mut nodes = start_clustered_nodes(&["kill-a", "kill-b", "kill-c"], &redis.url(), &[]).await;
    let mut survivors = Vec::new();
    let mut doomed = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..3 {
            let client = Client::connect(&node.ws_url("seq")).await;
            if i == 2 {
                doomed.push(client);
            } else {
                survivors.push((format!("{}#{j}", node.name), client));
            }
        }
    }
    wait_until_async("every node subscribes to group:seq", || async {
        redis.numsub("group:seq").await == 3
    })
    .await;
    wait_until_async("A sees the three nodes", || async {
        cluster_view(&nodes[0]).await.len() == 3
    })
    .await;
    let readers: Vec<_> = survivors
        .into_iter()
        .map(|(who, client)| tokio::spawn(collect_until(client, "end", who.clone())))
        .collect();

    // Two publishers, 5 ms apart per message.
    let sent = Arc::new(AtomicU64::new(0));
    let outside = {
        let sent = sent.clone();
        let mut conn = redis.client().await;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for i in 0..N {
                tick.tick().await;
                common::redis::publish(&mut conn, "group:seq", format!("r:{i}")).await;
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let via_api = {
        let url = nodes[0].url("/api/groups/seq/messages");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for i in 0..N {
                tick.tick().await;
                let answer = post_text_with(&http, &url, format!("a:{i}")).await;
                assert!(answer.status().is_success(), "{}", answer.status());
            }
        })
    };

    // Halfway: SIGKILL C, with its three clients connected.
    wait_until("half the messages are out", || {
        sent.load(Ordering::SeqCst) >= N / 2
    })
    .await;
    nodes[2].kill();
    let killed_at = Instant::now();
    // Watch the cluster view from A meanwhile.
    let view_url = nodes[0].url("/api/nodes");
    let left_view = tokio::spawn(async move {
        let deadline = killed_at + WAIT;
        loop {
            let (_, view) = http::get_json(&view_url).await;
            let listed = view["nodes"]
                .as_array()
                .is_some_and(|nodes| nodes.iter().any(|n| n["node_id"] == "kill-c"));
            if !listed {
                return killed_at.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "the killed node never left the view"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    for mut client in doomed {
        // No close frame: the socket just ends.
        assert!(client.expect_close().await.is_none());
    }
    outside.await.unwrap();
    via_api.await.unwrap();
    let mut conn = redis.client().await;
    common::redis::publish(&mut conn, "group:seq", "end").await;

    // Every client of A and B: both sequences, whole and in order.
    // The clients stay connected (and their nodes subscribed) until the
    // subscription check at the end.
    let all: Vec<u64> = (0..N).collect();
    let mut still_members = Vec::new();
    for reader in readers {
        let (client, got) = reader.await.unwrap();
        assert_eq!(numbers(&got, "r:"), all, "from Redis");
        assert_eq!(numbers(&got, "a:"), all, "through A's API");
        still_members.push(client);
    }

    // The view dropped C once its last heartbeat expired (TTL 1 s; the
    // heartbeat before the kill was at most 200 ms old).
    let gone_after = left_view.await.unwrap();
    eprintln!("kill-c left the cluster view {gone_after:?} after SIGKILL (TTL 1s)");
    assert!(
        gone_after < Duration::from_secs(3),
        "a presence TTL of 1s, but the killed node stayed {gone_after:?}"
    );
    // Redis lets go of the dead node's subscription too (it sees the
    // connection close through Docker's port proxy: not at once, and on a
    // loaded machine more than the usual 10 s have been seen). A and B
    // keep theirs meanwhile: their clients are still connected (were they
    // gone, A and B would unsubscribe once the linger ended and the count
    // would pass 2 on its way to 0).
    common::wait_until_async_within(
        "Redis drops the killed node's subscription",
        Duration::from_secs(60),
        || async {
            let n = redis.numsub("group:seq").await;
            if n != 2 {
                eprintln!("group:seq has {n} subscribers");
            }
            n == 2
        },
    )
    .await;
    drop(still_members);
}

// ----- a rolling restart ---------------------------------------------------------

/// What one reconnecting client saw.
#[derive(Debug, Default)]
struct Story {
    numbers: Vec<u64>,
    /// Close codes of the connections the server ended.
    closes: Vec<u16>,
    connects: usize,
    /// Failed connection attempts (a node that began draining meanwhile).
    retries: usize,
    /// The longest time between a close and the next successful upgrade.
    longest_gap: Duration,
    saw_end: bool,
}

/// The nodes a load balancer would send clients to: ready ones.
type Live = Arc<Mutex<Vec<(String, String)>>>;

/// A client that reconnects to another live node whenever its node
/// closes, until it reads `end`.
async fn reconnecting_client(
    index: usize,
    live: Live,
    connected: Arc<AtomicUsize>,
    on_node: Arc<Mutex<Vec<Option<String>>>>,
) -> Story {
    let mut story = Story::default();
    let mut last_node: Option<String> = None;
    let mut closed_at: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    'connect: loop {
        assert!(Instant::now() < deadline, "client {index} never finished");
        let choices: Vec<(String, String)> = live
            .lock()
            .iter()
            .filter(|(name, _)| Some(name) != last_node.as_ref())
            .cloned()
            .collect();
        assert!(!choices.is_empty(), "no live node for client {index}");
        let (name, url) = &choices[(index + story.connects + story.retries) % choices.len()];
        let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await;
        let Ok(Ok((ws, _))) = attempt else {
            story.retries += 1;
            assert!(
                story.retries < 50,
                "client {index}: too many failed connects"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if let Some(at) = closed_at.take() {
            story.longest_gap = story.longest_gap.max(at.elapsed());
        }
        story.connects += 1;
        last_node = Some(name.clone());
        on_node.lock()[index] = Some(name.clone());
        connected.fetch_add(1, Ordering::SeqCst);
        let mut client = Client { ws };
        loop {
            let frame = tokio::time::timeout(WAIT, client.ws.next()).await;
            let frame = match frame {
                Ok(frame) => frame,
                Err(_) => panic!("client {index}: nothing for {WAIT:?} on {name}"),
            };
            match frame {
                Some(Ok(Ws::Text(text))) if text.as_str() == "end" => {
                    story.saw_end = true;
                    connected.fetch_sub(1, Ordering::SeqCst);
                    return story;
                }
                Some(Ok(Ws::Text(text))) => {
                    story.numbers.push(text.parse().expect("a number"));
                }
                Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => {}
                Some(Ok(Ws::Close(frame))) => {
                    story.closes.push(frame.map_or(1005, |f| u16::from(f.code)));
                    closed_at = Some(Instant::now());
                    connected.fetch_sub(1, Ordering::SeqCst);
                    on_node.lock()[index] = None;
                    continue 'connect;
                }
                other => {
                    // A reset without a close frame also sends the client
                    // elsewhere; it is recorded as 1006.
                    eprintln!("client {index} on {name}: {other:?}");
                    story.closes.push(1006);
                    closed_at = Some(Instant::now());
                    connected.fetch_sub(1, Ordering::SeqCst);
                    on_node.lock()[index] = None;
                    continue 'connect;
                }
            }
        }
    }
}

/// Three nodes restarted one at a time (SIGTERM → drain 500 ms → 1001 →
/// exit → start again) while a publisher numbers messages from outside and
/// six clients follow the live nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_leaves_no_client_behind_and_delivers_nothing_twice() {
    const CLIENTS: usize = 6;
    const NAMES: [&str; 3] = ["roll-a", "roll-b", "roll-c"];
    let drain = ["--drain-period", "500ms", "--shutdown-timeout", "5s"];
    let redis = TestRedis::start().await;
    let mut nodes = start_clustered_nodes(&NAMES, &redis.url(), &drain).await;
    let live: Live = Arc::new(Mutex::new(
        nodes
            .iter()
            .map(|n| (n.name.clone(), n.ws_url("roll")))
            .collect(),
    ));
    let connected = Arc::new(AtomicUsize::new(0));
    let on_node = Arc::new(Mutex::new(vec![None; CLIENTS]));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(reconnecting_client(
                i,
                live.clone(),
                connected.clone(),
                on_node.clone(),
            ))
        })
        .collect();

    // Every client is on a node, and every node with clients listens.
    let settled = || async {
        if connected.load(Ordering::SeqCst) != CLIENTS {
            return false;
        }
        let hosts: std::collections::BTreeSet<String> =
            on_node.lock().iter().flatten().cloned().collect();
        redis.numsub("group:roll").await == hosts.len() as i64
    };
    wait_until_async("every client is connected and subscribed", settled).await;

    // The publisher: numbers every 10 ms from outside, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let mut conn = redis.client().await;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < 100_000 {
                tick.tick().await;
                common::redis::publish(&mut conn, "group:roll", n.to_string()).await;
                n += 1;
                sent.store(n, Ordering::SeqCst);
            }
        })
    };

    for i in 0..NAMES.len() {
        // Traffic flows before each step.
        let before = sent.load(Ordering::SeqCst);
        wait_until("some messages are out", || {
            sent.load(Ordering::SeqCst) >= before + 20
        })
        .await;
        // Out of the load balancer first (its /readyz turns 503 at SIGTERM;
        // a balancer follows it), then SIGTERM, drain, 1001, exit.
        live.lock().retain(|(name, _)| name != NAMES[i]);
        nodes[i].terminate();
        let status = nodes[i]
            .wait_exit(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{} did not exit after SIGTERM", NAMES[i]));
        assert!(status.success(), "{} exited with {status}", NAMES[i]);
        // Back under the same name, on a new port.
        nodes[i] = NodeProcess::start_clustered(NAMES[i], &redis.url(), &drain).await;
        live.lock()
            .push((NAMES[i].to_string(), nodes[i].ws_url("roll")));
        wait_until_async("every client is back on a node", settled).await;
    }
    stop.store(true, Ordering::SeqCst);
    publisher.await.unwrap();
    wait_until_async("every client is on a node for the end", settled).await;
    let mut conn = redis.client().await;
    common::redis::publish(&mut conn, "group:roll", "end").await;

    let sent = sent.load(Ordering::SeqCst);
    let mut stories = Vec::new();
    for client in clients {
        stories.push(client.await.unwrap());
    }
    for (i, story) in stories.iter().enumerate() {
        let lost = sent - story.numbers.len() as u64;
        eprintln!(
            "client {i}: {} of {sent} received ({lost} missed while reconnecting), \
             {} connects, {} retries, closes {:?}, longest gap {:?}",
            story.numbers.len(),
            story.connects,
            story.retries,
            story.closes,
            story.longest_gap
        );
        assert!(story.saw_end);
        // Nothing twice, nothing out of order.
        for pair in story.numbers.windows(2) {
            assert!(
                pair[0] < pair[1],
                "client {i} got {} then {}: a duplicate or a reordering",
                pair[0],
                pair[1]
            );
        }
        // Every client was on a node that restarted: each was closed
        // gracefully, with 1001, and found another node.
        assert!(!story.closes.is_empty(), "client {i} never moved");
        assert!(
            story.closes.iter().all(|&code| code == 1001),
            "client {i}: {:?}",
            story.closes
        );
        assert_eq!(story.connects, story.closes.len() + 1);
        assert!(
            story.longest_gap < WAIT,
            "client {i} was without a node for {:?}",
            story.longest_gap
        );
    }
}

// ----- Redis away while publishing ---------------------------------------------------

/// Node A's API publishes 0..N every 10 ms; Redis is stopped after 100 and
/// started again after 250. A's member gets everything (local delivery);
/// B's member misses what was published while B could not hear Redis. The
/// test counts it; docs/reliability.md states it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_redis_outages_cost_is_counted() {
    const N: u64 = 500;
    const STOP_AT: u64 = 100;
    const START_AT: u64 = 250;
    const CHECK_AT: u64 = 400;
    let redis = TestRedis::start().await;
    let a = NodeProcess::spawn_clustered("outage-a", &redis.url(), &[]);
    let b = NodeProcess::spawn_clustered("outage-b", &redis.url(), &[]);
    a.wait_ready().await;
    b.wait_ready().await;
    let local = Client::connect(&a.ws_url("outage")).await;
    let remote = Client::connect(&b.ws_url("outage")).await;
    wait_until_async("both nodes subscribe", || async {
        redis.numsub("group:outage").await == 2
    })
    .await;
    let local = tokio::spawn(collect_until(local, "end", "A's member".into()));
    let remote = tokio::spawn(collect_until(remote, "end", "B's member".into()));

    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let b_back = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (sent, refused, b_back) = (sent.clone(), refused.clone(), b_back.clone());
        let url = a.url("/api/groups/outage/messages");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 0..N {
                if i == CHECK_AT {
                    // From here on B must get everything: wait until it
                    // listens again (bounded).
                    wait_until("B is back", || b_back.load(Ordering::SeqCst)).await;
                }
                tick.tick().await;
                // A's API answers while Redis is away.
                let answer = post_text_with(&http, &url, i.to_string()).await;
                match answer.status().as_u16() {
                    200 => {}
                    // Delivered locally, not to other nodes.
                    503 => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    other => panic!("unexpected status {other}"),
                }
                sent.store(i + 1, Ordering::SeqCst);
            }
        })
    };

    wait_until("the first messages are out", || {
        sent.load(Ordering::SeqCst) >= STOP_AT
    })
    .await;
    let stop_called = Instant::now();
    redis.stop().await;
    let stopped_at = Instant::now();
    wait_until("the publisher reaches the restart point", || {
        sent.load(Ordering::SeqCst) >= START_AT
    })
    .await;
    redis.restart().await;
    let restarted_at = Instant::now();
    wait_until_async("B subscribes again", || async {
        redis.numsub("group:outage").await == 2
    })
    .await;
    let away = stop_called.elapsed();
    b_back.store(true, Ordering::SeqCst);
    publisher.await.unwrap();
    let (status, _) = http::post_text(&a.url("/api/groups/outage/messages"), "end").await;
    assert_eq!(status, 200);

    let (_, local) = local.await.unwrap();
    let (_, remote) = remote.await.unwrap();
    let local: Vec<u64> = local.iter().map(|m| m.parse().unwrap()).collect();
    let remote: Vec<u64> = remote.iter().map(|m| m.parse().unwrap()).collect();
    // The publishing node's own member: everything, in order, on the same
    // connection, Redis or not.
    assert_eq!(local, (0..N).collect::<Vec<_>>());
    // The other node's member: in order, nothing twice, everything before
    // the outage and everything once B listened again.
    for pair in remote.windows(2) {
        assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
    }
    for i in (0..STOP_AT.saturating_sub(10)).chain(CHECK_AT..N) {
        assert!(remote.contains(&i), "B's member missed {i}");
    }
    let refused = refused.load(Ordering::SeqCst);
    let lost = N - remote.len() as u64;
    eprintln!(
        "Redis outage: {away:?} from the stop command until B had re-subscribed \
         (docker stop took {:?}, down {:?}, start and re-subscription {:?}). \
         A published {N} at 100/s: A's member got {}, B's member got {} and lost {lost}; \
         A's API answered 503 for {refused} of them and 200 for {} that B still missed \
         (published before B had re-subscribed).",
        stopped_at - stop_called,
        restarted_at - stopped_at,
        away - (restarted_at - stop_called),
        local.len(),
        remote.len(),
        lost.saturating_sub(refused),
    );
    assert!(
        lost > 0,
        "an outage of seconds must cost B's member something"
    );
    // Both nodes say they reconnected; the sessions never did.
    for node in [&a, &b] {
        let metrics = http::get_text(&node.url("/metrics")).await;
        assert!(
            metrics.contains("groupcast_connections_opened_total 1\n"),
            "{}: {metrics}",
            node.name
        );
        assert!(
            metrics.contains("groupcast_bus_connects_total 2\n"),
            "{}: {metrics}",
            node.name
        );
    }
}
