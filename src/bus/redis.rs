//! The Redis bus: how the nodes of a cluster hear each other.
//!
//! Every node holds only its own sessions. For each group that has at least
//! one local member, the node SUBSCRIBEs to the group's channel
//! (`group:<name>`); it is also always subscribed to one cluster channel,
//! for broadcasts to everyone and to lists of sessions. A broadcast is
//! delivered to local sessions by the hub and PUBLISHed here once; Redis
//! hands it to every node that listens, and their inboxes fan it out.
//!
//! Four tasks do the work; each owns its state, so nothing here takes a
//! lock across an await:
//!
//! * the **subscriber** owns the one subscriber connection and the set of
//!   channels this node wants. It reads every incoming message and calls
//!   the inbox from this single task, in the order Redis sent them: that is
//!   what keeps the order of one publisher's messages. It turns the hub's
//!   `subscribe` / `unsubscribe` calls (plain, non-blocking channel sends)
//!   into SUBSCRIBE / UNSUBSCRIBE, with a linger before unsubscribing so a
//!   client that reconnects does not make the subscription flap. When the
//!   connection is lost it reconnects with exponential backoff and
//!   re-subscribes every channel it holds. Sessions never notice.
//! * a **sink worker**, one per connection, sends those SUBSCRIBE,
//!   UNSUBSCRIBE and health-check PINGs one at a time and waits for each
//!   answer, so the subscriber never stops reading while Redis answers.
//!   (redis-rs's [`PubSub::split`](redis::aio::PubSub::split) gives the
//!   sink and the stream of the same connection.) A PING that is not
//!   answered within `command_timeout` means the connection is dead even
//!   if no socket error says so — a paused or partitioned Redis.
//! * the **publisher** takes publishes from a bounded queue in call order
//!   and sends them in batches, one pipeline of PUBLISH per batch, on a
//!   connection from a deadpool-redis pool. A batch is sent only after the
//!   previous one was answered, so the order of calls is the order Redis
//!   sees. Each publish is exactly one PUBLISH, never retried: a failure is
//!   reported on its [`PublishAck`] and counted, never duplicated.
//! * the **presence** heartbeat (see `presence.rs`) writes this node's
//!   groups to Redis for the cluster view.
//!
//! Why RESP2 pub/sub on a dedicated connection rather than RESP3 push
//! messages with automatic resubscription: it works with every Redis and
//! compatible server, and doing the reconnect ourselves is what lets the
//! node report it — in `status()`, `/readyz`, metrics and logs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use deadpool_redis::{Pool, PoolError, Runtime};
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{ErrorKind, Msg, RedisError};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{BoxFuture, Bus, BusContext, BusStatus, Channel, Inbox, NodeInfo, PublishAck};
use crate::error::BusError;
use crate::group::GroupName;
use crate::metrics::Metrics;
use crate::presence::Presence;

/// Settings of the Redis bus.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS.
    pub url: String,
    /// Prefix of group channels: `group:` makes `group:<name>`.
    pub channel_prefix: String,
    /// The channel every node subscribes to (broadcast-all, session lists).
    pub cluster_channel: String,
    /// How long to stay subscribed after a group's last local member left.
    pub unsubscribe_linger: Duration,
    /// How often this node writes its presence heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a heartbeat lives: a dead node vanishes after this.
    pub presence_ttl: Duration,
    /// Key prefix for presence entries.
    pub presence_prefix: String,
    /// Connections in the publishing pool.
    pub pool_size: usize,
    /// How long a Redis command (publish, ping) may take.
    pub command_timeout: Duration,
    /// How often the subscriber connection is health-checked with PING.
    pub health_interval: Duration,
    /// First and largest reconnect delay.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Publishes that may wait for Redis; beyond this, a publish fails at
    /// once (its ack says so) instead of piling up in memory.
    pub publish_queue_len: usize,
}

impl RedisOptions {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            channel_prefix: "group:".into(),
            cluster_channel: "groupcast:cluster".into(),
            unsubscribe_linger: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(6),
            presence_prefix: "groupcast:node:".into(),
            pool_size: 8,
            command_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            publish_queue_len: 65_536,
        }
    }

    /// Checks the URL's scheme and the relations between fields.
    pub fn validate(&self) -> Result<(), BusError> {
        let scheme = self
            .url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("redis" | "rediss")) {
            return Err(BusError::InvalidUrl(format!(
                "{}: the scheme must be redis:// or rediss://",
                redact(&self.url)
            )));
        }
        let invalid = |what: &str| Err(BusError::InvalidOptions(what.to_string()));
        if self.pool_size == 0 {
            return invalid("the pool size must be greater than zero");
        }
        if self.publish_queue_len == 0 {
            return invalid("the publish queue length must be greater than zero");
        }
        for (name, value) in [
            ("heartbeat interval", self.heartbeat_interval),
            ("command timeout", self.command_timeout),
            ("health interval", self.health_interval),
            ("backoff minimum", self.backoff_min),
        ] {
            if value.is_zero() {
                return Err(BusError::InvalidOptions(format!(
                    "the {name} must be greater than zero"
                )));
            }
        }
        if self.backoff_max < self.backoff_min {
            return invalid("the backoff maximum must not be below the backoff minimum");
        }
        if self.presence_ttl <= self.heartbeat_interval {
            return invalid("the presence TTL must be longer than the heartbeat interval");
        }
        if self.cluster_channel.is_empty() || self.presence_prefix.is_empty() {
            return invalid("the cluster channel and the presence prefix must not be empty");
        }
        // A group could otherwise be named so that its channel is the
        // cluster channel.
        if self.cluster_channel.starts_with(&self.channel_prefix) {
            return invalid("the cluster channel must not start with the group channel prefix");
        }
        Ok(())
    }
}

/// `redis://user:secret@host` → `redis://***@host`, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// How many publishes go into one pipeline at most.
const MAX_BATCH: usize = 512;
/// How many already-received messages the subscriber delivers in a row
/// before it looks at commands and timers again.
const MAX_DRAIN: usize = 256;

// ----- shared state ------------------------------------------------------

/// What `status()` reports; written by the subscriber and its sink worker.
struct Shared {
    link: Mutex<LinkState>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct LinkState {
    connected: bool,
    last_error: Option<String>,
    /// Channels Redis confirmed we are subscribed to, on this connection.
    subscribed: BTreeSet<String>,
}

impl Shared {
    fn set_connected(&self) {
        let mut link = self.link.lock();
        link.connected = true;
        link.last_error = None;
        self.metrics.bus_up.set(1);
    }

    /// The connection is gone (or never came): no subscriptions any more.
    fn set_broken(&self, error: &BusError) {
        let mut link = self.link.lock();
        link.connected = false;
        link.last_error = Some(error.to_string());
        link.subscribed.clear();
        self.metrics.bus_up.set(0);
        self.metrics.bus_subscriptions.set(0);
    }

    fn set_subscribed(&self, channel: String, on: bool) {
        let mut link = self.link.lock();
        if on {
            link.subscribed.insert(channel);
        } else {
            link.subscribed.remove(&channel);
        }
        self.metrics
            .bus_subscriptions
            .set(i64::try_from(link.subscribed.len()).unwrap_or(i64::MAX));
    }
}

// ----- the bus -------------------------------------------------------------

/// The Redis bus. See the module docs.
pub struct RedisBus {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    publishes: mpsc::Sender<Outgoing>,
    presence: Arc<Presence>,
    pool: Pool,
    options: RedisOptions,
    /// Whether a full publish queue was logged (log once per episode).
    queue_full_logged: AtomicBool,
    /// Stops every task: on shutdown, and when the bus is dropped.
    cancel: CancellationToken,
    /// Set by the first `shutdown`; later calls return at once.
    shut_down: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the hub asks of the subscriber.
enum Command {
    /// A first local member joined `group` (the registry said so).
    Subscribe(GroupName),
    /// The last local member of `group` left.
    Unsubscribe(GroupName),
}

/// What the publisher is given, in call order.
enum Outgoing {
    Publish {
        channel: Channel,
        payload: Bytes,
        ack: oneshot::Sender<Result<(), BusError>>,
    },
    /// Answered once everything queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

impl RedisBus {
    /// Validates `options` and starts the bus's tasks. Returns at once: the
    /// connection to Redis is made in the background, and
    /// [`status`](Bus::status) says `connected: false` until it is.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn start(options: RedisOptions, context: BusContext) -> Result<Self, BusError> {
        options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BusError::NoRuntime)?;
        if options
            .url
            .get(..9)
            .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"))
        {
            // TLS: rustls needs a process-wide crypto provider. Ours is
            // ring; if the application installed one already, keep it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| BusError::InvalidUrl(format!("{}: {e}", redact(&options.url))))?;
        let address = client.get_connection_info().addr().to_string();

        let manager = deadpool_redis::Manager::new(client.get_connection_info().clone())
            .map_err(|e| BusError::InvalidUrl(format!("{}: {e}", redact(&options.url))))?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.command_timeout))
            .create_timeout(Some(options.command_timeout))
            .recycle_timeout(Some(options.command_timeout))
            .build()
            .map_err(|e| BusError::InvalidOptions(e.to_string()))?;

        let shared = Arc::new(Shared {
            link: Mutex::new(LinkState::default()),
            metrics: context.metrics.clone(),
        });
        shared.metrics.bus_up.set(0);
        let cancel = CancellationToken::new();
        let wake_presence = Arc::new(Notify::new());
        let presence = Arc::new(Presence::new(
            pool.clone(),
            context.node_id.clone(),
            &options.presence_prefix,
            options.presence_ttl,
            options.command_timeout,
            context.local_groups.clone(),
        ));

        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (publishes, publishes_rx) = mpsc::channel(options.publish_queue_len);
        let subscriber = Subscriber {
            client,
            address,
            options: options.clone(),
            inbox: context.inbox.clone(),
            shared: shared.clone(),
            commands: commands_rx,
            cancel: cancel.clone(),
            wake_presence: wake_presence.clone(),
            holds: HashMap::new(),
            lingering: BTreeMap::new(),
            next_linger_id: 0,
        };
        let publisher = Publisher {
            pool: pool.clone(),
            queue: publishes_rx,
            channel_prefix: options.channel_prefix.clone(),
            cluster_channel: options.cluster_channel.clone(),
            command_timeout: options.command_timeout,
            metrics: context.metrics.clone(),
            failed_in_a_row: 0,
        };
        let span = tracing::info_span!("redis_bus", node = %context.node_id);
        let tasks = vec![
            runtime.spawn(subscriber.run().instrument(span.clone())),
            runtime.spawn(publisher.run(cancel.clone()).instrument(span.clone())),
            runtime.spawn(
                presence
                    .clone()
                    .run(options.heartbeat_interval, wake_presence, cancel.clone())
                    .instrument(span),
            ),
        ];
        Ok(RedisBus {
            shared,
            commands,
            publishes,
            presence,
            pool,
            options,
            queue_full_logged: AtomicBool::new(false),
            cancel,
            shut_down: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
        })
    }
}

impl Bus for RedisBus {
    fn is_clustered(&self) -> bool {
        true
    }

    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck {
        let (ack, rx) = oneshot::channel();
        let item = Outgoing::Publish {
            channel,
            payload,
            ack,
        };
        let (item, error) = match self.publishes.try_send(item) {
            Ok(()) => {
                self.queue_full_logged.store(false, Ordering::Relaxed);
                return PublishAck::pending(rx);
            }
            Err(mpsc::error::TrySendError::Full(item)) => {
                if !self.queue_full_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        capacity = self.options.publish_queue_len,
                        "the Redis publish queue is full; publishes reach this node only"
                    );
                }
                (item, BusError::QueueFull(self.options.publish_queue_len))
            }
            Err(mpsc::error::TrySendError::Closed(item)) => (item, BusError::Closed),
        };
        // It never reached the queue: fail it through its own ack.
        self.shared.metrics.bus_publish_errors.inc();
        if let Outgoing::Publish { ack, .. } = item {
            let _ = ack.send(Err(error));
        }
        PublishAck::pending(rx)
    }

    fn subscribe(&self, group: &GroupName) {
        // Fails only once the subscriber has stopped (shutdown): nothing to do.
        let _ = self.commands.send(Command::Subscribe(group.clone()));
    }

    fn unsubscribe(&self, group: &GroupName) {
        let _ = self.commands.send(Command::Unsubscribe(group.clone()));
    }

    fn status(&self) -> BusStatus {
        let link = self.shared.link.lock();
        BusStatus {
            kind: "redis",
            connected: link.connected,
            subscriptions: link.subscribed.iter().cloned().collect(),
            last_error: if link.connected {
                None
            } else {
                link.last_error.clone()
            },
        }
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Option<Vec<NodeInfo>>, BusError>> {
        Box::pin(async move { self.presence.nodes().await.map(Some) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.shut_down.swap(true, Ordering::AcqRel) {
                return;
            }
            let budget = self.options.command_timeout;
            // 1. Everything published before shutdown leaves, in order.
            let (done, flushed) = oneshot::channel();
            let flush = async {
                if self.publishes.send(Outgoing::Flush(done)).await.is_ok() {
                    let _ = flushed.await;
                }
            };
            if timeout(budget, flush).await.is_err() {
                tracing::warn!("shutdown: queued publishes did not all leave in time");
            }
            // 2. Stop the tasks (the heartbeat first of all: a late beat
            //    must not re-create the key deleted below).
            self.cancel.cancel();
            let tasks = std::mem::take(&mut *self.tasks.lock());
            let _ = timeout(budget, futures_util::future::join_all(tasks)).await;
            // 3. Leave the cluster view at once rather than after the TTL.
            if let Err(error) = self.presence.withdraw().await {
                tracing::warn!(%error, "shutdown: could not delete this node's presence");
            }
            self.pool.close();
            self.shared.set_broken(&BusError::Closed);
            tracing::info!("Redis bus stopped");
        })
    }
}

impl Drop for RedisBus {
    /// Dropped without `shutdown` (or after it): stop the tasks. The
    /// presence key is left to expire, as if the node had died.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

// ----- the subscriber --------------------------------------------------------

/// Why this node wants (or wanted) a group channel.
struct Hold {
    group: GroupName,
    /// First joins minus last leaves the registry reported. Normally 1 or
    /// 0; counting (rather than a flag) keeps the right answer when a
    /// join's `Subscribe` and a leave's `Unsubscribe`, sent from different
    /// threads, arrive in the other order.
    members: i64,
    /// When the linger after the last leave ends (key into `lingering`).
    linger: Option<(Instant, u64)>,
    /// Whether we asked Redis for this channel (and will again on every
    /// reconnect).
    subscribed: bool,
}

/// One live subscriber connection.
struct Link {
    stream: PubSubStream,
    ops: mpsc::UnboundedSender<SinkOp>,
    worker: JoinHandle<BusError>,
}

impl Link {
    fn send(&self, op: SinkOp) {
        // Fails only when the worker has ended; the subscriber is about to
        // learn that from the worker's join handle.
        let _ = self.ops.send(op);
    }

    /// Stops the worker and waits until it has, so that it cannot touch
    /// the shared state of the next connection.
    async fn close(mut self) {
        // A finished worker's output was already taken (`serve` selects on
        // the handle), and a join handle must not be polled again.
        if !self.worker.is_finished() {
            self.worker.abort();
            let _ = (&mut self.worker).await;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

/// What the sink worker sends on the subscriber connection.
enum SinkOp {
    Subscribe(String),
    Unsubscribe(String),
    Ping,
    /// Answered when every op before it is done.
    Barrier(oneshot::Sender<()>),
}

/// How a connection's life ended.
enum Ended {
    /// The bus is stopping.
    Stopped,
    /// The connection failed; reconnect.
    Lost(BusError),
}

struct Subscriber {
    client: redis::Client,
    /// `host:port`, for logs (never the URL: it may hold a password).
    address: String,
    options: RedisOptions,
    inbox: Inbox,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    cancel: CancellationToken,
    wake_presence: Arc<Notify>,
    /// Group channel name → hold.
    holds: HashMap<String, Hold>,
    /// Lingering channels by deadline (the u64 makes keys unique).
    lingering: BTreeMap<(Instant, u64), String>,
    next_linger_id: u64,
}

impl Subscriber {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.options.backoff_min, self.options.backoff_max);
        let mut connected_before = false;
        let mut failures = 0u32;
        loop {
            // Connect and subscribe everything we hold.
            let attempt = tokio::select! {
                _ = self.cancel.cancelled() => return,
                attempt = self.connect() => attempt,
            };
            let (mut link, channels) = match attempt {
                Ok(connected) => connected,
                Err(error) => {
                    self.shared.set_broken(&error);
                    failures += 1;
                    let delay = backoff.next_delay();
                    if failures == 1 {
                        tracing::warn!(
                            redis = %self.address, %error, retry_in = ?delay,
                            "cannot connect to Redis; sessions stay, retrying with backoff"
                        );
                    } else {
                        tracing::debug!(redis = %self.address, %error, retry_in = ?delay, failures, "still cannot connect to Redis");
                    }
                    if self.idle(delay).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            self.shared.set_connected();
            self.shared.metrics.bus_connects.inc();
            if connected_before {
                tracing::info!(
                    redis = %self.address, failed_attempts = failures,
                    "reconnected, resubscribed {channels} channels"
                );
            } else {
                tracing::info!(redis = %self.address, "connected to Redis, subscribed {channels} channels");
            }
            connected_before = true;
            failures = 0;
            self.wake_presence.notify_one();

            let connected_at = Instant::now();
            let ended = self.serve(&mut link).await;
            link.close().await;
            match ended {
                Ended::Stopped => return,
                Ended::Lost(error) => {
                    self.shared.set_broken(&error);
                    tracing::warn!(
                        redis = %self.address, %error,
                        "lost the Redis connection; sessions stay, reconnecting"
                    );
                    // A connection that lived a while: try again at once.
                    // One that died young (a flapping Redis or proxy): keep
                    // backing off, or we would reconnect in a tight loop.
                    if connected_at.elapsed() >= self.options.backoff_max {
                        backoff.reset();
                    } else if self.idle(backoff.next_delay()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Opens the subscriber connection and subscribes the cluster channel
    /// and every held group channel. Returns once Redis confirmed them all.
    async fn connect(&self) -> Result<(Link, usize), BusError> {
        let limit = self.options.command_timeout;
        let pubsub = timeout(limit, self.client.get_async_pubsub())
            .await
            .map_err(|_| BusError::Timeout(limit))?
            .map_err(command_error)?;
        let (sink, stream) = pubsub.split();
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let worker =
            tokio::spawn(sink_worker(sink, ops_rx, limit, self.shared.clone()).in_current_span());
        let mut link = Link {
            stream,
            ops,
            worker,
        };
        // PING first: a Redis that wants a password answers NOAUTH here
        // (redis-rs does not surface errors in SUBSCRIBE replies), and the
        // sink worker turns that into a failed connection.
        link.send(SinkOp::Ping);
        let mut channels = 1;
        link.send(SinkOp::Subscribe(self.options.cluster_channel.clone()));
        for (channel, hold) in &self.holds {
            if hold.subscribed {
                link.send(SinkOp::Subscribe(channel.clone()));
                channels += 1;
            }
        }
        let (done, all_done) = oneshot::channel();
        link.send(SinkOp::Barrier(done));
        tokio::select! {
            confirmed = all_done => match confirmed {
                Ok(()) => Ok((link, channels)),
                // The worker quit before the barrier: it says why.
                Err(_) => Err(worker_error((&mut link.worker).await)),
            },
            ended = &mut link.worker => Err(worker_error(ended)),
        }
    }

    /// Waits `delay` before the next attempt, keeping the held channels up
    /// to date meanwhile. `Err` when the bus is stopping.
    async fn idle(&mut self, delay: Duration) -> Result<(), ()> {
        let deadline = Instant::now() + delay;
        loop {
            let next_linger = self.next_linger();
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(()),
                _ = sleep_until(deadline) => return Ok(()),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command, None),
                    None => return Err(()),
                },
                _ = sleep_until(next_linger.unwrap_or(deadline)), if next_linger.is_some() => {
                    self.expire_lingers(None);
                }
            }
        }
    }

    /// Reads messages, applies commands, pings, ends lingers — until the
    /// connection fails or the bus stops.
    async fn serve(&mut self, link: &mut Link) -> Ended {
        let every = self.options.health_interval;
        let mut health = tokio::time::interval_at(Instant::now() + every, every);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let next_linger = self.next_linger();
            tokio::select! {
                _ = self.cancel.cancelled() => return Ended::Stopped,
                message = link.stream.next() => {
                    let Some(message) = message else { return Ended::Lost(connection_closed()) };
                    self.deliver(&message);
                    // Deliver what is already here before going round the
                    // select again: cheaper under load, same order.
                    for _ in 0..MAX_DRAIN {
                        match link.stream.next().now_or_never() {
                            Some(Some(message)) => self.deliver(&message),
                            Some(None) => return Ended::Lost(connection_closed()),
                            None => break,
                        }
                    }
                }
                ended = &mut link.worker => return Ended::Lost(worker_error(ended)),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command, Some(link)),
                    None => return Ended::Stopped,
                },
                _ = health.tick() => link.send(SinkOp::Ping),
                _ = sleep_until(next_linger.unwrap_or_else(Instant::now)), if next_linger.is_some() => {
                    self.expire_lingers(Some(link));
                }
            }
        }
    }

    /// Hands one message to the hub's inbox. The hub decodes it: envelope
    /// or raw payload, and counts what it cannot read.
    fn deliver(&self, message: &Msg) {
        let name = message.get_channel_name();
        let channel = if name == self.options.cluster_channel {
            Channel::Cluster
        } else if let Some(hold) = self.holds.get(name) {
            Channel::Group(hold.group.clone())
        } else if let Some(group) = name
            .strip_prefix(self.options.channel_prefix.as_str())
            .and_then(|rest| GroupName::new(rest).ok())
        {
            // Just unsubscribed; a message was already on its way. The
            // registry has no members for it, so delivering is harmless.
            Channel::Group(group)
        } else {
            tracing::debug!(channel = name, "ignored a message on an unknown channel");
            return;
        };
        (self.inbox)(channel, Bytes::copy_from_slice(message.get_payload_bytes()));
    }

    fn on_command(&mut self, command: Command, link: Option<&Link>) {
        let (group, delta) = match command {
            Command::Subscribe(group) => (group, 1),
            Command::Unsubscribe(group) => (group, -1),
        };
        let channel = format!("{}{}", self.options.channel_prefix, group);
        let hold = self.holds.entry(channel.clone()).or_insert_with(|| Hold {
            group,
            members: 0,
            linger: None,
            subscribed: false,
        });
        hold.members += delta;
        if hold.members > 0 {
            // Someone is back before the linger ended: no flapping.
            if let Some(key) = hold.linger.take() {
                self.lingering.remove(&key);
            }
        } else if hold.subscribed
            && hold.linger.is_none()
            && !self.options.unsubscribe_linger.is_zero()
        {
            let key = (
                Instant::now() + self.options.unsubscribe_linger,
                self.next_linger_id,
            );
            self.next_linger_id += 1;
            hold.linger = Some(key);
            self.lingering.insert(key, channel.clone());
        }
        self.reconcile(&channel, link);
    }

    fn next_linger(&self) -> Option<Instant> {
        self.lingering.first_key_value().map(|(key, _)| key.0)
    }

    fn expire_lingers(&mut self, link: Option<&Link>) {
        let now = Instant::now();
        while let Some(entry) = self.lingering.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, channel) = entry.remove_entry();
            if let Some(hold) = self.holds.get_mut(&channel)
                && hold.linger == Some(key)
            {
                hold.linger = None;
            }
            self.reconcile(&channel, link);
        }
    }

    /// Brings Redis in line with what `channel`'s hold wants: subscribed
    /// while it has members or lingers, unsubscribed otherwise. Without a
    /// link the change waits for the next connect, which subscribes every
    /// channel that wants it.
    fn reconcile(&mut self, channel: &str, link: Option<&Link>) {
        let Some(hold) = self.holds.get_mut(channel) else {
            return;
        };
        let wanted = hold.members > 0 || hold.linger.is_some();
        if wanted != hold.subscribed {
            hold.subscribed = wanted;
            if let Some(link) = link {
                link.send(if wanted {
                    SinkOp::Subscribe(channel.to_string())
                } else {
                    SinkOp::Unsubscribe(channel.to_string())
                });
            }
        }
        if !hold.subscribed && hold.members == 0 {
            self.holds.remove(channel);
        }
    }
}

/// Sends the subscriber connection's commands one at a time. Returns why
/// the connection must be replaced.
async fn sink_worker(
    mut sink: PubSubSink,
    mut ops: mpsc::UnboundedReceiver<SinkOp>,
    limit: Duration,
    shared: Arc<Shared>,
) -> BusError {
    while let Some(op) = ops.recv().await {
        // One channel per command: redis-rs matches each reply to one
        // request, and a multi-channel SUBSCRIBE gets one reply per channel.
        let (command, channel, outcome) = match op {
            SinkOp::Subscribe(channel) => {
                let outcome = timeout(limit, sink.subscribe(&channel)).await;
                ("SUBSCRIBE", Some((channel, true)), outcome)
            }
            SinkOp::Unsubscribe(channel) => {
                let outcome = timeout(limit, sink.unsubscribe(&channel)).await;
                ("UNSUBSCRIBE", Some((channel, false)), outcome)
            }
            SinkOp::Ping => {
                // An error reply arrives as `Value::ServerError`, not as
                // `Err`: unwrap it so NOAUTH is seen for what it is.
                let outcome = timeout(limit, sink.ping::<redis::Value>())
                    .await
                    .map(|answer| match answer {
                        Ok(redis::Value::ServerError(error)) => Err(RedisError::from(error)),
                        other => other.map(drop),
                    });
                ("PING", None, outcome)
            }
            SinkOp::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        match outcome {
            Ok(Ok(())) => {
                if let Some((channel, on)) = channel {
                    shared.set_subscribed(channel, on);
                }
            }
            Err(_) => {
                return BusError::Unavailable(format!(
                    "Redis did not answer {command} within {limit:?}"
                ));
            }
            // Not authenticated (no or wrong credentials in the URL): the
            // connection is useless, say so and keep retrying with backoff.
            Ok(Err(error)) if is_auth_error(&error) => {
                return BusError::Unavailable(format!(
                    "Redis refused {command}: {error} (put the ACL user and password in the Redis URL)"
                ));
            }
            // Redis answered with an error (an ACL forbidding a channel,
            // say): the connection is fine; retrying would not help.
            Ok(Err(error)) if is_server_error(&error) => {
                tracing::warn!(command, channel = ?channel.map(|c| c.0), %error, "Redis refused a command");
            }
            Ok(Err(error)) => return command_error(error),
        }
    }
    BusError::Closed
}

fn worker_error(ended: Result<BusError, tokio::task::JoinError>) -> BusError {
    ended.unwrap_or_else(|e| BusError::Unavailable(format!("subscriber connection task: {e}")))
}

fn connection_closed() -> BusError {
    BusError::Unavailable("the subscriber connection was closed".into())
}

// ----- the publisher ---------------------------------------------------------

struct Publisher {
    pool: Pool,
    queue: mpsc::Receiver<Outgoing>,
    channel_prefix: String,
    cluster_channel: String,
    command_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Publishes failed since the last success (log the first and the
    /// recovery, not every one).
    failed_in_a_row: u64,
}

struct Job {
    channel: String,
    payload: Bytes,
    ack: oneshot::Sender<Result<(), BusError>>,
}

impl Publisher {
    async fn run(mut self, cancel: CancellationToken) {
        let mut received = Vec::with_capacity(MAX_BATCH);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let n = tokio::select! {
                _ = cancel.cancelled() => return,
                n = self.queue.recv_many(&mut received, MAX_BATCH) => n,
            };
            if n == 0 {
                return; // the bus is gone
            }
            for item in received.drain(..) {
                match item {
                    Outgoing::Publish {
                        channel,
                        payload,
                        ack,
                    } => batch.push(Job {
                        channel: match channel {
                            Channel::Group(group) => format!("{}{}", self.channel_prefix, group),
                            Channel::Cluster => self.cluster_channel.clone(),
                        },
                        payload,
                        ack,
                    }),
                    Outgoing::Flush(done) => {
                        self.send(&mut batch).await;
                        let _ = done.send(());
                    }
                }
            }
            self.send(&mut batch).await;
        }
    }

    /// Sends `batch` as one pipeline and answers every ack.
    async fn send(&mut self, batch: &mut Vec<Job>) {
        if batch.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for job in batch.iter() {
            pipe.cmd("PUBLISH")
                .arg(&job.channel)
                .arg(&job.payload[..])
                .ignore();
        }
        let pool = &self.pool;
        let work = async {
            let mut conn = pool.get().await.map_err(pool_error)?;
            pipe.query_async::<redis::Value>(&mut conn)
                .await
                .map_err(command_error)
        };
        let outcome = match timeout(self.command_timeout, work).await {
            Ok(outcome) => outcome.map(drop),
            Err(_) => Err(BusError::Timeout(self.command_timeout)),
        };
        let n = batch.len() as u64;
        match outcome {
            Ok(()) => {
                if self.failed_in_a_row > 0 {
                    tracing::info!(
                        failed = self.failed_in_a_row,
                        "publishing to Redis works again"
                    );
                    self.failed_in_a_row = 0;
                }
                for job in batch.drain(..) {
                    let _ = job.ack.send(Ok(()));
                }
            }
            Err(error) => {
                self.metrics.bus_publish_errors.inc_by(n);
                if self.failed_in_a_row == 0 {
                    tracing::warn!(
                        %error, messages = n,
                        "publishing to Redis failed; those messages reached this node's sessions only"
                    );
                }
                self.failed_in_a_row += n;
                for job in batch.drain(..) {
                    let _ = job.ack.send(Err(error.clone()));
                }
            }
        }
    }
}

// ----- small helpers -----------------------------------------------------------

/// Exponential backoff with jitter: `min`, then doubling up to `max`, each
/// delay drawn from its upper half so that nodes do not reconnect in step.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

fn is_auth_error(error: &RedisError) -> bool {
    matches!(error.code(), Some("NOAUTH" | "WRONGPASS"))
}

fn is_server_error(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_))
}

/// A Redis error as a bus error: refused by the server, or unreachable.
pub(crate) fn command_error(error: RedisError) -> BusError {
    if is_server_error(&error) {
        BusError::Command(error.to_string())
    } else {
        BusError::Unavailable(error.to_string())
    }
}

/// Could not get a connection from the pool.
pub(crate) fn pool_error(error: PoolError) -> BusError {
    match error {
        PoolError::Backend(error) => command_error(error),
        other => BusError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let ok = |url: &str| RedisOptions::new(url).validate();
        assert!(ok("redis://127.0.0.1:6379").is_ok());
        assert!(ok("redis://user:secret@redis.example:6379/2").is_ok());
        assert!(ok("rediss://redis.example").is_ok());
        assert!(matches!(ok("http://x"), Err(BusError::InvalidUrl(_))));
        assert!(matches!(ok("127.0.0.1:6379"), Err(BusError::InvalidUrl(_))));
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact("redis://u:p@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let error = RedisOptions::new("http://u:secret@h")
            .validate()
            .unwrap_err();
        assert!(!error.to_string().contains("secret"));
    }

    #[test]
    fn options_are_checked() {
        let mut options = RedisOptions::new("redis://h");
        options.presence_ttl = options.heartbeat_interval;
        assert!(matches!(
            options.validate(),
            Err(BusError::InvalidOptions(_))
        ));
        let mut options = RedisOptions::new("redis://h");
        options.cluster_channel = "group:all".into();
        assert!(matches!(
            options.validate(),
            Err(BusError::InvalidOptions(_))
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay()).collect();
        let bounds = [100, 200, 350, 350];
        for (delay, max) in delays.iter().zip(bounds) {
            assert!(
                *delay <= Duration::from_millis(max) && *delay >= Duration::from_millis(max / 2)
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
