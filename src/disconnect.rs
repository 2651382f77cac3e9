//! Disconnect on demand, cluster-wide: `hub.disconnect(Who::User(sub),
//! close)` closes every session of a user (or one session, by id) on
//! whichever node it is, with a close code that tells the client whether
//! it may come back. `POST /api/sessions/{id}/disconnect` and
//! `POST /api/users/{sub}/disconnect` are this over HTTP.
//!
//! The close: **4009** (`disconnected`: the client may reconnect, with
//! backoff, as after any close) by default, **4509** (`disconnected: do
//! not reconnect`) with `reconnect: false`; or the caller's own code in
//! 4000–4999, whose range says the same (4500–4999: do not reconnect;
//! docs/protocol.md, "Close codes").
//!
//! How the other nodes are asked and how long the hub waits for them is
//! `control.rs`. Above the hub, like `presence/api.rs`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::backend::control::{Command, Who};
use crate::close::{CloseKind, CloseReason, is_final_code};
use crate::control::ANSWER_TIMEOUT;
use crate::error::HubError;
use crate::hub::Hub;
use crate::wire::close_code;

/// The longest close reason a WebSocket close frame carries, in bytes.
pub const MAX_REASON_BYTES: usize = 123;

/// How a disconnect closes its sessions, as a caller gives it (the JSON
/// body of the API's disconnect): every field optional.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectOptions {
    /// A close code of 4000–4999 (default: 4009, or 4509 with
    /// `reconnect: false`).
    pub code: Option<u16>,
    /// The close reason, at most 123 bytes.
    pub reason: Option<String>,
    /// Whether the client may reconnect (default: true, or what `code`'s
    /// range says).
    pub reconnect: Option<bool>,
}

/// Why [`DisconnectOptions`] were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectError {
    #[error("code {0} is not an application close code: use 4000 to 4999")]
    CodeOutOfRange(u16),
    #[error("code {0} is groupcast's own ({1}): use another of 4000 to 4999")]
    ReservedCode(u16, &'static str),
    #[error(
        "code {code} says the client may{} reconnect, but reconnect is {reconnect}: codes 4500 to 4999 mean do not reconnect, 4000 to 4499 may",
        if *.reconnect { " not" } else { "" }
    )]
    CodeContradictsReconnect { code: u16, reconnect: bool },
    #[error("the reason is {0} bytes: at most {MAX_REASON_BYTES} fit in a close frame")]
    ReasonTooLong(usize),
}

impl DisconnectOptions {
    /// The close these options describe, or why they make none.
    pub fn close(&self) -> Result<CloseReason, DisconnectError> {
        let reason = self.reason.clone().unwrap_or_default();
        if reason.len() > MAX_REASON_BYTES {
            return Err(DisconnectError::ReasonTooLong(reason.len()));
        }
        let kind = match (self.code, self.reconnect) {
            (None, reconnect) => CloseKind::Disconnected {
                reconnect: reconnect.unwrap_or(true),
            },
            (Some(code), reconnect) => {
                check_code(code)?;
                let final_code = is_final_code(code);
                if reconnect == Some(final_code) {
                    return Err(DisconnectError::CodeContradictsReconnect {
                        code,
                        reconnect: final_code,
                    });
                }
                CloseKind::from_websocket_code(code)
            }
        };
        let reason: Cow<'static, str> = match (reason.is_empty(), kind.may_reconnect()) {
            (false, _) => reason.into(),
            (true, true) => "disconnected".into(),
            (true, false) => "disconnected: do not reconnect".into(),
        };
        Ok(CloseReason::new(kind, reason))
    }
}

/// A code a disconnect may close with: 4000–4999, but not one groupcast
/// gives another meaning.
fn check_code(code: u16) -> Result<(), DisconnectError> {
    let reserved = match code {
        close_code::TOKEN_EXPIRED => "token expired",
        close_code::REFRESH_REJECTED => "token refresh rejected",
        close_code::RESUME => "resume with since",
        4000..=4999 => return Ok(()),
        _ => return Err(DisconnectError::CodeOutOfRange(code)),
    };
    Err(DisconnectError::ReservedCode(code, reserved))
}

/// What a disconnect did, cluster-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Disconnected {
    /// Sessions closed, on every node that answered.
    pub disconnected: u64,
    /// Live nodes (in the cluster view) that did not answer in time: the
    /// count may be short by their sessions. Empty when every node
    /// answered (or a session's node was found).
    pub unanswered: Vec<String>,
}

impl Hub {
    /// Closes with `close` the sessions `who` names, on every node: this
    /// node's at once, the others' through the backend (`control.rs`),
    /// waiting up to two seconds for every live node's answer. Fails only
    /// when the request cannot be sent or the cluster view read.
    pub async fn disconnect(&self, who: Who, close: CloseReason) -> Result<Disconnected, HubError> {
        let command = Command::Disconnect {
            who,
            code: close.kind.websocket_code(),
            reason: close.reason.into_owned(),
        };
        let control = self.control();
        let local = control.run(&command);
        let Command::Disconnect { who, .. } = &command;
        let first_suffices = matches!(who, Who::Session(_));
        let broker = self.broker();
        if !broker.is_clustered() || (first_suffices && local > 0) {
            return Ok(Disconnected {
                disconnected: local,
                unanswered: Vec::new(),
            });
        }
        let others: Vec<String> = self
            .nodes()
            .await?
            .into_iter()
            .map(|node| node.node_id)
            .filter(|id| id != self.node_id())
            .collect();
        if others.is_empty() {
            return Ok(Disconnected {
                disconnected: local,
                unanswered: Vec::new(),
            });
        }
        let answers = control
            .ask(broker, command, others, first_suffices, ANSWER_TIMEOUT)
            .await?;
        Ok(Disconnected {
            disconnected: local + answers.disconnected,
            unanswered: answers.unanswered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(
        code: Option<u16>,
        reason: Option<&str>,
        reconnect: Option<bool>,
    ) -> DisconnectOptions {
        DisconnectOptions {
            code,
            reason: reason.map(str::to_string),
            reconnect,
        }
    }

    fn code_of(o: DisconnectOptions) -> Result<u16, DisconnectError> {
        o.close().map(|c| c.kind.websocket_code())
    }

    #[test]
    fn the_defaults_are_4009_and_4509_without_reconnect() {
        assert_eq!(code_of(options(None, None, None)), Ok(4009));
        assert_eq!(code_of(options(None, None, Some(true))), Ok(4009));
        let close = options(None, None, Some(false)).close().expect("a close");
        assert_eq!(close.kind.websocket_code(), 4509);
        assert_eq!(close.reason, "disconnected: do not reconnect");
    }

    #[test]
    fn a_code_of_the_callers_says_by_its_range_whether_to_reconnect() {
        assert_eq!(code_of(options(Some(4100), Some("moved"), None)), Ok(4100));
        assert_eq!(code_of(options(Some(4600), None, None)), Ok(4600));
        assert_eq!(code_of(options(Some(4600), None, Some(false))), Ok(4600));
        assert_eq!(
            code_of(options(Some(4600), None, Some(true))),
            Err(DisconnectError::CodeContradictsReconnect {
                code: 4600,
                reconnect: true
            })
        );
        assert!(matches!(
            code_of(options(Some(4100), None, Some(false))),
            Err(DisconnectError::CodeContradictsReconnect { .. })
        ));
    }

    #[test]
    fn bad_codes_and_long_reasons_are_refused() {
        for code in [1000, 3999, 5000] {
            assert_eq!(
                code_of(options(Some(code), None, None)),
                Err(DisconnectError::CodeOutOfRange(code))
            );
        }
        for code in [4001, 4003, 4010] {
            assert!(matches!(
                code_of(options(Some(code), None, None)),
                Err(DisconnectError::ReservedCode(c, _)) if c == code
            ));
        }
        let long = "x".repeat(124);
        assert_eq!(
            code_of(options(None, Some(&long), None)),
            Err(DisconnectError::ReasonTooLong(124))
        );
        assert!(code_of(options(None, Some(&long[..123]), None)).is_ok());
    }
}
