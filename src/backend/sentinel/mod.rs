//! The Sentinel backend: one Redis primary, found and followed through
//! Redis Sentinel.
//!
//! It is the single-Redis backend whose server is not fixed: the same
//! [`RedisLink`] (subscriber, ordered publisher, pool), presence and
//! leases, on a [`CurrentServer`] that the [`watcher`] keeps pointed at the
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

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::watcher::Watcher;
use super::redis::target::CurrentServer;
use super::redis::{LinkStart, Presence, RedisBackend, RedisLeases, RedisLink};
use crate::backend::error::BackendError;
use crate::backend::seam::Backend;
use crate::backend::seam::BackendContext;
use crate::backend::seam::IntoBackend;

impl IntoBackend for SentinelOptions {
    /// Validates the options and starts the tasks. Returns at once; the
    /// primary is asked for in the background.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(start(*self, context)?))
    }
}

/// The started Sentinel backend: the single-Redis backend on a link the
/// watcher moves (see the module docs).
pub type SentinelBackend = RedisBackend;

/// Validates `options` and starts the tasks (see [`IntoBackend::start`]).
pub fn start(
    options: SentinelOptions,
    context: BackendContext,
) -> Result<SentinelBackend, BackendError> {
    start_sentinel(options, context)
}

fn start_sentinel(
    options: SentinelOptions,
    context: BackendContext,
) -> Result<SentinelBackend, BackendError> {
    let names = options.validate()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| BackendError::NoRuntime)?;
    if options.redis.is_tls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let cancel = CancellationToken::new();
    let wake_presence = Arc::new(Notify::new());
    let span =
        tracing::info_span!("redis_sentinel", node = %context.node_id, master = %options.master);
    let target = Arc::new(CurrentServer::unknown());
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
    Ok(RedisBackend::assemble(
        ("sentinel", "primary"),
        options.redis,
        names,
        (link, presence, leases),
        cancel,
        tasks,
    ))
}
