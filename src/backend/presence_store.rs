//! The presence store: the part of a backend that knows who is in a
//! group, cluster-wide.
//!
//! A fourth part rather than more methods on [`ClusterView`]: the cluster
//! view is about nodes, lives on one place (shard 0 of a sharded backend)
//! and is written whole on every heartbeat; per-group presence lives where
//! its group does (the group's shard, the group's slot on a Redis
//! Cluster), is written as changes in batches, and is read a page at a
//! time. One trait for both would make every backend route two different
//! ways behind one name.
//!
//! The hub tells the store about this node's joins and leaves
//! ([`joined`](PresenceStore::joined), [`left`](PresenceStore::left): they
//! never block and never fail; the store writes them with its next batch)
//! and reads pages and counts. Join and leave *events* (through
//! [`BackendEvents`](super::BackendEvents)) come next: the store is where
//! a batch that added or removed members would publish them.
//!
//! [`ClusterView`]: super::ClusterView

use super::error::BackendError;
use super::future::BoxFuture;
use super::member::{Cursor, MemberPage, PresenceStats, UserCount};
use crate::group::GroupName;
use crate::session_id::SessionId;

/// Who is in each group, cluster-wide. See the module docs.
pub trait PresenceStore: Send + Sync + 'static {
    /// `id` joined `group` on this node: written with the next batch (its
    /// public keys as they are then).
    fn joined(&self, group: &GroupName, id: &SessionId);

    /// `id` left `group` on this node: removed with the next batch.
    fn left(&self, group: &GroupName, id: &SessionId);

    /// The members of `group` after `cursor`, at most `limit`, in the order
    /// of their ids, with the group's counts. A member present from the
    /// first page to the last is on exactly one of them.
    fn members<'a>(
        &'a self,
        group: &'a GroupName,
        cursor: &'a Cursor,
        limit: usize,
    ) -> BoxFuture<'a, Result<MemberPage, BackendError>>;

    /// The distinct users (`sub`) of `group` and their sessions, sorted.
    fn users<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> BoxFuture<'a, Result<Vec<UserCount>, BackendError>>;

    /// `group`'s counts, without reading its members.
    fn stats<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> BoxFuture<'a, Result<PresenceStats, BackendError>>;

    /// Shutdown, after the backend's tasks stopped: takes this node's
    /// members out at once rather than when they expire.
    fn withdraw(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }
}
