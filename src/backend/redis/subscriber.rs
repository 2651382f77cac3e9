//! The subscriber connection: one per node, reconnected and resubscribed
//! by us.
//!
//! Two tasks share the work:
//!
//! * the **subscriber** owns the connection's stream and, in its
//!   [`Listener`] (shared with the cluster subscriber), the wanted set.
//!   It reads every incoming message and calls the inbox from this single
//!   task, in the order Redis sent them: that is what keeps the order of
//!   one publisher's messages. It turns the hub's
//!   `subscribe` / `unsubscribe` calls (plain, non-blocking channel sends)
//!   into SUBSCRIBE / UNSUBSCRIBE. When the connection is lost it reconnects
//!   with backoff and subscribes the whole wanted set again. Sessions never
//!   notice.
//! * a **sink worker**, one per connection, sends those SUBSCRIBE,
//!   UNSUBSCRIBE and health-check PINGs one at a time and waits for each
//!   answer, so the subscriber never stops reading while Redis answers.
//!   (redis-rs's [`PubSub::split`](redis::aio::PubSub::split) gives the
//!   sink and the stream of the same connection.) A PING that is not
//!   answered within the command timeout means the connection is dead even
//!   if no socket error says so — a paused or partitioned Redis.
//!
//! Why RESP2 pub/sub on a dedicated connection rather than RESP3 push
//! messages with automatic resubscription: it works with every Redis and
//! compatible server, and doing the reconnect ourselves is what lets the
//! node report it — in `status()`, `/readyz`, metrics and logs.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::RedisError;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tracing::Instrument;

use super::errors::{command_error, is_auth_error, is_server_error};
use super::link_state::LinkState;
use super::listener::Listener;
use super::target::CurrentServer;
use crate::backend::error::BackendError;
use crate::backend::subscriptions::Change;
use crate::backoff::Backoff;

/// How many already-received messages the subscriber delivers in a row
/// before it looks at commands and timers again.
const MAX_DRAIN: usize = 256;

// ----- the subscriber ---------------------------------------------------------

/// How the subscriber is set up.
pub(crate) struct SubscriberSettings {
    /// The server: fixed, or followed through Sentinel.
    pub target: Arc<CurrentServer>,
    pub command_timeout: Duration,
    pub health_interval: Duration,
    pub backoff: Backoff,
    /// Whether this connection also listens to the cluster channel (every
    /// node's one connection on a single Redis; only shard 0's when the
    /// groups are spread over several).
    pub listen_cluster: bool,
}

/// The subscriber task's state. See the module docs.
pub(crate) struct Subscriber {
    pub settings: SubscriberSettings,
    /// The hub's commands, the wanted set, the inbox (`listener.rs`).
    pub listener: Listener,
}

/// One live subscriber connection.
struct SubscriberConnection {
    stream: PubSubStream,
    ops: mpsc::UnboundedSender<SinkOp>,
    worker: JoinHandle<BackendError>,
}

impl SubscriberConnection {
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

impl Drop for SubscriberConnection {
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

impl From<Change> for SinkOp {
    fn from(change: Change) -> Self {
        match change {
            Change::Subscribe(channel) => SinkOp::Subscribe(channel),
            Change::Unsubscribe(channel) => SinkOp::Unsubscribe(channel),
        }
    }
}

/// How a connection's life ended.
enum Ended {
    /// The backend is stopping.
    Stopped,
    /// The connection failed; reconnect.
    Lost(BackendError),
}

impl Subscriber {
    pub(crate) async fn run(mut self) {
        let mut connected_before = false;
        let mut failures = 0u32;
        loop {
            // Connect and subscribe everything we want.
            let attempt = tokio::select! {
                _ = self.listener.cancel.cancelled() => return,
                attempt = self.connect() => attempt,
            };
            let (mut connection, channels) = match attempt {
                Ok(connected) => connected,
                Err(error) => {
                    self.listener.state.set_broken(&error);
                    failures += 1;
                    let delay = self.settings.backoff.next_delay();
                    let redis = self.settings.target.address();
                    if failures == 1 {
                        tracing::warn!(
                            %redis, %error, retry_in = ?delay,
                            "cannot connect to Redis; sessions stay, retrying with backoff"
                        );
                    } else {
                        tracing::debug!(%redis, %error, retry_in = ?delay, failures, "still cannot connect to Redis");
                    }
                    if self.idle(delay).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            self.listener.state.set_connected();
            self.listener.state.metrics().bus_connects.inc();
            let redis = self.settings.target.address();
            if connected_before {
                tracing::info!(
                    %redis, failed_attempts = failures,
                    "reconnected, resubscribed {channels} channels"
                );
            } else {
                tracing::info!(%redis, "connected to Redis, subscribed {channels} channels");
            }
            if connected_before {
                self.listener.inbox.on_resubscribed();
            }
            connected_before = true;
            failures = 0;
            self.listener.wake_presence.notify_one();

            let connected_at = Instant::now();
            let ended = self.serve(&mut connection).await;
            connection.close().await;
            match ended {
                Ended::Stopped => return,
                Ended::Lost(error) => {
                    self.listener.state.set_broken(&error);
                    tracing::warn!(
                        redis = %self.settings.target.address(), %error,
                        "lost the Redis connection; sessions stay, reconnecting"
                    );
                    // A connection that lived a while: try again at once.
                    // One that died young (a flapping Redis or proxy): keep
                    // backing off, or we would reconnect in a tight loop.
                    let lived_long = connected_at.elapsed() >= self.settings.backoff.max();
                    if lived_long {
                        self.settings.backoff.reset();
                    } else {
                        let delay = self.settings.backoff.next_delay();
                        if self.idle(delay).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Opens the subscriber connection and subscribes the cluster channel
    /// and every wanted group channel. Returns once Redis confirmed them
    /// all.
    async fn connect(&self) -> Result<(SubscriberConnection, usize), BackendError> {
        let limit = self.settings.command_timeout;
        let server = self.settings.target.current().ok_or_else(|| {
            BackendError::Unavailable("the primary is not known yet (asking Sentinel)".into())
        })?;
        let pubsub = timeout(limit, server.client.get_async_pubsub())
            .await
            .map_err(|_| BackendError::Timeout(limit))?
            .map_err(command_error)?;
        let (sink, stream) = pubsub.split();
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let worker = tokio::spawn(
            sink_worker(sink, ops_rx, limit, self.listener.state.clone()).in_current_span(),
        );
        let mut connection = SubscriberConnection {
            stream,
            ops,
            worker,
        };
        // PING first: a Redis that wants a password answers NOAUTH here
        // (redis-rs does not surface errors in SUBSCRIBE replies), and the
        // sink worker turns that into a failed connection.
        connection.send(SinkOp::Ping);
        let mut channels = 0;
        if self.settings.listen_cluster {
            connection.send(SinkOp::Subscribe(self.listener.names.cluster().to_string()));
            channels += 1;
        }
        for channel in self.listener.wanted.wanted() {
            connection.send(SinkOp::Subscribe(channel.to_string()));
            channels += 1;
        }
        let (done, all_done) = oneshot::channel();
        connection.send(SinkOp::Barrier(done));
        tokio::select! {
            confirmed = all_done => match confirmed {
                Ok(()) => Ok((connection, channels)),
                // The worker quit before the barrier: it says why.
                Err(_) => Err(worker_error((&mut connection.worker).await)),
            },
            ended = &mut connection.worker => Err(worker_error(ended)),
        }
    }

    /// Waits `delay` before the next attempt, keeping the wanted set up to
    /// date meanwhile. `Err` when the backend is stopping.
    async fn idle(&mut self, delay: Duration) -> Result<(), ()> {
        let deadline = Instant::now() + delay;
        let mut moved = self.settings.target.watch();
        moved.mark_unchanged();
        loop {
            let next_linger = self.listener.wanted.next_deadline();
            tokio::select! {
                _ = self.listener.cancel.cancelled() => return Err(()),
                _ = sleep_until(deadline) => return Ok(()),
                // A new primary: try it at once.
                Ok(()) = moved.changed() => return Ok(()),
                command = self.listener.commands.recv() => match command {
                    Some(command) => { self.listener.on_command(command); }
                    None => return Err(()),
                },
                _ = sleep_until(next_linger.unwrap_or(deadline)), if next_linger.is_some() => {
                    // Nothing to send: the next connect subscribes what is
                    // still wanted.
                    self.listener.wanted.expire();
                }
            }
        }
    }

    /// Reads messages, applies commands, pings, ends lingers — until the
    /// connection fails or the backend stops.
    async fn serve(&mut self, connection: &mut SubscriberConnection) -> Ended {
        let every = self.settings.health_interval;
        let mut health = tokio::time::interval_at(Instant::now() + every, every);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut moved = self.settings.target.watch();
        moved.mark_unchanged();
        // Made once, not per round: each `cancelled()` or `changed()` made
        // in the loop would enter itself in its Notify's list of waiters
        // and leave it again (a lock each way) for every message read.
        // Fused: a failover's watch that ends (its sender gone) stays
        // pending instead of being polled again after it finished.
        let cancel = self.listener.cancel.clone();
        let mut cancelled = pin!(cancel.cancelled());
        let mut failover = pin!(moved.changed().fuse());
        loop {
            let next_linger = self.listener.wanted.next_deadline();
            tokio::select! {
                () = &mut cancelled => return Ended::Stopped,
                message = connection.stream.next() => {
                    let Some(message) = message else { return Ended::Lost(connection_closed()) };
                    self.listener.deliver(&message);
                    // Deliver what is already here before going round the
                    // select again: cheaper under load, same order.
                    for _ in 0..MAX_DRAIN {
                        match connection.stream.next().now_or_never() {
                            Some(Some(message)) => self.listener.deliver(&message),
                            Some(None) => return Ended::Lost(connection_closed()),
                            None => break,
                        }
                    }
                }
                ended = &mut connection.worker => return Ended::Lost(worker_error(ended)),
                Ok(()) = &mut failover => {
                    return Ended::Lost(BackendError::Unavailable(
                        "the primary moved (Sentinel failover); reconnecting to the new one".into(),
                    ));
                }
                command = self.listener.commands.recv() => match command {
                    Some(command) => {
                        if let Some(change) = self.listener.on_command(command) {
                            connection.send(change.into());
                        }
                    }
                    None => return Ended::Stopped,
                },
                _ = health.tick() => connection.send(SinkOp::Ping),
                _ = sleep_until(next_linger.unwrap_or_else(Instant::now)), if next_linger.is_some() => {
                    for change in self.listener.wanted.expire() {
                        connection.send(change.into());
                    }
                }
            }
        }
    }
}

/// Sends the subscriber connection's commands one at a time. Returns why
/// the connection must be replaced.
async fn sink_worker(
    mut sink: PubSubSink,
    mut ops: mpsc::UnboundedReceiver<SinkOp>,
    limit: Duration,
    state: Arc<LinkState>,
) -> BackendError {
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
                    state.set_subscribed(channel, on);
                }
            }
            Err(_) => {
                return BackendError::Unavailable(format!(
                    "Redis did not answer {command} within {limit:?}"
                ));
            }
            // Not authenticated (no or wrong credentials in the URL): the
            // connection is useless, say so and keep retrying with backoff.
            Ok(Err(error)) if is_auth_error(&error) => {
                return BackendError::Unavailable(format!(
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
    BackendError::Closed
}

fn worker_error(ended: Result<BackendError, tokio::task::JoinError>) -> BackendError {
    ended.unwrap_or_else(|e| BackendError::Unavailable(format!("subscriber connection task: {e}")))
}

fn connection_closed() -> BackendError {
    BackendError::Unavailable("the subscriber connection was closed".into())
}
