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
//!
//! Publishes to history groups go through the same queue, as one
//! append-and-publish script each (`history.rs`; its keys are in the
//! channel's slot), so they keep their order with plain publishes; their
//! acks carry the position the script gave.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::errors::command_error;
use super::history::{RedisHistory, position_of};
use super::pool::RedisPool;
use crate::backend::channels::ChannelNames;
use crate::backend::cluster::slot::slot;
use crate::backend::error::BackendError;
use crate::backend::inbound::Channel;
use crate::backend::publish::PublishAck;
use crate::backend::publish::Published;
use crate::group::GroupName;
use crate::history::HistoryLimits;
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
        self.enqueue(|ack| Outgoing::Publish {
            channel,
            payload,
            ack,
        })
    }

    /// Queues one append-and-publish to `group`'s history, in call order.
    pub(crate) fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck {
        self.enqueue(|ack| Outgoing::History {
            group: group.clone(),
            limits,
            payload,
            ack,
        })
    }

    fn enqueue(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<Published, BackendError>>) -> Outgoing,
    ) -> PublishAck {
        let (ack, rx) = oneshot::channel();
        let (item, error) = match self.tx.try_send(job(ack)) {
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
        if let Outgoing::Publish { ack, .. } | Outgoing::History { ack, .. } = item {
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
    /// Append to a group's history and publish, atomically.
    History {
        group: GroupName,
        limits: HistoryLimits,
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
    pub(crate) history: Arc<RedisHistory>,
    /// `PUBLISH`, or `SPUBLISH` on a Redis Cluster.
    pub(crate) command: &'static str,
    pub(crate) metrics: Arc<Metrics>,
    /// Publishes failed since the last success (log the first and the
    /// recovery, not every one).
    pub(crate) failed_in_a_row: u64,
}

struct Job {
    /// The wire name of the channel (what decides the cluster slot).
    channel: String,
    /// `Some` for an append to a group's history.
    history: Option<(GroupName, HistoryLimits)>,
    payload: Bytes,
    ack: oneshot::Sender<Result<Published, BackendError>>,
}

impl Publisher {
    /// One pipeline of `jobs`; what each achieved, in order.
    async fn send_pipeline(&self, jobs: &[&Job]) -> Result<Vec<Published>, BackendError> {
        let mut pipe = redis::pipe();
        let cluster = self.pool.is_cluster();
        if !cluster && jobs.iter().any(|job| job.history.is_some()) {
            // Once per batch: cheap, and a restarted Redis that forgot the
            // script gets it back before the first EVALSHA. (On a cluster
            // the append goes as EVAL: a keyless SCRIPT LOAD cannot join a
            // one-slot pipeline.)
            pipe.load_script(self.history.append_script()).ignore();
        }
        for job in jobs {
            match &job.history {
                None => {
                    pipe.cmd(self.command)
                        .arg(&job.channel)
                        .arg(&job.payload[..])
                        .ignore();
                }
                Some((group, limits)) => {
                    self.history
                        .add_append(&mut pipe, group, *limits, &job.payload, cluster);
                }
            }
        }
        let replies: Vec<redis::Value> = self
            .pool
            .run(|mut conn| async move { pipe.query_async(&mut conn).await.map_err(command_error) })
            .await?;
        // Only the appends' replies are kept, in order.
        let mut replies = replies.into_iter();
        jobs.iter()
            .map(|job| match job.history {
                None => Ok(Published::default()),
                Some(_) => replies
                    .next()
                    .ok_or_else(|| BackendError::Command("no reply to a history append".into()))
                    .and_then(position_of)
                    .map(|position| Published {
                        position: Some(position),
                    }),
            })
            .collect()
    }

    /// One pipeline per slot, all at once; the first error fails the batch
    /// (a slot's publishes that did go out are not retried: never twice).
    async fn send_per_slot(&self, batch: &[Job]) -> Result<Vec<Published>, BackendError> {
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, job) in batch.iter().enumerate() {
            by_slot
                .entry(slot(job.channel.as_bytes()))
                .or_default()
                .push(i);
        }
        let sends = by_slot.into_values().map(|indices| async move {
            let jobs: Vec<&Job> = indices.iter().map(|&i| &batch[i]).collect();
            self.send_pipeline(&jobs).await.map(|done| (indices, done))
        });
        let mut published = vec![Published::default(); batch.len()];
        for sent in futures_util::future::join_all(sends).await {
            let (indices, done) = sent?;
            for (i, one) in indices.into_iter().zip(done) {
                published[i] = one;
            }
        }
        Ok(published)
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
                        history: None,
                        payload,
                        ack,
                    }),
                    Outgoing::History {
                        group,
                        limits,
                        payload,
                        ack,
                    } => batch.push(Job {
                        channel: self.names.group(&group),
                        history: Some((group, limits)),
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
            let jobs: Vec<&Job> = batch.iter().collect();
            self.send_pipeline(&jobs).await
        };
        let n = batch.len() as u64;
        match outcome {
            Ok(published) => {
                if self.failed_in_a_row > 0 {
                    tracing::info!(
                        failed = self.failed_in_a_row,
                        "publishing to Redis works again"
                    );
                    self.failed_in_a_row = 0;
                }
                for (job, published) in batch.drain(..).zip(published) {
                    let _ = job.ack.send(Ok(published));
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
