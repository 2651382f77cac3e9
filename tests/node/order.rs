//! Order: every member sees each publisher's messages in the order they
//! were sent — on one node with three publishers at once (the library,
//! the HTTP API, a client), and across three nodes over a real Redis with
//! two publishing nodes. 1,000 messages per publisher.
//!
//! The cluster test starts its own Redis (`REDIS_IMAGE=local/redis:7`
//! where no registry is reachable).

use std::collections::HashMap;

use crate::common::http::post_text_with;
use crate::common::multinode::{
    assert_bursts_in_order, members_on_every_node, publish_bursts_from_a_and_b,
};
use crate::common::redis::{TestRedis, three_nodes};
use crate::common::{TestServer, WAIT, forwarding};
use futures_util::{SinkExt, StreamExt};
use groupcast::{Config, Hub};
use tokio_tungstenite::tungstenite::Message as Ws;

/// Three publishers at once — the library, the HTTP API and a client — each
/// send 1,000 messages to one group; every member sees each publisher's
/// messages in the order they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_publisher_order_holds_over_1000_messages_on_one_node() {
    const N: usize = 1000;
    const PUBLISHERS: [&str; 3] = ["hub", "api", "client"];
    const TOTAL: usize = PUBLISHERS.len() * N;
    let config = Config {
        // Room for a reader that falls behind all three bursts at once.
        queue_len: 4 * N,
        // The client's burst of 1,000 messages is the point here.
        max_inbound_rate: 0,
        ..Config::default()
    };
    let hub = forwarding(Hub::builder().config(config)).build().unwrap();
    let server = TestServer::start(hub).await;

    let sender = server.connect("order").await;
    let (mut sink, sender_stream) = sender.ws.split();
    let mut checks = vec![check_order(
        sender_stream,
        "the sending client".into(),
        TOTAL,
    )];
    for i in 0..3 {
        let member = server.connect("order").await;
        checks.push(check_order(member.ws, format!("member {i}"), TOTAL));
    }

    let from_hub = {
        let hub = server.hub.clone();
        tokio::spawn(async move {
            for i in 0..N {
                hub.to("order").send(format!("hub {i}")).unwrap();
            }
        })
    };
    let from_api = {
        let url = server.http_url("/api/groups/order/messages");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..N {
                let status = post_text_with(&http, &url, format!("api {i}"))
                    .await
                    .status();
                assert!(status.is_success());
            }
        })
    };
    let from_client = tokio::spawn(async move {
        for i in 0..N {
            sink.send(Ws::text(format!("client {i}"))).await.unwrap();
        }
        sink
    });
    from_hub.await.unwrap();
    from_api.await.unwrap();
    let _sink = from_client.await.unwrap();
    for check in checks {
        let counts = check.await.unwrap();
        for publisher in PUBLISHERS {
            assert_eq!(counts.get(publisher), Some(&N), "{publisher}");
        }
    }
    assert_eq!(server.hub.metrics().queue_full_closes.get(), 0);
}

/// Reads `total` text frames `"<publisher> <seq>"` in a task and checks
/// that each publisher's numbers come in order; returns the counts.
fn check_order<S>(
    mut stream: S,
    who: String,
    total: usize,
) -> tokio::task::JoinHandle<HashMap<String, usize>>
where
    S: futures_util::Stream<Item = Result<Ws, tokio_tungstenite::tungstenite::Error>>
        + Unpin
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let mut next_seq: HashMap<String, usize> = HashMap::new();
        let mut read = 0;
        while read < total {
            let frame = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap_or_else(|_| panic!("{who}: timed out after {read} messages"))
                .unwrap_or_else(|| panic!("{who}: stream ended"))
                .unwrap_or_else(|e| panic!("{who}: {e}"));
            let text = match frame {
                Ws::Ping(_) | Ws::Pong(_) => continue,
                Ws::Text(text) => text,
                other => panic!("{who}: expected text, got {other:?}"),
            };
            let (publisher, seq) = text.split_once(' ').expect("publisher seq");
            let expected = next_seq.entry(publisher.to_string()).or_default();
            assert_eq!(
                seq.parse::<usize>().unwrap(),
                *expected,
                "{who}: {publisher}"
            );
            *expected += 1;
            read += 1;
        }
        next_seq
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_publisher_order_holds_over_1000_messages_across_nodes() {
    const N: usize = 1000;
    let redis = TestRedis::start().await;
    // Room for two publishers' bursts in each session's queue.
    let config = Config {
        queue_len: 4 * N,
        ..Config::default()
    };
    let nodes = three_nodes(&redis, |b| b.config(config.clone())).await;
    let mut clients = members_on_every_node(&nodes, "ordered").await;

    // Two publishers at once, on A and on B.
    publish_bursts_from_a_and_b(&nodes, &["ordered"], N).await;
    for (node, client) in clients.iter_mut().enumerate() {
        assert_bursts_in_order(client, N, &format!("client on node {node}")).await;
    }
}
