//! The ordered publisher: publishes leave in call order, in pipelines.
//!
//! The hub hands publishes to a bounded queue without waiting. This task
//! takes whatever is queued (up to [`MAX_BATCH`]) and sends it as one
//! pipeline of PUBLISH on a pooled connection. A batch is sent only after
//! the previous one was answered, so the order of calls is the order Redis
//! sees — the first link of per-publisher order. Each publish is exactly
//! one PUBLISH, never retried: a failure is reported on its
//! [`PublishAck`](crate::backend::PublishAck) and counted, never duplicated.
//!
//! On a Redis Cluster the command is SPUBLISH (sharded pub/sub: a message
//! travels to the primary of its channel's slot only) and a batch goes out
//! as one pipeline per slot, all at once: a cluster pipeline must stay in
//! one slot, and a channel's messages are all in its slot's pipeline, in
//! call order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::errors::command_error;
use super::pool::RedisPool;
use crate::backend::channels::ChannelNames;
use crate::backend::cluster::slot::slot;
use crate::backend::{Channel, PublishAck, Published};
use crate::error::BackendError;
use crate::metrics::Metrics;

/// The hub's side of the publisher: a bounded queue that never waits.
pub(crate) struct PublishQueue {
    tx: mpsc::Sender<Outgoing>,
    capacity: usize,
    /// `host:port` (or "the cluster"), for the log.
    target: String,
    metrics: Arc<Metrics>,
    /// Whether a full queue was logged (log once per episode).
    full_logged: AtomicBool,
}

impl PublishQueue {
    /// A queue of `capacity` and the receiving end for a [`Publisher`].
    pub(crate) fn new(
        capacity: usize,
        target: String,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity);
        let queue = PublishQueue {
            tx,
            capacity,
            target,
            metrics,
            full_logged: AtomicBool::new(false),
        };
        (queue, rx)
    }

    /// Queues one publish, in call order; a full queue fails it at once.
    pub(crate) fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck {
        let (ack, rx) = oneshot::channel();
        let item = Outgoing::Publish {
            channel,
            payload,
            ack,
        };
        let (item, error) = match self.tx.try_send(item) {
            Ok(()) => {
                self.full_logged.store(false, Ordering::Relaxed);
                return PublishAck::pending(rx);
            }
            Err(mpsc::error::TrySendError::Full(item)) => {
                if !self.full_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        redis = %self.target,
                        capacity = self.capacity,
                        "the Redis publish queue is full; publishes reach this node only"
                    );
                }
                (item, BackendError::QueueFull(self.capacity))
            }
            Err(mpsc::error::TrySendError::Closed(item)) => (item, BackendError::Closed),
        };
        // It never reached the queue: fail it through its own ack.
        self.metrics.bus_publish_errors.inc();
        if let Outgoing::Publish { ack, .. } = item {
            let _ = ack.send(Err(error));
        }
        PublishAck::pending(rx)
    }

    /// Waits until everything queued before this call was sent, at most
    /// `budget`; false when it was not.
    pub(crate) async fn flush(&self, budget: std::time::Duration) -> bool {
        let (done, flushed) = oneshot::channel();
        let flush = async {
            if self.tx.send(Outgoing::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        };
        tokio::time::timeout(budget, flush).await.is_ok()
    }
}

/// How many publishes go into one pipeline at most.
const MAX_BATCH: usize = 512;

/// What the publisher is given, in call order.
pub(crate) enum Outgoing {
    Publish {
        channel: Channel,
        payload: Bytes,
        ack: oneshot::Sender<Result<Published, BackendError>>,
    },
    /// Answered once everything queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

pub(crate) struct Publisher {
    pub(crate) pool: RedisPool,
    pub(crate) queue: mpsc::Receiver<Outgoing>,
    pub(crate) names: ChannelNames,
    /// `PUBLISH`, or `SPUBLISH` on a Redis Cluster.
    pub(crate) command: &'static str,
    pub(crate) metrics: Arc<Metrics>,
    /// Publishes failed since the last success (log the first and the
    /// recovery, not every one).
    pub(crate) failed_in_a_row: u64,
}

struct Job {
    channel: String,
    payload: Bytes,
    ack: oneshot::Sender<Result<Published, BackendError>>,
}

impl Publisher {
    async fn send_pipeline(&self, jobs: impl Iterator<Item = &Job>) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        for job in jobs {
            pipe.cmd(self.command)
                .arg(&job.channel)
                .arg(&job.payload[..])
                .ignore();
        }
        self.pool
            .run(|mut conn| async move {
                pipe.query_async::<redis::Value>(&mut conn)
                    .await
                    .map(drop)
                    .map_err(command_error)
            })
            .await
    }

    /// One pipeline per slot, all at once; the first error fails the batch
    /// (a slot's publishes that did go out are not retried: never twice).
    async fn send_per_slot(&self, batch: &[Job]) -> Result<(), BackendError> {
        let mut by_slot: BTreeMap<u16, Vec<&Job>> = BTreeMap::new();
        for job in batch {
            by_slot
                .entry(slot(job.channel.as_bytes()))
                .or_default()
                .push(job);
        }
        let sends = by_slot
            .into_values()
            .map(|jobs| self.send_pipeline(jobs.into_iter()));
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .collect()
    }

    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut received = Vec::with_capacity(MAX_BATCH);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let n = tokio::select! {
                _ = cancel.cancelled() => return,
                n = self.queue.recv_many(&mut received, MAX_BATCH) => n,
            };
            if n == 0 {
                return; // the backend is gone
            }
            for item in received.drain(..) {
                match item {
                    Outgoing::Publish {
                        channel,
                        payload,
                        ack,
                    } => batch.push(Job {
                        channel: self.names.name(&channel),
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

    /// Sends `batch` (one pipeline, or one per slot on a cluster) and
    /// answers every ack.
    async fn send(&mut self, batch: &mut Vec<Job>) {
        if batch.is_empty() {
            return;
        }
        let outcome = if self.pool.is_cluster() {
            self.send_per_slot(batch).await
        } else {
            self.send_pipeline(batch.iter()).await
        };
        let n = batch.len() as u64;
        match outcome {
            Ok(_) => {
                if self.failed_in_a_row > 0 {
                    tracing::info!(
                        failed = self.failed_in_a_row,
                        "publishing to Redis works again"
                    );
                    self.failed_in_a_row = 0;
                }
                for job in batch.drain(..) {
                    let _ = job.ack.send(Ok(Published::default()));
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
