//! The Sentinel backend: one Redis primary, found and followed through
//! Redis Sentinel.
//!
//! It is the single-Redis backend whose server is not fixed: the same
//! [`RedisLink`] (subscriber, ordered publisher, pool), presence and
//! leases, on a [`Target`] that the [`watcher`] keeps pointed at the
//! primary the Sentinels name. On a failover the watcher sees the new
//! primary within one `health_interval`, switches the target, and the
//! subscriber drops its connection and reconnects — resubscribing every
//! wanted channel — to the new primary, as after any lost connection.
//! Until the Sentinels have promoted a replica, publishes fail (counted,
//! their acks say so) and `status().connected` is false, so `/readyz`
//! answers 503 for the few seconds a failover takes.

mod options;
mod watcher;

pub use self::options::SentinelOptions;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::watcher::Watcher;
use super::channels::ChannelNames;
use super::leases::LeaseStore;
use super::redis::target::Target;
use super::redis::{LinkStart, Presence, RedisLeases, RedisLink};
use super::{
    Backend, BackendContext, BackendStatus, BoxFuture, Channel, HistoryPage, HistoryQuery,
    IntoBackend, NodeInfo, PublishAck,
};
use crate::error::BackendError;
use crate::group::GroupName;
use crate::history::HistoryLimits;

impl IntoBackend for SentinelOptions {
    /// Validates the options and starts the tasks. Returns at once; the
    /// primary is asked for in the background.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(SentinelBackend::start(*self, context)?))
    }
}

/// The started Sentinel backend. See the module docs.
pub struct SentinelBackend {
    options: SentinelOptions,
    names: ChannelNames,
    link: RedisLink,
    presence: Arc<Presence>,
    leases: Arc<RedisLeases>,
    cancel: CancellationToken,
    shut_down: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl SentinelBackend {
    /// Validates `options` and starts the tasks (see [`IntoBackend::start`]).
    pub fn start(options: SentinelOptions, context: BackendContext) -> Result<Self, BackendError> {
        let names = options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BackendError::NoRuntime)?;
        if options.redis.is_tls() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let cancel = CancellationToken::new();
        let wake_presence = Arc::new(Notify::new());
        let span = tracing::info_span!("redis_sentinel", node = %context.node_id, master = %options.master);
        let target = Arc::new(Target::unknown());
        let mut tasks = Vec::new();
        let link = RedisLink::start_on(
            LinkStart {
                options: &options.redis,
                names: &names,
                context: &context,
                listen_cluster: true,
                wake_presence: wake_presence.clone(),
                cancel: &cancel,
                span: span.clone(),
                mode: "sentinel",
                role: "primary".into(),
            },
            target.clone(),
            format!("primary of {}", options.master),
            &mut tasks,
        )?;
        let presence = Arc::new(
            Presence::new(
                link.pool.clone(),
                context.clone(),
                &options.redis.presence_key,
                options.redis.presence_ttl,
            )
            .with_function(super::redis::function::library_for(
                &context.history,
                &names,
            )),
        );
        let leases = Arc::new(RedisLeases::new(
            link.pool.clone(),
            options.redis.lease_prefix.clone(),
        ));
        let watcher = Watcher {
            sentinels: options.sentinels.clone(),
            master: options.master.clone(),
            options: options.redis.clone(),
            target,
        };
        tasks.push(runtime.spawn(watcher.run(cancel.clone()).instrument(span.clone())));
        tasks.push(
            runtime.spawn(
                presence
                    .clone()
                    .run(
                        options.redis.heartbeat_interval,
                        wake_presence,
                        cancel.clone(),
                    )
                    .instrument(span),
            ),
        );
        Ok(SentinelBackend {
            options,
            names,
            link,
            presence,
            leases,
            cancel,
            shut_down: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
        })
    }
}

impl Backend for SentinelBackend {
    fn is_clustered(&self) -> bool {
        true
    }

    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck {
        self.link.publish(channel, payload)
    }

    fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck {
        self.link.publish_with_history(group, limits, payload)
    }

    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BackendError>> {
        Box::pin(self.link.history.read(group, query))
    }

    fn subscribe(&self, group: &GroupName) {
        self.link.subscribe(group);
    }

    fn unsubscribe(&self, group: &GroupName) {
        self.link.unsubscribe(group);
    }

    fn subscribed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>> {
        let channel = self.names.group(group);
        Box::pin(async move {
            self.link
                .state
                .confirmed(&channel, self.options.redis.command_timeout)
                .await
        })
    }

    fn status(&self) -> BackendStatus {
        let link = self.link.state.snapshot();
        BackendStatus {
            kind: "sentinel",
            connected: link.connected,
            connections: vec![self.link.connection_status("primary", &link)],
            subscriptions: link.subscribed,
            last_error: link.last_error,
        }
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>> {
        Box::pin(self.presence.nodes())
    }

    fn leases(&self) -> Arc<dyn LeaseStore> {
        self.leases.clone()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.shut_down.swap(true, Ordering::AcqRel) {
                return;
            }
            let budget = self.options.redis.command_timeout;
            if !self.link.flush(budget).await {
                tracing::warn!("shutdown: queued publishes did not all leave in time");
            }
            self.cancel.cancel();
            let tasks = std::mem::take(&mut *self.tasks.lock());
            let _ = timeout(budget, futures_util::future::join_all(tasks)).await;
            if let Err(error) = self.presence.withdraw().await {
                tracing::warn!(%error, "shutdown: could not remove this node's presence");
            }
            self.link.pool.close();
            self.link.state.set_broken(&BackendError::Closed);
            tracing::info!("Sentinel backend stopped");
        })
    }
}

impl Drop for SentinelBackend {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
