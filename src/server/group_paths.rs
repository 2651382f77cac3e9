//! Group names may contain `/` (`task/42`), but a route's `{group}` — in
//! axum and in an OpenAPI path template alike — is one path segment. So
//! before the full router matches a request, the slashes inside the group
//! part of its path are percent-encoded: `/api/groups/task/42/history`
//! becomes `/api/groups/task%2F42/history`, which `{group}` matches and
//! decodes back to `task/42`. Clients may send either form.
//!
//! Under `/api/groups/` the last segment names a sub-resource when it is
//! one of [`GROUP_RESOURCES`] (so the API cannot name a group whose last
//! segment is one of them); under `/ws/` and `/sse/` everything is the
//! group.

use axum::http::Request;
use axum::http::uri::{PathAndQuery, Uri};

/// The prefixes whose rest holds a group name (or a user's `sub`, which
/// may hold slashes too).
const PREFIXES: &[&str] = &[
    "/api/groups/",
    "/api/users/",
    "/api/sessions/",
    "/ws/",
    "/sse/",
];

/// The sub-resources of `/api/groups/{group}/…`.
const GROUP_RESOURCES: &[&str] = &["messages", "history", "members", "users"];

/// `request` with the slashes of its group percent-encoded (unchanged
/// when its path names no group, or a group without a slash).
pub(crate) fn one_segment<B>(mut request: Request<B>) -> Request<B> {
    let Some(path) = encoded(request.uri().path()) else {
        return request;
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = request.uri().clone().into_parts();
    // Both conversions only fail on characters that were not in the valid
    // URI the path came from (`%2F` is valid wherever `/` was).
    if let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// `path` with its group's slashes encoded, if it has any.
fn encoded(path: &str) -> Option<String> {
    let (prefix, rest) = PREFIXES
        .iter()
        .find_map(|prefix| Some((*prefix, path.strip_prefix(prefix)?)))?;
    let (group, resource) = match rest.rsplit_once('/') {
        Some((group, last)) if *prefix == *"/api/groups/" && GROUP_RESOURCES.contains(&last) => {
            (group, Some(last))
        }
        Some((target, "disconnect")) if *prefix != *"/api/groups/" => (target, Some("disconnect")),
        _ => (rest, None),
    };
    if !group.contains('/') {
        return None;
    }
    let mut encoded = format!("{prefix}{}", group.replace('/', "%2F"));
    if let Some(resource) = resource {
        encoded.push('/');
        encoded.push_str(resource);
    }
    Some(encoded)
}

#[cfg(test)]
mod tests {
    use super::encoded;

    #[test]
    fn a_groups_slashes_are_encoded_and_its_resource_kept() {
        assert_eq!(
            encoded("/api/groups/task/42/history").as_deref(),
            Some("/api/groups/task%2F42/history")
        );
        assert_eq!(
            encoded("/api/groups/task/42").as_deref(),
            Some("/api/groups/task%2F42")
        );
        assert_eq!(
            encoded("/api/groups/a/b/c/messages").as_deref(),
            Some("/api/groups/a%2Fb%2Fc/messages")
        );
        assert_eq!(encoded("/ws/task/42").as_deref(), Some("/ws/task%2F42"));
        assert_eq!(
            encoded("/api/users/org/alice/disconnect").as_deref(),
            Some("/api/users/org%2Falice/disconnect")
        );
        assert_eq!(
            encoded("/sse/a/history").as_deref(),
            Some("/sse/a%2Fhistory")
        );
    }

    #[test]
    fn paths_without_a_slashed_group_are_left_alone() {
        for path in [
            "/api/groups/chat",
            "/api/groups/chat/messages",
            "/api/groups",
            "/api/nodes",
            "/ws/chat",
            "/healthz",
            "/",
        ] {
            assert_eq!(encoded(path), None, "{path}");
        }
    }
}
