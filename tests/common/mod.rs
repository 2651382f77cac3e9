//! Shared test harness: in-process servers on loopback and real WebSocket
//! clients (tokio-tungstenite).
//!
//! Rule of the house: tests wait on conditions with timeouts, never on bare
//! sleeps. To show that a client did *not* receive something, use
//! [`silence`] (a marker on the client's own channel, and where needed a
//! bounded quiet window).
//!
//! * [`browser`] — headless Chromium through chromedriver (fantoccini);
//! * [`node`] — the real `groupcast` binary as a child process;
//! * [`http`] — JSON GET/POST with the status, Prometheus samples;
//! * [`redis`] — a Redis in a container (testcontainers);
//! * [`cluster`] — a Redis Cluster in one container;
//! * [`multinode`] — checks several in-process nodes share (members on
//!   every node, bursts from two nodes and their order, failover probes);
//! * [`frames`] — WebSocket frames written by hand, as a client sends them;
//! * [`sentinel`] — a primary, a replica and three Sentinels in one container;
//! * [`silence`] — showing that something did *not* arrive.
//!
//! Each test binary (`tests/<binary>/main.rs`) includes this module with
//! `#[path = "../common/mod.rs"] mod common;`; its files use it as
//! `crate::common`. No binary uses all of it, hence the `allow` below.

#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod frames;
pub mod http;
pub mod multinode;
pub mod node;
pub mod redis;
pub mod sentinel;
pub mod silence;
pub mod sse;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use groupcast::server::{self, ServerOptions};
use groupcast::{Hub, HubBuilder, Message as GcMessage, SessionId};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The nodes' logs (groupcast at debug) in the test's output, when
/// `GROUPCAST_TEST_LOG` is set: for a test that failed once and must be
/// caught in the act (`GROUPCAST_TEST_LOG=1 scripts/repeat-under-load.sh ...`).
pub fn logs_when_asked() {
    if std::env::var_os("GROUPCAST_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("groupcast=debug")
            .with_test_writer()
            .try_init();
    }
}

/// The handlers `main.rs` installs for `--client-messages group`: what a
/// client sends (text or binary) goes to its whole group, itself included.
pub fn forwarding(builder: HubBuilder) -> HubBuilder {
    builder
        .on_text(|hub, session, text| {
            let _ = hub.to(session.group()).send(text);
        })
        .on_binary(|hub, session, data| {
            let _ = hub.to(session.group()).send(GcMessage::Binary(data));
        })
}

/// A hub whose `on_connect` tells each client its session id (`id:<id>`),
/// so tests can address sessions the way an application would.
pub fn announcing_ids() -> HubBuilder {
    Hub::builder().on_connect(|_hub, session| {
        session.send(format!("id:{}", session.id()));
    })
}

/// A connected client and the id the server announced for it.
pub struct Peer {
    pub client: Client,
    pub id: SessionId,
}

/// Connects to `group` on a hub that announces ids ([`announcing_ids`]).
pub async fn connect_peer(server: &TestServer, group: &str) -> Peer {
    let mut client = server.connect(group).await;
    let hello = client.recv_text().await;
    let id = hello
        .strip_prefix("id:")
        .unwrap_or_else(|| panic!("expected the id announcement, got {hello:?}"))
        .into();
    Peer { client, id }
}

/// A hub served on an ephemeral loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Serves `hub` with the full router and default options.
    pub async fn start(hub: Hub) -> TestServer {
        TestServer::start_with(hub, ServerOptions::default()).await
    }

    /// Serves `hub` with the full router and `options`.
    pub async fn start_with(hub: Hub, options: ServerOptions) -> TestServer {
        TestServer::start_serving(hub, options, server::ServeOptions::default()).await
    }

    /// Serves `hub` with the full router, `options`, and `serve` options.
    pub async fn start_serving(
        hub: Hub,
        options: ServerOptions,
        serve: server::ServeOptions,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let app = server::router(hub.clone(), options);
        let task = tokio::spawn(async move {
            let _ = server::serve(listener, app, serve, std::future::pending()).await;
        });
        TestServer { addr, hub, task }
    }

    pub fn ws_url(&self, group: &str) -> String {
        format!("ws://{}/ws/{}", self.addr, group)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `groupcast_limit_rejections_total{limit="<limit>"}` from `/metrics`
    /// (0 while nothing was rejected).
    pub async fn limit_rejections(&self, limit: &str) -> u64 {
        let text = http::get_text(&self.http_url("/metrics")).await;
        let prefix = format!("groupcast_limit_rejections_total{{limit=\"{limit}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |n| n.trim().parse().expect("a counter value"))
    }

    /// Waits until `/readyz` answers `status` (200: ready, 503: not).
    pub async fn wait_readyz(&self, status: u16) {
        let url = self.http_url("/readyz");
        wait_until_async(&format!("{url} answers {status}"), || async {
            http::status(&url).await == status
        })
        .await;
    }

    /// Connects a client to `group` and waits until the hub has registered it.
    pub async fn connect(&self, group: &str) -> Client {
        self.connect_admitted(&self.ws_url(group), &[]).await
    }

    /// Upgrades at `url` (one of this server's WebSocket URLs, with any
    /// query) with extra request `headers`, expecting to be admitted, and
    /// waits until the hub has registered the session.
    pub async fn connect_admitted(&self, url: &str, headers: &[(&str, &str)]) -> Client {
        let before = self.hub.metrics().connections_opened.get();
        let client = Client::try_connect(url, headers)
            .await
            .unwrap_or_else(|refused| panic!("expected to connect to {url}: {refused:?}"));
        wait_until("the hub registers the session", || {
            self.hub.metrics().connections_opened.get() > before
        })
        .await;
        client
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real WebSocket client over loopback.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("timed out connecting to {url}"))
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Client { ws }
    }

    /// Like [`Client::connect`], also returning the server's upgrade
    /// response (its headers, e.g. `X-Groupcast-Node`).
    pub async fn connect_with_response(
        url: &str,
    ) -> (
        Client,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ) {
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("timed out connecting to {url}"))
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        (Client { ws }, response)
    }

    /// Tries to upgrade at `url` with extra request `headers`; the client,
    /// or the server's refusal (status, JSON body, headers).
    pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, Refused> {
        let mut request = url.into_client_request().expect("a ws url");
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        let connected = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .unwrap_or_else(|_| panic!("timed out connecting to {url}"));
        match connected {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_deref()
                    .filter(|b| !b.is_empty())
                    .map(|b| serde_json::from_slice(b).expect("a JSON error body"))
                    .unwrap_or(Value::Null),
                headers: response.headers().clone(),
            }),
            Err(other) => panic!("connecting to {url}: {other}"),
        }
    }

    /// Expects the upgrade at `url` to be refused; the refusal.
    pub async fn refused(url: &str) -> Refused {
        match Client::try_connect(url, &[]).await {
            Ok(_) => panic!("expected {url} to be refused, but the upgrade succeeded"),
            Err(refused) => refused,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send text");
    }

    /// The next frame of any kind (pings and close frames included);
    /// panics after [`WAIT`], or when the connection ends or fails first.
    pub async fn next_frame(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection ended while waiting for a frame")
            .expect("websocket error while waiting for a frame")
    }

    /// The next data frame (text or binary), skipping pings and pongs.
    pub async fn next_data(&mut self) -> Message {
        loop {
            match self.next_frame().await {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => return other,
            }
        }
    }

    /// The next text frame; fails on anything else.
    pub async fn recv_text(&mut self) -> String {
        match self.next_data().await {
            Message::Text(t) => t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns its close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for the server to close");
            match frame {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Expects the close code `code` from the server.
    pub async fn expect_close_code(&mut self, code: u16) -> String {
        let frame = self
            .expect_close()
            .await
            .expect("server closed without a close frame");
        assert_eq!(
            u16::from(frame.code),
            code,
            "close reason: {}",
            frame.reason
        );
        frame.reason.to_string()
    }
}

/// An upgrade the server refused: its status, JSON body and headers.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Refused {
    /// The value of the response header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header").to_string())
    }
}

/// Polls `condition` every 10 ms until it holds; panics after [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`wait_until`] for an async condition.
pub async fn wait_until_async<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_async_within(what, WAIT, condition).await;
}

/// Like [`wait_until_async`], with its own limit: for what this suite does
/// not control the speed of (Docker's port proxy passing on a close).
pub async fn wait_until_async_within<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
