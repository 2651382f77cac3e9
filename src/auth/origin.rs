//! The Origin allowlist for WebSocket upgrades.
//!
//! Browsers attach cookies and HTTP authentication to a WebSocket upgrade
//! whatever page opens it, and the same-origin policy does not apply to
//! WebSockets. So a page on `evil.example` can open a socket to your
//! groupcast with your user's ambient credentials: cross-site WebSocket
//! hijacking. What the browser *does* send, and a page cannot forge, is the
//! `Origin` header. With `--allowed-origins` set, an upgrade whose Origin is
//! not in the list is refused with 403 before the upgrade happens.
//!
//! Requests without an Origin header are let through: they do not come from
//! a browser page (curl, a backend, a mobile app), and such a client can
//! send any header it likes anyway — for them the token is the control.
//! Tokens sent as `?token=` or `Authorization` are not ambient credentials,
//! which is why token mode already blunts this attack; the allowlist closes
//! it for deployments that put a cookie-authenticated proxy in front.
//!
//! Entries are origins as browsers send them — `scheme://host[:port]`,
//! compared case-insensitively — or `scheme://*.domain` for any subdomain
//! (not the domain itself, and only on the default port). The literal
//! `null` (sandboxed iframes, `file://` pages) matches only if listed.

use std::str::FromStr;

use axum::http::HeaderValue;

use super::error::{AuthConfigError, AuthError};

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// Exactly this origin (normalized to lower case, no trailing `/`).
    Exact(String),
    /// `scheme://*.domain`: any subdomain of `domain`.
    Subdomains {
        /// `https://`, say.
        scheme: String,
        /// `.example.com`, say (with the leading dot).
        suffix: String,
    },
}

impl FromStr for OriginRule {
    type Err = AuthConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| AuthConfigError::BadOrigin {
            origin: s.to_string(),
            reason: reason.to_string(),
        };
        let normalized = normalize(s);
        if normalized == "null" {
            return Ok(OriginRule::Exact(normalized));
        }
        let (scheme, rest) = normalized
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port], e.g. https://app.example.com"))?;
        if scheme.is_empty() || rest.is_empty() {
            return Err(bad("expected scheme://host[:port]"));
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(bad("an origin has no path, query or fragment"));
        }
        if rest == "*" {
            return Err(bad(
                "`*` would allow every origin; leave --allowed-origins unset for that",
            ));
        }
        if let Some(domain) = rest.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(bad("a wildcard is only `scheme://*.domain`"));
            }
            return Ok(OriginRule::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: format!(".{domain}"),
            });
        }
        if rest.contains('*') {
            return Err(bad("a wildcard is only `scheme://*.domain`"));
        }
        Ok(OriginRule::Exact(normalized))
    }
}

impl OriginRule {
    fn allows(&self, origin: &str) -> bool {
        match self {
            OriginRule::Exact(exact) => exact == origin,
            OriginRule::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|host| host.strip_suffix(suffix.as_str()))
                // Something before the suffix, and a real subdomain label.
                .is_some_and(|sub| !sub.is_empty() && !sub.contains(':') && !sub.ends_with('.')),
        }
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The allowlist; empty means every origin is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    rules: Vec<OriginRule>,
}

impl OriginPolicy {
    /// Every origin allowed.
    pub fn any() -> Self {
        OriginPolicy::default()
    }

    /// Only these origins (plus requests without an Origin header).
    pub fn only(rules: impl IntoIterator<Item = OriginRule>) -> Self {
        OriginPolicy {
            rules: rules.into_iter().collect(),
        }
    }

    /// Parses a list of origins.
    pub fn parse<S: AsRef<str>>(
        origins: impl IntoIterator<Item = S>,
    ) -> Result<Self, AuthConfigError> {
        origins
            .into_iter()
            .map(|o| o.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(OriginPolicy::only)
    }

    /// Whether an allowlist is set.
    pub fn is_restricted(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The rules.
    pub fn rules(&self) -> &[OriginRule] {
        &self.rules
    }

    /// Checks a request's Origin header.
    pub fn check(&self, origin: Option<&HeaderValue>) -> Result<(), AuthError> {
        let Some(origin) = origin else {
            return Ok(()); // not a browser page: see the module docs
        };
        if self.rules.is_empty() {
            return Ok(());
        }
        let Ok(text) = origin.to_str() else {
            return Err(AuthError::OriginNotAllowed(
                String::from_utf8_lossy(origin.as_bytes()).into_owned(),
            ));
        };
        let normalized = normalize(text);
        if self.rules.iter().any(|rule| rule.allows(&normalized)) {
            Ok(())
        } else {
            Err(AuthError::OriginNotAllowed(text.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> OriginPolicy {
        OriginPolicy::parse(origins).unwrap()
    }

    fn allows(policy: &OriginPolicy, origin: &str) -> bool {
        policy
            .check(Some(&HeaderValue::from_str(origin).unwrap()))
            .is_ok()
    }

    #[test]
    fn exact_origins_compare_case_insensitively() {
        let p = policy(&["https://App.Example.com/"]);
        assert!(allows(&p, "https://app.example.com"));
        assert!(allows(&p, "HTTPS://APP.EXAMPLE.COM"));
        assert!(!allows(&p, "http://app.example.com"));
        assert!(!allows(&p, "https://app.example.com:8443"));
        assert!(!allows(&p, "https://app.example.com.evil.test"));
        assert!(!allows(&p, "null"));
    }

    #[test]
    fn subdomain_wildcards_need_a_subdomain() {
        let p = policy(&["https://*.example.com"]);
        assert!(allows(&p, "https://a.example.com"));
        assert!(allows(&p, "https://a.b.example.com"));
        assert!(!allows(&p, "https://example.com"));
        assert!(!allows(&p, "https://evilexample.com"));
        assert!(!allows(&p, "https://a.example.com:444"));
        assert!(!allows(&p, "http://a.example.com"));
    }

    #[test]
    fn no_origin_header_and_no_list_are_allowed() {
        assert!(policy(&["https://a.test"]).check(None).is_ok());
        assert!(allows(&OriginPolicy::any(), "https://anything.test"));
    }

    #[test]
    fn nonsense_entries_are_refused() {
        for bad in [
            "example.com",
            "https://*",
            "https://a.test/path",
            "https://a*.test",
            "",
        ] {
            assert!(bad.parse::<OriginRule>().is_err(), "{bad}");
        }
        assert!("null".parse::<OriginRule>().is_ok());
    }
}
