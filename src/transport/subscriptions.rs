//! Many groups over one `groupcast.v1` connection: `subscribe` and
//! `unsubscribe` requests on a live session, whatever its transport can
//! carry them (a WebSocket; an event stream only goes one way).
//!
//! ```json
//! {"type":"subscribe","group":"task/42","history":100,"id":1}
//! {"type":"subscribe","group":"task/43","since":17,"epoch":"0560…","id":2}
//! {"type":"unsubscribe","group":"task/42","id":3}
//! ```
//!
//! Each is answered on the same connection, without touching its other
//! groups: `subscribed` (the same fields as a welcome: epoch, offset,
//! `recovered` for a resume, and the request's `id`), `unsubscribed`, or an
//! `error` with a machine `code` and a `reason`. A subscribe is checked as
//! a connection to the group would be: the name, the token's grants (the
//! token the connection was admitted with, or its latest refresh), the
//! node's group limit, and the connection's own limit
//! (`Config::max_groups_per_connection`). Its backlog or resume is the
//! join's catch-up (`resume.rs`), for that group only: the connection's
//! queue is held while the history is read, and the answer and backlog go
//! in front of what arrived meanwhile. Requests count against the
//! connection's inbound rate like any message.

use serde::Deserialize;
use serde_json::json;

use crate::group::GroupName;
use crate::outbound::Queued;
use crate::resume::Replay;
use crate::{Hub, HubError, LimitRejection, Session};

/// A request, as the client sends it.
#[derive(Debug, Deserialize)]
struct Request {
    #[serde(rename = "type")]
    kind: String,
    group: Option<String>,
    id: Option<u64>,
    history: Option<u64>,
    since: Option<u64>,
    epoch: Option<String>,
    /// Whether to send the group's presence snapshot after `subscribed`.
    #[serde(default)]
    presence: bool,
}

/// Whether `text` is a subscription request (`subscribe` or
/// `unsubscribe`); every other text is an ordinary message. Cheap for
/// ordinary messages: only a JSON object naming one of the two types is
/// parsed whole.
fn request_of(text: &str) -> Option<Request> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') || !trimmed.contains("subscribe") {
        return None;
    }
    let request: Request = serde_json::from_str(text).ok()?;
    matches!(request.kind.as_str(), "subscribe" | "unsubscribe").then_some(request)
}

/// Handles `text` if it is a subscription request of `session`: `true`
/// when it was one (answered, or being answered), `false` for an ordinary
/// message. `token` is the one the connection was admitted (or last
/// refreshed) with.
pub(crate) fn try_request(hub: &Hub, session: &Session, token: Option<&str>, text: &str) -> bool {
    let Some(request) = request_of(text) else {
        return false;
    };
    let id = request.id;
    let answer = match request.kind.as_str() {
        "subscribe" => subscribe(hub, session, token, request),
        _ => unsubscribe(hub, session, request),
    };
    if let Err((group, code, reason)) = answer {
        let error = crate::protocol::error_frame(id, group.as_deref(), code, &reason);
        session.push(Queued::protocol(error));
    }
    true
}

/// Why a request was refused: the group it named, a machine code, a
/// reason.
type Refused = (Option<String>, &'static str, String);

fn group_of(request: &Request) -> Result<GroupName, Refused> {
    let Some(name) = &request.group else {
        return Err((None, "bad_request", "a request needs a \"group\"".into()));
    };
    GroupName::new(name).map_err(|error| {
        (
            Some(name.clone()),
            "bad_group_name",
            format!("invalid group name: {error}"),
        )
    })
}

fn subscribe(
    hub: &Hub,
    session: &Session,
    token: Option<&str>,
    request: Request,
) -> Result<(), Refused> {
    let group = group_of(&request)?;
    let named = Some(group.to_string());
    let replay = replay_of(&request).map_err(|reason| (named.clone(), "bad_query", reason))?;
    let held = session.groups();
    if held.contains(&group) {
        return Err((
            named,
            "already_subscribed",
            format!("already subscribed to {group}"),
        ));
    }
    let limit = hub.config().max_groups_per_connection;
    if limit > 0 && held.len() >= limit {
        return Err((
            named,
            "too_many_groups",
            format!("a connection may hold at most {limit} groups"),
        ));
    }
    if let Err(error) = hub.client_auth().admit(&group, token) {
        hub.metrics().count_auth_rejection(error.code());
        return Err((named, "group_not_allowed", error.to_string()));
    }
    if request.presence {
        crate::presence::snapshot::may_have_snapshot(hub, &group, &session.claims())
            .map_err(|refusal| (named.clone(), refusal.code(), refusal.to_string()))?;
    }
    if !session.outbound().hold() {
        return Ok(()); // closing: nothing to answer
    }
    if let Err(error) = hub.join_group(session, &group) {
        let reason = match &error {
            HubError::Limit(limit @ LimitRejection::Groups { .. }) => limit.to_string(),
            other => other.to_string(),
        };
        let error =
            crate::protocol::error_frame(request.id, named.as_deref(), "node_full", &reason);
        session
            .outbound()
            .release(vec![Queued::protocol(error)], None);
        return Ok(());
    }
    // The history read runs beside the connection: its reads and writes
    // go on (other groups' messages wait behind the hold).
    let (hub, session, id) = (hub.clone(), session.clone(), request.id.unwrap_or(0));
    let presence = request.presence;
    tokio::spawn(async move {
        hub.catch_up_in(&session, &group, &replay, Some(id), presence)
            .await;
    });
    Ok(())
}

fn unsubscribe(hub: &Hub, session: &Session, request: Request) -> Result<(), Refused> {
    let group = group_of(&request)?;
    if !hub.leave_group(session, &group) {
        return Err((
            Some(group.to_string()),
            "not_subscribed",
            format!("not subscribed to {group}"),
        ));
    }
    let answer = json!({ "type": "unsubscribed", "id": request.id, "group": group.as_str() });
    session.push(Queued::protocol(answer.to_string()));
    Ok(())
}

/// The replay a subscribe asks for: `history`, or `since` with `epoch`,
/// with the same rules as a connection's query.
fn replay_of(request: &Request) -> Result<Replay, String> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(history) = request.history {
        query.append_pair("history", &history.to_string());
    }
    if let Some(since) = request.since {
        query.append_pair("since", &since.to_string());
    }
    if let Some(epoch) = &request.epoch {
        query.append_pair("epoch", epoch);
    }
    let query = query.finish();
    Replay::from_query(Some(&query)).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_subscribe_and_unsubscribe_objects_are_requests() {
        assert!(request_of(r#"{"type":"subscribe","group":"g"}"#).is_some());
        assert!(request_of(r#" {"type":"unsubscribe","group":"g","id":3}"#).is_some());
        assert!(request_of("subscribe to my newsletter").is_none());
        assert!(request_of(r#"{"type":"message","text":"subscribe"}"#).is_none());
        assert!(request_of(r#"{"type":"subscribe""#).is_none(), "not JSON");
    }

    #[test]
    fn a_subscribe_replays_like_a_query() {
        let request =
            request_of(r#"{"type":"subscribe","group":"g","since":4,"epoch":"e1"}"#).unwrap();
        assert_eq!(
            replay_of(&request),
            Ok(Replay::Since {
                offset: 4,
                epoch: "e1".into()
            })
        );
        let request = request_of(r#"{"type":"subscribe","group":"g","since":4}"#).unwrap();
        assert!(replay_of(&request).unwrap_err().contains("needs the epoch"));
        let request =
            request_of(r#"{"type":"subscribe","group":"g","epoch":"a&history=1"}"#).unwrap();
        assert!(
            replay_of(&request).is_err(),
            "no injection through the epoch"
        );
    }
}
