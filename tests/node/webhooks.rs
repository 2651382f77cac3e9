//! The webhook sender against a real HTTP receiver on loopback: every
//! event delivered in order and signed; a receiver that fails is retried
//! with the same id; a receiver down for 10 s loses nothing the queue
//! could hold, and what it could not hold is counted, not silently lost.
//! A standalone hub sends its presence transitions.

use std::sync::Arc;
use std::time::Duration;

use groupcast::auth::{
    ClientAuth, GroupPatterns, KeySet, MintRequest, TokenVerifier, VerifyOptions, mint_hs256,
};
use groupcast::metrics::Metrics;
use groupcast::webhooks::{WebhookEvent, WebhookKind, WebhookOptions, Webhooks};
use groupcast::{Config, Hub};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::webhooks::{SECRET, Shared, receiver};
use crate::common::{Client, TestServer, wait_until};

fn event(n: usize) -> WebhookEvent {
    let mut event = WebhookEvent::new(WebhookKind::UserJoined, "hooks/room", "node-w");
    event.sub = Some(format!("user-{n}"));
    event
}

fn subs(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["sub"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_signed_in_order_and_survive_a_receiver_outage_within_the_queue() {
    let seen: Shared = Arc::default();
    let stop = CancellationToken::new();
    let addr = receiver(seen.clone(), None, stop.clone()).await;
    let metrics = Metrics::new();
    let mut options = WebhookOptions::new(format!("http://{addr}/hook").parse().unwrap());
    options.secret = Some(Arc::from(SECRET));
    options.queue = 100;
    options.timeout = Duration::from_secs(2);
    options.retry_min = Duration::from_millis(50);
    options.retry_max = Duration::from_millis(500);
    let hooks = Webhooks::start(options, metrics.webhooks.clone(), CancellationToken::new());
    let counters = metrics.webhooks.clone();

    // Delivered, signed, in order.
    for n in 0..20 {
        assert!(hooks.emit(event(n)));
    }
    wait_until("the receiver has 20 events", || {
        seen.lock().events.len() == 20
    })
    .await;
    let expected: Vec<String> = (0..20).map(|n| format!("user-{n}")).collect();
    assert_eq!(subs(&seen.lock().events), expected);
    assert_eq!(seen.lock().bad_signatures, 0);
    assert_eq!(counters.delivered.get(), 20);

    // A receiver that fails twice: the same event is retried, same id.
    seen.lock().refuse_next = 2;
    assert!(hooks.emit(event(20)));
    wait_until("the retried event is taken", || {
        counters.delivered.get() == 21
    })
    .await;
    let ids: Vec<Value> = seen.lock().events[20..]
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids.len(), 3, "two refusals, then taken");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "a retry has the same id"
    );
    assert_eq!(counters.attempt_failures.get(), 2);

    // The receiver down for 10 s: 150 events emitted meanwhile, 100 fit in
    // the queue (one more may be in flight), the rest are counted.
    stop.cancel();
    let down = tokio::time::Instant::now();
    let mut accepted = Vec::new();
    for n in 100..250 {
        if hooks.emit(event(n)) {
            accepted.push(format!("user-{n}"));
        }
    }
    assert!(
        (100..=101).contains(&accepted.len()),
        "{} queued",
        accepted.len()
    );
    assert_eq!(counters.dropped.get() as usize, 150 - accepted.len());
    tokio::time::sleep_until(down + Duration::from_secs(10)).await;
    let back = CancellationToken::new();
    receiver(seen.clone(), Some(addr), back.clone()).await;
    wait_until(
        "every queued event is taken once the receiver is back",
        || counters.delivered.get() == 21 + accepted.len() as u64,
    )
    .await;
    let after: Vec<Value> = seen.lock().events[23..].to_vec();
    // Each accepted event arrived, in order; an event seen twice (its
    // answer lost when the receiver went down) has the same id.
    let mut firsts = Vec::new();
    let mut ids = std::collections::HashMap::new();
    for e in &after {
        let sub = e["sub"].as_str().unwrap().to_string();
        if let Some(id) = ids.insert(sub.clone(), e["id"].clone()) {
            assert_eq!(id, e["id"], "{sub} arrived twice with different ids");
        } else {
            firsts.push(sub);
        }
    }
    assert_eq!(firsts, accepted, "nothing queued was lost, and in order");
    assert_eq!(counters.queued.get(), 0);
    back.cancel();
}

#[tokio::test]
async fn webhooks_off_or_not_asked_for_emit_nothing() {
    let off = Webhooks::off();
    assert!(!off.wants(WebhookKind::GroupOccupied));
    assert!(!off.emit(event(1)));
    let metrics = Metrics::new();
    let hooks = Webhooks::start(
        WebhookOptions::new("http://127.0.0.1:9/hook".parse().unwrap()),
        metrics.webhooks.clone(),
        CancellationToken::new(),
    );
    assert!(hooks.wants(WebhookKind::UserJoined));
    assert!(
        !hooks.wants(WebhookKind::SessionJoined),
        "connection events only when asked"
    );
    let mut connection = event(2);
    connection.kind = WebhookKind::SessionJoined;
    assert!(!hooks.emit(connection));
    assert_eq!(
        "user_left".parse::<WebhookKind>(),
        Ok(WebhookKind::UserLeft)
    );
    assert!(
        "user_gone"
            .parse::<WebhookKind>()
            .unwrap_err()
            .contains("user_left")
    );
}

/// A standalone hub with presence and webhooks (the library API,
/// `HubBuilder::webhooks`): the node's own joins and leaves make the
/// transitions, a comeback within the grace sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_hub_sends_its_presence_transitions_after_the_grace() {
    const JWT: &[u8] = b"standalone-webhook-secret-of-32-bytes-or-more";
    let seen: Shared = Arc::default();
    let addr = receiver(seen.clone(), None, CancellationToken::new()).await;
    let mut options = WebhookOptions::new(format!("http://{addr}/hook").parse().unwrap());
    options.secret = Some(Arc::from(SECRET));
    let mut keys = KeySet::new();
    keys.add_secret(None, JWT).expect("a secret");
    let hub = Hub::builder()
        .client_auth(ClientAuth::with_tokens(TokenVerifier::new(
            keys,
            VerifyOptions::default(),
        )))
        .config(Config {
            presence: GroupPatterns::parse(["room"]).expect("patterns"),
            presence_grace: Duration::from_millis(500),
            ..Config::default()
        })
        .webhooks(options)
        .build()
        .expect("a hub");
    let server = TestServer::start(hub).await;
    let url = |sub: &str| {
        let token = mint_hs256(JWT, &MintRequest::new(sub, ["room"])).expect("a token");
        format!("{}?token={token}", server.ws_url("room"))
    };
    let types = |seen: &Shared| -> Vec<String> {
        seen.lock()
            .events
            .iter()
            .map(|e| format!("{}:{}", e["type"], e["sub"]))
            .collect()
    };

    let first = Client::connect(&url("alice")).await;
    wait_until("occupied and joined", || seen.lock().events.len() == 2).await;
    // A reload: gone and back within the grace.
    drop(first);
    wait_until("the leave is seen", || {
        server.hub.member_count(&"room".parse().unwrap()) == 0
    })
    .await;
    let second = Client::connect(&url("alice")).await;
    wait_until("the comeback is seen", || {
        server.hub.member_count(&"room".parse().unwrap()) == 1
    })
    .await;
    drop(second);
    wait_until("left and vacated", || seen.lock().events.len() == 4).await;
    assert_eq!(
        types(&seen),
        [
            "\"group_occupied\":null",
            "\"user_joined\":\"alice\"",
            "\"user_left\":\"alice\"",
            "\"group_vacated\":null"
        ]
    );
}
