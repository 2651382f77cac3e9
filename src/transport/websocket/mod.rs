//! The WebSocket transport (RFC 6455): `GET /ws/{*group}`, and `GET /ws`
//! for a `groupcast.v1` connection that only subscribes.
//!
//! What is the WebSocket's own: the upgrade handshake (`upgrade.rs`),
//! reading frames and answering pings and closes, the one task that writes
//! the session's queue (`connection.rs`, on the shared vectored writer),
//! how a queued message becomes a frame (`encoding.rs`), and how a
//! session's [`CloseReason`](crate::CloseReason) becomes a close code
//! ([`CloseReason::websocket_code`](crate::CloseReason::websocket_code)).
//! Everything else about the session's life — admission, join and leave,
//! catch-up, handlers, what a client's messages mean — is
//! [`lifecycle`](crate::transport::lifecycle), shared by every transport.

mod connection;
mod encoding;
mod upgrade;

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use self::connection::Connection;
use self::encoding::Compression;
use self::upgrade::{Negotiated, NotAnUpgrade, Socket, Upgrade};
use crate::group_path::GroupPath;
use crate::http_error::ApiError;
use crate::limits::ConnectionPermit;
use crate::protocol::{self, Protocol};
use crate::transport::NODE_HEADER;
use crate::transport::lifecycle::{self, Admitted, ClientInput};
use crate::wire::close_code;
use crate::wire::{FrameReader, Limits, Role, frame};
use crate::{Hub, HubError};

/// Admits the connection (group, replay parameters, Origin, token,
/// limits: see [`lifecycle::admit`]), then upgrades. Nothing that fails a
/// check reaches the upgrade: the client gets a JSON error with its status
/// (400, 401, 403, 429, 503) instead of a socket.
#[utoipa::path(
    get,
    path = "/ws/{group}",
    tag = "transports",
    summary = "Join a group over a WebSocket (docs/protocol.md)",
    params(crate::group_path::GroupParam, lifecycle::AdmissionQuery),
    responses(
        (status = 101, description = "Switching protocols: the session's WebSocket"),
        (status = 426, description = "Not a WebSocket request: no `Upgrade: websocket`, or a version other than 13 (`not_a_websocket_request`); also a 400 for other malformed handshakes", body = crate::http_error::ErrorBody),
        lifecycle::Refusal,
    ),
)]
pub(crate) async fn upgrade(
    State(hub): State<Hub>,
    GroupPath(group): GroupPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<Upgrade, NotAnUpgrade>,
) -> Response {
    let request = Request {
        query,
        headers,
        remote: connect_info.map(|Extension(ConnectInfo(addr))| addr),
    };
    open(hub, Some(&group), request, ws)
}

/// `GET /ws`: a `groupcast.v1` connection that holds no group until it
/// subscribes (see `transport/subscriptions.rs`). A raw client has no way
/// to subscribe, so it is refused with a 400 that says so.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "transports",
    summary = "A groupcast.v1 connection without a group: it subscribes (docs/protocol.md)",
    params(lifecycle::AdmissionQuery),
    responses(
        (status = 101, description = "Switching protocols: the session's WebSocket, holding no group"),
        (status = 400, description = "The client does not offer `groupcast.v1` (`group_required`), or asks to replay without a group (`bad_query`)", body = crate::http_error::ErrorBody),
        (status = 426, description = "Not a WebSocket request (`not_a_websocket_request`)", body = crate::http_error::ErrorBody),
        lifecycle::Refusal,
    ),
)]
pub(crate) async fn upgrade_without_group(
    State(hub): State<Hub>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<Upgrade, NotAnUpgrade>,
) -> Response {
    if let Ok(ws) = &ws
        && !ws.offers(protocol::V1)
    {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "group_required",
            "a connection to /ws holds no group until it subscribes, which needs the \
             groupcast.v1 subprotocol (Sec-WebSocket-Protocol: groupcast.v1); \
             a raw client connects to /ws/<group>",
        )
        .into_response();
    }
    let request = Request {
        query,
        headers,
        remote: connect_info.map(|Extension(ConnectInfo(addr))| addr),
    };
    open(hub, None, request, ws)
}

/// What both routes take from the upgrade request.
struct Request {
    query: Option<String>,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
}

/// Admits, takes a slot and answers the upgrade of a connection to `group`
/// (none: `/ws`).
fn open(
    hub: Hub,
    group: Option<&str>,
    request: Request,
    ws: Result<Upgrade, NotAnUpgrade>,
) -> Response {
    let admitted = match lifecycle::admit(&hub, group, request.query.as_deref(), &request.headers) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        // Not a WebSocket request (no upgrade headers, wrong version…):
        // answered in JSON like every other error.
        Err(rejection) => return rejection.into_response(),
    };
    let remote = request.remote;
    let permit = match lifecycle::take_slot(&hub, &admitted, remote) {
        Ok(permit) => permit,
        Err(refusal) => return refusal.into_response(),
    };
    let config = hub.config();
    // The connection runs in its session's log span (lifecycle.rs).
    let span = admitted.span.clone();
    // Which node took the connection: behind a load balancer, this is how
    // a client (or a test) tells the replicas apart.
    let node = HeaderValue::from_str(hub.node_id()).ok();
    // Chosen when the client offers it; otherwise the raw protocol.
    let mut response = ws.accept(
        protocol::V1,
        config.compression,
        move |socket, leftover, negotiated| {
            let joining = Joining {
                admitted,
                remote,
                permit,
            };
            serve(hub, socket, leftover, negotiated, joining).instrument(span)
        },
    );
    if let Some(node) = node {
        response.headers_mut().insert(NODE_HEADER, node);
    }
    response
}

/// `GET /ws/`: the catch-all route never matches an empty group, so the
/// empty name gets its own route and the same 400 as any other bad name.
#[utoipa::path(
    get,
    path = "/ws/",
    operation_id = "websocket_no_group",
    tag = "transports",
    summary = "No group: always a 400",
    responses((status = 400, description = "The empty group name (`bad_group_name`)", body = crate::http_error::ErrorBody)),
)]
pub(crate) async fn no_group() -> Response {
    ApiError::bad_group(crate::group::GroupNameError::Empty).into_response()
}

/// Who is joining, as the upgrade admitted them.
struct Joining {
    admitted: Admitted,
    remote: Option<SocketAddr>,
    permit: ConnectionPermit,
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
) {
    let protocol = match negotiated.protocol {
        Some(chosen) if chosen == protocol::V1 => Protocol::V1,
        _ => Protocol::Raw,
    };
    let token = joining.admitted.token.clone();
    let (attached, replay) = match lifecycle::attach(
        &hub,
        joining.admitted,
        joining.remote,
        protocol,
        joining.permit,
    ) {
        Ok(attached) => attached,
        Err(error) => {
            Box::pin(refuse(&hub, socket, error)).await;
            return;
        }
    };
    attached.catch_up(&replay).await;
    drop(replay);
    let session = attached.session();

    // Built in one expression: no moved-from local stays part of the
    // connection's future.
    let mut connection = Connection::new(
        &hub,
        session,
        socket,
        reader_for(&hub, leftover, negotiated),
        negotiated.deflate.then(|| Compression {
            threshold: hub.config().compression_threshold,
            compressed: hub.metrics().messages_compressed.clone(),
        }),
    );

    let mut input = ClientInput::new(&hub, token);
    if let Err(error) = connection
        .run(|incoming| input.on_message(&hub, session, incoming))
        .await
    {
        attached.report(&error);
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
