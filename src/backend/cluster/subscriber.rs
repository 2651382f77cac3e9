//! The cluster subscriber: sharded pub/sub over one connection per primary
//! it needs, with our own wanted set reconciled one slot per command.
//!
//! Why not redis-rs's cluster connection with a push sender: in redis-rs
//! 1.x its resubscription sends every channel of one node in one
//! SSUBSCRIBE (Redis refuses that with CROSSSLOT when they span slots), and
//! the server's unprompted `sunsubscribe` on a slot move takes the channel
//! out of its tracker for good. Here:
//!
//! * the **wanted set** is the same
//!   [`Subscriptions`](crate::backend::subscriptions::Subscriptions) every
//!   backend uses (in the [`Listener`] the single-server subscriber has too),
//!   plus the cluster channel (itself a shard channel, in one slot);
//! * each wanted channel is SSUBSCRIBEd **alone** (one slot per command)
//!   on the primary of its slot, read from `CLUSTER SLOTS` and corrected
//!   by MOVED answers ([`topology`](super::topology));
//! * what is subscribed is what the **server pushed** (`ssubscribe`,
//!   `sunsubscribe`), not what a command returned: a push that the server
//!   sends unprompted (a slot moved away, the node lost the slot in a
//!   failover) is seen for what it is, and the channel is subscribed again
//!   where its slot now lives;
//! * a primary's connection exists while a wanted channel is on it and is
//!   closed when none is, so a node holds exactly one subscriber
//!   connection per primary it needs, whatever the number of groups; each
//!   is named `groupcast-sub:<node id>` (`CLIENT LIST` shows them);
//! * every push of every connection comes to this one task through one
//!   channel, in each connection's order, and the inbox is called from
//!   here: per-channel order holds as on one Redis.
//!
//! Each connection's commands are sent one at a time by a small task of
//! its own (so this task never waits for Redis), which also PINGs it: a
//! primary that stops answering is dropped and its channels go elsewhere
//! once the cluster has promoted a replica.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncConnectionConfig, ConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tracing::Instrument;

use super::slot::slot;
use super::topology::{NodeAddr, SlotMap, node_info, read_slot_map};
use crate::backend::error::BackendError;
use crate::backend::redis::connections::PrimaryConnections;
use crate::backend::redis::errors::is_server_error;
use crate::backend::redis::listener::Listener;
use crate::backend::subscriptions::Change;
use crate::backoff::Backoff;

/// How the subscriber is set up.
pub(crate) struct ClusterSubscriberSettings {
    /// The first seed's settings: credentials and TLS for every node.
    pub seed: ConnectionInfo,
    /// `host:port` of every seed, asked for the slot map in turn.
    pub seeds: Vec<NodeAddr>,
    pub command_timeout: Duration,
    pub health_interval: Duration,
    pub backoff: Backoff,
    /// `CLIENT SETNAME` of every subscriber connection.
    pub client_name: String,
}

/// The subscriber task's state. See the module docs.
pub(crate) struct ClusterSubscriber {
    pub settings: ClusterSubscriberSettings,
    /// Each primary connection as `status()` shows it.
    pub primaries: Arc<PrimaryConnections>,
    /// The hub's commands, the wanted set, the inbox
    /// (`redis/listener.rs`).
    pub listener: Listener,
}

/// What a primary's connection task tells the subscriber.
enum Event {
    Up(NodeAddr, u64),
    Push(NodeAddr, u64, PushInfo),
    Refused(NodeAddr, u64, Option<String>, redis::RedisError),
    Down(NodeAddr, u64, BackendError),
}

/// What a primary's connection task sends.
enum Op {
    Subscribe(String),
    Unsubscribe(String),
    Ping,
}

/// One primary's connection, as the subscriber holds it.
struct Primary {
    /// Tells this connection's events from an earlier one's.
    generation: u64,
    up: bool,
    ops: mpsc::UnboundedSender<Op>,
    task: JoinHandle<()>,
}

impl Drop for Primary {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reconciliation state, owned by the subscriber task.
struct Wire {
    map: SlotMap,
    /// Whether the map must be read again before the next reconcile.
    stale: bool,
    primaries: HashMap<NodeAddr, Primary>,
    /// Channels the server confirmed, and where.
    confirmed: HashMap<String, NodeAddr>,
    /// Channels sent but not confirmed yet: where, and since when.
    pending: HashMap<String, (NodeAddr, Instant)>,
    /// Primaries that failed, not to be retried before the instant.
    retry_at: HashMap<NodeAddr, Instant>,
    next_generation: u64,
}

impl ClusterSubscriber {
    pub(crate) async fn run(mut self) {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut wire = Wire {
            map: SlotMap::default(),
            stale: true,
            primaries: HashMap::new(),
            confirmed: HashMap::new(),
            pending: HashMap::new(),
            retry_at: HashMap::new(),
            next_generation: 0,
        };
        let every = self.settings.health_interval;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut map_failures = 0u32;
        // Made once, not per round (each `cancelled()` made in the loop
        // would enter and leave its Notify's list of waiters per event).
        let cancel = self.listener.cancel.clone();
        let mut cancelled = pin!(cancel.cancelled());
        loop {
            let next_linger = self.listener.wanted.next_deadline();
            tokio::select! {
                () = &mut cancelled => return,
                command = self.listener.commands.recv() => match command {
                    Some(command) => {
                        if let Some(change) = self.listener.on_command(command) {
                            let channel = match change {
                                Change::Subscribe(c) | Change::Unsubscribe(c) => c,
                            };
                            self.reconcile_channel(&mut wire, &channel, &events_tx);
                            self.close_idle(&mut wire);
                        }
                    }
                    None => return,
                },
                Some(event) = events.recv() => {
                    self.on_event(&mut wire, event, &events_tx);
                    // Handle what is already here before anything else:
                    // cheaper under load, same order.
                    for _ in 0..256 {
                        match events.try_recv() {
                            Ok(event) => self.on_event(&mut wire, event, &events_tx),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    if wire.stale {
                        match self.read_map(&wire).await {
                            Ok(map) => {
                                if map_failures > 0 || wire.map.primaries().next().is_none() {
                                    tracing::info!(
                                        primaries = map.primaries().count(),
                                        "read the Redis Cluster slot map"
                                    );
                                }
                                map_failures = 0;
                                wire.map = map;
                                wire.stale = false;
                            }
                            Err(error) => {
                                map_failures += 1;
                                if map_failures == 1 {
                                    tracing::warn!(%error, "cannot read the Redis Cluster slot map; retrying");
                                }
                                self.listener.state.set_down(&error);
                            }
                        }
                    }
                    // Give up on confirmations that never came: send again.
                    let limit = self.settings.command_timeout;
                    wire.pending.retain(|_, (_, since)| since.elapsed() < limit);
                    for primary in wire.primaries.values() {
                        if primary.up {
                            let _ = primary.ops.send(Op::Ping);
                        }
                    }
                    self.reconcile_all(&mut wire, &events_tx);
                    self.publish_status(&wire);
                }
                _ = sleep_until(next_linger.unwrap_or_else(Instant::now)), if next_linger.is_some() => {
                    for change in self.listener.wanted.expire() {
                        let channel = match change {
                            Change::Subscribe(c) | Change::Unsubscribe(c) => c,
                        };
                        self.reconcile_channel(&mut wire, &channel, &events_tx);
                    }
                    self.close_idle(&mut wire);
                }
            }
        }
    }

    async fn read_map(&self, wire: &Wire) -> Result<SlotMap, BackendError> {
        // Known primaries first (they are up to date), then the seeds.
        let mut candidates: Vec<NodeAddr> = wire.map.primaries().cloned().collect();
        for seed in &self.settings.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        read_slot_map(
            &self.settings.seed,
            &candidates,
            self.settings.command_timeout,
        )
        .await
    }

    fn is_wanted(&self, channel: &str) -> bool {
        channel == self.listener.names.cluster() || self.listener.wanted.is_wanted(channel)
    }

    /// Makes the wire match the wanted set for `channel`.
    fn reconcile_channel(
        &self,
        wire: &mut Wire,
        channel: &str,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        let wanted = self.is_wanted(channel);
        if wanted {
            if wire.confirmed.contains_key(channel) || wire.pending.contains_key(channel) {
                return;
            }
            let Some(owner) = wire.map.owner(slot(channel.as_bytes())).cloned() else {
                wire.stale = true;
                return;
            };
            if wire
                .retry_at
                .get(&owner)
                .is_some_and(|at| *at > Instant::now())
            {
                return;
            }
            let primary = self.primary(wire, &owner, events);
            let _ = primary.ops.send(Op::Subscribe(channel.to_string()));
            wire.pending
                .insert(channel.to_string(), (owner, Instant::now()));
        } else if let Some(node) = wire.confirmed.get(channel)
            && let Some(primary) = wire.primaries.get(node)
        {
            let _ = primary.ops.send(Op::Unsubscribe(channel.to_string()));
        }
    }

    fn reconcile_all(&self, wire: &mut Wire, events: &mpsc::UnboundedSender<Event>) {
        let mut channels: Vec<String> = self.listener.wanted.wanted().map(str::to_string).collect();
        channels.push(self.listener.names.cluster().to_string());
        channels.extend(wire.confirmed.keys().cloned());
        channels.sort();
        channels.dedup();
        for channel in channels {
            self.reconcile_channel(wire, &channel, events);
        }
        self.close_idle(wire);
    }

    /// Closes the connections that carry no channel any more.
    fn close_idle(&self, wire: &mut Wire) {
        let in_use = |node: &NodeAddr| {
            wire.confirmed.values().any(|n| n == node)
                || wire.pending.values().any(|(n, _)| n == node)
        };
        let idle: Vec<NodeAddr> = wire
            .primaries
            .keys()
            .filter(|node| !in_use(node))
            .cloned()
            .collect();
        for node in idle {
            tracing::debug!(redis = %node, "no wanted channel on this primary any more: closing its connection");
            wire.primaries.remove(&node);
            self.primaries.forget(&node);
        }
    }

    /// The connection to `node`, opened if there is none.
    fn primary<'w>(
        &self,
        wire: &'w mut Wire,
        node: &NodeAddr,
        events: &mpsc::UnboundedSender<Event>,
    ) -> &'w Primary {
        let generation = wire.next_generation;
        let settings = &self.settings;
        wire.primaries.entry(node.clone()).or_insert_with(|| {
            let (ops, ops_rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(
                primary_task(
                    settings.seed.clone(),
                    node.clone(),
                    generation,
                    settings.client_name.clone(),
                    ops_rx,
                    events.clone(),
                    settings.command_timeout,
                )
                .in_current_span(),
            );
            Primary {
                generation,
                up: false,
                ops,
                task,
            }
        });
        if wire.primaries[node].generation == generation {
            wire.next_generation += 1;
        }
        &wire.primaries[node]
    }

    fn current(wire: &Wire, node: &NodeAddr, generation: u64) -> bool {
        wire.primaries
            .get(node)
            .is_some_and(|p| p.generation == generation)
    }

    fn on_event(&mut self, wire: &mut Wire, event: Event, events: &mpsc::UnboundedSender<Event>) {
        match event {
            Event::Up(node, generation) => {
                if let Some(primary) = wire.primaries.get_mut(&node)
                    && primary.generation == generation
                {
                    primary.up = true;
                    wire.retry_at.remove(&node);
                    self.settings.backoff.reset();
                    tracing::info!(redis = %node, "subscriber connected to a cluster primary");
                    self.listener.wake_presence.notify_one();
                    // Its channels may have missed what was published
                    // while it was down (a no-op at start: nobody waits).
                    self.listener.inbox.on_resubscribed();
                }
            }
            Event::Push(node, generation, push) => self.on_push(wire, node, generation, push),
            Event::Refused(node, generation, channel, error) => {
                if !Self::current(wire, &node, generation) {
                    return;
                }
                if let Some(channel) = &channel {
                    wire.pending.remove(channel);
                }
                if let Some((to, moved_slot)) = error.redirect_node() {
                    // MOVED: the slot is elsewhere now; ASK: it is moving,
                    // and the old primary will unsubscribe us when it is
                    // gone. Either way subscribe where the answer points
                    // (at once for MOVED, at the next tick for ASK).
                    if error.code() == Some("MOVED") {
                        wire.map.moved(moved_slot, to);
                        if let Some(channel) = channel {
                            self.reconcile_channel(wire, &channel, events);
                        }
                    }
                } else {
                    tracing::warn!(redis = %node, channel = ?channel, %error, "a cluster primary refused a command");
                    wire.stale = true;
                }
                self.close_idle(wire);
            }
            Event::Down(node, generation, error) => {
                if !Self::current(wire, &node, generation) {
                    return;
                }
                self.node_lost(wire, &node, &error);
            }
        }
    }

    fn on_push(&mut self, wire: &mut Wire, node: NodeAddr, generation: u64, push: PushInfo) {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                if let Some(message) = redis::Msg::from_push_info(push) {
                    self.listener.deliver(&message);
                }
            }
            PushKind::SSubscribe => {
                let Some(channel) = channel_of(&push) else {
                    return;
                };
                if !Self::current(wire, &node, generation) {
                    return;
                }
                wire.pending.remove(&channel);
                wire.confirmed.insert(channel.clone(), node.clone());
                self.listener.state.set_subscribed(channel.clone(), true);
                if !self.is_wanted(&channel) {
                    // Left while the subscription was on its way.
                    if let Some(primary) = wire.primaries.get(&node) {
                        let _ = primary.ops.send(Op::Unsubscribe(channel));
                    }
                }
            }
            PushKind::SUnsubscribe => {
                let Some(channel) = channel_of(&push) else {
                    return;
                };
                if wire.confirmed.get(&channel) != Some(&node) {
                    return;
                }
                wire.confirmed.remove(&channel);
                self.listener.state.set_subscribed(channel.clone(), false);
                if self.is_wanted(&channel) {
                    // Unprompted: the slot moved away (reshard) or the
                    // primary lost it. Ask again; a MOVED answer says where.
                    tracing::info!(redis = %node, %channel, "the server unsubscribed a wanted channel (slot moved); subscribing where it lives now");
                    if let Some(primary) = wire.primaries.get(&node) {
                        let _ = primary.ops.send(Op::Subscribe(channel.clone()));
                        wire.pending.insert(channel, (node, Instant::now()));
                    }
                } else {
                    self.close_idle(wire);
                }
            }
            PushKind::Disconnection if Self::current(wire, &node, generation) => {
                let error = BackendError::Unavailable(format!("{node} closed the connection"));
                self.node_lost(wire, &node, &error);
            }
            _ => {}
        }
    }

    /// `node`'s connection is gone: its channels are not subscribed any
    /// more; read the slot map again (a replica may be promoted) and
    /// subscribe them wherever their slots live by then.
    fn node_lost(&mut self, wire: &mut Wire, node: &NodeAddr, error: &BackendError) {
        wire.primaries.remove(node);
        self.primaries.lost(node);
        let lost: Vec<String> = wire
            .confirmed
            .iter()
            .filter(|(_, n)| *n == node)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in &lost {
            wire.confirmed.remove(channel);
            self.listener.state.set_subscribed(channel.clone(), false);
        }
        wire.pending.retain(|_, (n, _)| n != node);
        let delay = self.settings.backoff.next_delay();
        wire.retry_at.insert(node.clone(), Instant::now() + delay);
        wire.stale = true;
        tracing::warn!(
            redis = %node, %error, channels = lost.len(), retry_in = ?delay,
            "lost a cluster primary's subscriber connection; sessions stay, resubscribing when its slots are served again"
        );
    }

    fn publish_status(&self, wire: &Wire) {
        let mut per_node: HashMap<NodeAddr, (bool, usize)> = wire
            .primaries
            .iter()
            .map(|(node, p)| (node.clone(), (p.up, 0)))
            .collect();
        for node in wire.confirmed.values() {
            if let Some(entry) = per_node.get_mut(node) {
                entry.1 += 1;
            }
        }
        // Keep lost primaries visible (down) until the map drops them.
        self.primaries
            .show(per_node, |node| wire.map.primaries().any(|p| p == node));
        let metrics = self.listener.state.metrics();
        for connection in self.primaries.snapshot() {
            metrics
                .redis_connection_up
                .get_or_create(&vec![
                    ("mode".to_string(), "cluster".to_string()),
                    ("role".to_string(), "primary".to_string()),
                    ("redis".to_string(), connection.redis.clone()),
                ])
                .set(i64::from(connection.connected));
        }
        // Connected: the map is known and the cluster channel is heard.
        if !wire.stale && wire.confirmed.contains_key(self.listener.names.cluster()) {
            self.listener.state.set_connected();
        } else if !wire.stale {
            self.listener.state.set_down(&BackendError::Unavailable(
                "the cluster channel is not subscribed yet".into(),
            ));
        }
    }
}

/// The channel a (s)subscribe / (s)unsubscribe push is about.
fn channel_of(push: &PushInfo) -> Option<String> {
    match push.data.first()? {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// One primary's connection: connects (RESP3, pushes to `events`), names
/// itself, then sends `ops` one at a time until they end or Redis fails.
async fn primary_task(
    seed: ConnectionInfo,
    node: NodeAddr,
    generation: u64,
    client_name: String,
    mut ops: mpsc::UnboundedReceiver<Op>,
    events: mpsc::UnboundedSender<Event>,
    limit: Duration,
) {
    let down = |error: BackendError| {
        let _ = events.send(Event::Down(node.clone(), generation, error));
    };
    let info = match node_info(&seed, &node) {
        Ok(info) => info,
        Err(error) => return down(error),
    };
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    let client = match redis::Client::open(info) {
        Ok(client) => client,
        Err(error) => return down(BackendError::InvalidUrl(error.to_string())),
    };
    let pushes = events.clone();
    let push_node = node.clone();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit))
        .set_push_sender(move |push: PushInfo| {
            pushes.send(Event::Push(push_node.clone(), generation, push))
        });
    let mut conn = match timeout(
        limit,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => return down(BackendError::Unavailable(error.to_string())),
        Err(_) => return down(BackendError::Timeout(limit)),
    };
    let named = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(&client_name)
        .query_async::<Value>(&mut conn)
        .await;
    if let Err(error) = named
        && !is_server_error(&error)
    {
        return down(BackendError::Unavailable(error.to_string()));
    }
    let _ = events.send(Event::Up(node.clone(), generation));
    while let Some(op) = ops.recv().await {
        let (mut cmd, channel) = match op {
            Op::Subscribe(channel) => (redis::cmd("SSUBSCRIBE"), Some(channel)),
            Op::Unsubscribe(channel) => (redis::cmd("SUNSUBSCRIBE"), Some(channel)),
            Op::Ping => (redis::cmd("PING"), None),
        };
        if let Some(channel) = &channel {
            cmd.arg(channel);
        }
        match timeout(limit, cmd.query_async::<Value>(&mut conn)).await {
            Err(_) => {
                return down(BackendError::Unavailable(format!(
                    "{node} did not answer within {limit:?}"
                )));
            }
            Ok(Ok(Value::ServerError(error))) => {
                let _ = events.send(Event::Refused(
                    node.clone(),
                    generation,
                    channel,
                    redis::RedisError::from(error),
                ));
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) if is_server_error(&error) => {
                let _ = events.send(Event::Refused(node.clone(), generation, channel, error));
            }
            Ok(Err(error)) => return down(BackendError::Unavailable(error.to_string())),
        }
    }
}
