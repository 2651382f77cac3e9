//! CORS for the HTTP API, only where configured.
//!
//! Without `--cors-origins` the API sends no CORS headers, so browsers
//! refuse to let pages from other origins read its answers — the right
//! default for an API meant for backends. With it, pages from the listed
//! origins may call the API (they still need an API key: CORS decides what
//! a browser lets a page *read*, not who is authorized).
//!
//! The WebSocket endpoint is not covered: CORS does not apply to WebSocket
//! upgrades; the Origin allowlist (`origin.rs`) does that job.

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::AuthConfigError;

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsPolicy {
    /// No CORS headers at all (the default).
    #[default]
    Off,
    /// Any origin (`*`). Fine for an API authenticated by header, never
    /// combined with credentials (cookies).
    Any,
    /// These origins.
    Origins(Vec<HeaderValue>),
}

impl CorsPolicy {
    /// Parses `--cors-origins`: empty means off, `*` means any.
    pub fn parse<S: AsRef<str>>(
        origins: impl IntoIterator<Item = S>,
    ) -> Result<Self, AuthConfigError> {
        let origins: Vec<String> = origins
            .into_iter()
            .map(|o| o.as_ref().trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() {
            return Ok(CorsPolicy::Off);
        }
        if origins.iter().any(|o| o == "*") {
            return Ok(CorsPolicy::Any);
        }
        origins
            .iter()
            .map(|origin| {
                if !origin.contains("://") {
                    return Err(AuthConfigError::BadOrigin {
                        origin: origin.clone(),
                        reason: "expected scheme://host[:port]".into(),
                    });
                }
                HeaderValue::from_str(origin).map_err(|e| AuthConfigError::BadOrigin {
                    origin: origin.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(CorsPolicy::Origins)
    }

    /// The tower layer, or `None` when off.
    pub fn layer(&self) -> Option<CorsLayer> {
        let allow = match self {
            CorsPolicy::Off => return None,
            CorsPolicy::Any => AllowOrigin::any(),
            CorsPolicy::Origins(list) => AllowOrigin::list(list.iter().cloned()),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_off_any_and_lists() {
        assert_eq!(
            CorsPolicy::parse(Vec::<String>::new()).unwrap(),
            CorsPolicy::Off
        );
        assert_eq!(CorsPolicy::parse(["*"]).unwrap(), CorsPolicy::Any);
        assert!(matches!(
            CorsPolicy::parse(["https://a.test/"]).unwrap(),
            CorsPolicy::Origins(v) if v == [HeaderValue::from_static("https://a.test")]
        ));
        assert!(CorsPolicy::parse(["a.test"]).is_err());
        assert!(CorsPolicy::Off.layer().is_none());
    }
}
