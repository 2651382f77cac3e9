//! The one connection pool of a Redis backend.
//!
//! Publishing, presence heartbeats, cluster-view reads and worker leases all
//! take their connections from here, with the same timeouts and the same
//! error mapping. (The subscriber connection is separate: a connection in
//! pub/sub mode can do nothing else.)

use std::future::Future;
use std::time::Duration;

use deadpool_redis::{Connection, Pool, Runtime};
use tokio::time::timeout;

use super::errors::pool_error;
use super::options::{RedisOptions, redact};
use crate::error::BackendError;

/// A pool plus the command timeout every use of it runs under.
#[derive(Clone)]
pub(crate) struct RedisPool {
    pool: Pool,
    command_timeout: Duration,
}

impl RedisPool {
    /// A pool of `options.pool_size` connections to `client`'s server.
    pub(crate) fn new(
        client: &redis::Client,
        options: &RedisOptions,
    ) -> Result<Self, BackendError> {
        let limit = options.command_timeout;
        let manager = deadpool_redis::Manager::new(client.get_connection_info().clone())
            .map_err(|e| BackendError::InvalidUrl(format!("{}: {e}", redact(&options.url))))?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(limit))
            .create_timeout(Some(limit))
            .recycle_timeout(Some(limit))
            .build()
            .map_err(|e| BackendError::InvalidOptions(e.to_string()))?;
        Ok(RedisPool {
            pool,
            command_timeout: limit,
        })
    }

    /// Runs `f` on a pooled connection, all of it (getting the connection
    /// included) within the command timeout.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, BackendError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let work = async {
            let conn = self.pool.get().await.map_err(pool_error)?;
            f(conn).await
        };
        timeout(self.command_timeout, work)
            .await
            .map_err(|_| BackendError::Timeout(self.command_timeout))?
    }

    /// Closes every connection; later uses fail.
    pub(crate) fn close(&self) {
        self.pool.close();
    }
}
