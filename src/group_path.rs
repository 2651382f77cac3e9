//! The `{group}` of a route, for every router that has one (the API's
//! `/api/groups/{group}/…`, the transports' `/ws/{group}` and
//! `/sse/{group}`): extracted with a JSON error, and described once for
//! the OpenAPI description.

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::http_error::ApiError;

/// The group segment of the path, percent-decoded (not yet validated: a
/// handler makes it a [`GroupName`](crate::GroupName)). A segment that
/// does not decode to UTF-8 is a 400 `bad_group_name` in JSON, like any
/// other bad name, rather than axum's plain-text rejection.
pub(crate) struct GroupPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for GroupPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(group)) => Ok(GroupPath(group)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_group_name",
                format!("invalid group name: {}", rejection.body_text()),
            )),
        }
    }
}

/// How the description documents `{group}` (the handlers extract it
/// with [`GroupPath`]; this type only describes it).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct GroupParam {
    /// The group's name: 1 to 200 bytes of UTF-8 without whitespace or
    /// control characters, segments separated by `/` (sent as `/` or as
    /// `%2F`; no empty, `.` or `..` segment).
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^(?:[^\s/\x00-\x1f\x7f-\x9f]*[^\s/.\x00-\x1f\x7f-\x9f][^\s/\x00-\x1f\x7f-\x9f]*|\.{3,})(?:/(?:[^\s/\x00-\x1f\x7f-\x9f]*[^\s/.\x00-\x1f\x7f-\x9f][^\s/\x00-\x1f\x7f-\x9f]*|\.{3,}))*$"
    )]
    #[allow(dead_code)] // read by the description only
    group: String,
}
