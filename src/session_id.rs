//! A session's id: plain data, so that the types that address sessions
//! (broadcasts, envelopes) need no live session.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A session's id: unique across the cluster (64 random bits, hex).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct SessionId(Arc<str>);

impl SessionId {
    pub(crate) fn random() -> Self {
        SessionId(Arc::from(format!("{:016x}", rand::random::<u64>())))
    }

    /// An id a client says it had (`?session=` on a reconnect), if it is
    /// one this server could have given: 16 lowercase hex digits.
    pub fn parse_given(text: &str) -> Option<Self> {
        let plausible = text.len() == 16
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        plausible.then(|| SessionId::from(text))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SessionId {
    fn from(s: &str) -> Self {
        SessionId(Arc::from(s))
    }
}

impl From<String> for SessionId {
    fn from(s: String) -> Self {
        SessionId(Arc::from(s))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}
