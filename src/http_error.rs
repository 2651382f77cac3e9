//! The one shape of every HTTP error groupcast answers, from the API and
//! from a transport's admission alike:
//! `{"error": "<machine code>", "message": "<text>"}` with a status that
//! says whose fault it was. Below both (the API and the transports use it;
//! it uses neither), so that an upgrade refused for a bad group reads like
//! a publish refused for one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::HubError;
use crate::group::GroupNameError;

/// The body of every error answer, as the OpenAPI description's shared
/// `ErrorBody` schema names it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable machine-readable code (`bad_group_name`, `no_history`, …).
    pub error: String,
    /// What went wrong and what to do about it, for a person.
    pub message: String,
}

impl ErrorBody {
    /// An error answer in the OpenAPI description: this schema, as JSON.
    pub(crate) fn described(description: &str) -> utoipa::openapi::Response {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    }
}

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
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
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
