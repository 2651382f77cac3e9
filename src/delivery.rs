//! Delivery on this node: what arrives from the backend is decoded,
//! checked for continuity (a history group's live stream must not skip
//! offsets) and fanned out into the sessions' queues.
//!
//! Out of the hub's façade so that the hub, the backend's inbox and the
//! resume path share one piece that holds no reference to the hub.
//!
//! **A gap, repaired here.** When this node's live stream of a history
//! group skips (its subscriber reconnected and messages were published
//! meanwhile), the node reads the missing offsets from history itself and
//! delivers them, in order, before the message that revealed the gap and
//! before any later one: every member gets every message — raw,
//! `groupcast.v1` and SSE alike — and no client is asked to resume. Live
//! messages that arrive while the history is read wait in a bounded
//! buffer. Only when the history no longer holds what was missed (trimmed,
//! expired, another epoch), or cannot be read, does the node fall back to
//! what it did before: its `groupcast.v1` sessions are closed with
//! `RESUME` (they reconnect, and their own resume says what is lost), and
//! the loss is counted.
//!
//! **Where a stream starts.** A gap is a skip past the last offset the
//! stream brought; before the first message there is none, unless the
//! node knows where history stood when it began to listen. So when a
//! node's first member joins a history group, the node reads the group's
//! top *before* it subscribes ([`Delivery::start_stream`]): every message
//! after that top is owed to the members, live or repaired. (Read after
//! the subscription, a top could count as delivered a message that was
//! published after it and lost with a reconnect before it arrived.)

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::backend::broker::Broker;
use crate::backend::history::{HistoryEntry, HistoryQuery, MAX_PAGE};
use crate::backend::{BackendEvents, Channel, Inbound, Position};
use crate::broadcast::{Broadcast, Target};
use crate::envelope::{self, Decoded};
use crate::group::GroupName;
use crate::history::HistoryPolicy;
use crate::history_tail::HistoryTails;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::outbound::{Queued, Stamp};
use crate::protocol::Protocol;
use crate::registry::{Fanout, Registry};
use crate::session::Session;

/// Local fan-out, shared by the hub (its own broadcasts) and the backend's
/// inbox (everyone else's). Holds no reference to the hub, so the backend
/// can own one without a cycle.
pub(crate) struct Delivery {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    node_id: String,
    /// Where this node's live stream of each history group stands: the
    /// last offset received (or the top a session's history read found,
    /// before the first), to see the stream skip (messages lost while the
    /// backend reconnected).
    offsets: parking_lot::Mutex<std::collections::HashMap<GroupName, StreamPoint>>,
    /// Which groups keep history, and how much.
    history_policy: HistoryPolicy,
    /// The recent messages of each history group this node's live stream
    /// brought, for reads it covers (`history_tail.rs`).
    pub(crate) tails: HistoryTails,
    /// Gaps being repaired: per group, the live messages that arrived
    /// since, waiting for the missing ones.
    repairs: Mutex<HashMap<GroupName, Vec<Held>>>,
    /// Where a repair reads the missing messages: the backend's broker,
    /// set once it has started (weak: the backend owns this delivery).
    history: OnceLock<Weak<dyn Broker>>,
    /// Groups whose stream is starting (their top being read before the
    /// subscription): the generation of each start, so that a start
    /// outlived by a leave (and perhaps a new join) does nothing.
    starting: Mutex<HashMap<GroupName, u64>>,
    /// The next start's generation.
    starts: std::sync::atomic::AtomicU64,
    /// Itself, for the repairs it spawns.
    me: Weak<Delivery>,
}

/// How long a stream's start waits for history's top before it subscribes
/// all the same (without a starting point, as before the first read).
const START_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A positioned message on its way: live, held back while a gap before
/// it is repaired, or read from history by the repair.
struct Held {
    broadcast: Broadcast,
    message: Message,
    position: Position,
    /// The bytes as published (what the tail keeps).
    payload: Bytes,
}

/// The most live messages of one group held back while its gap is
/// repaired; past it the repair gives up and falls back to resuming.
const MAX_HELD: usize = 10_000;

/// A point in a group's history: its epoch (`None`: no history was stored
/// yet, so the first epoch to come starts after `offset`, which is 0) and
/// an offset in it.
type StreamPoint = (Option<Arc<str>>, u64);

impl Delivery {
    pub(crate) fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        node_id: String,
        (history, tail_budget): (HistoryPolicy, usize),
        me: Weak<Delivery>,
    ) -> Self {
        Delivery {
            registry,
            metrics,
            node_id,
            offsets: parking_lot::Mutex::default(),
            history_policy: history,
            tails: HistoryTails::new(tail_budget),
            repairs: Mutex::default(),
            history: OnceLock::new(),
            starting: Mutex::default(),
            starts: std::sync::atomic::AtomicU64::new(0),
            me,
        }
    }

    /// The first local member joined history group `group`: reads where
    /// its history stands, then asks `broker` to subscribe (see the module
    /// docs). Without a runtime or a history reader, subscribes at once.
    pub(crate) fn start_stream(&self, group: &GroupName, broker: &Arc<dyn Broker>) {
        let (Some(me), Some(reader), Ok(runtime)) = (
            self.me.upgrade(),
            self.history.get().and_then(Weak::upgrade),
            tokio::runtime::Handle::try_current(),
        ) else {
            return broker.subscribe(group);
        };
        let generation = self
            .starts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.starting.lock().insert(group.clone(), generation);
        let (group, broker) = (group.clone(), broker.clone());
        runtime.spawn(async move {
            let read = tokio::time::timeout(
                START_READ_LIMIT,
                reader.history(&group, HistoryQuery::Last(1)),
            )
            .await;
            let mut starting = me.starting.lock();
            if starting.get(&group) != Some(&generation) {
                return; // left meanwhile: never subscribed
            }
            starting.remove(&group);
            match read {
                Ok(Ok(page)) => me.read_at(&group, page.epoch.as_deref(), page.top),
                Ok(Err(error)) => {
                    tracing::debug!(%group, %error, "cannot read where history stands; subscribing all the same");
                }
                Err(_) => {
                    tracing::debug!(%group, "history's top took too long; subscribing all the same");
                }
            }
            // Under the lock: ordered before the unsubscribe of a leave.
            broker.subscribe(&group);
        });
    }

    /// The last local member left `group`: true when its stream was still
    /// starting (it never subscribed, and now will not), so there is
    /// nothing to unsubscribe.
    pub(crate) fn cancel_start(&self, group: &GroupName) -> bool {
        self.starting.lock().remove(group).is_some()
    }

    /// Where gap repairs read history from (the started backend's broker).
    pub(crate) fn repair_from(&self, broker: &Arc<dyn Broker>) {
        let _ = self.history.set(Arc::downgrade(broker));
    }

    pub(crate) fn deliver(
        &self,
        broadcast: &Broadcast,
        message: &Queued,
        keep: &dyn Fn(&Session) -> bool,
    ) -> Fanout {
        let fanout = self.registry.fan_out(broadcast, message, keep);
        let m = &self.metrics;
        m.messages_out.inc_by(fanout.delivered as u64);
        m.bytes_out
            .inc_by((fanout.delivered * message.message().len()) as u64);
        m.queue_full_closes.inc_by(fanout.overflowed.len() as u64);
        // Outside the session's own log span (this is the publisher's
        // task): the line names node, session and group itself.
        for session in &fanout.overflowed {
            let group = match &broadcast.target {
                crate::broadcast::Target::Group(group) => group.as_str(),
                _ => "",
            };
            tracing::warn!(
                node = %self.node_id,
                session = %session.id(),
                group,
                "closed a slow client with 1013: its send queue is full"
            );
        }
        m.queue_drops.inc_by(fanout.dropped_oldest as u64);
        fanout
    }

    /// Where `position` stands against this node's live stream of
    /// `group`, which moves on to it.
    fn continuity(&self, group: &GroupName, position: &Position) -> Continuity {
        let previous = self.offsets.lock().insert(
            group.clone(),
            (Some(position.epoch.clone()), position.offset),
        );
        match previous {
            Some((Some(epoch), _)) if epoch != position.epoch => Continuity::NewEpoch,
            Some((epoch, last)) if position.offset > last.saturating_add(1) => {
                match epoch {
                    Some(epoch) => Continuity::Skipped { after: last, epoch },
                    // No history when the stream began: its first epoch's
                    // messages up to this one were missed.
                    None => Continuity::Skipped {
                        after: last,
                        epoch: position.epoch.clone(),
                    },
                }
            }
            _ => Continuity::Continues,
        }
    }

    /// A positioned message of `group` arrived live: delivered now when the
    /// stream continues, held while a gap before it is repaired, or the
    /// start of a repair (see the module docs).
    fn on_positioned(&self, group: &GroupName, held: Held) {
        {
            let mut repairs = self.repairs.lock();
            if let Some(waiting) = repairs.get_mut(group) {
                if waiting.len() < MAX_HELD {
                    waiting.push(held);
                    return;
                }
                tracing::warn!(%group, held = MAX_HELD, "a gap's repair took too long: giving up");
                let mut waiting = repairs.remove(group).unwrap_or_default();
                waiting.push(held);
                self.give_up(group, waiting);
                return;
            }
        }
        match self.continuity(group, &held.position) {
            Continuity::Continues => self.deliver_positioned(group, held, false),
            Continuity::NewEpoch => {
                // What the old epoch held is gone with it: nothing to read.
                self.metrics.history_gaps.inc();
                self.give_up(group, vec![held]);
            }
            Continuity::Skipped { after, epoch } => {
                self.metrics.history_gaps.inc();
                let (Some(me), Some(_)) = (self.me.upgrade(), self.history.get()) else {
                    return self.give_up(group, vec![held]);
                };
                tracing::info!(%group, after, offset = held.position.offset,
                    "this node's live stream skipped messages: reading them from history");
                self.repairs.lock().insert(group.clone(), vec![held]);
                tokio::spawn(repair(me, group.clone(), after, epoch));
            }
        }
    }

    /// Delivers a positioned message in its turn, keeping it in the tail.
    /// A `repaired` one is queued even past a member's queue length: a
    /// repair delivers what was missed in one go.
    fn deliver_positioned(&self, group: &GroupName, held: Held, repaired: bool) {
        if let Some(limits) = self.history_policy.for_group(group) {
            self.tails.append(
                group,
                &held.position.epoch,
                held.position.offset,
                &held.payload,
                limits,
            );
        }
        let stamp = Stamp::new(held.position.offset, held.position.epoch);
        let queued = if repaired {
            Queued::repaired(held.message, stamp)
        } else {
            Queued::new(held.message, Some(stamp))
        }
        .in_group(group);
        self.deliver(&held.broadcast, &queued, &|_| true);
    }

    /// What was missed cannot be read: the group's `groupcast.v1` sessions
    /// are closed with `RESUME` (their own resume says what is lost), and
    /// `waiting` is delivered as it came. Raw sessions cannot resume; the
    /// loss is counted.
    fn give_up(&self, group: &GroupName, waiting: Vec<Held>) {
        self.metrics.history_gaps_unrepaired.inc();
        let members = self.registry.members(group);
        let resumable: Vec<_> = members
            .iter()
            .filter(|s| s.protocol() == Protocol::V1)
            .collect();
        tracing::warn!(%group, sessions = resumable.len(),
            "messages this node missed cannot be read from history: groupcast.v1 sessions resume");
        for session in resumable {
            session.close_with(crate::CloseReason::new(
                crate::CloseKind::Resume,
                "messages were lost: resume with since",
            ));
        }
        if let Some(last) = waiting.last() {
            self.offsets.lock().insert(
                group.clone(),
                (Some(last.position.epoch.clone()), last.position.offset),
            );
        }
        for held in waiting {
            self.deliver_positioned(group, held, true);
        }
    }

    /// Reads `(after, until]` of `group`'s history in `epoch`, page by
    /// page; `None` when it cannot all be read.
    async fn read_missing(
        &self,
        group: &GroupName,
        after: u64,
        until: u64,
        epoch: &str,
    ) -> Option<Vec<HistoryEntry>> {
        let broker = self.history.get()?.upgrade()?;
        let mut entries: Vec<HistoryEntry> = Vec::new();
        let mut last = after;
        // A gap comes from the subscriber's reconnect: Redis may still be
        // slow or briefly out of reach then, so a failed read is tried
        // again for a few seconds before the gap is given up on (which
        // costs raw clients the messages, and closes v1 clients with 4010).
        let mut retry = crate::backoff::Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(1),
        );
        let give_up_at = tokio::time::Instant::now() + REPAIR_READ_PATIENCE;
        while last < until {
            let query = HistoryQuery::After {
                offset: last,
                limit: MAX_PAGE,
            };
            let page = match broker.history(group, query).await {
                Ok(page) => page,
                Err(error) => {
                    let delay = retry.next_delay();
                    if tokio::time::Instant::now() + delay > give_up_at {
                        tracing::warn!(%group, %error, "cannot read the messages this node missed");
                        return None;
                    }
                    tracing::debug!(%group, %error, ?delay, "reading the messages this node missed failed; trying again");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            if !page.continues(epoch, last) || page.entries.is_empty() {
                return None;
            }
            for entry in page.entries {
                if entry.offset > until {
                    break;
                }
                last = entry.offset;
                entries.push(entry);
            }
        }
        Some(entries)
    }

    /// Forgets `group`'s last offset (its subscription starts over).
    pub(crate) fn forget(&self, group: &GroupName) {
        self.offsets.lock().remove(group);
        self.tails.forget(group);
        self.repairs.lock().remove(group);
    }

    /// A session read `group`'s history while this node was subscribed,
    /// and found it at `top` (in `epoch`). If nothing has arrived live
    /// since the subscription began, that is where the live stream stands:
    /// every later message must reach this node, so the first one that
    /// skips past `top + 1` is a gap like any other. Without this, a
    /// subscription lost before a group's first live message would lose
    /// the messages published meanwhile unseen: there would be no last
    /// offset to compare the next one with.
    pub(crate) fn read_at(&self, group: &GroupName, epoch: Option<&str>, top: u64) {
        let epoch: Option<Arc<str>> = epoch.map(Arc::from);
        self.offsets
            .lock()
            .entry(group.clone())
            .or_insert_with(|| (epoch.clone(), top));
        self.tails.begin(group, epoch, top);
    }

    /// The live stream of `group` stands at `offset` of `epoch`.
    fn set_stream_point(&self, group: &GroupName, epoch: &Arc<str>, offset: u64) {
        self.offsets
            .lock()
            .insert(group.clone(), (Some(epoch.clone()), offset));
    }

    fn invalid(&self, channel: &Channel, error: &dyn std::fmt::Display) {
        self.metrics.bus_invalid.inc();
        tracing::warn!(?channel, %error, "dropped an undecodable message from the backend");
    }
}

/// The hub's handler of what the backend hears.
impl BackendEvents for Delivery {
    /// A message read from the backend: decode, skip our own, fan out.
    fn on_message(&self, inbound: Inbound) {
        self.metrics.bus_received.inc();
        let Inbound {
            channel,
            payload,
            position,
        } = inbound;
        // A history group's message is kept in its tail as history keeps
        // it: the bytes as published.
        let kept = position.as_ref().map(|_| payload.clone());
        let (broadcast, message, origin, presence) = match decode(channel.clone(), payload) {
            Ok(decoded) => decoded,
            Err(error) => return self.invalid(&channel, &error),
        };
        // A positioned message was not delivered when it was sent (history
        // groups are delivered from the backend only, so that every member
        // sees the same offsets in the same order): our own is delivered now.
        if position.is_none() && origin.as_deref() == Some(self.node_id.as_str()) {
            return; // delivered locally when it was sent
        }
        if let Some(seq) = presence {
            if let (Message::Text(frame), Target::Group(group)) = (message, &broadcast.target) {
                let frame = Queued::presence(frame.as_str().to_string(), group, seq);
                self.deliver(&broadcast, &frame, &Session::sees_presence_frames);
            }
            return;
        }
        if let (Some(position), Target::Group(group), Some(payload)) =
            (position.clone(), &broadcast.target, kept)
        {
            let group = group.clone();
            return self.on_positioned(
                &group,
                Held {
                    broadcast,
                    message,
                    position,
                    payload,
                },
            );
        }
        let queued = Queued::new(message, position.map(|p| Stamp::new(p.offset, p.epoch)));
        let queued = match &broadcast.target {
            Target::Group(group) => queued.in_group(group),
            _ => queued,
        };
        self.deliver(&broadcast, &queued, &|_| true);
    }
}

/// Where a message stands against a group's live stream.
enum Continuity {
    /// The next offset (or the first this node sees).
    Continues,
    /// Offsets after `after` were skipped, in `epoch`.
    Skipped { after: u64, epoch: Arc<str> },
    /// Another epoch: the history was lost.
    NewEpoch,
}

/// Repairs `group`'s gap after offset `after` of `epoch`: reads what was
/// missed, then delivers it and the messages held meanwhile, in order; a
/// second skip among those starts the next round. Gives up (see
/// [`Delivery::give_up`]) when history does not hold it all.
/// How long a gap's repair keeps trying to read history that Redis does
/// not answer for (an answer that history no longer holds the messages is
/// final at once).
const REPAIR_READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

async fn repair(delivery: Arc<Delivery>, group: GroupName, mut after: u64, epoch: Arc<str>) {
    loop {
        let Some(until) = delivery
            .repairs
            .lock()
            .get(&group)
            .and_then(|waiting| waiting.first())
            .map(|first| first.position.offset.saturating_sub(1))
        else {
            return; // forgotten meanwhile: the group's subscription ended
        };
        let missing = delivery.read_missing(&group, after, until, &epoch).await;
        let mut repairs = delivery.repairs.lock();
        let Some(waiting) = repairs.remove(&group) else {
            return;
        };
        let Some(missing) = missing else {
            drop(repairs);
            return delivery.give_up(&group, waiting);
        };
        let channel = Channel::Group(group.clone());
        let mut last = after;
        for entry in missing {
            let Ok((broadcast, message, _, _)) = decode(channel.clone(), entry.payload.clone())
            else {
                delivery.metrics.bus_invalid.inc();
                last = entry.offset;
                continue;
            };
            let position = Position {
                offset: entry.offset,
                epoch: epoch.clone(),
            };
            last = entry.offset;
            delivery.deliver_positioned(
                &group,
                Held {
                    broadcast,
                    message,
                    position,
                    payload: entry.payload,
                },
                true,
            );
        }
        delivery.metrics.history_gaps_repaired.inc();
        tracing::info!(%group, after, until, "the messages this node missed were delivered from history");
        let mut waiting = waiting.into_iter();
        while let Some(held) = waiting.next() {
            let same_epoch = held.position.epoch == epoch;
            if same_epoch && held.position.offset <= last {
                continue; // already delivered from history
            }
            if same_epoch && held.position.offset == last + 1 {
                last = held.position.offset;
                delivery.deliver_positioned(&group, held, true);
                continue;
            }
            delivery.set_stream_point(&group, &epoch, last);
            if same_epoch {
                // Another skip while the first was read: the next round.
                delivery.metrics.history_gaps.inc();
                repairs.insert(
                    group.clone(),
                    std::iter::once(held).chain(waiting).collect(),
                );
                after = last;
                break;
            }
            // Another epoch: what the old one held is gone.
            delivery.metrics.history_gaps.inc();
            drop(repairs);
            return delivery.give_up(&group, std::iter::once(held).chain(waiting).collect());
        }
        if !repairs.contains_key(&group) {
            delivery.set_stream_point(&group, &epoch, last);
            return;
        }
    }
}

/// What a published payload on `channel` says: who receives it, the
/// message, the node that sent it (`None` for a raw payload), and, for a
/// `groupcast.v1` presence frame (`Envelope::presence`), its position.
pub(crate) fn decode(
    channel: Channel,
    payload: Bytes,
) -> Result<(Broadcast, Message, Option<String>, Option<u64>), envelope::EnvelopeError> {
    match envelope::decode(payload)? {
        Decoded::Raw(raw) => {
            let broadcast = match channel {
                Channel::Group(group) => Broadcast::new(Target::Group(group)),
                Channel::Cluster => Broadcast::all(),
            };
            Ok((broadcast, Message::from_raw(raw), None, None))
        }
        Decoded::Envelope(envelope) => {
            let message = envelope.message()?;
            let target = match (channel, envelope.sessions) {
                (Channel::Group(group), _) => Target::Group(group),
                (Channel::Cluster, Some(ids)) => Target::Sessions(ids),
                (Channel::Cluster, None) => Target::All,
            };
            let broadcast = Broadcast {
                target,
                except: envelope.except,
                filter: envelope.filter,
            };
            let presence = envelope
                .presence
                .then(|| envelope.presence_seq.unwrap_or(0));
            Ok((broadcast, message, Some(envelope.origin), presence))
        }
    }
}
