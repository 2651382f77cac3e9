//! The hub: the public façade of groupcast.
//!
//! A [`Hub`] owns this node's sessions (through the registry), the handlers
//! the application registered, and the backend to the other nodes. Everything a
//! user does goes through it: join and leave happen as clients connect and
//! disconnect; broadcasts are delivered to local sessions at once and then
//! published through the backend for the other nodes, which deliver them to theirs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), groupcast::HubError> {
//! use groupcast::Hub;
//!
//! let hub = Hub::builder()
//!     // melody's chat: whatever a client says goes to the rest of its group.
//!     .on_text(|_hub, session, text| {
//!         let _ = session.broadcast(text);
//!     })
//!     .build()?;
//! let app = axum::Router::new().merge(groupcast::server::ws_router(hub.clone()));
//! # let _ = app;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::auth::{Claims, ClientAuth};
use crate::backend::history::{HistoryPage, HistoryQuery};
use crate::backend::local::Standalone;
use crate::backend::{
    Backend, BackendContext, BackendStatus, Channel, IntoBackend, NodeInfo, PresenceStore,
    PublishAck,
};
use crate::broadcast::{Broadcast, Target};
use crate::config::Config;
use crate::control::{NodeControl, NodeEvents};
use crate::delivery::Delivery;
use crate::envelope::{Envelope, FrameKind};
use crate::error::{BackendError, HubError, SessionError};
use crate::group::{GroupName, IntoGroupName};
use crate::history_reads::{MergedReads, ReadBy};
use crate::limits::{ConnectionLimiter, ConnectionPermit, LimitRejection};
use crate::message::{Message, Utf8Bytes};
use crate::metrics::Metrics;
use crate::outbound::Queued;
use crate::presence::events::{FrameSender, Sinks};
use crate::presence::local::RegistryMembers;
use crate::protocol::Protocol;
use crate::registry::Registry;
use crate::selection::Selection;
use crate::session::{HubHandle, Session, SessionId};
use crate::webhooks::{WebhookOptions, Webhooks};
use crate::workers::supervisor::{WorkerOptions, Workers};

type SessionFn = Arc<dyn Fn(&Hub, &Session) + Send + Sync>;
type TextFn = Arc<dyn Fn(&Hub, &Session, Utf8Bytes) + Send + Sync>;
type BinaryFn = Arc<dyn Fn(&Hub, &Session, Bytes) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&Hub, &Session, &SessionError) + Send + Sync>;

/// The application's callbacks (melody: `HandleConnect`, `HandleMessage`,
/// `HandleMessageBinary`, `HandleDisconnect`, `HandleError`, `HandlePong`).
///
/// Handlers run on the connection's own task and must not block; spawn a
/// task for slow work.
#[derive(Default, Clone)]
pub(crate) struct Handlers {
    pub connect: Option<SessionFn>,
    pub text: Option<TextFn>,
    pub binary: Option<BinaryFn>,
    pub disconnect: Option<SessionFn>,
    pub error: Option<ErrorFn>,
    pub pong: Option<SessionFn>,
}

/// Builds a [`Hub`]: configuration, handlers, and its backend.
pub struct HubBuilder {
    config: Config,
    node_id: Option<String>,
    handlers: Handlers,
    backend: Box<dyn IntoBackend>,
    worker_options: WorkerOptions,
    client_auth: ClientAuth,
    webhooks: Option<WebhookOptions>,
}

impl HubBuilder {
    /// Sets the configuration (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets this node's id (default: hostname plus a random suffix).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// Sets lease and linger timing of group workers.
    pub fn worker_options(mut self, options: WorkerOptions) -> Self {
        self.worker_options = options;
        self
    }

    /// Sets who may connect to which group and publish (default:
    /// [`ClientAuth::open`], everyone). The WebSocket endpoint enforces it,
    /// including [`crate::server::ws_router`]. See [`crate::auth`].
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// Sends webhooks (`webhooks/`) for the presence transitions of the
    /// groups with presence (`Config::presence`): the hub starts the
    /// sender when built (inside a Tokio runtime). Default: none.
    pub fn webhooks(mut self, options: WebhookOptions) -> Self {
        self.webhooks = Some(options);
        self
    }

    /// Sets how the hub reaches the other nodes (default:
    /// [`Standalone`], none): for example
    /// `.backend(RedisOptions::new("redis://127.0.0.1:6379"))`. See
    /// [`crate::backend`].
    pub fn backend(mut self, backend: impl IntoBackend) -> Self {
        self.backend = Box::new(backend);
        self
    }

    /// Called when a client has joined its group.
    pub fn on_connect(mut self, f: impl Fn(&Hub, &Session) + Send + Sync + 'static) -> Self {
        self.handlers.connect = Some(Arc::new(f));
        self
    }

    /// Called for each text message a client sends, with the frame's own
    /// bytes (no copy): pass them on with `session.broadcast(text)` or
    /// `hub.to(group).send(text)`, or read them as a `&str`.
    pub fn on_text(
        mut self,
        f: impl Fn(&Hub, &Session, Utf8Bytes) + Send + Sync + 'static,
    ) -> Self {
        self.handlers.text = Some(Arc::new(f));
        self
    }

    /// Called for each binary message a client sends, with the frame's own
    /// bytes (no copy).
    pub fn on_binary(mut self, f: impl Fn(&Hub, &Session, Bytes) + Send + Sync + 'static) -> Self {
        self.handlers.binary = Some(Arc::new(f));
        self
    }

    /// Called once when a client has left (after it left its group).
    pub fn on_disconnect(mut self, f: impl Fn(&Hub, &Session) + Send + Sync + 'static) -> Self {
        self.handlers.disconnect = Some(Arc::new(f));
        self
    }

    /// Called when a connection fails (read/write error, timeout, limits).
    pub fn on_error(
        mut self,
        f: impl Fn(&Hub, &Session, &SessionError) + Send + Sync + 'static,
    ) -> Self {
        self.handlers.error = Some(Arc::new(f));
        self
    }

    /// Called for each pong a client sends.
    pub fn on_pong(mut self, f: impl Fn(&Hub, &Session) + Send + Sync + 'static) -> Self {
        self.handlers.pong = Some(Arc::new(f));
        self
    }

    /// Builds the hub and starts its backend. A backend that talks to a
    /// server (Redis) starts tasks, so this must then be called inside a
    /// Tokio runtime; the connection is made in the background (see
    /// [`Hub::status`]).
    pub fn build(self) -> Result<Hub, HubError> {
        self.config.validate()?;
        let node_id = self.node_id.unwrap_or_else(default_node_id);
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::new());
        let delivery = Arc::new_cyclic(|me| {
            Delivery::new(
                registry.clone(),
                metrics.clone(),
                node_id.clone(),
                (self.config.history.clone(), self.config.history_cache),
                me.clone(),
            )
        });
        let control = Arc::new(NodeControl::new(registry.clone(), node_id.clone()));
        let groups_registry = registry.clone();
        let (presence_registry, presence_policy) = (registry.clone(), self.config.presence.clone());
        let shutdown = CancellationToken::new();
        // The hub, once it exists: for the backend's callbacks made before
        // (join/leave frames, a resubscription's snapshot refresh).
        let late_hub: Arc<std::sync::OnceLock<std::sync::Weak<Inner>>> = Arc::default();
        let frames: FrameSender = {
            let cell = late_hub.clone();
            Arc::new(move |group, frame, seq| {
                if let Some(inner) = cell.get().and_then(std::sync::Weak::upgrade) {
                    Hub { inner }.send_presence_frame(group, frame, seq);
                }
            })
        };
        // The sender outlives the shutdown's first steps: the leaves the
        // closing sessions and the backend's withdrawal make are queued
        // too (`Hub::shutdown` stops it last).
        let webhooks_stop = CancellationToken::new();
        let webhooks = match self.webhooks {
            Some(options) => {
                Webhooks::start(options, metrics.webhooks.clone(), webhooks_stop.clone())
            }
            None => Webhooks::off(),
        };
        let context = BackendContext {
            node_id: node_id.clone(),
            inbox: Arc::new(NodeEvents {
                delivery: delivery.clone(),
                control: control.clone(),
                resubscribed: {
                    let cell = late_hub.clone();
                    Arc::new(move || {
                        if let Some(inner) = cell.get().and_then(std::sync::Weak::upgrade) {
                            Hub { inner }.refresh_snapshots();
                        }
                    })
                },
            }),
            metrics: metrics.clone(),
            local_groups: Arc::new(move || groups_registry.groups()),
            presence_groups: Arc::new(move || {
                let mut groups = presence_registry.groups();
                groups.retain(|(group, _)| presence_policy.matches(group));
                groups
            }),
            members: Arc::new(RegistryMembers {
                registry: registry.clone(),
                node_id: node_id.clone(),
                public_keys: self.config.presence_keys.clone(),
            }),
            history: self.config.history.clone(),
            presence_grace: self.config.presence_grace,
            presence_changes: Sinks {
                node: node_id.clone(),
                webhooks,
                join_leave: self.config.join_leave.clone(),
                frames,
            }
            .into_changes(),
        };
        let backend = self.backend.start(context)?;
        delivery.repair_from(&backend.broker_handle());
        control.answer_through(&backend.broker_handle());
        let workers = Workers::new(backend.leases(), self.worker_options, metrics.clone());
        let limiter = Arc::new(ConnectionLimiter::new(
            self.config.max_connections,
            self.config.max_connections_per_ip,
        ));
        let inner = Arc::new(Inner {
            config: self.config,
            node_id,
            registry,
            metrics,
            delivery,
            control,
            history_reads: MergedReads::default(),
            snapshot_reads: MergedReads::default(),
            handlers: self.handlers,
            backend,
            seq: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            shutdown,
            webhooks_stop,
            connections: TaskTracker::new(),
            workers,
            client_auth: self.client_auth,
            limiter,
        });
        let _ = late_hub.set(Arc::downgrade(&inner));
        Ok(Hub { inner })
    }
}

/// `hostname-xxxxxx`: readable in logs, unique across restarts.
fn default_node_id() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".to_string());
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// The hub. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// What a session asks of its hub; here rather than in `session.rs`, which
/// sits below the hub and keeps only an opaque `HubHandle`.
impl Session {
    /// Sends `message` to every other member of this session's group, on
    /// every node (melody's chat in one line). The same as
    /// `hub.to(session.group()).except(session.id()).send(message)`; a
    /// connection without a group of its own (`/ws`) gets
    /// [`GroupNameError::Missing`](crate::GroupNameError::Missing).
    pub fn broadcast(&self, message: impl Into<Message>) -> Result<usize, HubError> {
        self.hub()?.to(self.group()).except(self.id()).send(message)
    }

    /// The groups this session holds: the one it connected to and those it
    /// subscribed to since (`groupcast.v1`), in that order. Empty once it
    /// left, or when the hub is gone.
    pub fn groups(&self) -> Vec<GroupName> {
        self.hub()
            .map(|hub| hub.inner.registry.groups_of(self.id()))
            .unwrap_or_default()
    }

    /// The hub this session belongs to; fails once the hub is gone.
    pub fn hub(&self) -> Result<Hub, HubError> {
        self.hub_handle()
            .0
            .upgrade()
            .and_then(|any| any.downcast::<Inner>().ok())
            .map(|inner| Hub { inner })
            .ok_or(HubError::ShuttingDown)
    }
}

struct Inner {
    config: Config,
    node_id: String,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    delivery: Arc<Delivery>,
    /// Control between nodes: disconnects asked and answered
    /// (`control.rs`).
    control: Arc<NodeControl>,
    /// History reads in flight, merged (`history_reads.rs`).
    history_reads: MergedReads,
    /// Presence snapshot reads in flight, merged the same way
    /// (`presence/snapshot.rs`).
    snapshot_reads: MergedReads<GroupName, crate::backend::member::MemberPage>,
    handlers: Handlers,
    backend: Backend,
    /// Envelope ids: one sequence per node.
    seq: AtomicU64,
    shutting_down: AtomicBool,
    /// Cancelled when the hub shuts down; connections watch it.
    shutdown: CancellationToken,
    /// Stops the webhook sender, at the end of [`Hub::shutdown`].
    webhooks_stop: CancellationToken,
    /// Every live connection holds a token, so shutdown can wait for them.
    connections: TaskTracker,
    /// Supervisors of group workers.
    workers: Workers,
    /// Who may connect to which group and publish.
    client_auth: ClientAuth,
    /// Connections held, in total and per client address.
    limiter: Arc<ConnectionLimiter>,
}

/// One group, as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupInfo {
    /// The group's name.
    pub name: GroupName,
    /// Its members on this node.
    pub members: usize,
}

impl Hub {
    /// A builder with default configuration, standalone.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            config: Config::default(),
            node_id: None,
            handlers: Handlers::default(),
            backend: Box::new(Standalone),
            worker_options: WorkerOptions::default(),
            client_auth: ClientAuth::open(),
            webhooks: None,
        }
    }

    /// A standalone hub with `config` and no handlers.
    pub fn new(config: Config) -> Result<Hub, HubError> {
        Hub::builder().config(config).build()
    }

    /// The hub's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The hub's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The client policy (see [`HubBuilder::client_auth`]).
    pub fn client_auth(&self) -> &ClientAuth {
        &self.inner.client_auth
    }

    pub(crate) fn handlers(&self) -> &Handlers {
        &self.inner.handlers
    }

    // ----- membership -------------------------------------------------

    /// Registers a new session in `group`. The transport calls this once
    /// the connection is established, and [`Hub::leave`] when it ends.
    ///
    /// A `held` session's writer waits until [`Hub::catch_up`] has put the
    /// welcome and the backlog in front of what arrives live meanwhile.
    ///
    /// `resumed` is the session id the client had before it reconnected
    /// (`?session=`): the new session takes it, so that presence sees the
    /// same member carry on (see `group_scripts.rs`, "The grace") — unless
    /// a live session of this node still has it, when it gets a new one.
    pub(crate) fn join(
        &self,
        group: Option<GroupName>,
        remote_addr: Option<SocketAddr>,
        claims: Claims,
        (protocol, held): (Protocol, bool),
        resumed: Option<SessionId>,
    ) -> Result<Session, HubError> {
        if self.is_shutting_down() {
            return Err(HubError::ShuttingDown);
        }
        let inner: Arc<dyn std::any::Any + Send + Sync> = self.inner.clone();
        let handle = HubHandle(Arc::downgrade(&inner));
        let new = |id: SessionId| {
            Session::new(
                id,
                group.clone(),
                remote_addr,
                &self.inner.config,
                claims.clone(),
                handle.clone(),
                (protocol, held),
            )
        };
        let mut session = new(resumed.unwrap_or_else(SessionId::random));
        while !self.inner.registry.register(&session) {
            session = new(SessionId::random());
        }
        if let Some(group) = session.group()
            && let Err(error) = self.join_group(&session, group)
        {
            self.inner.registry.leave(&session);
            return Err(error);
        }
        self.inner.metrics.connections_opened.inc();
        Ok(session)
    }

    /// Adds `session` to `group` (one more group of a live session, or its
    /// first); on the group's first local member the backend subscribes.
    /// Refused when the node is at its group limit.
    pub(crate) fn join_group(&self, session: &Session, group: &GroupName) -> Result<(), HubError> {
        let first = self
            .inner
            .registry
            .join(session, group, self.inner.config.max_groups)
            .inspect_err(|limit| self.count_limit(limit))?;
        if self.inner.config.presence.matches(group) {
            self.inner.backend.presence().joined(group, session.id());
        }
        if first {
            self.inner.delivery.forget(group);
            let broker = self.inner.backend.broker_handle();
            if broker.is_clustered() && self.inner.config.history.for_group(group).is_some() {
                // History's top first, then the subscription (delivery.rs).
                self.inner.delivery.start_stream(group, &broker);
            } else {
                broker.subscribe(group);
            }
            self.inner.workers.wake(group);
        }
        Ok(())
    }

    /// Takes `session` out of `group` (the session stays connected);
    /// false when it was not in it. On the group's last local member the
    /// backend unsubscribes.
    pub(crate) fn leave_group(&self, session: &Session, group: &GroupName) -> bool {
        let held = self.inner.registry.groups_of(session.id()).contains(group);
        if held && self.inner.config.presence.matches(group) {
            self.inner.backend.presence().left(group, session.id());
        }
        session.outbound().forget_presence(group);
        if self.inner.registry.leave_group(session, group) {
            self.unsubscribe(group);
        }
        held
    }

    /// The node's last member left `group`: the backend stops listening
    /// (unless it never began: a stream still starting is cancelled).
    fn unsubscribe(&self, group: &GroupName) {
        if !self.inner.delivery.cancel_start(group) {
            self.inner.backend.broker().unsubscribe(group);
        }
    }

    /// The presence snapshot reads in flight (`presence/snapshot.rs`).
    pub(crate) fn snapshot_reads(
        &self,
    ) -> &MergedReads<GroupName, crate::backend::member::MemberPage> {
        &self.inner.snapshot_reads
    }

    /// A session's history read, made while subscribed to `group`, found
    /// it at `top` (in `epoch`): the point this node's live stream of the
    /// group must continue from, if nothing arrived live yet.
    pub(crate) fn history_read_at(&self, group: &GroupName, epoch: Option<&str>, top: u64) {
        self.inner.delivery.read_at(group, epoch, top);
    }

    /// A page of `group`'s history for a reader that joined at
    /// `not_before`: from this node's tail when it covers the page, else
    /// from the history store, merged with an identical read in flight
    /// that began after the reader joined (see `history_reads.rs`).
    /// Counted by where it came from.
    pub(crate) async fn read_history(
        &self,
        group: &GroupName,
        query: HistoryQuery,
        not_before: tokio::time::Instant,
    ) -> Result<HistoryPage, BackendError> {
        let metrics = &self.inner.metrics;
        if let Some(page) = self.inner.delivery.tails.read(group, query) {
            metrics.history_reads_tail.inc();
            return Ok(page);
        }
        let broker = self.inner.backend.broker_handle();
        let owned = group.clone();
        let (page, by) = self
            .inner
            .history_reads
            .read(group, query, not_before, move || async move {
                broker.history(&owned, query).await
            })
            .await;
        match by {
            ReadBy::Store => metrics.history_reads_store.inc(),
            ReadBy::Merged => metrics.history_reads_merged.inc(),
        };
        page
    }

    /// Removes a session from every group it holds; the backend
    /// unsubscribes from each group that empties.
    pub(crate) fn leave(&self, session: &Session) {
        let presence = self.inner.backend.presence();
        for group in self.inner.registry.groups_of(session.id()) {
            if self.inner.config.presence.matches(&group) {
                presence.left(&group, session.id());
            }
        }
        for emptied in self.inner.registry.leave(session) {
            self.unsubscribe(&emptied);
        }
        self.inner.metrics.connections_closed.inc();
    }

    // ----- sending -------------------------------------------------

    /// Every member of `group`, on every node (ws-notifier:
    /// `GroupBroadcast`): `hub.to("chat").send("hello")`. See
    /// [`Selection`] for the rest of the chain.
    pub fn to(&self, group: impl IntoGroupName) -> Selection<'_> {
        Selection::new(self, Broadcast::group(group))
    }

    /// Every session on every node (melody: `Broadcast`).
    pub fn all(&self) -> Selection<'_> {
        Selection::new(self, Ok(Broadcast::all()))
    }

    /// The listed sessions, wherever they are connected (melody:
    /// `BroadcastMultiple`).
    pub fn to_sessions(&self, ids: impl IntoIterator<Item = SessionId>) -> Selection<'_> {
        Selection::new(self, Ok(Broadcast::sessions(ids)))
    }

    /// The sessions a [`Broadcast`] names (a selection built as data, for
    /// example decoded from a request).
    pub fn select(&self, broadcast: Broadcast) -> Selection<'_> {
        Selection::new(self, Ok(broadcast))
    }

    /// Delivers `message` to the local sessions `broadcast` names (and
    /// `keep` accepts) at once, and hands it to the backend for the other
    /// nodes unless `keep` is set (a closure does not travel). Returns the
    /// local count and the backend's ack.
    pub(crate) fn dispatch(
        &self,
        broadcast: Broadcast,
        message: Message,
        keep: Option<&dyn Fn(&Session) -> bool>,
    ) -> Result<(usize, PublishAck), HubError> {
        let inner = &self.inner;
        inner.metrics.broadcasts.inc();
        if keep.is_none()
            && let Target::Group(group) = &broadcast.target
            && let Some(limits) = inner.config.history.for_group(group)
        {
            // A history group: the backend appends, publishes, and delivers
            // to this node's members too, positioned like everyone else's
            // (docs/architecture.md, "History groups are not local-first").
            let payload = self.envelope(&broadcast, &message).encode()?;
            let local = inner.registry.count(&broadcast);
            return Ok((
                local,
                inner
                    .backend
                    .broker()
                    .publish_with_history(group, limits, payload),
            ));
        }
        let ack = if inner.backend.broker().is_clustered() && keep.is_none() {
            inner.backend.broker().publish(
                channel_of(&broadcast),
                self.envelope(&broadcast, &message).encode()?,
            )
        } else {
            PublishAck::done()
        };
        let queued = match &broadcast.target {
            Target::Group(group) => Queued::from(message).in_group(group),
            _ => Queued::from(message),
        };
        let fanout = inner
            .delivery
            .deliver(&broadcast, &queued, keep.unwrap_or(&|_| true));
        Ok((fanout.delivered, ack))
    }

    /// Sends a `groupcast.v1` presence frame (`presence/events.rs`) to
    /// `group`'s members that see them, here and on every node (an
    /// envelope marked `presence`, which their delivery recognises).
    pub(crate) fn send_presence_frame(&self, group: &GroupName, frame: String, seq: u64) {
        let inner = &self.inner;
        let broadcast = Broadcast::new(Target::Group(group.clone()));
        if inner.backend.broker().is_clustered() {
            let mut envelope = self.envelope(&broadcast, &Message::text(frame.clone()));
            envelope.presence = true;
            envelope.presence_seq = Some(seq);
            match envelope.encode() {
                Ok(payload) => {
                    // Fire and forget, like any broadcast: the ack is not
                    // awaited.
                    let _ = inner
                        .backend
                        .broker()
                        .publish(channel_of(&broadcast), payload);
                }
                Err(error) => tracing::warn!(%group, %error, "cannot encode a presence frame"),
            }
        }
        inner.delivery.deliver(
            &broadcast,
            &Queued::presence(frame, group, seq),
            &Session::sees_presence_frames,
        );
    }

    /// The envelope other nodes decode `message` from.
    fn envelope(&self, broadcast: &Broadcast, message: &Message) -> Envelope {
        let inner = &self.inner;
        Envelope {
            origin: inner.node_id.clone(),
            id: inner.seq.fetch_add(1, Ordering::Relaxed),
            kind: if message.is_text() {
                FrameKind::Text
            } else {
                FrameKind::Binary
            },
            except: broadcast.except.clone(),
            filter: broadcast.filter.clone(),
            sessions: match &broadcast.target {
                Target::Sessions(ids) => Some(ids.clone()),
                _ => None,
            },
            payload: message.payload().to_vec(),
            presence: false,
            presence_seq: None,
        }
    }

    /// Waits until this node is confirmed to receive what other nodes
    /// publish to `group` (its backend subscription is acknowledged). A
    /// session's join starts the subscription; this is how a caller that
    /// must not miss anything published after the join — a history read,
    /// say — knows when it may start. At once when standalone.
    pub async fn subscribed(&self, group: &GroupName) -> Result<(), HubError> {
        Ok(self.inner.backend.broker().subscribed(group).await?)
    }

    // ----- workers -------------------------------------------------
    // `notify`, `workers` and `worker_leases` are in `workers/worker.rs`.

    /// The supervisors of this node's group workers.
    pub(crate) fn worker_supervisors(&self) -> &Workers {
        &self.inner.workers
    }

    // ----- looking around -------------------------------------------------

    /// Sessions connected to this node.
    pub fn session_count(&self) -> usize {
        self.inner.registry.session_count()
    }

    /// Groups with at least one member on this node.
    pub fn group_count(&self) -> usize {
        self.inner.registry.group_count()
    }

    /// Members of `group` on this node.
    pub fn member_count(&self, group: &GroupName) -> usize {
        self.inner.registry.member_count(group)
    }

    /// This node's groups with their member counts, sorted by name.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.inner
            .registry
            .groups()
            .into_iter()
            .map(|(name, members)| GroupInfo { name, members })
            .collect()
    }

    /// This node's members of `group`.
    pub fn members(&self, group: &GroupName) -> Vec<Session> {
        self.inner.registry.members(group)
    }

    /// Every session on this node.
    pub fn sessions(&self) -> Vec<Session> {
        self.inner.registry.all_sessions()
    }

    /// A session of this node by id.
    pub fn session(&self, id: &SessionId) -> Option<Session> {
        self.inner.registry.session(id)
    }

    /// The backend's state (always connected when standalone).
    pub fn status(&self) -> BackendStatus {
        self.inner.backend.broker().status()
    }

    /// Whether the node can serve: not shutting down, and the backend works.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down() && self.inner.backend.broker().status().connected
    }

    /// Every live node of the cluster, this one included, sorted by id
    /// (standalone: this node alone).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, BackendError> {
        self.inner.backend.cluster().nodes().await
    }

    /// This node's side of control between nodes (`disconnect.rs` uses it).
    pub(crate) fn control(&self) -> &NodeControl {
        &self.inner.control
    }

    /// The backend's broker (`disconnect.rs` sends control through it).
    pub(crate) fn broker(&self) -> &dyn crate::backend::Broker {
        self.inner.backend.broker()
    }

    /// Who is in each group, cluster-wide (`presence/api.rs` reads it).
    pub(crate) fn presence_store(&self) -> &dyn PresenceStore {
        self.inner.backend.presence()
    }

    // ----- shutting down -------------------------------------------------

    /// Whether [`Hub::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the hub as shutting down: `/readyz` turns not ready and new
    /// connections are refused, but open sessions stay. Call
    /// [`Hub::shutdown`] after a drain period to close them.
    pub fn begin_drain(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
    }

    /// Closes every session with 1001 ("going away"), refuses new ones, and
    /// stops the backend. Returns once the close frames are queued; the
    /// connections end as their writers send them.
    pub async fn shutdown(&self) {
        self.begin_drain();
        self.inner.shutdown.cancel();
        for session in self.sessions() {
            session.close_with(crate::CloseReason::new(
                crate::CloseKind::GoingAway,
                "server shutting down",
            ));
        }
        self.inner.backend.shutdown().await;
        self.inner.webhooks_stop.cancel();
    }

    /// Waits until every connection has ended (call after
    /// [`Hub::shutdown`], under a deadline of your choosing).
    pub async fn connections_closed(&self) {
        self.inner.connections.close();
        self.inner.connections.wait().await;
    }

    pub(crate) fn track_connection(&self) -> TaskTrackerToken {
        self.inner.connections.token()
    }

    /// A token cancelled at shutdown (for connection tasks and workers).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Takes a slot for a new connection to `group` (none: `/ws`) from `ip`, before the
    /// upgrade: refused when the node is full, the address holds too many
    /// connections, or the group is new and the node holds too many groups
    /// (see [`crate::limits`]). The slot is given back when the permit is
    /// dropped, at the end of the connection. Refusals are counted.
    pub(crate) fn admit_connection(
        &self,
        group: Option<&GroupName>,
        ip: Option<IpAddr>,
    ) -> Result<ConnectionPermit, LimitRejection> {
        let max_groups = self.inner.config.max_groups;
        let registry = &self.inner.registry;
        let admitted = if let Some(group) = group
            && max_groups > 0
            && registry.group_count() >= max_groups
            && registry.member_count(group) == 0
        {
            // Checked again, atomically, when the session joins.
            Err(LimitRejection::Groups { limit: max_groups })
        } else {
            self.inner.limiter.admit(ip)
        };
        admitted.inspect_err(|limit| self.count_limit(limit))
    }

    /// Connections admitted by the connection limits and not yet ended:
    /// open sessions plus upgrades in flight.
    pub fn admitted_connections(&self) -> usize {
        self.inner.limiter.admitted()
    }

    /// Counts a refusal or a close by a limit, and logs it.
    pub(crate) fn count_limit(&self, limit: &LimitRejection) {
        self.inner.metrics.count_limit_rejection(limit.label());
        tracing::debug!(limit = limit.label(), %limit, "limit reached");
    }

    pub(crate) fn count_incoming(&self, bytes: usize) {
        self.inner.metrics.messages_in.inc();
        self.inner.metrics.bytes_in.inc_by(bytes as u64);
    }
}

/// The channel a broadcast travels on.
fn channel_of(broadcast: &Broadcast) -> Channel {
    match &broadcast.target {
        Target::Group(group) => Channel::Group(group.clone()),
        Target::All | Target::Sessions(_) => Channel::Cluster,
    }
}
