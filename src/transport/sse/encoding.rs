//! How a queued message goes out as a Server-Sent Event: built once per
//! message and shared by every SSE member (the queue's [`Encoding`] slot 4).
//!
//! * a message is an event of the default type (`message`) whose `data`
//!   is the payload as published — one `data:` line per line of it, so
//!   `curl -N` prints a log as it is — and, in a history group, whose `id`
//!   is `<epoch>:<offset>`: the browser sends it back as `Last-Event-ID`
//!   when it reconnects, and the stream resumes right after it;
//! * a binary message is an event of type `binary` whose data is base64;
//! * a `groupcast.v1` protocol frame (the welcome) is an event named for
//!   its `type`, its JSON as the data; a welcome that says a resume was not
//!   complete (`"recovered": false`) is followed by a `reset` event.
//!
//! SSE ends a line at `\r\n`, `\r` or `\n`, and a client joins the `data`
//! lines of an event with `\n`: a text's line breaks arrive as `\n`.

use std::fmt::Write as _;

use base64::Engine as _;
use bytes::Bytes;

use crate::message::Message;
use crate::outbound::{Encoding, Queued};

/// The event of a message, as every SSE member gets it.
const EVENT: Encoding = Encoding::slot(4);

/// The bytes of `queued`'s event, built once and shared (see
/// [`Queued::encoded`]).
pub(crate) fn event_for(queued: &Queued) -> &Bytes {
    queued.encoded(EVENT, build)
}

fn build(queued: &Queued) -> Bytes {
    let mut event = String::new();
    if queued.is_protocol() {
        protocol_event(queued.message(), &mut event);
        return Bytes::from(event);
    }
    if let Some(stamp) = queued.stamp() {
        // An epoch is letters, digits, '-' and '_': never a line break.
        let _ = writeln!(event, "id: {}:{}", stamp.epoch, stamp.offset);
    }
    match queued.message() {
        Message::Text(text) => data_lines(text.as_str(), &mut event),
        Message::Binary(data) => {
            event.push_str("event: binary\n");
            data_lines(
                &base64::engine::general_purpose::STANDARD.encode(data),
                &mut event,
            );
        }
    }
    event.push('\n');
    Bytes::from(event)
}

/// A protocol frame (compact JSON, one line) as an event named for its
/// `type`; a welcome of an incomplete resume adds a `reset` event.
fn protocol_event(message: &Message, event: &mut String) {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        recovered: Option<bool>,
    }
    let json = match message {
        Message::Text(text) => text.as_str(),
        Message::Binary(_) => "{}",
    };
    let (kind, recovered) = match serde_json::from_str::<Kind<'_>>(json) {
        Ok(parsed) => (parsed.kind.into_owned(), parsed.recovered),
        Err(_) => ("groupcast".to_owned(), None),
    };
    let _ = writeln!(event, "event: {kind}");
    data_lines(json, event);
    event.push('\n');
    if recovered == Some(false) {
        event.push_str(&reset_event(
            "the stream could not be resumed from Last-Event-ID: messages may be missing",
        ));
    }
}

/// A `reset` event: the client may have missed messages and should refetch
/// what it shows.
pub(crate) fn reset_event(reason: &str) -> String {
    let json = serde_json::json!({ "type": "reset", "reason": reason }).to_string();
    format!("event: reset\ndata: {json}\n\n")
}

/// The stream's last event: why it ends. EventSource reconnects by itself
/// (and resumes) after it.
pub(crate) fn close_event(reason: &crate::CloseReason) -> Bytes {
    let json = serde_json::json!({
        "type": "close",
        "kind": reason.kind.name(),
        "code": reason.kind.websocket_code(),
        "reason": reason.reason,
        // Whether the client may come back (false: 1008, 4003, 4500–4999).
        "reconnect": reason.kind.may_reconnect(),
    });
    Bytes::from(format!("event: close\ndata: {json}\n\n"))
}

/// `text` as `data:` lines, one per line of it.
fn data_lines(text: &str, event: &mut String) {
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        event.push_str("data: ");
        event.push_str(&rest[..end]);
        event.push('\n');
        if end == rest.len() {
            return;
        }
        // One line break: `\r\n` counts as one.
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::Stamp;

    fn event(queued: &Queued) -> String {
        String::from_utf8(event_for(queued).to_vec()).unwrap()
    }

    #[test]
    fn a_history_message_is_an_event_with_its_position_as_id() {
        let queued = Queued::new(Message::text("built"), Some(Stamp::new(7, Arc::from("e1"))));
        assert_eq!(event(&queued), "id: e1:7\ndata: built\n\n");
        let plain = Queued::from(Message::text("live"));
        assert_eq!(event(&plain), "data: live\n\n");
    }

    #[test]
    fn every_line_break_starts_a_data_line() {
        let queued = Queued::from(Message::text("a\nb\r\nc\rd\n"));
        assert_eq!(
            event(&queued),
            "data: a\ndata: b\ndata: c\ndata: d\ndata: \n\n"
        );
        assert_eq!(event(&Queued::from(Message::text(""))), "data: \n\n");
    }

    #[test]
    fn binary_is_base64_in_a_binary_event() {
        let queued = Queued::from(Message::binary(vec![0u8, 255, 1]));
        assert_eq!(event(&queued), "event: binary\ndata: AP8B\n\n");
    }

    #[test]
    fn an_event_is_built_once_and_shared() {
        let queued = Queued::from(Message::text("once"));
        let member = queued.clone();
        assert_eq!(event_for(&queued).as_ptr(), event_for(&member).as_ptr());
    }

    #[test]
    fn a_welcome_is_a_named_event_and_an_incomplete_resume_adds_a_reset() {
        let welcome = Queued::protocol(r#"{"type":"welcome","recovered":true}"#.into());
        assert_eq!(
            event(&welcome),
            "event: welcome\ndata: {\"type\":\"welcome\",\"recovered\":true}\n\n"
        );
        let lost = Queued::protocol(r#"{"type":"welcome","recovered":false}"#.into());
        let text = event(&lost);
        assert!(text.starts_with("event: welcome\n"), "{text}");
        assert!(text.contains("\n\nevent: reset\ndata: {"), "{text}");
    }

    #[test]
    fn the_close_names_its_kind_and_code() {
        let close = close_event(&crate::CloseReason::new(crate::CloseKind::TooSlow, "full"));
        let text = String::from_utf8(close.to_vec()).unwrap();
        assert!(text.starts_with("event: close\ndata: {"), "{text}");
        assert!(text.contains(r#""kind":"too_slow""#), "{text}");
        assert!(text.contains(r#""code":1013"#), "{text}");
        assert!(text.contains(r#""reconnect":true"#), "{text}");
        let final_close = close_event(&crate::CloseReason::from_websocket_code(4509, "banned"));
        let text = String::from_utf8(final_close.to_vec()).unwrap();
        assert!(text.contains(r#""kind":"disconnected""#), "{text}");
        assert!(text.contains(r#""reconnect":false"#), "{text}");
    }
}
