//! The one connection source of a Redis backend, whatever the transport.
//!
//! Publishing, presence heartbeats, cluster-view reads and worker leases all
//! take their connections from here, with the same timeouts and the same
//! error mapping. (The subscriber connection is separate: a connection in
//! pub/sub mode can do nothing else.)
//!
//! Two transports stand behind it, so that the publisher, presence and
//! leases are written once for both:
//!
//! * one Redis server (single, each shard, the Sentinel's current primary):
//!   a deadpool of multiplexed connections;
//! * a Redis Cluster: redis-rs's cluster connection, which routes each
//!   command by its key's slot and follows MOVED and ASK itself.
//!
//! Both hand out a [`PooledConnection`], which is a
//! [`ConnectionLike`](redis::aio::ConnectionLike). The one thing that
//! differs for callers is that a cluster pipeline must stay within one
//! slot: [`RedisPool::query_each`] runs single-key commands of any slots.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::{Connection, Pool, Runtime};
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::time::timeout;

use super::errors::{command_error, pool_error};
use super::options::{RedisOptions, redact};
use super::target::CurrentServer;
use crate::backend::error::BackendError;

/// A pool plus the command timeout every use of it runs under.
#[derive(Clone)]
pub(crate) struct RedisPool {
    source: Source,
    command_timeout: Duration,
}

#[derive(Clone)]
enum Source {
    /// Connections to one server (fixed, or the primary Sentinel names).
    CurrentServer(Arc<CurrentServer>),
    /// One handle to a Redis Cluster (cloning it shares its connections).
    Cluster(ClusterConnection),
}

/// A connection taken from a [`RedisPool`].
pub(crate) enum PooledConnection {
    Pooled(Connection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for PooledConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            PooledConnection::Pooled(conn) => conn.req_packed_command(cmd),
            PooledConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            PooledConnection::Pooled(conn) => conn.req_packed_commands(cmd, offset, count),
            PooledConnection::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            PooledConnection::Pooled(conn) => conn.get_db(),
            PooledConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

impl RedisPool {
    /// A deadpool of `options.pool_size` connections to `client`'s server.
    pub(crate) fn build(
        client: &redis::Client,
        options: &RedisOptions,
    ) -> Result<Pool, BackendError> {
        let limit = options.command_timeout;
        let manager = deadpool_redis::Manager::new(client.get_connection_info().clone())
            .map_err(|e| BackendError::InvalidUrl(format!("{}: {e}", redact(&options.url))))?;
        Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(limit))
            .create_timeout(Some(limit))
            .recycle_timeout(Some(limit))
            .build()
            .map_err(|e| BackendError::InvalidOptions(e.to_string()))
    }

    /// Commands to whatever server `target` names at the time.
    pub(crate) fn for_target(target: Arc<CurrentServer>, command_timeout: Duration) -> Self {
        RedisPool {
            source: Source::CurrentServer(target),
            command_timeout,
        }
    }

    /// Commands through a Redis Cluster connection.
    pub(crate) fn cluster(connection: ClusterConnection, command_timeout: Duration) -> Self {
        RedisPool {
            source: Source::Cluster(connection),
            command_timeout,
        }
    }

    /// Whether this is a Redis Cluster (pipelines must stay in one slot).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster(_))
    }

    /// Runs `f` on a pooled connection, all of it (getting the connection
    /// included) within the command timeout.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, BackendError>
    where
        F: FnOnce(PooledConnection) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let work = async {
            let conn = match &self.source {
                Source::CurrentServer(target) => {
                    let server = target.current().ok_or_else(|| {
                        BackendError::Unavailable(
                            "the primary is not known yet (asking Sentinel)".into(),
                        )
                    })?;
                    PooledConnection::Pooled(server.pool.get().await.map_err(pool_error)?)
                }
                Source::Cluster(conn) => PooledConnection::Cluster(conn.clone()),
            };
            f(conn).await
        };
        timeout(self.command_timeout, work)
            .await
            .map_err(|_| BackendError::Timeout(self.command_timeout))?
    }

    /// Runs single-key commands whose keys may be in different slots, and
    /// returns their answers in order: one pipeline on one server, each
    /// command routed on its own (all at once) on a cluster.
    pub(crate) async fn query_each(&self, commands: Vec<Cmd>) -> Result<Vec<Value>, BackendError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        self.run(|conn| async move {
            match conn {
                PooledConnection::Pooled(mut conn) => {
                    let mut pipe = redis::pipe();
                    for cmd in commands {
                        pipe.add_command(cmd);
                    }
                    pipe.query_async(&mut conn).await.map_err(command_error)
                }
                PooledConnection::Cluster(conn) => {
                    let each = commands.into_iter().map(|cmd| {
                        let mut conn = conn.clone();
                        async move { cmd.query_async::<Value>(&mut conn).await }
                    });
                    futures_util::future::join_all(each)
                        .await
                        .into_iter()
                        .map(|answer| answer.map_err(command_error))
                        .collect()
                }
            }
        })
        .await
    }

    /// Closes every connection; later uses fail. (A cluster connection
    /// closes when its last handle is dropped.)
    pub(crate) fn close(&self) {
        if let Source::CurrentServer(target) = &self.source {
            target.close();
        }
    }
}
