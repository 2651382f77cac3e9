//! The Server-Sent Events transport: `GET /sse/{*group}`, a
//! `text/event-stream` per session.
//!
//! For the simplest clients: `curl -N` and a browser's `EventSource`,
//! which reconnects by itself and sends back the id of the last event it
//! saw as `Last-Event-ID`. Here that id is a message's history position
//! (`<epoch>:<offset>`), so a reconnect resumes exactly where the stream
//! was cut (`resume.rs`), or starts with a `reset` event when it cannot
//! (the header is not such an id, or the history no longer holds what was
//! missed). A first connection can give it as the `lastEventID` query
//! parameter (Mercure's name), or ask for `?history=N`.
//!
//! Admission, limits, the token (`Authorization: Bearer` or `?token=`),
//! the Origin check, catch-up, the slow-consumer policy and the handlers
//! are the same as a WebSocket's (`transport/lifecycle.rs`). What is the
//! transport's own: reading `Last-Event-ID`, the events
//! (`encoding.rs`, built once per message and shared), the body that
//! hyper writes (`stream.rs`), and the close, which is a last `close`
//! event naming the [`CloseKind`](crate::CloseKind). Clients publish
//! through the HTTP API: an event stream only goes one way.

mod encoding;
mod stream;

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use self::stream::EventStream;
use crate::group_path::GroupPath;
use crate::http_error::ApiError;
use crate::protocol::Protocol;
use crate::resume::Replay;
use crate::transport::ConnectionAbort;
use crate::transport::lifecycle::{self, Refusal};
use crate::{Hub, HubError};

/// How long a browser waits before it reconnects a stream that ended.
const RETRY_MS: u32 = 1000;

/// The request header a reconnecting `EventSource` sends.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The query parameter that stands for `Last-Event-ID` on a first
/// connection (Mercure's name).
const LAST_EVENT_ID_PARAMETER: &str = "lastEventID";

/// Admits the request like a WebSocket upgrade (see
/// [`lifecycle::admit`]), joins, and answers with the session's event
/// stream. A refused request gets the same JSON errors (400, 401, 403,
/// 429, 503).
#[utoipa::path(
    get,
    path = "/sse/{group}",
    tag = "transports",
    summary = "Join a group as a Server-Sent Events stream (docs/protocol.md)",
    params(
        crate::group_path::GroupParam,
        lifecycle::AdmissionQuery,
        ("lastEventID" = Option<String>, Query, description = "Resume after this event id on a first connection (a reconnect sends `Last-Event-ID`)"),
    ),
    responses(
        (status = 200, description = "The session's events, until it ends", content_type = "text/event-stream", body = String),
        lifecycle::Refusal,
    ),
)]
pub(crate) async fn subscribe(
    State(hub): State<Hub>,
    GroupPath(group): GroupPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    abort: Option<Extension<ConnectionAbort>>,
) -> Response {
    let mut admitted = match lifecycle::admit(&hub, Some(&group), query.as_deref(), &headers) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let mut preamble = format!("retry: {RETRY_MS}\n\n");
    // A reconnect's Last-Event-ID wins over the URL's `history=`, which
    // the browser sends again unchanged.
    if let Some(id) = last_event_id(&headers, query.as_deref()) {
        match Replay::from_last_event_id(&id) {
            Ok(replay) => admitted.replay = replay,
            Err(error) => {
                admitted.replay = Replay::None;
                preamble.push_str(&encoding::reset_event(&error.to_string()));
            }
        }
    }
    let remote = connect_info.map(|Extension(ConnectInfo(addr))| addr);
    let permit = match lifecycle::take_slot(&hub, &admitted, remote) {
        Ok(permit) => permit,
        Err(refusal) => return refusal.into_response(),
    };
    // An SSE session speaks `groupcast.v1`'s semantics (a welcome,
    // positions, a resume when its node's stream skipped); its encoding is
    // the events.
    let (attached, replay) = match lifecycle::attach(&hub, admitted, remote, Protocol::V1, permit) {
        Ok(attached) => attached,
        Err(HubError::Limit(limit)) => return Refusal::Limit(limit).into_response(),
        Err(_) => return Refusal::ShuttingDown.into_response(),
    };
    let catch_up = attached.catch_up_owned(replay);
    let node = HeaderValue::from_str(hub.node_id()).ok();
    let stream = EventStream::new(
        hub,
        attached,
        catch_up,
        Bytes::from(preamble),
        abort.map(|Extension(abort)| abort),
    );
    let mut response = Body::from_stream(stream).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) would hold the events back.
    response_headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    if let Some(node) = node {
        response_headers.insert(crate::transport::NODE_HEADER, node);
    }
    response
}

/// `GET /sse/`: the empty group, a 400 like any other bad name.
#[utoipa::path(
    get,
    path = "/sse/",
    operation_id = "sse_no_group",
    tag = "transports",
    summary = "No group: always a 400",
    responses((status = 400, description = "The empty group name (`bad_group_name`)", body = crate::http_error::ErrorBody)),
)]
pub(crate) async fn no_group() -> Response {
    ApiError::bad_group(crate::group::GroupNameError::Empty).into_response()
}

/// The `Last-Event-ID` header, else the `lastEventID` query parameter.
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers.get(LAST_EVENT_ID) {
        return Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == LAST_EVENT_ID_PARAMETER)
        .map(|(_, value)| value.into_owned())
}
