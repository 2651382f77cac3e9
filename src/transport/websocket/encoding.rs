//! How a queued message goes out on a WebSocket: as a frame, built once
//! per message and kind of member and shared by all of them (the queue's
//! [`Encoding`] slots 0–3).
//!
//! Four kinds: a raw client gets the message's bytes as a text or binary
//! frame; a `groupcast.v1` client gets the JSON message frame (with the
//! history position); either may have negotiated permessage-deflate, and
//! then gets the compressed frame of a payload at least as long as the
//! threshold — compressed once, too, whatever the number of members.

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use crate::message::Message;
use crate::outbound::{Encoding, Queued};
use crate::protocol::Protocol;
use crate::wire::{OpCode, deflate, frame};

/// The raw frame (the message's bytes as they are).
const RAW: Encoding = Encoding::slot(0);
/// The raw frame compressed; empty when compressing does not pay.
const RAW_DEFLATED: Encoding = Encoding::slot(1);
/// The `groupcast.v1` message frame.
const V1: Encoding = Encoding::slot(2);
/// The `groupcast.v1` frame compressed; empty when it does not pay.
const V1_DEFLATED: Encoding = Encoding::slot(3);

/// How a member that negotiated permessage-deflate gets its frames.
pub(crate) struct Compression {
    /// Shorter payloads go uncompressed.
    pub threshold: usize,
    /// Counts each message compressed (once, whatever the members).
    pub compressed: Counter,
}

/// The frame a member speaking `protocol` is sent: built once per message
/// and kind, then shared (see the module docs). Lent, not cloned (see
/// [`Queued::encoded`]).
pub(crate) fn frame_for<'a>(
    queued: &'a Queued,
    protocol: Protocol,
    compression: Option<&Compression>,
) -> &'a Bytes {
    // A protocol frame of its own (welcome, reset) is never wrapped.
    let v1 = protocol == Protocol::V1 && !queued.is_protocol();
    let (plain, deflated) = if v1 {
        (V1, V1_DEFLATED)
    } else {
        (RAW, RAW_DEFLATED)
    };
    let plain = queued.encoded(plain, |queued| {
        if v1 {
            let position = queued.stamp().map(|s| (s.offset, &*s.epoch));
            let group = queued.group().map(|group| group.as_str());
            let text = crate::protocol::message_frame(queued.message(), group, position);
            frame::encode(OpCode::Text, false, text.as_bytes())
        } else {
            match queued.message() {
                Message::Text(text) => frame::encode(OpCode::Text, false, text.as_bytes()),
                Message::Binary(data) => frame::encode(OpCode::Binary, false, data),
            }
        }
    });
    let Some(compression) = compression else {
        return plain;
    };
    let deflated = queued.encoded(deflated, |_| {
        let opcode = if plain[0] & 0x0F == OpCode::Binary as u8 {
            OpCode::Binary
        } else {
            OpCode::Text
        };
        let payload = &plain[header_len(plain)..];
        if payload.len() < compression.threshold {
            return Bytes::new();
        }
        compression.compressed.inc();
        deflate::compress(payload)
            .map(|compressed| frame::encode(opcode, true, &compressed))
            .unwrap_or_default()
    });
    if deflated.is_empty() { plain } else { deflated }
}

/// The header length of a frame built by [`frame::encode`].
fn header_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7F) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::{Stamp, Welcome};

    #[test]
    fn positioned_messages_carry_offset_and_epoch() {
        let queued = Queued::new(
            Message::text("hello \"you\""),
            Some(Stamp::new(7, Arc::from("e1"))),
        );
        let frame = sent(Protocol::V1, &queued);
        let json: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"message","offset":7,"epoch":"e1","data":"hello \"you\""})
        );
        assert_eq!(sent(Protocol::Raw, &queued), "hello \"you\"");
    }

    /// The payload of the (short, text) frame a member speaking `protocol` gets.
    fn sent(protocol: Protocol, queued: &Queued) -> String {
        let frame = frame_for(queued, protocol, None);
        String::from_utf8(frame[2..].to_vec()).unwrap()
    }

    #[test]
    fn binary_data_is_base64_and_says_so() {
        let queued = Queued::from(Message::binary(vec![0u8, 255, 1]));
        let frame = sent(Protocol::V1, &queued);
        let json: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"message","data":"AP8B","binary":true})
        );
    }

    #[test]
    fn protocol_frames_are_sent_as_they_are() {
        let welcome = Welcome {
            kind: "welcome",
            id: None,
            session: "s".into(),
            node: "n".into(),
            group: "g".into(),
            epoch: None,
            offset: None,
            history: false,
            recovered: None,
        };
        let welcome = Queued::welcome(&welcome);
        let frame = sent(Protocol::V1, &welcome);
        let json: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(json["type"], "welcome");
        assert!(json.get("recovered").is_none());
    }

    #[test]
    fn a_frame_is_built_once_and_shared_by_every_member() {
        let queued = Queued::from(Message::text("hello"));
        let member = queued.clone(); // what fan-out pushes
        let first = frame_for(&queued, Protocol::Raw, None);
        let second = frame_for(&member, Protocol::Raw, None);
        assert_eq!(&first[..], b"\x81\x05hello");
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the same bytes, not a copy"
        );
    }

    #[test]
    fn v1_members_get_the_json_frame_and_compressed_members_the_deflated_one() {
        let line = "2026-12-01T10:00:00Z INFO compiling groupcast v0.2.0 (/src) ".repeat(4);
        let queued = Queued::new(
            Message::text(line.clone()),
            Some(Stamp::new(7, "e1".into())),
        );
        let v1 = frame_for(&queued, Protocol::V1, None);
        assert!(
            std::str::from_utf8(&v1[4..])
                .unwrap()
                .contains(r#""offset":7"#)
        );
        let compression = Compression {
            threshold: 64,
            compressed: Counter::default(),
        };
        let deflated = frame_for(&queued, Protocol::Raw, Some(&compression));
        assert_eq!(deflated[0], 0xC1, "FIN + RSV1 + text");
        assert!(deflated.len() < line.len() / 2);
        assert_eq!(
            deflated.as_ptr(),
            frame_for(&queued, Protocol::Raw, Some(&compression)).as_ptr(),
            "compressed once"
        );
        assert_eq!(compression.compressed.get(), 1);
        // Below the threshold: plain.
        let short = Queued::from(Message::text("short"));
        assert_eq!(
            frame_for(&short, Protocol::Raw, Some(&compression))[0],
            0x81
        );
    }
}
