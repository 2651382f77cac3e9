//! `groupcast.v1`: the frames a client that asked for positions gets.
//!
//! A client that offers the WebSocket subprotocol `groupcast.v1` gets JSON
//! text frames instead of bare payloads, so that it can tell where it is in
//! a group's history and resume from there (`docs/protocol.md`):
//!
//! * first, `{"type":"welcome",...}`: session, node, group, the group's
//!   `epoch` and top `offset`, and `recovered` when it asked to resume;
//! * then `{"type":"message","offset":N,"epoch":"...","data":"..."}` per
//!   message (`"binary":true` with base64 data for binary payloads; no
//!   offset for groups without history or raw `PUBLISH`es);
//! * when the node sees its own live stream of a group skip offsets (Redis
//!   dropped messages while it reconnected), it closes the group's
//!   `groupcast.v1` sessions with [`close_code::RESUME`](crate::close_code::RESUME)
//!   so that they resume with `since`, and get the missing messages from
//!   history.
//!
//! Every other client (websocat, today's browsers) keeps getting the bare
//! payloads. The message frame of a positioned message is built once and
//! shared by every member's writer (see `Stamp`).

use base64::Engine;
use serde::Serialize;

use std::sync::Arc;

use crate::message::{Message, Utf8Bytes};

/// The subprotocol's name, as offered in `Sec-WebSocket-Protocol`.
pub const V1: &str = "groupcast.v1";

/// How a session's frames are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Bare payloads, as published.
    #[default]
    Raw,
    /// `groupcast.v1` JSON frames.
    V1,
}

/// The first frame of a `groupcast.v1` session.
#[derive(Debug, Clone, Serialize)]
pub struct Welcome {
    /// `welcome`, or `subscribed` when it answers a subscribe request.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The id of the subscribe request it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub session: String,
    pub node: String,
    pub group: String,
    /// The group's epoch; `null` for groups without history (or none yet).
    pub epoch: Option<String>,
    /// The group's newest offset; `null` without history.
    pub offset: Option<u64>,
    /// Whether the group keeps history.
    pub history: bool,
    /// Present when a resume was asked: whether everything missed follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// The first frame of a `groupcast.v1` connection opened without a group
/// (`/ws`): who it is and where. Its groups come later, each with its
/// `subscribed` answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GrouplessWelcome<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub session: &'a str,
    pub node: &'a str,
}

impl GrouplessWelcome<'_> {
    /// The frame's JSON text.
    pub(crate) fn to_json(&self) -> String {
        to_json(self)
    }
}

#[derive(Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// The group it was sent to (absent for a message to sessions, not a
    /// group).
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    data: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    binary: bool,
}

/// A `groupcast.v1` error frame, `{"type":"error","id","group","code",
/// "reason"}`: what a refused request (`id`, the client's) or a refused
/// message is answered with; `id` and `group` are `null` when there are
/// none.
pub(crate) fn error_frame(
    id: Option<u64>,
    group: Option<&str>,
    code: &str,
    reason: &str,
) -> String {
    serde_json::json!({ "type": "error", "id": id, "group": group, "code": code, "reason": reason })
        .to_string()
}

/// Serializing these structs (strings and integers only) cannot fail; the
/// fallback keeps the library free of `unwrap`.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| r#"{"type":"error"}"#.to_string())
}

impl Welcome {
    /// The frame's JSON text.
    pub(crate) fn to_json(&self) -> String {
        to_json(self)
    }
}

/// A message's place in its group's history, as a `groupcast.v1` client
/// is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub offset: u64,
    pub epoch: Arc<str>,
}

impl Stamp {
    pub(crate) fn new(offset: u64, epoch: Arc<str>) -> Self {
        Stamp { offset, epoch }
    }
}

/// A message as a `groupcast.v1` message frame (JSON text), with its
/// position when it has one.
pub(crate) fn message_frame(
    message: &Message,
    group: Option<&str>,
    position: Option<(u64, &str)>,
) -> Utf8Bytes {
    let (data, binary) = match message {
        Message::Text(text) => (std::borrow::Cow::Borrowed(text.as_str()), false),
        Message::Binary(bytes) => (
            std::borrow::Cow::Owned(base64::engine::general_purpose::STANDARD.encode(bytes)),
            true,
        ),
    };
    Utf8Bytes::from(to_json(&MessageFrame {
        kind: "message",
        group,
        offset: position.map(|p| p.0),
        epoch: position.map(|p| p.1),
        data,
        binary,
    }))
}

/// The last offset a session was sent of each group's epoch, so that a
/// live message the backlog already held is not sent twice. (Gaps are the
/// node's business: see `delivery.rs`.) A session holds few groups: a
/// short list, most recent first, beats a map.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    last: Vec<(Arc<str>, u64)>,
}

/// Epochs a session remembers at most (one per group it holds; beyond,
/// the oldest is forgotten: a repeat of a group it left is then sent).
const MAX_EPOCHS: usize = 128;

impl Offsets {
    /// Whether `stamp` is news to this session (not a repeat).
    pub(crate) fn is_new(&mut self, stamp: &Stamp) -> bool {
        if let Some(at) = self
            .last
            .iter()
            .position(|(epoch, _)| **epoch == *stamp.epoch)
        {
            let last = &mut self.last[at].1;
            if stamp.offset <= *last {
                return false;
            }
            // A known epoch: no clone of it (every member's writer would
            // touch its shared count once per message).
            *last = stamp.offset;
            return true;
        }
        if self.last.len() >= MAX_EPOCHS {
            self.last.remove(0);
        }
        self.last.push((stamp.epoch.clone(), stamp.offset));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_skip_repeats_only() {
        let e1: Arc<str> = Arc::from("e1");
        let mut offsets = Offsets::default();
        assert!(offsets.is_new(&Stamp::new(5, e1.clone())));
        assert!(!offsets.is_new(&Stamp::new(5, e1.clone())));
        assert!(!offsets.is_new(&Stamp::new(4, e1.clone())));
        assert!(
            offsets.is_new(&Stamp::new(9, e1.clone())),
            "a jump is not a repeat"
        );
        assert!(
            offsets.is_new(&Stamp::new(1, Arc::from("e2"))),
            "a new epoch"
        );
        // Two groups interleaved: each keeps its own last offset.
        assert!(
            !offsets.is_new(&Stamp::new(9, e1.clone())),
            "e1 is still known"
        );
        assert!(offsets.is_new(&Stamp::new(10, e1.clone())));
        assert!(!offsets.is_new(&Stamp::new(1, Arc::from("e2"))));
    }
}
