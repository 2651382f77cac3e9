//! Verifying a client token (a JWT, compact JWS form).
//!
//! The order of the checks is the point of this file:
//!
//! 1. **Shape and size.** At most [`MAX_TOKEN_LEN`] bytes, three base64url
//!    parts, a JSON header. Nothing else is looked at before this.
//! 2. **Which key.** The header's `alg` is read only to *refuse* it: `none`
//!    never passes, and the algorithm must be the one the chosen key was
//!    loaded for (see `keys.rs`). With a `kid`, exactly that key is used —
//!    an unknown kid is refused at once. Without a `kid`, the keys of the
//!    token's algorithm are tried in turn (a single-secret setup needs no
//!    kids).
//! 3. **Signature, then claims.** `jsonwebtoken` verifies the signature
//!    with the key and the one allowed algorithm, and only then `exp`,
//!    `nbf` (both with the configured leeway), `iss`, `aud`, and the
//!    presence of `sub` and `exp`. A token that is both forged and expired
//!    is reported as forged: claims of an unverified token mean nothing.
//! 4. **Grants.** `groups` is compiled into patterns; an invalid pattern
//!    makes the whole token invalid rather than silently granting less.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::claims::TokenClaims;
use super::error::AuthError;
use super::keys::{KeySet, VerifyKey};
use super::pattern::GroupPatterns;

/// The longest token accepted, in bytes. Real tokens are a few hundred
/// bytes; the cap bounds the work an anonymous request can cause.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The largest leeway applied, whatever is configured: a day. (Beyond
/// that, "expiry" means little, and `jsonwebtoken` computes `now - leeway`
/// in unsigned arithmetic.)
pub const MAX_LEEWAY: Duration = Duration::from_secs(24 * 3600);

/// What a verifier checks besides the signature.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Allowed clock difference between the token's issuer and this server,
    /// applied to `exp` and `nbf`; at most [`MAX_LEEWAY`] is used.
    pub leeway: Duration,
    /// Accepted issuers (`iss`); empty: not checked.
    pub issuers: Vec<String>,
    /// Accepted audiences (`aud`); empty: not checked.
    pub audiences: Vec<String>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            leeway: Duration::from_secs(5),
            issuers: Vec::new(),
            audiences: Vec::new(),
        }
    }
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Its claims.
    pub claims: TokenClaims,
    /// Its `groups`, compiled.
    pub groups: GroupPatterns,
    /// When the server must close a connection admitted with it:
    /// `exp` + leeway, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Verifies client tokens against a [`KeySet`].
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    keys: KeySet,
    options: VerifyOptions,
}

/// The header fields groupcast reads itself, before `jsonwebtoken` does.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: Option<String>,
    kid: Option<String>,
    /// RFC 7515 §4.1.11: extensions the recipient must understand. We
    /// understand none, so a token that has any is refused.
    crit: Option<serde_json::Value>,
}

impl TokenVerifier {
    /// A verifier over `keys`.
    pub fn new(keys: KeySet, options: VerifyOptions) -> Self {
        TokenVerifier { keys, options }
    }

    /// The keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The options.
    pub fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// Checks `token` (see the module docs for the order of the checks).
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::MalformedToken(format!(
                "longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let header = peek_header(token)?;
        let alg = allowed_algorithm(header.alg.as_deref())?;
        let candidates: Vec<&VerifyKey> = match header.kid.as_deref() {
            Some(kid) => {
                let key = self
                    .keys
                    .by_kid(kid)
                    .ok_or_else(|| AuthError::UnknownKid(kid.to_string()))?;
                if key.alg != alg {
                    // e.g. HS256 against an RSA key: the confusion attack.
                    return Err(AuthError::AlgorithmNotAllowed(format!(
                        "key {kid:?} verifies {:?} only, the token says {alg:?}",
                        key.alg
                    )));
                }
                vec![key]
            }
            None => {
                let keys: Vec<&VerifyKey> = self.keys.for_alg(alg).collect();
                if keys.is_empty() {
                    return Err(AuthError::AlgorithmNotAllowed(format!(
                        "no configured key verifies {alg:?}"
                    )));
                }
                keys
            }
        };
        let validation = self.validation(alg);
        for key in candidates {
            match jsonwebtoken::decode::<TokenClaims>(token, &key.key, &validation) {
                Ok(data) => return self.grants(data.claims),
                Err(error) => match classify(error.kind()) {
                    // Another kid-less key of this algorithm may fit.
                    AuthError::BadSignature => continue,
                    // The signature was good; the claims are not.
                    definitive => return Err(definitive),
                },
            }
        }
        Err(AuthError::BadSignature)
    }

    fn leeway_secs(&self) -> u64 {
        self.options.leeway.min(MAX_LEEWAY).as_secs()
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        // Exactly one algorithm: the key's. (`new` already does this; it is
        // restated because it is the property everything rests on.)
        validation.algorithms = vec![alg];
        validation.leeway = self.leeway_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if !self.options.issuers.is_empty() {
            validation.set_issuer(&self.options.issuers);
            validation.required_spec_claims.insert("iss".into());
        }
        if self.options.audiences.is_empty() {
            // Without a configured audience, a token's `aud` is not ours to
            // judge (jsonwebtoken would refuse any token that has one).
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.options.audiences);
            validation.required_spec_claims.insert("aud".into());
        }
        validation
    }

    fn grants(&self, claims: TokenClaims) -> Result<VerifiedToken, AuthError> {
        let groups = GroupPatterns::parse(&claims.groups)
            .map_err(|e| AuthError::InvalidClaims(format!("`groups`: {e}")))?;
        let expires_at = claims.exp.saturating_add(self.leeway_secs());
        Ok(VerifiedToken {
            claims,
            groups,
            expires_at,
        })
    }
}

fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    let malformed = |why: &str| AuthError::MalformedToken(why.to_string());
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "expected three base64url parts separated by dots",
        ));
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("the header is not base64url"))?;
    let header: PeekedHeader =
        serde_json::from_slice(&json).map_err(|_| malformed("the header is not a JSON object"))?;
    if header.crit.is_some() {
        return Err(malformed(
            "critical header extensions (crit) are not supported",
        ));
    }
    Ok(header)
}

/// The algorithm the token claims, if it is one groupcast accepts at all.
fn allowed_algorithm(alg: Option<&str>) -> Result<Algorithm, AuthError> {
    match alg {
        Some("HS256") => Ok(Algorithm::HS256),
        Some("RS256") => Ok(Algorithm::RS256),
        Some("ES256") => Ok(Algorithm::ES256),
        Some(none) if none.eq_ignore_ascii_case("none") => Err(AuthError::AlgorithmNotAllowed(
            "\"none\": unsigned tokens are never accepted".into(),
        )),
        Some(other) => Err(AuthError::AlgorithmNotAllowed(format!(
            "{other:?} (accepted: HS256, RS256, ES256, each only with a key of its kind)"
        ))),
        None => Err(AuthError::MalformedToken("the header has no alg".into())),
    }
}

/// What a `jsonwebtoken` error means for the client.
fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::AlgorithmNotAllowed("the algorithm does not match the key".into())
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::InvalidClaims(format!("missing required claim `{claim}`"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::InvalidClaims(format!("claim `{claim}` has the wrong type"))
        }
        ErrorKind::InvalidIssuer => AuthError::InvalidClaims("issuer (iss) not accepted".into()),
        ErrorKind::InvalidAudience => {
            AuthError::InvalidClaims("audience (aud) not accepted".into())
        }
        ErrorKind::InvalidSubject => AuthError::InvalidClaims("subject (sub) not accepted".into()),
        // Decoding the payload happens after the signature check, so a JSON
        // error here is about the claims (a missing `sub`, `groups` not a
        // list…).
        ErrorKind::Json(error) => AuthError::InvalidClaims(error.to_string()),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            AuthError::MalformedToken("cannot decode the token".into())
        }
        // InvalidSignature, and key/format errors of a key that does not
        // fit this token: all mean "this key did not sign it".
        _ => AuthError::BadSignature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::now_secs;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier() -> TokenVerifier {
        let mut keys = KeySet::new();
        keys.add_secret(Some("k1".into()), SECRET).unwrap();
        TokenVerifier::new(
            keys,
            VerifyOptions {
                leeway: Duration::ZERO,
                ..VerifyOptions::default()
            },
        )
    }

    fn claims(exp_in: i64) -> TokenClaims {
        TokenClaims {
            sub: "alice".into(),
            groups: vec!["chat".into(), "task/*".into()],
            publish: true,
            presence: true,
            exp: (now_secs() as i64 + exp_in) as u64,
            nbf: None,
            iss: None,
            aud: None,
            iat: None,
        }
    }

    fn sign(kid: Option<&str>, claims: &TokenClaims, secret: &[u8]) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_good_token_passes_with_and_without_kid() {
        let v = verifier();
        for kid in [Some("k1"), None] {
            let token = v.verify(&sign(kid, &claims(60), SECRET)).unwrap();
            assert_eq!(token.claims.sub, "alice");
            assert!(token.claims.publish);
            assert_eq!(token.expires_at, token.claims.exp);
        }
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let v = verifier();
        assert_eq!(
            v.verify(&sign(
                Some("k1"),
                &claims(60),
                b"another secret another secret!!"
            ))
            .unwrap_err(),
            AuthError::BadSignature
        );
        assert_eq!(
            v.verify(&sign(Some("k1"), &claims(-5), SECRET))
                .unwrap_err(),
            AuthError::Expired
        );
        let mut early = claims(60);
        early.nbf = Some(now_secs() + 30);
        assert_eq!(
            v.verify(&sign(Some("k1"), &early, SECRET)).unwrap_err(),
            AuthError::NotYetValid
        );
        assert_eq!(
            v.verify(&sign(Some("nope"), &claims(60), SECRET))
                .unwrap_err(),
            AuthError::UnknownKid("nope".into())
        );
        assert!(matches!(
            v.verify("not a token").unwrap_err(),
            AuthError::MalformedToken(_)
        ));
    }

    #[test]
    fn alg_none_is_refused_before_anything_else() {
        let v = verifier();
        let payload = b64(&serde_json::to_string(&claims(60)).unwrap());
        for alg in ["none", "None", "NONE"] {
            let token = format!("{}.{payload}.", b64(&format!(r#"{{"alg":"{alg}"}}"#)));
            assert!(matches!(
                v.verify(&token).unwrap_err(),
                AuthError::AlgorithmNotAllowed(m) if m.contains("none")
            ));
        }
    }

    #[test]
    fn an_hs512_token_is_refused_even_with_the_right_secret() {
        let v = verifier();
        let mut header = Header::new(Algorithm::HS512);
        header.kid = Some("k1".into());
        let token =
            jsonwebtoken::encode(&header, &claims(60), &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(matches!(
            v.verify(&token).unwrap_err(),
            AuthError::AlgorithmNotAllowed(_)
        ));
    }

    #[test]
    fn bad_groups_make_the_token_invalid() {
        let v = verifier();
        let mut bad = claims(60);
        bad.groups = vec!["a//b".into()];
        assert!(matches!(
            v.verify(&sign(None, &bad, SECRET)).unwrap_err(),
            AuthError::InvalidClaims(_)
        ));
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let mut keys = KeySet::new();
        keys.add_secret(None, SECRET).unwrap();
        let v = TokenVerifier::new(
            keys,
            VerifyOptions {
                issuers: vec!["backend".into()],
                audiences: vec!["groupcast".into()],
                ..VerifyOptions::default()
            },
        );
        let mut c = claims(60);
        assert!(matches!(
            v.verify(&sign(None, &c, SECRET)).unwrap_err(),
            AuthError::InvalidClaims(_)
        ));
        c.iss = Some("backend".into());
        c.aud = Some("other".into());
        assert!(matches!(
            v.verify(&sign(None, &c, SECRET)).unwrap_err(),
            AuthError::InvalidClaims(m) if m.contains("aud")
        ));
        c.aud = Some("groupcast".into());
        assert!(v.verify(&sign(None, &c, SECRET)).is_ok());
    }

    #[test]
    fn a_crit_header_is_refused() {
        let v = verifier();
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"HS256","crit":["exp"]}"#),
            b64("{}")
        );
        assert!(matches!(
            v.verify(&token).unwrap_err(),
            AuthError::MalformedToken(_)
        ));
    }
}
