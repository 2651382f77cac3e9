//! One Redis server, as a node uses it: its subscriber connection, its
//! ordered publisher and its pool.
//!
//! The single-Redis backend has one link; the sharded backend
//! (`backend/sharded/`) has one per shard, and routes each group to the
//! link its shard is on. Keeping the three together here is what lets both
//! reuse the same reconnecting subscriber, the same pipelined publisher and
//! the same pool without copying them: a link is told its URL, whether it
//! carries the cluster channel, and the cancellation token of the backend
//! that owns it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::history::RedisHistory;
use super::link_state::{LinkSnapshot, LinkState};
use super::options::{RedisOptions, redact};
use super::pool::RedisPool;
use super::publisher::{PublishQueue, Publisher};
use super::subscriber::{Subscriber, SubscriberSettings, SubscriptionCommand};
use super::target::{CurrentServer, Server};
use crate::backend::channels::ChannelNames;
use crate::backend::error::BackendError;
use crate::backend::inbound::Channel;
use crate::backend::publish::PublishAck;
use crate::backend::seam::BackendContext;
use crate::backend::status::ConnectionStatus;
use crate::backend::subscriptions::Subscriptions;
use crate::backoff::Backoff;
use crate::group::GroupName;
use crate::history::HistoryLimits;

/// One Redis server's subscriber, publisher and pool. See the module docs.
pub(crate) struct RedisLink {
    /// The server (`host:port` in logs and status, never the URL).
    pub(crate) target: Arc<CurrentServer>,
    pub(crate) state: Arc<LinkState>,
    pub(crate) pool: RedisPool,
    /// History groups' streams on this server.
    pub(crate) history: Arc<RedisHistory>,
    commands: mpsc::UnboundedSender<SubscriptionCommand>,
    publishes: PublishQueue,
}

/// What a link needs besides its options.
pub(crate) struct LinkStart<'a> {
    pub(crate) options: &'a RedisOptions,
    pub(crate) names: &'a ChannelNames,
    pub(crate) context: &'a BackendContext,
    /// Subscribe the cluster channel on this link.
    pub(crate) listen_cluster: bool,
    /// Notified on every (re)connect of this link.
    pub(crate) wake_presence: Arc<Notify>,
    pub(crate) cancel: &'a CancellationToken,
    /// For the logs: `redis_backend`, `shard`, ...
    pub(crate) span: tracing::Span,
    /// The backend's mode and this link's role in it (`redis`, `shard 2`),
    /// for `groupcast_redis_connection_up`.
    pub(crate) mode: &'a str,
    pub(crate) role: String,
}

impl RedisLink {
    /// Connects to `start.options.url` in the background: spawns the
    /// subscriber and the publisher, whose handles go to `tasks`.
    pub(crate) fn start(
        start: LinkStart<'_>,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Result<Self, BackendError> {
        let options = start.options;
        if options.is_tls() {
            // TLS: rustls needs a process-wide crypto provider. Ours is
            // ring; if the application installed one already, keep it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| BackendError::InvalidUrl(format!("{}: {e}", redact(&options.url))))?;
        let address = client.get_connection_info().addr().to_string();
        let pool = RedisPool::build(&client, options)?;
        let target = Arc::new(CurrentServer::fixed(Server {
            client,
            address: address.clone(),
            pool,
        }));
        Self::start_on(start, target, address, tasks)
    }

    /// Like [`RedisLink::start`], on a server that `target` names (and may
    /// change): `label` stands for it in `groupcast_redis_connection_up`.
    pub(crate) fn start_on(
        start: LinkStart<'_>,
        target: Arc<CurrentServer>,
        label: String,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Result<Self, BackendError> {
        let options = start.options;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BackendError::NoRuntime)?;
        let address = label;
        let pool = RedisPool::for_target(target.clone(), options.command_timeout);
        let labels = vec![
            ("mode".to_string(), start.mode.to_string()),
            ("role".to_string(), start.role),
            ("redis".to_string(), address.clone()),
        ];
        let state = Arc::new(LinkState::new(start.context.metrics.clone(), labels));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (publishes, publishes_rx) = PublishQueue::new(
            options.publish_queue_len,
            address.clone(),
            start.context.metrics.clone(),
        );
        let subscriber = Subscriber {
            settings: SubscriberSettings {
                target: target.clone(),
                names: start.names.clone(),
                command_timeout: options.command_timeout,
                health_interval: options.health_interval,
                backoff: Backoff::new(options.backoff_min, options.backoff_max),
                listen_cluster: start.listen_cluster,
            },
            inbox: start.context.inbox.clone(),
            state: state.clone(),
            commands: commands_rx,
            cancel: start.cancel.clone(),
            wake_presence: start.wake_presence,
            wanted: Subscriptions::new(options.unsubscribe_linger),
            last_epoch: None,
        };
        let history = Arc::new(RedisHistory::new(
            pool.clone(),
            start.names.clone(),
            start.context.history.clone(),
            "PUBLISH",
        ));
        let publisher = Publisher {
            pool: pool.clone(),
            queue: publishes_rx,
            names: start.names.clone(),
            history: history.clone(),
            command: "PUBLISH",
            metrics: start.context.metrics.clone(),
            failed_in_a_row: 0,
        };
        let span = start.span;
        tasks.push(runtime.spawn(subscriber.run().instrument(span.clone())));
        tasks.push(runtime.spawn(publisher.run(start.cancel.clone()).instrument(span)));
        Ok(RedisLink {
            target,
            state,
            pool,
            history,
            commands,
            publishes,
        })
    }

    /// Queues one publish, in call order; a full queue fails it at once.
    pub(crate) fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck {
        self.publishes.publish(channel, payload)
    }

    /// Queues one append-and-publish to `group`'s history, in call order
    /// with plain publishes.
    pub(crate) fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck {
        self.publishes.publish_with_history(group, limits, payload)
    }

    pub(crate) fn subscribe(&self, group: &GroupName) {
        // Fails only once the subscriber has stopped (shutdown): nothing to do.
        let _ = self
            .commands
            .send(SubscriptionCommand::Subscribe(group.clone()));
    }

    pub(crate) fn unsubscribe(&self, group: &GroupName) {
        let _ = self
            .commands
            .send(SubscriptionCommand::Unsubscribe(group.clone()));
    }

    /// This link in `status().connections`.
    pub(crate) fn connection_status(&self, role: &str, link: &LinkSnapshot) -> ConnectionStatus {
        ConnectionStatus {
            role: role.to_string(),
            redis: self.target.address(),
            connected: link.connected,
            subscriptions: link.subscribed.len(),
        }
    }

    /// Waits until everything queued before this call was sent, at most
    /// `budget`; false when it was not.
    pub(crate) async fn flush(&self, budget: std::time::Duration) -> bool {
        self.publishes.flush(budget).await
    }
}
