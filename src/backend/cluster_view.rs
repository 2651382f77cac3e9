//! The cluster view: the part of a backend that knows which nodes are
//! alive and what each of them holds.
//!
//! Apart from the broker because it lives on its own clock: every node
//! writes itself into the view on a heartbeat and reads the others when
//! someone asks (`/api/nodes`, `/api/groups`, the workers' "does the group
//! still have members anywhere?"), whatever is being published meanwhile.
//! The data it answers with, and the sums everyone shows, are in
//! [`presence`](super::presence).
//!
//! Only the nodes today. Per-group presence (who is in a group, joins and
//! leaves as events through [`BackendEvents`](super::BackendEvents)) is
//! the next method here, next to the one it would refine.

use super::error::BackendError;
use super::future::BoxFuture;
use super::presence::NodeInfo;

/// Which nodes are alive. See the module docs.
pub trait ClusterView: Send + Sync + 'static {
    /// Every live node of the cluster, this one included (computed live,
    /// [`NodeInfo::local`]), sorted by id.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>>;

    /// Shutdown, after the backend's tasks stopped (so no late heartbeat
    /// writes it back): takes this node out of the view at once rather
    /// than when its entry expires. A view that stores nothing has nothing
    /// to take out.
    fn withdraw(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }
}
