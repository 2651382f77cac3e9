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
//! Publishes to history groups go through the same queue, as one
//! append-and-publish script each (`history.rs`), so they keep their order
//! with plain publishes; their acks carry the position the script gave.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::errors::command_error;
use super::history::{RedisHistory, position_of};
use super::pool::RedisPool;
use crate::backend::channels::ChannelNames;
use crate::backend::{Channel, Published};
use crate::error::BackendError;
use crate::group::GroupName;
use crate::history::HistoryLimits;
use crate::metrics::Metrics;

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
    pub(crate) metrics: Arc<Metrics>,
    /// Publishes failed since the last success (log the first and the
    /// recovery, not every one).
    pub(crate) failed_in_a_row: u64,
}

struct Job {
    what: JobKind,
    payload: Bytes,
    ack: oneshot::Sender<Result<Published, BackendError>>,
}

enum JobKind {
    Publish(String),
    History(GroupName, HistoryLimits),
}

impl Publisher {
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
                        what: JobKind::Publish(self.names.name(&channel)),
                        payload,
                        ack,
                    }),
                    Outgoing::History {
                        group,
                        limits,
                        payload,
                        ack,
                    } => batch.push(Job {
                        what: JobKind::History(group, limits),
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
        let with_history = batch
            .iter()
            .any(|job| matches!(job.what, JobKind::History(..)));
        if with_history {
            // Once per batch: cheap, and a restarted Redis that forgot the
            // script gets it back before the first EVALSHA.
            pipe.load_script(self.history.append_script()).ignore();
        }
        for job in batch.iter() {
            match &job.what {
                JobKind::Publish(channel) => {
                    pipe.cmd("PUBLISH")
                        .arg(channel)
                        .arg(&job.payload[..])
                        .ignore();
                }
                JobKind::History(group, limits) => {
                    self.history
                        .add_append(&mut pipe, group, *limits, &job.payload);
                }
            }
        }
        let outcome = self
            .pool
            .run(|mut conn| async move {
                pipe.query_async::<Vec<redis::Value>>(&mut conn)
                    .await
                    .map_err(command_error)
            })
            .await;
        let n = batch.len() as u64;
        match outcome {
            Ok(replies) => {
                if self.failed_in_a_row > 0 {
                    tracing::info!(
                        failed = self.failed_in_a_row,
                        "publishing to Redis works again"
                    );
                    self.failed_in_a_row = 0;
                }
                // Only the scripts' replies are kept, in batch order.
                let mut replies = replies.into_iter();
                for job in batch.drain(..) {
                    let published = match job.what {
                        JobKind::Publish(_) => Ok(Published::default()),
                        JobKind::History(..) => match replies.next() {
                            Some(reply) => position_of(reply).map(|position| Published {
                                position: Some(position),
                            }),
                            None => {
                                Err(BackendError::Command("no reply to a history append".into()))
                            }
                        },
                    };
                    let _ = job.ack.send(published);
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
