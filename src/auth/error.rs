//! The two ways security can say no.
//!
//! * [`AuthError`] — a *request* is refused: a client's token, its Origin,
//!   an API key. Each variant knows its HTTP status and a stable machine
//!   code, so every rejection is a JSON body
//!   `{"error": "<code>", "message": "<text>"}` that a client can act on
//!   (re-mint the token, fix the clock, ask for another group…).
//! * [`AuthConfigError`] — the *operator's* settings cannot be used: a key
//!   file is missing, a secret is too short, a JWKS is empty. These stop the
//!   server at startup; a server that silently runs with fewer keys than
//!   configured would be worse than one that does not start.
//!
//! Messages say what was wrong with the credential the caller presented,
//! never anything about the server's keys: "unknown kid" is fine (the kid
//! came from the caller), "the key is RSA-2048" is not.

use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request (a WebSocket upgrade, an API call, a token refresh) was
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Keys are configured, the group is not anonymous, and no token came
    /// with the request.
    #[error("a token is required: send `Authorization: Bearer <token>` or `?token=<token>`")]
    TokenMissing,
    /// An `Authorization` header that is not `Bearer <something>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    BadAuthorizationHeader,
    /// Not three base64url parts, a header that is not JSON, a token too long.
    #[error("malformed token: {0}")]
    MalformedToken(String),
    /// The token's `alg` is `none`, unknown, or not the one its key allows.
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    /// The token names a key (`kid`) the server does not have.
    #[error("unknown key id (kid) {0:?}")]
    UnknownKid(String),
    /// No configured key verifies the signature.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` (plus the configured leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus the configured leeway) has not come yet.
    #[error("token not yet valid (nbf is in the future)")]
    NotYetValid,
    /// Signed correctly but the claims are unusable: missing `sub`, wrong
    /// `iss` or `aud`, `groups` not a list of valid patterns…
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    /// The token (or the anonymous rule) does not allow this group.
    #[error("not allowed to join group {0:?}")]
    GroupNotAllowed(String),
    /// A refresh token names another subject than the connection's.
    #[error("the new token is for another subject (sub)")]
    SubjectChanged,
    /// A browser page from an origin outside `--allowed-origins`.
    #[error("origin {0:?} is not allowed")]
    OriginNotAllowed(String),
    /// An API call without `Authorization: Bearer <api key>`.
    #[error("an API key is required: send `Authorization: Bearer <api key>`")]
    ApiKeyMissing,
    /// An API key that is not one of the configured ones.
    #[error("invalid API key")]
    ApiKeyInvalid,
    /// A browser's saved admin credentials (HTTP Basic) on a request
    /// another site made it send (`Sec-Fetch-Site: cross-site`).
    #[error(
        "the admin page's credentials are only taken from the node's own pages; send `Authorization: Bearer <api key>`"
    )]
    CrossSiteCredentials,
}

impl AuthError {
    /// The HTTP status: 401 when better credentials could fix it, 403 when
    /// the credentials are fine but do not allow this.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::GroupNotAllowed(_)
            | AuthError::OriginNotAllowed(_)
            | AuthError::SubjectChanged
            | AuthError::CrossSiteCredentials => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// A stable machine-readable code, the `error` field of the JSON body
    /// and the `reason` label of `groupcast_auth_rejections_total`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::TokenMissing => "token_missing",
            AuthError::BadAuthorizationHeader => "bad_authorization_header",
            AuthError::MalformedToken(_) => "token_malformed",
            AuthError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            AuthError::UnknownKid(_) => "unknown_kid",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::InvalidClaims(_) => "invalid_claims",
            AuthError::GroupNotAllowed(_) => "group_not_allowed",
            AuthError::SubjectChanged => "subject_changed",
            AuthError::OriginNotAllowed(_) => "origin_not_allowed",
            AuthError::ApiKeyMissing => "api_key_missing",
            AuthError::ApiKeyInvalid => "api_key_invalid",
            AuthError::CrossSiteCredentials => "cross_site_credentials",
        }
    }
}

impl IntoResponse for AuthError {
    /// The same JSON shape as every other API error. A 401 also carries
    /// `WWW-Authenticate: Bearer` (RFC 6750), so generic HTTP clients know
    /// which scheme to use.
    fn into_response(self) -> Response {
        let status = self.status();
        let body = axum::Json(json!({ "error": self.code(), "message": self.to_string() }));
        let mut response = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                AuthError::TokenMissing | AuthError::ApiKeyMissing => "Bearer",
                _ => "Bearer error=\"invalid_token\"",
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// Why the security settings cannot be used (reported at startup).
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "HS256 secret {kid} is {len} bytes; at least {min} are required (RFC 7518 §3.2: a key as long as the hash)"
    )]
    SecretTooShort { kid: String, len: usize, min: usize },
    #[error("{path}: {reason}")]
    BadKeyFile { path: PathBuf, reason: String },
    #[error("two keys share the kid {0:?}; each kid must name one key")]
    DuplicateKid(String),
    #[error("invalid group pattern {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("invalid origin {origin:?}: {reason}")]
    BadOrigin { origin: String, reason: String },
    #[error("invalid API key: {0}")]
    BadApiKey(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_say_whose_move_it_is() {
        assert_eq!(AuthError::TokenMissing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(AuthError::Expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            AuthError::GroupNotAllowed("g".into()).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            AuthError::OriginNotAllowed("o".into()).status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn a_401_carries_a_bearer_challenge() {
        let response = AuthError::BadSignature.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        let response = AuthError::GroupNotAllowed("g".into()).into_response();
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
