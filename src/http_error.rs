//! The one shape of every HTTP error groupcast answers, from the API and
//! from a transport's admission alike:
//! `{"error": "<machine code>", "message": "<text>"}` with a status that
//! says whose fault it was. Below both (the API and the transports use it;
//! it uses neither), so that an upgrade refused for a bad group reads like
//! a publish refused for one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::HubError;
use crate::group::GroupNameError;

/// A JSON error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_group(error: GroupNameError) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_group_name",
            format!("invalid group name: {error}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

impl From<HubError> for ApiError {
    fn from(error: HubError) -> Self {
        match error {
            HubError::GroupName(e) => ApiError::bad_group(e),
            HubError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ),
            HubError::Backend(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                format!("delivered locally, but not to other nodes: {e}"),
            ),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}
