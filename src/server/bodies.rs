//! What the HTTP API answers, as types: each handler builds one of these
//! and serializes it, and the OpenAPI description (`openapi.rs`) takes
//! its schemas from the same types, so the JSON a client gets and the
//! schema it reads cannot drift apart.
//!
//! The types of the layers below (nodes, members, workers, the backend's
//! status, a session's claims) derive their schemas where they live.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Claims;
use crate::backend::presence::GroupTotal;
use crate::backend::{BackendStatus, ConnectionStatus, LeaseHolder, NodeInfo};
use crate::{
    ClientMessages, GroupName, Member, PresenceStats, Session, SessionId, UserCount, WorkerInfo,
};

/// `POST /api/groups/{group}/messages`: where the message went.
#[derive(Serialize, ToSchema)]
pub(crate) struct Published {
    pub group: GroupName,
    /// Sessions on this node the message was queued for.
    pub delivered: usize,
    /// The node that took the request.
    pub node: String,
    /// Whether other nodes were told (false when standalone).
    pub clustered: bool,
    /// For a history group: the message's offset in the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// For a history group: the group's epoch (offsets count within it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `GET /api/groups`: every group of the cluster.
#[derive(Serialize, ToSchema)]
pub(crate) struct GroupList {
    /// The node that answered.
    pub node: String,
    /// How many nodes the cluster view holds.
    pub nodes: usize,
    /// Every group with members, sorted by name.
    pub groups: Vec<GroupTotal>,
}

/// `GET /api/groups/{group}`: the cluster-wide counts, and this node's
/// sessions in the group with their keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct GroupView {
    pub name: GroupName,
    /// Members on every node together.
    pub members: usize,
    /// Members per node (nodes that have some).
    pub nodes: BTreeMap<String, usize>,
    /// The node that answered (whose sessions `sessions` lists).
    pub node: String,
    /// This node's sessions in the group.
    pub sessions: Vec<SessionView>,
    /// Cluster-wide presence (members and distinct users); `null` for a
    /// group that keeps none (`--presence`).
    pub presence: Option<PresenceStats>,
}

/// One session of this node, as the API and `/debug/state` show it.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionView {
    pub id: SessionId,
    /// The group it connected to (`null`: a `/ws` connection, which holds
    /// only what it subscribed to).
    pub group: Option<GroupName>,
    /// The group it connected to, then those it subscribed to since.
    pub groups: Vec<GroupName>,
    pub node: String,
    /// The client's address, when the server knows it.
    pub remote_addr: Option<String>,
    /// When it connected (Unix milliseconds).
    pub connected_at_ms: u64,
    /// The keys the application set on it.
    #[schema(value_type = HashMap<String, Object>)]
    pub keys: HashMap<String, Value>,
    /// Messages waiting in its queue.
    pub queued: usize,
    /// How it got in, who it is, whether it may publish, when it expires.
    pub auth: Claims,
}

impl SessionView {
    pub(crate) fn of(node: &str, s: &Session) -> Self {
        let connected_at = s
            .connected_at()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        SessionView {
            id: s.id().clone(),
            group: s.group().cloned(),
            groups: s.groups(),
            node: node.to_string(),
            remote_addr: s.remote_addr().map(|a| a.to_string()),
            connected_at_ms: connected_at,
            keys: s.keys(),
            queued: s.queued(),
            auth: (*s.claims()).clone(),
        }
    }
}

/// `GET /api/groups/{group}/members`: one page of members.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemberList {
    pub group: GroupName,
    /// This page's members, in the order of their ids.
    pub members: Vec<Member>,
    /// The `cursor` of the next page; `null` on the last.
    pub next_cursor: Option<String>,
    /// Members on every node.
    pub count: u64,
    /// Distinct users (`sub`) among them.
    pub users: u64,
}

/// `GET /api/groups/{group}/users`: the group's distinct users.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserList {
    pub group: GroupName,
    pub count: usize,
    pub users: Vec<UserCount>,
}

/// `GET /api/groups/{group}/history`: retained messages.
#[derive(Serialize, ToSchema)]
pub(crate) struct History {
    pub group: GroupName,
    /// The group's epoch; `null` when it has no history yet (or it
    /// expired).
    pub epoch: Option<String>,
    /// The newest offset given in this epoch (0 when none).
    pub offset: u64,
    /// The messages after `since`, oldest first.
    pub messages: Vec<HistoryMessage>,
}

/// One retained message.
#[derive(Serialize, ToSchema)]
pub(crate) struct HistoryMessage {
    pub offset: u64,
    /// The text, or the bytes in base64 when `binary`.
    pub data: String,
    /// Present (true) for a binary message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<bool>,
}

/// `GET /api/nodes`: the cluster's nodes.
#[derive(Serialize, ToSchema)]
pub(crate) struct NodeList {
    pub node: String,
    pub nodes: Vec<NodeInfo>,
}

/// `GET /api/info`: what the demo page needs to know.
#[derive(Serialize, ToSchema)]
pub(crate) struct Info {
    pub node: String,
    /// The backend: `local`, `redis`, `sharded`, `cluster` or `sentinel`.
    pub mode: &'static str,
    /// Which Redis each of the backend's connections is on.
    pub redis: Vec<ConnectionStatus>,
    /// What the node does with clients' messages.
    pub client_messages: ClientMessages,
    pub version: &'static str,
}

/// `GET /api/workers`: who runs each group's worker.
#[derive(Serialize, ToSchema)]
pub(crate) struct WorkerList {
    pub node: String,
    /// Every lease, cluster-wide.
    pub workers: Vec<LeaseHolder>,
    /// The workers this node runs.
    pub local: Vec<WorkerInfo>,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// Not draining, and the bus (Redis) is reachable.
    pub ready: bool,
    pub node: String,
    /// The backend's mode.
    pub bus: &'static str,
    /// Why not ready; `null` when ready.
    pub reason: Option<String>,
}

/// `GET /debug/state`: sessions per group, subscriptions, bus and workers.
#[derive(Serialize, ToSchema)]
pub(crate) struct DebugState {
    pub node: String,
    pub shutting_down: bool,
    /// Sessions on this node.
    pub sessions: usize,
    /// This node's sessions, per group.
    pub groups: BTreeMap<String, Vec<SessionView>>,
    pub bus: BackendStatus,
    pub workers: Vec<WorkerInfo>,
    /// Every lease, cluster-wide; `null` when unreadable.
    pub worker_leases: Option<Vec<LeaseHolder>>,
    /// The cluster view; `null` when unreadable.
    pub cluster: Option<Vec<NodeInfo>>,
}
