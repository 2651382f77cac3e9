//! Security: who may connect to which group, who may publish, who may use
//! the HTTP API — and nothing more.
//!
//! A public WebSocket endpoint without authentication lets anyone read any
//! group and write into it. groupcast follows the usual shape of realtime
//! servers: **your backend** authenticates the user, decides what they may
//! see, and mints a short-lived signed token saying so; **groupcast** only
//! verifies the token and enforces what it says. groupcast never sees a
//! password and never calls your backend.
//!
//! | file | concept |
//! | --- | --- |
//! | [`keys`] | the verification keys, each bound to one algorithm; rotation by `kid` |
//! | [`token`] | verifying a JWT: shape, algorithm, key, signature, claims — in that order |
//! | [`claims`] | the token's claims on the wire; the typed [`Claims`] a session carries |
//! | [`pattern`] | group patterns (`task/*`, `task/**`) in grants |
//! | [`policy`] | [`ClientAuth`]: open / token mode, anonymous groups, publish |
//! | [`refresh`] | renewing a live connection's token; expiry closes with 4001 |
//! | [`origin`] | the Origin allowlist against cross-site WebSocket hijacking |
//! | [`api_key`] | API keys for `/api/*` and `/debug/state`, compared in constant time |
//! | [`cors`] | CORS for the HTTP API, only where configured |
//! | [`http`] | where credentials are in a request; the API-key middleware |
//! | [`mint`] | minting development tokens (`groupcast token`) |
//! | [`error`] | every rejection with its status and machine code |
//!
//! The pieces are wired in by [`HubBuilder::client_auth`](crate::HubBuilder::client_auth)
//! (the WebSocket side, so `server::ws_router` enforces it too) and by
//! [`ServerOptions`](crate::server::ServerOptions) (API keys, CORS, debug
//! endpoint, admin listener). `docs/security.md` is the operator's view.

pub mod api_key;
pub mod claims;
pub mod cors;
pub mod error;
pub mod http;
pub mod keys;
pub mod mint;
pub mod origin;
pub mod pattern;
pub mod policy;
pub mod refresh;
pub mod token;

pub use api_key::ApiKeys;
pub use claims::{Admission, Claims, TokenClaims};
pub use cors::CorsPolicy;
pub use error::{AuthConfigError, AuthError};
pub use keys::{KeyRef, KeySet};
pub use mint::{MintRequest, mint_hs256};
pub use origin::OriginPolicy;
pub use pattern::{GroupPattern, GroupPatterns};
pub use policy::ClientAuth;
pub use token::{TokenVerifier, VerifyOptions};

/// Logs, once at startup, how exposed this server is: loudly (WARN) for
/// every door left open, so that an open server in production is noticed
/// in the first screen of logs rather than in an incident report.
pub fn log_posture(
    client: &ClientAuth,
    api_keys: &ApiKeys,
    cors: &CorsPolicy,
    debug_endpoint: bool,
) {
    match client.verifier() {
        None => {
            tracing::warn!(
                "OPEN MODE: no JWT key is configured, so ANY client may connect to ANY group and publish. \
                 Set --jwt-secret-file, --jwt-public-key or --jwt-jwks-file for production."
            );
            if !client.anonymous().is_empty() {
                tracing::warn!(
                    "--anonymous-groups has no effect in open mode: every group is open"
                );
            }
        }
        Some(verifier) => {
            let kids: Vec<String> = verifier
                .keys()
                .keys()
                .iter()
                .map(|k| format!("{}:{:?}", k.kid.as_deref().unwrap_or("-"), k.alg))
                .collect();
            tracing::info!(
                keys = ?kids,
                leeway = ?verifier.options().leeway,
                anonymous_groups = ?client.anonymous().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "token mode: every WebSocket connection needs a valid token (outside anonymous groups)"
            );
        }
    }
    if !client.origins().is_restricted() {
        tracing::info!(
            "no --allowed-origins: WebSocket upgrades from any browser origin are accepted"
        );
    }
    if api_keys.is_open() {
        tracing::warn!(
            "OPEN API: no API key is configured, so ANYONE who reaches this port may publish to any group \
             and list every session via /api/*{}. Set GROUPCAST_API_KEYS or --api-keys-file.",
            if debug_endpoint {
                " and /debug/state"
            } else {
                ""
            }
        );
    }
    if *cors == CorsPolicy::Any {
        tracing::warn!(
            "--cors-origins '*': pages from any origin may call the API (with an API key)"
        );
    }
}
