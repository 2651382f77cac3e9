//! Group workers: ws-notifier's `Notify`, exactly once per group across
//! the cluster.
//!
//! A worker is a task that produces messages for one group — a ticker, a
//! tail of a task's log file — and is only worth running while the group has
//! members. [`Hub::notify`](crate::Hub::notify) registers one; from then on
//! a *supervisor* task on every node watches the group:
//!
//! * a node with local members races for the group's lease
//!   (`workers/lease.rs`); the winner starts the worker;
//! * the holder renews the lease every third of its TTL and keeps the
//!   worker running while the group has members anywhere in the cluster
//!   (presence heartbeats tell it about other nodes' members);
//! * the worker stops when the group has been empty cluster-wide for the
//!   linger period, when its own time-to-live ends, when the lease is lost,
//!   or at shutdown;
//! * a worker that returns an error or panics is logged, counted and
//!   restarted with exponential backoff.
//!
//! **Why only one runs.** The holder stops its worker at a local deadline,
//! `last successful renewal (measured when the request was *sent*) + TTL −
//! margin`, which is always before Redis can expire the lease and let
//! another node in. Renewals are fenced (they act only on our own token), so
//! a node that lost its lease cannot extend someone else's. If the holder
//! dies, its lease expires and a node that still has members takes over at
//! its next poll: within the lease TTL plus one poll.

pub(crate) mod supervisor;
mod worker;

pub use self::supervisor::{WorkerInfo, WorkerOptions, WorkerResult};
pub use self::worker::{Worker, WorkerContext, ticker};
