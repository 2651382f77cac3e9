//! A session's life, the same for every transport: admission, joining and
//! the membership guard, catch-up from history, the application's
//! handlers, and what a client's messages mean (rate, refresh, the right
//! to publish, forwarding).
//!
//! A transport calls, in order: [`admit`] before it answers the request
//! (every refusal is an HTTP error, never a half-open connection), then
//! [`take_slot`] (the connection limits), then [`attach`] once its
//! connection is up, which joins the hub and returns the [`Attached`]
//! guard; [`Attached::catch_up`] sends the welcome and backlog. From then
//! on it hands what the client sends to a [`ClientInput`] and writes the
//! session's queue. When the guard drops — the connection ended, by any
//! path, a panic in a handler included — the session leaves its group and
//! `on_disconnect` runs.
//!
//! What a transport keeps for itself: its handshake, reading and writing
//! its bytes, how it encodes a queued message, and how it signals a
//! session's [`CloseReason`](crate::CloseReason).
//!
//! Logs: every connection gets a `session` span with the node's id, the
//! session's id (from [`attach`] on) and the group of its URL, made at
//! admission ([`Admitted::span`]); the transport runs the connection
//! inside it, so that every line logged about the session — here, in the
//! transport, in the hub's catch-up — names all three, in the JSON and
//! the human log formats alike. A line about one of the other groups a
//! multi-group connection subscribed to names that group in a field of
//! its own.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tungstenite::Utf8Bytes;

use crate::auth::refresh::{RefreshRequest, parse_refresh, refreshed_message};
use crate::auth::{AuthError, Claims, http::client_token};
use crate::config::ClientMessages;
use crate::error::SessionError;
use crate::group::{GroupName, GroupNameError};
use crate::http_error::ApiError;
use crate::limits::{ConnectionPermit, LimitRejection, TokenBucket};
use crate::protocol::Protocol;
use crate::resume::Replay;
use crate::session_id::SessionId;
use crate::transport::subscriptions;
use crate::{Hub, HubError, Message, Session};

/// Who is joining, as admission let them in.
pub(crate) struct Admitted {
    /// The group the connection's URL names; `None` for `/ws`, a
    /// `groupcast.v1` connection that only subscribes.
    pub group: Option<GroupName>,
    pub claims: Claims,
    pub replay: Replay,
    /// Whether it asked for the group's presence snapshot (`?presence=1`,
    /// `presence/snapshot.rs`).
    pub presence: bool,
    /// The session id it had before it reconnected (`?session=`), to
    /// carry on as the same member.
    pub resumed: Option<SessionId>,
    /// The token it was admitted with, for the groups it subscribes to
    /// later (`subscriptions.rs`).
    pub token: Option<String>,
    /// The connection's log span: `node`, `session` (recorded by
    /// [`attach`]) and `group`; the transport runs the connection in it.
    pub span: tracing::Span,
}

/// The span of one connection's logs (see the module docs). At `info`, so
/// that it is there under the default filter: the warnings about a
/// session name it too.
fn session_span(hub: &Hub, group: Option<&GroupName>) -> tracing::Span {
    // A connection without a group (`/ws`) logs `group` empty; its
    // subscriptions name their groups in their own lines.
    tracing::info_span!(
        "session",
        node = %hub.node_id(),
        session = tracing::field::Empty,
        group = %group.map_or("", GroupName::as_str),
    )
}

/// Why a connection was refused before it was answered.
#[derive(Debug)]
pub(crate) enum Refusal {
    BadGroup(GroupNameError),
    BadQuery(String),
    /// Admitted to the group, but not to what it asked besides: the
    /// status, the code and why.
    Refused(StatusCode, &'static str, String),
    Auth(AuthError),
    ShuttingDown,
    Limit(LimitRejection),
}

impl IntoResponse for Refusal {
    /// The JSON error every transport answers with: 400 for a bad group or
    /// query, the auth error's own status (401, 403), 503 when the node is
    /// shutting down or full (another node may have room; `Retry-After`),
    /// 429 when this address holds too many connections.
    fn into_response(self) -> Response {
        match self {
            Refusal::BadGroup(error) => ApiError::bad_group(error).into_response(),
            Refusal::BadQuery(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message).into_response()
            }
            Refusal::Refused(status, code, message) => {
                ApiError::new(status, code, message).into_response()
            }
            Refusal::Auth(error) => error.into_response(),
            Refusal::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down; connect to another node",
            )
            .into_response(),
            Refusal::Limit(limit) => limit_response(limit),
        }
    }
}

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

/// The query parameters [`admit`] reads, as the OpenAPI description
/// documents them for `/ws/{group}` and `/sse/{group}` (they are parsed
/// by `Replay::from_query` and `client_token`; this type only describes).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct AdmissionQuery {
    /// A client token (JWT), for clients that cannot set `Authorization:
    /// Bearer` (browsers); the header wins when both are sent.
    token: Option<String>,
    /// Replay the last N retained messages first (history groups).
    history: Option<u64>,
    /// Resume after this offset (with `epoch`; history groups).
    since: Option<u64>,
    /// The epoch `since` counts in.
    epoch: Option<String>,
    /// `1`: a `presence` frame (who is here) right after the welcome, then
    /// every join/leave after it (`groupcast.v1`, groups with presence).
    presence: Option<u8>,
    /// On a reconnect, the session id the server gave before: the same
    /// member carries on (no leave and join) within the presence grace.
    session: Option<String>,
}

impl utoipa::IntoResponses for Refusal {
    /// Every refusal's status, for the transports' descriptions.
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        use crate::http_error::ErrorBody;
        [
            ("400", "A bad group name or query parameter (`bad_group_name`, `bad_query`), or `presence=1` in a group without presence (`no_presence`)"),
            ("401", "No token, or one that does not verify (`token_missing`, `bad_signature`, `token_expired`, …)"),
            ("403", "The token does not allow this group or its presence, or the Origin is not allowed (`group_not_allowed`, `presence_not_allowed`, `origin_not_allowed`)"),
            ("429", "Too many connections from this address (`too_many_connections_from_ip`; `Retry-After`)"),
            ("503", "Shutting down, or the node is full (`shutting_down`, `node_full`, `too_many_groups`; `Retry-After`)"),
        ]
        .into_iter()
        .map(|(status, description)| (status.to_string(), ErrorBody::described(description).into()))
        .collect()
    }
}

/// The checks before a connection is answered, cheapest first: the group
/// name, the replay parameters, then security (Origin, token and group;
/// see [`crate::auth::policy`]; counted when refused), then whether the
/// node is shutting down.
///
/// Without a group (`/ws`) there is nothing to replay, and the token is
/// checked for itself (signature, expiry): each group the connection
/// subscribes to later is checked against its grants then.
pub(crate) fn admit(
    hub: &Hub,
    group: Option<&str>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Admitted, Refusal> {
    let group = group
        .map(GroupName::new)
        .transpose()
        .map_err(Refusal::BadGroup)?;
    let span = session_span(hub, group.as_ref());
    // Replay parameters before anything else costs: a bad one is a 400.
    let replay = Replay::from_query(query).map_err(|error| Refusal::BadQuery(error.to_string()))?;
    if group.is_none() && replay != Replay::None {
        return Err(Refusal::BadQuery(
            "a connection without a group has nothing to replay: \
             subscribe with \"history\" or \"since\" instead"
                .into(),
        ));
    }
    let presence = crate::presence::snapshot::presence_query(query).map_err(Refusal::BadQuery)?;
    let resumed = resumed_session(query).map_err(Refusal::BadQuery)?;
    if presence {
        asks_presence_rightly(group.is_some(), headers)?;
    }
    let auth = hub.client_auth();
    let mut token = None;
    let claims = auth
        .check_origin(headers.get(header::ORIGIN))
        .and_then(|()| client_token(headers, query))
        .and_then(|given| {
            token = given.as_deref().map(str::to_owned);
            match &group {
                Some(group) => auth.admit(group, given.as_deref()),
                None => auth.admit_without_group(given.as_deref()),
            }
        })
        .map_err(|error| {
            hub.metrics().count_auth_rejection(error.code());
            span.in_scope(|| tracing::debug!(code = error.code(), %error, "connection refused"));
            Refusal::Auth(error)
        })?;
    if presence && let Some(group) = &group {
        crate::presence::snapshot::may_have_snapshot(hub, group, &claims).map_err(|refusal| {
            Refusal::Refused(refusal.status(), refusal.code(), refusal.to_string())
        })?;
    }
    if hub.is_shutting_down() {
        return Err(Refusal::ShuttingDown);
    }
    Ok(Admitted {
        group,
        claims,
        replay,
        presence,
        resumed,
        token,
        span,
    })
}

/// `session` from a query string: the id the client had before it
/// reconnected, or why it is not one.
fn resumed_session(query: Option<&str>) -> Result<Option<SessionId>, String> {
    let mut given = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key != "session" {
            continue;
        }
        let id = SessionId::parse_given(&value).ok_or_else(|| {
            format!("session must be an id this server gave (16 hex digits), not {value:?}")
        })?;
        if given.replace(id).is_some() {
            return Err("session is given twice".into());
        }
    }
    Ok(given)
}

/// `?presence=1` needs a group (a connection without one subscribes with
/// `"presence": true`) and, on a WebSocket, the `groupcast.v1`
/// subprotocol offered: a raw client would take the frames for messages.
fn asks_presence_rightly(has_group: bool, headers: &HeaderMap) -> Result<(), Refusal> {
    if !has_group {
        return Err(Refusal::BadQuery(
            "a connection without a group has no presence to show: \
             subscribe with \"presence\": true instead"
                .into(),
        ));
    }
    let websocket = headers.contains_key(header::UPGRADE);
    let offers_v1 = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|offered| offered.trim() == crate::protocol::V1);
    if websocket && !offers_v1 {
        return Err(Refusal::BadQuery(
            "presence=1 needs the groupcast.v1 subprotocol: \
             a raw client cannot tell presence frames from messages"
                .into(),
        ));
    }
    Ok(())
}

/// The connection limits (see [`crate::limits`]): the slot is held until
/// the connection ends, so connections being set up count too.
pub(crate) fn take_slot(
    hub: &Hub,
    admitted: &Admitted,
    remote: Option<SocketAddr>,
) -> Result<ConnectionPermit, Refusal> {
    hub.admit_connection(admitted.group.as_ref(), remote.map(|addr| addr.ip()))
        .map_err(Refusal::Limit)
}

/// A session in the hub for as long as this lives. Dropping it is the one
/// way a session leaves: its group is left and `on_disconnect` runs — also
/// when the connection's task ends by a panic in a handler, so that no
/// session ever outlives its connection in the registry.
pub(crate) struct Attached {
    hub: Hub,
    session: Session,
    /// Whether the queue is held until the catch-up is in.
    held: bool,
    /// Whether the catch-up sends the group's presence snapshot.
    presence: bool,
    /// The connection's log span, its session recorded.
    span: tracing::Span,
    /// The hub waits for tracked connections on shutdown.
    _tracked: TaskTrackerToken,
    _permit: ConnectionPermit,
}

/// Joins the hub: the session exists, its group is held, `on_connect` has
/// run. A `groupcast.v1` client's first message is its welcome, and a
/// backlog goes before the live messages: in both cases the session's
/// queue is held until [`Attached::catch_up`] is done.
pub(crate) fn attach(
    hub: &Hub,
    admitted: Admitted,
    remote: Option<SocketAddr>,
    protocol: Protocol,
    permit: ConnectionPermit,
) -> Result<(Attached, Replay), HubError> {
    let held = protocol == Protocol::V1 || admitted.replay.wants_backlog();
    let presence = admitted.presence && protocol == Protocol::V1;
    let session = hub.join(
        admitted.group,
        remote,
        admitted.claims,
        (protocol, held),
        admitted.resumed,
    )?;
    let span = admitted.span;
    span.record("session", tracing::field::display(session.id()));
    let attached = Attached {
        hub: hub.clone(),
        session,
        held,
        presence,
        span,
        _tracked: hub.track_connection(),
        _permit: permit,
    };
    {
        let _entered = attached.span.enter();
        tracing::debug!(?remote, "connected");
        if let Some(on_connect) = &hub.handlers().connect {
            on_connect(hub, &attached.session);
        }
    }
    Ok((attached, admitted.replay))
}

impl Attached {
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// The connection's log span (node, session, group).
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Sends the welcome and the backlog `replay` asks for, then releases
    /// the queue (nothing to do when it was not held).
    pub(crate) async fn catch_up(&self, replay: &Replay) {
        if self.held {
            // Boxed: the catch-up's state (history reads) is large, and
            // would otherwise stay part of every connection's future.
            Box::pin(self.hub.catch_up(&self.session, replay, self.presence)).await;
        }
    }

    /// The same catch-up as a future of its own (it holds what it needs),
    /// for a transport whose session runs inside a value that cannot lend
    /// from itself (an SSE body).
    pub(crate) fn catch_up_owned(
        &self,
        replay: Replay,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (hub, session, held) = (self.hub.clone(), self.session.clone(), self.held);
        let presence = self.presence;
        async move {
            if held {
                hub.catch_up(&session, &replay, presence).await;
            }
        }
    }

    /// A connection that ended with `error`: logged and handed to
    /// `on_error`.
    pub(crate) fn report(&self, error: &SessionError) {
        let _entered = self.span.enter();
        tracing::debug!(%error, "connection error");
        if let Some(on_error) = &self.hub.handlers().error {
            on_error(&self.hub, &self.session, error);
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _entered = self.span.enter();
        self.hub.leave(&self.session);
        tracing::debug!("disconnected");
        // A handler that panics while we are already unwinding would abort
        // the process: skip it then.
        if !std::thread::panicking()
            && let Some(on_disconnect) = &self.hub.handlers().disconnect
        {
            on_disconnect(&self.hub, &self.session);
        }
    }
}

/// What a client sent, as every transport reads it.
pub(crate) enum FromClient {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// A keep-alive probe from the client (it counts against its rate).
    Ping,
    /// The answer to ours (it does not count).
    Pong,
}

/// What a client's messages mean, for one connection.
///
/// Security comes before any handler: everything the client sends counts
/// against its rate (except the pongs it owes us), a refresh message is
/// taken out of the stream (see [`crate::auth::refresh`]), and a data
/// message from a session that may not publish ends it
/// ([`SessionError::PublishNotAllowed`]).
///
/// A text or binary message goes to the application's handler for its
/// kind; without one, `Config::client_messages` decides: forwarded to the
/// sender's group, or ignored. The setting is applied here, by the library,
/// so that what `/api/info` reports is what happens.
pub(crate) struct ClientInput {
    bucket: Option<TokenBucket>,
    rate: u32,
    forward_unhandled: bool,
    /// The connection's token (its latest refresh), for subscriptions.
    token: Option<String>,
}

impl ClientInput {
    pub(crate) fn new(hub: &Hub, token: Option<String>) -> Self {
        let config = hub.config();
        ClientInput {
            bucket: TokenBucket::new(config.max_inbound_rate, config.max_inbound_burst),
            rate: config.max_inbound_rate,
            forward_unhandled: config.client_messages == ClientMessages::Group,
            token,
        }
    }

    /// Handles one message; an error ends the session with the error's
    /// close reason.
    pub(crate) fn on_message(
        &mut self,
        hub: &Hub,
        session: &Session,
        message: FromClient,
    ) -> Result<(), SessionError> {
        let handlers = hub.handlers();
        if !matches!(message, FromClient::Pong)
            && let Some(bucket) = &mut self.bucket
            && !bucket.take()
        {
            let rate = self.rate;
            hub.count_limit(&LimitRejection::InboundRate { rate });
            return Err(SessionError::RateLimited { rate });
        }
        let message = match message {
            FromClient::Text(text) => {
                hub.count_incoming(text.len());
                if session.protocol() == Protocol::V1
                    && subscriptions::try_request(hub, session, self.token.as_deref(), &text)
                {
                    return Ok(());
                }
                if let Some(renewed) = try_refresh(hub, session, text.as_str())? {
                    self.token = Some(renewed);
                    return Ok(());
                }
                Message::Text(text)
            }
            FromClient::Binary(data) => {
                hub.count_incoming(data.len());
                Message::Binary(data)
            }
            FromClient::Pong => {
                if let Some(on_pong) = &handlers.pong {
                    on_pong(hub, session);
                }
                return Ok(());
            }
            FromClient::Ping => return Ok(()),
        };
        may_publish(hub, session)?;
        match (message, &handlers.text, &handlers.binary) {
            (Message::Text(text), Some(on_text), _) => on_text(hub, session, text),
            (Message::Binary(data), _, Some(on_binary)) => on_binary(hub, session, data),
            // No handler for its kind: the setting decides. The message's
            // bytes are shared, not copied, into every member's queue.
            (message, _, _) if self.forward_unhandled => forward(hub, session, message),
            _ => {}
        }
        Ok(())
    }
}

/// `ClientMessages::Group`: sends a client's message to its own group (the
/// sender included, as in melody's chat). A failure (the hub shutting
/// down, the bus refusing) costs this one message, not the connection.
/// A connection without a group of its own (`/ws`) has no group to send
/// to: it is told so (a `groupcast.v1` error frame), and nothing is sent.
fn forward(hub: &Hub, session: &Session, message: Message) {
    let Some(group) = session.group() else {
        let error = crate::protocol::error_frame(
            None,
            None,
            "no_group",
            "this connection has no group of its own to send to: \
             publish through the HTTP API, or connect to /ws/<group>",
        );
        session.push(crate::outbound::Queued::protocol(error));
        return;
    };
    if let Err(error) = hub.to(group).send(message) {
        tracing::warn!(%error, "could not forward a client message");
    }
}

/// Handles `text` if it is a refresh request of a token-admitted session:
/// `Ok(Some(token))` when it was one and succeeded, an error (closing 4003)
/// when it was one and failed, `Ok(None)` when it is an ordinary message.
fn try_refresh(hub: &Hub, session: &Session, text: &str) -> Result<Option<String>, SessionError> {
    let current = session.claims();
    if current.admission != crate::auth::Admission::Token {
        return Ok(None);
    }
    let Some(request) = parse_refresh(text) else {
        return Ok(None);
    };
    let given = match &request {
        RefreshRequest::Token(token) => Some(token.to_string()),
        RefreshRequest::Malformed => None,
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
            tracing::debug!(exp = ?claims.exp, "token refreshed");
            let ack = refreshed_message(&claims);
            session.set_claims(claims);
            session.send(Message::text(ack));
            Ok(given)
        }
        Err(error) => {
            hub.metrics().count_auth_rejection("refresh_rejected");
            Err(SessionError::RefreshRejected(error.to_string()))
        }
    }
}

/// Whether the session may send messages; ending it if not.
fn may_publish(hub: &Hub, session: &Session) -> Result<(), SessionError> {
    if session.claims().publish {
        Ok(())
    } else {
        hub.metrics().count_auth_rejection("publish_not_allowed");
        Err(SessionError::PublishNotAllowed)
    }
}
