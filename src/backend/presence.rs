//! What the cluster view answers: which nodes are alive, which groups they
//! hold, and the per-group sums everyone shows.
//!
//! Each node knows only its own sessions. To answer "who is in group G,
//! cluster-wide?" (`GET /api/groups`, `/api/nodes`, `/debug/state`, and the
//! workers' "does the group still have members anywhere?") every backend's
//! [`ClusterView`](super::ClusterView) returns a list of [`NodeInfo`]:
//! standalone, just this node; on Redis, every node's last heartbeat
//! (`backend/redis/presence.rs`).
//!
//! Two rules keep the view consistent wherever it is shown:
//!
//! * this node's own entry is always computed live ([`NodeInfo::local`]),
//!   never read back, so it is neither stale nor missing;
//! * per-group sums come from one function, [`group_totals`], used by the
//!   API, the debug view and the workers alike.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::group::GroupName;

/// This node's groups and their local member counts, sorted by name (from
/// the registry).
pub type LocalGroups = Arc<dyn Fn() -> Vec<(GroupName, usize)> + Send + Sync>;

/// One node of the cluster, as its heartbeat describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NodeInfo {
    /// The node's id.
    pub node_id: String,
    /// Its groups and their local member counts.
    pub groups: BTreeMap<String, usize>,
    /// Its sessions in all.
    pub sessions: usize,
    /// When it last sent a heartbeat (Unix milliseconds).
    pub last_seen_ms: u64,
    /// Its traffic counters since it started, as of that heartbeat: two
    /// heartbeats give its rates (the admin page's charts). Zero from a
    /// node of a version that did not send them.
    #[serde(default)]
    pub counters: NodeCounters,
}

/// A node's running totals, sent with its heartbeat.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NodeCounters {
    /// Messages received from its clients.
    pub messages_in: u64,
    /// Frames queued to its sessions (deliveries).
    pub messages_out: u64,
    /// Broadcasts started on it.
    pub broadcasts: u64,
    /// Connections it accepted.
    pub connections_opened: u64,
    /// Connections that ended.
    pub connections_closed: u64,
}

impl NodeCounters {
    /// The totals of `metrics` now.
    pub fn of(metrics: &crate::metrics::Metrics) -> Self {
        NodeCounters {
            messages_in: metrics.messages_in.get(),
            messages_out: metrics.messages_out.get(),
            broadcasts: metrics.broadcasts.get(),
            connections_opened: metrics.connections_opened.get(),
            connections_closed: metrics.connections_closed.get(),
        }
    }
}

impl NodeInfo {
    /// This node as it is right now.
    pub fn local(node_id: &str, local_groups: &LocalGroups) -> Self {
        let groups = local_groups();
        NodeInfo {
            node_id: node_id.to_string(),
            sessions: groups.iter().map(|(_, n)| n).sum(),
            groups: groups
                .into_iter()
                .map(|(g, n)| (g.as_str().to_owned(), n))
                .collect(),
            last_seen_ms: now_ms(),
            counters: NodeCounters::default(),
        }
    }
}

/// One group across the cluster.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct GroupTotal {
    /// The group's name.
    pub name: String,
    /// Its members on every node together.
    pub members: usize,
    /// Its members per node (only nodes that have some).
    pub nodes: BTreeMap<String, usize>,
}

/// Every group of `nodes`, with its members summed over the nodes, sorted
/// by name.
pub fn group_totals(nodes: &[NodeInfo]) -> BTreeMap<String, GroupTotal> {
    let mut totals: BTreeMap<String, GroupTotal> = BTreeMap::new();
    for node in nodes {
        for (name, &count) in &node.groups {
            let total = totals.entry(name.clone()).or_insert_with(|| GroupTotal {
                name: name.clone(),
                ..GroupTotal::default()
            });
            total.members += count;
            total.nodes.insert(node.node_id.clone(), count);
        }
    }
    totals
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, groups: &[(&str, usize)]) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            groups: groups.iter().map(|(g, n)| (g.to_string(), *n)).collect(),
            sessions: groups.iter().map(|(_, n)| n).sum(),
            last_seen_ms: 0,
            counters: NodeCounters::default(),
        }
    }

    #[test]
    fn totals_sum_each_group_over_its_nodes() {
        let nodes = [
            node("a", &[("chat", 2), ("logs", 1)]),
            node("b", &[("chat", 3)]),
            node("c", &[]),
        ];
        let totals = group_totals(&nodes);
        assert_eq!(totals.len(), 2);
        assert_eq!(totals["chat"].members, 5);
        assert_eq!(
            totals["chat"].nodes,
            BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 3)])
        );
        assert_eq!(totals["logs"].members, 1);
    }

    #[test]
    fn the_local_entry_counts_its_sessions() {
        let groups: LocalGroups = Arc::new(|| {
            vec![
                (GroupName::new("a").unwrap(), 2),
                (GroupName::new("b").unwrap(), 1),
            ]
        });
        let info = NodeInfo::local("n1", &groups);
        assert_eq!(info.sessions, 3);
        assert_eq!(info.groups["a"], 2);
        assert!(info.last_seen_ms > 0);
    }
}
