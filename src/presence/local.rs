//! This node's members of a group, as presence shows them: from the
//! registry, with only the keys the application marked public.
//!
//! Built when the backend asks (a batch being written, a standalone read),
//! not at the join: the keys an `on_connect` handler sets right after the
//! join are then part of the member.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::backend::member::{LocalMembers, Member};
use crate::group::GroupName;
use crate::registry::Registry;
use crate::session::Session;
use crate::session_id::SessionId;

/// The registry's members with their public keys.
pub(crate) struct RegistryMembers {
    pub(crate) registry: Arc<Registry>,
    pub(crate) node_id: String,
    /// The key names presence shows (`Config::presence_keys`).
    pub(crate) public_keys: Vec<String>,
}

impl RegistryMembers {
    fn member(&self, session: &Session) -> Member {
        let connected_at_ms = session
            .connected_at()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let keys: BTreeMap<String, serde_json::Value> = session.with_keys(|keys| {
            self.public_keys
                .iter()
                .filter_map(|name| Some((name.clone(), keys.get(name)?.clone())))
                .collect()
        });
        Member {
            id: session.id().clone(),
            node: self.node_id.clone(),
            sub: session.claims().sub.clone(),
            connected_at_ms,
            keys,
        }
    }
}

impl LocalMembers for RegistryMembers {
    fn members(&self, group: &GroupName) -> Vec<Member> {
        self.registry
            .members(group)
            .iter()
            .map(|session| self.member(session))
            .collect()
    }

    fn member(&self, group: &GroupName, id: &SessionId) -> Option<Member> {
        self.registry
            .member_of(group, id)
            .map(|session| RegistryMembers::member(self, &session))
    }
}
