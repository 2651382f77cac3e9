//! What a backend can fail with.
//!
//! Its own file, at the bottom of the backend: every backend and every
//! piece of one raises it, and nothing here depends on the hub.

/// What a backend (the link between nodes) can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    #[error("Redis is not reachable: {0}")]
    Unavailable(String),
    #[error("Redis command failed: {0}")]
    Command(String),
    #[error("the backend is shut down")]
    Closed,
    #[error("invalid backend options: {0}")]
    InvalidOptions(String),
    #[error("the backend must be started inside a Tokio runtime")]
    NoRuntime,
    #[error("Redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the Redis publish queue is full ({0} messages waiting)")]
    QueueFull(usize),
}
