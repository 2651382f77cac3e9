//! One SSE session's response body: the session's queue as a stream of
//! events, written by hyper.
//!
//! The body is the session: it holds the [`Attached`] guard, so the
//! session leaves its group when hyper drops the body (the client went
//! away, or the connection was aborted). Each poll yields one event — the
//! shared bytes of [`event_for`], nothing copied — in this order: the
//! preamble (`retry:`, and a `reset` for an unusable `Last-Event-ID`), the
//! catch-up (welcome and backlog, run inside the first polls), then the
//! queue's batches with repeats of the backlog skipped, a keep-alive
//! comment when the stream was idle for a ping period, and the close
//! event last.
//!
//! **A client that stops reading.** hyper polls a body only while the
//! socket takes its bytes, so a stalled client's body is not polled at
//! all and cannot notice anything. A small watchdog task does: when the
//! session has had messages waiting for a whole write timeout without one
//! poll, it aborts the HTTP connection ([`ConnectionAbort`]), as a
//! WebSocket's write timeout would. Meanwhile the queue's full-queue
//! policy applies as it does to every session: fan-out never waits.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep, sleep, sleep_until};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use super::encoding::{close_event, event_for};
use crate::outbound::{Queued, SPARE_CAPACITY};
use crate::protocol::Offsets;
use crate::transport::ConnectionAbort;
use crate::transport::lifecycle::Attached;
use crate::{CloseKind, CloseReason, Hub, Session};

/// A keep-alive: a comment line, which every SSE client ignores.
const KEEP_ALIVE: &[u8] = b":\n\n";

/// A session's events, as hyper writes them. See the module docs.
pub(crate) struct EventStream {
    hub: Hub,
    attached: Attached,
    /// What goes before everything else, once.
    preamble: Option<Bytes>,
    /// The welcome and backlog being read; the queue is held until done.
    catching_up: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The batch being sent, one event per poll.
    batch: VecDeque<Queued>,
    /// The close that ends the stream once the batch is out.
    close: Option<CloseReason>,
    /// The close event was sent: the stream is over.
    ended: bool,
    /// The last history offset sent, to skip repeats of the backlog.
    offsets: Offsets,
    /// Fires for the keep-alive (and the token's expiry).
    timer: Pin<Box<Sleep>>,
    ping_period: Duration,
    /// Counts polls, for the watchdog.
    polls: Arc<AtomicU64>,
    /// Stops the watchdog when the stream goes.
    _watchdog: Option<DropGuard>,
}

impl EventStream {
    pub(crate) fn new(
        hub: Hub,
        attached: Attached,
        catch_up: impl Future<Output = ()> + Send + 'static,
        preamble: Bytes,
        abort: Option<ConnectionAbort>,
    ) -> Self {
        let config = hub.config();
        let ping_period = config.ping_period;
        let polls = Arc::new(AtomicU64::new(0));
        let watchdog = abort.map(|abort| {
            let stop = CancellationToken::new();
            tokio::spawn(
                watchdog(
                    attached.session().clone(),
                    polls.clone(),
                    (abort, hub.metrics().write_timeouts.clone()),
                    config.write_timeout,
                    stop.clone(),
                )
                .instrument(attached.span().clone()),
            );
            stop.drop_guard()
        });
        let timer = Box::pin(sleep_until(wake_at(attached.session(), ping_period)));
        EventStream {
            hub,
            attached,
            preamble: Some(preamble),
            catching_up: Some(Box::pin(catch_up)),
            batch: VecDeque::new(),
            close: None,
            ended: false,
            offsets: Offsets::default(),
            timer,
            ping_period,
            polls,
            _watchdog: watchdog,
        }
    }

    /// The next event of the batch (repeats of the backlog skipped), or
    /// the close event once the batch is out.
    fn next_event(&mut self) -> Option<Bytes> {
        while let Some(queued) = self.batch.pop_front() {
            if queued
                .stamp()
                .is_none_or(|stamp| self.offsets.is_new(stamp))
            {
                return Some(event_for(&queued).clone());
            }
        }
        if self.batch.capacity() > SPARE_CAPACITY {
            self.batch = VecDeque::new();
        }
        let close = self.close.take()?;
        self.ended = true;
        Some(close_event(&close))
    }

    /// The timer fired: end an expired token's session, else send a
    /// keep-alive.
    fn on_timer(&mut self) -> Option<Bytes> {
        let session = self.attached.session();
        if session
            .claims()
            .time_left()
            .is_some_and(|left| left.is_zero())
        {
            self.hub.metrics().count_auth_rejection("token_expired");
            session.close_with(CloseReason::new(
                CloseKind::TokenExpired,
                "token expired: reconnect with a new token",
            ));
            self.timer.as_mut().reset(Instant::now() + self.ping_period);
            return None;
        }
        self.timer
            .as_mut()
            .reset(wake_at(session, self.ping_period));
        Some(Bytes::from_static(KEEP_ALIVE))
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Polled by the HTTP connection's task: in the session's log span
        // (lifecycle.rs) while it is.
        let span = this.attached.span().clone();
        let _entered = span.enter();
        this.polls.fetch_add(1, Ordering::Relaxed);
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(preamble) = this.preamble.take() {
            return Poll::Ready(Some(Ok(preamble)));
        }
        if let Some(catching_up) = &mut this.catching_up {
            if catching_up.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.catching_up = None;
        }
        loop {
            if let Some(event) = this.next_event() {
                return Poll::Ready(Some(Ok(event)));
            }
            match this
                .attached
                .session()
                .outbound()
                .poll_batch(cx, &mut this.batch)
            {
                Poll::Ready(close) => {
                    if let Some(close) = &close {
                        tracing::debug!(code = close.kind.websocket_code(), reason = %close.reason, "closing");
                    }
                    this.close = close;
                    continue;
                }
                Poll::Pending => {}
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                match this.on_timer() {
                    Some(keep_alive) => return Poll::Ready(Some(Ok(keep_alive))),
                    // The session was closed: its close is queued now.
                    None => continue,
                }
            }
            return Poll::Pending;
        }
    }
}

/// When the timer must fire: the next keep-alive, or the token's expiry
/// if that is sooner.
fn wake_at(session: &Session, ping_period: Duration) -> Instant {
    let now = Instant::now();
    let keep_alive = now + ping_period;
    match session.claims().time_left() {
        Some(left) => keep_alive.min(now + left),
        None => keep_alive,
    }
}

/// Aborts the connection when the session had messages waiting for a whole
/// `write_timeout` and its body was not polled once (see the module docs);
/// counted as a write timeout.
async fn watchdog(
    session: Session,
    polls: Arc<AtomicU64>,
    (abort, timeouts): (ConnectionAbort, Counter),
    write_timeout: Duration,
    stop: CancellationToken,
) {
    let mut seen = polls.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep(write_timeout) => {}
        }
        let now = polls.load(Ordering::Relaxed);
        let waiting = session.queued() > 0 || session.is_closed();
        if now == seen && waiting {
            tracing::debug!(
                ?write_timeout,
                "SSE client stopped reading: connection aborted"
            );
            timeouts.inc();
            abort.abort();
            return;
        }
        seen = now;
    }
}
