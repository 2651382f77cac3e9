//! Claims: what a token says on the wire, and what a session may do.
//!
//! ## The token's claims (the wire format)
//!
//! ```json
//! {
//!   "sub": "alice",                 // required: who this is
//!   "groups": ["chat", "task/*"],   // the groups it may join (patterns)
//!   "publish": true,                // may it send into its group? default false
//!   "presence": false,              // may it see who else is there? default true
//!   "exp": 1767225600,              // required: expiry (seconds since epoch)
//!   "nbf": 1767222000,              // optional: not before
//!   "iss": "...", "aud": "..."      // checked when --jwt-issuer / --jwt-audience are set
//! }
//! ```
//!
//! `groups` and `publish` are top-level claims, short and readable, as in
//! other realtime servers' connection tokens. The price: an identity
//! provider's token that happens to carry a `groups` claim of its own would
//! be read as a grant. groupcast tokens are meant to be minted by *your*
//! backend for groupcast; when the keys are shared with other services, set
//! `--jwt-audience` so only tokens minted for groupcast are accepted.
//!
//! `publish` defaults to false: a token that does not say otherwise gives a
//! receive-only connection — the safe default for live feeds.
//!
//! `presence` defaults to true: a client may see the presence (member
//! list, join and leave) of the groups it may join, and only of those;
//! `presence: false` denies it that for every group (a viewer of a live
//! feed who must not learn who else watches). The join/leave frames of
//! `--join-leave` groups reach only sessions that
//! [`Claims::may_see_presence`] (`Session::sees_presence_frames`); the
//! member list is read only by the HTTP API, behind its key.
//!
//! ## The session's claims
//!
//! [`Claims`] is what the server decided when the connection was admitted
//! (and again at each refresh): how it got in, who it is, whether it may
//! publish, and when it must go. It is typed and stored on the
//! [`Session`](crate::Session), not in its free-form keys, so an
//! application handler calling `session.set("publish", true)` cannot grant
//! anything. The subject is also copied to the session key `sub`, where the
//! HTTP API shows it and a [`KeyFilter`](crate::KeyFilter) can select it
//! (`hub.all().matching(KeyFilter::equals("sub", "alice")).send(…)` reaches all of
//! Alice's connections, cluster-wide).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The claims groupcast reads from a token (after its signature, `exp`,
/// `nbf`, `iss` and `aud` have been checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The subject: who the client is.
    pub sub: String,
    /// Group names and patterns the client may join.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether the client may send messages into its group.
    #[serde(default)]
    pub publish: bool,
    /// Whether the client may see presence in the groups it may join
    /// (default true; see the module docs).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub presence: bool,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: a string or a list of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

fn yes() -> bool {
    true
}

fn is_yes(value: &bool) -> bool {
    *value
}

/// How a session got in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// No keys are configured: everyone may connect and publish.
    Open,
    /// Without a token, into a group of `--anonymous-groups`.
    Anonymous,
    /// With a verified token.
    Token,
}

/// What a session may do; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Claims {
    /// How the session got in.
    pub admission: Admission,
    /// The token's subject.
    pub sub: Option<String>,
    /// Whether the session's messages may be forwarded to its group.
    pub publish: bool,
    /// Whether the session may see presence in its groups: the token's
    /// `presence` claim (true without a token).
    pub presence: bool,
    /// The token's `exp`, as it says.
    pub exp: Option<u64>,
    /// When the server closes the connection unless refreshed: `exp` plus
    /// the configured leeway, in seconds since the Unix epoch.
    pub expires_at: Option<u64>,
}

impl Claims {
    /// Open mode: anyone, may publish, never expires.
    pub fn open() -> Self {
        Claims {
            admission: Admission::Open,
            sub: None,
            publish: true,
            presence: true,
            exp: None,
            expires_at: None,
        }
    }

    /// An anonymous session.
    pub fn anonymous(publish: bool) -> Self {
        Claims {
            admission: Admission::Anonymous,
            sub: None,
            publish,
            presence: true,
            exp: None,
            expires_at: None,
        }
    }

    /// Whether this session may be shown the presence of a group it holds.
    /// A session holds only groups it was admitted to (its connection's,
    /// and those a subscribe was allowed), so "only groups it may join"
    /// holds by construction; what is left is the token's word.
    pub fn may_see_presence(&self) -> bool {
        self.presence
    }

    /// How long until the connection must close, if it must (zero when the
    /// moment has passed), at most [`MAX_TIME_LEFT`]. The cap keeps clock
    /// arithmetic in range whatever `exp` a token carries (`exp: 2^63` is
    /// a valid, signed, absurd claim); the read loop recomputes the deadline
    /// at every frame, so a capped deadline only means an extra wake-up.
    pub fn time_left(&self) -> Option<Duration> {
        let Some(at) = UNIX_EPOCH.checked_add(Duration::from_secs(self.expires_at?)) else {
            return Some(MAX_TIME_LEFT); // beyond what the clock can represent
        };
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Some(left.min(MAX_TIME_LEFT))
    }
}

impl Default for Claims {
    fn default() -> Self {
        Claims::open()
    }
}

/// The longest [`Claims::time_left`] reports: a year.
pub const MAX_TIME_LEFT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Seconds since the Unix epoch, now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_without_groups_or_publish_grant_nothing() {
        let claims: TokenClaims = serde_json::from_str(r#"{"sub":"a","exp":5}"#).unwrap();
        assert!(claims.groups.is_empty());
        assert!(!claims.publish);
        assert!(claims.presence, "presence is on unless the token says no");
        let denied: TokenClaims =
            serde_json::from_str(r#"{"sub":"a","exp":5,"presence":false}"#).unwrap();
        assert!(!denied.presence);
    }

    #[test]
    fn time_left_counts_down_to_expiry() {
        assert_eq!(Claims::open().time_left(), None);
        let past = Claims {
            expires_at: Some(now_secs() - 10),
            ..Claims::open()
        };
        assert_eq!(past.time_left(), Some(Duration::ZERO));
        let future = Claims {
            expires_at: Some(now_secs() + 100),
            ..Claims::open()
        };
        assert!(future.time_left().unwrap() > Duration::from_secs(98));
        let absurd = Claims {
            expires_at: Some(u64::MAX),
            ..Claims::open()
        };
        assert_eq!(absurd.time_left(), Some(MAX_TIME_LEFT));
    }
}
