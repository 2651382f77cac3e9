//! The wire format between nodes, on Redis pub/sub.
//!
//! Every message on a group channel (`group:<name>`) or the cluster channel
//! is one of two things:
//!
//! * an **envelope**, published by a groupcast node: the 4 bytes
//!   `0xC1 'G' 'C' <version>` then a MessagePack map (rmp-serde, named
//!   fields) of [`Envelope`]. `0xC1` is never valid MessagePack and never
//!   starts valid UTF-8, so an envelope cannot be mistaken for text someone
//!   published with `redis-cli`;
//! * a **raw payload** from outside: any other bytes. It is delivered as a
//!   text frame when it is valid UTF-8 and as a binary frame otherwise.
//!
//! Versioning: fields are encoded by name and every field added after
//! version 1 has a default, so a node ignores fields it does not know and
//! older nodes keep working when newer ones add fields (history offsets,
//! say). The version byte changes only for an incompatible layout; a node
//! counts and drops envelopes of a version it does not speak.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::broadcast::KeyFilter;
use crate::message::Message;
use crate::session_id::SessionId;

/// The first three bytes of every envelope.
pub const MAGIC: [u8; 3] = [0xC1, b'G', b'C'];
/// The envelope version this node writes and reads.
pub const VERSION: u8 = 1;

/// Whether the payload is a text or binary frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    Text,
    Binary,
}

/// What a node publishes. See the module docs for the framing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The publishing node's id; a node skips its own envelopes (it has
    /// already delivered them locally).
    pub origin: String,
    /// Per-origin sequence number, increasing by one per publish.
    pub id: u64,
    /// Text or binary.
    pub kind: FrameKind,
    /// A session that must not receive it.
    #[serde(default)]
    pub except: Option<SessionId>,
    /// Only sessions whose keys match receive it.
    #[serde(default)]
    pub filter: Option<KeyFilter>,
    /// On the cluster channel: the addressed sessions (absent = everyone).
    #[serde(default)]
    pub sessions: Option<Vec<SessionId>>,
    /// The frame's payload.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// A `groupcast.v1` presence frame (join, leave, user_joined,
    /// user_left): the payload is the frame's JSON, sent as it is to the
    /// group's `groupcast.v1` members that may see presence, and to no
    /// raw client. Absent (false) on every other envelope.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presence: bool,
    /// A presence frame's position in its group (see
    /// `backend/transition.rs`): the frame is sent only to members whose
    /// snapshot is older. Absent on every other envelope (and from nodes
    /// before positions: 0, older than every snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_seq: Option<u64>,
}

/// What a message read from a channel turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A groupcast envelope.
    Envelope(Envelope),
    /// Bytes from outside groupcast.
    Raw(Bytes),
}

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope version {0} is not supported (this node speaks {VERSION})")]
    UnknownVersion(u8),
    #[error("envelope is truncated")]
    Truncated,
    #[error("envelope body is not valid: {0}")]
    Body(#[from] rmp_serde::decode::Error),
    #[error("text envelope payload is not valid UTF-8")]
    InvalidText,
    #[error("envelope could not be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

impl Envelope {
    /// Encodes the envelope with its magic prefix.
    pub fn encode(&self) -> Result<Bytes, EnvelopeError> {
        let mut out = Vec::with_capacity(self.payload.len() + 64);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        rmp_serde::encode::write_named(&mut out, self)?;
        Ok(Bytes::from(out))
    }

    /// The frame this envelope carries.
    pub fn message(&self) -> Result<Message, EnvelopeError> {
        match self.kind {
            FrameKind::Binary => Ok(Message::binary(self.payload.clone())),
            FrameKind::Text => String::from_utf8(self.payload.clone())
                .map(Message::text)
                .map_err(|_| EnvelopeError::InvalidText),
        }
    }
}

/// Reads one message from a channel. Never panics, whatever the bytes.
pub fn decode(bytes: Bytes) -> Result<Decoded, EnvelopeError> {
    if bytes.first() != Some(&MAGIC[0]) {
        return Ok(Decoded::Raw(bytes));
    }
    if bytes.len() < 4 || bytes[..3] != MAGIC {
        // 0xC1 never starts valid UTF-8 nor MessagePack: it is ours, broken.
        return Err(EnvelopeError::Truncated);
    }
    if bytes[3] != VERSION {
        return Err(EnvelopeError::UnknownVersion(bytes[3]));
    }
    Ok(Decoded::Envelope(rmp_serde::from_slice(&bytes[4..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            origin: "node-a".into(),
            id: 7,
            kind: FrameKind::Text,
            except: Some(SessionId::from("s1")),
            filter: Some(KeyFilter::equals("role", "admin")),
            sessions: None,
            payload: b"hello".to_vec(),
            presence: false,
            presence_seq: None,
        }
    }

    #[test]
    fn round_trips() {
        let env = sample();
        match decode(env.encode().unwrap()).unwrap() {
            Decoded::Envelope(back) => assert_eq!(back, env),
            other => panic!("expected envelope, got {other:?}"),
        }
    }

    #[test]
    fn raw_text_is_not_an_envelope() {
        assert!(matches!(
            decode(Bytes::from_static(b"hello")),
            Ok(Decoded::Raw(_))
        ));
        assert!(matches!(decode(Bytes::new()), Ok(Decoded::Raw(_))));
    }

    #[test]
    fn broken_envelopes_are_errors() {
        assert!(matches!(
            decode(Bytes::from_static(&[0xC1])),
            Err(EnvelopeError::Truncated)
        ));
        assert!(matches!(
            decode(Bytes::from_static(&[0xC1, b'G', b'C', 9, 1])),
            Err(EnvelopeError::UnknownVersion(9))
        ));
        assert!(matches!(
            decode(Bytes::from_static(&[0xC1, b'G', b'C', 1, 0xff, 0x00])),
            Err(EnvelopeError::Body(_))
        ));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        // A newer node adds a field: this node still reads the envelope.
        #[derive(Serialize)]
        struct Newer<'a> {
            origin: &'a str,
            id: u64,
            kind: FrameKind,
            #[serde(with = "serde_bytes")]
            payload: &'a [u8],
            offset: u64,
        }
        let mut out = vec![0xC1, b'G', b'C', VERSION];
        rmp_serde::encode::write_named(
            &mut out,
            &Newer {
                origin: "n",
                id: 1,
                kind: FrameKind::Binary,
                payload: b"x",
                offset: 99,
            },
        )
        .unwrap();
        match decode(Bytes::from(out)).unwrap() {
            Decoded::Envelope(env) => assert_eq!(env.payload, b"x"),
            other => panic!("expected envelope, got {other:?}"),
        }
    }
}
