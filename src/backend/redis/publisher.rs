//! The ordered publisher: publishes leave in call order, in pipelines.
//!
//! The hub hands publishes to a bounded queue without waiting. This task
//! takes whatever is queued (up to [`MAX_BATCH`]) and sends it as one
//! pipeline of PUBLISH on a pooled connection. A batch is sent only after
//! the previous one was answered, so the order of calls is the order Redis
//! sees — the first link of per-publisher order. Each publish is exactly
//! one PUBLISH, never retried: a failure is reported on its
//! [`PublishAck`](crate::backend::PublishAck) and counted, never duplicated.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::errors::command_error;
use super::pool::RedisPool;
use crate::backend::channels::ChannelNames;
use crate::backend::{Channel, Published};
use crate::error::BackendError;
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
    /// Answered once everything queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

pub(crate) struct Publisher {
    pub(crate) pool: RedisPool,
    pub(crate) queue: mpsc::Receiver<Outgoing>,
    pub(crate) names: ChannelNames,
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
        let outcome = self
            .pool
            .run(|mut conn| async move {
                pipe.query_async::<redis::Value>(&mut conn)
                    .await
                    .map_err(command_error)
            })
            .await;
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
