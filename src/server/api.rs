//! The HTTP API: publish to a group, list groups and their sessions.
//!
//! Every error is JSON, `{"error": "<machine code>", "message": "<text>"}`,
//! with a status code that says whose fault it was.
//!
//! Group names may contain `/` (`task/42`): both `/api/groups/task/42` and
//! `/api/groups/task%2F42` name that group. `POST …/messages` publishes;
//! `GET …/history?since=&limit=` reads a history group's retained messages,
//! `GET …/members?cursor=&limit=` pages through its members on every node
//! and `GET …/users` lists its distinct users (so the API cannot show a
//! group whose last segment is `history`, `members` or `users`).
//!
//! `POST /api/sessions/{id}/disconnect` and `POST /api/users/{sub}/disconnect`
//! close a session, or every session of a user, on whichever node it is
//! (`disconnect.rs`).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use super::state::AppState;
use crate::Message;
use crate::backend::NodeInfo;
use crate::backend::history::{HistoryQuery, MAX_PAGE};
use crate::backend::member::{Cursor, MAX_MEMBER_PAGE};
use crate::backend::presence::{GroupTotal, group_totals};
use crate::disconnect::DisconnectOptions;
use crate::group::GroupName;
pub(crate) use crate::http_error::ApiError;
use crate::{SessionId, Who};

pub(crate) fn routes(max_body: usize) -> Router<AppState> {
    Router::new()
        .route("/api/groups", get(list_groups))
        .route("/api/groups/{*rest}", get(show_group).post(publish))
        .route("/api/sessions/{*rest}", post(disconnect_session))
        .route("/api/users/{*rest}", post(disconnect_user))
        .route("/api/nodes", get(list_nodes))
        .route("/api/workers", get(list_workers))
        .route("/api/info", get(info))
        .layer(DefaultBodyLimit::max(max_body))
}

#[derive(Serialize)]
struct PublishResponse {
    group: GroupName,
    /// Sessions on this node the message was queued for.
    delivered: usize,
    node: String,
    /// Whether other nodes were told (false when standalone).
    clustered: bool,
    /// For history groups: the message's offset and the group's epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
}

/// `POST /api/groups/{group}/messages`
async fn publish(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishResponse>, ApiError> {
    let group = publish_group(&rest)?;
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        ApiError::new(status, code, rejection.body_text())
    })?;
    let message = message_from_body(&headers, body)?;
    let hub = &state.hub;
    let sent = hub.to(&group).publish(message).await?;
    Ok(Json(PublishResponse {
        group,
        delivered: sent.local,
        offset: sent.position.as_ref().map(|p| p.offset),
        epoch: sent.position.as_ref().map(|p| p.epoch.to_string()),
        node: hub.node_id().to_string(),
        clustered: hub.status().kind != "local",
    }))
}

/// The group of `POST /api/groups/{rest}`: `rest` is `<group>/messages`.
fn publish_group(rest: &str) -> Result<GroupName, ApiError> {
    let Some(group) = rest.strip_suffix("/messages") else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "POST to /api/groups/{group}/messages to publish",
        ));
    };
    GroupName::new(group).map_err(ApiError::bad_group)
}

/// What `POST /api/groups/{rest}` makes of a request, without a hub: the
/// group and the frame to publish, or the error's status and code. For the
/// fuzz targets (`fuzz/`) and their regression tests.
#[doc(hidden)]
pub fn parse_publish(
    rest: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(GroupName, Message), (StatusCode, &'static str)> {
    let parsed =
        publish_group(rest).and_then(|group| Ok((group, message_from_body(headers, body)?)));
    parsed.map_err(|error| (error.status, error.code))
}

/// Text for `text/*` and JSON, binary for `application/octet-stream`.
fn message_from_body(headers: &HeaderMap, body: Bytes) -> Result<Message, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the message body is empty",
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let as_text = |body: Bytes| {
        String::from_utf8(body.to_vec())
            .map(Message::text)
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_utf8",
                    "a text body must be valid UTF-8; send binary as application/octet-stream",
                )
            })
    };
    if mime == "application/octet-stream" {
        Ok(Message::binary(body))
    } else if mime == "application/json" || mime.ends_with("+json") {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        as_text(body)
    } else if mime.starts_with("text/") {
        as_text(body)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {:?} is not accepted: use text/plain (or any text/*) or application/json for a text frame, application/octet-stream for a binary frame",
                content_type
            ),
        ))
    }
}

/// The cluster's nodes (this node alone when standalone).
async fn nodes(state: &AppState) -> Result<Vec<NodeInfo>, ApiError> {
    state.hub.nodes().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            format!("cannot read the cluster view: {e}"),
        )
    })
}

fn summarize(nodes: &[NodeInfo]) -> Vec<GroupTotal> {
    group_totals(nodes).into_values().collect()
}

/// `GET /api/groups`
async fn list_groups(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let nodes = nodes(&state).await?;
    let groups = summarize(&nodes);
    Ok(Json(json!({
        "node": state.hub.node_id(),
        "nodes": nodes.len(),
        "groups": groups,
    })))
}

/// `GET /api/groups/{group}`: the cluster-wide count, and this node's
/// sessions with their keys.
async fn show_group(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if let Some(group) = rest.strip_suffix("/history") {
        return show_history(&state, group, query.as_deref()).await;
    }
    if let Some(group) = rest.strip_suffix("/members") {
        return show_members(&state, group, query.as_deref()).await;
    }
    if let Some(group) = rest.strip_suffix("/users") {
        return show_users(&state, group).await;
    }
    let group = GroupName::new(&rest).map_err(ApiError::bad_group)?;
    let nodes = nodes(&state).await?;
    // `null` for a group that keeps no presence (`--presence`).
    let presence = match keeps_presence(&state, &group) {
        Ok(()) => Some(
            state
                .hub
                .presence_stats(&group)
                .await
                .map_err(presence_unavailable)?,
        ),
        Err(_) => None,
    };
    let summary = group_totals(&nodes).remove(group.as_str());
    let hub = &state.hub;
    let sessions: Vec<Value> = hub
        .members(&group)
        .iter()
        .map(|s| session_json(hub.node_id(), s))
        .collect();
    Ok(Json(json!({
        "name": group,
        "members": summary.as_ref().map_or(0, |s| s.members),
        "nodes": summary.map(|s| s.nodes).unwrap_or_default(),
        "node": hub.node_id(),
        "sessions": sessions,
        // Cluster-wide presence: members and distinct users (`sub`).
        "presence": presence,
    })))
}

/// Whether `group` keeps presence (`Config::presence`); a 404 that says
/// how to turn it on if not.
fn keeps_presence(state: &AppState, group: &GroupName) -> Result<(), ApiError> {
    if state.hub.config().presence.matches(group) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "presence_off",
            format!("{group} keeps no presence: name it in --presence (GROUPCAST_PRESENCE)"),
        ))
    }
}

/// A presence read that failed: the backend's fault.
fn presence_unavailable(error: crate::BackendError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "bus_unavailable",
        format!("cannot read presence: {error}"),
    )
}

/// Members per page of `GET …/members` unless `limit` says otherwise.
const MEMBERS_LIMIT_DEFAULT: usize = 100;

/// `cursor` and `limit` of `GET …/members`: 400 with the reason when
/// either is not one this server accepts.
pub(crate) fn members_query(query: Option<&str>) -> Result<(Cursor, usize), ApiError> {
    let (mut cursor, mut limit) = (Cursor::start(), MEMBERS_LIMIT_DEFAULT);
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "cursor" => {
                cursor = Cursor::decode(&value).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_cursor",
                        format!("cursor {value:?} is {e}: pass the next_cursor of a page"),
                    )
                })?
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_MEMBER_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_limit",
                            format!(
                                "limit must be a whole number from 1 to {MAX_MEMBER_PAGE}, not {value:?}"
                            ),
                        )
                    })?
            }
            _ => {}
        }
    }
    Ok((cursor, limit))
}

/// `GET /api/groups/{group}/members?cursor=&limit=`: a page of the group's
/// members on every node, in the order of their ids, with the counts and
/// the cursor of the next page (`null` on the last).
async fn show_members(
    state: &AppState,
    group: &str,
    query: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let group = GroupName::new(group).map_err(ApiError::bad_group)?;
    let (cursor, limit) = members_query(query)?;
    keeps_presence(state, &group)?;
    let page = state
        .hub
        .presence_page(&group, &cursor, limit)
        .await
        .map_err(presence_unavailable)?;
    Ok(Json(json!({
        "group": group,
        "members": page.members,
        "next_cursor": page.next.map(|next| next.encode()),
        "count": page.stats.members,
        "users": page.stats.users,
    })))
}

/// `GET /api/groups/{group}/users`: the group's distinct users (`sub`) on
/// every node, each with its sessions in the group.
async fn show_users(state: &AppState, group: &str) -> Result<Json<Value>, ApiError> {
    let group = GroupName::new(group).map_err(ApiError::bad_group)?;
    keeps_presence(state, &group)?;
    let users = state
        .hub
        .presence_users(&group)
        .await
        .map_err(presence_unavailable)?;
    Ok(Json(json!({
        "group": group,
        "count": users.len(),
        "users": users,
    })))
}

/// The most messages one history request returns, and the default.
const HISTORY_LIMIT_DEFAULT: usize = 100;

/// `GET /api/groups/{group}/history?since=&limit=`: the retained messages
/// after `since` (default: from the oldest), at most `limit` (default 100,
/// at most 1000), with the epoch and top offset.
async fn show_history(
    state: &AppState,
    group: &str,
    query: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let group = GroupName::new(group).map_err(ApiError::bad_group)?;
    let (mut since, mut limit) = (0u64, HISTORY_LIMIT_DEFAULT);
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let bad = |what: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("{key} must be {what}, not {value:?}"),
            )
        };
        match key.as_ref() {
            "since" => {
                since = value
                    .parse()
                    .map_err(|_| bad("a whole number (an offset)"))?
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("a whole number from 1"))?
                    .min(MAX_PAGE)
            }
            _ => {}
        }
    }
    let history = state
        .hub
        .history(
            &group,
            HistoryQuery::After {
                offset: since,
                limit,
            },
        )
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_history",
                format!("group {group} keeps no history (no --history rule matches it)"),
            )
        })?;
    let messages: Vec<Value> = history
        .messages
        .iter()
        .map(|(offset, message)| match message.as_text() {
            Some(text) => json!({ "offset": offset, "data": text }),
            None => json!({
                "offset": offset,
                "data": base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    message.payload()
                ),
                "binary": true,
            }),
        })
        .collect();
    Ok(Json(json!({
        "group": group,
        "epoch": history.epoch,
        "offset": history.top,
        "messages": messages,
    })))
}

pub(crate) fn session_json(node: &str, s: &crate::Session) -> Value {
    let connected_at = s
        .connected_at()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "id": s.id(),
        "group": s.group(),
        // The group it connected to, then those it subscribed to since.
        "groups": s.groups(),
        "node": node,
        "remote_addr": s.remote_addr().map(|a| a.to_string()),
        "connected_at_ms": connected_at,
        "keys": s.keys(),
        "queued": s.queued(),
        // How it got in, who it is, whether it may publish, when it expires.
        "auth": *s.claims(),
    })
}

/// `POST /api/sessions/{id}/disconnect`
async fn disconnect_session(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = disconnect_target(&rest, "sessions", "a session id")?;
    let who = Who::Session(SessionId::from(id));
    disconnect(&state, who, disconnect_options(body)?, "unknown_session").await
}

/// `POST /api/users/{sub}/disconnect`: every session whose token's `sub`
/// is this (it may contain `/`; percent-encode anything else).
async fn disconnect_user(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = Who::User(disconnect_target(&rest, "users", "a user's sub")?.to_string());
    disconnect(&state, who, disconnect_options(body)?, "unknown_user").await
}

/// The `{id}` of `POST /api/{what}/{id}/disconnect`: `rest` is
/// `<id>/disconnect`.
fn disconnect_target<'a>(rest: &'a str, what: &str, naming: &str) -> Result<&'a str, ApiError> {
    match rest.strip_suffix("/disconnect") {
        Some(target) if !target.is_empty() => Ok(target),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("POST to /api/{what}/{{{naming}}}/disconnect to disconnect"),
        )),
    }
}

/// The optional JSON body of a disconnect: `{"code", "reason",
/// "reconnect"}`, each optional; an empty body is all defaults.
fn disconnect_options(body: Result<Bytes, BytesRejection>) -> Result<crate::CloseReason, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::new(rejection.status(), "bad_body", rejection.body_text())
    })?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message);
    let options: DisconnectOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DisconnectOptions::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            bad(format!(
                "the body is not {{\"code\"?, \"reason\"?, \"reconnect\"?}}: {e}"
            ))
        })?
    };
    options.close().map_err(|e| bad(e.to_string()))
}

/// Disconnects `who` cluster-wide: 200 with the count (and the nodes that
/// did not answer, if any); 404 `unknown` when every live node answered
/// and none had it; 504 `no_answer` when none had it but some did not
/// answer, so nobody can say.
async fn disconnect(
    state: &AppState,
    who: Who,
    close: crate::CloseReason,
    unknown: &'static str,
) -> Result<Json<Value>, ApiError> {
    let done = state
        .hub
        .disconnect(who.clone(), close)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                format!("cannot ask the other nodes: {e}"),
            )
        })?;
    let named = match &who {
        Who::Session(id) => format!("session {id}"),
        Who::User(sub) => format!("user {sub:?}"),
    };
    match (done.disconnected, done.unanswered.is_empty()) {
        (0, true) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            unknown,
            format!("no node has a connection of {named}"),
        )),
        (0, false) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "no_answer",
            format!(
                "no node that answered has a connection of {named}; these did not answer in time: {}",
                done.unanswered.join(", ")
            ),
        )),
        _ => Ok(Json(json!(done))),
    }
}

/// `GET /api/nodes`
async fn list_nodes(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let nodes = nodes(&state).await?;
    Ok(Json(json!({ "node": state.hub.node_id(), "nodes": nodes })))
}

/// `GET /api/info`: what the demo page needs to know.
async fn info(State(state): State<AppState>) -> Json<Value> {
    let hub = &state.hub;
    let bus = hub.status();
    Json(json!({
        "node": hub.node_id(),
        "mode": bus.kind,
        // Which Redis each of the backend's connections is on.
        "redis": bus.connections,
        // The hub's setting, which its WebSocket reader applies.
        "client_messages": hub.config().client_messages,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /api/workers`: who runs each group's worker, cluster-wide.
async fn list_workers(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let hub = &state.hub;
    let leases = hub.worker_leases().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            format!("cannot read worker leases: {e}"),
        )
    })?;
    Ok(Json(
        json!({ "node": hub.node_id(), "workers": leases, "local": hub.workers() }),
    ))
}
