//! Join/leave frames (`--join-leave`) on real nodes (spawned binaries)
//! sharing one Redis: a `groupcast.v1` member hears each connection join
//! and leave once and each user join and leave once (after the grace),
//! whichever node the other members are on; a raw client hears none.

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::common::Client;
use crate::common::http::post_text;
use crate::common::node::NodeProcess;
use crate::common::redis::TestRedis;
use groupcast::auth::{MintRequest, mint_hs256};

const JWT: &str = "join-leave-cluster-test-secret-32-bytes-or-more";

async fn node(name: &str, redis_url: &str) -> NodeProcess {
    NodeProcess::start_clustered(
        name,
        redis_url,
        &[
            "--presence",
            "jl-*",
            "--join-leave",
            "jl-*",
            "--presence-grace",
            "1s",
            "--jwt-secret",
            JWT,
        ],
    )
    .await
}

fn url(node: &NodeProcess, group: &str, sub: &str) -> String {
    let token = mint_hs256(JWT.as_bytes(), &MintRequest::new(sub, [group])).expect("a token");
    format!("{}?token={token}", node.ws_url(group))
}

async fn next_text(client: &mut Client) -> String {
    match client.next_data().await {
        Ws::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// `type:sub` (and `@node` for connection frames) of the next frame.
async fn next_frame(client: &mut Client) -> String {
    let frame: Value = serde_json::from_str(&next_text(client).await).expect("JSON");
    let kind = frame["type"].as_str().unwrap_or("?");
    let sub = frame["sub"].as_str().unwrap_or("");
    match frame["session"].as_str() {
        Some(_) => format!("{kind}:{sub}@{}", frame["node"].as_str().unwrap_or("?")),
        None => format!("{kind}:{sub}"),
    }
}

/// The next `count` frames, sorted (frames of one transition batch come
/// in order, those of different nodes may interleave).
async fn next_frames(client: &mut Client, count: usize) -> Vec<String> {
    let mut frames = Vec::new();
    for _ in 0..count {
        frames.push(next_frame(client).await);
    }
    frames.sort();
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_members_hear_each_join_and_leave_once_and_raw_clients_none() {
    let redis = TestRedis::shared();
    let a = node("jl-a", &redis.url()).await;
    let b = node("jl-b", &redis.url()).await;
    let group = "jl-room";

    let mut watcher = Client::try_connect(
        &url(&a, group, "watcher"),
        &[("sec-websocket-protocol", "groupcast.v1")],
    )
    .await
    .unwrap_or_else(|refused| panic!("{refused:?}"));
    assert!(next_text(&mut watcher).await.contains("\"welcome\""));
    // Its own arrival, like anyone's.
    assert_eq!(
        next_frames(&mut watcher, 2).await,
        ["join:watcher@jl-a", "user_joined:watcher"]
    );
    let mut raw = Client::connect(&url(&a, group, "raw")).await;
    assert_eq!(
        next_frames(&mut watcher, 2).await,
        ["join:raw@jl-a", "user_joined:raw"]
    );

    // Bob twice on the other node: one user_joined, two joins.
    let bob_1 = Client::connect(&url(&b, group, "bob")).await;
    let bob_2 = Client::connect(&url(&b, group, "bob")).await;
    assert_eq!(
        next_frames(&mut watcher, 3).await,
        ["join:bob@jl-b", "join:bob@jl-b", "user_joined:bob"]
    );

    // One of Bob's goes: a leave, no user_left; then the other: a leave
    // and, after the grace, user_left, once.
    drop(bob_1);
    assert_eq!(next_frame(&mut watcher).await, "leave:bob@jl-b");
    drop(bob_2);
    assert_eq!(next_frame(&mut watcher).await, "leave:bob@jl-b");
    assert_eq!(next_frame(&mut watcher).await, "user_left:bob");

    // Nothing more came, and the raw client heard none of it: the next
    // frame each gets is a message sent now.
    let (status, _) = post_text(&a.url(&format!("/api/groups/{group}/messages")), "after").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut raw).await, "after");
    let message: Value = serde_json::from_str(&next_text(&mut watcher).await).expect("JSON");
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["data"], "after");
}

/// What an observer with `?presence=1` believes the membership is: the
/// snapshot, then each join and leave applied in turn. A join of someone
/// already there or a leave of someone absent is a frame doubled or one
/// missed, and is recorded as a fault.
struct Observer {
    session: String,
    members: std::collections::BTreeSet<String>,
    faults: Vec<String>,
}

impl Observer {
    /// Connects to `node` with `?presence=1`: the welcome, then the
    /// snapshot, which must follow it at once.
    async fn join(node: &NodeProcess, group: &str, sub: &str) -> (Observer, Client) {
        let url = format!("{}&presence=1", url(node, group, sub));
        let mut client = Client::try_connect(&url, &[("sec-websocket-protocol", "groupcast.v1")])
            .await
            .unwrap_or_else(|refused| panic!("{refused:?}"));
        let welcome: Value = serde_json::from_str(&next_text(&mut client).await).expect("JSON");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let snapshot: Value = serde_json::from_str(&next_text(&mut client).await).expect("JSON");
        assert_eq!(
            snapshot["type"], "presence",
            "right after the welcome: {snapshot}"
        );
        assert_eq!(snapshot["truncated"], false);
        let members: std::collections::BTreeSet<String> = snapshot["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["session"].as_str().expect("a session").to_string())
            .collect();
        assert_eq!(snapshot["count"].as_u64(), Some(members.len() as u64));
        let observer = Observer {
            session: welcome["session"].as_str().expect("a session").to_string(),
            members,
            faults: Vec::new(),
        };
        (observer, client)
    }

    fn apply(&mut self, frame: &Value) {
        let session = frame["session"].as_str().unwrap_or_default().to_string();
        match frame["type"].as_str() {
            Some("join") if !self.members.insert(session.clone()) => {
                self.faults.push(format!("joined twice: {frame}"));
            }
            Some("leave") if !self.members.remove(&session) => {
                self.faults
                    .push(format!("left without being there: {frame}"));
            }
            _ => {}
        }
    }
}

/// A `?presence=1` snapshot and the join/leave frames after it are the
/// group's membership exactly, while 50 clients join and leave on three
/// nodes: observers that arrive in the middle of it never see a member
/// twice or a leave of someone absent, and once the churn is over each
/// one's list is exactly the members still there (the observers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_snapshot_and_the_frames_after_it_are_the_membership_while_clients_come_and_go()
{
    const CHURNERS: usize = 50;
    const VISITS: usize = 10;
    const OBSERVERS: usize = 6;
    let redis = TestRedis::shared();
    let nodes = std::sync::Arc::new(vec![
        node("jl-snap-a", &redis.url()).await,
        node("jl-snap-b", &redis.url()).await,
        node("jl-snap-c", &redis.url()).await,
    ]);
    let group = "jl-snapshot";
    let churners: Vec<_> = (0..CHURNERS)
        .map(|i| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                for visit in 0..VISITS {
                    let node = &nodes[(i + visit) % nodes.len()];
                    // Half with a user of their own, half sharing four.
                    let sub = if i % 2 == 0 {
                        format!("u{i}")
                    } else {
                        format!("shared{}", i % 4)
                    };
                    let client = Client::try_connect(
                        &url(node, group, &sub),
                        &[("sec-websocket-protocol", "groupcast.v1")],
                    )
                    .await
                    .unwrap_or_else(|refused| panic!("{refused:?}"));
                    let stay = 20 + rand::random::<u64>() % 200;
                    tokio::time::sleep(std::time::Duration::from_millis(stay)).await;
                    drop(client);
                    let away = rand::random::<u64>() % 100;
                    tokio::time::sleep(std::time::Duration::from_millis(away)).await;
                }
            })
        })
        .collect();
    // Observers arrive one by one while the churn goes on; each reads
    // its frames in a task of its own until told what the end is.
    let (end_tx, end_rx) = tokio::sync::watch::channel(None::<std::collections::BTreeSet<String>>);
    let mut sessions = Vec::new();
    let mut observers = Vec::new();
    for i in 0..OBSERVERS {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let (mut observer, mut client) =
            Observer::join(&nodes[i % nodes.len()], group, &format!("observer{i}")).await;
        sessions.push(observer.session.clone());
        let mut end = end_rx.clone();
        observers.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
            loop {
                let settled = end
                    .borrow()
                    .as_ref()
                    .is_some_and(|expected| *expected == observer.members);
                if settled {
                    return observer;
                }
                tokio::select! {
                    frame = client.ws.next() => match frame {
                        Some(Ok(Ws::Text(text))) => {
                            let frame: Value = serde_json::from_str(&text).expect("JSON");
                            observer.apply(&frame);
                        }
                        Some(Ok(_)) => {}
                        other => panic!("observer {i}'s connection ended: {other:?}"),
                    },
                    _ = end.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => return observer,
                }
            }
        }));
    }
    for churner in churners {
        churner.await.expect("a churner");
    }
    // Everyone but the observers has gone: that is the membership each
    // observer must come to, and what the API says.
    let expected: std::collections::BTreeSet<String> = sessions.into_iter().collect();
    let _ = end_tx.send(Some(expected.clone()));
    for (i, observer) in observers.into_iter().enumerate() {
        let observer = observer.await.expect("an observer");
        assert!(
            observer.faults.is_empty(),
            "observer {i}: {:?}",
            observer.faults
        );
        assert_eq!(observer.members, expected, "observer {i}'s list");
    }
    let (status, listed) =
        crate::common::http::get_json(&nodes[0].url(&format!("/api/groups/{group}/members"))).await;
    assert_eq!(status, 200, "{listed}");
    let listed: std::collections::BTreeSet<String> = listed["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["id"].as_str().expect("an id").to_string())
        .collect();
    assert_eq!(listed, expected, "the API agrees");
}

/// The next frame's type and session, or `None` when nothing comes within
/// `within` (what "no frame" means below).
async fn frame_within(client: &mut Client, within: std::time::Duration) -> Option<Value> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(within, client.ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Ws::Text(text)))) => {
                return Some(serde_json::from_str(&text).expect("JSON"));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the watcher's connection ended: {other:?}"),
        }
    }
}

/// A client that reconnects with its session id (`?session=`) within the
/// grace carries on as the same member, on whichever node: no leave and
/// no join, also when its node was killed; its leave comes once, after
/// the grace, when it goes for good. A client that does not come back
/// from the killed node leaves once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_with_its_session_within_the_grace_never_left() {
    let redis = TestRedis::shared();
    let a = node("jl-res-a", &redis.url()).await;
    let mut b = node("jl-res-b", &redis.url()).await;
    let c = node("jl-res-c", &redis.url()).await;
    let group = "jl-resume";
    let v1 = [("sec-websocket-protocol", "groupcast.v1")];
    let mut watcher = Client::try_connect(&url(&a, group, "watcher"), &v1)
        .await
        .unwrap_or_else(|refused| panic!("{refused:?}"));
    assert!(next_text(&mut watcher).await.contains("\"welcome\""));
    assert_eq!(
        next_frames(&mut watcher, 2).await,
        ["join:watcher@jl-res-a", "user_joined:watcher"]
    );
    let connect = |node: &NodeProcess, sub: &str, session: Option<&str>| {
        let mut url = url(node, group, sub);
        if let Some(id) = session {
            url.push_str(&format!("&session={id}"));
        }
        async move {
            let mut client =
                Client::try_connect(&url, &[("sec-websocket-protocol", "groupcast.v1")])
                    .await
                    .unwrap_or_else(|refused| panic!("{refused:?}"));
            let welcome: Value = serde_json::from_str(&next_text(&mut client).await).expect("JSON");
            let session = welcome["session"].as_str().expect("a session").to_string();
            (client, session)
        }
    };
    let (mover, mover_id) = connect(&b, "mover", None).await;
    let (_stayer, _) = connect(&b, "stayer", None).await;
    assert_eq!(
        next_frames(&mut watcher, 4).await,
        [
            "join:mover@jl-res-b",
            "join:stayer@jl-res-b",
            "user_joined:mover",
            "user_joined:stayer"
        ]
    );

    // A reconnect to another node with the session: the same id, nothing
    // heard.
    drop(mover);
    let (mover, again) = connect(&c, "mover", Some(&mover_id)).await;
    assert_eq!(again, mover_id, "the session carries on");
    assert_eq!(
        frame_within(&mut watcher, std::time::Duration::from_secs(3)).await,
        None
    );

    // Its node killed: the mover comes back on A with its session (no
    // frame); the stayer does not, and leaves once after the TTL and the
    // grace.
    drop(mover);
    let (mover, _) = connect(&b, "mover", Some(&mover_id)).await;
    b.kill();
    drop(mover); // on the dead node: its connection is gone
    let (_mover, again) = connect(&a, "mover", Some(&mover_id)).await;
    assert_eq!(again, mover_id);
    let mut heard = Vec::new();
    while let Some(frame) = frame_within(&mut watcher, std::time::Duration::from_secs(5)).await {
        heard.push(format!(
            "{}:{}",
            frame["type"].as_str().unwrap_or("?"),
            frame["sub"].as_str().unwrap_or("")
        ));
    }
    heard.sort();
    assert_eq!(
        heard,
        ["leave:stayer", "user_left:stayer"],
        "only the stayer left"
    );
    let (status, listed) =
        crate::common::http::get_json(&a.url(&format!("/api/groups/{group}/members"))).await;
    assert_eq!(status, 200);
    let mover_entry: Vec<&Value> = listed["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["sub"] == "mover")
        .collect();
    assert_eq!(mover_entry.len(), 1, "{listed}");
    assert_eq!(
        mover_entry[0]["node"], "jl-res-a",
        "the member moved with its session"
    );
}

/// A join storm in a `--join-leave` group closes nobody: 300 members
/// arrive at once on two nodes, so each member is sent a burst of join
/// and user_joined frames larger than its send queue (256), and every
/// member stays connected and learns of every other once (in its
/// `?presence=1` snapshot or as a join after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_closes_no_member_and_each_learns_of_every_other_once() {
    const MEMBERS: usize = 300;
    let redis = TestRedis::shared();
    let nodes = std::sync::Arc::new([
        node("jl-storm-a", &redis.url()).await,
        node("jl-storm-b", &redis.url()).await,
    ]);
    let group = "jl-storm";
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let members: Vec<_> = (0..MEMBERS)
        .map(|i| {
            let (nodes, mut go) = (nodes.clone(), go_rx.clone());
            tokio::spawn(async move {
                use futures_util::StreamExt;
                let _ = go.wait_for(|go| *go).await;
                let mut client = Client::try_connect(
                    &format!("{}&presence=1", url(&nodes[i % 2], group, &format!("m{i}"))),
                    &[("sec-websocket-protocol", "groupcast.v1")],
                )
                .await
                .unwrap_or_else(|refused| panic!("{refused:?}"));
                let mut joined = std::collections::BTreeSet::new();
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
                while joined.len() < MEMBERS {
                    let frame = tokio::time::timeout_at(deadline, client.ws.next()).await;
                    match frame {
                        Ok(Some(Ok(Ws::Text(text)))) => {
                            let frame: Value = serde_json::from_str(&text).expect("JSON");
                            assert_ne!(frame["type"], "error", "member {i}: {frame}");
                            if frame["type"] == "presence" {
                                for member in frame["members"].as_array().expect("members") {
                                    let sub = member["sub"].as_str().unwrap_or_default();
                                    joined.insert(sub.to_string());
                                }
                            }
                            if frame["type"] == "join" {
                                let sub = frame["sub"].as_str().unwrap_or_default().to_string();
                                assert!(
                                    joined.insert(sub),
                                    "member {i} heard a join twice: {frame}"
                                );
                            }
                        }
                        Ok(Some(Ok(Ws::Close(close)))) => {
                            panic!("member {i} was closed: {close:?}")
                        }
                        Ok(Some(Ok(_))) => {}
                        other => panic!("member {i}: {other:?} after {} joins", joined.len()),
                    }
                }
                client
            })
        })
        .collect();
    go_tx.send(true).expect("the members wait");
    let mut clients = Vec::new();
    for member in members {
        clients.push(member.await.expect("a member"));
    }
    assert_eq!(clients.len(), MEMBERS);
}

/// Join/leave frames are not in history: those published while a node's
/// subscriber reconnects never reach it. So a node that listens again
/// sends each of its sessions that holds a snapshot a new one, which
/// replaces its list: after cuts in the middle of join bursts, an
/// observer's list is the membership again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_listens_again_sends_its_snapshot_holders_a_new_snapshot() {
    use futures_util::StreamExt;
    let redis = TestRedis::shared();
    let a = node("jl-cut-a", &redis.url()).await;
    let b = node("jl-cut-b", &redis.url()).await;
    let group = "jl-cut";
    let mut observer = Client::try_connect(
        &format!("{}&presence=1", url(&b, group, "observer")),
        &[("sec-websocket-protocol", "groupcast.v1")],
    )
    .await
    .unwrap_or_else(|refused| panic!("{refused:?}"));
    let list = std::sync::Arc::new(parking_lot::Mutex::new(std::collections::BTreeSet::new()));
    let snapshots = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let (list, snapshots) = (list.clone(), snapshots.clone());
        tokio::spawn(async move {
            while let Some(Ok(frame)) = observer.ws.next().await {
                let Ws::Text(text) = frame else { continue };
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                let session = frame["session"].as_str().unwrap_or_default().to_string();
                let mut list = list.lock();
                match frame["type"].as_str() {
                    Some("presence") => {
                        snapshots.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        *list = frame["members"]
                            .as_array()
                            .expect("members")
                            .iter()
                            .map(|m| m["session"].as_str().unwrap_or_default().to_string())
                            .collect();
                    }
                    Some("join") => {
                        list.insert(session);
                    }
                    Some("leave") => {
                        list.remove(&session);
                    }
                    _ => {}
                }
            }
        })
    };
    let mut conn = redis.client().await;
    let mut kept = Vec::new();
    for round in 0..4 {
        let burst: Vec<_> = (0..20)
            .map(|i| {
                let url = url(&a, group, &format!("r{round}c{i}"));
                tokio::spawn(async move { Client::connect(&url).await })
            })
            .collect();
        // Cut every subscriber while the burst's joins are written.
        let _: i64 =
            crate::common::redis::query(&mut conn, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        for (i, client) in burst.into_iter().enumerate() {
            let client = client.await.expect("a client");
            if i % 2 == 0 {
                kept.push(client); // the others leave at once
            }
        }
    }
    crate::common::wait_until("the observer had a snapshot after a reconnect", || {
        snapshots.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;
    let members_url = a.url(&format!("/api/groups/{group}/members?limit=1000"));
    let expected = 1 + kept.len();
    crate::common::wait_until_async("the observer's list is the membership", || {
        let (list, members_url) = (list.clone(), members_url.clone());
        async move {
            let (_, listed) = crate::common::http::get_json(&members_url).await;
            let truth: std::collections::BTreeSet<String> = listed["members"]
                .as_array()
                .map(|members| {
                    members
                        .iter()
                        .map(|m| m["id"].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default();
            *list.lock() == truth && truth.len() == expected
        }
    })
    .await;
    reader.abort();
    drop(kept);
}
