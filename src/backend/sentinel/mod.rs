//! The Sentinel backend: one Redis primary, found and followed through
//! Redis Sentinel.
//!
//! It is the single-Redis backend whose server is not fixed: the same
//! link (subscriber, ordered publisher, pool), presence and leases
//! (`redis::on_one_server`), on a `CurrentServer` that the [`watcher`]
//! keeps pointed at the primary the Sentinels name. On a failover the
//! watcher sees the new primary within one `health_interval`, switches the
//! target, and the subscriber drops its connection and reconnects —
//! resubscribing every wanted channel — to the new primary, as after any
//! lost connection.
//! Until the Sentinels have promoted a replica, publishes fail (counted,
//! their acks say so) and `status().connected` is false, so `/readyz`
//! answers 503 for the few seconds a failover takes.

mod options;
mod watcher;

pub use self::options::SentinelOptions;

use std::sync::Arc;

use self::watcher::Watcher;
use super::redis::target::CurrentServer;
use super::redis::{LinkStart, on_one_server, prepare_tls};
use crate::backend::error::BackendError;
use crate::backend::seam::{Backend, BackendContext, IntoBackend};
use crate::backend::tasks::Tasks;

impl IntoBackend for SentinelOptions {
    /// Validates the options and starts the tasks. Returns at once; the
    /// primary is asked for in the background.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Backend, BackendError> {
        let names = self.validate()?;
        let mut tasks = Tasks::on_current_runtime(self.redis.command_timeout)?;
        // `redis.url` is the first Sentinel's (`SentinelOptions::new`),
        // whose TLS settings the primary is reached with.
        prepare_tls([&self.redis.url]);
        let span =
            tracing::info_span!("redis_sentinel", node = %context.node_id, master = %self.master);
        let target = Arc::new(CurrentServer::unknown());
        let watcher = Watcher {
            sentinels: self.sentinels.clone(),
            master: self.master.clone(),
            options: self.redis.clone(),
            target: target.clone(),
        };
        tasks.spawn(watcher.run(tasks.token()), span.clone());
        let start = LinkStart {
            options: &self.redis,
            names: &names,
            context: &context,
            span,
            mode: "sentinel",
            role: "primary".into(),
            label: format!("primary of {}", self.master),
        };
        Ok(on_one_server(&start, target, tasks))
    }
}
