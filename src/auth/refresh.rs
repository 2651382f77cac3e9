//! Refreshing a live connection's token.
//!
//! A connection admitted with a token is closed when the token expires
//! (close code 4001, "token expired"). To stay connected, the client sends,
//! before that moment, a text frame:
//!
//! ```json
//! {"type": "refresh", "token": "<new token>"}
//! ```
//!
//! The server intercepts it before any application handler sees it (it is
//! never broadcast, and it is allowed even on a receive-only connection).
//! The new token must pass every check a new connection's would, name the
//! same `sub`, and still allow the connection's group. Then it replaces the
//! old one — its `exp`, and its `publish`, which may grant or revoke — and
//! the server answers on the same socket:
//!
//! ```json
//! {"type": "refreshed", "exp": 1767225600}
//! ```
//!
//! A refresh that fails closes the connection with 4003 and the reason
//! ("refresh rejected: token expired", …): the client presented a bad
//! credential, and a connection must never outlive a credential it cannot
//! renew.
//!
//! Only connections admitted with a token intercept refresh messages; on an
//! open or anonymous connection that frame is an ordinary message.

use serde::Deserialize;
use serde_json::json;

use super::claims::Claims;

/// The client's refresh request, as parsed from a text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRequest {
    /// `{"type":"refresh","token":"…"}`.
    Token(String),
    /// `{"type":"refresh", …}` without a usable `token`.
    Malformed,
}

/// Whether `text` is a refresh request. Cheap for every other message: only
/// text that starts with `{` and mentions `refresh` is parsed at all.
pub fn parse_refresh(text: &str) -> Option<RefreshRequest> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') || !trimmed.contains("refresh") {
        return None;
    }
    #[derive(Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: Option<String>,
        token: Option<serde_json::Value>,
    }
    let frame: Frame = serde_json::from_str(trimmed).ok()?;
    if frame.kind.as_deref() != Some("refresh") {
        return None;
    }
    match frame.token {
        Some(serde_json::Value::String(token)) if !token.is_empty() => {
            Some(RefreshRequest::Token(token))
        }
        _ => Some(RefreshRequest::Malformed),
    }
}

/// The server's answer to a successful refresh.
pub fn refreshed_message(claims: &Claims) -> String {
    json!({ "type": "refreshed", "exp": claims.exp }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refresh_frames_are_taken() {
        assert_eq!(
            parse_refresh(r#" {"type":"refresh","token":"a.b.c"}"#),
            Some(RefreshRequest::Token("a.b.c".into()))
        );
        assert_eq!(
            parse_refresh(r#"{"type":"refresh"}"#),
            Some(RefreshRequest::Malformed)
        );
        assert_eq!(
            parse_refresh(r#"{"type":"refresh","token":5}"#),
            Some(RefreshRequest::Malformed)
        );
        assert_eq!(
            parse_refresh(r#"{"type":"chat","text":"refresh please"}"#),
            None
        );
        assert_eq!(parse_refresh("refresh"), None);
        assert_eq!(parse_refresh(r#"{"type":"refresh""#), None);
    }
}
