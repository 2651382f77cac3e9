//! Telling the application: webhooks.
//!
//! When something happens that the application's backend wants to know —
//! a group got its first member or lost its last one, a user joined or
//! left a group — the node that saw it happen POSTs a JSON event to
//! `--webhook-url`. Each event is emitted once in the cluster (by the node
//! whose presence write made it happen; see `presence/`), carries an `id`
//! to deduplicate on, and is signed (`signature.rs`).
//!
//! Delivery must never slow the broadcast path, and a receiver that is
//! down must not make the node lose events it could keep. So:
//!
//! * [`Webhooks::emit`] only puts the event in a bounded queue
//!   (`--webhook-queue`) and returns; when the queue is full the event is
//!   dropped, counted (`groupcast_webhook_dropped_total`) and logged — the
//!   one place events are lost, by design, and visibly;
//! * one sender task per node (`sender.rs`) POSTs them in order, one at a
//!   time, and retries a failed one (no answer, or not 2xx) with backoff
//!   until it is taken or it is older than `max_age`; later events wait
//!   behind it, so a receiver sees a group's events in the order they
//!   happened.
//!
//! A receiver answers 2xx once it has the event. It may see an event twice
//! (an answer lost after it took it): always with the same `id`.

mod sender;
pub mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::WebhookMetrics;

/// What happened, as the `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// A group got its first member, cluster-wide.
    GroupOccupied,
    /// A group lost its last member, cluster-wide (after the grace).
    GroupVacated,
    /// A user (`sub`) got their first connection in a group.
    UserJoined,
    /// A user's last connection in a group is gone (after the grace).
    UserLeft,
    /// A connection joined a group (only when asked for).
    SessionJoined,
    /// A connection left a group (only when asked for).
    SessionLeft,
}

impl WebhookKind {
    /// Every kind, in the order of the docs.
    pub const ALL: [WebhookKind; 6] = [
        WebhookKind::GroupOccupied,
        WebhookKind::GroupVacated,
        WebhookKind::UserJoined,
        WebhookKind::UserLeft,
        WebhookKind::SessionJoined,
        WebhookKind::SessionLeft,
    ];

    /// The name in JSON and in `--webhook-events`.
    pub fn name(self) -> &'static str {
        match self {
            WebhookKind::GroupOccupied => "group_occupied",
            WebhookKind::GroupVacated => "group_vacated",
            WebhookKind::UserJoined => "user_joined",
            WebhookKind::UserLeft => "user_left",
            WebhookKind::SessionJoined => "session_joined",
            WebhookKind::SessionLeft => "session_left",
        }
    }
}

impl std::str::FromStr for WebhookKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        WebhookKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = WebhookKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown webhook event {name:?}: one of {}",
                    known.join(", ")
                )
            })
    }
}

/// One event, as the receiver gets it (the request's JSON body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookEvent {
    /// Unique per event; the same on every retry of it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: WebhookKind,
    pub group: String,
    /// The user, for user and session events (when the session has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The session, for session events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The node that saw it happen.
    pub node: String,
    /// When it happened (Unix milliseconds).
    pub at_ms: u64,
}

impl WebhookEvent {
    /// An event of `kind` in `group`, seen now by `node`, with a fresh id.
    pub fn new(kind: WebhookKind, group: &str, node: &str) -> Self {
        WebhookEvent {
            id: format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            kind,
            group: group.to_string(),
            sub: None,
            session: None,
            node: node.to_string(),
            at_ms: now_ms(),
        }
    }
}

/// Where and how events are sent.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// The receiver (`http://` or `https://`).
    pub url: url::Url,
    /// The HMAC secret; `None` sends unsigned requests (the node warns).
    pub secret: Option<Arc<[u8]>>,
    /// Which kinds are sent.
    pub events: Vec<WebhookKind>,
    /// Events held at most while the receiver is slow or down.
    pub queue: usize,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// Retries stop for an event this old (it is dropped and counted).
    pub max_age: Duration,
    /// The first retry's delay; it doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl WebhookOptions {
    /// `url` with the defaults: the four group and user events, 10,000
    /// queued, 5 s per attempt, retries from 200 ms up to 30 s for an hour.
    pub fn new(url: url::Url) -> Self {
        WebhookOptions {
            url,
            secret: None,
            events: vec![
                WebhookKind::GroupOccupied,
                WebhookKind::GroupVacated,
                WebhookKind::UserJoined,
                WebhookKind::UserLeft,
            ],
            queue: 10_000,
            timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(3600),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// The node's webhook sender: cheap to clone, and a no-op when webhooks
/// are off.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    queue: mpsc::Sender<WebhookEvent>,
    events: Vec<WebhookKind>,
    metrics: WebhookMetrics,
    /// Whether the last emit found the queue full (logged once per run of
    /// drops, not per event).
    overflowing: AtomicBool,
}

impl Webhooks {
    /// No webhooks.
    pub fn off() -> Self {
        Webhooks::default()
    }

    /// Starts the sender task (on the current tokio runtime) for `options`;
    /// it ends when every clone of the returned handle is dropped and the
    /// queue is drained, or at `shutdown`.
    pub fn start(
        options: WebhookOptions,
        metrics: WebhookMetrics,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(options.queue.max(1));
        let events = options.events.clone();
        tokio::spawn(sender::run(options, receiver, metrics.clone(), shutdown));
        Webhooks {
            inner: Some(Arc::new(Inner {
                queue,
                events,
                metrics,
                overflowing: AtomicBool::new(false),
            })),
        }
    }

    /// Whether `kind` is sent at all (so a caller can skip building it).
    pub fn wants(&self, kind: WebhookKind) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.events.contains(&kind))
    }

    /// Queues `event` for sending and returns at once: true when queued,
    /// false when webhooks are off, its kind is not sent, or the queue is
    /// full (then it is counted and logged).
    pub fn emit(&self, event: WebhookEvent) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        if !inner.events.contains(&event.kind) {
            return false;
        }
        match inner.queue.try_send(event) {
            Ok(()) => {
                inner.metrics.queued.inc();
                inner.overflowing.store(false, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(event)) => {
                inner.metrics.dropped.inc();
                if !inner.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        id = %event.id,
                        kind = event.kind.name(),
                        group = %event.group,
                        "the webhook queue is full: events are dropped until the receiver catches up"
                    );
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
