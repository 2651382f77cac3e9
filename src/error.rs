//! The library's error types.

pub use crate::backend::error::BackendError;
use crate::close::CloseKind;
use crate::config::ConfigError;
use crate::envelope::EnvelopeError;
use crate::group::GroupNameError;
use crate::limits::LimitRejection;

/// What a hub operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid group name: {0}")]
    GroupName(#[from] GroupNameError),
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A control message (`backend/control.rs`) could not be encoded.
    #[error(transparent)]
    Control(#[from] crate::backend::control::ControlError),
    /// A limit of the node (connections, groups) is reached.
    #[error(transparent)]
    Limit(#[from] LimitRejection),
}

/// Why a session's connection failed; passed to the error handler.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client sent a message larger than {limit} bytes")]
    MessageTooBig { limit: usize },
    #[error("client sent a text frame that is not valid UTF-8")]
    InvalidUtf8,
    #[error("no frame from the client within the pong wait of {0:?}")]
    PongTimeout(std::time::Duration),
    #[error("writing to the client took longer than {0:?}")]
    WriteTimeout(std::time::Duration),
    #[error("reading from the client failed: {0}")]
    Read(String),
    /// A compressed client message is not valid deflate data (closed with
    /// 1007, invalid payload).
    #[error("the client sent a compressed message that does not inflate: {0}")]
    BadCompression(String),
    /// The client broke the WebSocket protocol (closed with 1002).
    #[error("the client broke the WebSocket protocol: {0}")]
    Protocol(String),
    #[error("writing to the client failed: {0}")]
    Write(String),
    /// The connection's token expired and was not refreshed.
    #[error("token expired")]
    TokenExpired,
    /// A client without the right to publish sent a message.
    #[error("publish not allowed")]
    PublishNotAllowed,
    /// A token refresh was refused.
    #[error("refresh rejected: {0}")]
    RefreshRejected(String),
    /// The client sent messages faster than the configured rate.
    #[error("rate limit exceeded: more than {rate} messages/s")]
    RateLimited { rate: u32 },
}

impl SessionError {
    /// Why the client is told the session ends, if its connection can
    /// still take a close.
    pub fn close_kind(&self) -> Option<CloseKind> {
        match self {
            SessionError::MessageTooBig { .. } => Some(CloseKind::TooBig),
            SessionError::InvalidUtf8 | SessionError::BadCompression(_) => {
                Some(CloseKind::InvalidPayload)
            }
            SessionError::Protocol(_) => Some(CloseKind::ProtocolError),
            SessionError::TokenExpired => Some(CloseKind::TokenExpired),
            SessionError::PublishNotAllowed => Some(CloseKind::PolicyViolation),
            SessionError::RefreshRejected(_) => Some(CloseKind::RefreshRejected),
            SessionError::RateLimited { .. } => Some(CloseKind::PolicyViolation),
            SessionError::PongTimeout(_)
            | SessionError::WriteTimeout(_)
            | SessionError::Read(_)
            | SessionError::Write(_) => None,
        }
    }

    /// The WebSocket close code the client is sent for this error, if the
    /// socket can still take one.
    pub fn close_code(&self) -> Option<u16> {
        self.close_kind().map(CloseKind::websocket_code)
    }
}
