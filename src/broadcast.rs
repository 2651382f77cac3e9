//! Who receives a broadcast.
//!
//! A [`Broadcast`] names its receivers in data, not code, so that it can be
//! published to other nodes and evaluated there: a target (one group, every
//! session, or a list of session ids), an optional session to skip, and an
//! optional [`KeyFilter`] on session keys. All of this works cluster-wide.
//!
//! A Rust closure cannot travel, so
//! [`Selection::local_filter`](crate::Selection::local_filter) reaches this node's
//! sessions only. Use a `KeyFilter` when the selection must span the
//! cluster.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::group::{GroupName, GroupNameError, IntoGroupName};
use crate::session_id::SessionId;

/// The sessions a broadcast is addressed to, before `except` and `filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every member of one group.
    Group(GroupName),
    /// Every session on every node.
    All,
    /// These sessions, wherever they are connected.
    Sessions(Vec<SessionId>),
}

/// A selection of sessions by their keys that can be sent to other nodes.
///
/// ```
/// use groupcast::KeyFilter;
/// let admins_in_eu = KeyFilter::equals("role", "admin").and(KeyFilter::equals("region", "eu"));
/// # let _ = admins_in_eu;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFilter {
    /// The key is set to exactly this JSON value.
    Equals { key: String, value: Value },
    /// The key is set, to anything.
    Has { key: String },
    /// The inner filter does not match.
    Not(Box<KeyFilter>),
    /// Every inner filter matches.
    All(Vec<KeyFilter>),
    /// At least one inner filter matches.
    Any(Vec<KeyFilter>),
}

impl KeyFilter {
    /// Matches sessions whose `key` equals `value`.
    pub fn equals(key: impl Into<String>, value: impl Into<Value>) -> Self {
        KeyFilter::Equals {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Matches sessions that have `key`.
    pub fn has(key: impl Into<String>) -> Self {
        KeyFilter::Has { key: key.into() }
    }

    /// Matches sessions that do not match `self`.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        KeyFilter::Not(Box::new(self))
    }

    /// Matches sessions that match both.
    pub fn and(self, other: KeyFilter) -> Self {
        KeyFilter::All(vec![self, other])
    }

    /// Matches sessions that match either.
    pub fn or(self, other: KeyFilter) -> Self {
        KeyFilter::Any(vec![self, other])
    }

    /// Whether a session with these keys matches (see also
    /// `KeyFilter::matches`, with the session, in `session.rs`).
    pub fn matches_keys(&self, keys: &std::collections::HashMap<String, Value>) -> bool {
        match self {
            KeyFilter::Equals { key, value } => keys.get(key) == Some(value),
            KeyFilter::Has { key } => keys.contains_key(key),
            KeyFilter::Not(inner) => !inner.matches_keys(keys),
            KeyFilter::All(all) => all.iter().all(|f| f.matches_keys(keys)),
            KeyFilter::Any(any) => any.iter().any(|f| f.matches_keys(keys)),
        }
    }
}

/// A description of who receives a message; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    /// The addressed sessions.
    pub target: Target,
    /// A session to skip (melody: `BroadcastOthers`).
    #[serde(default)]
    pub except: Option<SessionId>,
    /// Only sessions whose keys match.
    #[serde(default)]
    pub filter: Option<KeyFilter>,
}

impl Broadcast {
    /// Every member of `group`: a [`GroupName`], or a `&str` / `String`
    /// that is checked here.
    pub fn group(group: impl IntoGroupName) -> Result<Self, GroupNameError> {
        Ok(Broadcast::new(Target::Group(group.into_group_name()?)))
    }

    /// Every session in the cluster.
    pub fn all() -> Self {
        Broadcast::new(Target::All)
    }

    /// The listed sessions, wherever they are.
    pub fn sessions(ids: impl IntoIterator<Item = SessionId>) -> Self {
        Broadcast::new(Target::Sessions(ids.into_iter().collect()))
    }

    /// Exactly `target`, nobody skipped, no filter.
    pub fn new(target: Target) -> Self {
        Broadcast {
            target,
            except: None,
            filter: None,
        }
    }

    /// Skips one session.
    pub fn except(mut self, id: SessionId) -> Self {
        self.except = Some(id);
        self
    }

    /// Keeps only sessions whose keys match `filter`.
    pub fn matching(mut self, filter: KeyFilter) -> Self {
        self.filter = Some(filter);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_filters_compose() {
        let mut keys = std::collections::HashMap::new();
        keys.insert("role".to_string(), Value::from("admin"));
        keys.insert("n".to_string(), Value::from(3));
        assert!(KeyFilter::equals("role", "admin").matches_keys(&keys));
        assert!(!KeyFilter::equals("role", "user").matches_keys(&keys));
        assert!(
            KeyFilter::equals("n", 3)
                .and(KeyFilter::has("role"))
                .matches_keys(&keys)
        );
        assert!(
            KeyFilter::has("x")
                .or(KeyFilter::has("n"))
                .matches_keys(&keys)
        );
        assert!(KeyFilter::has("x").not().matches_keys(&keys));
    }
}
