//! `GET /ws/{*group}`: the admission checks, the upgrade, the session's
//! life in the hub, and what a client's messages mean.
//!
//! The socket itself — writing the queue, reading frames, pings, the
//! close — is `server/connection.rs`: one task per connection. What the
//! client sends comes back here ([`on_client_message`]): security first
//! (rate, refresh, the right to publish), then the handlers or, without
//! one, `Config::client_messages` (forwarding to the sender's group).

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::api::ApiError;
use super::connection::Connection;
use super::upgrade::{Negotiated, NotAnUpgrade, Socket, Upgrade};
use crate::auth::refresh::{RefreshRequest, parse_refresh, refreshed_message};
use crate::auth::{AuthError, Claims, http::client_token};
use crate::config::ClientMessages;
use crate::error::SessionError;
use crate::group::GroupName;
use crate::limits::{ConnectionPermit, LimitRejection, TokenBucket};
use crate::outbound::Compression;
use crate::protocol::{self, Protocol};
use crate::resume::Replay;
use crate::wire::close_code;
use crate::wire::{FrameReader, Incoming, Limits, Role, frame};
use crate::{Hub, HubError, Message, Session};

/// The response header of a WebSocket upgrade that names the node serving it.
pub(crate) const NODE_HEADER: HeaderName = HeaderName::from_static("x-groupcast-node");

/// Validates the group, the Origin and the client's token, then upgrades.
/// Nothing that fails a check reaches the upgrade: the client gets a JSON
/// error with its status (400, 401, 403) instead of a socket.
pub(crate) async fn upgrade(
    State(hub): State<Hub>,
    Path(group): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<Upgrade, NotAnUpgrade>,
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
        // Not a WebSocket request (no upgrade headers, wrong version…):
        // answered in JSON like every other error.
        Err(rejection) => return rejection.into_response(),
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
    // Chosen when the client offers it; otherwise the raw protocol.
    let mut response = ws.accept(
        protocol::V1,
        config.compression,
        move |socket, leftover, negotiated| {
            let joining = Joining {
                group,
                remote,
                claims,
                replay,
            };
            serve(hub, socket, leftover, negotiated, joining, permit)
        },
    );
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
///
/// The arguments are used in place, not moved into locals: everything
/// alive here lives as long as the connection, in every connection's
/// future (see BENCHMARKS.md, W3).
async fn serve(
    hub: Hub,
    socket: Socket,
    leftover: Bytes,
    negotiated: Negotiated,
    joining: Joining,
    _permit: ConnectionPermit,
) {
    let protocol = match negotiated.protocol {
        Some(chosen) if chosen == protocol::V1 => Protocol::V1,
        _ => Protocol::Raw,
    };
    // A v1 client's first frame is its welcome, and a backlog goes before
    // the live messages: both need the queue held until they are in.
    let held = protocol == Protocol::V1 || joining.replay.wants_backlog();
    let remote = joining.remote;
    let session = match hub.join(joining.group, remote, joining.claims, protocol, held) {
        Ok(session) => session,
        Err(error) => {
            Box::pin(refuse(&hub, socket, error)).await;
            return;
        }
    };
    let _tracked = hub.track_connection();
    // From here on, however this task ends (even by a handler's panic),
    // the session leaves the hub.
    let _membership = Membership {
        hub: hub.clone(),
        session: session.clone(),
    };
    tracing::debug!(session = %session.id(), group = %session.group(), ?remote, "connected");
    if let Some(on_connect) = &hub.handlers().connect {
        on_connect(&hub, &session);
    }
    if held {
        // Boxed: the catch-up's state (history reads) is large, and would
        // otherwise stay part of every connection's future, idle or not.
        Box::pin(hub.catch_up(&session, &joining.replay)).await;
    }

    // Built in one expression: no moved-from local stays part of the
    // connection's future.
    let mut connection = Connection::new(
        &hub,
        &session,
        socket,
        reader_for(&hub, leftover, negotiated),
        negotiated.deflate.then(|| Compression {
            threshold: hub.config().compression_threshold,
            compressed: hub.metrics().messages_compressed.clone(),
        }),
    );

    let mut inbox = Inbox::new(&hub);
    if let Err(error) = connection
        .run(|incoming| inbox.on_message(&hub, &session, incoming))
        .await
    {
        report(&hub, &session, &error);
    }
}

/// Another upgrade took the last group slot since this one was admitted
/// (the same answer, as a close frame), or the node is shutting down.
async fn refuse(hub: &Hub, mut socket: Socket, error: HubError) {
    let close = match error {
        HubError::Limit(limit) => {
            frame::close(Some(close_code::TRY_AGAIN_LATER), &limit.to_string())
        }
        _ => frame::close(Some(close_code::GOING_AWAY), "server shutting down"),
    };
    let _ = tokio::time::timeout(hub.config().write_timeout, socket.write_all(&close)).await;
}

/// The reader of a connection's frames, fed what the client sent right
/// behind its upgrade request. The bytes are dropped here: they may hold
/// on to HTTP's whole read buffer.
fn reader_for(hub: &Hub, leftover: Bytes, negotiated: Negotiated) -> FrameReader {
    let config = hub.config();
    let limits = Limits {
        max_message_size: config.max_message_size,
        max_frame_size: config.max_message_size,
    };
    let mut reader = FrameReader::new(Role::Server, limits).with_deflate(negotiated.deflate);
    reader.feed(&leftover);
    reader
}

/// A connection's membership in the hub, ended on drop: the session leaves
/// its group and `on_disconnect` runs — also when the connection task ends
/// by a panic in a handler, so that no session ever outlives its
/// connection in the registry.
struct Membership {
    hub: Hub,
    session: Session,
}

impl Drop for Membership {
    fn drop(&mut self) {
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

/// What a client's messages mean, for one connection.
///
/// Security comes before any handler: everything the client sends counts
/// against its rate (except the pongs it owes us), a refresh message is
/// taken out of the stream (see [`crate::auth::refresh`]), and a data
/// message from a session that may not publish closes it with 1008.
///
/// A text or binary message goes to the application's handler for its
/// kind; without one, `Config::client_messages` decides: forwarded to the
/// sender's group, or ignored. The setting is applied here, by the library,
/// so that what `/api/info` reports is what happens.
struct Inbox {
    bucket: Option<TokenBucket>,
    rate: u32,
    forward_unhandled: bool,
}

impl Inbox {
    fn new(hub: &Hub) -> Self {
        let config = hub.config();
        Inbox {
            bucket: TokenBucket::new(config.max_inbound_rate, config.max_inbound_burst),
            rate: config.max_inbound_rate,
            forward_unhandled: config.client_messages == ClientMessages::Group,
        }
    }

    fn on_message(
        &mut self,
        hub: &Hub,
        session: &Session,
        incoming: Incoming,
    ) -> Result<(), SessionError> {
        let handlers = hub.handlers();
        if !matches!(incoming, Incoming::Pong(_))
            && let Some(bucket) = &mut self.bucket
            && !bucket.take()
        {
            let rate = self.rate;
            hub.count_limit(&LimitRejection::InboundRate { rate });
            return Err(SessionError::RateLimited { rate });
        }
        match incoming {
            Incoming::Text(text) => {
                hub.count_incoming(text.len());
                if try_refresh(hub, session, text.as_str())? {
                    return Ok(());
                }
                may_publish(hub, session)?;
                match &handlers.text {
                    Some(on_text) => on_text(hub, session, text),
                    // The frame's bytes are shared, not copied, into every
                    // member's queue.
                    None if self.forward_unhandled => {
                        forward(hub, session, Message::Text(text));
                    }
                    None => {}
                }
            }
            Incoming::Binary(data) => {
                hub.count_incoming(data.len());
                may_publish(hub, session)?;
                match &handlers.binary {
                    Some(on_binary) => on_binary(hub, session, data),
                    None if self.forward_unhandled => {
                        forward(hub, session, Message::Binary(data));
                    }
                    None => {}
                }
            }
            Incoming::Pong(_) => {
                if let Some(on_pong) = &handlers.pong {
                    on_pong(hub, session);
                }
            }
            // Answered by the connection; closes are its business too.
            Incoming::Ping(_) | Incoming::Close(_) => {}
        }
        Ok(())
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
