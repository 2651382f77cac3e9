//! The single-Redis backend: how the nodes of a cluster hear each other
//! through one Redis server.
//!
//! Every node holds only its own sessions. For each group that has at least
//! one local member, the node SUBSCRIBEs to the group's channel
//! (`group:<name>`); it is also always subscribed to one cluster channel,
//! for broadcasts to everyone and to lists of sessions. A broadcast is
//! delivered to local sessions by the hub and PUBLISHed here once; Redis
//! hands it to every node that listens, and their inboxes fan it out.
//!
//! The backend is three parts, as every backend is (`backend/seam.rs`):
//! the link is the [`Broker`](crate::backend::Broker), the presence the
//! [`ClusterView`](crate::backend::ClusterView), the Redis leases the
//! [`LeaseStore`](crate::backend::LeaseStore). Each is a piece the other
//! Redis backends use as well — the Sentinel backend is this one on a
//! server that moves, the sharded backend has a link per shard, the Redis
//! Cluster backend a link of its own making — so each has its file here,
//! and nothing is written once per backend. One file per job, each task
//! owning its state so that nothing takes a lock across an await:
//!
//! | file | job |
//! | --- | --- |
//! | `options.rs` | the settings and their defaults, checked once; the same settings at each URL of a mode of several servers |
//! | `link.rs` | the [`Broker`](crate::backend::Broker): one deployment's subscriber, ordered publisher, pool and history together |
//! | `subscriber.rs` | the subscriber connection of one server: reconnect and resubscribe, health pings |
//! | `listener.rs` | what both subscribers (this one and the cluster's) do with the hub's commands and with a message read |
//! | `publisher.rs` | the ordered publisher: pipelines of PUBLISH in call order |
//! | `connections.rs` | a link's connections in `status()`: one server, or a cluster's primaries |
//! | `presence.rs` | heartbeats and the cluster view (a hash and a sorted set, no SCAN) |
//! | `group_presence.rs`, `group_scripts.rs` | per-group presence: joins and leaves written in batches, members read a page at a time, counts kept by the same scripts |
//! | `periodic.rs` | the timer loop of the heartbeat and the Sentinel watcher, failures logged once a streak |
//! | `leases.rs` | worker leases (`SET NX PX`, fenced scripts) |
//! | `history.rs` | a stream per history group, appended and published by one script |
//! | `function.rs` | `FCALL groupcast_publish`: the same append for publishers outside groupcast |
//! | `pool.rs` | the one pool publishing, presence and leases share |
//! | `target.rs` | which server a link talks to: fixed, or the primary Sentinel names |
//! | `link_state.rs`, `inbound.rs` | a subscriber's state as `status()` reads it; a message read as the inbox takes it |
//! | `errors.rs` | Redis errors as [`BackendError`]s |

pub(crate) mod connections;
pub(crate) mod errors;
pub mod function;
pub(crate) mod group_presence;
pub(crate) mod group_scripts;
pub(crate) mod history;
pub(crate) mod inbound;
mod leases;
pub(crate) mod link;
pub(crate) mod link_state;
pub(crate) mod listener;
pub(crate) mod options;
pub(crate) mod periodic;
pub(crate) mod pool;
mod presence;
pub(crate) mod publisher;
pub(crate) mod subscriber;
pub(crate) mod target;

pub use self::options::RedisOptions;

pub(crate) use self::errors::command_error;
pub(crate) use self::group_presence::{GroupPresence, GroupPresenceStart};
pub(crate) use self::leases::RedisLeases;
pub(crate) use self::link::{LinkStart, RedisLink, fixed_server};
pub(crate) use self::options::{prepare_tls, redact};
pub(crate) use self::presence::Presence;

use std::sync::Arc;

use self::target::CurrentServer;
use crate::backend::error::BackendError;
use crate::backend::seam::{Backend, BackendContext, IntoBackend};
use crate::backend::tasks::Tasks;

impl IntoBackend for RedisOptions {
    /// Validates the options and starts the backend's tasks. Returns at
    /// once: the connection to Redis is made in the background, and the
    /// broker's `status()` says `connected: false` until it is.
    ///
    /// Must be called inside a Tokio runtime.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Backend, BackendError> {
        let names = self.validate()?;
        let tasks = Tasks::on_current_runtime(self.command_timeout)?;
        let target = fixed_server(&self)?;
        let start = LinkStart {
            options: &self,
            names: &names,
            context: &context,
            span: tracing::info_span!("redis_backend", node = %context.node_id),
            mode: "redis",
            role: "redis".into(),
            label: target.address(),
        };
        Ok(on_one_server(&start, target, tasks))
    }
}

/// A backend on one server at a time — the single-Redis backend, and the
/// Sentinel backend, whose watcher (already among `tasks`) moves `target`
/// to the primary the Sentinels name: one link, with the cluster view and
/// the leases on its pool, and the Redis Function loaded there for
/// publishers outside groupcast.
pub(crate) fn on_one_server(
    start: &LinkStart<'_>,
    target: Arc<CurrentServer>,
    mut tasks: Tasks,
) -> Backend {
    let link = RedisLink::on_server(start, target, true, &mut tasks);
    let function = function::library_for(&start.context.history, start.names);
    let presence = Presence::start(&link, start, function, &mut tasks);
    let members = GroupPresence::start(group_presence_on(start, vec![link.pool()]), &mut tasks);
    let leases = RedisLeases::new(link.pool(), start.options.lease_prefix.clone());
    Backend::new(Arc::new(link), presence, Arc::new(leases), members).with_tasks(tasks)
}

/// The per-group presence settings of a backend whose groups are all on
/// one pool (one server, a Redis Cluster's routing connection).
pub(crate) fn group_presence_on<'a>(
    start: &LinkStart<'a>,
    pools: Vec<pool::RedisPool>,
) -> GroupPresenceStart<'a> {
    GroupPresenceStart {
        pools,
        route: Arc::new(|_| 0),
        names: start.names.clone(),
        context: start.context,
        interval: start.options.heartbeat_interval,
        ttl: start.options.presence_ttl,
        span: start.span.clone(),
    }
}
