//! Delivery: every message reaches exactly the sessions it names, and no
//! one else.
//!
//! * group isolation with many groups and clients at once;
//! * every way of addressing sessions (group, all, others, except, closure
//!   filter, key filters, session lists, one session, the HTTP API), one
//!   test each, text and binary;
//! * the binary's `--client-messages group` and `none`;
//! * in a cluster over a real Redis: a raw `PUBLISH` from outside, and
//!   every broadcast kind across three nodes.
//!
//! Non-arrival is shown with `common::silence` (a marker on the client's
//! own channel, and a bounded quiet window where no channel is shared).
//! The cluster tests start their own Redis (`REDIS_IMAGE=local/redis:7`
//! where no registry is reachable): they broadcast to every node, so they
//! cannot share one.

use crate::common::node::NodeProcess;
use crate::common::redis::{TestRedis, publish, three_nodes, wait_subscribed};
use crate::common::silence::{marker_is_next, quiet_after_marker};
use crate::common::{
    Client, Peer, TestServer, announcing_ids, connect_peer, http, wait_until, wait_until_async,
};
use futures_util::SinkExt;
use groupcast::{GroupName, Hub, KeyFilter, Message, SessionId};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Ws;

fn group(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

// ----- group isolation ---------------------------------------------------------

/// 20 groups × 10 clients at once: each client reads exactly its own
/// group's messages, in order, and then the final marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_isolated_with_many_groups_and_clients() {
    const GROUPS: usize = 20;
    const CLIENTS: usize = 10;
    const MESSAGES: usize = 6;
    let server = TestServer::start(Hub::builder().build().unwrap()).await;

    let mut connecting = Vec::new();
    for g in 0..GROUPS {
        for _ in 0..CLIENTS {
            let url = server.ws_url(&format!("iso/{g}"));
            connecting.push(async move { (g, Client::connect(&url).await) });
        }
    }
    let mut clients = futures_util::future::join_all(connecting).await;
    wait_until("every client is registered", || {
        server.hub.session_count() == GROUPS * CLIENTS
    })
    .await;
    assert_eq!(server.hub.group_count(), GROUPS);
    for g in 0..GROUPS {
        assert_eq!(
            server.hub.member_count(&group(&format!("iso/{g}"))),
            CLIENTS
        );
    }

    // Interleave the groups; alternate text and binary frames.
    let expected = |g: usize, k: usize| -> Ws {
        let body = format!("group {g} message {k}");
        if k.is_multiple_of(2) {
            Ws::text(body)
        } else {
            Ws::binary(body.into_bytes())
        }
    };
    for k in 0..MESSAGES {
        for g in 0..GROUPS {
            let body = format!("group {g} message {k}");
            let message = if k.is_multiple_of(2) {
                Message::text(body)
            } else {
                Message::binary(body.into_bytes())
            };
            let delivered = server.hub.to(format!("iso/{g}")).send(message).unwrap();
            assert_eq!(delivered, CLIENTS);
        }
    }
    assert_eq!(server.hub.all().send("end").unwrap(), GROUPS * CLIENTS);

    let reading = clients.iter_mut().map(|(g, client)| {
        let g = *g;
        async move {
            for k in 0..MESSAGES {
                assert_eq!(
                    client.next_data().await,
                    expected(g, k),
                    "a member of group {g}"
                );
            }
            assert_eq!(client.recv_text().await, "end", "a member of group {g}");
        }
    });
    futures_util::future::join_all(reading).await;
}

// ----- every way of addressing sessions, one node ------------------------------

/// Eight sessions that announce their ids: 0, 1, 2 in room/a; 3, 4, 5 in
/// room/b; 6, 7 in lobby. Keys: 0 and 3 are admins, 3 is a vip, 6 is a
/// user.
struct Addressed {
    server: TestServer,
    peers: Vec<Peer>,
    ids: Vec<SessionId>,
}

impl Addressed {
    async fn start() -> Addressed {
        let server = TestServer::start(announcing_ids().build().unwrap()).await;
        let mut peers = Vec::new();
        for name in [
            "room/a", "room/a", "room/a", "room/b", "room/b", "room/b", "lobby", "lobby",
        ] {
            peers.push(connect_peer(&server, name).await);
        }
        let ids: Vec<SessionId> = peers.iter().map(|p| p.id.clone()).collect();
        let this = Addressed { server, peers, ids };
        this.session(0).set("role", "admin");
        this.session(3).set("role", "admin");
        this.session(3).set("vip", true);
        this.session(6).set("role", "user");
        this
    }

    fn hub(&self) -> &Hub {
        &self.server.hub
    }

    fn session(&self, i: usize) -> groupcast::Session {
        self.hub().session(&self.ids[i]).expect("a live session")
    }

    /// `delivered` must equal `expected.len()`; exactly the peers in
    /// `expected` read `message`; then a marker goes to everyone and must
    /// be every peer's next frame (one node: each session's queue is the
    /// channel they share).
    async fn assert_delivery(
        &mut self,
        what: &str,
        delivered: usize,
        expected: &[usize],
        message: Ws,
    ) {
        assert_eq!(delivered, expected.len(), "{what}: sessions queued for");
        for &i in expected {
            assert_eq!(
                self.peers[i].client.next_data().await,
                message,
                "{what}: peer {i}"
            );
        }
        let marker = format!("marker after {what}");
        assert_eq!(
            self.server.hub.all().send(marker.as_str()).unwrap(),
            self.peers.len()
        );
        for (i, peer) in self.peers.iter_mut().enumerate() {
            marker_is_next(&mut peer.client, &marker, &format!("{what}: peer {i}")).await;
        }
    }

    /// Publishes `body` as `content_type` to room/b through the HTTP API.
    async fn api_publish(&mut self, content_type: &str, body: Vec<u8>, frame: Ws) {
        let url = self.server.http_url("/api/groups/room/b/messages");
        let (status, answer) = http::post(&url, content_type, body).await;
        assert_eq!(status, 200, "{answer}");
        let n = answer["delivered"].as_u64().unwrap() as usize;
        assert_eq!(answer["group"], "room/b");
        self.assert_delivery(content_type, n, &[3, 4, 5], frame)
            .await;
    }
}

fn bin(bytes: &[u8]) -> Ws {
    Ws::binary(bytes.to_vec())
}

#[tokio::test]
async fn a_group_text_reaches_its_members_only() {
    let mut s = Addressed::start().await;
    let n = s.hub().to("room/a").send("to room/a").unwrap();
    s.assert_delivery("group text", n, &[0, 1, 2], Ws::text("to room/a"))
        .await;
}

#[tokio::test]
async fn a_group_binary_reaches_its_members_only() {
    let mut s = Addressed::start().await;
    let n = s.hub().to(group("room/b")).send(vec![1u8, 2, 3]).unwrap();
    s.assert_delivery("group binary", n, &[3, 4, 5], bin(&[1, 2, 3]))
        .await;
}

#[tokio::test]
async fn a_group_without_members_reaches_no_one() {
    let mut s = Addressed::start().await;
    let n = s.hub().to("nobody-here").send("lost").unwrap();
    s.assert_delivery("empty group", n, &[], Ws::text("lost"))
        .await;
}

#[tokio::test]
async fn all_text_reaches_every_session() {
    let mut s = Addressed::start().await;
    let n = s.hub().all().send("to all").unwrap();
    let all: Vec<usize> = (0..8).collect();
    s.assert_delivery("all text", n, &all, Ws::text("to all"))
        .await;
}

#[tokio::test]
async fn all_binary_reaches_every_session() {
    let mut s = Addressed::start().await;
    let n = s.hub().all().send(vec![0u8, 255]).unwrap();
    let all: Vec<usize> = (0..8).collect();
    s.assert_delivery("all binary", n, &all, bin(&[0, 255]))
        .await;
}

#[tokio::test]
async fn others_reaches_everyone_but_the_named_session() {
    let mut s = Addressed::start().await;
    let n = s.hub().all().except(&s.ids[4]).send("not to 4").unwrap();
    s.assert_delivery("others", n, &[0, 1, 2, 3, 5, 6, 7], Ws::text("not to 4"))
        .await;
}

#[tokio::test]
async fn group_except_skips_the_named_member() {
    let mut s = Addressed::start().await;
    let n = s
        .hub()
        .to(group("room/a"))
        .except(&s.ids[1])
        .send("room/a but 1")
        .unwrap();
    s.assert_delivery("group except", n, &[0, 2], Ws::text("room/a but 1"))
        .await;
}

#[tokio::test]
async fn group_except_skips_the_named_member_with_binary() {
    let mut s = Addressed::start().await;
    let n = s
        .hub()
        .to(group("room/b"))
        .except(&s.ids[3])
        .send(vec![7u8])
        .unwrap();
    s.assert_delivery("group except binary", n, &[4, 5], bin(&[7]))
        .await;
}

#[tokio::test]
async fn a_closure_filter_reaches_the_sessions_it_accepts() {
    let mut s = Addressed::start().await;
    let n = s
        .hub()
        .all()
        .local_filter(|s| s.get("role") == Some(json!("admin")))
        .send("admins by closure")
        .unwrap();
    s.assert_delivery("filter closure", n, &[0, 3], Ws::text("admins by closure"))
        .await;
}

#[tokio::test]
async fn a_closure_filter_reaches_the_sessions_it_accepts_with_binary() {
    let mut s = Addressed::start().await;
    let skip = s.ids[5].clone();
    let n = s
        .hub()
        .all()
        .local_filter(|s| {
            s.group().is_some_and(|g| g.as_str().starts_with("room/")) && *s.id() != skip
        })
        .send(vec![9u8, 9])
        .unwrap();
    s.assert_delivery("filter binary", n, &[0, 1, 2, 3, 4], bin(&[9, 9]))
        .await;
}

#[tokio::test]
async fn a_key_filter_reaches_the_sessions_whose_keys_match() {
    let mut s = Addressed::start().await;
    let n = s
        .hub()
        .all()
        .matching(KeyFilter::equals("role", "admin"))
        .send("admins by key")
        .unwrap();
    s.assert_delivery("matching", n, &[0, 3], Ws::text("admins by key"))
        .await;
}

#[tokio::test]
async fn a_negated_key_filter_reaches_the_sessions_without_the_key() {
    let mut s = Addressed::start().await;
    let n = s
        .hub()
        .all()
        .matching(KeyFilter::has("role").not())
        .send(vec![4u8])
        .unwrap();
    s.assert_delivery("matching not", n, &[1, 2, 4, 5, 7], bin(&[4]))
        .await;
}

#[tokio::test]
async fn key_filters_combine_with_and_and_or() {
    let mut s = Addressed::start().await;
    let vip_admins_or_users = KeyFilter::equals("role", "admin")
        .and(KeyFilter::has("vip"))
        .or(KeyFilter::equals("role", "user"));
    let n = s
        .hub()
        .all()
        .matching(vip_admins_or_users)
        .send("vip admins or users")
        .unwrap();
    s.assert_delivery(
        "matching and/or",
        n,
        &[3, 6],
        Ws::text("vip admins or users"),
    )
    .await;
}

#[tokio::test]
async fn a_group_with_a_key_filter_reaches_its_matching_members() {
    let mut s = Addressed::start().await;
    let n = s
        .hub()
        .to(group("room/b"))
        .matching(KeyFilter::equals("role", "admin"))
        .send("room/b admins")
        .unwrap();
    s.assert_delivery("group matching", n, &[3], Ws::text("room/b admins"))
        .await;
}

#[tokio::test]
async fn a_session_list_reaches_the_listed_sessions() {
    let mut s = Addressed::start().await;
    let listed = [s.ids[1].clone(), s.ids[4].clone(), s.ids[7].clone()];
    let n = s.hub().to_sessions(listed).send("listed").unwrap();
    s.assert_delivery("to list", n, &[1, 4, 7], Ws::text("listed"))
        .await;
}

#[tokio::test]
async fn a_session_list_skips_unknown_ids() {
    let mut s = Addressed::start().await;
    let listed = [s.ids[2].clone(), SessionId::from("no-such-session")];
    let n = s.hub().to_sessions(listed).send(vec![2u8]).unwrap();
    s.assert_delivery("to list binary", n, &[2], bin(&[2]))
        .await;
}

#[tokio::test]
async fn session_send_reaches_that_session_only() {
    let mut s = Addressed::start().await;
    let n = usize::from(s.session(6).send("just you"));
    s.assert_delivery("session send", n, &[6], Ws::text("just you"))
        .await;
}

#[tokio::test]
async fn the_api_publishes_text_to_a_group() {
    let mut s = Addressed::start().await;
    s.api_publish(
        "text/plain; charset=utf-8",
        b"api text".to_vec(),
        Ws::text("api text"),
    )
    .await;
}

#[tokio::test]
async fn the_api_publishes_json_to_a_group_as_text() {
    let mut s = Addressed::start().await;
    s.api_publish(
        "application/json",
        br#"{"n":1}"#.to_vec(),
        Ws::text(r#"{"n":1}"#),
    )
    .await;
}

#[tokio::test]
async fn the_api_publishes_binary_to_a_group() {
    let mut s = Addressed::start().await;
    s.api_publish(
        "application/octet-stream",
        vec![0xc1, 0, 0xff],
        bin(&[0xc1, 0, 0xff]),
    )
    .await;
}

// ----- the binary: client messages ---------------------------------------------

/// `--client-messages group` (the default): what a client sends reaches its
/// whole group, itself included, and no other group.
#[tokio::test]
async fn the_binary_forwards_client_messages_to_their_group_only() {
    let server = NodeProcess::start(
        "deliver-group",
        &["--log", "warn", "--client-messages", "group"],
    )
    .await;
    let (_, info) = http::get_json(&server.url("/api/info")).await;
    assert_eq!(info["client_messages"], "group");
    assert_eq!(info["mode"], "local");

    let mut alice = server.connect("chat/a", 1).await;
    let mut bob = server.connect("chat/a", 2).await;
    let mut carol = server.connect("chat/b", 1).await;

    alice.send_text("hello from alice").await;
    assert_eq!(alice.recv_text().await, "hello from alice");
    assert_eq!(bob.recv_text().await, "hello from alice");
    bob.ws.send(Ws::binary(vec![1u8, 2, 3])).await.unwrap();
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.next_data().await, Ws::binary(vec![1u8, 2, 3]));
    }
    carol.send_text("hello from carol").await;
    assert_eq!(carol.recv_text().await, "hello from carol");

    // Nothing crossed groups: each one's own marker, then quiet.
    assert_eq!(post_to(&server, "chat/a", "marker a").await["delivered"], 2);
    assert_eq!(post_to(&server, "chat/b", "marker b").await["delivered"], 1);
    quiet_after_marker(&mut alice, "marker a", "alice").await;
    quiet_after_marker(&mut bob, "marker a", "bob").await;
    quiet_after_marker(&mut carol, "marker b", "carol").await;
}

/// `--client-messages none` (ws-notifier): clients only listen.
#[tokio::test]
async fn the_binary_forwards_no_client_messages_when_push_only() {
    let server = NodeProcess::start(
        "deliver-none",
        &["--log", "warn", "--client-messages", "none"],
    )
    .await;
    let (_, info) = http::get_json(&server.url("/api/info")).await;
    assert_eq!(info["client_messages"], "none");
    let mut alice = server.connect("news", 1).await;
    let mut bob = server.connect("news", 2).await;
    alice.send_text("nobody hears this").await;
    alice.ws.send(Ws::binary(vec![0u8])).await.unwrap();
    // The server read both (it counts them), and forwarded neither.
    wait_until_async("the server counted both client messages", || async {
        let text = http::get_text(&server.url("/metrics")).await;
        http::metric(&text, "groupcast_messages_in_total") == 2.0
    })
    .await;
    assert_eq!(
        post_to(&server, "news", "from the server").await["delivered"],
        2
    );
    marker_is_next(&mut alice, "from the server", "alice").await;
    marker_is_next(&mut bob, "from the server", "bob").await;
}

/// Publishes `text` to `group` through the node's API; its JSON answer.
async fn post_to(node: &NodeProcess, group: &str, text: &str) -> Value {
    let (status, answer) =
        http::post_text(&node.url(&format!("/api/groups/{group}/messages")), text).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

// ----- in a cluster ----------------------------------------------------------------

fn session_of(server: &TestServer, group: &str) -> SessionId {
    let group = groupcast::GroupName::new(group).unwrap();
    let members = server.hub.members(&group);
    assert_eq!(members.len(), 1, "expected one member of {group}");
    members[0].id().clone()
}

/// What `redis-cli PUBLISH group:ticker_ws hello` does: every member on
/// every node gets it (non-UTF-8 as a binary frame); no one else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_publish_reaches_every_member_on_every_node_and_no_one_else() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, |b| b).await;
    let mut members = Vec::new();
    let mut others = Vec::new();
    for node in &nodes {
        members.push(node.connect("ticker_ws").await);
        members.push(node.connect("ticker_ws").await);
        others.push(node.connect("other").await);
    }
    let all: Vec<&TestServer> = nodes.iter().collect();
    wait_subscribed(&all, "group:ticker_ws").await;
    wait_subscribed(&all, "group:other").await;
    assert_eq!(
        redis.numsub("group:ticker_ws").await,
        3,
        "one subscriber per node"
    );

    let mut outside = redis.client().await;
    assert_eq!(publish(&mut outside, "group:ticker_ws", "hello").await, 3);
    // Not UTF-8: delivered as a binary frame.
    publish(&mut outside, "group:ticker_ws", [0xff, 0x00, 0x01]).await;
    for member in &mut members {
        assert_eq!(member.recv_text().await, "hello");
        assert_eq!(member.next_data().await, Ws::binary(vec![0xff, 0x00, 0x01]));
    }
    // Once every member has both: a marker on each group's own channel.
    publish(&mut outside, "group:ticker_ws", "marker").await;
    publish(&mut outside, "group:other", "marker").await;
    for member in &mut members {
        marker_is_next(member, "marker", "a member").await;
    }
    for other in &mut others {
        quiet_after_marker(other, "marker", "a non-member got hello").await;
    }
}

/// Runs `send` on `from`'s hub (a broadcast of `text`); every client in
/// `targets` reads `text`. Then `from` publishes a marker to each group,
/// on the group's own channel, and waits for Redis to take it; every
/// client reads its group's marker next, and a client outside `targets`
/// then stays quiet (it has no channel in common with every broadcast
/// kind). Waiting for the markers also keeps the steps from overlapping.
async fn step(
    from: &TestServer,
    send: impl FnOnce(&Hub),
    text: &str,
    clients: &mut [(&str, Client)],
    targets: &[&str],
) {
    send(&from.hub);
    for (name, client) in clients.iter_mut() {
        if targets.contains(name) {
            assert_eq!(client.recv_text().await, text, "{name} should get {text:?}");
        }
    }
    let marker = format!("after {text}");
    for g in ["g1", "g2"] {
        from.hub
            .to(group(g))
            .publish(marker.as_str())
            .await
            .expect("the marker reached Redis");
    }
    let checks = clients.iter_mut().map(|(name, client)| {
        let (marker, name) = (marker.clone(), name.to_string());
        let target = targets.contains(&name.as_str());
        async move {
            let what = format!("{name} got something other than the marker after {text:?}");
            if target {
                marker_is_next(client, &marker, &what).await;
            } else {
                quiet_after_marker(client, &marker, &what).await;
            }
        }
    });
    futures_util::future::join_all(checks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broadcast_kind_reaches_exactly_its_sessions_across_nodes() {
    let redis = TestRedis::start().await;
    let nodes = three_nodes(&redis, |b| b).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // One member of g1 and one of g2 on every node: "b1" is B's g1 member.
    let mut clients = vec![
        ("a1", a.connect("g1").await),
        ("a2", a.connect("g2").await),
        ("b1", b.connect("g1").await),
        ("b2", b.connect("g2").await),
        ("c1", c.connect("g1").await),
        ("c2", c.connect("g2").await),
    ];
    wait_subscribed(&[a, b, c], "group:g1").await;
    wait_subscribed(&[a, b, c], "group:g2").await;
    let (a1, b1, b2, c1) = (
        session_of(a, "g1"),
        session_of(b, "g1"),
        session_of(b, "g2"),
        session_of(c, "g1"),
    );
    // Keys for a cluster-wide filter: the admins are a1 and c2.
    let g1 = groupcast::GroupName::new("g1").unwrap();
    let g2 = groupcast::GroupName::new("g2").unwrap();
    a.hub.members(&g1)[0].set("role", "admin");
    b.hub.members(&g1)[0].set("role", "user");
    c.hub.members(&g2)[0].set("role", "admin");

    // A group broadcast from A reaches g1's members on A, B and C.
    step(
        a,
        |hub| {
            hub.to("g1").send("to g1").unwrap();
        },
        "to g1",
        &mut clients,
        &["a1", "b1", "c1"],
    )
    .await;
    // Everyone but b1, sent from A; b1 lives on B (melody's BroadcastOthers).
    step(
        a,
        |hub| {
            hub.all().except(&b1).send("all but b1").unwrap();
        },
        "all but b1",
        &mut clients,
        &["a1", "a2", "b2", "c1", "c2"],
    )
    .await;
    // The same from C, skipping a session of yet another node.
    step(
        c,
        |hub| {
            hub.all().except(&a1).send("all but a1").unwrap();
        },
        "all but a1",
        &mut clients,
        &["a2", "b1", "b2", "c1", "c2"],
    )
    .await;
    // "My group but me", from B.
    step(
        b,
        |hub| {
            hub.to(g1).except(&b1).send("g1 but b1").unwrap();
        },
        "g1 but b1",
        &mut clients,
        &["a1", "c1"],
    )
    .await;
    // Everyone, from B.
    step(
        b,
        |hub| {
            hub.all().send("everyone").unwrap();
        },
        "everyone",
        &mut clients,
        &["a1", "a2", "b1", "b2", "c1", "c2"],
    )
    .await;
    // A key filter travels: the admins live on A and C, the sender is B.
    step(
        b,
        |hub| {
            hub.all()
                .matching(KeyFilter::equals("role", "admin"))
                .send("admins")
                .unwrap();
        },
        "admins",
        &mut clients,
        &["a1", "c2"],
    )
    .await;
    // A list of sessions on other nodes, from A.
    step(
        a,
        |hub| {
            hub.to_sessions([b2.clone(), c1.clone()])
                .send("listed")
                .unwrap();
        },
        "listed",
        &mut clients,
        &["b2", "c1"],
    )
    .await;
    // A closure filter stays local (documented): from A, only A's sessions.
    step(
        a,
        |hub| {
            hub.all().local_filter(|_| true).send("local only").unwrap();
        },
        "local only",
        &mut clients,
        &["a1", "a2"],
    )
    .await;
}
