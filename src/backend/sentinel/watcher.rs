//! Asking the Sentinels where the primary is, and moving the link there.
//!
//! Every `health_interval` the watcher asks the Sentinels in turn
//! (`SENTINEL get-master-addr-by-name`), checks with `ROLE` that the
//! server named is a primary (a Sentinel that has not yet heard of a
//! failover may name the old one), and when it differs from the link's
//! current server, switches the link's [`CurrentServer`]: the pool serves the new
//! primary from then on and the subscriber reconnects and resubscribes.
//! Polling rather than Sentinel's `+switch-master` events keeps one code
//! path for the first discovery, a missed event and a Sentinel restart.

use std::sync::Arc;

use redis::{ConnectionInfo, IntoConnectionInfo, Value};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::backend::cluster::topology::node_info;
use crate::backend::error::BackendError;
use crate::backend::redis::periodic::{Every, Streak};
use crate::backend::redis::pool::RedisPool;
use crate::backend::redis::target::{CurrentServer, Server};
use crate::backend::redis::{RedisOptions, command_error, redact};

/// What the watcher needs.
pub(crate) struct Watcher {
    pub sentinels: Vec<String>,
    pub master: String,
    pub options: RedisOptions,
    pub target: Arc<CurrentServer>,
}

impl Watcher {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut every = Every::new(self.options.health_interval, cancel);
        let mut streak = Streak::default();
        while every.next(None).await.is_some() {
            let (address, info) = match self.primary().await {
                Ok(found) => {
                    streak.worked();
                    found
                }
                Err(error) => {
                    if streak.failed() {
                        tracing::warn!(master = %self.master, %error, "no Sentinel says where the primary is; retrying");
                    } else {
                        tracing::debug!(%error, "still no primary from Sentinel");
                    }
                    continue;
                }
            };
            if self.target.current().is_some_and(|s| s.address == address) {
                continue;
            }
            match self.server(address.clone(), info) {
                Ok(server) => {
                    let was = self.target.address();
                    tracing::info!(
                        master = %self.master, primary = %address, previous = %was,
                        "Sentinel names a new primary; moving publishing and subscriptions there"
                    );
                    self.target.switch(server);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot use the primary Sentinel named")
                }
            }
        }
    }

    /// `host:port` and connection settings of the primary, as the first
    /// Sentinel that answers names it, checked with `ROLE`.
    async fn primary(&self) -> Result<(String, ConnectionInfo), BackendError> {
        let limit = self.options.command_timeout;
        let mut last = BackendError::Unavailable("no Sentinel configured".into());
        for url in &self.sentinels {
            let attempt = async {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| BackendError::InvalidUrl(format!("{}: {e}", redact(url))))?;
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(command_error)?;
                let named: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.master)
                    .query_async(&mut conn)
                    .await
                    .map_err(command_error)?;
                let (host, port) = named.ok_or_else(|| {
                    BackendError::Command(format!(
                        "{} does not know {:?}",
                        redact(url),
                        self.master
                    ))
                })?;
                let address = format!("{host}:{port}");
                let first = self
                    .sentinels
                    .first()
                    .map(String::as_str)
                    .unwrap_or_default()
                    .into_connection_info()
                    .map_err(command_error)?;
                let info = node_info(&first, &address)?;
                let mut primary = redis::Client::open(info.clone())
                    .map_err(command_error)?
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(command_error)?;
                let role: Vec<Value> = redis::cmd("ROLE")
                    .query_async(&mut primary)
                    .await
                    .map_err(command_error)?;
                match role.first() {
                    Some(Value::BulkString(b)) if b == b"master" => Ok((address, info)),
                    _ => Err(BackendError::Unavailable(format!(
                        "{address}, named by {}, is not a primary (yet)",
                        redact(url)
                    ))),
                }
            };
            match timeout(limit, attempt).await {
                Ok(Ok(found)) => return Ok(found),
                Ok(Err(error)) => last = error,
                Err(_) => last = BackendError::Timeout(limit),
            }
        }
        Err(last)
    }

    fn server(&self, address: String, info: ConnectionInfo) -> Result<Server, BackendError> {
        let client = redis::Client::open(info).map_err(command_error)?;
        let pool = RedisPool::build(&client, &self.options)?;
        Ok(Server {
            client,
            address,
            pool,
        })
    }
}
