//! One session's bounded outbound queue.
//!
//! Fan-out never waits for a socket: it pushes into this queue and moves on.
//! The session's writer task is the only consumer; it takes everything that
//! is queued in one go and writes it as one batch with one flush.
//!
//! A `VecDeque` behind a mutex (instead of a channel) lets the full-queue
//! policy drop the *oldest* message, and lets a close request overtake the
//! queued frames when the client is too slow to ever drain them. An empty
//! `VecDeque` allocates nothing, so an idle session costs no buffer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use crate::close::{CloseKind, CloseReason};
use crate::config::QueueFullPolicy;
use crate::group::GroupName;
use crate::message::Message;
pub(crate) use crate::protocol::Stamp;
use crate::protocol::Welcome;

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// It is in the queue.
    Queued,
    /// It is in the queue; the oldest message was dropped to make room.
    DroppedOldest,
    /// The queue was full and the session is now closing with 1013.
    Overflowed,
    /// The session is closing or closed; the message was discarded.
    Closed,
    /// A presence frame the session's snapshot already holds: not sent.
    Known,
}

/// One message in sessions' queues, shared by every member it goes to
/// (one allocation per message, however many members): the message, what
/// a writer may need to know about it besides its bytes, and its
/// encodings as each kind of member gets them (see [`Encoding`]), each
/// built by the first writer that needs it and reused by every other.
/// Nothing here is a transport's: the message is transport-neutral until a
/// writer encodes it.
#[derive(Debug, Clone)]
pub(crate) struct Queued(Arc<Outgoing>);

#[derive(Debug)]
struct Outgoing {
    message: Message,
    /// The group it was sent to (`groupcast.v1` frames name it).
    group: Option<GroupName>,
    /// Its history position, when its group keeps history. A client that
    /// speaks `groupcast.v1` is sent it; every other client gets the plain
    /// frame.
    stamp: Option<Stamp>,
    /// Already a `groupcast.v1` protocol frame (welcome, reset): sent as
    /// it is, never wrapped.
    protocol: bool,
    /// Part of a gap's repair (`delivery.rs`): queued even past the
    /// queue's length, like a catch-up's backlog, because the repair
    /// delivers what a member missed in one go.
    repaired: bool,
    /// A join/leave frame's position in its group: not sent to a session
    /// whose presence snapshot is at or past it.
    presence: Option<u64>,
    /// Its encodings, one per [`Encoding`] slot, each filled by the first
    /// writer that needs it.
    encoded: [OnceLock<Bytes>; ENCODINGS],
}

impl Queued {
    pub(crate) fn new(message: Message, stamp: Option<Stamp>) -> Self {
        Queued(Arc::new(Outgoing {
            message,
            group: None,
            stamp,
            protocol: false,
            repaired: false,
            presence: None,
            encoded: Default::default(),
        }))
    }

    /// A protocol frame (JSON text), sent as it is.
    pub(crate) fn protocol(text: String) -> Self {
        Queued(Arc::new(Outgoing {
            message: Message::text(text),
            group: None,
            stamp: None,
            protocol: true,
            repaired: false,
            presence: None,
            encoded: Default::default(),
        }))
    }

    /// A message of a gap's repair, delivered in its turn: queued even
    /// past a queue's length (see `Outgoing::repaired`).
    pub(crate) fn repaired(message: Message, stamp: Stamp) -> Self {
        Queued(Arc::new(Outgoing {
            message,
            group: None,
            stamp: Some(stamp),
            protocol: false,
            repaired: true,
            presence: None,
            encoded: Default::default(),
        }))
    }

    /// A join/leave frame of `group` at position `seq` (a protocol frame,
    /// see [`Outbound::presence_from`]).
    pub(crate) fn presence(text: String, group: &GroupName, seq: u64) -> Self {
        Queued(Arc::new(Outgoing {
            message: Message::text(text),
            group: Some(group.clone()),
            stamp: None,
            protocol: true,
            repaired: false,
            presence: Some(seq),
            encoded: Default::default(),
        }))
    }

    /// Whether this is a presence frame of `group` at or before `seq`.
    fn is_presence_through(&self, group: &GroupName, seq: u64) -> bool {
        self.0.presence.is_some_and(|at| at <= seq) && self.0.group.as_ref() == Some(group)
    }

    /// A `groupcast.v1` welcome, as its session is sent it.
    pub(crate) fn welcome(welcome: &Welcome) -> Self {
        Queued::protocol(welcome.to_json())
    }

    /// The same message, naming the group it was sent to. Called right
    /// after construction, while nothing else shares it (otherwise it is
    /// left as it is).
    pub(crate) fn in_group(mut self, group: &GroupName) -> Self {
        if let Some(outgoing) = Arc::get_mut(&mut self.0) {
            outgoing.group = Some(group.clone());
        }
        self
    }

    pub(crate) fn message(&self) -> &Message {
        &self.0.message
    }

    /// The group it was sent to, if it was sent to one.
    pub(crate) fn group(&self) -> Option<&GroupName> {
        self.0.group.as_ref()
    }

    pub(crate) fn stamp(&self) -> Option<&Stamp> {
        self.0.stamp.as_ref()
    }

    /// Whether this is a `groupcast.v1` protocol frame of its own.
    pub(crate) fn is_protocol(&self) -> bool {
        self.0.protocol
    }

    /// The history offset, if any.
    pub(crate) fn offset(&self) -> Option<u64> {
        self.0.stamp.as_ref().map(|s| s.offset)
    }

    /// This message in `encoding`: built by `build` for the first member
    /// that needs it, then shared by every other (one encoding per message
    /// and slot, however many members). Lent, not cloned: a writer holds
    /// the message while it writes, and a clone would be one more atomic
    /// increment and decrement per delivery on a counter that every
    /// member's writer touches, from every core.
    ///
    /// A transport may store empty bytes to mean "no such encoding" (a
    /// compressed form that would not be smaller, say): a real encoding is
    /// never empty.
    pub(crate) fn encoded(
        &self,
        encoding: Encoding,
        build: impl FnOnce(&Queued) -> Bytes,
    ) -> &Bytes {
        self.0.encoded[encoding.0].get_or_init(|| build(self))
    }
}

/// A slot for one encoding of a queued message. The queue knows messages,
/// not transports: each transport names the slots it uses, next to the
/// code that fills them, and the slots are told apart only by number.
///
/// | slots | used by |
/// | --- | --- |
/// | 0–3 | the WebSocket transport (`transport/websocket/encoding.rs`): raw and `groupcast.v1` frames, each plain and compressed |
/// | 4 | the Server-Sent Events transport (`transport/sse/encoding.rs`): the event |
///
/// A new transport takes the next free numbers and raises [`ENCODINGS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoding(usize);

impl Encoding {
    /// The slot `index`; a slot past [`ENCODINGS`] does not compile (the
    /// constant is evaluated where a transport names its slots).
    pub(crate) const fn slot(index: usize) -> Self {
        assert!(index < ENCODINGS, "raise ENCODINGS for a new slot");
        Encoding(index)
    }
}

/// How many encodings a message can have at once, all transports together.
pub(crate) const ENCODINGS: usize = 5;

impl From<Message> for Queued {
    fn from(message: Message) -> Self {
        Queued::new(message, None)
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.message() == other.message()
            && self.offset() == other.offset()
            && self.is_protocol() == other.is_protocol()
    }
}

/// How many times the queue's length join/leave frames may fill: a join
/// storm in a `--join-leave` group sends every member one frame per
/// newcomer in a burst (a few hundred per 50 ms batch), which a client
/// that keeps up with messages drains as fast; counted against the
/// messages' length, it would close every member of the room with 1013.
/// The frames are shared (one allocation each, however many members), so
/// the allowance costs a pointer per frame and member.
const PRESENCE_ALLOWANCE: usize = 16;

/// A queue's buffer (and a connection's batch) larger than this many
/// messages is given back after a burst rather than kept for the next.
pub(crate) const SPARE_CAPACITY: usize = 32;

#[derive(Default)]
struct State {
    frames: VecDeque<Queued>,
    /// Set once; the writer sends it and stops.
    close: Option<CloseReason>,
    /// Whether `close` is final (no push is accepted after it).
    closing: bool,
    /// Catch-ups in progress (the join's, and one per group subscribed
    /// since): pushes queue as usual, but the writer waits until each
    /// [`Outbound::release`] has put its backlog in front of them.
    holds: u32,
    /// Per group whose presence snapshot the session was sent, its
    /// position: join/leave frames at or before it are not sent.
    presence_floors: Vec<(GroupName, u64)>,
}

impl State {
    /// Drops the queued join/leave frames of `group` at or before `seq`
    /// (a snapshot at `seq` holds them).
    fn drop_presence_through(&mut self, group: &GroupName, seq: u64) {
        self.frames.retain(|q| !q.is_presence_through(group, seq));
    }
}

pub(crate) struct Outbound {
    state: Mutex<State>,
    /// The connection's task, woken when there is something to write
    /// (one consumer: an `AtomicWaker`, cheaper than a `Notify`).
    ready: AtomicWaker,
    /// Set (under the lock) whenever something may have become writable:
    /// the connection looks at it without the lock, so a wake-up that finds
    /// the queue empty — after every batch — costs no lock.
    maybe_ready: AtomicBool,
    capacity: usize,
    policy: QueueFullPolicy,
}

/// What the writer takes out of the queue in one go.
pub(crate) struct Batch {
    pub frames: VecDeque<Queued>,
    pub close: Option<CloseReason>,
}

impl Outbound {
    pub(crate) fn new(capacity: usize, policy: QueueFullPolicy, held: bool) -> Self {
        Outbound {
            state: Mutex::new(State {
                holds: u32::from(held),
                ..State::default()
            }),
            ready: AtomicWaker::new(),
            maybe_ready: AtomicBool::new(false),
            capacity: capacity.max(1),
            policy,
        }
    }

    /// Queues `message` without waiting. Never blocks on the socket.
    pub(crate) fn push(&self, message: Queued) -> Pushed {
        // Only a push into an empty queue wakes the writer: a non-empty
        // queue means an earlier push already did, and the writer has not
        // taken the batch yet (taking empties the queue). This saves a
        // wake-up per message when a burst queues up.
        let (outcome, wake) = {
            let mut state = self.state.lock();
            if state.closing {
                return Pushed::Closed;
            }
            if let (Some(seq), Some(group)) = (message.0.presence, &message.0.group)
                && state
                    .presence_floors
                    .iter()
                    .any(|(g, floor)| g == group && seq <= *floor)
            {
                return Pushed::Known;
            }
            let room = if message.0.presence.is_some() {
                self.capacity.saturating_mul(PRESENCE_ALLOWANCE)
            } else {
                self.capacity
            };
            if state.frames.len() < room || message.0.repaired {
                let was_empty = state.frames.is_empty();
                state.frames.push_back(message);
                (Pushed::Queued, was_empty)
            } else {
                match self.policy {
                    QueueFullPolicy::DropOldest => {
                        state.frames.pop_front();
                        state.frames.push_back(message);
                        (Pushed::DroppedOldest, false)
                    }
                    QueueFullPolicy::Close => {
                        // The client cannot keep up: what is queued would
                        // only delay the close, so it goes.
                        state.frames = VecDeque::new();
                        state.closing = true;
                        state.close = Some(CloseReason::new(
                            CloseKind::TooSlow,
                            "slow consumer: send queue full",
                        ));
                        (Pushed::Overflowed, true)
                    }
                }
            }
        };
        if wake {
            self.maybe_ready.store(true, Ordering::SeqCst);
            self.ready.wake();
        }
        outcome
    }

    /// Asks the writer to send `reason` and stop. Frames queued before the
    /// close are still sent first. Returns false when the session was
    /// already closing.
    pub(crate) fn close(&self, reason: CloseReason) -> bool {
        {
            let mut state = self.state.lock();
            if state.closing {
                return false;
            }
            state.closing = true;
            state.close = Some(reason);
        }
        self.maybe_ready.store(true, Ordering::SeqCst);
        self.ready.wake();
        true
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().frames.len()
    }

    /// Holds the writer for one more catch-up (a group subscribed on a
    /// live connection), ended by its [`Outbound::release`]. False when
    /// the session is closing.
    pub(crate) fn hold(&self) -> bool {
        let mut state = self.state.lock();
        if state.closing {
            return false;
        }
        state.holds += 1;
        true
    }

    /// The session is sent `group`'s presence snapshot at position `seq`
    /// (with its catch-up, while the queue is held): join/leave frames of
    /// the group at or before it, queued or to come, are not sent — the
    /// snapshot holds them — and every later one is. Under the queue's
    /// lock, so that no frame slips between the check and the queue.
    pub(crate) fn presence_from(&self, group: &GroupName, seq: u64) {
        let mut state = self.state.lock();
        match state.presence_floors.iter_mut().find(|(g, _)| g == group) {
            Some((_, floor)) => *floor = seq,
            None => state.presence_floors.push((group.clone(), seq)),
        }
        state.drop_presence_through(group, seq);
    }

    /// A newer snapshot of `group` (at `seq`) for a session that holds
    /// one, after the node could have missed join/leave frames (its
    /// subscriber reconnected): it replaces the list, so it goes in front
    /// of the group's frames above `seq` still queued, and those at or
    /// below it are dropped. False (nothing queued) when the session holds
    /// no snapshot of `group` or a newer one.
    pub(crate) fn refresh_presence(&self, group: &GroupName, seq: u64, snapshot: Queued) -> bool {
        {
            let mut state = self.state.lock();
            if state.closing {
                return false;
            }
            match state.presence_floors.iter_mut().find(|(g, _)| g == group) {
                Some((_, floor)) if *floor < seq => *floor = seq,
                _ => return false,
            }
            state.drop_presence_through(group, seq);
            let at = state
                .frames
                .iter()
                .position(|q| q.0.presence.is_some() && q.group() == Some(group))
                .unwrap_or(state.frames.len());
            state.frames.insert(at, snapshot);
        }
        self.maybe_ready.store(true, Ordering::SeqCst);
        self.ready.wake();
        true
    }

    /// Whether the session holds a presence snapshot of `group`.
    pub(crate) fn holds_presence(&self, group: &GroupName) -> bool {
        self.state
            .lock()
            .presence_floors
            .iter()
            .any(|(g, _)| g == group)
    }

    /// The session left `group`: its snapshot's position goes with it.
    pub(crate) fn forget_presence(&self, group: &GroupName) {
        self.state
            .lock()
            .presence_floors
            .retain(|(g, _)| g != group);
    }

    /// Ends a catch-up: `front` (the welcome, then the backlog in offset
    /// order) goes before what was queued live meanwhile, and live
    /// messages the backlog already holds are dropped, so the client sees
    /// every offset once. Then the writer may go.
    ///
    /// `seen` is where the client stands without the backlog (the welcome's
    /// epoch and top): live messages up to it are dropped too, as they are
    /// before the point the client joined at.
    pub(crate) fn release(&self, front: Vec<Queued>, seen: Option<(Arc<str>, u64)>) {
        {
            let mut state = self.state.lock();
            if state.holds == 0 {
                return;
            }
            state.holds -= 1;
            let newest = front
                .iter()
                .rev()
                .find_map(|q| q.stamp().map(|s| (s.offset, s.epoch.clone())))
                .or(seen.map(|(epoch, offset)| (offset, epoch)));
            let live = std::mem::take(&mut state.frames);
            let mut frames: VecDeque<Queued> = front.into();
            frames.extend(live.into_iter().filter(|q| match (&newest, q.stamp()) {
                (Some((offset, epoch)), Some(stamp)) => {
                    stamp.epoch != *epoch || stamp.offset > *offset
                }
                _ => true,
            }));
            state.frames = frames;
        }
        self.maybe_ready.store(true, Ordering::SeqCst);
        self.ready.wake();
    }

    /// Takes what can be written now, without waiting: the queue (unless
    /// held) and the close. For a connection that is failing.
    pub(crate) fn take(&self) -> Batch {
        let mut frames = VecDeque::new();
        let close = Self::drain(&mut self.state.lock(), &mut frames);
        Batch { frames, close }
    }

    /// Moves what is queued (unless held) into `frames` and takes the
    /// close, if there is anything to write; `None` for "nothing yet".
    fn take_batch(&self, frames: &mut VecDeque<Queued>) -> Option<Option<CloseReason>> {
        if !self.maybe_ready.load(Ordering::SeqCst) {
            return None;
        }
        let mut state = self.state.lock();
        // Cleared under the lock: a push after this sets it again.
        self.maybe_ready.store(false, Ordering::SeqCst);
        let writable = state.holds == 0 && !state.frames.is_empty();
        if !writable && state.close.is_none() {
            return None;
        }
        Some(Self::drain(&mut state, frames))
    }

    /// Hands the queued messages (unless held) to `frames`, which the
    /// writer gives empty: the two deques trade places under the lock, so
    /// taking a batch moves no message and frees nothing, and the queue
    /// goes on with the writer's spare buffer.
    fn drain(state: &mut State, frames: &mut VecDeque<Queued>) -> Option<CloseReason> {
        if state.holds == 0 {
            if frames.is_empty() {
                std::mem::swap(&mut state.frames, frames);
            } else {
                frames.append(&mut state.frames);
            }
        }
        state.close.take()
    }

    /// Polls for a batch: moves what is queued into `frames` (empty, with
    /// a buffer the queue may keep) and gives the close, if any; pending
    /// (the task registered to be woken) while there is nothing to write.
    pub(crate) fn poll_batch(
        &self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Queued>,
    ) -> Poll<Option<CloseReason>> {
        if let Some(close) = self.take_batch(frames) {
            return Poll::Ready(close);
        }
        // Registered before the second look: a push in between wakes us.
        self.ready.register(cx.waker());
        match self.take_batch(frames) {
            Some(close) => Poll::Ready(close),
            None => Poll::Pending,
        }
    }

    /// Waits until there is something to write, then takes all of it.
    #[cfg(test)]
    pub(crate) async fn next_batch(&self) -> Batch {
        let mut frames = VecDeque::new();
        let close = std::future::poll_fn(|cx| self.poll_batch(cx, &mut frames)).await;
        Batch { frames, close }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(text: impl Into<String>) -> Queued {
        Message::text(text.into()).into()
    }

    fn texts(batch: &Batch) -> Vec<Message> {
        batch.frames.iter().map(|q| q.message().clone()).collect()
    }

    #[test]
    fn join_leave_frames_get_room_beyond_the_queue_and_a_snapshot_drops_the_known() {
        let group = GroupName::new("room").expect("a name");
        let frame = |seq| Queued::presence(format!("{{\"seq\":{seq}}}"), &group, seq);
        let q = Outbound::new(2, QueueFullPolicy::Close, true);
        assert_eq!(q.push(queued("a")), Pushed::Queued);
        assert_eq!(q.push(queued("b")), Pushed::Queued);
        // A burst of joins past the messages' length: queued.
        for seq in 1..=(2 * PRESENCE_ALLOWANCE as u64 - 2) {
            assert_eq!(q.push(frame(seq)), Pushed::Queued, "frame {seq}");
        }
        // A snapshot at 10: the frames it holds go, later ones stay.
        q.presence_from(&group, 10);
        assert_eq!(q.len(), 2 + (2 * PRESENCE_ALLOWANCE - 2 - 10));
        assert_eq!(
            q.push(frame(7)),
            Pushed::Known,
            "a late frame the snapshot holds"
        );
        // Messages still have only their own length.
        assert_eq!(q.push(queued("c")), Pushed::Overflowed);
    }

    #[tokio::test]
    async fn batches_everything_queued() {
        let q = Outbound::new(4, QueueFullPolicy::Close, false);
        assert_eq!(q.push(queued("a")), Pushed::Queued);
        assert_eq!(q.push(queued("b")), Pushed::Queued);
        let batch = q.next_batch().await;
        assert_eq!(texts(&batch), vec![Message::text("a"), Message::text("b")]);
        assert!(batch.close.is_none());
        assert_eq!(q.len(), 0);
    }

    #[tokio::test]
    async fn every_push_after_a_drain_wakes_the_writer() {
        let q = std::sync::Arc::new(Outbound::new(8, QueueFullPolicy::Close, false));
        for round in 0..3 {
            let writer = tokio::spawn({
                let q = q.clone();
                async move { q.next_batch().await }
            });
            tokio::task::yield_now().await;
            q.push(queued(format!("{round}a")));
            q.push(queued(format!("{round}b")));
            let batch = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
                .await
                .expect("the writer was woken")
                .unwrap();
            assert!(!batch.frames.is_empty());
            // Whatever the first take missed is still announced.
            if batch.frames.len() == 1 {
                assert_eq!(q.next_batch().await.frames.len(), 1);
            }
            assert_eq!(q.len(), 0);
        }
    }

    #[tokio::test]
    async fn overflow_closes_with_1013_and_discards() {
        let q = Outbound::new(2, QueueFullPolicy::Close, false);
        q.push(queued("a"));
        q.push(queued("b"));
        assert_eq!(q.push(queued("c")), Pushed::Overflowed);
        assert_eq!(q.push(queued("d")), Pushed::Closed);
        let batch = q.next_batch().await;
        assert!(batch.frames.is_empty());
        assert_eq!(
            batch.close.map(|c| c.kind.websocket_code()),
            Some(crate::close_code::TRY_AGAIN_LATER)
        );
    }

    #[tokio::test]
    async fn drop_oldest_keeps_newest() {
        let q = Outbound::new(2, QueueFullPolicy::DropOldest, false);
        q.push(queued("a"));
        q.push(queued("b"));
        assert_eq!(q.push(queued("c")), Pushed::DroppedOldest);
        let batch = q.next_batch().await;
        assert_eq!(texts(&batch), vec![Message::text("b"), Message::text("c")]);
    }

    #[tokio::test]
    async fn close_after_queued_frames() {
        let q = Outbound::new(4, QueueFullPolicy::Close, false);
        q.push(queued("a"));
        assert!(q.close(CloseReason::new(CloseKind::Normal, "bye")));
        assert!(!q.close(CloseReason::new(CloseKind::GoingAway, "again")));
        let batch = q.next_batch().await;
        assert_eq!(batch.frames.len(), 1);
        assert_eq!(batch.close.map(|c| c.kind.websocket_code()), Some(1000));
    }

    fn stamped(offset: u64, epoch: &Arc<str>) -> Queued {
        Queued::new(
            Message::text(format!("m{offset}")),
            Some(Stamp::new(offset, epoch.clone())),
        )
    }

    #[tokio::test]
    async fn a_held_queue_releases_the_backlog_first_and_each_offset_once() {
        let epoch: Arc<str> = Arc::from("e1");
        let q = Outbound::new(16, QueueFullPolicy::Close, true);
        // Live messages 4 and 5 arrive while the backlog (1 to 4) is read.
        q.push(stamped(4, &epoch));
        q.push(stamped(5, &epoch));
        let writer = tokio::time::timeout(std::time::Duration::from_millis(50), q.next_batch());
        assert!(writer.await.is_err(), "held: the writer waits");
        let mut front = vec![Queued::protocol("welcome".into())];
        front.extend((1..=4).map(|n| stamped(n, &epoch)));
        q.release(front, None);
        let batch = q.next_batch().await;
        let offsets: Vec<_> = batch.frames.iter().map(Queued::offset).collect();
        assert_eq!(offsets, [None, Some(1), Some(2), Some(3), Some(4), Some(5)]);
        assert!(batch.frames[0].is_protocol());
    }

    #[tokio::test]
    async fn a_close_is_not_held() {
        let q = Outbound::new(4, QueueFullPolicy::Close, true);
        q.push(queued("live"));
        assert!(q.close(CloseReason::new(CloseKind::GoingAway, "bye")));
        let batch = q.next_batch().await;
        assert_eq!(batch.close.map(|c| c.kind.websocket_code()), Some(1001));
    }
}
