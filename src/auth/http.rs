//! Where credentials are in an HTTP request, and the API-key guard.
//!
//! * A client token comes in `Authorization: Bearer <token>` — for clients
//!   that can set headers — or in the query, `/ws/chat?token=<token>`,
//!   because a browser's `new WebSocket(url)` cannot set headers. When both
//!   are present the header wins. Query strings end up in access logs of
//!   proxies: keep tokens short-lived (see docs/security.md).
//! * An API key comes in `Authorization: Bearer <api key>`: the API is for
//!   backends, which can set headers, and a key in a URL would leak into
//!   logs where it lives far longer than a token. The one browser page
//!   behind the key, `/admin`, asks for it with HTTP Basic (the key is the
//!   password): the browser then sends `Authorization: Basic` with the
//!   page's own API calls. A browser sends saved Basic credentials with
//!   requests other sites make it send too (a hidden form posting to
//!   `/api/…`), so Basic is taken only from requests the browser marks as
//!   the node's own (`Sec-Fetch-Site: same-origin`, or `none` for what the
//!   user typed), or that come from no browser at all (no such header).

use std::borrow::Cow;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api_key::ApiKeys;
use super::error::AuthError;
use crate::Hub;

/// The credential of an `Authorization: Bearer <credential>` header;
/// `None` without the header. The scheme is case-insensitive (RFC 7235).
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::BadAuthorizationHeader)?;
    let (scheme, credential) = value
        .split_once(' ')
        .ok_or(AuthError::BadAuthorizationHeader)?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(AuthError::BadAuthorizationHeader);
    }
    Ok(Some(credential))
}

/// The API key of a request: the `Bearer` credential, or the password of
/// `Basic` credentials when the request is the node's own page's (see the
/// module docs); `None` without an `Authorization` header.
pub fn api_key(headers: &HeaderMap) -> Result<Option<Cow<'_, str>>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::BadAuthorizationHeader)?;
    let Some((scheme, credential)) = value.split_once(' ') else {
        return Err(AuthError::BadAuthorizationHeader);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(bearer(headers)?.map(Cow::Borrowed));
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if !matches!(site, None | Some("same-origin") | Some("none")) {
        return Err(AuthError::CrossSiteCredentials);
    }
    let decoded = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        credential.trim(),
    )
    .map_err(|_| AuthError::BadAuthorizationHeader)?;
    let decoded = String::from_utf8(decoded).map_err(|_| AuthError::BadAuthorizationHeader)?;
    // `user:password`; the user name is not looked at.
    let (_, password) = decoded
        .split_once(':')
        .ok_or(AuthError::BadAuthorizationHeader)?;
    Ok(Some(Cow::Owned(password.to_string())))
}

/// A client token from the `Authorization` header or, failing that, the
/// `token` query parameter of `query` (the raw query string).
pub fn client_token<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Option<Cow<'a, str>>, AuthError> {
    if let Some(token) = bearer(headers)? {
        return Ok(Some(Cow::Borrowed(token)));
    }
    let Some(query) = query else {
        return Ok(None);
    };
    Ok(form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty()))
}

/// State of the [`require_api_key`] middleware.
#[derive(Clone)]
pub(crate) struct ApiKeyGuard {
    pub keys: std::sync::Arc<ApiKeys>,
    /// For counting rejections.
    pub hub: Hub,
}

/// Lets a request through only with a configured API key (any request when
/// none is configured). Mounted on `/api/*` and `/debug/state`.
pub(crate) async fn require_api_key(
    State(guard): State<ApiKeyGuard>,
    request: Request,
    next: Next,
) -> Response {
    let verdict = api_key(request.headers()).and_then(|key| guard.keys.check(key.as_deref()));
    match verdict {
        Ok(()) => next.run(request).await,
        Err(error) => {
            guard.hub.metrics().count_auth_rejection(error.code());
            // A wrong key in a header that is not even Bearer is still "no key".
            let error = match error {
                AuthError::BadAuthorizationHeader => AuthError::ApiKeyMissing,
                other => other,
            };
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn bearer_credentials_are_found() {
        assert_eq!(bearer(&headers(Some("Bearer abc"))).unwrap(), Some("abc"));
        assert_eq!(bearer(&headers(Some("bearer  abc "))).unwrap(), Some("abc"));
        assert_eq!(bearer(&headers(None)).unwrap(), None);
        assert!(bearer(&headers(Some("Basic dXNlcjpwYXNz"))).is_err());
        assert!(bearer(&headers(Some("Bearer"))).is_err());
        assert!(bearer(&headers(Some("Bearer "))).is_err());
    }

    #[test]
    fn an_api_key_comes_as_bearer_or_as_the_password_of_basic_from_the_nodes_own_pages() {
        let basic = |user_password: &str| {
            let encoded =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, user_password);
            headers(Some(&format!("Basic {encoded}")))
        };
        assert_eq!(
            api_key(&headers(Some("Bearer k1"))).unwrap().as_deref(),
            Some("k1")
        );
        assert_eq!(api_key(&basic("admin:k2")).unwrap().as_deref(), Some("k2"));
        assert_eq!(api_key(&basic(":k:3")).unwrap().as_deref(), Some("k:3"));
        assert!(api_key(&basic("no-colon")).is_err());
        assert!(api_key(&headers(Some("Basic !!!"))).is_err());
        assert_eq!(api_key(&headers(None)).unwrap(), None);
        for (site, taken) in [
            ("same-origin", true),
            ("none", true),
            ("cross-site", false),
            ("same-site", false),
        ] {
            let mut request = basic("admin:k4");
            request.insert("sec-fetch-site", HeaderValue::from_static(site));
            assert_eq!(api_key(&request).is_ok(), taken, "{site}");
        }
        let mut bearer_cross_site = headers(Some("Bearer k5"));
        bearer_cross_site.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(
            api_key(&bearer_cross_site).is_ok(),
            "a browser never adds Bearer by itself"
        );
    }

    #[test]
    fn the_header_wins_over_the_query() {
        let h = headers(Some("Bearer from-header"));
        assert_eq!(
            client_token(&h, Some("token=from-query"))
                .unwrap()
                .as_deref(),
            Some("from-header")
        );
        let h = headers(None);
        assert_eq!(
            client_token(&h, Some("a=1&token=a.b%2Dc"))
                .unwrap()
                .as_deref(),
            Some("a.b-c")
        );
        assert_eq!(client_token(&h, Some("token=")).unwrap(), None);
        assert_eq!(client_token(&h, None).unwrap(), None);
    }
}
