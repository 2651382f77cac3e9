//! The keys that verify client tokens, each bound to exactly one algorithm.
//!
//! The classic JWT mistakes come from letting the *token* choose how it is
//! checked: `alg: none` ("no signature needed"), or `alg: HS256` presented
//! against an RSA key, so that the server uses the RSA *public* key — which
//! anyone can read — as an HMAC secret. groupcast never asks the token.
//! Every [`VerifyKey`] carries the one [`Algorithm`] it was loaded for,
//! decided by the operator's configuration and the key's own type:
//!
//! | source | algorithm |
//! | --- | --- |
//! | a secret (`--jwt-secret`, `--jwt-secret-file`) | HS256 |
//! | an RSA public key (PEM) | RS256 |
//! | an EC P-256 public key (PEM) | ES256 |
//! | a JWKS entry | its `alg`, or RS256 / ES256 / HS256 from `kty` and `crv` |
//!
//! and the verifier (see `token.rs`) accepts a token only if its `alg` is
//! exactly that algorithm.
//!
//! Several keys can be active at once, which is how keys rotate: publish
//! the new key next to the old one, let issuers switch to it (tokens name
//! their key with `kid`), drop the old key once its last tokens expired.
//!
//! Keys are read once, at startup; rotating means a rolling restart with the
//! new key set.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::error::AuthConfigError;

/// The shortest HS256 secret accepted: as long as the SHA-256 output
/// (RFC 7518 §3.2). Shorter secrets can be brute-forced offline from any
/// one token.
pub const MIN_SECRET_LEN: usize = 32;

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// The key id tokens name it by, if it has one.
    pub(crate) kid: Option<String>,
    /// The only algorithm this key verifies.
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
    /// Where it came from, for logs (never the key itself).
    pub(crate) source: String,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately without `key`: a secret must not end up in a log.
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// `[KID:]VALUE`, as given on the command line: a secret or a file path,
/// optionally preceded by the key id tokens name it with.
///
/// The kid is the part before the first `:` when that part looks like a key
/// id (ASCII letters, digits, `.`, `_`, `-`; at most 64). Base64 secrets
/// (which may end in `=`) and paths pass through untouched; a secret that
/// itself contains `:` needs an explicit kid (`k1:pa:ss`) or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The key id, if given.
    pub kid: Option<String>,
    /// The secret or the path.
    pub value: String,
}

impl std::str::FromStr for KeyRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kid, value) = match s.split_once(':') {
            Some((kid, value)) if is_kid(kid) => (Some(kid.to_string()), value),
            _ => (None, s),
        };
        if value.is_empty() {
            return Err("empty value: expected [KID:]VALUE".into());
        }
        Ok(KeyRef {
            kid,
            value: value.to_string(),
        })
    }
}

fn is_kid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The active verification keys.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl KeySet {
    /// An empty set (open mode).
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys, for logs and tests.
    pub fn keys(&self) -> &[VerifyKey] {
        &self.keys
    }

    /// The key tokens name with `kid`.
    pub(crate) fn by_kid(&self, kid: &str) -> Option<&VerifyKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys that verify `alg` (for tokens without a `kid`).
    pub(crate) fn for_alg(&self, alg: Algorithm) -> impl Iterator<Item = &VerifyKey> {
        self.keys.iter().filter(move |k| k.alg == alg)
    }

    fn push(&mut self, key: VerifyKey) -> Result<(), AuthConfigError> {
        if let Some(kid) = &key.kid
            && self.by_kid(kid).is_some()
        {
            return Err(AuthConfigError::DuplicateKid(kid.clone()));
        }
        self.keys.push(key);
        Ok(())
    }

    /// Adds an HS256 secret.
    pub fn add_secret(
        &mut self,
        kid: Option<String>,
        secret: &[u8],
    ) -> Result<(), AuthConfigError> {
        let number = self.keys.len() + 1;
        self.add_secret_from(kid, secret, format!("secret #{number}"))
    }

    fn add_secret_from(
        &mut self,
        kid: Option<String>,
        secret: &[u8],
        source: String,
    ) -> Result<(), AuthConfigError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthConfigError::SecretTooShort {
                kid: kid.clone().unwrap_or_else(|| source.clone()),
                len: secret.len(),
                min: MIN_SECRET_LEN,
            });
        }
        self.push(VerifyKey {
            kid,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
            source,
        })
    }

    /// Adds an HS256 secret read from a file (a trailing newline is not
    /// part of the secret, so `echo … > file` works).
    pub fn add_secret_file(
        &mut self,
        kid: Option<String>,
        path: &Path,
    ) -> Result<(), AuthConfigError> {
        let bytes = read(path)?;
        let secret = trim_newline(&bytes);
        self.add_secret_from(kid, secret, path.display().to_string())
    }

    /// Adds a PEM public key: RSA (→ RS256) or EC P-256 (→ ES256).
    pub fn add_public_key_pem(
        &mut self,
        kid: Option<String>,
        pem: &[u8],
        source: &str,
    ) -> Result<Algorithm, AuthConfigError> {
        let bad = |reason: &str| AuthConfigError::BadKeyFile {
            path: source.into(),
            reason: reason.to_string(),
        };
        let text = std::str::from_utf8(pem).map_err(|_| bad("not a PEM text file"))?;
        let (label, der) = pem_block(text).ok_or_else(|| bad("no PEM block found"))?;
        let (alg, key) = match label {
            "RSA PUBLIC KEY" => (Algorithm::RS256, DecodingKey::from_rsa_pem(pem)),
            "PUBLIC KEY" if contains(&der, OID_RSA_ENCRYPTION) => {
                (Algorithm::RS256, DecodingKey::from_rsa_pem(pem))
            }
            "PUBLIC KEY" if contains(&der, OID_EC_PUBLIC_KEY) => {
                if !contains(&der, OID_P256) {
                    return Err(bad("only EC keys on the P-256 curve (ES256) are supported"));
                }
                (Algorithm::ES256, DecodingKey::from_ec_pem(pem))
            }
            "PUBLIC KEY" => return Err(bad("unsupported key type: use an RSA or EC P-256 key")),
            l if l.contains("PRIVATE") => {
                return Err(bad(
                    "this is a private key; give the server the public key (`openssl pkey -in key.pem -pubout`)",
                ));
            }
            _ => return Err(bad(&format!("unexpected PEM block {label:?}"))),
        };
        let key = key.map_err(|e| bad(&format!("cannot parse the key: {e}")))?;
        self.push(VerifyKey {
            kid,
            alg,
            key,
            source: source.to_string(),
        })?;
        Ok(alg)
    }

    /// Adds a PEM public key from a file.
    pub fn add_public_key_file(
        &mut self,
        kid: Option<String>,
        path: &Path,
    ) -> Result<Algorithm, AuthConfigError> {
        let pem = read(path)?;
        self.add_public_key_pem(kid, &pem, &path.display().to_string())
    }

    /// Adds every usable signing key of a JWKS document (`{"keys": [...]}`)
    /// and returns how many. Keys meant for encryption (`use: enc`), of
    /// unsupported types or algorithms are skipped with a warning; a JWKS
    /// with no usable key is an error.
    pub fn add_jwks(&mut self, json: &str, source: &str) -> Result<usize, AuthConfigError> {
        let bad = |reason: String| AuthConfigError::BadKeyFile {
            path: source.into(),
            reason,
        };
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let set: RawSet = serde_json::from_str(json)
            .map_err(|e| bad(format!("not a JWKS document ({{\"keys\": [...]}}): {e}")))?;
        let mut added = 0;
        for (index, raw) in set.keys.into_iter().enumerate() {
            // Parse keys one by one: one exotic key must not hide the others.
            let jwk: Jwk = match serde_json::from_value(raw) {
                Ok(jwk) => jwk,
                Err(error) => {
                    tracing::warn!(source, index, %error, "skipping a JWKS key that cannot be parsed");
                    continue;
                }
            };
            let kid = jwk.common.key_id.clone();
            match jwk_algorithm(&jwk) {
                Ok(alg) => {
                    if let AlgorithmParameters::OctetKey(_) = &jwk.algorithm {
                        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(octet_value(&jwk))
                            .map_err(|e| bad(format!("key {index}: bad `k`: {e}")))?;
                        self.add_secret_from(kid, &secret, format!("{source} key {index}"))?;
                    } else {
                        let key = DecodingKey::from_jwk(&jwk)
                            .map_err(|e| bad(format!("key {index}: {e}")))?;
                        self.push(VerifyKey {
                            kid,
                            alg,
                            key,
                            source: format!("{source} key {index}"),
                        })?;
                    }
                    added += 1;
                }
                Err(why) => {
                    tracing::warn!(source, index, ?kid, why, "skipping a JWKS key");
                }
            }
        }
        if added == 0 {
            return Err(bad("no usable signing key (RS256, ES256 or HS256)".into()));
        }
        Ok(added)
    }

    /// Adds the keys of a JWKS file.
    pub fn add_jwks_file(&mut self, path: &Path) -> Result<usize, AuthConfigError> {
        let bytes = read(path)?;
        let text = String::from_utf8(bytes).map_err(|_| AuthConfigError::BadKeyFile {
            path: path.into(),
            reason: "not UTF-8".into(),
        })?;
        self.add_jwks(&text, &path.display().to_string())
    }
}

fn octet_value(jwk: &Jwk) -> &str {
    match &jwk.algorithm {
        AlgorithmParameters::OctetKey(p) => &p.value,
        _ => "",
    }
}

/// The one algorithm a JWK may verify: its `alg` if present (and one we
/// support, and consistent with its type), else the natural one for its type.
fn jwk_algorithm(jwk: &Jwk) -> Result<Algorithm, &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("the key is for encryption (use: enc)");
    }
    let natural = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(_) => return Err("only the P-256 curve is supported"),
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        AlgorithmParameters::OctetKeyPair(_) => return Err("EdDSA keys are not supported"),
    };
    match jwk.common.key_algorithm {
        None => Ok(natural),
        Some(KeyAlgorithm::RS256) if natural == Algorithm::RS256 => Ok(natural),
        Some(KeyAlgorithm::ES256) if natural == Algorithm::ES256 => Ok(natural),
        Some(KeyAlgorithm::HS256) if natural == Algorithm::HS256 => Ok(natural),
        Some(_) => Err("unsupported `alg`, or an `alg` that does not fit the key type"),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, AuthConfigError> {
    std::fs::read(path).map_err(|source| AuthConfigError::Read {
        path: path.into(),
        source,
    })
}

/// Reads an HS256 secret from a file, without the trailing newline an
/// editor or `echo` leaves: the same bytes [`KeySet::add_secret_file`]
/// verifies with, for whoever signs (`groupcast token --secret-file`).
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, AuthConfigError> {
    Ok(trim_newline(&read(path)?).to_vec())
}

pub(crate) fn trim_newline(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

// DER encodings (tag, length, value) of the object identifiers that say
// what a SubjectPublicKeyInfo holds.
/// 1.2.840.113549.1.1.1 rsaEncryption
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// 1.2.840.10045.2.1 ecPublicKey
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7 prime256v1 (P-256)
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The label and DER bytes of the first PEM block in `text`.
fn pem_block(text: &str) -> Option<(&str, Vec<u8>)> {
    let begin = text.find("-----BEGIN ")?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end = body.find("-----END ")?;
    let b64: String = body[..end].split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((label, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_refs_split_a_kid_only_when_it_looks_like_one() {
        let r: KeyRef = "k1:/etc/keys/a.pem".parse().unwrap();
        assert_eq!(r.kid.as_deref(), Some("k1"));
        assert_eq!(r.value, "/etc/keys/a.pem");
        let r: KeyRef = "/etc/keys/a.pem".parse().unwrap();
        assert_eq!(r.kid, None);
        let r: KeyRef = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0=="
            .parse()
            .unwrap();
        assert_eq!(r.kid, None, "base64 padding is not a kid separator");
        assert!("k1:".parse::<KeyRef>().is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        let mut keys = KeySet::new();
        let error = keys.add_secret(None, b"too short").unwrap_err();
        assert!(matches!(
            error,
            AuthConfigError::SecretTooShort { len: 9, .. }
        ));
        keys.add_secret(Some("a".into()), &[7; 32]).unwrap();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn a_kid_names_one_key() {
        let mut keys = KeySet::new();
        keys.add_secret(Some("a".into()), &[7; 32]).unwrap();
        let error = keys.add_secret(Some("a".into()), &[8; 32]).unwrap_err();
        assert!(matches!(error, AuthConfigError::DuplicateKid(k) if k == "a"));
    }

    #[test]
    fn private_keys_and_garbage_are_refused_with_a_reason() {
        let mut keys = KeySet::new();
        let private = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let error = keys.add_public_key_pem(None, private, "k.pem").unwrap_err();
        assert!(error.to_string().contains("private key"), "{error}");
        let error = keys
            .add_public_key_pem(None, b"hello", "k.pem")
            .unwrap_err();
        assert!(error.to_string().contains("no PEM block"), "{error}");
    }

    const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/security/rsa-public.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/security/ec-public.pem");
    const EC_P384_PUBLIC: &[u8] =
        include_bytes!("../../tests/fixtures/security/ec-p384-public.pem");

    #[test]
    fn pem_keys_get_the_algorithm_of_their_type() {
        let mut keys = KeySet::new();
        assert_eq!(
            keys.add_public_key_pem(Some("r".into()), RSA_PUBLIC, "rsa.pem")
                .unwrap(),
            Algorithm::RS256
        );
        assert_eq!(
            keys.add_public_key_pem(Some("e".into()), EC_PUBLIC, "ec.pem")
                .unwrap(),
            Algorithm::ES256
        );
        let error = keys
            .add_public_key_pem(None, EC_P384_PUBLIC, "p384.pem")
            .unwrap_err();
        assert!(error.to_string().contains("P-256"), "{error}");
        assert_eq!(keys.for_alg(Algorithm::RS256).count(), 1);
        assert_eq!(keys.for_alg(Algorithm::HS256).count(), 0);
    }

    #[test]
    fn jwks_keys_get_exactly_one_algorithm() {
        let mut keys = KeySet::new();
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
        let jwks = format!(
            r#"{{"keys": [
                {{"kty": "oct", "kid": "h1", "k": "{k}"}},
                {{"kty": "oct", "kid": "h2", "alg": "RS256", "k": "{k}"}},
                {{"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "{k}"}},
                {{"kty": "weird"}}
            ]}}"#
        );
        assert_eq!(keys.add_jwks(&jwks, "test").unwrap(), 1);
        let key = keys.by_kid("h1").unwrap();
        assert_eq!(key.alg, Algorithm::HS256);
        assert!(
            keys.by_kid("h2").is_none(),
            "alg RS256 on a secret is refused"
        );
        assert!(keys.add_jwks(r#"{"keys": []}"#, "empty").is_err());
    }
}
