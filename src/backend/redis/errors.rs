//! How Redis errors become [`BackendError`]s.
//!
//! One mapping for the subscriber, the publisher, presence and leases, so
//! that "Redis refused this" (a server error: retrying will not help) and
//! "Redis is not there" (retry with backoff) mean the same everywhere.

use deadpool_redis::PoolError;
use redis::{ErrorKind, RedisError};

use crate::backend::error::BackendError;

/// Not authenticated: no or wrong credentials in the URL.
pub(crate) fn is_auth_error(error: &RedisError) -> bool {
    matches!(error.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// Redis answered, with an error.
pub(crate) fn is_server_error(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_))
}

/// A Redis error as a backend error: refused by the server, or unreachable.
pub(crate) fn command_error(error: RedisError) -> BackendError {
    if is_server_error(&error) {
        BackendError::Command(error.to_string())
    } else {
        BackendError::Unavailable(error.to_string())
    }
}

/// Could not get a connection from the pool.
pub(crate) fn pool_error(error: PoolError) -> BackendError {
    match error {
        PoolError::Backend(error) => command_error(error),
        PoolError::Timeout(_) => BackendError::Unavailable(
            "no Redis connection could be had in time (pool timeout)".into(),
        ),
        other => BackendError::Unavailable(other.to_string()),
    }
}
