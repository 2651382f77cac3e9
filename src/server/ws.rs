//! `GET /ws/{*group}`: the upgrade, then one reader and one writer per
//! connection.
//!
//! The reader (this connection's own task) reads client frames, runs the
//! handlers (or, without one, applies `Config::client_messages`: forwarding
//! to the sender's group), and enforces the pong wait. The writer (a spawned task) drains
//! the session's queue in batches — one flush per batch — and pings. Fan-out
//! only ever touches the queue, so a slow socket slows down no one but its
//! own writer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use axum::Extension;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout, timeout_at};

use super::api::ApiError;
use crate::auth::refresh::{RefreshRequest, parse_refresh, refreshed_message};
use crate::auth::{AuthError, Claims, http::client_token};
use crate::config::ClientMessages;
use crate::error::SessionError;
use crate::group::GroupName;
use crate::limits::{ConnectionPermit, LimitRejection, TokenBucket};
use crate::outbound::close_code;
use crate::protocol::{self, Offsets, Protocol};
use crate::resume::Replay;
use crate::{Hub, HubError, Message, Session};

/// The response header of a WebSocket upgrade that names the node serving it.
pub(crate) const NODE_HEADER: HeaderName = HeaderName::from_static("x-groupcast-node");

/// After sending a close frame, how long to wait for the client's reply.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Validates the group, the Origin and the client's token, then upgrades.
/// Nothing that fails a check reaches the upgrade: the client gets a JSON
/// error with its status (400, 401, 403) instead of a socket.
pub(crate) async fn upgrade(
    State(hub): State<Hub>,
    Path(group): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let group = match GroupName::new(&group) {
        Ok(group) => group,
        Err(error) => return ApiError::bad_group(error).into_response(),
    };
    // Replay parameters before anything else costs: a bad one is a 400.
    let replay = match Replay::from_query(query.as_deref()) {
        Ok(replay) => replay,
        Err(error) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_query", error.to_string())
                .into_response();
        }
    };
    let claims = match admit(&hub, &group, &headers, query.as_deref()) {
        Ok(claims) => claims,
        Err(error) => {
            hub.metrics().count_auth_rejection(error.code());
            tracing::debug!(%group, code = error.code(), %error, "upgrade refused");
            return error.into_response();
        }
    };
    if hub.is_shutting_down() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; connect to another node",
        )
        .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            // Not a WebSocket request (no upgrade headers, wrong version…):
            // answer in JSON like every other error.
            return ApiError::new(
                rejection.status(),
                "not_a_websocket_request",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    let remote = connect_info.map(|Extension(ConnectInfo(addr))| addr);
    // The limits (see crate::limits): the slot is held until the
    // connection ends, so upgrades in flight count too.
    let permit = match hub.admit_connection(&group, remote.map(|addr| addr.ip())) {
        Ok(permit) => permit,
        Err(limit) => return limit_response(limit),
    };
    let config = hub.config();
    // Which node took the connection: behind a load balancer, this is how
    // a client (or a test) tells the replicas apart.
    let node = HeaderValue::from_str(hub.node_id()).ok();
    let mut response = ws
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_message_size)
        // Chosen when the client offers it; otherwise the raw protocol.
        .protocols([protocol::V1])
        .on_upgrade(move |socket| {
            let joining = Joining {
                group,
                remote,
                claims,
                replay,
            };
            serve(hub, socket, joining, permit)
        });
    if let Some(node) = node {
        response.headers_mut().insert(NODE_HEADER, node);
    }
    response
}

/// A limit's answer before the upgrade: 503 when the node is full (another
/// node may have room), 429 when this address holds too many connections.
fn limit_response(limit: LimitRejection) -> Response {
    let (status, code) = match limit {
        LimitRejection::ConnectionsPerIp { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections_from_ip",
        ),
        LimitRejection::Groups { .. } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_groups"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "node_full"),
    };
    let mut response = ApiError::new(status, code, limit.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// `GET /ws/`: the catch-all route never matches an empty group, so the
/// empty name gets its own route and the same 400 as any other bad name.
pub(crate) async fn no_group() -> Response {
    ApiError::bad_group(crate::group::GroupNameError::Empty).into_response()
}

/// The security checks of an upgrade: Origin, then token and group (see
/// [`crate::auth::policy`]).
fn admit(
    hub: &Hub,
    group: &GroupName,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Claims, AuthError> {
    let auth = hub.client_auth();
    auth.check_origin(headers.get(header::ORIGIN))?;
    let token = client_token(headers, query)?;
    auth.admit(group, token.as_deref())
}

/// Who is joining, as the upgrade admitted them.
struct Joining {
    group: GroupName,
    remote: Option<SocketAddr>,
    claims: Claims,
    replay: Replay,
}

/// Runs one connection from join to leave.
async fn serve(hub: Hub, socket: WebSocket, joining: Joining, _permit: ConnectionPermit) {
    let protocol = match socket.protocol() {
        Some(chosen) if chosen.as_bytes() == protocol::V1.as_bytes() => Protocol::V1,
        _ => Protocol::Raw,
    };
    let Joining {
        group,
        remote,
        claims,
        replay,
    } = joining;
    // A v1 client's first frame is its welcome, and a backlog goes before
    // the live messages: both need the queue held until they are in.
    let held = protocol == Protocol::V1 || replay.wants_backlog();
    let session = match hub.join(group, remote, claims, protocol, held) {
        Ok(session) => session,
        Err(HubError::Limit(limit)) => {
            // Another upgrade took the last group slot since this one was
            // admitted: the same answer, as a close frame.
            let mut socket = socket;
            let _ = socket
                .send(close_frame(close_code::TRY_AGAIN_LATER, &limit.to_string()))
                .await;
            return;
        }
        Err(HubError::ShuttingDown) | Err(_) => {
            let mut socket = socket;
            let _ = socket
                .send(close_frame(close_code::GOING_AWAY, "server shutting down"))
                .await;
            return;
        }
    };
    let _tracked = hub.track_connection();
    let (sink, stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(hub.clone(), session.clone(), sink));
    // From here on, however this task ends (even by a handler's panic),
    // the session leaves the hub and its writer stops.
    let _membership = Membership {
        hub: hub.clone(),
        session: session.clone(),
        writer: writer.abort_handle(),
    };
    tracing::debug!(session = %session.id(), group = %session.group(), ?remote, "connected");
    if let Some(on_connect) = &hub.handlers().connect {
        on_connect(&hub, &session);
    }
    if held {
        hub.catch_up(&session, &replay).await;
    }

    let reader = read_loop(&hub, &session, stream);
    tokio::pin!(reader);

    tokio::select! {
        ended = &mut reader => {
            let mut writer_done = false;
            if let Err(error) = ended {
                report(&hub, &session, &error);
                if let Some(code) = close_code_for(&error) {
                    // Let the writer send the close frame, then stop.
                    session.close(code, error.to_string());
                    writer_done = timeout(hub.config().write_timeout, &mut writer)
                        .await
                        .is_ok();
                }
            }
            // A JoinHandle must not be polled again once it has completed.
            if !writer_done {
                writer.abort();
                let _ = writer.await;
            }
        }
        written = &mut writer => {
            // The writer sent a close frame or failed: give the client a
            // moment to answer the close, then drop the connection.
            if let Ok(Err(error)) = written {
                report(&hub, &session, &error);
            } else {
                let _ = timeout(CLOSE_GRACE, &mut reader).await;
            }
        }
    }
}

/// A connection's membership in the hub, ended on drop: the session leaves
/// its group, the writer stops and `on_disconnect` runs — also when the
/// connection task ends by a panic in a handler, so that no session ever
/// outlives its connection in the registry.
struct Membership {
    hub: Hub,
    session: Session,
    /// The session's writer task, stopped when the connection ends.
    writer: AbortHandle,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.writer.abort();
        self.hub.leave(&self.session);
        tracing::debug!(session = %self.session.id(), group = %self.session.group(), "disconnected");
        // A handler that panics while we are already unwinding would abort
        // the process: skip it then.
        if !std::thread::panicking()
            && let Some(on_disconnect) = &self.hub.handlers().disconnect
        {
            on_disconnect(&self.hub, &self.session);
        }
    }
}

fn report(hub: &Hub, session: &Session, error: &SessionError) {
    tracing::debug!(session = %session.id(), %error, "connection error");
    if let Some(on_error) = &hub.handlers().error {
        on_error(hub, session, error);
    }
}

/// The close code a reader error deserves, if the socket can still take one.
fn close_code_for(error: &SessionError) -> Option<u16> {
    match error {
        SessionError::MessageTooBig { .. } => Some(close_code::TOO_BIG),
        SessionError::InvalidUtf8 => Some(close_code::INVALID_PAYLOAD),
        SessionError::TokenExpired => Some(close_code::TOKEN_EXPIRED),
        SessionError::PublishNotAllowed => Some(close_code::POLICY),
        SessionError::RefreshRejected(_) => Some(close_code::REFRESH_REJECTED),
        SessionError::RateLimited { .. } => Some(close_code::POLICY),
        _ => None,
    }
}

fn close_frame(code: u16, reason: &str) -> WsMessage {
    // A close reason may be at most 123 bytes; cut at a char boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}

/// Reads until the client closes, fails, goes silent past the pong wait,
/// or its token expires.
///
/// Security lives here too, before any handler runs: a refresh message is
/// taken out of the stream (see [`crate::auth::refresh`]), and a data frame
/// from a session that may not publish closes it with 1008.
///
/// A text or binary message goes to the application's handler for its
/// kind; without one, `Config::client_messages` decides: forwarded to the
/// sender's group, or ignored. The setting is applied here, by the library,
/// so that what `/api/info` reports is what happens.
async fn read_loop(
    hub: &Hub,
    session: &Session,
    mut stream: SplitStream<WebSocket>,
) -> Result<(), SessionError> {
    let pong_wait = hub.config().pong_wait;
    let handlers = hub.handlers();
    let forward_unhandled = hub.config().client_messages == ClientMessages::Group;
    let (rate, burst) = (
        hub.config().max_inbound_rate,
        hub.config().max_inbound_burst,
    );
    let mut bucket = TokenBucket::new(rate, burst);
    // The keepalive timer lives here, where frames arrive rarely, rather
    // than in the writer, which wakes for every message.
    let ping_period = hub.config().ping_period;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_period, ping_period);
    let mut last_heard = Instant::now();
    loop {
        let pong_deadline = last_heard + pong_wait;
        // Recomputed every frame: a refresh moves (or removes) the expiry.
        let expiry = session
            .claims()
            .time_left()
            .map(|left| Instant::now() + left);
        let deadline = expiry.map_or(pong_deadline, |at| at.min(pong_deadline));
        let read = tokio::select! {
            read = timeout_at(deadline, stream.next()) => read,
            _ = ping.tick() => {
                session.outbound().request_ping();
                continue;
            }
        };
        let frame = match read {
            Err(_) if expiry.is_some_and(|at| at <= pong_deadline) => {
                hub.metrics().count_auth_rejection("token_expired");
                return Err(SessionError::TokenExpired);
            }
            Err(_) => return Err(SessionError::PongTimeout(pong_wait)),
            Ok(None) => return Ok(()),
            Ok(Some(Err(error))) => {
                let error = classify_read_error(error, hub);
                if let SessionError::MessageTooBig { limit } = error {
                    hub.count_limit(&LimitRejection::MessageSize { limit });
                }
                return Err(error);
            }
            Ok(Some(Ok(frame))) => frame,
        };
        last_heard = Instant::now();
        // Everything the client sends counts against its rate, except the
        // pongs it owes us and its close.
        if matches!(
            frame,
            WsMessage::Text(_) | WsMessage::Binary(_) | WsMessage::Ping(_)
        ) && let Some(bucket) = &mut bucket
            && !bucket.take()
        {
            hub.count_limit(&LimitRejection::InboundRate { rate });
            return Err(SessionError::RateLimited { rate });
        }
        match frame {
            WsMessage::Text(text) => {
                hub.count_incoming(text.len());
                if try_refresh(hub, session, text.as_str())? {
                    continue;
                }
                may_publish(hub, session)?;
                match &handlers.text {
                    Some(on_text) => on_text(hub, session, text),
                    // The frame's bytes are shared, not copied, into every
                    // member's queue.
                    None if forward_unhandled => forward(hub, session, Message::Text(text)),
                    None => {}
                }
            }
            WsMessage::Binary(data) => {
                hub.count_incoming(data.len());
                may_publish(hub, session)?;
                match &handlers.binary {
                    Some(on_binary) => on_binary(hub, session, data),
                    None if forward_unhandled => forward(hub, session, Message::Binary(data)),
                    None => {}
                }
            }
            WsMessage::Pong(_) => {
                if let Some(on_pong) = &handlers.pong {
                    on_pong(hub, session);
                }
            }
            WsMessage::Ping(_) => {} // tungstenite answers pings itself
            WsMessage::Close(_) => return Ok(()),
        }
    }
}

/// `ClientMessages::Group`: sends a client's message to its own group (the
/// sender included, as in melody's chat). A failure (the hub shutting
/// down, the bus refusing) costs this one message, not the connection.
fn forward(hub: &Hub, session: &Session, message: Message) {
    if let Err(error) = hub.to(session.group()).send(message) {
        tracing::warn!(session = %session.id(), %error, "could not forward a client message");
    }
}

/// Handles `text` if it is a refresh request of a token-admitted session:
/// `Ok(true)` when it was one and succeeded, an error (closing 4003) when it
/// was one and failed, `Ok(false)` when it is an ordinary message.
fn try_refresh(hub: &Hub, session: &Session, text: &str) -> Result<bool, SessionError> {
    let current = session.claims();
    if current.admission != crate::auth::Admission::Token {
        return Ok(false);
    }
    let Some(request) = parse_refresh(text) else {
        return Ok(false);
    };
    let renewed = match request {
        RefreshRequest::Token(token) => {
            hub.client_auth().refresh(&current, session.group(), &token)
        }
        RefreshRequest::Malformed => Err(AuthError::MalformedToken(
            "a refresh needs {\"type\":\"refresh\",\"token\":\"<token>\"}".into(),
        )),
    };
    match renewed {
        Ok(claims) => {
            tracing::debug!(session = %session.id(), exp = ?claims.exp, "token refreshed");
            let ack = refreshed_message(&claims);
            session.set_claims(claims);
            session.send(crate::Message::text(ack));
            Ok(true)
        }
        Err(error) => {
            hub.metrics().count_auth_rejection("refresh_rejected");
            Err(SessionError::RefreshRejected(error.to_string()))
        }
    }
}

/// Whether the session may send messages; closing 1008 if not.
fn may_publish(hub: &Hub, session: &Session) -> Result<(), SessionError> {
    if session.claims().publish {
        Ok(())
    } else {
        hub.metrics().count_auth_rejection("publish_not_allowed");
        Err(SessionError::PublishNotAllowed)
    }
}

fn classify_read_error(error: axum::Error, hub: &Hub) -> SessionError {
    use tungstenite::error::{CapacityError, Error as WsError};
    let inner = error.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
            SessionError::MessageTooBig {
                limit: hub.config().max_message_size,
            }
        }
        Some(WsError::Utf8(_)) => SessionError::InvalidUtf8,
        _ => SessionError::Read(inner.to_string()),
    }
}

/// Drains the session's queue into the socket, one flush per batch, and
/// pings every `ping_period`. Ends after sending a close frame.
async fn write_loop(
    hub: Hub,
    session: Session,
    mut sink: SplitSink<WebSocket, WsMessage>,
) -> Result<(), SessionError> {
    let write_timeout = hub.config().write_timeout;
    let protocol = session.protocol();
    let mut offsets = Offsets::default();
    // One thing to wait for: the queue (pings come through it too, asked
    // for by the reader). No other branch is polled per message; and no
    // stop signal: when the connection ends, `serve` aborts this task.
    loop {
        let batch = session.outbound().next_batch().await;
        let close = batch.close;
        let write = async {
            if batch.ping {
                sink.feed(WsMessage::Ping(Bytes::new())).await?;
            }
            for frame in batch.frames {
                if frame
                    .stamp
                    .as_ref()
                    .is_some_and(|stamp| !offsets.is_new(stamp))
                {
                    continue; // the backlog already had it
                }
                sink.feed(protocol::encode(protocol, &frame).into_ws())
                    .await?;
            }
            if let Some(close) = &close {
                sink.feed(close_frame(close.code, &close.reason)).await?;
            }
            sink.flush().await
        };
        if let Err(error) = within(write_timeout, write).await {
            // Counted here, where it happens, whichever side of `serve`
            // ends up observing the writer's end.
            if matches!(error, SessionError::WriteTimeout(_)) {
                hub.metrics().write_timeouts.inc();
            }
            return Err(error);
        }
        if close.is_some() {
            return Ok(());
        }
    }
}

/// Runs a write to the client, failing it if it takes longer than
/// `limit`. Almost every write completes on its first poll (the socket's
/// send buffer has room), so the timer — an insertion into and a removal
/// from the runtime's timer wheel — is only armed when it does not.
async fn within<E: std::fmt::Display>(
    limit: Duration,
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), SessionError> {
    let mut write = pin!(write);
    let result = match futures_util::poll!(write.as_mut()) {
        Poll::Ready(result) => result,
        Poll::Pending => timeout(limit, write)
            .await
            .map_err(|_| SessionError::WriteTimeout(limit))?,
    };
    result.map_err(|error| SessionError::Write(error.to_string()))
}
