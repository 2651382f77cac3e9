//! Why a session ends, in words every transport understands.
//!
//! The session, the queue and the hub say *why* ([`CloseKind`]: the client
//! was too slow, its token expired, it must resume elsewhere…); each
//! transport maps that to its own signal: the WebSocket transport to a
//! close code ([`CloseKind::websocket_code`], RFC 6455 section 7.4 and
//! groupcast's 4xxx codes), a transport without close codes to a final
//! event naming the kind ([`CloseKind::name`]). Plain data at the bottom of
//! the layers, as Centrifugo's disconnect codes are: the same reason, sent
//! by any transport.

use std::borrow::Cow;

use crate::wire::close_code;

/// Why a session was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// Done: nothing went wrong.
    Normal,
    /// The server is going away (shutdown, drain): reconnect elsewhere.
    GoingAway,
    /// The client broke its transport's protocol.
    ProtocolError,
    /// The client sent data that is not what it claims (text that is not
    /// UTF-8, a corrupt compressed message).
    InvalidPayload,
    /// The client did something it may not (publish without the right,
    /// send faster than its rate).
    PolicyViolation,
    /// A message was larger than the configured maximum.
    TooBig,
    /// The server hit an unexpected condition.
    Internal,
    /// The client could not keep up (its queue overflowed): try again later.
    TooSlow,
    /// The client's token expired and was not refreshed in time.
    TokenExpired,
    /// A token refresh was refused.
    RefreshRejected,
    /// Continuity was lost: reconnect with your last position and history
    /// fills the gap.
    Resume,
    /// Disconnected on demand (`POST /api/sessions/{id}/disconnect`,
    /// `/api/users/{sub}/disconnect`, `Hub::disconnect`): 4009 when the
    /// client may come back, 4509 when it must not.
    Disconnected {
        /// Whether the client may reconnect.
        reconnect: bool,
    },
    /// The application's own reason, by its WebSocket-style code (melody's
    /// `CloseWithMsg`; 4000–4999 are the application's, and 4500–4999 say
    /// "do not reconnect").
    Application(u16),
}

impl CloseKind {
    /// The kind a WebSocket close code stands for (any code groupcast does
    /// not name is the application's).
    pub fn from_websocket_code(code: u16) -> Self {
        match code {
            close_code::NORMAL => CloseKind::Normal,
            close_code::GOING_AWAY => CloseKind::GoingAway,
            close_code::PROTOCOL_ERROR => CloseKind::ProtocolError,
            close_code::INVALID_PAYLOAD => CloseKind::InvalidPayload,
            close_code::POLICY => CloseKind::PolicyViolation,
            close_code::TOO_BIG => CloseKind::TooBig,
            close_code::INTERNAL => CloseKind::Internal,
            close_code::TRY_AGAIN_LATER => CloseKind::TooSlow,
            close_code::TOKEN_EXPIRED => CloseKind::TokenExpired,
            close_code::REFRESH_REJECTED => CloseKind::RefreshRejected,
            close_code::RESUME => CloseKind::Resume,
            close_code::DISCONNECTED => CloseKind::Disconnected { reconnect: true },
            close_code::DISCONNECTED_FINAL => CloseKind::Disconnected { reconnect: false },
            other => CloseKind::Application(other),
        }
    }

    /// The WebSocket close code for this kind: the inverse of
    /// [`CloseKind::from_websocket_code`].
    pub fn websocket_code(self) -> u16 {
        match self {
            CloseKind::Normal => close_code::NORMAL,
            CloseKind::GoingAway => close_code::GOING_AWAY,
            CloseKind::ProtocolError => close_code::PROTOCOL_ERROR,
            CloseKind::InvalidPayload => close_code::INVALID_PAYLOAD,
            CloseKind::PolicyViolation => close_code::POLICY,
            CloseKind::TooBig => close_code::TOO_BIG,
            CloseKind::Internal => close_code::INTERNAL,
            CloseKind::TooSlow => close_code::TRY_AGAIN_LATER,
            CloseKind::TokenExpired => close_code::TOKEN_EXPIRED,
            CloseKind::RefreshRejected => close_code::REFRESH_REJECTED,
            CloseKind::Resume => close_code::RESUME,
            CloseKind::Disconnected { reconnect: true } => close_code::DISCONNECTED,
            CloseKind::Disconnected { reconnect: false } => close_code::DISCONNECTED_FINAL,
            CloseKind::Application(code) => code,
        }
    }

    /// A short machine name, for transports without close codes
    /// (`"too_slow"`, `"resume"`; `"application"` for the application's).
    pub fn name(self) -> &'static str {
        match self {
            CloseKind::Normal => "normal",
            CloseKind::GoingAway => "going_away",
            CloseKind::ProtocolError => "protocol_error",
            CloseKind::InvalidPayload => "invalid_payload",
            CloseKind::PolicyViolation => "policy_violation",
            CloseKind::TooBig => "too_big",
            CloseKind::Internal => "internal",
            CloseKind::TooSlow => "too_slow",
            CloseKind::TokenExpired => "token_expired",
            CloseKind::RefreshRejected => "refresh_rejected",
            CloseKind::Resume => "resume",
            CloseKind::Disconnected { .. } => "disconnected",
            CloseKind::Application(_) => "application",
        }
    }

    /// Whether a client may reconnect after this close: not after a
    /// policy violation, a refused refresh, a disconnect for good, nor
    /// any code in 4500–4999 (docs/protocol.md, "Close codes"). What the
    /// JS client does, and what the SSE `close` event says.
    pub fn may_reconnect(self) -> bool {
        match self {
            CloseKind::PolicyViolation | CloseKind::RefreshRejected => false,
            CloseKind::Disconnected { reconnect } => reconnect,
            CloseKind::Application(code) => !is_final_code(code),
            _ => true,
        }
    }
}

/// Whether `code` is in 4500–4999, the codes that say "do not reconnect".
pub fn is_final_code(code: u16) -> bool {
    (close_code::FINAL_RANGE_START..=4999).contains(&code)
}

/// A session's close: why, and a short human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Why.
    pub kind: CloseKind,
    /// A short human-readable reason (at most 123 bytes on a WebSocket).
    pub reason: Cow<'static, str>,
}

impl CloseReason {
    /// A close of `kind` with `reason`.
    pub fn new(kind: CloseKind, reason: impl Into<Cow<'static, str>>) -> Self {
        CloseReason {
            kind,
            reason: reason.into(),
        }
    }

    /// A close given by its WebSocket close code (melody's API).
    pub fn from_websocket_code(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        CloseReason::new(CloseKind::from_websocket_code(code), reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_websocket_code_maps_to_a_kind_and_back() {
        for code in [
            1000, 1001, 1002, 1007, 1008, 1009, 1011, 1013, 4001, 4003, 4009, 4010, 4509, 4000,
            4999, 3000,
        ] {
            let kind = CloseKind::from_websocket_code(code);
            assert_eq!(kind.websocket_code(), code, "{kind:?}");
        }
        assert_eq!(CloseKind::from_websocket_code(1013), CloseKind::TooSlow);
        assert_eq!(
            CloseKind::from_websocket_code(4000),
            CloseKind::Application(4000)
        );
        assert_eq!(CloseKind::TooSlow.name(), "too_slow");
    }

    #[test]
    fn codes_from_4500_say_do_not_reconnect() {
        assert!(CloseKind::from_websocket_code(4009).may_reconnect());
        assert!(!CloseKind::from_websocket_code(4509).may_reconnect());
        assert!(CloseKind::Application(4499).may_reconnect());
        assert!(!CloseKind::Application(4500).may_reconnect());
        assert!(!CloseKind::Application(4999).may_reconnect());
        assert!(!CloseKind::RefreshRejected.may_reconnect());
        assert!(CloseKind::GoingAway.may_reconnect());
        assert_eq!(
            CloseKind::Disconnected { reconnect: false }.name(),
            "disconnected"
        );
    }
}
