//! A webhook receiver for tests: a real HTTP server on loopback that
//! checks each request's signature and keeps the events it took.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use groupcast::webhooks::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SECRET: &[u8] = b"webhook-test-secret";

/// What the receiver saw: every request's event (signature checked), and
/// how many requests it should still refuse with a 500.
#[derive(Default)]
pub struct Received {
    pub events: Vec<Value>,
    pub refuse_next: usize,
    pub bad_signatures: usize,
}

pub type Shared = Arc<Mutex<Received>>;

async fn take(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let timestamp: u64 = header(TIMESTAMP_HEADER).parse().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut seen = seen.lock();
    if !signature::verify(SECRET, timestamp, &body, header(SIGNATURE_HEADER), now, 300) {
        seen.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let event: Value = serde_json::from_slice(&body).expect("a JSON event");
    assert_eq!(header("x-groupcast-id"), event["id"]);
    assert_eq!(header("x-groupcast-event"), event["type"]);
    seen.events.push(event);
    if seen.refuse_next > 0 {
        seen.refuse_next -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

/// A receiver on `addr` (a free port when `None`) until `stop`.
pub async fn receiver(
    seen: Shared,
    addr: Option<SocketAddr>,
    stop: CancellationToken,
) -> SocketAddr {
    let listener = TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(take)).with_state(seen);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    addr
}
