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
//! * `{"type":"reset",...}` when continuity was lost while connected.
//!
//! Every other client (websocat, today's browsers) keeps getting the bare
//! payloads. The message frame of a positioned message is built once and
//! shared by every member's writer (see `outbound::Stamp`).

use base64::Engine;
use serde::Serialize;

use crate::message::{Message, Utf8Bytes};
use crate::outbound::Queued;

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
    #[serde(rename = "type")]
    pub kind: &'static str,
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

/// `{"type":"reset",...}`: continuity lost; continue from `offset`.
#[derive(Debug, Clone, Serialize)]
pub struct Reset<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub epoch: &'a str,
    pub offset: u64,
    pub reason: &'a str,
}

#[derive(Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    data: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    binary: bool,
}

/// Serializing these structs (strings and integers only) cannot fail; the
/// fallback keeps the library free of `unwrap`.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| r#"{"type":"error"}"#.to_string())
}

impl Welcome {
    pub(crate) fn frame(&self) -> Queued {
        Queued::protocol(to_json(self))
    }
}

impl Reset<'_> {
    pub(crate) fn frame(&self) -> Queued {
        Queued::protocol(to_json(self))
    }
}

/// `queued` as this session's protocol wants it.
pub(crate) fn encode(protocol: Protocol, queued: &Queued) -> Message {
    if protocol == Protocol::Raw || queued.protocol {
        return queued.message.clone();
    }
    match &queued.stamp {
        // Once per message, whatever the number of members.
        Some(stamp) => Message::Text(
            stamp
                .v1_frame
                .get_or_init(|| message_frame(&queued.message, Some((stamp.offset, &stamp.epoch))))
                .clone(),
        ),
        None => Message::Text(message_frame(&queued.message, None)),
    }
}

fn message_frame(message: &Message, position: Option<(u64, &str)>) -> Utf8Bytes {
    let (data, binary) = match message {
        Message::Text(text) => (std::borrow::Cow::Borrowed(text.as_str()), false),
        Message::Binary(bytes) => (
            std::borrow::Cow::Owned(base64::engine::general_purpose::STANDARD.encode(bytes)),
            true,
        ),
    };
    Utf8Bytes::from(to_json(&MessageFrame {
        kind: "message",
        offset: position.map(|p| p.0),
        epoch: position.map(|p| p.1),
        data,
        binary,
    }))
}

/// What a session's writer makes of the next positioned message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Continuity {
    /// The one after the last (or the first seen): send it.
    Next,
    /// Already sent (a live message the backlog also held): skip it.
    Duplicate,
    /// Offsets or an epoch are missing in between: send it, and tell a
    /// `groupcast.v1` client with a reset.
    Broken(&'static str),
}

/// The last offset a session was sent, to tell a gap from a duplicate.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    last: Option<(std::sync::Arc<str>, u64)>,
}

impl Offsets {
    pub(crate) fn next(&mut self, stamp: &crate::outbound::Stamp) -> Continuity {
        let verdict = match &self.last {
            None => Continuity::Next,
            Some((epoch, last)) if **epoch == *stamp.epoch => {
                if stamp.offset <= *last {
                    return Continuity::Duplicate;
                } else if stamp.offset == last + 1 {
                    Continuity::Next
                } else {
                    Continuity::Broken("messages were lost in between")
                }
            }
            Some(_) => Continuity::Broken("the group's history was lost (new epoch)"),
        };
        self.last = Some((stamp.epoch.clone(), stamp.offset));
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Stamp;
    use std::sync::Arc;

    #[test]
    fn positioned_messages_carry_offset_and_epoch() {
        let queued = Queued {
            message: Message::text("hello \"you\""),
            stamp: Some(Stamp::new(7, Arc::from("e1"))),
            protocol: false,
        };
        let frame = encode(Protocol::V1, &queued);
        let json: serde_json::Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"message","offset":7,"epoch":"e1","data":"hello \"you\""})
        );
        assert_eq!(
            encode(Protocol::Raw, &queued),
            Message::text("hello \"you\"")
        );
    }

    #[test]
    fn binary_data_is_base64_and_says_so() {
        let queued = Queued::from(Message::binary(vec![0u8, 255, 1]));
        let frame = encode(Protocol::V1, &queued);
        let json: serde_json::Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"message","data":"AP8B","binary":true})
        );
    }

    #[test]
    fn protocol_frames_are_sent_as_they_are() {
        let welcome = Welcome {
            kind: "welcome",
            session: "s".into(),
            node: "n".into(),
            group: "g".into(),
            epoch: None,
            offset: None,
            history: false,
            recovered: None,
        }
        .frame();
        let frame = encode(Protocol::V1, &welcome);
        let json: serde_json::Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
        assert_eq!(json["type"], "welcome");
        assert!(json.get("recovered").is_none());
    }

    #[test]
    fn offsets_tell_next_duplicate_and_gap() {
        let e1: Arc<str> = Arc::from("e1");
        let mut offsets = Offsets::default();
        assert_eq!(offsets.next(&Stamp::new(5, e1.clone())), Continuity::Next);
        assert_eq!(offsets.next(&Stamp::new(6, e1.clone())), Continuity::Next);
        assert_eq!(
            offsets.next(&Stamp::new(6, e1.clone())),
            Continuity::Duplicate
        );
        assert!(matches!(
            offsets.next(&Stamp::new(9, e1.clone())),
            Continuity::Broken(_)
        ));
        assert!(matches!(
            offsets.next(&Stamp::new(1, Arc::from("e2"))),
            Continuity::Broken(_)
        ));
        assert_eq!(
            offsets.next(&Stamp::new(2, Arc::from("e2"))),
            Continuity::Next
        );
    }
}
