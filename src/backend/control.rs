//! Control between nodes: a request one node makes of every other node
//! (disconnect this session, this user) and each node's answer.
//!
//! **Why on the cluster channel.** Every node of every backend already
//! listens to one channel (`groupcast:cluster`: a plain channel on one
//! Redis, Sentinel's primary and shard 0; a shard channel on a Redis
//! Cluster), confirmed and resubscribed like a group's. A channel of its
//! own would have to be subscribed by each of the four subscribers; the
//! cluster channel is there already. Control messages are told apart from
//! broadcasts by their first bytes, `0xC1 'G' 'K' <version>` (an
//! envelope's are `0xC1 'G' 'C'`), so a node never delivers one to a
//! session, and a node of an earlier version counts one as an undecodable
//! envelope and drops it (it does not answer: the asker says so, see
//! `src/control.rs`).
//!
//! **Requests and answers travel the same way.** A request names its
//! asker (`from`) and an id; every other node runs it and publishes its
//! [`ControlReply`] on the same channel, addressed `to` the asker; the
//! others ignore it. Disconnects are rare, so hearing each other's answers
//! costs nothing worth a reply channel per node.
//!
//! Whoever may publish on the Redis may send these, as they may publish
//! any broadcast: the Redis is inside the trust boundary (README, "Threat
//! model").

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::session_id::SessionId;

/// The first three bytes of every control message.
pub const MAGIC: [u8; 3] = [0xC1, b'G', b'K'];
/// The control version this node writes and reads.
pub const VERSION: u8 = 1;

/// One control message. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Asked of every node.
    Request(ControlRequest),
    /// One node's answer to one request.
    Reply(ControlReply),
}

/// A request of one node to every other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// The asking node: answers are addressed to it.
    pub from: String,
    /// Unique among the asker's requests.
    pub id: u64,
    /// What to do.
    pub command: Command,
}

/// What a node is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Close the sessions `who` names, with `code` and `reason`.
    Disconnect {
        /// Whose sessions.
        who: Who,
        /// The WebSocket close code (4000–4999).
        code: u16,
        /// The close reason (at most 123 bytes).
        reason: String,
    },
}

/// Whose sessions a disconnect closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Who {
    /// One session, by id.
    Session(SessionId),
    /// Every session whose token's subject (`sub`) is this.
    User(String),
}

/// One node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlReply {
    /// The asking node.
    pub to: String,
    /// The request's id.
    pub id: u64,
    /// The answering node.
    pub from: String,
    /// How many of its sessions the command closed.
    pub disconnected: u64,
}

/// Why a control message could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control message version {0} is not supported (this node speaks {VERSION})")]
    UnknownVersion(u8),
    #[error("control message body is not valid: {0}")]
    Body(#[from] rmp_serde::decode::Error),
    #[error("control message could not be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

impl Control {
    /// The message with its magic prefix.
    pub fn encode(&self) -> Result<Bytes, ControlError> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        rmp_serde::encode::write_named(&mut out, self)?;
        Ok(Bytes::from(out))
    }

    /// Reads a control message: `None` when `bytes` is not one at all (a
    /// broadcast), an error when it is one this node cannot read. Never
    /// panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Option<Result<Control, ControlError>> {
        let body = bytes.strip_prefix(MAGIC.as_slice())?;
        Some(match body.split_first() {
            Some((&VERSION, body)) => rmp_serde::from_slice(body).map_err(ControlError::from),
            Some((&other, _)) => Err(ControlError::UnknownVersion(other)),
            None => Err(ControlError::UnknownVersion(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let messages = [
            Control::Request(ControlRequest {
                from: "node-a".into(),
                id: 7,
                command: Command::Disconnect {
                    who: Who::User("alice".into()),
                    code: 4509,
                    reason: "banned".into(),
                },
            }),
            Control::Request(ControlRequest {
                from: "node-a".into(),
                id: 8,
                command: Command::Disconnect {
                    who: Who::Session(SessionId::from("00ff")),
                    code: 4009,
                    reason: String::new(),
                },
            }),
            Control::Reply(ControlReply {
                to: "node-a".into(),
                id: 7,
                from: "node-b".into(),
                disconnected: 2,
            }),
        ];
        for message in messages {
            let bytes = message.encode().expect("encodes");
            let back = Control::decode(&bytes).expect("is control").expect("reads");
            assert_eq!(back, message);
        }
    }

    #[test]
    fn broadcasts_are_not_control_and_broken_control_is_an_error() {
        assert!(Control::decode(b"hello").is_none());
        assert!(
            Control::decode(&[0xC1, b'G', b'C', 1]).is_none(),
            "an envelope"
        );
        assert!(matches!(
            Control::decode(&[0xC1, b'G', b'K']),
            Some(Err(ControlError::UnknownVersion(0)))
        ));
        assert!(matches!(
            Control::decode(&[0xC1, b'G', b'K', 9]),
            Some(Err(ControlError::UnknownVersion(9)))
        ));
        assert!(matches!(
            Control::decode(&[0xC1, b'G', b'K', VERSION, 0xff]),
            Some(Err(ControlError::Body(_)))
        ));
    }
}
