//! Minting tokens: what `groupcast token` does, for development and tests.
//!
//! In production your backend mints tokens with its own JWT library, after
//! it has authenticated the user and decided what they may see. This is the
//! same thing in a few lines, so that a developer can try a secured server
//! without writing a backend first. Only HS256 (a shared secret): a private
//! key has no business on a developer's command line.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::claims::{TokenClaims, now_secs};
use super::error::AuthConfigError;
use super::keys::MIN_SECRET_LEN;
use super::pattern::GroupPatterns;

/// What to put in a token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// The subject.
    pub sub: String,
    /// Groups and patterns it may join.
    pub groups: Vec<String>,
    /// Whether it may publish into its group.
    pub publish: bool,
    /// Whether it may see presence in its groups (default true; the
    /// claim is written only when false).
    pub presence: bool,
    /// How long it is valid from now.
    pub ttl: Duration,
    /// Valid only from now plus this (sets `nbf`).
    pub not_before: Option<Duration>,
    /// The key id to put in the header.
    pub kid: Option<String>,
    /// `iss`.
    pub issuer: Option<String>,
    /// `aud`.
    pub audience: Option<String>,
}

impl MintRequest {
    /// A token for `sub` allowing `groups`, receive-only, valid for an hour.
    pub fn new<S: Into<String>>(
        sub: impl Into<String>,
        groups: impl IntoIterator<Item = S>,
    ) -> Self {
        MintRequest {
            sub: sub.into(),
            groups: groups.into_iter().map(Into::into).collect(),
            publish: false,
            presence: true,
            ttl: Duration::from_secs(3600),
            not_before: None,
            kid: None,
            issuer: None,
            audience: None,
        }
    }
}

/// Signs `request` with an HS256 `secret`. Refuses what the server would
/// refuse anyway (a short secret, invalid group patterns), so a developer
/// learns it here rather than from a 401.
pub fn mint_hs256(secret: &[u8], request: &MintRequest) -> Result<String, AuthConfigError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthConfigError::SecretTooShort {
            kid: request.kid.clone().unwrap_or_else(|| "the secret".into()),
            len: secret.len(),
            min: MIN_SECRET_LEN,
        });
    }
    GroupPatterns::parse(&request.groups)?;
    let now = now_secs();
    let claims = TokenClaims {
        sub: request.sub.clone(),
        groups: request.groups.clone(),
        publish: request.publish,
        presence: request.presence,
        exp: now.saturating_add(request.ttl.as_secs()),
        nbf: request.not_before.map(|d| now.saturating_add(d.as_secs())),
        iss: request.issuer.clone(),
        aud: request.audience.clone().map(serde_json::Value::String),
        iat: Some(now),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = request.kid.clone();
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
        .map_err(|e| AuthConfigError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::KeySet;
    use crate::auth::token::{TokenVerifier, VerifyOptions};

    #[test]
    fn a_minted_token_verifies() {
        let secret = [3u8; 32];
        let mut request = MintRequest::new("alice", ["chat", "task/*"]);
        request.publish = true;
        request.kid = Some("dev".into());
        let mut keys = KeySet::new();
        keys.add_secret(Some("dev".into()), &secret).unwrap();
        let verifier = TokenVerifier::new(keys, VerifyOptions::default());
        let minted = |request: &MintRequest| {
            let token = mint_hs256(&secret, request).unwrap();
            verifier.verify(&token).unwrap()
        };
        let verified = minted(&request);
        assert_eq!(verified.claims.sub, "alice");
        assert!(verified.claims.publish);
        assert!(verified.claims.presence, "presence unless denied");
        assert_eq!(verified.claims.groups, ["chat", "task/*"]);
        request.presence = false;
        assert!(!minted(&request).claims.presence);
    }

    #[test]
    fn short_secrets_and_bad_patterns_are_refused() {
        let request = MintRequest::new("a", ["chat"]);
        assert!(mint_hs256(b"short", &request).is_err());
        let request = MintRequest::new("a", ["bad//pattern"]);
        assert!(mint_hs256(&[1; 32], &request).is_err());
    }
}
