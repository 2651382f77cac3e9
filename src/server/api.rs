//! The HTTP API: publish to a group, list groups and their sessions.
//!
//! Every error is JSON, `{"error": "<machine code>", "message": "<text>"}`,
//! with a status code that says whose fault it was.
//!
//! Group names may contain `/` (`task/42`): both `/api/groups/task/42` and
//! `/api/groups/task%2F42` name that group (`group_paths.rs`). `POST
//! …/messages` publishes; `GET …/history?since=&limit=` reads a history
//! group's retained messages, `GET …/members?cursor=&limit=` pages through
//! its members on every node and `GET …/users` lists its distinct users
//! (so the API cannot show a group whose last segment is `history`,
//! `members` or `users`).
//!
//! Each handler's `#[utoipa::path]` is its entry in the OpenAPI
//! description (`openapi.rs`); its body types are in `bodies.rs`.
//!
//! `POST /api/sessions/{id}/disconnect` and `POST /api/users/{sub}/disconnect`
//! close a session, or every session of a user, on whichever node it is
//! (`disconnect.rs`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::{
    GroupList, GroupView, History, HistoryMessage, Info, MemberList, NodeList, Published,
    SessionView, UserList, WorkerList,
};
use super::state::AppState;
use crate::Message;
use crate::backend::NodeInfo;
use crate::backend::history::{HistoryQuery, MAX_PAGE};
use crate::backend::member::{Cursor, MAX_MEMBER_PAGE};
use crate::backend::presence::{GroupTotal, group_totals};
use crate::disconnect::{DisconnectOptions, Disconnected};
use crate::group::GroupName;
use crate::group_path::{GroupParam, GroupPath};
pub(crate) use crate::http_error::{ApiError, ErrorBody};
use crate::{SessionId, Who};

/// The API's routes, each with its description.
pub(crate) fn routes(max_body: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups))
        .routes(routes!(show_group))
        .routes(routes!(publish))
        .routes(routes!(show_history))
        .routes(routes!(show_members))
        .routes(routes!(show_users))
        .routes(routes!(list_nodes))
        .routes(routes!(list_workers))
        .routes(routes!(info))
        .routes(routes!(disconnect_session))
        .routes(routes!(disconnect_user))
        .layer(DefaultBodyLimit::max(max_body))
}

/// `POST /api/groups/{group}/messages`
#[utoipa::path(
    post,
    path = "/api/groups/{group}/messages",
    tag = "groups",
    summary = "Publish a message to a group",
    description = "The body is the message: `text/*` or JSON (`application/json`, `*+json`) \
        is sent as a text frame, `application/octet-stream` as a binary frame. It reaches \
        the group's members on every node.",
    params(GroupParam),
    request_body(
        description = "The message",
        content(
            (String = "text/plain"),
            (serde_json::Value = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 200, description = "Published", body = Published),
        (status = 400, description = "A bad group name, an empty body, text that is not UTF-8, JSON that does not parse \
            (`bad_group_name`, `empty_body`, `invalid_utf8`, `invalid_json`, `bad_body`)", body = ErrorBody),
        (status = 413, description = "The body is over `--api-max-body` (`body_too_large`)", body = ErrorBody),
        (status = 415, description = "A content type other than text, JSON or octet-stream (`unsupported_media_type`)", body = ErrorBody),
        (status = 503, description = "Shutting down, or delivered locally but not to other nodes (`shutting_down`, `bus_unavailable`)", body = ErrorBody),
    ),
)]
async fn publish(
    State(state): State<AppState>,
    GroupPath(group): GroupPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    let group = GroupName::new(&group).map_err(ApiError::bad_group)?;
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
    Ok(Json(Published {
        group,
        delivered: sent.local,
        offset: sent.position.as_ref().map(|p| p.offset),
        epoch: sent.position.as_ref().map(|p| p.epoch.to_string()),
        node: hub.node_id().to_string(),
        clustered: hub.status().kind != "local",
    }))
}

/// The group of `POST /api/groups/{rest}`, `rest` being `<group>/messages`
/// (what the router's path rewrite and route make of it), for
/// [`parse_publish`].
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

/// The description of a 503 for a cluster view that cannot be read.
const BUS_UNAVAILABLE: &str = "The cluster view cannot be read from Redis (`bus_unavailable`)";

/// `GET /api/groups`
#[utoipa::path(
    get,
    path = "/api/groups",
    tag = "groups",
    summary = "Every group with members, cluster-wide",
    responses(
        (status = 200, description = "The groups", body = GroupList),
        (status = 503, description = BUS_UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn list_groups(State(state): State<AppState>) -> Result<Json<GroupList>, ApiError> {
    let nodes = nodes(&state).await?;
    Ok(Json(GroupList {
        node: state.hub.node_id().to_string(),
        nodes: nodes.len(),
        groups: summarize(&nodes),
    }))
}

/// `GET /api/groups/{group}`: the cluster-wide count, and this node's
/// sessions with their keys.
#[utoipa::path(
    get,
    path = "/api/groups/{group}",
    tag = "groups",
    summary = "A group: its members per node, this node's sessions, its presence",
    params(GroupParam),
    responses(
        (status = 200, description = "The group (an unknown group has no members)", body = GroupView),
        (status = 400, description = "A bad group name (`bad_group_name`)", body = ErrorBody),
        (status = 503, description = BUS_UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn show_group(
    State(state): State<AppState>,
    GroupPath(group): GroupPath,
) -> Result<Json<GroupView>, ApiError> {
    let group = GroupName::new(&group).map_err(ApiError::bad_group)?;
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
    let sessions = hub
        .members(&group)
        .iter()
        .map(|s| SessionView::of(hub.node_id(), s))
        .collect();
    Ok(Json(GroupView {
        name: group,
        members: summary.as_ref().map_or(0, |s| s.members),
        nodes: summary.map(|s| s.nodes).unwrap_or_default(),
        node: hub.node_id().to_string(),
        sessions,
        presence,
    }))
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

/// The description of a 404 for a group that keeps no presence.
const PRESENCE_OFF: &str =
    "The group keeps no presence: `--presence` names it not (`presence_off`)";

/// `GET /api/groups/{group}/members?cursor=&limit=`: a page of the group's
/// members on every node, in the order of their ids, with the counts and
/// the cursor of the next page (`null` on the last).
#[utoipa::path(
    get,
    path = "/api/groups/{group}/members",
    tag = "presence",
    summary = "A page of a group's members on every node",
    params(
        GroupParam,
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page; none for the first"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Members per page (default 100)"),
    ),
    responses(
        (status = 200, description = "A page of members", body = MemberList),
        (status = 400, description = "A bad group name, cursor or limit (`bad_group_name`, `bad_cursor`, `bad_limit`)", body = ErrorBody),
        (status = 404, description = PRESENCE_OFF, body = ErrorBody),
        (status = 503, description = "Presence cannot be read from Redis (`bus_unavailable`)", body = ErrorBody),
    ),
)]
async fn show_members(
    State(state): State<AppState>,
    GroupPath(group): GroupPath,
    RawQuery(query): RawQuery,
) -> Result<Json<MemberList>, ApiError> {
    let group = GroupName::new(&group).map_err(ApiError::bad_group)?;
    let (cursor, limit) = members_query(query.as_deref())?;
    keeps_presence(&state, &group)?;
    let page = state
        .hub
        .presence_page(&group, &cursor, limit)
        .await
        .map_err(presence_unavailable)?;
    Ok(Json(MemberList {
        group,
        members: page.members,
        next_cursor: page.next.map(|next| next.encode()),
        count: page.stats.members,
        users: page.stats.users,
    }))
}

/// `GET /api/groups/{group}/users`: the group's distinct users (`sub`) on
/// every node, each with its sessions in the group.
#[utoipa::path(
    get,
    path = "/api/groups/{group}/users",
    tag = "presence",
    summary = "A group's distinct users (`sub`) on every node",
    params(GroupParam),
    responses(
        (status = 200, description = "The users, each with its sessions in the group", body = UserList),
        (status = 400, description = "A bad group name (`bad_group_name`)", body = ErrorBody),
        (status = 404, description = PRESENCE_OFF, body = ErrorBody),
        (status = 503, description = "Presence cannot be read from Redis (`bus_unavailable`)", body = ErrorBody),
    ),
)]
async fn show_users(
    State(state): State<AppState>,
    GroupPath(group): GroupPath,
) -> Result<Json<UserList>, ApiError> {
    let group = GroupName::new(&group).map_err(ApiError::bad_group)?;
    keeps_presence(&state, &group)?;
    let users = state
        .hub
        .presence_users(&group)
        .await
        .map_err(presence_unavailable)?;
    Ok(Json(UserList {
        group,
        count: users.len(),
        users,
    }))
}

/// The most messages one history request returns, and the default.
const HISTORY_LIMIT_DEFAULT: usize = 100;

/// `GET /api/groups/{group}/history?since=&limit=`: the retained messages
/// after `since` (default: from the oldest), at most `limit` (default 100,
/// at most 1000), with the epoch and top offset.
#[utoipa::path(
    get,
    path = "/api/groups/{group}/history",
    tag = "history",
    summary = "A history group's retained messages",
    params(
        GroupParam,
        ("since" = Option<u64>, Query, description = "Messages after this offset (default 0: from the oldest retained)"),
        ("limit" = Option<usize>, Query, minimum = 1, description = "At most this many (default 100; more than 1000 reads 1000)"),
    ),
    responses(
        (status = 200, description = "The messages, oldest first, with the epoch and top offset", body = History),
        (status = 400, description = "A bad group name, `since` or `limit` (`bad_group_name`, `bad_query`)", body = ErrorBody),
        (status = 404, description = "The group keeps no history: no `--history` rule matches it (`no_history`)", body = ErrorBody),
        (status = 503, description = "History cannot be read from Redis (`bus_unavailable`)", body = ErrorBody),
    ),
)]
async fn show_history(
    State(state): State<AppState>,
    GroupPath(group): GroupPath,
    RawQuery(query): RawQuery,
) -> Result<Json<History>, ApiError> {
    let group = GroupName::new(&group).map_err(ApiError::bad_group)?;
    let (mut since, mut limit) = (0u64, HISTORY_LIMIT_DEFAULT);
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
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
    let messages = history
        .messages
        .iter()
        .map(|(offset, message)| match message.as_text() {
            Some(text) => HistoryMessage {
                offset: *offset,
                data: text.to_string(),
                binary: None,
            },
            None => HistoryMessage {
                offset: *offset,
                data: base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    message.payload(),
                ),
                binary: Some(true),
            },
        })
        .collect();
    Ok(Json(History {
        group,
        epoch: history.epoch.map(|epoch| epoch.to_string()),
        offset: history.top,
        messages,
    }))
}

/// `POST /api/sessions/{id}/disconnect`
#[utoipa::path(
    post,
    path = "/api/sessions/{id}/disconnect",
    tag = "sessions",
    summary = "Close a session, on whichever node it is",
    params(("id" = String, Path, description = "The session's id (the welcome's `session`)")),
    request_body(content = Option<DisconnectOptions>, description = "Optional: the close code (4000–4999), reason and whether the client may reconnect; an empty body is all defaults (4009)"),
    responses(
        (status = 200, description = "Closed; `unanswered` names live nodes that did not answer in time", body = Disconnected),
        (status = 400, description = "A bad body: not JSON, an unknown field, a code outside 4000–4999 or one groupcast uses, a code that contradicts `reconnect`, a reason over 123 bytes (`bad_body`)", body = ErrorBody),
        (status = 404, description = "Every live node answered and none has it (`unknown_session`)", body = ErrorBody),
        (status = 503, description = "The other nodes cannot be asked (`bus_unavailable`)", body = ErrorBody),
        (status = 504, description = "No node that answered has it, and some did not answer in time (`no_answer`)", body = ErrorBody),
    ),
)]
async fn disconnect_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Disconnected>, ApiError> {
    let who = Who::Session(SessionId::from(id));
    disconnect(&state, who, disconnect_options(body)?, "unknown_session").await
}

/// `POST /api/users/{sub}/disconnect`: every session whose token's `sub`
/// is this (it may contain `/`; percent-encode anything else).
#[utoipa::path(
    post,
    path = "/api/users/{sub}/disconnect",
    tag = "sessions",
    summary = "Close every session of a user (a token's `sub`), on every node",
    params(("sub" = String, Path, description = "The user: a token's `sub`")),
    request_body(content = Option<DisconnectOptions>, description = "Optional: the close code (4000–4999), reason and whether the client may reconnect; an empty body is all defaults (4009)"),
    responses(
        (status = 200, description = "Closed; `unanswered` names live nodes that did not answer in time", body = Disconnected),
        (status = 400, description = "A bad body (`bad_body`)", body = ErrorBody),
        (status = 404, description = "Every live node answered and none has a session of the user (`unknown_user`)", body = ErrorBody),
        (status = 503, description = "The other nodes cannot be asked (`bus_unavailable`)", body = ErrorBody),
        (status = 504, description = "No node that answered has one, and some did not answer in time (`no_answer`)", body = ErrorBody),
    ),
)]
async fn disconnect_user(
    State(state): State<AppState>,
    Path(sub): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Disconnected>, ApiError> {
    disconnect(
        &state,
        Who::User(sub),
        disconnect_options(body)?,
        "unknown_user",
    )
    .await
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
) -> Result<Json<Disconnected>, ApiError> {
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
        _ => Ok(Json(done)),
    }
}

/// `GET /api/nodes`
#[utoipa::path(
    get,
    path = "/api/nodes",
    tag = "cluster",
    summary = "The cluster's nodes (this node alone when standalone)",
    responses(
        (status = 200, description = "The nodes, as their heartbeats describe them", body = NodeList),
        (status = 503, description = BUS_UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn list_nodes(State(state): State<AppState>) -> Result<Json<NodeList>, ApiError> {
    let nodes = nodes(&state).await?;
    Ok(Json(NodeList {
        node: state.hub.node_id().to_string(),
        nodes,
    }))
}

/// `GET /api/info`: what the demo page needs to know.
#[utoipa::path(
    get,
    path = "/api/info",
    tag = "cluster",
    summary = "This node: its id, backend, Redis connections, version",
    responses((status = 200, description = "This node", body = Info)),
)]
async fn info(State(state): State<AppState>) -> Json<Info> {
    let hub = &state.hub;
    let bus = hub.status();
    Json(Info {
        node: hub.node_id().to_string(),
        mode: bus.kind,
        redis: bus.connections,
        // The hub's setting, which its WebSocket reader applies.
        client_messages: hub.config().client_messages,
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /api/workers`: who runs each group's worker, cluster-wide.
#[utoipa::path(
    get,
    path = "/api/workers",
    tag = "cluster",
    summary = "Who runs each group's worker, cluster-wide",
    responses(
        (status = 200, description = "Every lease, and this node's workers", body = WorkerList),
        (status = 503, description = "The leases cannot be read from Redis (`bus_unavailable`)", body = ErrorBody),
    ),
)]
async fn list_workers(State(state): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    let hub = &state.hub;
    let leases = hub.worker_leases().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            format!("cannot read worker leases: {e}"),
        )
    })?;
    Ok(Json(WorkerList {
        node: hub.node_id().to_string(),
        workers: leases,
        local: hub.workers(),
    }))
}
