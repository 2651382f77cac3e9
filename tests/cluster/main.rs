//! The Redis-backed cluster itself: the cluster view, history and resume,
//! faults and outages, and the sharded, Redis Cluster and Sentinel modes.
//! Every test needs Docker (Redis containers); the longest and most
//! timing-dependent tests of the suite are here. `history` uses this
//! binary's `TestRedis::shared()` container.
//!
//! One test binary for these files (one module each, tests named
//! `module::test`), so that the suite links a few binaries instead of one
//! per file.

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod cluster_view;
mod disconnect;
mod faults;
mod history;
mod join_leave;
mod multigroup;
mod presence;
mod sentinel;
mod sharded;
mod webhooks;
