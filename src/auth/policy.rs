//! The client policy: who may connect to which group, and publish.
//!
//! [`ClientAuth`] is what the WebSocket endpoint asks, once per upgrade and
//! once per refresh. Its decisions, in order:
//!
//! 1. **Origin** — outside `--allowed-origins`: 403 (see `origin.rs`).
//! 2. **Mode** — no key configured: *open mode*, everyone may connect to
//!    every group and publish. A token, if sent, is ignored.
//! 3. **Token** — keys configured and a token sent: it must be valid
//!    (401 otherwise), *even for an anonymous group*: a bad credential is
//!    reported, never silently downgraded to anonymous.
//! 4. **Group** — the token's `groups` or `--anonymous-groups` must allow
//!    the group (403 otherwise). Without a token only the anonymous groups
//!    are reachable (401 elsewhere: a token would help).
//! 5. **Publish** — `publish: true` in the token, for a group the token
//!    allows; `--anonymous-publish` for a group only the anonymous rule
//!    allows.
//!
//! The result is a [`Claims`] stored on the session.

use std::sync::Arc;

use axum::http::HeaderValue;

use super::claims::{Admission, Claims};
use super::error::AuthError;
use super::origin::OriginPolicy;
use super::pattern::GroupPatterns;
use super::token::TokenVerifier;
use crate::group::GroupName;

/// The policy for WebSocket clients. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    /// `None`: open mode.
    verifier: Option<Arc<TokenVerifier>>,
    anonymous: GroupPatterns,
    anonymous_publish: bool,
    origins: OriginPolicy,
}

impl ClientAuth {
    /// Open mode: no tokens, any origin.
    pub fn open() -> Self {
        ClientAuth::default()
    }

    /// Token mode with `verifier` (open mode if it has no key).
    pub fn with_tokens(verifier: TokenVerifier) -> Self {
        ClientAuth {
            verifier: (!verifier.keys().is_empty()).then(|| Arc::new(verifier)),
            ..ClientAuth::default()
        }
    }

    /// Groups that may be joined without a token.
    pub fn anonymous_groups(mut self, patterns: GroupPatterns) -> Self {
        self.anonymous = patterns;
        self
    }

    /// Whether anonymous clients may publish (default: no).
    pub fn anonymous_publish(mut self, allowed: bool) -> Self {
        self.anonymous_publish = allowed;
        self
    }

    /// Whether anonymous clients may publish.
    pub fn allows_anonymous_publish(&self) -> bool {
        self.anonymous_publish
    }

    /// The Origin allowlist for upgrades.
    pub fn allowed_origins(mut self, origins: OriginPolicy) -> Self {
        self.origins = origins;
        self
    }

    /// Whether connections need tokens (false: open mode).
    pub fn requires_tokens(&self) -> bool {
        self.verifier.is_some()
    }

    /// The token verifier, in token mode.
    pub fn verifier(&self) -> Option<&TokenVerifier> {
        self.verifier.as_deref()
    }

    /// The anonymous groups.
    pub fn anonymous(&self) -> &GroupPatterns {
        &self.anonymous
    }

    /// The Origin allowlist.
    pub fn origins(&self) -> &OriginPolicy {
        &self.origins
    }

    /// Checks an upgrade's Origin header.
    pub fn check_origin(&self, origin: Option<&HeaderValue>) -> Result<(), AuthError> {
        self.origins.check(origin)
    }

    /// Decides whether a client presenting `token` may join `group`.
    pub fn admit(&self, group: &GroupName, token: Option<&str>) -> Result<Claims, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Claims::open());
        };
        let anonymous = self.anonymous.matches(group);
        let Some(token) = token else {
            return if anonymous {
                Ok(Claims::anonymous(self.anonymous_publish))
            } else {
                Err(AuthError::TokenMissing)
            };
        };
        let verified = verifier.verify(token)?;
        let granted = verified.groups.matches(group);
        if !granted && !anonymous {
            return Err(AuthError::GroupNotAllowed(group.to_string()));
        }
        Ok(Claims {
            admission: Admission::Token,
            sub: Some(verified.claims.sub),
            publish: (granted && verified.claims.publish) || (anonymous && self.anonymous_publish),
            presence: verified.claims.presence,
            exp: Some(verified.claims.exp),
            expires_at: Some(verified.expires_at),
        })
    }

    /// Decides whether a client presenting `token` may open a connection
    /// without a group (`/ws`): a valid token (or, without one, anonymous
    /// access when some groups are anonymous). It grants no group by
    /// itself: each subscription is checked with [`ClientAuth::admit`].
    pub fn admit_without_group(&self, token: Option<&str>) -> Result<Claims, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Claims::open());
        };
        let Some(token) = token else {
            return if self.anonymous.is_empty() {
                Err(AuthError::TokenMissing)
            } else {
                Ok(Claims::anonymous(self.anonymous_publish))
            };
        };
        let verified = verifier.verify(token)?;
        Ok(Claims {
            admission: Admission::Token,
            sub: Some(verified.claims.sub),
            publish: verified.claims.publish,
            presence: verified.claims.presence,
            exp: Some(verified.claims.exp),
            expires_at: Some(verified.expires_at),
        })
    }

    /// Decides whether `token` may replace the token of a live connection
    /// to `group` (none: a `/ws` connection) whose claims are `current`
    /// (see `refresh.rs`).
    pub fn refresh(
        &self,
        current: &Claims,
        group: Option<&GroupName>,
        token: &str,
    ) -> Result<Claims, AuthError> {
        let renewed = match group {
            Some(group) => self.admit(group, Some(token))?,
            None => self.admit_without_group(Some(token))?,
        };
        if renewed.sub != current.sub {
            return Err(AuthError::SubjectChanged);
        }
        Ok(renewed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::KeySet;
    use crate::auth::mint::{MintRequest, mint_hs256};
    use crate::auth::token::VerifyOptions;

    const SECRET: [u8; 32] = [5; 32];

    fn policy() -> ClientAuth {
        let mut keys = KeySet::new();
        keys.add_secret(None, &SECRET).unwrap();
        ClientAuth::with_tokens(TokenVerifier::new(keys, VerifyOptions::default()))
            .anonymous_groups(GroupPatterns::parse(["public/*"]).unwrap())
    }

    fn token(sub: &str, groups: &[&str], publish: bool) -> String {
        let mut request = MintRequest::new(sub, groups.iter().copied());
        request.publish = publish;
        mint_hs256(&SECRET, &request).unwrap()
    }

    fn group(name: &str) -> GroupName {
        GroupName::new(name).unwrap()
    }

    #[test]
    fn open_mode_admits_everyone_with_publish() {
        let claims = ClientAuth::open().admit(&group("any"), None).unwrap();
        assert_eq!(claims, Claims::open());
        assert!(claims.publish);
    }

    #[test]
    fn token_mode_needs_a_token_outside_anonymous_groups() {
        let p = policy();
        assert_eq!(p.admit(&group("chat"), None), Err(AuthError::TokenMissing));
        let anon = p.admit(&group("public/news"), None).unwrap();
        assert_eq!(anon.admission, Admission::Anonymous);
        assert!(!anon.publish);
    }

    #[test]
    fn a_token_allows_its_groups_only() {
        let p = policy();
        let t = token("alice", &["chat", "task/*"], true);
        let claims = p.admit(&group("task/7"), Some(&t)).unwrap();
        assert_eq!(claims.sub.as_deref(), Some("alice"));
        assert!(claims.publish);
        assert_eq!(
            p.admit(&group("admin"), Some(&t)),
            Err(AuthError::GroupNotAllowed("admin".into()))
        );
    }

    #[test]
    fn a_token_in_an_anonymous_group_does_not_lend_its_publish_right() {
        let p = policy();
        let t = token("alice", &["chat"], true);
        let claims = p.admit(&group("public/news"), Some(&t)).unwrap();
        assert_eq!(claims.admission, Admission::Token);
        assert!(!claims.publish);
    }

    #[test]
    fn a_bad_token_is_refused_even_for_an_anonymous_group() {
        let p = policy();
        assert!(matches!(
            p.admit(&group("public/news"), Some("x.y.z")),
            Err(AuthError::MalformedToken(_))
        ));
    }

    #[test]
    fn a_refresh_keeps_the_subject_and_the_group() {
        let p = policy();
        let current = p
            .admit(&group("chat"), Some(&token("alice", &["chat"], false)))
            .unwrap();
        let renewed = p
            .refresh(
                &current,
                Some(&group("chat")),
                &token("alice", &["chat"], true),
            )
            .unwrap();
        assert!(renewed.publish, "a refresh may grant publish");
        assert_eq!(
            p.refresh(
                &current,
                Some(&group("chat")),
                &token("mallory", &["chat"], false)
            ),
            Err(AuthError::SubjectChanged)
        );
        assert_eq!(
            p.refresh(
                &current,
                Some(&group("chat")),
                &token("alice", &["other"], false)
            ),
            Err(AuthError::GroupNotAllowed("chat".into()))
        );
    }

    #[test]
    fn a_connection_without_a_group_needs_a_valid_token_but_no_grant() {
        let p = policy();
        let claims = p
            .admit_without_group(Some(&token("alice", &["chat"], true)))
            .unwrap();
        assert_eq!(claims.sub.as_deref(), Some("alice"));
        assert!(matches!(
            p.admit_without_group(Some("not.a.token")),
            Err(AuthError::MalformedToken(_))
        ));
        // Some groups are anonymous: a client without a token may connect,
        // and may subscribe to those only (checked per subscription).
        let anonymous = p.admit_without_group(None).unwrap();
        assert_eq!(anonymous.admission, Admission::Anonymous);
        let strict = ClientAuth::with_tokens(TokenVerifier::new(
            {
                let mut keys = KeySet::new();
                keys.add_secret(None, &SECRET).unwrap();
                keys
            },
            VerifyOptions::default(),
        ));
        assert_eq!(
            strict.admit_without_group(None),
            Err(AuthError::TokenMissing)
        );
    }
}
