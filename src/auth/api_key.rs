//! API keys for the HTTP API and the debug endpoint.
//!
//! The API can publish to any group and lists every session with its keys,
//! so it is for your backend, not for browsers. A caller proves it is the
//! backend with `Authorization: Bearer <api key>`.
//!
//! Keys are compared in constant time. A plain `==` stops at the first
//! differing byte, and how long it took tells an attacker how many leading
//! bytes were right — enough, over many requests, to recover a key byte by
//! byte. So:
//!
//! * both the presented key and every configured key are hashed with
//!   SHA-256 first: the comparison is always between 32-byte values, so
//!   not even the key's *length* leaks;
//! * the digests are compared with `subtle::ConstantTimeEq`, and the result
//!   of every configured key is OR-ed together without an early exit, so the
//!   time does not tell *which* key matched either.
//!
//! Only the digests are kept in memory after startup.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::error::{AuthConfigError, AuthError};

/// The shortest API key accepted, in bytes.
pub const MIN_API_KEY_LEN: usize = 16;

/// The configured API keys; none configured means the API is open.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// No keys: the API is open.
    pub fn open() -> Self {
        ApiKeys::default()
    }

    /// These keys.
    pub fn new<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Result<Self, AuthConfigError> {
        let mut set = ApiKeys::default();
        for key in keys {
            set.add(key.as_ref())?;
        }
        Ok(set)
    }

    /// Adds one key.
    pub fn add(&mut self, key: &str) -> Result<(), AuthConfigError> {
        let key = key.trim();
        if key.len() < MIN_API_KEY_LEN {
            return Err(AuthConfigError::BadApiKey(format!(
                "an API key must be at least {MIN_API_KEY_LEN} characters (this one has {})",
                key.len()
            )));
        }
        self.digests.push(digest(key.as_bytes()));
        Ok(())
    }

    /// Adds the keys of a file: one per line; blank lines and lines
    /// starting with `#` are skipped.
    pub fn add_file(&mut self, path: &Path) -> Result<usize, AuthConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut added = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add(line)?;
            added += 1;
        }
        Ok(added)
    }

    /// Whether no key is configured (the API is open).
    pub fn is_open(&self) -> bool {
        self.digests.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks a presented key (`None`: no `Authorization` header). Always
    /// succeeds when the API is open.
    pub fn check(&self, presented: Option<&str>) -> Result<(), AuthError> {
        if self.is_open() {
            return Ok(());
        }
        let presented = presented.ok_or(AuthError::ApiKeyMissing)?;
        let presented = digest(presented.as_bytes());
        let matched = self
            .digests
            .iter()
            .fold(Choice::from(0), |any, key| any | key.ct_eq(&presented));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthError::ApiKeyInvalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_keys_pass() {
        let keys = ApiKeys::new(["first-key-0123456789", "second-key-0123456789"]).unwrap();
        assert!(keys.check(Some("first-key-0123456789")).is_ok());
        assert!(keys.check(Some("second-key-0123456789")).is_ok());
        assert_eq!(
            keys.check(Some("first-key-012345678")),
            Err(AuthError::ApiKeyInvalid)
        );
        assert_eq!(keys.check(Some("")), Err(AuthError::ApiKeyInvalid));
        assert_eq!(keys.check(None), Err(AuthError::ApiKeyMissing));
    }

    #[test]
    fn no_keys_means_open() {
        assert!(ApiKeys::open().check(None).is_ok());
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(ApiKeys::new(["short"]).is_err());
    }

    #[test]
    fn key_files_skip_comments_and_blanks() {
        let path = std::env::temp_dir().join(format!("groupcast-apikeys-{}", std::process::id()));
        std::fs::write(
            &path,
            "# backend\nkey-one-0123456789\n\n  key-two-0123456789  \n",
        )
        .unwrap();
        let mut keys = ApiKeys::open();
        assert_eq!(keys.add_file(&path).unwrap(), 2);
        let _ = std::fs::remove_file(&path);
        assert!(keys.check(Some("key-two-0123456789")).is_ok());
    }
}
